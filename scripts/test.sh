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
    inotifywait:inotify-tools unshare:util-linux shellcheck:shellcheck; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# The libcni end-to-end tests: libcni sources (GOPATH build, offline) and the
# reference plugins (portmap, loopback) they chain with ours.
[ -d /usr/share/gocode/src/github.com/containernetworking/cni/libcni ] || need_apt+=(golang-github-appc-cni-dev)
[ -x /usr/lib/cni/portmap ] || need_apt+=(containernetworking-plugins)
# The containerd end-to-end tests (tests/cri-e2e): a private containerd 1.6
# with runc, and protoc for the k8s-cri crate's build script (clippy needs it too).
for pair in containerd:containerd ctr:containerd runc:runc protoc:protobuf-compiler nsenter:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The installer tests validate deploy/daemonset.yaml offline against the
# Kubernetes schemas this package bundles.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "==> installing kubernetes-validate (PyPI)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubernetes-validate
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (plugin binaries the integration tests run)"
cargo build --workspace --bins --quiet
echo "==> cargo test"
cargo test --workspace --quiet -- "$@"
echo "==> all tests passed"
