#!/usr/bin/env bash
# Pull + unpack benchmark (issue #2): berth vs podman vs skopeo+umoci, and unpack alone vs
# `tar -xzf` of the layers in sequence, on a journaled ext4 loop device and on tmpfs.
#
#   sudo integration/bench/pull.sh [RUNS]        (default 5 runs per command; 1: smoke)
#
# Builds a "fat" image from this machine's /usr/share and /usr/lib (35k files, ~350 MB
# uncompressed, 5 gzip layers), pushes it to a private docker-registry on 127.0.0.1, and
# times every command with hyperfine on a fresh store each run. Results (medians and
# ratios) go to stdout and to integration/bench/results/. Everything it creates — the
# registry process, the loop device, the mounts — is removed on exit, also on failure.
set -euo pipefail
RUNS=${1:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$HERE/results"
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "pull.sh: run as root (loop devices, mounts, overlayfs)" >&2; exit 1; }
for tool in hyperfine skopeo umoci podman docker-registry mkfs.ext4 losetup python3; do
  command -v "$tool" >/dev/null || { echo "pull.sh: missing $tool; run scripts/setup.sh --bench" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/berth-bench-XXXXXX)
. "$REPO/scripts/cgroups.sh"
OWN_CG=$(own_cgroup)
CG="${OWN_CG%/}/berth-pullbench-$$"
REG_PID=""; LOOP=""; MOUNTS=()
cleanup() {
  set +e
  remove_cgroup_tree "$CG"
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  for m in "${MOUNTS[@]}"; do
    # podman leaves its overlay mounts below its root; unmount those first.
    grep -o " $m/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    umount -l "$m" 2>/dev/null
  done
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building berth (release) and the fat image"
(cd "$REPO" && cargo build --release --quiet -p berth -p berth-integration)
BERTH="$REPO/target/release/berth"
FIXTURE="$REPO/target/release/berth-fixture"
# Pulls run in the agent: `berth-pull ROOT IMAGE` starts an agent on a fresh data root,
# pulls through it, and stops it, so each run is as cold as podman's (the agent's start,
# a few ms, is counted; its peak RSS is what `time -f %M` reports for the tree).
cat > "$WORK/berth-pull" <<SH
#!/usr/bin/env bash
set -euo pipefail
root=\$1; image=\$2
export BERTH_ROOT=\$root BERTH_SOCKET=\$root.sock BERTH_CONFIG=/nonexistent
mkdir -p "\$root"
"$BERTH" agent --cgroup-root "$CG/\$(basename "\$root")" --default-network none --cni-conf-dir "$WORK/net.d" 2>>"$WORK/agent.log" &
agent=\$!
trap 'kill \$agent; wait \$agent 2>/dev/null || true' EXIT
until "$BERTH" ps >/dev/null 2>&1; do kill -0 \$agent; sleep 0.002; done
"$BERTH" pull -q "\$image" >/dev/null
SH
chmod +x "$WORK/berth-pull"
BPULL="$WORK/berth-pull"
# The smoke run (RUNS=1) uses a tenth of the image: it checks the script, not the numbers.
if [ "$RUNS" = 1 ]; then FAT=(35000000 3500); else FAT=(350000000 35000); fi
"$FIXTURE" fat "$WORK/fat-oci" "${FAT[@]}" 5 /usr/share /usr/lib

echo "== starting docker-registry on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
IMAGE="127.0.0.1:$PORT/bench/fat:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/fat-oci:latest" "docker://$IMAGE"

echo "== journaled ext4 on a loop device (the VM's root ext4 has no journal: see issue #2)"
# Preallocated: first writes into a sparse backing file are slow and would skew run 1.
fallocate -l 6G "$WORK/disk.img"
# Initialise inode tables and journal now: lazy init runs in the background after mount
# and would slow the first runs down.
mkfs.ext4 -q -F -O has_journal -E lazy_itable_init=0,lazy_journal_init=0 "$WORK/disk.img"
LOOP=$(losetup --find --show "$WORK/disk.img")
mkdir -p "$WORK/disk" "$WORK/tmpfs"
mount "$LOOP" "$WORK/disk"; MOUNTS+=("$WORK/disk")
mount -t tmpfs -o size=6g tmpfs "$WORK/tmpfs"; MOUNTS+=("$WORK/tmpfs")

# The layers as plain files, for the tar floor.
LAYERS=$(python3 - "$WORK/fat-oci" <<'PY'
import json, sys
root = sys.argv[1]
index = json.load(open(f"{root}/index.json"))
m = json.load(open(f"{root}/blobs/sha256/" + index["manifests"][0]["digest"][7:]))
print(" ".join(f"{root}/blobs/sha256/" + l["digest"][7:] for l in m["layers"]))
PY
)

bench_fs() {
  local FS=$1 D=$2
  local J="$OUT/pull-$FS.json"
  echo "== $FS: pull + unpack"
  hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$J" \
    --prepare "rm -rf $D/berth $D/podman $D/podman-run $D/oci $D/bundle; sync" \
    -n "berth pull" "$BPULL $D/berth $IMAGE" \
    -n "podman pull" "podman --root $D/podman --runroot $D/podman-run --storage-driver overlay pull -q --tls-verify=false $IMAGE" \
    -n "skopeo copy + umoci unpack" "skopeo copy --quiet --src-tls-verify=false docker://$IMAGE oci:$D/oci:fat && umoci unpack --image $D/oci:fat $D/bundle"
  echo "== $FS: unpack alone (blobs already stored)"
  "$BPULL" "$D/berth-u" "$IMAGE"
  skopeo copy --quiet --src-tls-verify=false "docker://$IMAGE" "oci:$D/oci-u:fat"
  hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$OUT/unpack-$FS.json" \
    --prepare "rm -rf $D/berth-u/snapshots/sha256/* $D/tar-out $D/bundle-u; mkdir -p $D/tar-out; sync" \
    -n "berth unpack (layers in parallel)" "$BPULL $D/berth-u $IMAGE" \
    -n "tar -xzf in sequence" "for l in $LAYERS; do tar -xzf \$l -C $D/tar-out; done" \
    -n "umoci unpack" "umoci unpack --image $D/oci-u:fat $D/bundle-u" \
    -n "gunzip alone (floor)" "for l in $LAYERS; do gzip -dc \$l > /dev/null; done"
  rm -rf "$D"/*
}

bench_fs disk "$WORK/disk"
bench_fs tmpfs "$WORK/tmpfs"

echo "== peak memory (max RSS) of one pull each, on tmpfs"
rss() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
BERTH_RSS=$(rss "$BPULL" "$WORK/tmpfs/b" "$IMAGE")
PODMAN_RSS=$(rss podman --root "$WORK/tmpfs/p" --runroot "$WORK/tmpfs/pr" --storage-driver overlay pull -q --tls-verify=false "$IMAGE")
echo "{\"berth_kib\": $BERTH_RSS, \"podman_kib\": $PODMAN_RSS}" > "$OUT/rss.json"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, sys, os
out = sys.argv[1]
def load(name):
    return {r["command"]: r for r in json.load(open(os.path.join(out, name)))["results"]}
print("| file system | command | median s | min s | max s | ratio vs berth |")
print("|---|---|---|---|---|---|")
for fs in ("disk", "tmpfs"):
    for kind, base in (("pull", "berth pull"), ("unpack", "berth unpack (layers in parallel)")):
        rows = load(f"{kind}-{fs}.json")
        b = rows[base]["median"]
        for cmd, r in rows.items():
            print(f"| {fs} | {cmd} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r['median']/b:.2f}x |")
rss = json.load(open(os.path.join(out, "rss.json")))
print()
print(f"peak RSS: berth pull {rss['berth_kib']/1024:.0f} MiB, podman pull {rss['podman_kib']/1024:.0f} MiB")
PY
