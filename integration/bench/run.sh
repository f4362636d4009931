#!/usr/bin/env bash
# Container start benchmark (issue #3), side by side in one run:
#   1. end to end: `berth run --rm busybox true` (image local, private agent) vs
#      `podman run --rm --network none` of the same image (runc, and crun);
#   2. container only: create + start + wait + delete of one prepared OCI bundle:
#      `berth shim run` (libcontainer) vs `runc run` vs `crun run`;
#   3. memory: 50 idle `sleep` containers, RSS and PSS of each Berth supervisor vs each
#      podman `conmon`.
#
#   sudo integration/bench/run.sh [RUNS]          (default 30 runs per command)
#
# crun refuses this machine's hybrid cgroup layout, so its commands run inside a private
# mount namespace where /sys/fs/cgroup/unified is unmounted (the host is untouched).
# Every cgroup goes below this script's own cgroup; everything is removed on exit.
set -euo pipefail
RUNS=${1:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
for tool in hyperfine podman runc crun python3 unshare; do
  command -v "$tool" >/dev/null || { echo "run.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done

. "$HERE/common.sh"
bench_init runbench
# podman's default rlimits (nofile/nproc 1048576) exceed what this sandbox allows.
PODRUN=(--rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --cgroups=no-conmon --cgroup-parent="$CG/podman")
trap bench_cleanup EXIT

bench_build
bench_agent --default-network none
bench_images

echo "== 1. end to end ($RUNS runs each)"
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/e2e.json" \
  -n "berth run --rm" "$BERTH run --rm busybox true" \
  -n "podman run --rm --network none (runc)" "${P[*]} run --runtime runc ${PODRUN[*]} $IMG true" \
  >/dev/null
unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; \
  hyperfine -N --warmup 3 --runs $RUNS --export-json $WORK/e2e-crun.json \
  -n 'podman run --rm --network none (crun)' '${P[*]} run --runtime crun ${PODRUN[*]} $IMG true'" >/dev/null

echo "== 2. container only: one bundle, create + start + wait + delete"
mkdir -p "$WORK/bundle/rootfs" "$WORK/lc" "$WORK/runc" "$WORK/crun"
"$BERTH" image rootfs busybox "$WORK/bundle/rootfs"
(cd "$WORK/bundle" && runc spec)
python3 - "$WORK/bundle/config.json" "$CG/bundle" <<'PY'
import json, sys
path, cg = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["true"]
spec["linux"]["cgroupsPath"] = cg
json.dump(spec, open(path, "w"), indent=1)
PY
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/bundle.json" \
  -n "berth (libcontainer)" "$BERTH shim run --id bb --bundle $WORK/bundle --state $WORK/lc" \
  -n "runc run" "runc --root $WORK/runc run --bundle $WORK/bundle rr" >/dev/null
unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; \
  hyperfine -N --warmup 3 --runs $RUNS --export-json $WORK/bundle-crun.json \
  -n 'crun run' 'crun --root $WORK/crun run --bundle $WORK/bundle cc'" >/dev/null

echo "== 3. memory of 50 idle containers' supervisors"
for i in $(seq 50); do "$BERTH" run -d busybox sleep 100000 >/dev/null; done
for i in $(seq 50); do
  "${P[@]}" run -d --runtime runc "${PODRUN[@]:1}" $IMG sleep 100000 >/dev/null
done
sleep 1
: > "$WORK/mem.txt"
for f in "$WORK"/root/containers/*/container.json; do
  pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["shim"]["pid"])' "$f")
  echo "berth $(awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{print r, p}' /proc/$pid/smaps_rollup)" >> "$WORK/mem.txt"
done
for id in $("${P[@]}" ps -q); do
  pid=$("${P[@]}" inspect -f '{{.State.ConmonPid}}' "$id")
  echo "conmon $(awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{print r, p}' /proc/$pid/smaps_rollup)" >> "$WORK/mem.txt"
done

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$WORK" "$RUNS" > "$OUT/run-$STAMP.md" <<'PY'
import json, statistics, sys
work, runs = sys.argv[1], sys.argv[2]
def load(name):
    try:
        return json.load(open(f"{work}/{name}"))["results"]
    except FileNotFoundError:
        return []
def table(title, results):
    base = results[0]["median"]
    print(f"\n### {title}\n")
    print("| command | median ms | min ms | max ms | ratio vs berth |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['command']} | {r['median']*1000:.1f} | {r['min']*1000:.1f} | {r['max']*1000:.1f} | {r['median']/base:.2f}x |")
print(f"## Container start, {runs} runs each, hyperfine (warm-up 3)")
table("End to end (image local)", load("e2e.json") + load("e2e-crun.json"))
table("Container only: create + start + wait + delete of one bundle", load("bundle.json") + load("bundle-crun.json"))
mem = {}
for line in open(f"{work}/mem.txt"):
    parts = line.split()
    if len(parts) == 3:
        mem.setdefault(parts[0], []).append((int(parts[1]), int(parts[2])))
print("\n### Supervisor memory, 50 idle containers each (KiB per supervisor, median)\n")
print("| supervisor | count | RSS | PSS |")
print("|---|---|---|---|")
for name, vals in mem.items():
    print(f"| {name} | {len(vals)} | {statistics.median(v[0] for v in vals):.0f} | {statistics.median(v[1] for v in vals):.0f} |")
PY
cat "$OUT/run-$STAMP.md"
