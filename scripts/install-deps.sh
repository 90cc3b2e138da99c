#!/usr/bin/env bash
# Installs what building, running and testing Rudder needs on Debian 12, only if it is missing.
set -euo pipefail

packages=(
  clang libclang-dev        # bindgen for librocksdb-sys
  librocksdb-dev            # RocksDB 7.8, linked instead of building it from source
  protobuf-compiler         # protoc for the etcd wire format
  etcd-server etcd-client   # the anchor (etcd 3.4.23) and the etcdctl the tests drive
  pkg-config make
  iptables faketime         # the Jepsen suite: partitions and clock faults
  iproute2                  # ip netns for the Jepsen suite's nodes
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts etcd as a service where systemd runs; it would hold port 2379 that Rudder serves on.
  if [ -d /run/systemd/system ] && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd
  fi
fi

# The API server's end-to-end tests drive the real kubectl (bundled 1.27 ... 1.33 in Google's `kubectl`
# package). Install it when a configured repository offers it; the tests name the binary they need.
if ! dpkg-query -W -f='${Status}' kubectl 2>/dev/null | grep -q "install ok installed"; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl \
    || echo "warning: kubectl is not installed and no repository offers it; the kubectl tests will fail" >&2
fi

# The Python `kubernetes` client, which one API server test drives (PyPI; Debian's python3-kubernetes is
# the fallback where pip may not install into the system Python).
if ! python3 -c "import kubernetes" >/dev/null 2>&1; then
  python3 -m pip install --quiet "kubernetes==37.0.2" \
    || python3 -m pip install --quiet --break-system-packages "kubernetes==37.0.2" \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-kubernetes \
    || echo "warning: the Python kubernetes client is not installed; its test will fail" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (rustup, stable >= 1.85) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt 2>/dev/null || true
