#!/usr/bin/env bash
# THE test command: installs what it needs, then format check, clippy with
# -D warnings, build, and every test (unit, protocol, kernel integration,
# real traffic). Needs root: the integration tests create network
# namespaces, veths, ifbs and qdiscs (only inside namespaces they create).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh needs root (network namespaces, tc): run it as root" >&2
    exit 1
fi

need_apt=()
for pair in ip:iproute2 tc:iproute2 iperf3:iperf3 ping:iputils-ping jq:jq ss:iproute2 sha512sum:coreutils go:golang-go iptables:iptables \
    unshare:util-linux shellcheck:shellcheck nft:nftables setpriv:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# The libcni end-to-end tests: libcni sources (GOPATH build, offline) and the
# reference plugins (portmap, loopback) they chain with ours.
[ -d /usr/share/gocode/src/github.com/containernetworking/cni/libcni ] || need_apt+=(golang-github-appc-cni-dev)
[ -x /usr/lib/cni/portmap ] || need_apt+=(containernetworking-plugins)
# The containerd end-to-end tests (tests/cri-e2e): a private containerd 1.6
# with runc, and protoc for the k8s-cri crate's build script (clippy needs it too).
# The release tier: `file` for the static check, qemu-user for arm64,
# buildah for the DaemonSet image (scripts/image.sh, run under containerd
# by tests/cri-e2e).
for pair in containerd:containerd ctr:containerd runc:runc protoc:protobuf-compiler nsenter:util-linux \
    file:file qemu-aarch64-static:qemu-user-static buildah:buildah; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The VM tier (scripts/lib/vm-tier.sh): qemu-system for both architectures,
# and apt's arm64 architecture for the arm64 kernel and busybox-static
# (both architectures' busybox-static and kernels are downloaded, never
# installed, into target/vm). An image whose qemu-utils comes from
# bookworm-backports (like this one) cannot take bookworm's
# qemu-system-common beside it: the tier then runs Debian's qemu unpacked
# under target/vm instead.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "==> adding the arm64 architecture to apt (the VM tier's arm64 kernel)"
    dpkg --add-architecture arm64
    apt-get update -qq
fi
vm_apt=()
for pair in qemu-system-x86_64:qemu-system-x86 qemu-system-aarch64:qemu-system-arm; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || vm_apt+=("${pair#*:}")
done
if [ "${#vm_apt[@]}" -gt 0 ]; then
    echo "==> installing ${vm_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${vm_apt[@]}" >/dev/null 2>&1 ||
        echo "==> apt cannot install ${vm_apt[*]} beside this image's packages: the VM tier unpacks them under target/vm"
fi
# The installer tests validate deploy/daemonset.yaml offline against the
# Kubernetes schemas this package bundles.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "==> installing kubernetes-validate (PyPI)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubernetes-validate
fi
# tests/cni_rs.rs parses cni-rs's metrics with the official Prometheus
# client's parser.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    echo "==> installing prometheus-client (PyPI)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore prometheus-client
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (plugin binaries the integration tests run)"
cargo build --workspace --bins --quiet
echo "==> scripts/release.sh (static amd64 + arm64 tarballs in dist/, tested by tests/release.rs)"
scripts/release.sh >/dev/null
echo "==> scripts/image.sh (the DaemonSet image, linux/amd64 + linux/arm64, tested by tests/cri-e2e)"
scripts/image.sh
echo "==> cargo test"
# HTB logs "quantum of class ... is small/big" when a class has no explicit
# quantum: the suite must not make the kernel warn (the reference's v1.5
# did). Count the kernel log's quantum complaints before and after; not
# "htb: too many events!", which a loaded 2-core machine can draw from any
# htb and which says nothing about our configuration.
HTB_QUANTUM='quantum of class [0-9a-f:]* is (small|big)'
htb_warnings() { dmesg 2>/dev/null | grep -cE "$HTB_QUANTUM" || true; }
htb_before=$(htb_warnings)
cargo test --workspace --quiet -- "$@"
htb_after=$(htb_warnings)
if [ "$htb_after" -gt "$htb_before" ]; then
    echo "the kernel logged HTB quantum warnings during the suite:" >&2
    dmesg | grep -E "$HTB_QUANTUM" | tail -n $((htb_after - htb_before)) >&2
    exit 1
fi
echo "==> dmesg: no HTB warnings during the suite"

# The arm64 tier, under qemu-user (no arm64 machine here). What qemu cannot
# run, and why, is in docs/install.md ("Release and architectures").
echo "==> arm64 tier: unit tests built for aarch64-unknown-linux-musl, under qemu-aarch64-static"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static
# qemu-user's netlink translation refuses RTM_GETNSID, neighbour and tc
# messages (EOPNOTSUPP, before the kernel sees them), and NETLINK_NETFILTER
# sockets altogether (EPROTONOSUPPORT): these kernel tests of cni-netlink
# need them.
cargo test --quiet --target aarch64-unknown-linux-musl -p cni-types -p cni-netlink -p node-topology -p bandwidth -p topology-label -p cni-rs \
    --features cni-netlink/testing -- \
    --skip addr::tests::address_route_neighbour --skip netns::tests::veth_peer_moved_to_other_netns \
    --skip tc::tests::kernel:: --skip backstop::tests::kernel_round_trip
echo "==> arm64 tier: VERSION, protocol and bad inputs against dist/linux-arm64"
# The kernel cases (a real pod namespace, shaping, traffic) run for arm64
# in a real Linux 6.1 in the VM tier below: qemu-user cannot reach tc.
CNI_TEST_PLUGIN_DIR="$PWD/dist/linux-arm64/bin" CNI_TEST_PLUGIN_RUNNER=qemu-aarch64-static \
    cargo test --quiet -p integration-tests --test protocol --test bad_inputs
unset CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER
echo "==> VM tier: the release binaries in Debian's Linux 6.1 (amd64, arm64) under qemu-system (docs/vm-tier.md)"
scripts/lib/vm-tier.sh
echo "==> all tests passed"
