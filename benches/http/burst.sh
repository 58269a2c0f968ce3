#!/usr/bin/env bash
# Memory after a connection burst: `snapkv serve` RSS and anonymous memory at rest, during a
# burst of BURST concurrent connections (each sends GETs of random keys, then closes) and
# SETTLE seconds after it. Repeated ROUNDS times: memory that is not given back grows or stays.
#
# Usage: benches/http/burst.sh   (env: KEYS=100000 BURST=4000 ROUNDS=3 SETTLE=5
#   SERVE_ENV='MALLOC_ARENA_MAX=2': environment for the server, to compare allocator settings)
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${KEYS:-100000}
BURST=${BURST:-4000}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-5}
bin=${SNAPKV_BIN:-target/release/snapkv}
[ -x "$bin" ] || cargo build --release --bin snapkv
work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

python3 - "$KEYS" "$work" <<'PY'
import json, sys
n, d = int(sys.argv[1]), sys.argv[2]
with open(f"{d}/data.ndjson", "w") as f:
    for i in range(n):
        f.write(json.dumps({"k": f"key:{i:012d}", "v": json.dumps({"id": i, "pad": "x" * 80})}) + "\n")
PY
"$bin" build --quiet --input "$work/data.ndjson" --key k --raw-value v --output "$work/burst.snapkv"
env ${SERVE_ENV:-} "$bin" serve --file "burst=$work/burst.snapkv" --listen 127.0.0.1:0 \
    --max-connections 8192 >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/out")
port=${url##*:}

python3 - "$server" "$port" "$BURST" "$ROUNDS" "$SETTLE" "$KEYS" <<'PY'
import asyncio, random, sys, time
pid, port, burst, rounds, settle, keys = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])

def memory():
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    kb = lambda k: int(fields[k].split()[0]) / 1024
    return kb("VmRSS"), kb("RssAnon")

def fds():
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))

async def client(r):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(4):
        k = f"key:{r.randrange(keys):012d}"
        writer.write(f"GET /v1/datasets/burst/keys/{k} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        await reader.readexactly(length)
    writer.close()
    await writer.wait_closed()

async def main():
    r = random.Random(1)
    await asyncio.gather(*(client(r) for _ in range(50)))
    time.sleep(1)
    rss, anon = memory()
    print(f"{'at rest':>14}: RSS {rss:7.1f} MiB, anonymous {anon:7.1f} MiB")
    for i in range(rounds):
        peak = [0.0, 0.0]
        async def sample():
            while True:
                m = memory()
                peak[0], peak[1] = max(peak[0], m[0]), max(peak[1], m[1])
                await asyncio.sleep(0.05)
        s = asyncio.create_task(sample())
        await asyncio.gather(*(client(r) for _ in range(burst)))
        s.cancel()
        print(f"{'burst %d peak' % (i + 1):>14}: RSS {peak[0]:7.1f} MiB, anonymous {peak[1]:7.1f} MiB")
        time.sleep(settle)
        rss, anon = memory()
        print(f"{'%d s after' % settle:>14}: RSS {rss:7.1f} MiB, anonymous {anon:7.1f} MiB, {fds()} open files")

asyncio.run(main())
PY
