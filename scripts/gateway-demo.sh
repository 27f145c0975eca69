#!/usr/bin/env bash
# whale workers behind the SGLang Model Gateway, all on this machine, to try
# the "several machines" recipe of the README before spreading it out.
#
#   scripts/gateway-demo.sh [--workers N] [--threads T] [--policy P] [--port PORT] [--bench] [MODEL]
#
# Starts N `whale serve` workers (T threads each) on 127.0.0.1 and one gateway
# (`smg launch`, from PyPI's sglang-router, installed into target/gateway-venv
# on first use) in front of them, prints the URLs, and waits (Ctrl-C stops
# all). With --bench it instead measures completion tokens per second through
# the gateway, first with the N workers, then with one worker of N x T
# threads, and prints both.
set -euo pipefail
cd "$(dirname "$0")/.."

workers=2 threads=1 policy=cache_aware port=30000 bench=0 model=smollm2-135m
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --policy) policy=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bench) bench=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) model=$1; shift ;;
    esac
done

whale=${WHALE:-target/release/whale}
[ -x "$whale" ] || cargo build --release --bin whale
smg=$(command -v smg || true)
if [ -z "$smg" ]; then
    smg=target/gateway-venv/bin/smg
    if [ ! -x "$smg" ]; then
        python3 -m venv target/gateway-venv
        target/gateway-venv/bin/pip install -q sglang-router==0.3.2
    fi
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_cluster N T: N workers of T threads on ports port+1.., then the gateway on port.
start_cluster() {
    local n=$1 t=$2 urls=() i
    for i in $(seq 1 "$n"); do
        "$whale" serve "$model" --host 127.0.0.1 --port $((port + i)) --threads "$t" 2>"target/gateway-demo-worker$i.log" &
        pids+=($!)
        urls+=("http://127.0.0.1:$((port + i))")
    done
    for u in "${urls[@]}"; do
        until curl -sf "$u/health" >/dev/null; do sleep 0.2; done
    done
    "$smg" launch --host 127.0.0.1 --port "$port" --policy "$policy" --worker-urls "${urls[@]}" \
        --health-check-interval-secs 2 --worker-startup-check-interval 1 --log-level warn \
        >target/gateway-demo-gateway.log 2>&1 &
    pids+=($!)
    # Ready once every worker is registered and healthy.
    until [ "$(curl -sf "http://127.0.0.1:$port/workers" | python3 -c \
        'import json,sys; print(sum(w["is_healthy"] for w in json.load(sys.stdin)["workers"]))' 2>/dev/null)" = "$n" ]; do
        sleep 0.5
    done
}

stop_cluster() { cleanup; pids=(); }

if [ "$bench" = 0 ]; then
    start_cluster "$workers" "$threads"
    echo "gateway: http://127.0.0.1:$port/v1 ($policy) in front of $workers workers on ports $((port + 1))-$((port + workers))"
    echo "try:     curl http://127.0.0.1:$port/v1/chat/completions -H 'Content-Type: application/json' \\"
    echo "           -d '{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'"
    echo "logs:    target/gateway-demo-*.log; Ctrl-C stops everything"
    wait
    exit 0
fi

# 4 concurrent clients per worker, 64 tokens each, different prompts.
load() {
    python3 - "http://127.0.0.1:$port/v1/chat/completions" $((workers * 4 * 3)) $((workers * 4)) <<'PY'
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, total, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def one(i):
    body = {"model": "m", "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "user", "content": f"Write a short story about the number {i}."}]}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))["usage"]["completion_tokens"]
t0 = time.time()
with ThreadPoolExecutor(clients) as pool:
    tokens = sum(pool.map(one, range(total)))
dt = time.time() - t0
print(f"{tokens} tokens in {dt:.1f} s: {tokens / dt:.1f} tok/s")
PY
}
echo "== $workers workers x $threads threads"
start_cluster "$workers" "$threads"
load
stop_cluster
echo "== 1 worker x $((workers * threads)) threads, the same load"
start_cluster 1 $((workers * threads))
load
