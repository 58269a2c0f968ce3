#!/usr/bin/env bash
# HTTP load comparison, in one run on this machine: `snapkv serve` GET of random keys vs nginx
# returning a fixed 100-byte body (the HTTP ceiling) vs Redis GET of the same keys. KEYS keys of
# ~100-byte JSON values, CONNS keep-alive connections. Prints req/s, p50/p99 and memory, with
# snapkv's ratios against both.
#
# Needs wrk, nginx, redis-server, redis-cli, redis-benchmark and python3:
#   apt-get install -y wrk nginx-light redis-server redis-tools
# Server CPU per request (user + system time of the server's processes during the run, over
# the requests answered) is printed beside, the load generator's excluded.
# Usage: benches/http/run.sh   (env: KEYS=1000000 CONNS=64 DURATION=20s THREADS=2
#   CONFIGS='|--cache-bytes 16MiB': `snapkv serve` flag sets to measure, separated by `|`;
#   BUILD_FLAGS='--format-version 1': extra `snapkv build` flags for the snapshot served)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/http/common.sh
. benches/http/common.sh

# Keys `key:%012d` (redis-benchmark's `key:__rand_int__` form) and ~100-byte JSON values.
python3 - "$KEYS" "$work" <<'PY'
import json, random, sys
n, d = int(sys.argv[1]), sys.argv[2]
r = random.Random(7)
countries = ["US", "SE", "DE", "BR", "JP", "IN", "FR", "GB"]
with open(f"{d}/data.ndjson", "w") as f, open(f"{d}/redis.txt", "wb") as g:
    for i in range(n):
        k = f"key:{i:012d}"
        v = json.dumps({"id": i, "score": round(r.random() * 1000, 2), "country": r.choice(countries),
                        "since": f"20{r.randint(10, 25)}-0{r.randint(1, 9)}-1{r.randint(0, 9)}",
                        "active": r.random() < 0.5, "name": "user%06d" % r.randint(0, 999999),
                        "segment": r.choice(["new", "casual", "regular", "power"])},
                       separators=(",", ":"))
        f.write(json.dumps({"k": k, "v": v}) + "\n")
        kb, vb = k.encode(), v.encode()
        g.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(kb), kb, len(vb), vb))
PY
# shellcheck disable=SC2086 # a flag set, split into words on purpose
"$bin" build --quiet --input "$work/data.ndjson" --key k --raw-value v --output "$work/bench.snapkv" \
    ${BUILD_FLAGS-}
body=$(head -c 100 < <(yes '{"id":1,"score":1.5}' | tr -d '\n'))

# nginx: a fixed 100-byte body.
cat >"$work/nginx.conf" <<NGINX
worker_processes $THREADS;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:18182;
        location / { default_type application/json; return 200 '$body'; }
    }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

# Redis with the same keys.
redis-server --port 18183 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p 18183 ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p 18183 --pipe <"$work/redis.txt" >/dev/null
sleep 1

