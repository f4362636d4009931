#!/usr/bin/env bash
# Agent benchmark (issue #4), one run, side by side with podman where it has a peer:
#   1. idle agent with 100 running containers (10 pods × 10): RSS, and CPU over 30 s;
#   2. re-adopting them after `kill -9` of the agent: from exec to an API answer listing
#      all 100 running (median of 5 restarts), and from exec to "state recovered";
#   3. node overhead of 100 idle containers: agent + 100 supervisors (PSS) vs podman's 100
#      conmons (podman has no daemon); listing them: `berth ps` vs `podman ps`.
#
#   sudo integration/bench/agent.sh
#
# Every cgroup goes below this script's own cgroup; everything is removed on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "agent.sh: run as root" >&2; exit 1; }
for tool in hyperfine podman python3; do
  command -v "$tool" >/dev/null || { echo "agent.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done
. "$HERE/common.sh"
bench_init agentbench
PODRUN=(-d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --cgroups=no-conmon --cgroup-parent="$CG/podman")
trap bench_cleanup EXIT

start_agent() {
  "$BERTH" agent --cgroup-root "$CG/berth" --default-network none --cni-conf-dir "$WORK/net.d" 2>>"$WORK/agent.log" &
  AGENT_PID=$!
}

bench_build
bench_agent --default-network none
"$BERTH" import --tag busybox "$WORK/fixtures/busybox-oci" -q >/dev/null

echo "== 100 containers in 10 pods"
for p in $(seq 10); do
  {
    echo "name: p$p"
    echo "containers:"
    for c in $(seq 10); do echo "  - {name: c$c, image: busybox, command: [sleep, '1000000']}"; done
  } > "$WORK/p$p.yaml"
  "$BERTH" pod run "$WORK/p$p.yaml" >/dev/null
done
running() { "$BERTH" ps --format json 2>/dev/null | python3 -c 'import json,sys; print(sum(c["status"]=="running" for c in json.load(sys.stdin)))' 2>/dev/null || echo 0; }
[ "$(running)" = 100 ] || { echo "agent.sh: expected 100 running containers" >&2; exit 1; }

echo "== 1. idle for 30 s"
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$AGENT_PID/stat"; }
t0=$(ticks); sleep 30; t1=$(ticks)
HZ=$(getconf CLK_TCK)
CPU=$(python3 -c "print(f'{($t1-$t0)/$HZ/30*100:.3f}')")
RSS=$(awk '/^VmRSS:/{print $2}' "/proc/$AGENT_PID/status")
PSS_AGENT=$(awk '/^Pss:/{print $2}' "/proc/$AGENT_PID/smaps_rollup")
THREADS=$(awk '/^Threads:/{print $2}' "/proc/$AGENT_PID/status")

echo "== 2. re-adopt after kill -9 (5 times)"
: > "$WORK/adopt.txt"
for i in $(seq 5); do
  kill -9 "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
  : > "$WORK/agent.log"
  began=$(date +%s%N)
  BERTH_LOG=info start_agent
  until [ "$(running)" = 100 ]; do sleep 0.005; done
  done_at=$(date +%s%N)
  echo "$(( (done_at - began) / 1000 ))" >> "$WORK/adopt.txt"
done
RECOVERED=$(grep -o 'state recovered.*' "$WORK/agent.log" | head -1 || true)

echo "== 3. node overhead and listing vs podman (100 conmons)"
PSS_SHIMS=0
for f in "$WORK"/root/containers/*/container.json; do
  pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["shim"]["pid"])' "$f")
  PSS_SHIMS=$(( PSS_SHIMS + $(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup") ))
done
"${P[@]}" load -q -i "$WORK/fixtures/busybox-docker.tar" >/dev/null
for i in $(seq 100); do "${P[@]}" run --runtime runc "${PODRUN[@]}" berth.test/busybox:latest sleep 1000000 >/dev/null; done
PSS_CONMON=0
for id in $("${P[@]}" ps -q); do
  pid=$("${P[@]}" inspect -f '{{.State.ConmonPid}}' "$id")
  PSS_CONMON=$(( PSS_CONMON + $(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup") ))
done
hyperfine -N --warmup 2 --runs 10 --export-json "$WORK/ps.json" \
  -n "berth ps (100 containers)" "$BERTH ps" \
  -n "podman ps (100 containers)" "${P[*]} ps" >/dev/null

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$WORK" "$CPU" "$RSS" "$PSS_AGENT" "$THREADS" "$PSS_SHIMS" "$PSS_CONMON" "$RECOVERED" > "$OUT/agent-$STAMP.md" <<'PY'
import json, statistics, sys
work, cpu, rss, pss_agent, threads, pss_shims, pss_conmon, recovered = sys.argv[1:9]
adopt = [int(l) / 1000 for l in open(f"{work}/adopt.txt") if l.strip()]
print("## Agent with 100 containers in 10 pods")
print()
print("| measure | value | target |")
print("|---|---|---|")
print(f"| agent RSS, idle | {int(rss)/1024:.1f} MiB (PSS {int(pss_agent)/1024:.1f} MiB, {threads} threads) | < 30 MiB |")
print(f"| agent CPU, idle 30 s | {float(cpu):.3f} % of a core | < 1 % |")
print(f"| re-adopt 100 after kill -9, exec → API lists 100 running (median of 5) | {statistics.median(adopt):.0f} ms (min {min(adopt):.0f}, max {max(adopt):.0f}) | < 1000 ms |")
print(f"| agent log at restart | `{recovered}` | |")
print()
print("### Node overhead of 100 idle containers (PSS)")
print()
print("| stack | total | per container | ratio |")
print("|---|---|---|---|")
berth = int(pss_agent) + int(pss_shims)
print(f"| berth: agent + 100 supervisors | {berth/1024:.1f} MiB | {berth/100:.0f} KiB | 1.00x |")
print(f"| podman: 100 conmons (no daemon) | {int(pss_conmon)/1024:.1f} MiB | {int(pss_conmon)/100:.0f} KiB | {int(pss_conmon)/berth:.2f}x |")
rs = json.load(open(f"{work}/ps.json"))["results"]
base = rs[0]["median"]
print()
print("### Listing 100 containers (hyperfine, 10 runs)")
print()
print("| command | median ms | ratio vs berth |")
print("|---|---|---|")
for r in rs:
    print(f"| {r['command']} | {r['median']*1000:.1f} | {r['median']/base:.2f}x |")
PY
cat "$OUT/agent-$STAMP.md"
