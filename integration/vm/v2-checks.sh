# Runs inside the cgroup v2 VM (busybox sh, as PID 1's child; integration/vm/v2.sh): an
# agent on pure cgroup2, started in a cgroup of its own as systemd's Delegate=yes leaves it
# (it must move into a leaf to hand controllers down), then limits read back from the v2 files, the OOM reason, stats,
# the pods' QoS tiers, and each reclaim step on the v2 knobs (cpu.max, memory.high,
# cgroup.freeze, the kill). Prints "ok NAME" or "FAIL NAME: why" per check; exits 1 if any
# failed.
set -u
export BERTH_SOCKET=/run/b.sock BERTH_ROOT=/var/lib/berth BERTH_CONFIG=/etc/berth.json
CG=/sys/fs/cgroup/berth.service/berth
fail=0
ok() { echo "ok $1"; }
bad() { echo "FAIL $1: $2"; fail=1; }
# until_true SECONDS CMD…: polls every 0.2 s.
until_true() {
  n=$(($1 * 5)); shift
  while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.2; n=$((n - 1)); done
  return 1
}
node_state() { berth node --json | grep -q "\"state\": \"$1\""; }
status_is() { berth state "$1" 2>/dev/null | grep -q "\"status\": \"$2\""; }
file_is() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
file_is_not() { [ -e "$1" ] && [ "$(cat "$1")" != "$2" ]; }

cat > /etc/berth.json <<'EOF'
{"version": 1, "revocable": {"warmup": "0s", "cpu_suppress_percent": 30,
 "step_after": "3s", "recover_after": "2s", "memory_psi_full": 0}}
EOF
mkdir /sys/fs/cgroup/berth.service
sh -c 'echo $$ > /sys/fs/cgroup/berth.service/cgroup.procs; exec berth agent --default-network none --capacity-cpu 2 --capacity-memory 512m' >/tmp/agent.log 2>&1 &
AGENT=$!
until_true 60 berth ps >/dev/null 2>&1 || { echo "FAIL agent: $(tail -5 /tmp/agent.log)"; exit 1; }
berth import --tag busybox /img -q >/dev/null || { echo "FAIL import"; exit 1; }
grep -q cgroup2 /proc/mounts && ! grep -q " cgroup " /proc/mounts && ok "pure cgroup2"
grep -q "^0::/berth.service/agent$" /proc/$AGENT/cgroup \
  && grep -q memory /sys/fs/cgroup/berth.service/cgroup.subtree_control && ok "delegated leaf" \
  || bad "delegated leaf" "$(cat /proc/$AGENT/cgroup) $(cat /sys/fs/cgroup/berth.service/cgroup.subtree_control)"

# Limits read back from the v2 files.
id=$(berth run -d --name lim --cpus 0.5 -m 64m --pids-limit 50 --cpuset-cpus 0 busybox sleep 1000)
d=$CG/guaranteed/$id
if file_is "$d/cpu.max" "50000 100000" && file_is "$d/memory.max" 67108864 \
   && file_is "$d/pids.max" 50 && file_is "$d/cpuset.cpus" 0; then
  ok limits
else
  bad limits "cpu.max=$(cat "$d/cpu.max") memory.max=$(cat "$d/memory.max") pids.max=$(cat "$d/pids.max") cpuset=$(cat "$d/cpuset.cpus")"
fi
berth node --json | grep -q '"pressure_by_tier"' && berth node | grep -q "guaranteed: cpu" \
  && ok "tier pressure" || bad "tier pressure" "$(berth node | tail -8)"
out=$(berth stats lim)
echo "$out" | grep -q "MEM USAGE" && echo "$out" | grep -q "1 / 50" && ok stats || bad stats "$out"

# The OOM killer's verdict is the exit's reason.
berth run --name oom -m 16m --tmpfs /m busybox sh -c 'dd if=/dev/zero of=/m/f bs=1M count=64' >/dev/null 2>&1
s=$(berth state oom)
echo "$s" | grep -q '"reason": "oom-killed"' && echo "$s" | grep -q '"OOMKilled": true' \
  && ok oom-killed || bad oom-killed "$s"
berth rm -f lim oom >/dev/null

