#!/usr/bin/env bash
# The demo, offline and self-contained (root): builds Berth and busybox images from
# Debian's busybox-static, starts a private docker-registry on 127.0.0.1 and a private
# Berth agent (own socket, data root and cgroup root), then pulls, imports and runs
# containers through it: foreground, detached, exec, logs, stats, limits, OOM, stop, rm;
# a published port and pods on the default CNI bridge network (the agent's own config dir
# and bridge here, so the host's /etc/cni/net.d is untouched); then a cluster on this one
# machine: `berth master` and two more agents that join it, a job spread across them, one
# agent killed and its pod moved; then the cluster migrated into a 3-member etcd with two
# masters, the leader killed and the other taking over.
# Stops the agents and the master and leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
scripts/setup.sh

WORK=$(mktemp -d /tmp/berth-demo-XXXXXX)
REG_PID=""; AGENT_PID=""; MASTER_PID=""; MEMBER_PIDS=(); ETCD_PIDS=(); MASTER2_PID=""
# Containers' cgroups go below the cgroup this script runs in (per controller, the
# deepest path), in a directory of their own.
. scripts/cgroups.sh
OWN_CG=$(own_cgroup)
CG_ROOT="${OWN_CG%/}/berth-demo-$$"
BRIDGE="bdemo$$"; BRIDGE=${BRIDGE:0:15}
cleanup() {
  set +e
  if [ -n "$MASTER_PID" ]; then
    # The job goes first, so the members stop its pods themselves (and put none back).
    "$BIN/berth" cluster rm hello >/dev/null 2>&1
    for n in n1 n2; do
      for _ in $(seq 100); do
        [ -z "$(BERTH_SOCKET=$WORK/$n.sock "$BIN/berth" pod ls -q 2>/dev/null)" ] && break; sleep 0.1
      done
    done
  fi
  for pid in "${MEMBER_PIDS[@]}"; do
    for n in n1 n2; do
      for id in $(BERTH_SOCKET=$WORK/$n.sock "$BIN/berth" pod ls -q 2>/dev/null); do
        BERTH_SOCKET=$WORK/$n.sock "$BIN/berth" pod rm -f "$id" >/dev/null
      done
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  [ -n "$MASTER_PID" ] && kill "$MASTER_PID" && wait "$MASTER_PID" 2>/dev/null
  [ -n "$MASTER2_PID" ] && kill "$MASTER2_PID" && wait "$MASTER2_PID" 2>/dev/null
  for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ -n "$AGENT_PID" ]; then
    for id in $("$BIN/berth" pod ls -q 2>/dev/null); do "$BIN/berth" pod rm -f "$id" >/dev/null; done
    for id in $("$BIN/berth" ps -q --no-trunc 2>/dev/null); do "$BIN/berth" rm -f "$id" >/dev/null; done
    kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null
  fi
  [ -n "$REG_PID" ] && kill "$REG_PID" && wait "$REG_PID" 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  remove_cgroup_tree "$CG_ROOT"
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "== building berth"
cargo build --release --quiet -p berth -p berth-integration
BIN=$PWD/target/release
export BERTH_ROOT="$WORK/data" BERTH_SOCKET="$WORK/berth.sock" BERTH_CONFIG=/nonexistent DOCKER_CONFIG="$WORK/docker"

echo "== building busybox images from /bin/busybox (busybox-static)"
"$BIN/berth-fixture" all "$WORK/fixtures"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 5055)
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$WORK/registry" "$PORT" > "$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
REG=127.0.0.1:$PORT
echo "== registry on $REG; pushing busybox (1 layer) and multilayer (3 layers, whiteouts)"
skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/fixtures/busybox-oci:latest" "docker://$REG/library/busybox:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/fixtures/multilayer-oci:latest" "docker://$REG/demo/multilayer:1.0"

echo "== starting a private agent (socket $BERTH_SOCKET, cgroup root $CG_ROOT)"
"$BIN/berth" agent --cgroup-root "$CG_ROOT" --cni-conf-dir "$WORK/net.d" --bridge-name "$BRIDGE" --revocable-warmup 0 --disk-check-interval 2s 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 100); do [ -S "$BERTH_SOCKET" ] && break; sleep 0.05; done

step "$BIN/berth" pull "$REG/library/busybox"
step "$BIN/berth" pull "$REG/demo/multilayer:1.0"
step "$BIN/berth" import "$WORK/fixtures/multilayer-docker.tar"
step "$BIN/berth" images

