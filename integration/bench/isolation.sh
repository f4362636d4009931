#!/usr/bin/env bash
# Multi-tenant isolation benchmark (issue #16), side by side in one run:
#   1. `run --rm busybox true` with a user namespace of its own (`--userns auto`: a range
#      from the pool, idmapped layers under overlayfs) beside without one, beside
#      `podman run --rm --userns=auto` (runc) and podman without;
#   2. the cost of disk accounting: the agent's CPU with N idle tasks that each have a disk
#      budget (`--storage-opt size=1g`), measured over a window with a walk every second
#      (`--disk-check-interval 1s`) and with none in the window (60 s), on this host's file
#      system without project quotas (the walking fallback: the costly path); the default
#      interval (10 s) costs a tenth of the 1 s figure.
#
#   sudo integration/bench/isolation.sh [RUNS]    (default 30 runs; 100 tasks, 30 s windows)
#
# RUNS=1 is the smoke mode: 10 tasks, 3 s windows.
set -euo pipefail
RUNS=${1:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "isolation.sh: run as root" >&2; exit 1; }
for tool in hyperfine podman runc python3; do
  command -v "$tool" >/dev/null || { echo "isolation.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done
grep -q '^containers:' /etc/subuid || { echo "isolation.sh: podman --userns=auto needs a 'containers' entry in /etc/subuid; run scripts/setup.sh --bench" >&2; exit 1; }
TASKS=100; WINDOW=30
if [ "$RUNS" = 1 ]; then TASKS=10; WINDOW=3; fi

. "$HERE/common.sh"
bench_init isolation
# A task's root (an unprivileged host id) must pass through the dirs above the data root.
chmod 0711 "$WORK"
PODRUN=(--rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --cgroups=no-conmon --cgroup-parent="$CG/podman" --runtime runc)
trap bench_cleanup EXIT

bench_build
bench_agent --default-network none --userns-pool 1073741824:67108864
bench_images

echo "== 1. run --rm true, with and without a user namespace ($RUNS runs each)"
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/userns.json" \
  -n "berth run --rm --userns auto" "$BERTH run --rm --userns auto busybox true" \
  -n "berth run --rm" "$BERTH run --rm busybox true" \
  -n "podman run --rm --userns=auto (runc)" "${P[*]} run ${PODRUN[*]} --userns=auto $IMG true" \
  -n "podman run --rm (runc)" "${P[*]} run ${PODRUN[*]} $IMG true" \
  >"$WORK/hyperfine.log" 2>&1 || { cat "$WORK/hyperfine.log" >&2; tail -5 "$WORK/agent.log" >&2; exit 1; }

# The agent's CPU time (utime + stime, clock ticks) over WINDOW seconds, as percent of a CPU.
cpu_percent() {
  local pid=$1 hz a b
  hz=$(getconf CLK_TCK)
  a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  sleep "$WINDOW"
  b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  python3 -c "print(f'{($b - $a) * 100 / $hz / $WINDOW:.3f}')"
}

echo "== 2. disk accounting: $TASKS idle tasks with budgets, agent CPU over ${WINDOW}s"
: > "$WORK/disk.txt"
for interval in 60s 1s; do
  kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
  bench_agent --default-network none --disk-check-interval "$interval"
  if [ "$interval" = 60s ]; then
    for i in $(seq "$TASKS"); do
      "$BERTH" run -d --storage-opt size=1g busybox sh -c 'echo some > /data; sleep 100000' >/dev/null
    done
  fi
  sleep 2
  echo "$interval $(cpu_percent "$AGENT_PID")" >> "$WORK/disk.txt"
done
"$BERTH" node --json > "$WORK/node.json"

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$WORK" "$RUNS" "$TASKS" "$WINDOW" > "$OUT/isolation-$STAMP.md" <<'PY'
import json, sys
work, runs, tasks, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
res = json.load(open(f"{work}/userns.json"))["results"]
by = {r["command"]: r["median"] for r in res}
print(f"## Isolation, {runs} runs each, hyperfine (warm-up 3)\n")
print("### run --rm busybox true\n")
print("| command | median ms | min ms | max ms | ratio vs berth --userns auto |")
print("|---|---|---|---|---|")
base = res[0]["median"]
for r in res:
    print(f"| {r['command']} | {r['median']*1000:.1f} | {r['min']*1000:.1f} | {r['max']*1000:.1f} | {r['median']/base:.2f}x |")
print(f"\nCost of the user namespace: berth {by['berth run --rm --userns auto']/by['berth run --rm']:.2f}x of without, "
      f"podman {by['podman run --rm --userns=auto (runc)']/by['podman run --rm (runc)']:.2f}x of without.")
cpu = dict(line.split() for line in open(f"{work}/disk.txt"))
idle, walking = float(cpu["60s"]), float(cpu["1s"])
extra = max(walking - idle, 0.0)
node = json.load(open(f"{work}/node.json"))
print(f"\n### Disk accounting, {tasks} idle tasks with budgets, {window} s windows ({node['disk']['enforcement']})\n")
print("| agent | CPU % |")
print("|---|---|")
print(f"| no walk in the window (interval 60 s) | {idle:.3f} |")
print(f"| a walk every second (interval 1 s) | {walking:.3f} |")
print(f"| default interval 10 s (estimated) | {idle + extra / 10:.3f} |")
print(f"\nPer task: {extra / tasks:.4f} % of a CPU with a walk every second, "
      f"{extra / tasks / 10:.5f} % at the default 10 s.")
PY
cat "$OUT/isolation-$STAMP.md"
