# Sourced by the HTTP benchmarks: settings from the environment (KEYS, CONNS, DURATION,
# THREADS, SNAPKV_BIN), the binary (built when missing), a work directory and the processes
# started (removed and stopped on exit), and `wrk_run`. Run from the repository root.
KEYS=${KEYS:-1000000}
CONNS=${CONNS:-64}
DURATION=${DURATION:-20s}
THREADS=${THREADS:-2}
MGET_KEYS=${MGET_KEYS:-100}
export KEYS MGET_KEYS
bin=${SNAPKV_BIN:-target/release/snapkv}
[ -x "$bin" ] || cargo build --release --bin snapkv
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# wrk_run URL [SCRIPT] -> "req/s p50_ms p99_ms": wrk with SCRIPT (default random_key.lua; KEY_LO,
# KEY_HI and DATASET from the environment); any answer that is not 2xx fails the run.
wrk_run() {
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "${2:-benches/http/random_key.lua}" "$1" \
        >"$work/wrk.out"
    if grep -q "Non-2xx" "$work/wrk.out"; then
        echo "non-2xx answers from $1:" >&2
        cat "$work/wrk.out" >&2
        exit 1
    fi
    awk '/Requests\/sec/ {rps=$2}
         $1=="50%" {p50=$2} $1=="99%" {p99=$2}
         END {print rps, p50, p99}' "$work/wrk.out" |
        awk '{ for (i = 2; i <= 3; i++) { v = $i; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
               else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
               $i = v } print }'
}

# cpu_ticks PID... -> user + system clock ticks of the processes (all their threads) so far.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        # Fields after the command name, which is in parentheses: utime and stime are the
        # 12th and 13th of them.
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# us_per_request TICKS_BEFORE TICKS_AFTER REQ_PER_S -> CPU microseconds per request over a
# wrk run of DURATION.
us_per_request() {
    python3 -c "print(f'{($2 - $1) / $(getconf CLK_TCK) * 1e6 / ($3 * ${DURATION%s}):.1f}')"
}

# write_rows FILE raw|json: KEYS rows keyed `key:%012d` (column k) with ~100-byte seeded values:
# `raw` puts each value's JSON text in column v (build with --raw-value v), `json` puts its
# fields in columns (a JSON dataset).
write_rows() {
    python3 - "$KEYS" "$1" "$2" <<'PY'
import json, random, sys
n, path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = random.Random(7)
with open(path, "w") as f:
    for i in range(n):
        v = {"id": i, "score": round(r.random() * 1000, 2), "name": "user%06d" % r.randint(0, 999999),
             "segment": r.choice(["new", "casual", "regular", "power"]), "active": r.random() < 0.5}
        k = f"key:{i:012d}"
        row = {"k": k, "v": json.dumps(v, separators=(",", ":"))} if mode == "raw" else {"k": k, **v}
        f.write(json.dumps(row) + "\n")
PY
}
