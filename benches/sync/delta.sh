#!/usr/bin/env bash
# Bytes a reader moves to follow a dataset whose new versions change 1% of the keys, against
# the S3-compatible test server (scripts/s3-test-server.py, started here):
# - v1: ROWS rows (default compression, ~57 bytes per row stored: 18M rows are ~1 GB),
#   fetched whole;
# - v2: 1% of the keys changed in one contiguous key range (a new day's rows, a re-run
#   partition), built with v1's dictionary (`--dictionary-from`);
# - v3: v1 with 1% of the keys changed at random places, also with v1's dictionary.
# For each sync: bytes downloaded, reused and rebuilt (the reader's /metrics counters), the
# share of the file downloaded, range reads, and the time from `publish` returning to the new
# version answering.
# A fourth line fetches v3 with `--no-delta-sync` into an empty cache dir, for the time of a
# full download beside it.
#
# Usage: benches/sync/delta.sh   (env: ROWS=18000000, SNAPKV_BIN)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-18000000}
# The binary, a work directory, the processes started (stopped on exit).
# shellcheck source=benches/http/common.sh
. benches/http/common.sh

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

for v in v1 contiguous random; do
    rows "$v" "$work/rows.ndjson"
    extra=()
    [ "$v" = v1 ] || extra=(--dictionary-from "$work/v1.snapkv")
    "$bin" build --quiet --input "$work/rows.ndjson" --key k --output "$work/$v.snapkv" "${extra[@]}"
done
rm "$work/rows.ndjson"

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
ranges() { grep -o 'range_reads=[0-9]*' "$work/serve.err" | tail -1 | cut -d= -f2; }

# publish_and_time FILE VERSION -> "seconds downloaded reused rebuilt" for the sync to VERSION.
publish_and_time() {
    local d0 r0 b0 t0
    d0=$(counter downloaded)
    r0=$(counter reused)
    b0=$(counter rebuilt)
    "$bin" publish "${store_args[@]}" --dataset big --version "$2" "$1" >/dev/null
    t0=$(now)
    wait_version "$2"
    python3 -c "print(f'{$(now) - $t0:.2f}', $(counter downloaded) - $d0, $(counter reused) - $r0, $(counter rebuilt) - $b0)"
}

serve_store "$work/cache"
read -r t_v1 d_v1 r_v1 b_v1 < <(publish_and_time "$work/v1.snapkv" v1)
read -r t_c d_c r_c b_c < <(publish_and_time "$work/contiguous.snapkv" v2)
c_reads=$(ranges)
read -r t_r d_r r_r b_r < <(publish_and_time "$work/random.snapkv" v3)
r_reads=$(ranges)
kill "$pid"
wait "$pid" 2>/dev/null || true

# The same v3, downloaded whole into an empty cache dir.
serve_store "$work/cache-full" --no-delta-sync
t0=$(now)
wait_version v3
t_full=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
d_full=$(counter downloaded)

size() { stat -c %s "$1"; }
python3 - "$ROWS" "$(size "$work/v1.snapkv")" "$(size "$work/contiguous.snapkv")" "$(size "$work/random.snapkv")" \
    "$t_v1 $d_v1 $r_v1 $b_v1 0" "$t_c $d_c $r_c $b_c $c_reads" "$t_r $d_r $r_r $b_r $r_reads" "$t_full $d_full" <<'PY'
import sys
rows, s1, s2, s3 = map(int, sys.argv[1:5])
lines = [l.split() for l in sys.argv[5:9]]
print(f"rows {rows:,}; files v1 {s1/1e6:,.0f} MB, v2 {s2/1e6:,.0f} MB, v3 {s3/1e6:,.0f} MB")
print(f"{'sync':<30}{'downloaded':>13}{'of file':>9}{'reused':>12}{'rebuilt':>11}{'reads':>8}{'seconds':>9}")
for name, size, (t, d, r, b, n) in [("v1 (nothing cached)", s1, lines[0]),
                                    ("v2: 1% contiguous", s2, lines[1]),
                                    ("v3: 1% at random", s3, lines[2])]:
    d, r, b = float(d), float(r), float(b)
    print(f"{name:<30}{d/1e6:>10,.1f} MB{100*d/size:>8.1f}%{r/1e6:>9,.1f} MB{b/1e6:>8,.1f} MB{n:>8}{float(t):>9.2f}")
t, d = lines[3]
print(f"{'v3 whole (--no-delta-sync)':<30}{float(d)/1e6:>10,.1f} MB{100*float(d)/s3:>8.1f}%{'-':>12}{'-':>11}{'-':>8}{float(t):>9.2f}")
PY
