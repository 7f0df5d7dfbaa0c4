#!/usr/bin/env bash
# The VM tier: our release binaries in real Linux 6.1 kernels, the line EKS
# nodes run (Debian bookworm's own cloud kernels), on amd64 and arm64, under
# qemu's software emulation (no KVM here). For each architecture it boots
# an initramfs holding busybox, the kernel's tc, veth, ifb and nf_tables
# modules (loaded on demand by the kernel's request_module, as on a node),
# dist/linux-<arch>/bin and tools/vm-suite, which runs every case and prints
# one `VMTEST <case> PASS|FAIL <detail>` line each. Then one more amd64 boot
# with sch_htb withheld. Fails on any FAIL line and on any expected case that
# never printed. See docs/vm-tier.md.
#
# Usage: scripts/lib/vm-tier.sh [--arch amd64|arm64]... [--no-nohtb]
# Needs root (apt-get), dist/ from scripts/release.sh, and a Rust toolchain.
# Everything downloaded is cached under target/vm/ and never fetched twice.
set -euo pipefail
shopt -s inherit_errexit nullglob

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$ROOT"
VM=$ROOT/target/vm
DEBS=$VM/debs
# Boot to power-off takes ~1-2 min with traffic: the limit only stops a hang.
BOOT_TIMEOUT=${VM_TIER_BOOT_TIMEOUT:-420}

log() { printf 'vm-tier: %s\n' "$*" >&2; }
die() { printf 'vm-tier: %s\n' "$*" >&2; exit 1; }

ARCHES=()
NOHTB=1
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || die "--arch needs amd64 or arm64"; ARCHES+=("$2"); shift 2 ;;
        --no-nohtb) NOHTB=0; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "${#ARCHES[@]}" -gt 0 ] || ARCHES=(amd64 arm64)

# Every case vm-suite prints, per boot mode: one missing is a failure.
FULL_CASES=(traffic-unshaped tbf-ifb traffic-tbf-ingress traffic-tbf-egress cni-rs-pods
    check-after-tamper del-without-netns namespace-policy gc pod-mode traffic-pod-egress
    bypass-flood pod-mode-del classes-ifb traffic-class-cross-egress traffic-class-cross-ingress
    traffic-class-outside-egress classes-counters classes-ifb-del classes-pod
    traffic-class-pod-cross-egress classes-pod-del counting-only topology-label zero-leaks kernel-log)
NOHTB_CASES=(nohtb-classes-refused nohtb-tbf-works kernel-log)

triple_of() { case "$1" in amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; *) die "unknown arch $1" ;; esac; }

