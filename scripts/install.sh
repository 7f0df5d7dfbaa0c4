#!/usr/bin/env bash
# Installs our CNI plugins on an EKS node, chained after the AWS VPC CNI:
# a thin wrapper around `cni-rs install` (cmd/cni-rs/src/installer.rs),
# which does the work and takes the same flags (`--help` lists them).
# In an unpacked release it runs bin/cni-rs next to it (which installs the
# plugins in that bin/); in a checkout it builds the release binaries first
# (a no-op when up to date, so a stale build is never installed).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "$0")")
VERB=install
if [ -x "$HERE/bin/cni-rs" ]; then
    exec "$HERE/bin/cni-rs" "$VERB" "$@"
fi
ROOT=$(dirname -- "$HERE")
command -v cargo >/dev/null || {
    echo "install.sh: cargo not found: use a release tarball's install.sh, or install a Rust toolchain" >&2
    exit 1
}
(cd "$ROOT" && cargo build --release --quiet -p bandwidth -p topology-label -p cni-rs) >&2
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/cni-rs" "$VERB" "$@"
