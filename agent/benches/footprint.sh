#!/usr/bin/env bash
# Footprint of the metalfleet agent next to Prometheus node_exporter, in the same run on this host.
#
# The agent samples every INTERVAL seconds and streams to a coordinator on loopback (the real one at
# target/debug/coordinator when it exists, otherwise `agent run --dry-run`, which samples and buffers
# without a coordinator); node_exporter is scraped with curl every INTERVAL seconds. For DURATION seconds
# it reads VmRSS of both every second and prints average and maximum RSS and the CPU time (utime+stime)
# each spent during the window. Figures only, nothing is asserted.
#
# Usage: agent/benches/footprint.sh            (DURATION=60 INTERVAL=5 by default)
# Needs: curl, prometheus-node-exporter (apt-get install -y prometheus-node-exporter).
set -euo pipefail

DURATION=${DURATION:-60}
INTERVAL=${INTERVAL:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

NODE_EXPORTER=$(command -v prometheus-node-exporter || command -v node_exporter || true)
if [[ -z "$NODE_EXPORTER" ]]; then
    echo "error: prometheus-node-exporter is not installed; run: apt-get install -y prometheus-node-exporter" >&2
    exit 69
fi

echo "building the agent with the agent-release profile..." >&2
(cd "$ROOT" && cargo build --quiet --profile agent-release -p agent)
AGENT="$ROOT/target/agent-release/agent"

# Waits up to 30 s for a regular expression to appear in a file; prints the first match.
wait_for_line() {
    local file=$1 pattern=$2 deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        if grep -m1 -oE "$pattern" "$file" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: no line matching '$pattern' in $file within 30 s:" >&2
    cat "$file" >&2
    return 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat, after the command name).
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# CPU time of the live threads in nanoseconds (first field of each /proc/PID/task/*/schedstat): finer
# than clock ticks, which round a lean process down to zero.
cpu_ns() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{sum += $1} END {printf "%d", sum}'
}

rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

MODE="dry-run (no coordinator)"
AGENT_ARGS=(run --dry-run)
COORDINATOR="$ROOT/target/debug/coordinator"
if [[ -x "$COORDINATOR" ]] && "$COORDINATOR" serve --help >/dev/null 2>&1; then
    # The agent takes the longer of its own interval and the coordinator's: set both to INTERVAL.
    printf 'heartbeat_interval = "%ss"\n' "$INTERVAL" >"$WORK/coordinator.toml"
    "$COORDINATOR" serve --config "$WORK/coordinator.toml" --listen 127.0.0.1:0 --state-dir "$WORK/coordinator" --insecure \
        >"$WORK/coordinator.out" 2>"$WORK/coordinator.err" &
    PIDS+=($!)
    if ADDRESS=$(wait_for_line "$WORK/coordinator.out" 'listening addr=[^ ]+'); then
        ADDRESS=${ADDRESS#listening addr=}
        MODE="streaming to target/debug/coordinator at $ADDRESS"
        AGENT_ARGS=(run --coordinator "$ADDRESS" --insecure)
    else
        echo "warning: the coordinator did not start; measuring the agent in --dry-run mode" >&2
    fi
fi

"$AGENT" "${AGENT_ARGS[@]}" --state-dir "$WORK/agent" --hostname bench --interval "${INTERVAL}s" \
    >"$WORK/agent.out" 2>"$WORK/agent.err" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
if [[ "${AGENT_ARGS[1]}" != --dry-run ]]; then
    wait_for_line "$WORK/agent.out" 'enrolled machine_id=[^ ]+' >/dev/null
fi

PORT=$(free_port)
"$NODE_EXPORTER" --web.listen-address="127.0.0.1:$PORT" >"$WORK/node_exporter.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
deadline=$((SECONDS + 30))
until curl -fsS "http://127.0.0.1:$PORT/metrics" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        echo "error: node_exporter did not answer on 127.0.0.1:$PORT within 30 s" >&2
        cat "$WORK/node_exporter.log" >&2
        exit 69
    fi
    sleep 0.1
done

echo "measuring for ${DURATION}s at a ${INTERVAL}s interval; agent: $MODE" >&2
agent_cpu0=$(cpu_ticks "$AGENT_PID")
node_cpu0=$(cpu_ticks "$NODE_PID")
agent_ns0=$(cpu_ns "$AGENT_PID")
node_ns0=$(cpu_ns "$NODE_PID")
agent_sum=0 agent_max=0 node_sum=0 node_max=0 n=0 scrapes=0
for ((t = 0; t < DURATION; t++)); do
    if ((t % INTERVAL == 0)); then
        curl -fsS "http://127.0.0.1:$PORT/metrics" >/dev/null && scrapes=$((scrapes + 1))
    fi
    a=$(rss_kib "$AGENT_PID")
    b=$(rss_kib "$NODE_PID")
    agent_sum=$((agent_sum + a)) node_sum=$((node_sum + b)) n=$((n + 1))
    ((a > agent_max)) && agent_max=$a
    ((b > node_max)) && node_max=$b
    sleep 1
done
agent_cpu=$(($(cpu_ticks "$AGENT_PID") - agent_cpu0))
node_cpu=$(($(cpu_ticks "$NODE_PID") - node_cpu0))
agent_ns=$(($(cpu_ns "$AGENT_PID") - agent_ns0))
node_ns=$(($(cpu_ns "$NODE_PID") - node_ns0))
hz=$(getconf CLK_TCK)
awk -v as="$agent_sum" -v am="$agent_max" -v ac="$agent_cpu" -v ns="$node_sum" -v nm="$node_max" -v nc="$node_cpu" \
    -v n="$n" -v hz="$hz" -v ans="$agent_ns" -v nns="$node_ns" 'BEGIN {
        printf "\n%-16s %14s %14s %18s %20s\n", "process", "RSS avg (MiB)", "RSS max (MiB)", "CPU in window (s)", "CPU schedstat (ms)"
        printf "%-16s %14.1f %14.1f %18.2f %20.1f\n", "agent", as / n / 1024, am / 1024, ac / hz, ans / 1e6
        printf "%-16s %14.1f %14.1f %18.2f %20.1f\n", "node_exporter", ns / n / 1024, nm / 1024, nc / hz, nns / 1e6
        printf "\nagent/node_exporter: RSS avg %.0f %%, CPU (schedstat) %.1f %%\n", 100 * as / ns, (nns > 0 ? 100 * ans / nns : 0)
    }'
printf '\nnode_exporter scrapes: %d; agent mode: %s\n' "$scrapes" "$MODE"
printf 'agent binary (agent-release): %d bytes; node_exporter binary: %d bytes\n' \
    "$(stat -c %s "$AGENT")" "$(stat -c %s "$(readlink -f "$NODE_EXPORTER")")"
