#!/usr/bin/env bash
# Start-up and swap times of `snapkv serve` over a store, for a large snapshot:
# - start from the cache directory: a reader restarted with the version already in its cache dir,
#   from launch to its first 200 from /readyz and to its first correct GET;
# - first start: the same with an empty cache dir (the download included);
# - swap: a new version published while it serves, from `snapkv publish` returning to a GET that
#   answers from it.
# The store is a local directory, so the figures are the reader's own work, not the network's.
#
# Usage: benches/http/startup.sh   (env: ROWS=8000000 rows of ~120-byte values, stored without
#   compression: about 1.1 GB; RUNS=5 restarts; SNAPKV_BIN)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-8000000}
RUNS=${RUNS:-5}
export KEYS=$ROWS
# shellcheck source=benches/http/common.sh
. benches/http/common.sh

# Rows `key:%012d` with ~120 bytes of hex text (no compression: the file's size is the data's).
python3 - "$ROWS" "$work/rows.ndjson" <<'PY'
import os, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for start in range(0, n, 100_000):
        noise = os.urandom(60 * min(100_000, n - start)).hex()
        for j in range(min(100_000, n - start)):
            f.write('{"k":"key:%012d","v":"%s"}\n' % (start + j, noise[120 * j:120 * j + 120]))
PY
for v in 1 2; do
    "$bin" build --quiet --input "$work/rows.ndjson" --key k --raw-value v --compression none \
        --output "$work/v$v.snapkv" --version "v$v"
done
rm "$work/rows.ndjson"
file_mb=$(du -m "$work/v1.snapkv" | cut -f1)
"$bin" publish --store "$work/store" --dataset big "$work/v1.snapkv" >/dev/null

now() { date +%s.%N; }
# serve_until_ready: starts a reader and sets $pid, $url and $times ("seconds to /readyz 200,
# seconds to the first GET answered"), the reader left running.
serve_until_ready() {
    local t0 ready got
    t0=$(now)
    "$bin" serve --store "$work/store" --dataset big --cache-dir "$work/cache" --listen 127.0.0.1:0 \
        --poll-interval 100ms >"$work/serve.out" 2>"$work/serve.err" &
    pid=$!
    pids+=("$pid")
    url=""
    while [ -z "$url" ]; do
        url=$(sed -n 's/^listening on //p' "$work/serve.out" 2>/dev/null || true)
        kill -0 "$pid" || { cat "$work/serve.err" >&2; exit 1; }
    done
    until curl -sf -o /dev/null "$url/readyz"; do kill -0 "$pid" || exit 1; done
    ready=$(now)
    curl -sf -o /dev/null "$url/v1/datasets/big/keys/key:000000000042"
    got=$(now)
    times=$(python3 -c "print(f'{$ready - $t0:.3f} {$got - $t0:.3f}')")
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

serve_until_ready
read -r first_ready first_get <<<"$times"
stop
# A restart finds the downloaded file written back, as a pod restarted later would.
sync
starts=()
for _ in $(seq "$RUNS"); do
    serve_until_ready
    starts+=("$times")
    stop
done

# Swap: publish v2 while serving v1; time from publish returning to a GET that names v2.
serve_until_ready
"$bin" publish --store "$work/store" --dataset big "$work/v2.snapkv" >/dev/null
t0=$(now)
until curl -sf -D - -o /dev/null "$url/v1/datasets/big/keys/key:000000000042" | grep -qi '^x-snapkv-version: v2'; do
    kill -0 "$pid" || exit 1
done
swap=$(python3 -c "print(f'{$(now) - $t0:.3f}')")
stop

printf '%s\n' "${starts[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin.read().splitlines()]
ready = statistics.median(r[0] for r in rows)
get = statistics.median(r[1] for r in rows)
mb, first_ready, first_get, swap = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"snapshot {mb} MB ({sys.argv[5]} rows, uncompressed), local-directory store")
print("| | to /readyz 200 s | to first GET s |")
print("|---|---:|---:|")
print(f"| first start (download into an empty cache dir) | {first_ready:.3f} | {first_get:.3f} |")
print(f"| start from the cache dir (median of {len(rows)}) | {ready:.3f} | {get:.3f} |")
print()
print(f"start from the cache dir: {ready * 1000:.0f} ms to ready (target <= 200 ms for 1 GB)")
print(f"new version answering {swap * 1000:.0f} ms after its publish returned (target <= 1 s)")
' "$file_mb" "$first_ready" "$first_get" "$swap" "$ROWS"