# --- downloads (once) ----------------------------------------------------------
apt_ready=0
apt_update() { # the arm64 packages need the arm64 architecture in apt's lists
    [ "$apt_ready" -eq 1 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "run as root: the first run downloads Debian packages with apt-get"
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq
    apt_ready=1
}

# fetch NAME...: each package's .deb into target/vm/debs unless one is there.
fetch() {
    local want=() p base arch
    for p in "$@"; do
        base=${p%%:*}
        arch=${p#*:}
        [ "$p" = "$base" ] && arch=$(dpkg --print-architecture)
        local have=("$DEBS/${base}_"*"_$arch.deb" "$DEBS/${base}_"*_all.deb)
        [ "${#have[@]}" -gt 0 ] || want+=("$p")
    done
    [ "${#want[@]}" -gt 0 ] || return 0
    apt_update
    log "downloading ${want[*]}"
    mkdir -p "$DEBS"
    # apt's sandbox user cannot write under target/: download as root.
    (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "${want[@]}" >/dev/null)
}

# The versioned image the cloud metapackage points at (e.g.
# linux-image-6.1.0-57-cloud-arm64), taken from the cache when present.
kernel_pkg() {
    local arch=$1
    local cached=("$DEBS"/linux-image-6.1.*-cloud-"$arch"_*_"$arch".deb)
    if [ "${#cached[@]}" -gt 0 ]; then
        basename "${cached[-1]}" | cut -d_ -f1
        return
    fi
    apt_update
    apt-cache depends "linux-image-cloud-$arch:$arch" | awk '/Depends: linux-image-6\.1/{print $2; exit}' | cut -d: -f1
}

latest() { # latest GLOB-MATCHES...: the last one (nullglob: none, an error)
    [ $# -gt 0 ] || die "a package is missing from $DEBS"
    printf '%s\n' "${@: -1}"
}

unpack() { # unpack DEB DIR, once
    [ -e "$2/.unpacked" ] && return 0
    rm -rf -- "$2"; mkdir -p "$2"
    dpkg-deb -x "$1" "$2"
    touch "$2/.unpacked"
}

# qemu: the system's if installed; otherwise Debian's packages unpacked
# under target/vm/qemu (here the image's qemu-utils from backports breaks
# bookworm's qemu-system-common, so apt cannot install them side by side).
QEMU_ENV=()
QEMU_L=()
find_qemu() {
    if command -v qemu-system-x86_64 >/dev/null && command -v qemu-system-aarch64 >/dev/null; then
        QEMU_BIN=$(dirname "$(command -v qemu-system-x86_64)")
        return
    fi
    local q=$VM/qemu
    if [ ! -e "$q/.unpacked" ]; then
        apt_update
        # The packages and every dependency not installed, level by level.
        local queue=(qemu-system-x86 qemu-system-arm qemu-system-common qemu-system-data seabios) seen=() p d
        while [ "${#queue[@]}" -gt 0 ]; do
            p=${queue[0]}; queue=("${queue[@]:1}")
            [[ " ${seen[*]} " == *" $p "* ]] && continue
            seen+=("$p")
            for d in $(apt-cache depends --no-pre-depends --no-recommends --no-suggests --no-conflicts \
                --no-breaks --no-replaces --no-enhances "$p" | awk '/Depends: [^<]/{print $2}'); do
                dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'ok installed' || queue+=("$d")
            done
        done
        fetch "${seen[@]}"
        rm -rf -- "$q"; mkdir -p "$q"
        local host_arch debs
        host_arch=$(dpkg --print-architecture)
        for p in "${seen[@]}"; do
            debs=("$DEBS/${p}_"*_"$host_arch".deb "$DEBS/${p}_"*_all.deb)
            [ "${#debs[@]}" -gt 0 ] || die "no .deb for $p in $DEBS"
            dpkg-deb -x "${debs[-1]}" "$q"
        done
        touch "$q/.unpacked"
    fi
    QEMU_BIN=$q/usr/bin
    QEMU_ENV=(env "LD_LIBRARY_PATH=$q/usr/lib/x86_64-linux-gnu")
    QEMU_L=(-L "$q/usr/share/qemu" -L "$q/usr/share/seabios")
    local missing
    missing=$("${QEMU_ENV[@]}" ldd "$QEMU_BIN/qemu-system-x86_64" "$QEMU_BIN/qemu-system-aarch64" | grep 'not found' || true)
    [ -z "$missing" ] || die "unpacked qemu lacks libraries: $missing"
}

# --- the initramfs --------------------------------------------------------------
# /init: mounts, the kernel log off the console (result lines stay whole),
# a watchdog, then vm-suite. VMSUITE_MODE comes from the kernel command
# line (an unknown key=value there becomes init's environment).
write_init() {
    cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
dmesg -n 1
if [ "$VMSUITE_MODE" = nohtb ]; then
    # A kernel without the feature: request_module finds no sch_htb.
    rm -f /lib/modules/*/kernel/net/sched/sch_htb.ko
    depmod -b / "$(uname -r)"
fi
(sleep "${VMSUITE_WATCHDOG:-400}"; echo "VMTEST-WATCHDOG fired"; poweroff -f) &
/bin/vm-suite "${VMSUITE_MODE:-full}"
echo "VMTEST-EXIT $?"
poweroff -f
EOF
    chmod 0755 "$1"
}

# build_initrd ARCH: target/vm/initrd-ARCH.gz from the cached packages,
# dist/linux-ARCH/bin and vm-suite.
build_initrd() {
    local arch=$1 kpkg kdir krel r=$VM/root-$1 bb=$VM/bb-host/bin/busybox
    kpkg=$(kernel_pkg "$arch")
    [ -n "$kpkg" ] || die "no linux-image-6.1 package found for $arch"
    fetch "$kpkg:$arch" "busybox-static:$arch"
    kdir=$VM/kernel-$arch
    unpack "$(latest "$DEBS/${kpkg}_"*_"$arch".deb)" "$kdir"
    unpack "$(latest "$DEBS/busybox-static_"*_"$arch".deb)" "$VM/busybox-$arch"
    krel=${kpkg#linux-image-}
    rm -rf -- "$r"
    mkdir -p "$r"/{bin,sbin,proc,sys,dev,run,tmp,opt/cni/bin} "$r/lib/modules/$krel"
    install -m 0755 "$VM/busybox-$arch/bin/busybox" "$r/bin/busybox"
    ln -s /bin/busybox "$r/sbin/modprobe"
    ln -s /bin/busybox "$r/sbin/depmod"
    # What shaping needs from the kernel, as modules: all of net/sched,
    # veth and ifb, nf_tables with the limit and objref expressions.
    local src=$kdir/lib/modules/$krel m
    for m in kernel/net/sched kernel/drivers/net/veth.ko kernel/drivers/net/ifb.ko \
        kernel/net/netfilter/nfnetlink.ko kernel/net/netfilter/nf_tables.ko \
        kernel/net/netfilter/nft_limit.ko kernel/net/netfilter/nft_objref.ko kernel/lib/libcrc32c.ko; do
        mkdir -p "$r/lib/modules/$krel/$(dirname "$m")"
        cp -r "$src/$m" "$r/lib/modules/$krel/$m"
    done
    "$bb" depmod -b "$r" "$krel"
    install -m 0755 "dist/linux-$arch/bin/"* "$r/opt/cni/bin/"
    install -m 0755 "target/$(triple_of "$arch")/release/vm-suite" "$r/bin/vm-suite"
    write_init "$r/init"
    (cd "$r" && find . | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null) | gzip -1 >"$VM/initrd-$arch.gz"
    cp "$kdir/boot/vmlinuz-$krel" "$VM/vmlinuz-$arch"
}

# --- booting ---------------------------------------------------------------------
# boot ARCH MODE: the console's result lines in target/vm/console-ARCH-MODE.log
boot() {
    local arch=$1 mode=$2 out=$VM/console-$1-$2.log qemu args
    case "$arch" in
        amd64) qemu="qemu-system-x86_64"; args=(-append "console=ttyS0 panic=-1 quiet VMSUITE_MODE=$mode") ;;
        arm64) qemu="qemu-system-aarch64"
            # Pointer authentication emulated the architected way is 3x slower.
            # shellcheck disable=SC2054 # -cpu's value is one comma-separated word
            args=(-M virt -cpu max,pauth-impdef=on -append "console=ttyAMA0 panic=-1 quiet VMSUITE_MODE=$mode") ;;
    esac
    # No KVM here (it fails with an emulation error): TCG, always under timeout.
    timeout "$BOOT_TIMEOUT" nice -n 10 "${QEMU_ENV[@]}" "$QEMU_BIN/$qemu" "${QEMU_L[@]}" -m 1024 -smp 1 \
        -nographic -no-reboot -nic none -kernel "$VM/vmlinuz-$arch" -initrd "$VM/initrd-$arch.gz" \
        "${args[@]}" </dev/null 2>&1 | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >"$out" || true
}

# judge ARCH MODE CASE...: prints the result lines; fails on FAIL or missing.
# Lines are taken wherever they start: firmware escapes may precede one.
judge() {
    local arch=$1 mode=$2 lines=$VM/results-$1-$2.txt c bad=0
    shift 2
    grep -ao 'VMTEST.*' "$VM/console-$arch-$mode.log" >"$lines" || true
    sed "s/^/[$arch $mode] /" "$lines"
    grep -q '^VMTEST-END ' "$lines" || { log "$arch $mode: the suite never finished (see $VM/console-$arch-$mode.log)"; bad=1; }
    if grep -q '^VMTEST [^ ]* FAIL' "$lines"; then bad=1; fi
    for c in "$@"; do
        grep -Eq "^VMTEST $c (PASS|FAIL)" "$lines" || { log "$arch $mode: case $c never reported"; bad=1; }
    done
    return "$bad"
}

main() {
    local start=$SECONDS arch t failed=0 host_arch
    host_arch=$(dpkg --print-architecture)
    for arch in "${ARCHES[@]}"; do
        [ -x "dist/linux-$arch/bin/bandwidth" ] || die "dist/linux-$arch missing: run scripts/release.sh first"
    done
    mkdir -p "$VM"
    fetch "busybox-static:$host_arch"
    unpack "$(latest "$DEBS/busybox-static_"*_"$host_arch".deb)" "$VM/bb-host"
    find_qemu
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
    for arch in "${ARCHES[@]}"; do
        log "building vm-suite for $(triple_of "$arch")"
        nice -n 10 cargo build --locked --release --quiet -p vm-suite --target "$(triple_of "$arch")"
        build_initrd "$arch"
    done
    log "initramfs and tools ready in $((SECONDS - start)) s"
    for arch in "${ARCHES[@]}"; do
        t=$SECONDS
        boot "$arch" full
        judge "$arch" full "${FULL_CASES[@]}" || failed=1
        log "$arch, Linux $(sed -n 's/^VMTEST-BEGIN [^ ]* [^ ]* //p' "$VM/results-$arch-full.txt"): $((SECONDS - t)) s"
    done
    if [ "$NOHTB" -eq 1 ] && [[ " ${ARCHES[*]} " == *" amd64 "* ]]; then
        t=$SECONDS
        boot amd64 nohtb
        judge amd64 nohtb "${NOHTB_CASES[@]}" || failed=1
        log "amd64 without sch_htb: $((SECONDS - t)) s"
    fi
    log "VM tier: $((SECONDS - start)) s in all"
    [ "$failed" -eq 0 ] || die "VM tier FAILED (console logs: $VM/console-*.log)"
    log "VM tier passed"
}

main