echo
echo "== containers"
step "$BIN/berth" run --rm "$REG/library/busybox" sh -c 'echo "hello from $(hostname), pid $$, as $(id -un)"; ip -o link'
step "$BIN/berth" run --rm -w /data "$REG/demo/multilayer:1.0" sh -c 'cat /etc/motd; ls; echo "b.txt was deleted by a whiteout: $(ls b.txt 2>&1)"'
step "$BIN/berth" run -d --name web --cpus 0.5 -m 32m --pids-limit 50 "$REG/library/busybox" sh -c 'while true; do echo "tick $(date +%T)"; sleep 1; done'
sleep 2
step "$BIN/berth" ps
step "$BIN/berth" exec web sh -c 'echo "exec in $(hostname): $(ps | wc -l) lines of ps"'
step "$BIN/berth" top web
step "$BIN/berth" stats web
step "$BIN/berth" logs --tail 2 web
step "$BIN/berth" stop -t 1 web
step "$BIN/berth" state web
step "$BIN/berth" rm web
set +e
step "$BIN/berth" run --name hog -m 16m "$REG/library/busybox" sh -c 'x=aaaaaaaa; while true; do x=$x$x; done'
echo "(exit code $?)"
set -e
"$BIN/berth" state hog | grep -E '"(exitCode|reason|OOMKilled)"'
step "$BIN/berth" rm hog

echo
echo "== oversubscription: revocable work on measured slack, throttled when promised work needs the CPU"
step "$BIN/berth" run -d --name batch --revocable "$REG/library/busybox" sh -c 'while :; do :; done'
sleep 2
"$BIN/berth" node | sed -n '1,20p'
step "$BIN/berth" run -d --name service --cpus 1 -m 32m "$REG/library/busybox" sh -c 'while :; do :; done'
for _ in $(seq 100); do "$BIN/berth" node --json | grep '"state": "throttle"' >/dev/null && break; sleep 0.1; done
step "$BIN/berth" ps
"$BIN/berth" node | tail -4
step "$BIN/berth" rm -f service
for _ in $(seq 150); do "$BIN/berth" node --json | grep '"state": "none"' >/dev/null && break; sleep 0.1; done
step "$BIN/berth" events --since 1m --until 0s --filter type=reclaim
step "$BIN/berth" rm -f batch

echo
echo "== networking: the default bridge network, a published port"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SITE_PORT=$(free_port); POD_PORT=$(free_port)
step "$BIN/berth" network ls
step "$BIN/berth" run -d --name site -p "$SITE_PORT:80" "$REG/library/busybox" sh -c 'echo "served by $(hostname) at $(ip -o -4 addr show eth0 | awk "{print \$4}")" > /tmp/index.html; exec httpd -f -p 80 -h /tmp'
sleep 0.3
step "$BIN/berth" ps
step curl -s "http://127.0.0.1:$SITE_PORT/"
step "$BIN/berth" rm -f site

echo
echo "== a pod: an httpd and a client polling it over the pod's shared localhost; the httpd's port published"
cat > "$WORK/web.yaml" <<YAML
name: web
volumes:
  - {name: shared, emptyDir: {}}
containers:
  - name: httpd
    image: $REG/library/busybox
    command: [sh, -c, "echo 'hello from the httpd container' > /www/index.html; exec httpd -f -p 8080 -h /www"]
    volumeMounts: [{name: shared, mountPath: /www}]
    ports: [{containerPort: 8080, hostPort: $POD_PORT}]
    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 500m, memory: 32Mi}}
    livenessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 1}
  - name: client
    image: $REG/library/busybox
    command: [sh, -c, "while true; do echo \"\$(date +%T) \$(wget -q -O - http://127.0.0.1:8080/)\"; sleep 1; done"]
    resources: {limits: {cpu: 100m, memory: 16Mi}}
YAML
cat "$WORK/web.yaml"
step "$BIN/berth" pod run "$WORK/web.yaml"
sleep 2.5
step "$BIN/berth" pod ls
step "$BIN/berth" ps
step "$BIN/berth" logs --tail 2 web_client
step "$BIN/berth" stats web_httpd
step curl -s "http://127.0.0.1:$POD_PORT/"
WEB_IP=$("$BIN/berth" pod inspect web | python3 -c 'import json,sys; print(json.load(sys.stdin)["network"]["ips"][0])')
echo "(a second pod reaches web by its IP, $WEB_IP, across the bridge)"
printf 'name: peer\nrestartPolicy: Never\ncontainers:\n  - {name: get, image: %s, command: [wget, -q, -O, -, "http://%s:8080/"]}\n' "$REG/library/busybox" "$WEB_IP" > "$WORK/peer.yaml"
step "$BIN/berth" pod run "$WORK/peer.yaml"
sleep 0.5
step "$BIN/berth" logs peer_get
step "$BIN/berth" network check web
step "$BIN/berth" pod rm -f peer
step "$BIN/berth" events --since 1m --until 0s --filter pod=web
step "$BIN/berth" pod stop -t 1 web
step "$BIN/berth" pod rm web

