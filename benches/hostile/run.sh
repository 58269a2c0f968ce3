#!/usr/bin/env bash
# Peak memory and time of `snapkv build` on the inputs that used to exhaust the machine: wide
# and long rows, long lines and headers, very wide CSV files. Writes ~4.6 GB of inputs to DIR
# (default: a temporary directory, removed at the end) with benches/hostile/inputs.py (pyarrow),
# then prints one line per input: peak RSS (from /usr/bin/time), seconds, exit status.
#
#   benches/hostile/run.sh [DIR]        SNAPKV=target/release/snapkv by default
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
snapkv="${SNAPKV:-$here/../../target/release/snapkv}"
[ -x "$snapkv" ] || { echo "no $snapkv: cargo build --release first, or set SNAPKV" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
dir="${1:-$(mktemp -d)}"
[ -n "${1:-}" ] || trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir" && cd "$dir"
python3 "$here/inputs.py"
run() {
    /usr/bin/time -f "$1: peak %M KB, %e s, exit %x" "$snapkv" build -q -o "$dir/out.snapkv" "${@:2}" 2>&1 |
        tail -n 1
}
run "20k rows of 100 KB strings, Parquet, --memory-limit 64MiB" -i a-20k-100kb.parquet -k k --memory-limit 64MiB
run "5 NDJSON lines of 100 MB" -i b-5x100mb.ndjson -k k
run "a 1 GB CSV line" -i c-1gb-line.csv -k k
run "a 1 GB CSV header" -i d-1gb-header.csv -k k
run "a CSV of 100k columns" -i e-100k-cols.csv -k k
run "a CSV of 1M columns" -i f-1m-cols.csv -k k
