#!/usr/bin/env bash
# Time to the first correct answer of a new reader (nothing in its cache dir) of a ~1 GB
# dataset in the S3-compatible test server (scripts/s3-test-server.py, started here), with
# `--ready-when downloaded` (the default: the whole file downloaded and verified first) and
# `--ready-when opened` (footer and index sections read, blocks read by range as lookups need
# them while the rest downloads), and the GET latency of the lazily opened reader while its
# blocks arrive against after. Each time runs from starting `snapkv serve` to the first answer
# of a key that equals the answer of the complete file.
# While downloading: wrk (random keys of the whole key space, CONNS connections, for
# DURATION_LAZY, started at once) measures req/s, p50 and p99, and the blocks still missing
# at its start and end are printed (the run is inside the download while they are not 0).
# After: the same wrk run once every block is in place.
#
# LAZY_FLAGS adds flags to the lazily opened reader (e.g. `--max-download-rate 100MB`, for a
# download that outlasts the run while blocks arrive).
#
# Usage: benches/sync/lazy.sh   (env: ROWS=18000000, CONNS=16, DURATION_LAZY=3s,
#                                DURATION=10s, LAZY_FLAGS, SNAPKV_BIN)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-18000000}
CONNS=${CONNS:-16}
DURATION_LAZY=${DURATION_LAZY:-3s}
DURATION=${DURATION:-10s}
# The binary, a work directory, the processes started (stopped on exit), wrk_run.
# shellcheck source=benches/http/common.sh
. benches/http/common.sh
# shellcheck source=benches/sync/common.sh
. benches/sync/common.sh

rows v1 "$work/rows.ndjson"
"$bin" build --quiet --input "$work/rows.ndjson" --key k --output "$work/v1.snapkv"
rm "$work/rows.ndjson"
"$bin" publish "${store_args[@]}" --dataset big --version v1 "$work/v1.snapkv" >/dev/null
size=$(stat -c %s "$work/v1.snapkv")
key="user:$(printf %012d $((ROWS / 2 + 7)))"
expected=$("$bin" get "$work/v1.snapkv" "$key")

# answered T0 -> seconds from T0 (the reader's start) to its first answer for $key that equals
# $expected.
answered() {
    local got
    until got=$(curl -sf "$url/v1/datasets/big/keys/$key") && [ "$got" = "$expected" ]; do
        kill -0 "$pid" || { cat "$work/serve.err" >&2; exit 1; }
        sleep 0.005
    done
    python3 -c "print(f'{$(now) - $1:.3f}')"
}
missing() { curl -sf "$url/v1/datasets/big" | python3 -c "import json,sys; print(json.load(sys.stdin).get('lazy', {}).get('blocks_missing', 0))"; }
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

t0=$(now)
serve_store "$work/cache-full"
t_full=$(answered "$t0")
stop
t0=$(now)
# shellcheck disable=SC2086 # LAZY_FLAGS is a list of flags
serve_store "$work/cache-lazy" --ready-when opened ${LAZY_FLAGS:-}
t_lazy=$(answered "$t0")
# What the lazy open read before it served (its log line), not what the fill read since.
opened=$(grep 'opened lazily' "$work/serve.err" | grep -o 'bytes_downloaded=[0-9]*' | cut -d= -f2)
export KEYS=$ROWS KEY_PREFIX=user: DATASET=big
before=$(missing)
read -r rps_during p50_during p99_during < <(DURATION=$DURATION_LAZY wrk_run "$url")
after=$(missing)
until [ "$(missing)" = 0 ] && curl -sf "$url/v1/datasets/big" | grep -q '"file":"[^"]*/v1.snapkv"'; do
    kill -0 "$pid" || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.1
done
read -r rps_after p50_after p99_after < <(wrk_run "$url")
blocks=$("$bin" inspect "$work/v1.snapkv" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['stats']['blocks'])")
stop

python3 - "$ROWS" "$size" "$t_full" "$t_lazy" "$opened" "$before" "$after" "$blocks" \
    "$rps_during $p50_during $p99_during" "$rps_after $p50_after $p99_after" "$CONNS" "$DURATION_LAZY" "$DURATION" <<'PY'
import sys
rows, size = int(sys.argv[1]), int(sys.argv[2])
t_full, t_lazy, opened = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
before, after, blocks = sys.argv[6], sys.argv[7], sys.argv[8]
during = [float(x) for x in sys.argv[9].split()]
after_run = [float(x) for x in sys.argv[10].split()]
conns, d_lazy, d = sys.argv[11], sys.argv[12], sys.argv[13]
print(f"rows {rows:,}; file {size/1e6:,.0f} MB")
print(f"first correct answer, --ready-when downloaded: {t_full:.3f} s")
print(f"first correct answer, --ready-when opened:     {t_lazy:.3f} s ({t_lazy/t_full:.3f}x; "
      f"{opened/1e6:,.1f} MB read before it, {100*opened/size:.1f}% of the file)")
print(f"GET, {conns} connections    {'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
print(f"while blocks arrive ({d_lazy}) {during[0]:>10,.0f}{during[1]:>10.2f}{during[2]:>10.2f}"
      f"   blocks missing {before} -> {after} of {blocks}")
print(f"complete ({d})             {after_run[0]:>10,.0f}{after_run[1]:>10.2f}{after_run[2]:>10.2f}")
print(f"p99 while blocks arrive / complete: {during[2]/after_run[2]:.1f}x")
PY