echo
echo "== isolation: a user namespace and a disk budget per task"
step "$BIN/berth" run -d --name tenant --userns auto "$REG/library/busybox" sleep 1000
step "$BIN/berth" exec tenant sh -c 'echo "inside: uid $(id -u), /proc/self/uid_map: $(cat /proc/self/uid_map)"'
TPID=$("$BIN/berth" inspect tenant | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d["pid"], d["idmap"])')
echo "outside: pid ${TPID%% *} runs as $(grep Uid: /proc/${TPID%% *}/status); idmap ${TPID#* }"
step "$BIN/berth" rm -f tenant
set +e
step "$BIN/berth" run --name filler --storage-opt size=8m "$REG/library/busybox" sh -c 'dd if=/dev/zero of=/fill bs=1M count=64 || exit 1; sleep 60'
echo "(exit code $?: EDQUOT where the data root has project quotas, else evicted for disk-limit)"
set -e
"$BIN/berth" state filler | grep -E '"(exitCode|reason)"'
"$BIN/berth" node | grep -A3 "Disk per task"
step "$BIN/berth" rm filler

echo
echo "== a cluster on this machine: berth master and two agents that join it"
MPORT=$(free_port)
INIT=$("$BIN/berth" --root "$WORK/master" master init --listen "127.0.0.1:$MPORT")
printf '\n\033[1m$ berth --root %s master init --listen 127.0.0.1:%s\033[0m\n%s\n' "$WORK/master" "$MPORT" "$INIT"
TOKEN=$(grep -o -- '--join-token [0-9a-f]*' <<<"$INIT" | cut -d' ' -f2)
HASH=$(grep -o -- '--ca-cert-hash sha256:[0-9a-f]*' <<<"$INIT" | cut -d' ' -f2)
"$BIN/berth" --root "$WORK/master" master --node-timeout 3s --heartbeat-floor 500ms 2>"$WORK/master.log" &
MASTER_PID=$!
export BERTH_CLUSTER="$WORK/master/admin.json"
for _ in $(seq 100); do "$BIN/berth" cluster nodes >/dev/null 2>&1 && break; sleep 0.1; done
start_member() {  # NAME ZONE
  BERTH_SOCKET="$WORK/$1.sock" BERTH_ROOT="$WORK/$1" "$BIN/berth" agent --cgroup-root "$CG_ROOT/$1" \
    --cni-conf-dir "$WORK/$1-net.d" --default-network none \
    --master "https://127.0.0.1:$MPORT" --join-token "$TOKEN" --ca-cert-hash "$HASH" \
    --node-name "$1" --node-label "zone=$2" 2>"$WORK/$1.log" &
  MEMBER_PIDS+=($!)
}
start_member n1 a; start_member n2 b
for _ in $(seq 100); do [ "$("$BIN/berth" cluster nodes --json | grep -c '"ready"')" = 2 ] && break; sleep 0.1; done
step "$BIN/berth" cluster nodes
printf 'name: hello\ncount: 4\nstrategy: spread\nterminationGracePeriodSeconds: 1\ncontainers:\n  - {name: c, image: %s, command: [sh, -c, "echo hello from $(hostname); sleep 1000"], resources: {requests: {cpu: 50m, memory: 16Mi}}}\n' "$REG/library/busybox" > "$WORK/hello.job.yaml"
step cat "$WORK/hello.job.yaml"
step "$BIN/berth" cluster run "$WORK/hello.job.yaml"
for _ in $(seq 200); do [ "$("$BIN/berth" cluster ps hello --json | grep -c '"running"')" = 4 ] && break; sleep 0.1; done
step "$BIN/berth" cluster ps hello
step env BERTH_SOCKET="$WORK/n1.sock" "$BIN/berth" pod ls
echo "(kill -9 of n2's agent: its pods run on, the master finds the node lost after 3 s and places them on n1)"
kill -9 "${MEMBER_PIDS[1]}"; wait "${MEMBER_PIDS[1]}" 2>/dev/null || true
for _ in $(seq 200); do [ "$("$BIN/berth" cluster ps hello --json | grep -c '"running"')" = 4 ] && [ "$("$BIN/berth" cluster ps hello --json | grep -c '"n1"')" = 4 ] && break; sleep 0.1; done
step "$BIN/berth" cluster ps hello
step "$BIN/berth" cluster events
echo "(n2 comes back: its stale copies are stopped, as the generation moved on)"
start_member n2 b
for _ in $(seq 300); do
  if [ -z "$(BERTH_SOCKET=$WORK/n2.sock "$BIN/berth" pod ls -q 2>/dev/null)" ] \
     && ! "$BIN/berth" cluster nodes --json | grep '"lost"' >/dev/null; then break; fi
  sleep 0.1
