#!/usr/bin/env bash
# A GET with `?fields=` (a projection of the JSON value) against a plain GET of the same keys, in
# one run on this machine: KEYS keys `key:%012d` with ~100-byte JSON values (five fields), built as
# a JSON dataset and served by one reader; wrk (random_key.lua, CONNS keep-alive connections)
# measures plain GETs, then GETs of one field. Prints req/s, p50/p99 and the ratios.
#
# Needs wrk and python3 (apt-get install -y wrk).
# Usage: benches/http/fields.sh   (env: KEYS=1000000 CONNS=64 DURATION=15s THREADS=2)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-15s}
# shellcheck source=benches/http/common.sh
. benches/http/common.sh

write_rows "$work/data.ndjson" json
"$bin" build --quiet --input "$work/data.ndjson" --key k --output "$work/bench.snapkv"
"$bin" serve --file "bench=$work/bench.snapkv" --listen 127.0.0.1:18194 >"$work/serve.out" 2>"$work/serve.err" &
pids+=($!)
for _ in $(seq 300); do curl -sf http://127.0.0.1:18194/readyz >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:18194/v1/datasets/bench/keys/key:000000000042?fields=score" >/dev/null

read -r g_rps g_p50 g_p99 < <(QUERY= wrk_run http://127.0.0.1:18194)
read -r f_rps f_p50 f_p99 < <(QUERY='?fields=score' wrk_run http://127.0.0.1:18194)
for v in "$g_rps" "$f_rps"; do
    [ -n "$v" ] || { echo "a wrk run failed" >&2; exit 1; }
done
python3 - "$KEYS" "$CONNS" "$DURATION" "$g_rps" "$g_p50" "$g_p99" "$f_rps" "$f_p50" "$f_p99" <<'PY'
import sys
keys, conns, duration = sys.argv[1:4]
g, f = (tuple(float(x) for x in sys.argv[i:i + 3]) for i in (4, 7))
print(f"{keys} keys, {conns} connections, {duration} per run")
print("| requests | req/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
print(f"| GET (whole value) | {g[0]:.0f} | {g[1]:.3f} | {g[2]:.3f} |")
print(f"| GET ?fields=score | {f[0]:.0f} | {f[1]:.3f} | {f[2]:.3f} |")
print()
print(f"cost of ?fields= (plain / projected req/s): {g[0] / f[0]:.2f}x; p50 {f[1] / g[1]:.2f}x, p99 {f[2] / g[2]:.2f}x")
PY