# Pods' QoS tiers: guaranteed, burstable, best-effort and revocable parents with weights.
cat > /tmp/g.yaml <<'EOF'
name: g
containers:
- name: c
  image: busybox
  command: [sleep, '1000']
  resources: {requests: {cpu: 200m, memory: 32Mi}, limits: {cpu: 200m, memory: 32Mi}}
EOF
cat > /tmp/b.yaml <<'EOF'
name: b
containers:
- name: c
  image: busybox
  command: [sleep, '1000']
  resources: {requests: {cpu: 100m}}
EOF
berth pod run /tmp/g.yaml >/dev/null && berth pod run /tmp/b.yaml >/dev/null
gid=$(berth pod ls -q | head -1)
if ls "$CG/guaranteed" | grep -q . && ls "$CG/burstable" | grep -q . \
   && file_is "$CG/besteffort/cpu.weight" 1 && file_is "$CG/revocable/cpu.idle" 1 \
   && [ -n "$(find "$CG/guaranteed" -name memory.max -exec grep -l 33554432 {} \;)" ]; then
  ok "qos tiers"
else
  bad "qos tiers" "$(find $CG -maxdepth 2 -type d) ($gid)"
fi
berth pod rm -f g b >/dev/null

# Throttle: a guaranteed hog of 2 CPUs leaves the revocable hog the floor (tier cpu.max).
berth run -d --revocable --cpus 0.3 --name rhog busybox sh -c 'while :; do :; done' >/dev/null
sleep 2
node_state none && file_is "$CG/revocable/cpu.max" "max 100000" && ok "no throttle alone" \
  || bad "no throttle alone" "$(cat $CG/revocable/cpu.max)"
berth run -d --cpus 2 -m 64m --name ghog busybox sh -c 'while :; do :; done & while :; do :; done' >/dev/null
if until_true 60 node_state throttle && until_true 20 file_is_not "$CG/revocable/cpu.max" "max 100000"; then
  ok "throttle $(cat $CG/revocable/cpu.max)"
else
  bad throttle "$(berth node | tail -4)"
fi
berth rm -f ghog >/dev/null
if until_true 60 node_state none && until_true 20 file_is "$CG/revocable/cpu.max" "max 100000"; then
  ok "throttle undone"
else
  bad "throttle undone" "$(cat $CG/revocable/cpu.max)"
fi
berth rm -f rhog >/dev/null

# Memory: memory-high (memory.high) → freeze (cgroup.freeze) → revoke, then undone.
berth run -d --revocable --tmpfs /m --name grow busybox sh -c \
  'i=0; while [ $i -lt 30 ]; do dd if=/dev/zero of=/m/f$i bs=1M count=10 2>/dev/null; i=$((i+1)); done; sleep 1000' >/dev/null
sleep 3
berth run -d --cpus 0.5 -m 256m --tmpfs /m --name gmem busybox sh -c \
  'dd if=/dev/zero of=/m/f bs=1M count=200 2>/dev/null; sleep 1000' >/dev/null
until_true 60 file_is_not "$CG/revocable/memory.high" max && ok "memory-high $(cat $CG/revocable/memory.high)" \
  || bad memory-high "$(berth node | tail -4)"
until_true 60 status_is grow frozen && file_is "$CG/revocable/cgroup.freeze" 1 && ok freeze \
  || bad freeze "$(cat $CG/revocable/cgroup.freeze)"
until_true 60 status_is grow stopped && berth state grow | grep -q '"reason": "revoked"' && ok revoke \
  || bad revoke "$(berth state grow)"
status_is gmem running && ! berth state gmem | grep -q '"OOMKilled": true' && ok "guaranteed untouched" \
  || bad "guaranteed untouched" "$(berth state gmem)"
if until_true 60 node_state none && file_is "$CG/revocable/memory.high" max \
   && file_is "$CG/revocable/cgroup.freeze" 0; then
  ok "memory steps undone"
else
  bad "memory steps undone" "$(cat $CG/revocable/memory.high) $(cat $CG/revocable/cgroup.freeze)"
fi
steps=$(berth events --since 1h --until 0s --json --filter type=reclaim \
  | sed -n 's/.*"action":"\([a-z-]*\)".*"phase":"\([a-z]*\)".*/\1:\2/p' | tr '\n' ' ')
echo "reclaim steps in order: $steps"
berth rm -f grow gmem >/dev/null
kill "$AGENT"; wait "$AGENT" 2>/dev/null
exit $fail
