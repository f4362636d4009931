#!/usr/bin/env bash
# Allocator benchmark (issue #14): `berth master` (pinned to CPU 0) against N simulated
# agents (`berth-sim`, pinned to CPU 1: the real agent-side code over real TLS, pods in
# memory). For each N:
#   1. idle: master CPU (% of one core) and RSS with N agents heartbeating at the default
#      period;
#   2. placement: one job of PODS instances submitted; seconds until every instance is
#      assigned (placements/s) and until every one is reported running;
#   3. master RSS with PODS instances, steady (after its next heap trim) and peak;
#   4. loss: 10% of the agents stop heartbeating; seconds until the master marks them lost
#      (the default node timeout, 25 s) and until their instances run elsewhere;
#   5. restart: the master killed (-9) and started again; seconds until every agent has
#      heartbeated to it again.
# With the store on etcd (issue #15; a 3-member etcd on loopback, two masters on CPU 0, the
# leader started first): the same steps, then instead of 5. the leader is killed (-9):
# seconds until the other master leads, and until every live agent heartbeated to it.
# Each N runs on the embedded store and on etcd in the same run, reported side by side.
# The anchors publish their numbers, not a tool we can run here: kube-scheduler's
# threshold is 810 pods/s at 5,000 nodes; Nomad's C1M ≈ 3,750 placements/s on 5 servers.
#
#   sudo integration/bench/cluster.sh [AGENTS…] [-- PODS]   (default 1000 5000 10000 -- 100000)
#   STORES="etcd" integration/bench/cluster.sh …            (default "embedded etcd")
#   ETCD_TXN_OPS=128 …   etcd's --max-txn-ops and the masters' --etcd-max-txn-ops (default
#                        1024; etcd's own default is 128: a commit of 100k placements is then
#                        782 transactions instead of 98)
#   smoke: integration/bench/cluster.sh 1   (→ 100 agents, 2,000 pods, a 6 s node timeout)
#
# Everything it starts is stopped and its files removed on exit (no cgroups, no mounts).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "cluster.sh: run as root" >&2; exit 1; }
AGENTS=(); PODS=100000; TIMEOUT=25s
while [ $# -gt 0 ]; do
  case "$1" in
    --) PODS=$2; shift 2 ;;
    *) AGENTS+=("$1"); shift ;;
  esac
