# Runs inside the VM of integration/vm/v2.sh with BERTH_VM_EXT4_MB set (busybox sh): the
# data root on a loop ext4 made with project quotas (Debian's kernel has CONFIG_QUOTA; this
# host's does not), so disk budgets are the kernel's: a container writing past its budget
# gets EDQUOT, another task is unaffected, the agent and the image store keep working, a
# pod's emptyDir holds to its budget; and user namespaces on ext4 + pure cgroup2. Prints
# "ok NAME" or "FAIL NAME: why" per check; exits 1 if any failed.
set -u
export BERTH_SOCKET=/run/b.sock BERTH_ROOT=/mnt/disk/berth BERTH_CONFIG=/nonexistent
fail=0
ok() { echo "ok $1"; }
bad() { echo "FAIL $1: $2"; fail=1; }
until_true() {
  n=$(($1 * 5)); shift
  while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.2; n=$((n - 1)); done
  return 1
}

mkdir -p /mnt/disk
mount -t ext4 -o loop,prjquota /disk.img /mnt/disk 2>/tmp/mount.err \
  || { echo "FAIL mount: $(cat /tmp/mount.err) $(dmesg | tail -3)"; exit 1; }
grep -q prjquota /proc/mounts && ok "ext4 with project quotas"

berth agent --check 2>&1 | grep "disk budgets" | grep -q "^ok" && ok "check reports quotas" \
  || bad "check reports quotas" "$(berth agent --check 2>&1 | grep -e budgets -e idmapped)"
mkdir /sys/fs/cgroup/berth.service
sh -c 'echo $$ > /sys/fs/cgroup/berth.service/cgroup.procs; exec berth agent --default-network none' >/tmp/agent.log 2>&1 &
AGENT=$!
until_true 60 berth ps >/dev/null 2>&1 || { echo "FAIL agent: $(tail -5 /tmp/agent.log)"; exit 1; }
berth import --tag busybox /img -q >/dev/null || { echo "FAIL import"; exit 1; }
berth node --json | grep -q '"enforcement": "project-quota"' && ok "node says project-quota" \
  || bad "node says project-quota" "$(berth node | grep -i disk)"

# A neighbour running alongside, then a writer past its budget: EDQUOT for the writer only.
calm=$(berth run -d --storage-opt size=64m busybox sh -c 'dd if=/dev/zero of=/f bs=1M count=4 2>/dev/null; sleep 1000')
out=$(berth run --rm --storage-opt size=8m busybox sh -c 'dd if=/dev/zero of=/fill bs=1M count=20 2>&1; echo "rc=$?"')
case "$out" in *"Disk quota exceeded"*rc=1*) ok "EDQUOT past the budget" ;; *) bad "EDQUOT past the budget" "$out" ;; esac
until_true 20 sh -c "berth stats --json $calm | grep -q '\"used\":[4-9][0-9]\{6\}'" && ok "neighbour measured" \
  || bad "neighbour measured" "$(berth stats --json $calm)"
berth exec "$calm" sh -c 'dd if=/dev/zero of=/g bs=1M count=8 2>/dev/null' && ok "neighbour unaffected" \
  || bad "neighbour unaffected" "its write failed"
berth state "$calm" | grep -q '"status": "running"' || bad "neighbour unaffected" "not running"
berth run --rm busybox true && berth images >/dev/null && berth import --tag again /img -q >/dev/null \
  && ok "agent and store keep working" || bad "agent and store keep working" "$(tail -3 /tmp/agent.log)"

# A pod: its emptyDir is held to the sum of its containers' limits.
cat > /tmp/pod.yaml <<'EOF'
name: filler
restartPolicy: Never
volumes:
- {name: scratch, emptyDir: {}}
containers:
- name: w
  image: busybox
  command: [sh, -c, 'dd if=/dev/zero of=/s/fill bs=1M count=16 2>/tmp/err; grep -q "quota exceeded" /tmp/err']
  volumeMounts: [{name: scratch, mountPath: /s}]
  resources: {limits: {ephemeral-storage: 6Mi}}
EOF
berth pod run /tmp/pod.yaml >/dev/null
until_true 30 sh -c 'berth pod inspect filler | grep -q "\"phase\": \"succeeded\""' && ok "pod emptyDir budget" \
  || bad "pod emptyDir budget" "$(berth pod inspect filler | grep -e phase -e message -e exit_code)"
berth pod rm -f filler >/dev/null

# User namespaces on ext4 and pure cgroup2: idmapped layers, mapped root.
out=$(berth run --rm --userns auto busybox sh -c 'id -u; stat -c %u /home/berth; cat /proc/self/uid_map' 2>&1)
set -- $out
if [ "${1:-}" = 0 ] && [ "${2:-}" = 1000 ] && [ "${4:-0}" != 0 ]; then ok "userns on v2"; else bad "userns on v2" "$out"; fi

berth rm -f "$calm" >/dev/null
kill "$AGENT"
exit $fail
