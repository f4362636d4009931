#!/usr/bin/env bash
# Networking benchmark (issue #5), side by side in one run, medians:
#   1. pod start: `berth pod run` of a one-container busybox pod on Berth's default bridge
#      network (bridge + host-local + portmap + firewall + loopback) vs the same pod with
#      `network: none`: the networking overhead of a pod start;
#   2. end to end: `berth run --rm --network berth busybox true` vs `--network none`, and
#      `podman run --rm --network bridge` of the same image (podman's own default network
#      backend, runc: crun refuses this hybrid cgroup layout) vs `podman run --rm --network none`.
#
#   sudo integration/bench/net.sh [RUNS]          (default 30 runs per command)
#
# Everything runs on a private agent with its own CNI config dir, bridge and subnet; every
# cgroup goes below this script's own cgroup; all of it (bridges included) is removed on exit.
set -euo pipefail
RUNS=${1:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "net.sh: run as root" >&2; exit 1; }
for tool in hyperfine podman python3; do
  command -v "$tool" >/dev/null || { echo "net.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done

. "$HERE/common.sh"
bench_init netbench
BRIDGE="bnb$$"; BRIDGE=${BRIDGE:0:15}
SUBNET="10.99.$(( $$ % 200 )).0/24"
PODRUN=(--rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --cgroups=no-conmon --cgroup-parent="$CG/podman")
# podman's bridges, if this run is what creates them, go at the end.
PODMAN_BRIDGES=()
for b in podman0 cni-podman0; do ip link show "$b" >/dev/null 2>&1 || PODMAN_BRIDGES+=("$b"); done
cleanup() {
  bench_cleanup
  ip link del "$BRIDGE" 2>/dev/null
  for b in "${PODMAN_BRIDGES[@]}"; do ip link del "$b" 2>/dev/null; done
}
trap cleanup EXIT

bench_build
bench_agent --bridge-name "$BRIDGE" --bridge-subnet "$SUBNET"
bench_images
BACKEND=$("${P[@]}" info --format '{{.Host.NetworkBackend}}' 2>/dev/null || echo unknown)
for net in berth none; do
  printf 'name: bench-%s\nnetwork: %s\nrestartPolicy: Never\ncontainers:\n  - {name: c, image: busybox, command: [sleep, "1000"]}\n' \
    "$net" "$net" > "$WORK/pod-$net.yaml"
done

echo "== 1. pod start ($RUNS runs each; the previous pod is removed untimed)"
# Each timing run's --prepare removes the pod the previous run made: the first needs one.
for net in berth none; do "$BERTH" pod run "$WORK/pod-$net.yaml" >/dev/null; done
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/pod.json" \
  -n "berth pod run (bridge)" --prepare "$BERTH pod rm -f bench-berth" "$BERTH pod run $WORK/pod-berth.yaml" \
  -n "berth pod run (none)" --prepare "$BERTH pod rm -f bench-none" "$BERTH pod run $WORK/pod-none.yaml" \
  >/dev/null 2>"$WORK/hf1.err" || { cat "$WORK/hf1.err" >&2; exit 1; }

echo "== 2. run --rm true ($RUNS runs each)"
# Each once first, with its output: a command that fails says why here.
for net in berth none; do "$BERTH" run --rm --network "$net" busybox true; done
for net in bridge none; do "${P[@]}" run "${PODRUN[@]}" --network "$net" "$IMG" true; done
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/run.json" \
  -n "berth run --network berth" "$BERTH run --rm --network berth busybox true" \
  -n "berth run --network none" "$BERTH run --rm --network none busybox true" \
  -n "podman run --network bridge" "${P[*]} run ${PODRUN[*]} --network bridge $IMG true" \
  -n "podman run --network none" "${P[*]} run ${PODRUN[*]} --network none $IMG true" \
  >/dev/null

python3 - "$WORK" "$OUT/net.md" "$BACKEND" <<'PY'
import json, statistics, sys
work, out, backend = sys.argv[1], sys.argv[2], sys.argv[3]
med = {}
for f in ("pod.json", "run.json"):
    for r in json.load(open(f"{work}/{f}"))["results"]:
        med[r["command"]] = statistics.median(r["times"]) * 1000
lines = ["| what | median ms |", "|---|---|"]
lines += [f"| {k} | {v:.1f} |" for k, v in med.items()]
pb, pn = med["berth pod run (bridge)"], med["berth pod run (none)"]
rb, rn = med["berth run --network berth"], med["berth run --network none"]
qb, qn = med["podman run --network bridge"], med["podman run --network none"]
lines += [
    "",
    f"- pod start, bridge vs none: +{pb - pn:.1f} ms ({pb / pn:.2f}x)",
    f"- run, bridge vs none: +{rb - rn:.1f} ms; podman ({backend}): +{qb - qn:.1f} ms",
    f"- berth run (bridge) vs podman run --network bridge: {qb / rb:.2f}x faster",
]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
