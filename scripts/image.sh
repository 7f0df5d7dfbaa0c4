#!/usr/bin/env bash
# Builds the DaemonSet image (deploy/Dockerfile: FROM scratch, the static
# release binaries only) for linux/amd64 and linux/arm64 with buildah, and
# writes both as one multi-arch OCI archive (an index of two manifests):
#
#   dist/cni-rs-image.oci.tar     image name localhost/cni-rs:<version>
#
# tests/cri-e2e's image test imports it into a private containerd and runs
# it. To publish it, push the same index to a registry (see
# deploy/README.md), e.g.
#   skopeo copy --all oci-archive:dist/cni-rs-image.oci.tar docker://REGISTRY/cni-rs:VERSION
# or build and push with docker buildx from the same Dockerfile.
#
# The binaries come from dist/linux-<arch>/bin/ (scripts/release.sh, run
# here first when they are missing). buildah runs as root with the vfs
# storage driver in a temp dir of its own (nothing left in
# /var/lib/containers), no registry, no emulation (nothing runs in the
# image while it is built). Created times are SOURCE_DATE_EPOCH (default:
# the commit's time).
#
# Usage: scripts/image.sh [--out FILE]
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$ROOT"
log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: %s\n' "$*" >&2; exit 1; }

OUT=$ROOT/dist/cni-rs-image.oci.tar
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a file"; OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (buildah with the vfs driver)"
if ! command -v buildah >/dev/null; then
    log "installing buildah"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
fi

ARCHES=(amd64 arm64)
SHIPPED=(bandwidth topology-label cni-rs)
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no version in Cargo.toml's [workspace.package]"
NAME=localhost/cni-rs:$VERSION
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) || die "not a git checkout: set SOURCE_DATE_EPOCH"
fi

missing=0
for arch in "${ARCHES[@]}"; do
    for b in "${SHIPPED[@]}"; do [ -x "dist/linux-$arch/bin/$b" ] || missing=1; done
done
if [ "$missing" = 1 ]; then
    log "dist/linux-<arch>/bin incomplete: running scripts/release.sh"
    scripts/release.sh >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cni-rs-image.XXXXXX")
cleanup() {
    # vfs layers are plain directories; buildah's own rm first, then ours.
    buildah "${STORE[@]}" rm --all >/dev/null 2>&1 || true
    rm -rf -- "$WORK"
}
trap cleanup EXIT
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)

# The build context: only the binaries (what Dockerfile.dockerignore lets
# through for docker), so nothing else of the checkout is read.
CTX=$WORK/context
for arch in "${ARCHES[@]}"; do
    mkdir -p "$CTX/dist/linux-$arch/bin"
    for b in "${SHIPPED[@]}"; do
        install -m 0755 "dist/linux-$arch/bin/$b" "$CTX/dist/linux-$arch/bin/$b"
    done
    touch -h -d "@$SOURCE_DATE_EPOCH" "$CTX/dist/linux-$arch/bin"/*
done

start=$(date +%s)
for arch in "${ARCHES[@]}"; do
    log "building linux/$arch"
    buildah "${STORE[@]}" build --quiet --platform "linux/$arch" --build-arg "TARGETARCH=$arch" \
        --timestamp "$SOURCE_DATE_EPOCH" --manifest "$NAME" -f deploy/Dockerfile "$CTX" >/dev/null
done
mkdir -p "$(dirname -- "$OUT")"
rm -f -- "$OUT" "$OUT.tmp"
buildah "${STORE[@]}" manifest push --quiet --all "$NAME" "oci-archive:$OUT.tmp:$NAME" >/dev/null
mv -f -- "$OUT.tmp" "$OUT"
log "wrote $OUT ($NAME: linux/amd64 + linux/arm64) in $(($(date +%s) - start)) s"
