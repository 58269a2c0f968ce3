# Sourced by the sync benchmarks after benches/http/common.sh: the S3-compatible test server
# (scripts/s3-test-server.py, started here) with bucket `bench`, `store_args` for it, `rows`
# (the generated dataset), and readers of dataset `big` (`serve_store`, `wait_version`,
# `counter`).

mkdir -p "$work/s3"
python3 scripts/s3-test-server.py "$work/s3/port" >"$work/s3/log" 2>&1 &
pids+=("$!")
until [ -s "$work/s3/port" ]; do sleep 0.1; done
curl -sf -X PUT "http://127.0.0.1:$(cat "$work/s3/port")/bench" >/dev/null
export AWS_ACCESS_KEY_ID=snapkv-test AWS_SECRET_ACCESS_KEY=snapkv-test AWS_REGION=us-east-1
store_args=(--store "s3://bench/delta" --store-option "endpoint=http://127.0.0.1:$(cat "$work/s3/port")")

# rows MODE PATH: NDJSON rows, key `user:%012d` and five value columns (~120 bytes of JSON);
# MODE v1 (base), contiguous (1% of the keys, from 40% of the key space on, changed) or random
# (1% changed at random places).
rows() {
    python3 - "$ROWS" "$1" "$2" <<'PY'
import random, sys
n, mode, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
start, span = int(n * 0.4), n // 100
changed = set(random.Random(7).sample(range(n), span)) if mode == "random" else set()
segments = ["a", "bb", "ccc", "dddd"]
M = (1 << 64) - 1
with open(path, "w") as f:
    out = []
    for i in range(n):
        run = 1 if (mode == "contiguous" and start <= i < start + span) or i in changed else 0
        h = (i * 0x9E3779B97F4A7C15 + run * 0xBF58476D1CE4E5B9) & M
        items = ",".join(str((h >> (5 * j)) % 100000) for j in range(8))
        out.append('{"k":"user:%012d","score":%.6f,"segment":"%s","items":[%s],"note":"%016x","run":%d}\n'
                   % (i, (h % 1000003) / 1000003, segments[h % 4], items, (h * 0x94D049BB133111EB) & M, run))
        if len(out) == 100000:
            f.write("".join(out))
            out = []
    f.write("".join(out))
PY
}

now() { date +%s.%N; }
# serve_store CACHE [FLAGS...]: starts a reader of dataset `big`; sets $pid and $url.
serve_store() {
    local cache=$1
    shift
    "$bin" serve "${store_args[@]}" --dataset big --cache-dir "$cache" --listen 127.0.0.1:0 \
        --poll-interval 100ms "$@" >"$work/serve.out" 2>"$work/serve.err" &
    pid=$!
    pids+=("$pid")
    url=""
    while [ -z "$url" ]; do
        url=$(sed -n 's/^listening on //p' "$work/serve.out" 2>/dev/null || true)
        kill -0 "$pid" || { cat "$work/serve.err" >&2; exit 1; }
    done
}
wait_version() {
    until curl -sf -D - -o /dev/null "$url/v1/datasets/big/keys/user:000000000042" | grep -qi "^x-snapkv-version: $1"; do
        kill -0 "$pid" || { cat "$work/serve.err" >&2; exit 1; }
        sleep 0.05
    done
}
counter() { curl -sf "$url/metrics" | awk -v m="snapkv_sync_bytes_$1_total" '$1 ~ "^"m"[{]" {print $2}'; }