# snapkv, once per flag set of CONFIGS.
IFS='|' read -r -a configs <<<"${CONFIGS-|--cache-bytes 16MiB}"
[ ${#configs[@]} -gt 0 ] || configs=("")
rows=()
for i in "${!configs[@]}"; do
    # shellcheck disable=SC2086 # a flag set, split into words on purpose
    "$bin" serve --file "bench=$work/bench.snapkv" --listen 127.0.0.1:0 ${configs[$i]} \
        >"$work/serve.out" 2>"$work/serve.err" &
    pid=$!
    for _ in $(seq 300); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
    url=$(sed -n 's/^listening on //p' "$work/serve.out")
    for _ in $(seq 300); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
    cpu=$(cpu_ticks "$pid")
    read -r rps p50 p99 < <(wrk_run "$url")
    cpu_us=$(us_per_request "$cpu" "$(cpu_ticks "$pid")" "$rps")
    rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
    anon=$(awk '/RssAnon/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
    if [ "$i" -eq 0 ]; then
        # Batches: mgets of MGET_KEYS random keys, on the same server and connections.
        read -r mget_rps mget_p50 mget_p99 < <(wrk_run "$url" benches/http/mget.lua)
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rows+=("${configs[$i]:-(defaults)};$rps;$p50;$p99;$rss;$anon;$cpu_us")
    if [ "$i" -eq 0 ]; then first_rps=$rps; fi
done

nginx_pids=$(pgrep -d ' ' -f 'nginx: (master|worker)' || true)
# shellcheck disable=SC2086 # a list of pids
cpu=$(cpu_ticks $nginx_pids)
read -r n_rps n_p50 n_p99 < <(wrk_run "http://127.0.0.1:18182")
# shellcheck disable=SC2086
n_cpu=$(us_per_request "$cpu" "$(cpu_ticks $nginx_pids)" "$n_rps")
requests=$(python3 -c "print(int(float('$first_rps') * ${DURATION%s}))")
redis_pid=$(redis-cli -p 18183 info server | awk -F: '/^process_id:/ {print $2 + 0}')
cpu=$(cpu_ticks "$redis_pid")
redis-benchmark -p 18183 -c "$CONNS" --threads "$THREADS" -n "$requests" -r "$KEYS" -t get --csv >"$work/redis.csv"
redis_cpu_end=$(cpu_ticks "$redis_pid")
read -r r_rps r_p50 r_p99 < <(python3 - "$work/redis.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
row = rows[-1]
print(row["rps"], row["p50_latency_ms"], row["p99_latency_ms"])
PY
)
# redis-benchmark sends a fixed number of requests: CPU over those.
r_cpu=$(python3 -c "print(f'{($redis_cpu_end - $cpu) / $(getconf CLK_TCK) * 1e6 / $requests:.1f}')")
redis_mb=$(redis-cli -p 18183 info memory | awk -F: '/^used_memory_rss:/ {printf "%.0f", $2 / 1048576}')
file_mb=$(du -m "$work/bench.snapkv" | cut -f1)

printf '%s\n' "${rows[@]}" | python3 -c '
import sys
n = (float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[13]))
r = (float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[14]))
redis_mb = float(sys.argv[7])
print(f"{sys.argv[8]} keys, {sys.argv[9]} connections, {sys.argv[10]} load threads, "
      f"{sys.argv[11]} per run; snapshot file {sys.argv[12]} MB")
print("| server | req/s | p50 ms | p99 ms | server CPU µs/request | memory MB (snapkv: RSS / anonymous) |")
print("|---|---:|---:|---:|---:|---:|")
ratios = []
first = None
for line in sys.stdin.read().splitlines():
    flags, rps, p50, p99, rss, anon, cpu = line.split(";")
    rps, p50, p99, cpu = float(rps), float(p50), float(p99), float(cpu)
    print(f"| snapkv serve {flags} | {rps:.0f} | {p50:.3f} | {p99:.3f} | {cpu:.1f} | {rss} / {anon} |")
    first = first or rps
    ratios.append(f"snapkv {flags}: {rps / n[0]:.2f}x nginx req/s, {rps / r[0]:.2f}x Redis req/s, "
                  f"p99 {p99 / n[2]:.2f}x nginx p99, "
                  f"CPU/request {cpu / n[3]:.2f}x nginx, {cpu / r[3]:.2f}x Redis, "
                  f"memory {float(rss) / redis_mb:.2f}x Redis (anonymous {float(anon) / redis_mb:.2f}x)")
m_rps, m_p50, m_p99, per = float(sys.argv[15]), float(sys.argv[16]), float(sys.argv[17]), int(sys.argv[18])
print(f"| snapkv mget of {per} keys (first flag set) | {m_rps:.0f} ({m_rps * per:.0f} keys/s) | {m_p50:.3f} | {m_p99:.3f} | - | - |")
ratios.append(f"mget of {per} keys: {m_rps * per:.0f} keys/s, {m_rps * per / first:.1f}x the keys/s of single GETs "
              f"(first flag set; target >= 10x)")
print(f"| nginx fixed 100 B body | {n[0]:.0f} | {n[1]:.3f} | {n[2]:.3f} | {n[3]:.1f} | - |")
print(f"| Redis GET | {r[0]:.0f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.1f} | {redis_mb:.0f} (used_memory_rss) |")
print()
for line in ratios:
    print(line)
' "$n_rps" "$n_p50" "$n_p99" "$r_rps" "$r_p50" "$r_p99" "$redis_mb" "$KEYS" "$CONNS" "$THREADS" "$DURATION" "$file_mb" "$n_cpu" "$r_cpu" \
    "$mget_rps" "$mget_p50" "$mget_p99" "$MGET_KEYS"
