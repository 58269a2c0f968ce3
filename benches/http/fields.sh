#!/usr/bin/env bash
# A GET with `?fields=` (a projection of the JSON value) against a plain GET of the same keys, in
# one run on this machine: KEYS keys `key:%012d` with ~100-byte JSON values (five fields), built as
# a JSON dataset and served by one reader; wrk (random_key.lua, CONNS keep-alive connections)
# measures plain GETs and GETs of one field in turn, ROUNDS times (the machine's noise moves
# both alike within a round). Prints each round, and the medians of req/s, p50/p99 and the
# ratios.
#
# Needs wrk and python3 (apt-get install -y wrk).
# Usage: benches/http/fields.sh   (env: KEYS=1000000 CONNS=64 DURATION=10s ROUNDS=3 THREADS=2)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
# shellcheck source=benches/http/common.sh
. benches/http/common.sh

write_rows "$work/data.ndjson" json
"$bin" build --quiet --input "$work/data.ndjson" --key k --output "$work/bench.snapkv"
"$bin" serve --file "bench=$work/bench.snapkv" --listen 127.0.0.1:18194 >"$work/serve.out" 2>"$work/serve.err" &
pids+=($!)
for _ in $(seq 300); do curl -sf http://127.0.0.1:18194/readyz >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:18194/v1/datasets/bench/keys/key:000000000042?fields=score" >/dev/null

# Warm-up: the block cache fills, so that the first round is not the slowest by its misses.
DURATION=5s QUERY= wrk_run http://127.0.0.1:18194 >/dev/null
server=${pids[-1]}
# cpu_ticks: the server's user + system CPU so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
# measure QUERY: "req/s p50 p99 server-CPU-µs-per-request" for one wrk run.
measure() {
    local before after out
    before=$(cpu_ticks)
    out=$(QUERY=$1 wrk_run http://127.0.0.1:18194)
    after=$(cpu_ticks)
    [ -n "$out" ] || return 0
    python3 -c 'import os, sys
rps, p50, p99, ticks, secs = sys.argv[1:]
secs = float(secs.rstrip("s"))
print(rps, p50, p99, float(ticks) / os.sysconf("SC_CLK_TCK") * 1e6 / (float(rps) * secs))' \
        $out "$((after - before))" "$DURATION"
}
results=()
for _ in $(seq "$ROUNDS"); do
    g=$(measure '')
    f=$(measure '?fields=score')
    for v in "$g" "$f"; do
        [ -n "$v" ] || { echo "a wrk run failed" >&2; exit 1; }
    done
    results+=("$g $f")
done
python3 - "$KEYS" "$CONNS" "$DURATION" "${results[@]}" <<'PY'
import statistics, sys
keys, conns, duration = sys.argv[1:4]
rounds = [[float(x) for x in r.split()] for r in sys.argv[4:]]
print(f"{keys} keys, {conns} connections, {duration} per run, {len(rounds)} rounds")
print("| round | requests | req/s | p50 ms | p99 ms | server CPU µs/request |")
print("|---|---|---:|---:|---:|---:|")
for i, r in enumerate(rounds, 1):
    print(f"| {i} | GET (whole value) | {r[0]:.0f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.1f} |")
    print(f"| {i} | GET ?fields=score | {r[4]:.0f} | {r[5]:.3f} | {r[6]:.3f} | {r[7]:.1f} |")
med = lambda i: statistics.median(r[i] for r in rounds)  # noqa: E731
ratio = lambda a, b: statistics.median(r[a] / r[b] for r in rounds)  # noqa: E731
print()
print(f"median req/s: plain {med(0):.0f}, projected {med(4):.0f}")
print(f"cost of ?fields= (medians of the rounds' ratios): req/s {ratio(0, 4):.2f}x, "
      f"p50 {ratio(5, 1):.2f}x, p99 {ratio(6, 2):.2f}x, server CPU per request {ratio(7, 3):.2f}x")
PY
