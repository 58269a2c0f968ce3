#!/usr/bin/env bash
# Forwarded vs direct GETs between readers of a sharded version, in one run on this machine.
# KEYS keys `key:%012d` with ~100-byte values are built into 2 range shards and published to a
# local store; reader A holds shard 0, reader B shard 1, each the other's peer, and reader W holds
# both. wrk (random_key.lua, CONNS keep-alive connections) measures on A: keys of shard 0
# (direct), keys of shard 1 (forwarded to B), all keys (half forwarded); and W on all keys (one
# reader holding everything). Prints req/s, p50/p99 and the ratios forwarded / direct.
#
# Needs wrk and python3 (apt-get install -y wrk).
# Usage: benches/http/forward.sh   (env: KEYS=1000000 CONNS=64 DURATION=15s THREADS=2)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-15s}
# shellcheck source=benches/http/common.sh
. benches/http/common.sh

write_rows "$work/data.ndjson" raw
"$bin" build --quiet --input "$work/data.ndjson" --key k --raw-value v --shards 2 --output "$work/shards"
"$bin" publish "$work"/shards/*.snapkv --store "$work/store" --dataset bench --version v1 >/dev/null

start() { # NAME PORT FLAGS... : a reader of the store on 127.0.0.1:PORT
    local name=$1 port=$2
    shift 2
    "$bin" serve --store "$work/store" --dataset bench --cache-dir "$work/cache-$name" \
        --listen "127.0.0.1:$port" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
}
start a 18191 --shards 0-0 --peers http://127.0.0.1:18192
start b 18192 --shards 1-1 --peers http://127.0.0.1:18191
start w 18193
for port in 18191 18192 18193; do
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done
# A knows B's shard before the load starts.
for _ in $(seq 300); do
    curl -sf http://127.0.0.1:18191/v1/shards | grep -q '"url"' && break
    sleep 0.1
done

# wrk_run on keys KEY_LO..KEY_HI.
wrk_keys() { # URL KEY_LO KEY_HI
    KEY_LO=$2 KEY_HI=$3 wrk_run "$1"
}
half=$((KEYS / 2))
read -r d_rps d_p50 d_p99 < <(wrk_keys http://127.0.0.1:18191 0 "$half")
read -r f_rps f_p50 f_p99 < <(wrk_keys http://127.0.0.1:18191 "$half" "$KEYS")
read -r m_rps m_p50 m_p99 < <(wrk_keys http://127.0.0.1:18191 0 "$KEYS")
read -r w_rps w_p50 w_p99 < <(wrk_keys http://127.0.0.1:18193 0 "$KEYS")
for v in "$d_rps" "$f_rps" "$m_rps" "$w_rps"; do
    [ -n "$v" ] || { echo "a wrk run failed" >&2; exit 1; }
done
forwarded=$(curl -sf http://127.0.0.1:18191/metrics | awk '/^snapkv_forwarded_requests_total.*answered/ {print $2}')

python3 - "$KEYS" "$CONNS" "$DURATION" "$forwarded" \
    "$d_rps" "$d_p50" "$d_p99" "$f_rps" "$f_p50" "$f_p99" "$m_rps" "$m_p50" "$m_p99" "$w_rps" "$w_p50" "$w_p99" <<'PY'
import sys
keys, conns, duration, forwarded = sys.argv[1:5]
d, f, m, w = (tuple(float(x) for x in sys.argv[i:i + 3]) for i in (5, 8, 11, 14))
print(f"{keys} keys in 2 shards, {conns} connections, {duration} per run; "
      f"{float(forwarded or 0):.0f} requests forwarded by A in all")
print("| requests | req/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
for name, r in [("A, keys of its own shard (direct)", d), ("A, keys of B's shard (forwarded)", f),
                ("A, all keys (half forwarded)", m), ("W holding both shards, all keys", w)]:
    print(f"| {name} | {r[0]:.0f} | {r[1]:.3f} | {r[2]:.3f} |")
print()
print(f"forwarded / direct: {f[0] / d[0]:.2f}x req/s, {f[1] / d[1]:.2f}x p50, {f[2] / d[2]:.2f}x p99")
print(f"half forwarded / one reader with everything: {m[0] / w[0]:.2f}x req/s")
PY
