#!/usr/bin/env bash
# Allocator on real agents (issue #14): `berth master` and three real `berth agent`s that
# joined it on this machine. Each run submits a job of 6 replicas (busybox `sleep`) and
# times submit → all 6 reported running by the master (`berth cluster ls`), then removes
# the job and waits until the agents have no pod left. Side by side in the same run, the
# floor without a master: 6 `podman run -d` at once, and 6 `berth run -d` at once on one
# agent. p50/p99 over RUNS.
#
#   sudo integration/bench/replicas.sh [RUNS]      (default 20; smoke: 1 → 2 runs)
#
# Every cgroup goes below this script's own cgroup; everything is removed on exit.
set -euo pipefail
RUNS=${1:-20}
[ "$RUNS" = 1 ] && RUNS=2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "replicas.sh: run as root" >&2; exit 1; }
for tool in podman python3; do
  command -v "$tool" >/dev/null || { echo "replicas.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done
. "$HERE/common.sh"
bench_init replicasbench
MASTER_PID=""; MEMBERS=(n1 n2 n3); MEMBER_PIDS=()
PODRUN=(-d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --cgroups=no-conmon --cgroup-parent="$CG/podman")
member() { BERTH_SOCKET="$WORK/$1.sock" "$BERTH" "${@:2}"; }
clear_members() {
  local n id
  for n in "${MEMBERS[@]}"; do
    for _ in $(seq 300); do
      [ -z "$(member "$n" pod ls -q 2>/dev/null)" ] && break; sleep 0.05
    done
    for id in $(member "$n" pod ls -q 2>/dev/null); do member "$n" pod rm -f "$id" >/dev/null; done
  done
}
cleanup() {
  set +e
  if [ -n "$MASTER_PID" ]; then
    "$BERTH" cluster rm bench >/dev/null 2>&1
    clear_members
  fi
  for pid in "${MEMBER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  [ -n "$MASTER_PID" ] && kill "$MASTER_PID" 2>/dev/null && wait "$MASTER_PID" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT

bench_build
bench_agent --default-network none
bench_images

MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
INIT=$("$BERTH" --root "$WORK/master" master init --listen "127.0.0.1:$MPORT")
TOKEN=$(grep -o -- '--join-token [0-9a-f]*' <<<"$INIT" | cut -d' ' -f2)
HASH=$(grep -o -- '--ca-cert-hash sha256:[0-9a-f]*' <<<"$INIT" | cut -d' ' -f2)
"$BERTH" --root "$WORK/master" master 2>"$WORK/master.log" &
MASTER_PID=$!
export BERTH_CLUSTER="$WORK/master/admin.json"
for _ in $(seq 200); do "$BERTH" cluster nodes >/dev/null 2>&1 && break; sleep 0.05; done
for n in "${MEMBERS[@]}"; do
  BERTH_ROOT="$WORK/$n" BERTH_SOCKET="$WORK/$n.sock" "$BERTH" agent --cgroup-root "$CG/$n" \
    --cni-conf-dir "$WORK/$n-net.d" --default-network none \
    --master "https://127.0.0.1:$MPORT" --join-token "$TOKEN" --ca-cert-hash "$HASH" \
    --node-name "$n" 2>"$WORK/$n.log" &
  MEMBER_PIDS+=($!)
done
for n in "${MEMBERS[@]}"; do
  for _ in $(seq 200); do member "$n" ps >/dev/null 2>&1 && break; sleep 0.05; done
  BERTH_ROOT="$WORK/$n" member "$n" import --tag busybox "$WORK/fixtures/busybox-oci" -q >/dev/null
done
for _ in $(seq 200); do
  [ "$("$BERTH" cluster nodes --json | grep -o '"ready"' | wc -l)" = 3 ] && break; sleep 0.05
done
[ "$("$BERTH" cluster nodes --json | grep -o '"ready"' | wc -l)" = 3 ] || { echo "replicas.sh: the agents did not join" >&2; exit 1; }
printf 'name: bench\ncount: 6\nstrategy: spread\nterminationGracePeriodSeconds: 0\ncontainers:\n  - {name: c, image: busybox, command: [sleep, "100000"], resources: {requests: {cpu: 10m, memory: 4Mi}}}\n' > "$WORK/job.yaml"

echo "== $RUNS runs: a job of 6 replicas over 3 agents; 6 podman run -d; 6 berth run -d"
python3 - "$BERTH" "$WORK" "$RUNS" "$BERTH_SOCKET" "$IMG" "${P[*]}" "${PODRUN[*]}" "${MEMBERS[@]}" > "$WORK/times.json" <<'PY'
import json, os, subprocess, sys, time
berth, work, runs, sock, img, podman, podrun = sys.argv[1:8]
members = sys.argv[8:]
runs = int(runs)
def out(*a, env=None):
    return subprocess.run(list(a), capture_output=True, text=True, check=True, env=env).stdout
def member_pods(n):
    env = dict(os.environ, BERTH_SOCKET=f"{work}/{n}.sock")
    return out(berth, "pod", "ls", "-q", env=env).split()
def running():
    jobs = json.loads(out(berth, "cluster", "ls", "--json"))
    return sum(j["states"].get("running", 0) for j in jobs if j["name"] == "bench")
def at_once(cmds):
    ps = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
    if any(p.wait() for p in ps):
        sys.exit("replicas.sh: a run -d failed")
times = {"cluster": [], "podman": [], "berth": []}
for _ in range(runs):
    t0 = time.perf_counter()
    out(berth, "cluster", "run", f"{work}/job.yaml")
    deadline = t0 + 120
    while running() < 6:
        if time.perf_counter() > deadline:
            sys.exit("replicas.sh: the job's 6 replicas did not all run")
        time.sleep(0.01)
    times["cluster"].append((time.perf_counter() - t0) * 1000)
    if sorted(len(member_pods(n)) for n in members) != [2, 2, 2]:
        sys.exit("replicas.sh: the replicas are not spread 2/2/2")
    out(berth, "cluster", "rm", "bench")
    deadline = time.perf_counter() + 120
    while any(member_pods(n) for n in members):
        if time.perf_counter() > deadline:
            sys.exit("replicas.sh: the agents kept the removed job's pods")
        time.sleep(0.05)
    t0 = time.perf_counter()
    at_once([podman.split() + ["run", "--runtime", "runc"] + podrun.split() + [img, "sleep", "100000"]] * 6)
    times["podman"].append((time.perf_counter() - t0) * 1000)
    subprocess.run(podman.split() + ["rm", "-af", "-t", "0"], capture_output=True)
    t0 = time.perf_counter()
    at_once([[berth, "run", "-d", "busybox", "sleep", "100000"]] * 6)
    times["berth"].append((time.perf_counter() - t0) * 1000)
    for i in out(berth, "ps", "-q", "--no-trunc").split():
        out(berth, "rm", "-f", i)
print(json.dumps(times))
PY
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$WORK/times.json" "$RUNS" > "$OUT/replicas-$STAMP.md" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"## Allocator on real agents: 6 replicas running, {sys.argv[2]} runs\n")
print("| | p50 ms | p99 ms | p50 / podman |")
print("|---|---|---|---|")
pod50 = p(t["podman"], 0.5)
for key, label in (("cluster", "berth cluster run (master + 3 agents) → 6 reported running"),
                   ("podman", "6 × podman run -d at once (runc), one host"),
                   ("berth", "6 × berth run -d at once, one agent")):
    print(f"| {label} | {p(t[key], 0.5):.0f} | {p(t[key], 0.99):.0f} | {p(t[key], 0.5) / pod50:.2f}x |")
PY
cat "$OUT/replicas-$STAMP.md"
