#!/usr/bin/env bash
# The demo, offline and self-contained (root): builds Berth and busybox images from
# Debian's busybox-static, starts a private docker-registry on 127.0.0.1, pushes the
# images, and shows Berth pulling, listing, importing and removing them, then runs the
# pulled busybox from an overlayfs of its layer snapshots. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
scripts/setup.sh

WORK=$(mktemp -d /tmp/berth-demo-XXXXXX)
REG_PID=""; MNT="$WORK/rootfs"
cleanup() {
  set +e
  mountpoint -q "$MNT" && umount "$MNT"
  [ -n "$REG_PID" ] && kill "$REG_PID" && wait "$REG_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "== building berth"
cargo build --release --quiet -p berth -p berth-integration
BIN=$PWD/target/release
export BERTH_ROOT="$WORK/data" BERTH_CONFIG=/nonexistent DOCKER_CONFIG="$WORK/docker"

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

step "$BIN/berth" pull "$REG/library/busybox"
step "$BIN/berth" pull "$REG/demo/multilayer:1.0"
step "$BIN/berth" pull "$REG/demo/multilayer:1.0"
step "$BIN/berth" import "$WORK/fixtures/multilayer-docker.tar"
step "$BIN/berth" images

echo
echo "== the multilayer image as an overlayfs of its layer snapshots (read-only):"
LOWER=$("$BIN/berth" image inspect "$REG/demo/multilayer:1.0" | python3 -c 'import json,sys; print(":".join(json.load(sys.stdin)[0]["Rootfs"]["LowerDirs"]))')
mkdir -p "$MNT"
mount -t overlay overlay -o "lowerdir=$LOWER,ro" "$MNT"
step ls -l "$MNT/data"
step chroot "$MNT" /bin/busybox sh -c 'echo "hello from $(cat /etc/motd | tr -d "\n") of the pulled image; b.txt deleted by a whiteout: $(ls /data/b.txt 2>&1 | head -1)"'
umount "$MNT"

step "$BIN/berth" rmi "$REG/demo/multilayer:1.0" berth.test/multilayer:latest
step "$BIN/berth" image prune
step "$BIN/berth" images
echo
echo "demo done; everything it made is removed on exit"
