#!/usr/bin/env bash
# Exec benchmark (issue #11), side by side in one run: the latency of running `true` in a
# running container, now that every exec gets the container's seccomp filter —
#   `berth exec` (seccomp filter compiled for the exec), `berth exec` into a container run
#   with `--security-opt seccomp=unconfined` (what the filter costs), `runc exec` into a
#   bundle carrying Berth's own filter, and `podman exec` (runc, podman's default filter);
# and, for comparison, what the filter costs a container's init: `berth run --rm` with and
# without it.
#
#   sudo integration/bench/exec.sh [RUNS]          (default 30 runs per command)
#
# Every cgroup goes below this script's own cgroup; everything is removed on exit.
set -euo pipefail
RUNS=${1:-30}
WARMUP=$(( RUNS < 3 ? 0 : 3 ))
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "exec.sh: run as root" >&2; exit 1; }
for tool in hyperfine podman runc python3; do
  command -v "$tool" >/dev/null || { echo "exec.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done

. "$HERE/common.sh"
bench_init execbench
PODRUN=(--network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --cgroups=no-conmon --cgroup-parent="$CG/podman")
cleanup() {
  set +e
  runc --root "$WORK/runc" kill rr KILL >/dev/null 2>&1
  for _ in $(seq 50); do runc --root "$WORK/runc" delete rr >/dev/null 2>&1 && break; sleep 0.05; done
  bench_cleanup
}
trap cleanup EXIT

bench_build
bench_agent --default-network none
bench_images

CONFINED=$("$BERTH" run -d busybox sleep 100000)
UNCONFINED=$("$BERTH" run -d --security-opt seccomp=unconfined busybox sleep 100000)
grep -q '^Seccomp:.*2' <("$BERTH" exec "$CONFINED" cat /proc/self/status) \
  || { echo "exec.sh: berth exec is not under seccomp" >&2; exit 1; }
PODMAN_ID=$("${P[@]}" run -d --runtime runc "${PODRUN[@]}" $IMG sleep 100000)

# runc: a bundle of the same rootfs carrying Berth's own seccomp filter and capabilities.
mkdir -p "$WORK/bundle/rootfs" "$WORK/runc"
"$BERTH" image rootfs busybox "$WORK/bundle/rootfs"
(cd "$WORK/bundle" && runc spec)
python3 - "$WORK/bundle/config.json" "$WORK/root/containers/$CONFINED/config.json" "$CG/runc" <<'PY'
import json, sys
path, berth, cg = sys.argv[1], sys.argv[2], sys.argv[3]
spec, theirs = json.load(open(path)), json.load(open(berth))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sleep", "100000"]
spec["process"]["capabilities"] = theirs["process"]["capabilities"]
spec["linux"]["seccomp"] = theirs["linux"]["seccomp"]
spec["linux"]["cgroupsPath"] = cg
json.dump(spec, open(path, "w"), indent=1)
PY
runc --root "$WORK/runc" run -d --bundle "$WORK/bundle" rr </dev/null >/dev/null 2>&1
grep -q '^Seccomp:.*2' <(runc --root "$WORK/runc" exec rr cat /proc/self/status) \
  || { echo "exec.sh: runc exec is not under seccomp" >&2; exit 1; }

echo "== exec of \`true\` into a running container ($RUNS runs each)"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/exec.json" \
  -n "berth exec (seccomp)" "$BERTH exec $CONFINED true" \
  -n "berth exec (seccomp=unconfined)" "$BERTH exec $UNCONFINED true" \
  -n "runc exec (same filter)" "runc --root $WORK/runc exec rr true" \
  -n "podman exec (runc)" "${P[*]} exec $PODMAN_ID true" \
  >/dev/null

echo "== the filter's cost for an init: run --rm with and without it ($RUNS runs each)"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/init.json" \
  -n "berth run --rm (seccomp)" "$BERTH run --rm busybox true" \
  -n "berth run --rm (seccomp=unconfined)" "$BERTH run --rm --security-opt seccomp=unconfined busybox true" \
  >/dev/null

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$WORK" "$RUNS" > "$OUT/exec-$STAMP.md" <<'PY'
import json, sys
work, runs = sys.argv[1], sys.argv[2]
def load(name):
    return json.load(open(f"{work}/{name}"))["results"]
def table(title, results):
    base = results[0]["median"]
    print(f"\n### {title}\n")
    print("| command | median ms | min ms | max ms | ratio vs first |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['command']} | {r['median']*1000:.1f} | {r['min']*1000:.1f} | {r['max']*1000:.1f} | {r['median']/base:.2f}x |")
    return {r["command"]: r["median"] for r in results}
print(f"## Exec latency, {runs} runs each, hyperfine")
e = table("exec of `true` into a running container", load("exec.json"))
i = table("The filter's cost for an init", load("init.json"))
exec_cost = (e["berth exec (seccomp)"] - e["berth exec (seccomp=unconfined)"]) * 1000
init_cost = (i["berth run --rm (seccomp)"] - i["berth run --rm (seccomp=unconfined)"]) * 1000
print(f"\nseccomp filter: +{exec_cost:.1f} ms per exec, +{init_cost:.1f} ms per init (median differences)")
PY
cat "$OUT/exec-$STAMP.md"
