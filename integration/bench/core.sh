#!/usr/bin/env bash
# Agent-core benchmark (issue #12), side by side in one run:
#   1. N detached `run -d busybox sleep` started concurrently (N CLI processes at once) and
#      one after another, wall time of each, beside podman doing the same;
#   2. `berth ps` latency (p50, p99, max over M calls) on an idle agent, while the N
#      concurrent creates run, and while one supervisor hangs at start (made to hang with
#      the BERTH_FAULT_STALL_START fault-injection variable).
#
#   sudo integration/bench/core.sh [N] [M]        (default N=50, M=200; smoke: 1 → N=5, M=20)
#
# Every cgroup goes below this script's own cgroup; everything is removed on exit.
set -euo pipefail
N=${1:-50}
M=${2:-200}
if [ "$N" = 1 ]; then N=5; M=20; fi
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "core.sh: run as root" >&2; exit 1; }
for tool in podman python3; do
  command -v "$tool" >/dev/null || { echo "core.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done
. "$HERE/common.sh"
bench_init corebench
PODRUN=(-d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --cgroups=no-conmon --cgroup-parent="$CG/podman")
STALLED=""
cleanup() {
  set +e
  [ -n "$STALLED" ] && kill "$STALLED" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT

bench_build
export BERTH_FAULT_STALL_START=stuck
bench_agent --default-network none
unset BERTH_FAULT_STALL_START
bench_images

now() { date +%s%N; }
ms() { python3 -c "print(f'{($2-$1)/1e6:.0f}')" "$1" "$2"; }
clear_berth() { for id in $("$BERTH" ps -q --no-trunc); do "$BERTH" rm -f "$id" >/dev/null; done; }
clear_podman() { "${P[@]}" rm -af -t 0 >/dev/null 2>&1 || true; }

# Runs "$@" N times at once and waits for those (not for the agent, also a child).
at_once() {
  local pids=()
  for i in $(seq "$N"); do "$@" >/dev/null & pids+=($!); done
  wait "${pids[@]}"
}

# `berth ps` latencies in ms into $1.ps, and of the same request made in-process over the
# socket (`GET /v1/containers`, no process start) into $1.api, alternating: $2 calls each.
# With a count as $3: only calls made while that many `run -d` are in flight count; the
# script starts them itself (so the first call overlaps the burst) in rounds, removing the
# containers between rounds, until $2 calls were made. Prints the number of rounds.
ps_latencies() {
  python3 - "$BERTH" "$BERTH_SOCKET" "$1" "$2" "${3:-0}" <<'PY'
import socket, subprocess, sys, time
berth, sock, out, n, burst = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def api():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"GET /v1/containers HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
ps, ap = open(out + ".ps", "a"), open(out + ".api", "a")
def call():
    t = time.perf_counter()
    subprocess.run([berth, "ps"], stdout=subprocess.DEVNULL, check=True)
    ps.write(f"{(time.perf_counter() - t) * 1000:.2f}\n")
    t = time.perf_counter()
    api()
    ap.write(f"{(time.perf_counter() - t) * 1000:.2f}\n")
done = rounds = 0
while done < n:
    if not burst:
        call(); done += 1
        continue
    runs = [subprocess.Popen([berth, "run", "-d", "busybox", "sleep", "100000"],
                             stdout=subprocess.DEVNULL) for _ in range(burst)]
    while any(r.poll() is None for r in runs):
        call(); done += 1
    if any(r.returncode for r in runs):
        sys.exit("core.sh: a concurrent run -d failed")
    rounds += 1
    ids = subprocess.run([berth, "ps", "-q", "--no-trunc"], capture_output=True, text=True, check=True).stdout.split()
    for i in ids:
        subprocess.run([berth, "rm", "-f", i], stdout=subprocess.DEVNULL, check=True)
print(rounds)
PY
}

echo "== 1. $N detached runs: one after another, then all at once"
t0=$(now); for i in $(seq "$N"); do "$BERTH" run -d busybox sleep 100000 >/dev/null; done; t1=$(now)
BERTH_SERIAL=$(ms "$t0" "$t1"); clear_berth
t0=$(now)
at_once "$BERTH" run -d busybox sleep 100000
t1=$(now); BERTH_CONCURRENT=$(ms "$t0" "$t1")
[ "$("$BERTH" ps -q | wc -l)" = "$N" ] || { echo "core.sh: not all $N containers run" >&2; exit 1; }
clear_berth
t0=$(now); for i in $(seq "$N"); do "${P[@]}" run --runtime runc "${PODRUN[@]}" $IMG sleep 100000 >/dev/null; done; t1=$(now)
PODMAN_SERIAL=$(ms "$t0" "$t1"); clear_podman
t0=$(now)
at_once "${P[@]}" run --runtime runc "${PODRUN[@]}" $IMG sleep 100000
t1=$(now); PODMAN_CONCURRENT=$(ms "$t0" "$t1"); clear_podman

echo "== 2. berth ps latency: idle ($M calls), during rounds of $N concurrent creates (until $M calls), with a hung supervisor ($M calls)"
ps_latencies "$WORK/ps-idle" "$M" >/dev/null
ROUNDS=$(ps_latencies "$WORK/ps-creates" "$M" "$N")
"$BERTH" create --name stuck busybox sleep 1 >/dev/null 2>&1 &
STALLED=$!
until grep -qs '"name": "stuck"' "$WORK"/root/containers/*/container.json; do sleep 0.01; done
ps_latencies "$WORK/ps-hung" "$M" >/dev/null
"$BERTH" rm -f stuck >/dev/null
wait "$STALLED" 2>/dev/null || true
STALLED=""

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$WORK" "$N" "$M" "$BERTH_SERIAL" "$BERTH_CONCURRENT" "$PODMAN_SERIAL" "$PODMAN_CONCURRENT" "$ROUNDS" > "$OUT/core-$STAMP.md" <<'PY'
import sys
work, n, m = sys.argv[1], sys.argv[2], sys.argv[3]
bs, bc, ps_, pc = (float(x) for x in sys.argv[4:8])
rounds = sys.argv[8]
print(f"## Agent core: {n} detached runs, `berth ps` latency over {m} calls\n")
print("| | one after another ms | all at once ms | speed-up at once |")
print("|---|---|---|---|")
print(f"| berth run -d | {bs:.0f} | {bc:.0f} | {bs/bc:.2f}x |")
print(f"| podman run -d (runc) | {ps_:.0f} | {pc:.0f} | {ps_/pc:.2f}x |")
print(f"| podman / berth | {ps_/bs:.1f}x | {pc/bc:.1f}x | |")
print(f"\n`berth ps` is the CLI (a process started per call); the API is the same request made")
print(f"in-process over the socket, alternating with it. \"creates run\": only calls made while")
print(f"{n} concurrent `run -d` were in flight ({rounds} rounds).\n")
print("| while | `berth ps` p50 ms | p99 ms | max ms | API p50 ms | p99 ms | max ms | calls |")
print("|---|---|---|---|---|---|---|---|")
for name, label in (("idle", "idle"), ("creates", f"{n} creates run"), ("hung", "a supervisor hangs at start")):
    row = []
    for kind in ("ps", "api"):
        xs = sorted(float(l) for l in open(f"{work}/ps-{name}.{kind}"))
        p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
        row += [f"{p(0.5):.1f}", f"{p(0.99):.1f}", f"{xs[-1]:.1f}"]
    print(f"| {label} | {' | '.join(row)} | {len(xs)} |")
PY
cat "$OUT/core-$STAMP.md"
