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

# shellcheck source=benches/sync/common.sh
. benches/sync/common.sh

for v in v1 contiguous random; do
    rows "$v" "$work/rows.ndjson"
    extra=()
    [ "$v" = v1 ] || extra=(--dictionary-from "$work/v1.snapkv")
    "$bin" build --quiet --input "$work/rows.ndjson" --key k --output "$work/$v.snapkv" "${extra[@]}"
done
rm "$work/rows.ndjson"

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