done
step env BERTH_SOCKET="$WORK/n2.sock" "$BIN/berth" pod ls
step "$BIN/berth" cluster nodes

echo
echo "== past one master: the cluster moves into a 3-member etcd; two masters, one leads"
EPS=""; ECL=""
for i in 1 2 3; do C[i]=$(free_port); P[i]=$(free_port); ECL+="e$i=http://127.0.0.1:${P[i]},"; EPS+="http://127.0.0.1:${C[i]},"; done
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/etcd/e$i" --listen-client-urls "http://127.0.0.1:${C[i]}" \
    --advertise-client-urls "http://127.0.0.1:${C[i]}" --listen-peer-urls "http://127.0.0.1:${P[i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${P[i]}" --initial-cluster "${ECL%,}" \
    --initial-cluster-state new 2>>"$WORK/etcd.log" &
  ETCD_PIDS+=($!)
done
EPS=${EPS%,}
for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$EPS" put /demo/probe x >/dev/null 2>&1 && break; sleep 0.1; done
kill "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true; MASTER_PID=""
step "$BIN/berth" --root "$WORK/master" master migrate --to etcd --etcd-endpoints "$EPS"
M2PORT=$(free_port)
step "$BIN/berth" --root "$WORK/master2" master init --listen "127.0.0.1:$M2PORT" --etcd-endpoints "$EPS"
"$BIN/berth" --root "$WORK/master" master --etcd-endpoints "$EPS" --name m1 --node-timeout 3s --heartbeat-floor 500ms 2>>"$WORK/master.log" &
MASTER_PID=$!
for _ in $(seq 100); do "$BIN/berth" cluster status >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/berth" --root "$WORK/master2" master --etcd-endpoints "$EPS" --name m2 --node-timeout 3s --heartbeat-floor 500ms 2>"$WORK/master2.log" &
MASTER2_PID=$!
echo "(the agents are told of both masters: their certificates stay valid)"
# (SIGTERM: an agent that stops leaves its pods running; started again, it adopts them.)
for pid in "${MEMBER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
MEMBER_PIDS=()
MURLS="https://127.0.0.1:$MPORT,https://127.0.0.1:$M2PORT"
start_member() {  # NAME ZONE
  BERTH_SOCKET="$WORK/$1.sock" BERTH_ROOT="$WORK/$1" "$BIN/berth" agent --cgroup-root "$CG_ROOT/$1" \
    --cni-conf-dir "$WORK/$1-net.d" --default-network none \
    --master "$MURLS" --node-name "$1" --node-label "zone=$2" 2>>"$WORK/$1.log" &
  MEMBER_PIDS+=($!)
}
start_member n1 a; start_member n2 b
for _ in $(seq 100); do [ "$(BERTH_CLUSTER=$WORK/master2/admin.json "$BIN/berth" cluster status --json | grep -c '"url"')" = 2 ] && break; sleep 0.1; done
export BERTH_CLUSTER="$WORK/master2/admin.json"
step "$BIN/berth" cluster status
step "$BIN/berth" cluster ps hello
echo "(kill -9 of the leader m1: m2 leads within the 6 s lease, the agents follow it, no pod moves)"
kill -9 "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true; MASTER_PID=""
for _ in $(seq 200); do "$BIN/berth" cluster status --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if (json.load(sys.stdin)["leader"] or {}).get("name")=="m2" else 1)' && break; sleep 0.1; done
for _ in $(seq 200); do BERTH_SOCKET="$WORK/n1.sock" "$BIN/berth" node 2>/dev/null | grep "follows https://127.0.0.1:$M2PORT (connected" >/dev/null && break; sleep 0.1; done
step "$BIN/berth" cluster status
step env BERTH_SOCKET="$WORK/n1.sock" sh -c "'$BIN/berth' node | grep Cluster"
step "$BIN/berth" cluster ps hello
echo "(the dashboard: a link for a browser, valid 12 hours)"
step "$BIN/berth" cluster dashboard
MASTER_PID=$MASTER2_PID; MASTER2_PID=""
step "$BIN/berth" cluster rm hello

step "$BIN/berth" rmi "$REG/demo/multilayer:1.0" berth.test/multilayer:latest
step "$BIN/berth" image prune
step "$BIN/berth" images
echo
echo "demo done; the agents and the master are stopped and everything they made is removed on exit"
