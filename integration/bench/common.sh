# Sourced by the benchmarks: a private work dir, podman on private storage, a private
# Berth agent (release build), and the clean-up they share. Every cgroup goes below the
# calling shell's own cgroup.
#
#   bench_init NAME        WORK, CG, P (podman argv), BERTH_SOCKET/ROOT/CONFIG exported
#   bench_build            release build + busybox fixtures in $WORK/fixtures; sets BERTH
#   bench_agent [FLAGS…]   starts `berth agent` (AGENT_PID) and waits until it answers
#   bench_images           the busybox image in the agent (`busybox`) and in podman ($IMG)
#   bench_cleanup          pods, containers, agent, podman's containers, mounts below WORK,
#                          the cgroup tree and WORK itself

bench_init() {
  WORK=$(mktemp -d "/tmp/berth-$1-XXXXXX")
  . "$REPO/scripts/cgroups.sh"
  OWN_CG=$(own_cgroup)
  CG="${OWN_CG%/}/berth-$1-$$"
  AGENT_PID=""
  export BERTH_SOCKET="$WORK/b.sock" BERTH_ROOT="$WORK/root" BERTH_CONFIG=/nonexistent
  P=(podman --root "$WORK/podroot" --runroot "$WORK/podrun" --cgroup-manager cgroupfs
     --events-backend file --storage-driver overlay --tmpdir "$WORK/podtmp")
}

bench_build() {
  echo "== building berth (release) and the busybox image"
  (cd "$REPO" && cargo build --release --quiet -p berth -p berth-integration)
  BERTH="$REPO/target/release/berth"
  "$REPO/target/release/berth-fixture" all "$WORK/fixtures" >/dev/null
}

bench_agent() {
  "$BERTH" agent --cgroup-root "$CG/berth" --cni-conf-dir "$WORK/net.d" "$@" 2>>"$WORK/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 200); do "$BERTH" ps >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "the agent did not answer: $(tail -5 "$WORK/agent.log")" >&2
  return 1
}

bench_images() {
  "$BERTH" import --tag busybox "$WORK/fixtures/busybox-oci" -q >/dev/null
  "${P[@]}" load -q -i "$WORK/fixtures/busybox-docker.tar" >/dev/null
  IMG=berth.test/busybox:latest
}

bench_cleanup() {
  set +e
  if [ -n "$AGENT_PID" ]; then
    for id in $("$BERTH" pod ls -q 2>/dev/null); do "$BERTH" pod rm -f "$id" >/dev/null; done
    for id in $("$BERTH" ps -q --no-trunc 2>/dev/null); do "$BERTH" rm -f "$id" >/dev/null; done
    kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null
  fi
  "${P[@]}" rm -af -t 0 >/dev/null 2>&1
  # conmon runs `podman container cleanup` when a container ends, which sets podman's
  # storage up again (a bind mount of its overlay dir) after we unmounted it: wait, up to
  # 10 s, until no process started on this WORK (its --root is in the command line) is left.
  for _ in $(seq 100); do
    pgrep -f -- "--root $WORK/podroot" >/dev/null || break
    sleep 0.1
  done
  # podman's storage bind-mounts its overlay dir onto itself (stacked, more than once):
  # unmount until nothing is left below WORK, a bounded number of passes.
  for _ in $(seq 10); do
    grep -q " $WORK/" /proc/self/mounts || break
    grep -o " $WORK/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  done
  remove_cgroup_tree "$CG"
  rm -rf "$WORK"
}
