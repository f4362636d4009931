#!/usr/bin/env bash
# Installs what Berth's build, tests, demo and benchmarks need on a Debian machine (root).
#   scripts/setup.sh           build + test + demo dependencies
#   scripts/setup.sh --bench   also the benchmarks' anchors (podman, runc, crun, hyperfine)
#                              and the oversubscription benchmark's nginx-light, stress-ng, oha
# Idempotent: packages already present are skipped, apt-get runs only when needed.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }

# busybox-static: test images; docker-registry + skopeo: the real registry and pushes;
# apache2-utils: htpasswd for the basic-auth registry; cmake + gcc + pkg-config: zlib-ng;
# libseccomp-dev: libcontainer's seccomp filters;
# umoci: OCI layout tooling; curl: readiness probes; time: peak RSS in benchmarks;
# python3: small JSON/port helpers in the demo and benchmark; mount: overlayfs in tests;
# containernetworking-plugins + iptables + iproute2: pod networking (CNI bridge, portmap);
# util-linux: nsenter in the network tests; qemu-system-x86: the cgroup v2 VM lane (Debian's
# kernel under qemu, integration/vm/); protobuf-compiler: etcd-client's gRPC code at build
# time; etcd-server + etcd-client: the HA masters' store in tests (etcd 3.4); chromium: the
# dashboard's headless browser test; e2fsprogs: the VM lane's ext4 with project quotas.
PACKAGES=(busybox-static docker-registry skopeo umoci apache2-utils cmake gcc g++ make pkg-config libseccomp-dev curl time ca-certificates python3 mount containernetworking-plugins iptables iproute2 util-linux qemu-system-x86 protobuf-compiler etcd-server etcd-client chromium e2fsprogs)
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(podman runc crun hyperfine nginx-light stress-ng)
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Host ids for tasks in user namespaces of their own: Berth's pool (`--userns auto`; the
# agent's built-in default is the same range) and podman's (`--userns=auto`, the benchmark's
# anchor), apart from each other and from login users' ranges (useradd hands out 100000 up).
for entry in berth:1073741824:67108864 containers:2147483647:2147483648; do
  for f in /etc/subuid /etc/subgid; do
    grep -q "^${entry%%:*}:" "$f" 2>/dev/null || echo "$entry" >> "$f"
  done
done

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
  else
    echo "setup: no Rust toolchain found; Berth needs Rust >= 1.85 (rustup)" >&2
  fi
  exit 1
fi

# oha: the open-loop HTTP load generator (latency correction) of integration/bench/oversub.sh.
if [ "${1:-}" = "--bench" ] && ! command -v oha >/dev/null && [ ! -x "$HOME/.cargo/bin/oha" ]; then
  echo "setup: cargo install oha"
  cargo install --locked --quiet oha
fi
