#!/usr/bin/env bash
# Removes our CNI plugins from an EKS node and restores the AWS VPC CNI chain:
# a thin wrapper around `cni-rs uninstall` (cmd/cni-rs/src/installer.rs),
# which does the work and takes the same flags (`--help` lists them).
# In an unpacked release it runs bin/cni-rs next to it; in a checkout it
# builds it first (a no-op when up to date).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "$0")")
VERB=uninstall
if [ -x "$HERE/bin/cni-rs" ]; then
    exec "$HERE/bin/cni-rs" "$VERB" "$@"
fi
ROOT=$(dirname -- "$HERE")
command -v cargo >/dev/null || {
    echo "uninstall.sh: cargo not found: use a release tarball's install.sh, or install a Rust toolchain" >&2
    exit 1
}
(cd "$ROOT" && cargo build --release --quiet -p bandwidth -p topology-label -p cni-rs) >&2
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/cni-rs" "$VERB" "$@"