done
[ ${#AGENTS[@]} -eq 0 ] && AGENTS=(1000 5000 10000)
if [ "${AGENTS[*]}" = 1 ]; then AGENTS=(100); PODS=2000; TIMEOUT=6s; fi

read -r -a STORES <<<"${STORES:-embedded etcd}"
export ETCD_TXN_OPS=${ETCD_TXN_OPS:-1024}
WORK=$(mktemp -d /tmp/berth-clusterbench-XXXXXX)
MASTER_PID=""; SIM_PID=""; FOLLOWER_PID=""; ETCD_PIDS=()
stop_etcd() {
  for p in "${ETCD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ETCD_PIDS=()
}
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    # What the masters said about their leadership, for a run that failed.
    for f in "$WORK"/master*.log; do
      [ -f "$f" ] && { echo "-- $f (warnings)"; grep -v '"level":"INFO"' "$f" | tail -15; } >&2
    done
  fi
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  [ -n "$MASTER_PID" ] && kill "$MASTER_PID" 2>/dev/null && wait "$MASTER_PID" 2>/dev/null
  [ -n "$FOLLOWER_PID" ] && kill "$FOLLOWER_PID" 2>/dev/null && wait "$FOLLOWER_PID" 2>/dev/null
  stop_etcd
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building berth and berth-sim (release)"
(cd "$REPO" && cargo build --release --quiet -p berth -p berth-integration)
BERTH="$REPO/target/release/berth"
SIM="$REPO/target/release/berth-sim"
export BERTH_CLUSTER="$WORK/master/admin.json"
RESULT="$OUT/cluster-$(date +%Y%m%d-%H%M%S).json"
echo "[" > "$RESULT"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A 3-member etcd on loopback (Debian's etcd-server), fresh for each run.
start_etcd() {
  local cluster="" i
  local -a client peer
  for i in 1 2 3; do client[i]=$(free_port); peer[i]=$(free_port); cluster+="e$i=http://127.0.0.1:${peer[i]},"; done
  ENDPOINTS=""
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:${client[i]}" --advertise-client-urls "http://127.0.0.1:${client[i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[i]}" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token "bench-$$" \
      --heartbeat-interval 50 --election-timeout 500 --quota-backend-bytes $((8 << 30)) \
      --max-txn-ops "$ETCD_TXN_OPS" 2>>"$WORK/etcd-e$i.log" &
    ETCD_PIDS+=($!)
    ENDPOINTS+="http://127.0.0.1:${client[i]},"
  done
  ENDPOINTS=${ENDPOINTS%,}
  for _ in $(seq 200); do
    ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" put /bench/probe x >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd did not start: $(tail -3 "$WORK/etcd-e1.log")" >&2
  return 1
}

# $1: root; $2: log; $3: extra flags. Sets LAST_PID.
start_one() {
  # shellcheck disable=SC2086
  BERTH_LOG_FORMAT=json taskset -c 0 "$BERTH" --root "$1" master --node-timeout "$TIMEOUT" $3 2>>"$2" &
  LAST_PID=$!
}

start_master() {
  start_one "$WORK/master" "$WORK/master.log" "$MASTER_FLAGS"
  MASTER_PID=$LAST_PID
  for _ in $(seq 400); do "$BERTH" cluster ls >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "the master did not answer: $(tail -5 "$WORK/master.log")" >&2
  return 1
}

first=1
for STORE in "${STORES[@]}"; do
for N in "${AGENTS[@]}"; do
  echo "== $N agents, $PODS pods, store $STORE"
  rm -rf "$WORK/master" "$WORK/master2" "$WORK/sim" "$WORK/etcd"
  : > "$WORK/master.log"
  PORT=$(free_port)
  MASTER_FLAGS=""
  URLS="https://127.0.0.1:$PORT"
  if [ "$STORE" = etcd ]; then
    start_etcd
    PORT2=$(free_port)
    MASTER_FLAGS="--etcd-endpoints $ENDPOINTS --etcd-max-txn-ops $ETCD_TXN_OPS --name m1"
    INIT=$("$BERTH" --root "$WORK/master" master init --listen "127.0.0.1:$PORT" --etcd-endpoints "$ENDPOINTS")
    "$BERTH" --root "$WORK/master2" master init --listen "127.0.0.1:$PORT2" --etcd-endpoints "$ENDPOINTS" >/dev/null
    URLS="$URLS,https://127.0.0.1:$PORT2"
  else
    INIT=$("$BERTH" --root "$WORK/master" master init --listen "127.0.0.1:$PORT")
  fi
  TOKEN=$(grep -o -- '--join-token [0-9a-f]*' <<<"$INIT" | cut -d' ' -f2)
  HASH=$(grep -o -- '--ca-cert-hash sha256:[0-9a-f]*' <<<"$INIT" | cut -d' ' -f2)
  start_master
  if [ "$STORE" = etcd ]; then
    # The follower: started after the leader was elected.
    start_one "$WORK/master2" "$WORK/master2.log" "--etcd-endpoints $ENDPOINTS --etcd-max-txn-ops $ETCD_TXN_OPS --name m2"
    FOLLOWER_PID=$LAST_PID
  fi
  mkfifo "$WORK/sim.out"
  taskset -c 1 "$SIM" --master "$URLS" --join-token "$TOKEN" --ca-cert-hash "$HASH" \
    --agents "$N" --state "$WORK/sim" >"$WORK/sim.out" 2>>"$WORK/sim.log" &
  SIM_PID=$!
  exec 3<"$WORK/sim.out"
  read -r JOINED <&3
  echo "   $JOINED"
  [ $first = 1 ] || echo "," >> "$RESULT"
  first=0
  python3 - "$N" "$PODS" "$MASTER_PID" "$SIM_PID" "$BERTH" "$WORK" "$TIMEOUT" "$STORE" <<'PY' >> "$RESULT"
import datetime, json, os, signal, subprocess, sys, time
n, pods, master, sim, berth, work, timeout, store = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
tick = os.sysconf("SC_CLK_TCK")
def cluster(*args):
    out = subprocess.run([berth, "cluster", *args, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cluster {args}: {out.stderr}")
    return json.loads(out.stdout)
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) / 1024
def hwm(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM:"):
            return int(l.split()[1]) / 1024
def wait(what, cond, limit):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0
def nodes():
    return cluster("nodes")
def ready():
    ns = nodes()
    return len(ns) == n and all(x["state"] == "ready" and x["last_heartbeat_ms"] is not None for x in ns)
wait("every agent registered", ready, 600)
# 1. idle heartbeats: over two periods (at least 10 s).
timeout_s = float(timeout.rstrip("s"))
period = min(max(5.0, n / 1000), timeout_s / 3)
window = max(10.0, 2 * period)
c0, t0 = cpu(master), time.monotonic()
time.sleep(window)
idle_cpu = (cpu(master) - c0) / (time.monotonic() - t0) * 100
idle_rss = rss(master)
# 2. placement.
job = os.path.join(work, "job.yaml")
open(job, "w").write(f"name: load\ncount: {pods}\nstrategy: spread\ncontainers:\n  - {{name: c, image: busybox, resources: {{requests: {{cpu: 10m, memory: 1Mi}}}}}}\n")
t0 = time.monotonic()
subprocess.run([berth, "cluster", "run", job], check=True, capture_output=True)
def states():
    return cluster("ls")[0]["states"]
assigned = wait("every instance assigned", lambda: states().get("pending", 0) == 0, 600) 
placed_s = time.monotonic() - t0
running = wait("every instance running", lambda: states().get("running", 0) == pods, 900)
running_s = time.monotonic() - t0
# Steady: after the master's next heap trim (every 10 s); peak: its high-water mark so far
# (every node's new desired set in flight at once).
time.sleep(11)
loaded_rss = rss(master)
peak_rss = hwm(master)
# 4. loss of 10% of the agents.
# Detection: the master's own time of its last `node lost` event (a warning in its JSON
# log), from the signal; re-placement: from then until `cluster ls` shows every instance
# running again (observed: it includes one poll of `cluster ls`).
log = os.path.join(work, "master.log")
log_start = os.path.getsize(log)
killed = time.time()
os.kill(sim, signal.SIGUSR1)
lost_n = max(1, n // 10)
def lost_times():
    with open(log) as f:
        f.seek(log_start)
        return [datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
                for e in map(json.loads, filter(None, f.read().splitlines()))
                if e.get("action") == "lost"]
def settled():
    return len(lost_times()) >= lost_n and states().get("running", 0) == pods
wait("lost agents detected and their instances running elsewhere", settled, 600)
running_again = time.time()
lost_at = lost_times()
detect_s = max(lost_at) - killed
replace_s = running_again - max(lost_at)
# 5. master restart (kill -9): every live agent heard again.
os.kill(master, signal.SIGKILL)
print(json.dumps({"store": store, "etcd_max_txn_ops": int(os.environ.get("ETCD_TXN_OPS", "0")) if store == "etcd" else None, "agents": n, "pods": pods, "heartbeat_period_s": period,
  "idle_master_cpu_pct": round(idle_cpu, 1), "idle_master_rss_mib": round(idle_rss, 1),
  "placed_s": round(placed_s, 2), "placements_per_s": round(pods / placed_s),
  "all_running_s": round(running_s, 2), "loaded_master_rss_mib": round(loaded_rss, 1), "peak_master_rss_mib": round(peak_rss, 1),
  "lost_detect_s": round(detect_s, 1), "replaced_after_detect_s": round(replace_s, 1)}))
PY
  wait "$MASTER_PID" 2>/dev/null || true
  if [ "$STORE" = etcd ]; then
    # Failover: the follower's admin.json names it first; it answers once it leads.
    MASTER_PID=$FOLLOWER_PID; FOLLOWER_PID=""
    export BERTH_CLUSTER="$WORK/master2/admin.json"
  else
    start_master
  fi
  python3 - "$N" "$BERTH" "$STORE" <<'PY' > "$WORK/restart.json"
import json, subprocess, sys, time
n, berth, store = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0 = time.monotonic()
live = n - max(1, n // 10)
led = None
while True:
    if led is None:
        out = subprocess.run([berth, "cluster", "status", "--json"], capture_output=True, text=True)
        if out.returncode == 0 and (json.loads(out.stdout).get("leader") or {}).get("name") == "m2":
            led = time.monotonic() - t0
        if store != "etcd":
            led = 0.0
    out = subprocess.run([berth, "cluster", "nodes", "--json"], capture_output=True, text=True)
    ns = json.loads(out.stdout) if out.returncode == 0 else []
    if led is not None and sum(1 for x in ns if x["last_heartbeat_ms"] is not None) >= live:
        break
    if time.monotonic() - t0 > 600:
        raise SystemExit("agents did not come back")
    time.sleep(0.2)
key = "failover" if store == "etcd" else "restart"
extra = {f"{key}_reattached_s": round(time.monotonic() - t0, 2)}
if store == "etcd":
    extra["failover_new_leader_s"] = round(led, 2)
print(json.dumps(extra))
PY
  echo "   $(tail -1 "$RESULT") $(cat "$WORK/restart.json")"
  # The restart figure joins its run's line.
  python3 - "$RESULT" "$WORK/restart.json" <<'PY'
import json, sys
path, extra = sys.argv[1], json.load(open(sys.argv[2]))
lines = open(path).read().splitlines()
last = json.loads(lines[-1]); last.update(extra); lines[-1] = json.dumps(last)
open(path, "w").write("\n".join(lines) + "\n")
PY
  kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=""
  exec 3<&-
  rm -f "$WORK/sim.out"
  kill "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true; MASTER_PID=""
  export BERTH_CLUSTER="$WORK/master/admin.json"
  stop_etcd
done
done
echo "]" >> "$RESULT"
# Side by side: etcd's placements/s as a share of the embedded store's, per N.
python3 - "$RESULT" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
by = {(r.get("store", "embedded"), r["agents"]): r for r in runs}
for (store, n), r in sorted(by.items()):
    if store != "etcd" or ("embedded", n) not in by:
        continue
    e = by[("embedded", n)]
    print(f"   {n} agents: etcd places {r['placements_per_s']}/s = {r['placements_per_s'] / e['placements_per_s']:.2f}x the embedded store's "
          f"{e['placements_per_s']}/s; failover: new leader {r.get('failover_new_leader_s')} s, all re-attached {r.get('failover_reattached_s')} s")
PY
echo "== results: $RESULT"
cat "$RESULT"
