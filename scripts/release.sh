#!/usr/bin/env bash
# Builds the release as CNI plugins ship: static musl executables for amd64
# and arm64, one tarball per architecture, and their checksums:
#
#   dist/cni-rs-<version>-linux-amd64.tgz
#   dist/cni-rs-<version>-linux-arm64.tgz
#   dist/SHA256SUMS
#   dist/linux-<arch>/      each tarball unpacked (deploy/Dockerfile copies its bin/)
#
# Each tarball holds one directory, cni-rs-<version>-linux-<arch>/, laid out
# as the installer expects (install.sh runs bin/cni-rs next to itself, and
# `cni-rs install` installs the plugins from its own directory):
#   bin/bandwidth  bin/topology-label  bin/cni-rs  install.sh  uninstall.sh  README.md  docs/
# Never unpack it into /opt/cni/bin: the installer installs `bandwidth` as
# `bandwidth-rs`, next to (not over) the reference plugin aws-node copies.
#
# Reproducible: two runs from the same commit give the same bytes, whatever
# the checkout's path or the target dir. Source paths are remapped, tar
# entries are sorted with owner 0:0, fixed modes and the mtime of
# SOURCE_DATE_EPOCH (default: the commit's time), and gzip stores no name or
# time.
#
# Usage: scripts/release.sh [--arch amd64|arm64]... [--out DIR]
# Environment: SOURCE_DATE_EPOCH, CARGO_TARGET_DIR (default target/release-dist).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$ROOT"

log() { printf 'release: %s\n' "$*" >&2; }
die() { printf 'release: %s\n' "$*" >&2; exit 1; }

ARCHES=()
OUT=$ROOT/dist
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || die "--arch needs amd64 or arm64"; ARCHES+=("$2"); shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "${#ARCHES[@]}" -gt 0 ] || ARCHES=(amd64 arm64)

# Every shipped binary: the two plugins and the operator's tool.
SHIPPED=(bandwidth topology-label cni-rs)

triple_of() {
    case "$1" in
        amd64) echo x86_64-unknown-linux-musl ;;
        arm64) echo aarch64-unknown-linux-musl ;;
        *) die "unknown architecture '$1' (amd64 or arm64)" ;;
    esac
}
elf_of() { # what `file` calls each architecture
    case "$1" in amd64) echo "x86-64" ;; arm64) echo "ARM aarch64" ;; esac
}

# --- what it needs -----------------------------------------------------------
need_apt=()
for pair in git:git tar:tar gzip:gzip sha256sum:coreutils file:file; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${need_apt[*]} (install them, or run as root)"
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup)"
installed=$(rustup target list --installed 2>/dev/null || true)
for arch in "${ARCHES[@]}"; do
    t=$(triple_of "$arch")
    if ! grep -qx "$t" <<<"$installed"; then
        log "adding the Rust target $t"
        rustup target add "$t" >/dev/null
    fi
done

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no version in Cargo.toml's [workspace.package]"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null) ||
        die "not a git checkout: set SOURCE_DATE_EPOCH"
fi
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since the epoch"
export SOURCE_DATE_EPOCH

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/release-dist}
mkdir -p "$TARGET_DIR"

# No machine path may reach a binary (panic locations name source files):
# the checkout, the registry, the toolchain and the target dir are remapped
# to fixed names, each as given and as resolved (cargo passes paths as it
# finds them, through any symlink). The flags go in CARGO_ENCODED_RUSTFLAGS
# (0x1f-separated), so a path with a space stays one flag and nothing
# inherited overrides them. Linked with rust-lld: no C cross toolchain.
flags=()
remap() { # remap DIR NAME: both spellings of DIR become NAME
    local real
    flags+=("--remap-path-prefix=$1=$2")
    real=$(cd "$1" 2>/dev/null && pwd -P) || return 0
    [ "$real" = "$1" ] || flags+=("--remap-path-prefix=$real=$2")
}
remap "$ROOT" /cni-rs
remap "${CARGO_HOME:-$HOME/.cargo}" /cargo
remap "${RUSTUP_HOME:-$HOME/.rustup}" /rustup
remap "$TARGET_DIR" /target
flags+=(-C target-feature=+crt-static)
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; printf '%s' "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
unset RUSTFLAGS
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
export CARGO_INCREMENTAL=0

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)
# OUT holds exactly this run's release: no tarball of another version or
# architecture stays next to SHA256SUMS.
rm -rf -- "$OUT"/cni-rs-*-linux-*.tgz "$OUT"/linux-* "$OUT/SHA256SUMS"
packages=()
for b in "${SHIPPED[@]}"; do packages+=(-p "$b"); done

tarballs=()
for arch in "${ARCHES[@]}"; do
    t=$(triple_of "$arch")
    log "building ${SHIPPED[*]} for $t (static, profile dist: release optimised for size)"
    cargo build --locked --profile dist --quiet --target "$t" --target-dir "$TARGET_DIR" "${packages[@]}"

    # The unpacked release, laid out as /opt/cni-rs in the image.
    stage=$OUT/linux-$arch
    rm -rf -- "$stage"
    mkdir -p "$stage/bin" "$stage/docs"
    for b in "${SHIPPED[@]}"; do
        src=$TARGET_DIR/$t/dist/$b
        # A dynamic or wrong-architecture binary must never ship.
        desc=$(file -b -- "$src")
        case "$desc" in
            *"statically linked"* | *"static-pie linked"*) ;;
            *) die "$src is not static: $desc" ;;
        esac
        [[ "$desc" == *"$(elf_of "$arch")"* ]] || die "$src is not an $arch executable: $desc"
        install -m 0755 -- "$src" "$stage/bin/$b"
    done
    install -m 0755 scripts/install.sh scripts/uninstall.sh "$stage/"
    # The README and the docs/ pages it links (and its chart), so its links
    # work in the unpacked release too.
    install -m 0644 README.md "$stage/README.md"
    install -m 0644 docs/*.md docs/*.svg "$stage/docs/"
    chmod 0755 "$stage" "$stage/bin" "$stage/docs"
    # The unpacked copy carries the same times as the tarball, so an image
    # layer made from it (deploy/Dockerfile) is reproducible too.
    find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

    name=cni-rs-$VERSION-linux-$arch
    tgz=$OUT/$name.tgz
    tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime="@$SOURCE_DATE_EPOCH" --transform "s,^linux-$arch,$name," \
        -C "$OUT" -cf - "linux-$arch" | gzip -9 -n >"$tgz.tmp"
    mv -f -- "$tgz.tmp" "$tgz"
    tarballs+=("$(basename -- "$tgz")")
    log "wrote $tgz"
done

# Checksums of this run's tarballs, in name order.
(
    cd "$OUT"
    mapfile -t all < <(printf '%s\n' "${tarballs[@]}" | LC_ALL=C sort)
    sha256sum -- "${all[@]}" >SHA256SUMS.tmp
    mv -f SHA256SUMS.tmp SHA256SUMS
    sha256sum --quiet -c SHA256SUMS
)
log "wrote $OUT/SHA256SUMS"
for t in "${tarballs[@]}"; do printf '%s\n' "$OUT/$t"; done
