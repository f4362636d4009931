#!/usr/bin/env bash
# The cgroup v2 lane: boots Debian's kernel (linux-image-amd64) under qemu with cgroup2 as
# the only hierarchy, the built `berth` and `berth-monitor`, the busybox test image and a
# check script, and prints what the script prints (between "=== checks begin" and
# "=== checks ended rc=N"). This machine is hybrid v1; production hosts are mostly pure v2.
#
#   integration/vm/v2.sh BIN_DIR OCI_LAYOUT [CHECKS]    (root; CHECKS: default v2-checks.sh)
#
# TCG by default (nested KVM hangs on the Firecracker machines this runs on; TCG boots in
# ~6 s); BERTH_VM_ACCEL=kvm where KVM works. The kernel package is fetched once with apt
# into BERTH_VM_KERNEL_DIR (default /var/cache/berth-vm-kernel) and reused.
# Inside: / is a tmpfs (switch_root out of the initramfs), cgroup2 at /sys/fs/cgroup with
# cpu, memory, pids, io and cpuset handed to children, overlay.ko loaded, lo up; loop, ext4
# and the quota modules loaded, and with BERTH_VM_EXT4_MB=N an ext4 image of N MB made
# here with project quotas (`mkfs.ext4 -O quota,project`, which this host's kernel cannot
# mount) at /disk.img, for the checks to mount with `-o loop,prjquota`.
set -euo pipefail
BIN_DIR=$1; LAYOUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
CHECKS=${3:-$HERE/v2-checks.sh}
KDIR=${BERTH_VM_KERNEL_DIR:-/var/cache/berth-vm-kernel}
[ "$(id -u)" = 0 ] || { echo "v2.sh: run as root" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "v2.sh: qemu-system-x86 is missing; run scripts/setup.sh" >&2; exit 1; }
command -v busybox >/dev/null || { echo "v2.sh: busybox-static is missing; run scripts/setup.sh" >&2; exit 1; }
W=$(mktemp -d /tmp/berth-vm.XXXXXX)
trap 'rm -rf "$W"' EXIT

if [ ! -d "$KDIR/k/boot" ]; then
  mkdir -p "$KDIR"
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ -z "$pkg" ]; then apt-get update -qq; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}'); fi
  (cd "$KDIR" && rm -rf k ./*.deb && apt-get download "$pkg" >/dev/null && dpkg-deb -x ./*.deb k.tmp && rm -f ./*.deb && mv k.tmp k)
fi
VMLINUZ=$(ls "$KDIR"/k/boot/vmlinuz-* | head -1)
OVL=$(find "$KDIR/k/lib/modules" -name 'overlay.ko*' | head -1)

R=$W/ir
mkdir -p "$R"/{bin,proc,sys,dev,tmp,img}
cp "$(command -v busybox)" "$R/bin/busybox"
# Debug information stays outside (a debug build is ~300 MB, ~30 MB stripped).
for b in berth berth-monitor; do
  if command -v strip >/dev/null; then strip -o "$R/bin/$b" "$BIN_DIR/$b"; else cp "$BIN_DIR/$b" "$R/bin/"; fi
done
for b in "$BIN_DIR/berth" "$BIN_DIR/berth-monitor"; do
  for l in $(ldd "$b" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
    mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"
  done
done
cp "$OVL" "$R/${OVL##*/}"
mkdir -p "$R/mods"
for m in crc32c_generic crc16 mbcache jbd2 ext4 quota_tree quota_v2 loop; do
  f=$(find "$KDIR/k/lib/modules" -name "$m.ko*" | head -1)
  [ -n "$f" ] && cp "$f" "$R/mods/"
done
if [ -n "${BERTH_VM_EXT4_MB:-}" ]; then
  truncate -s "${BERTH_VM_EXT4_MB}M" "$R/disk.img"
  mkfs.ext4 -q -F -O quota,project,^metadata_csum -E quotatype=prjquota "$R/disk.img"
fi
cp -a "$LAYOUT"/. "$R/img/"
cp "$CHECKS" "$R/checks"
cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /newroot; /bin/busybox mount -t tmpfs -o size=80% root /newroot
for d in bin lib lib64 usr img checks init2 mods disk.img overlay.ko overlay.ko.xz overlay.ko.zst; do [ -e /$d ] && /bin/busybox cp -a /$d /newroot/; done
/bin/busybox mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp
exec /bin/busybox switch_root /newroot /init2
INIT
cat > "$R/init2" <<'INIT2'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup /run /var/lib /etc; mount -t cgroup2 none /sys/fs/cgroup
echo "+cpu +memory +pids +io +cpuset" > /sys/fs/cgroup/cgroup.subtree_control
for m in /overlay.ko*; do
  case $m in *.xz) xz -d "$m"; insmod /overlay.ko ;; *.zst) echo "zstd module: unsupported" ;; *) insmod "$m" ;; esac
done
for m in crc32c_generic crc16 mbcache jbd2 ext4 quota_tree quota_v2 loop; do
  case $(ls /mods/$m.ko* 2>/dev/null) in *.xz) xz -d /mods/$m.ko.xz ;; esac
  [ -e /mods/$m.ko ] && insmod /mods/$m.ko 2>/dev/null
done
ip link set lo up
echo "=== checks begin"; sh /checks; echo "=== checks ended rc=$?"
poweroff -f
INIT2
chmod +x "$R/init" "$R/init2"
(cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$W/initrd.gz")

# TCG unless told otherwise: a probe cannot tell a working nested KVM from one that hangs.
accel=(-accel tcg -cpu max)
[ "${BERTH_VM_ACCEL:-tcg}" = kvm ] && accel=(-accel kvm -cpu host)
timeout "${BERTH_VM_TIMEOUT:-900}" qemu-system-x86_64 "${accel[@]}" -m 2048 -smp 2 -nographic -no-reboot \
  -kernel "$VMLINUZ" -initrd "$W/initrd.gz" -append "console=ttyS0 panic=-1 quiet" 2>&1 \
  | tr -d '\r' | sed -n '/=== checks begin/,/=== checks ended/p'
