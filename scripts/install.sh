#!/usr/bin/env bash
# Installs our CNI plugins on an EKS node, chained after the AWS VPC CNI:
#   1. copies `bandwidth` and `topology-label` into the CNI bin dir as
#      `bandwidth-rs` and `topology-label` (names aws-node's init container
#      never writes), atomically, skipping byte-identical copies;
#   2. patches the conflist aws-node renders with jq: our two entries at the
#      end of the chain (a reference `bandwidth` entry from
#      ENABLE_BANDWIDTH_PLUGIN=true is replaced in place), everything else
#      kept; written atomically, with a backup, only when it changes.
# Running it again with the same flags changes nothing, byte for byte.
# --watch keeps it applied across aws-node restarts.
set -euo pipefail
shopt -s inherit_errexit

SELF=$(readlink -f -- "$0")
HERE=$(dirname -- "$SELF")
CNI_RS_PROG=cni-rs-install
# shellcheck source=lib/cni-rs-node.sh
. "$HERE/lib/cni-rs-node.sh"

usage() {
    cat <<'USAGE'
usage: install.sh [options]
Installs the Rust CNI plugins after the AWS VPC CNI on this node.

Where:
  --conflist FILE        conflist to patch (default /etc/cni/net.d/10-aws.conflist)
  --cni-bin-dir DIR      CNI plugin directory (default /opt/cni/bin)
  --from DIR|TARBALL     the plugins to install: a directory holding
                         `bandwidth` and `topology-label` (or their bin/), or
                         a release tarball cni-rs-<version>-linux-<arch>.tgz,
                         checked against the SHA256SUMS next to it when
                         there is one (default: <dir of this script>/bin if
                         present, else the checkout's target/release,
                         brought up to date with cargo build --release)
  --backup-dir DIR       where <conflist name>.bak-rs goes (default: the
                         conflist's directory; runtimes never load *.bak-rs)
Node settings (written into the plugin entries):
  --latency-ms N         bandwidth: tbf queue bound, 1..60000 (default 25)
  --runtime-burst MODE   bandwidth: cap|honor (default cap)
  --egress-mode MODE     bandwidth: auto|ifb|pod (default auto; pod next to
                         the VPC CNI network policy agent)
  --namespace-policy FILE
                         bandwidth: per-namespace default and max rates (a
                         JSON file the admin owns, embedded as namespacePolicy;
                         read at install time: re-run after changing it)
  --traffic-classes      bandwidth: count (and with the flags below, shape)
                         every pod's traffic per peer zone: sameZone,
                         crossZone, outside. Without --zone-cidrs-file the
                         zone, ENI subnets and VPC CIDRs come from IMDSv2
                         (EKS zero-config). Each flag below implies it.
  --zone NAME            bandwidth: this node's zone (with --zone-cidrs-file
                         when the file does not name it)
  --zone-cidrs-file PATH bandwidth: JSON {"zone": .., "zoneCidrs": {zone:
                         [CIDR..]}} written by node bootstrap
  --cross-zone-rate BITS bandwidth: cap cross-zone traffic (both directions)
                         inside each pod's limit
  --outside-rate BITS    bandwidth: cap traffic leaving the VPC likewise
  --same-zone-unshaped   bandwidth: same-zone traffic bypasses the pod limit
  --labels-file PATH     topology-label: JSON label map written at node
                         bootstrap (default /etc/cni/topology-labels.json;
                         "" for none)
  --imds                 topology-label: read zone/region/instance type from IMDSv2
  --alias TEMPLATE       topology-label: alias template (default: the
                         plugin's "{namespace}/{pod} {zone}"; "" disables)
  --no-topology-label    install only bandwidth-rs (removes our
                         topology-label entry if present)
Modes:
  --dry-run              print the conflist diff and what would be copied;
                         change nothing
  --watch                stay running; re-apply within seconds whenever the
                         conflist is rewritten or a binary replaced
  --interval SECONDS     watch: polling period (default 5); with inotify,
                         the period of the safety re-check
  --poll                 watch: poll even if inotifywait is available
  -h, --help
USAGE
}

CONFLIST=/etc/cni/net.d/10-aws.conflist
CNI_BIN_DIR=/opt/cni/bin
FROM=""
BACKUP_DIR=""
LATENCY_MS=25
RUNTIME_BURST=cap
EGRESS_MODE=auto
NS_POLICY=""
TRAFFIC_CLASSES=0
ZONE=""
ZONE_CIDRS_FILE=""
CROSS_ZONE_RATE=""
OUTSIDE_RATE=""
SAME_ZONE_UNSHAPED=false
LABELS_FILE=/etc/cni/topology-labels.json
IMDS=false
ALIAS=""
ALIAS_SET=false
TOPOLOGY=1
DRY_RUN=0
WATCH=0
POLL=0
INTERVAL=5
PASS=() # options handed to each re-apply in --watch mode

need() { [ $# -ge 2 ] || usage_error "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --conflist) need "$@"; CONFLIST=$2; PASS+=("$1" "$2"); shift 2 ;;
        --cni-bin-dir) need "$@"; CNI_BIN_DIR=$2; PASS+=("$1" "$2"); shift 2 ;;
        --from) need "$@"; FROM=$2; shift 2 ;;
        --backup-dir) need "$@"; BACKUP_DIR=$2; PASS+=("$1" "$2"); shift 2 ;;
        --latency-ms) need "$@"; LATENCY_MS=$2; PASS+=("$1" "$2"); shift 2 ;;
        --runtime-burst) need "$@"; RUNTIME_BURST=$2; PASS+=("$1" "$2"); shift 2 ;;
        --egress-mode) need "$@"; EGRESS_MODE=$2; PASS+=("$1" "$2"); shift 2 ;;
        --namespace-policy) need "$@"; NS_POLICY=$2; PASS+=("$1" "$2"); shift 2 ;;
        --traffic-classes) TRAFFIC_CLASSES=1; PASS+=("$1"); shift ;;
        --zone) need "$@"; ZONE=$2; TRAFFIC_CLASSES=1; PASS+=("$1" "$2"); shift 2 ;;
        --zone-cidrs-file) need "$@"; ZONE_CIDRS_FILE=$2; TRAFFIC_CLASSES=1; PASS+=("$1" "$2"); shift 2 ;;
        --cross-zone-rate) need "$@"; CROSS_ZONE_RATE=$2; TRAFFIC_CLASSES=1; PASS+=("$1" "$2"); shift 2 ;;
        --outside-rate) need "$@"; OUTSIDE_RATE=$2; TRAFFIC_CLASSES=1; PASS+=("$1" "$2"); shift 2 ;;
        --same-zone-unshaped) SAME_ZONE_UNSHAPED=true; TRAFFIC_CLASSES=1; PASS+=("$1"); shift ;;
        --labels-file) need "$@"; LABELS_FILE=$2; PASS+=("$1" "$2"); shift 2 ;;
        --imds) IMDS=true; PASS+=("$1"); shift ;;
        --alias) need "$@"; ALIAS=$2; ALIAS_SET=true; PASS+=("$1" "$2"); shift 2 ;;
        --no-topology-label) TOPOLOGY=0; PASS+=("$1"); shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --watch) WATCH=1; shift ;;
        --interval) need "$@"; INTERVAL=$2; shift 2 ;;
        --poll) POLL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option $1" ;;
    esac
done

if ! [[ "$LATENCY_MS" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$LATENCY_MS" -gt 60000 ]; then
    usage_error "--latency-ms must be an integer 1..60000, got '$LATENCY_MS'"
fi
case "$RUNTIME_BURST" in cap|honor) ;; *) usage_error "--runtime-burst must be cap or honor, got '$RUNTIME_BURST'" ;; esac
case "$EGRESS_MODE" in auto|ifb|pod) ;; *) usage_error "--egress-mode must be auto, ifb or pod, got '$EGRESS_MODE'" ;; esac
[[ "$INTERVAL" =~ ^([1-9][0-9]*|[0-9]*\.[0-9]*[1-9][0-9]*)$ ]] ||
    usage_error "--interval must be a positive number of seconds, got '$INTERVAL'"
[ "$DRY_RUN" = 0 ] || [ "$WATCH" = 0 ] || usage_error "--dry-run and --watch exclude each other"
command -v jq >/dev/null || refuse "jq is not installed (Debian: apt-get install jq)"
[ -n "$BACKUP_DIR" ] || BACKUP_DIR=$(dirname -- "$CONFLIST")
BACKUP=$BACKUP_DIR/$(basename -- "$CONFLIST").bak-rs

# --- source binaries -------------------------------------------------------
# Installed name <- built name.
BINS=("bandwidth-rs:bandwidth")
[ "$TOPOLOGY" = 1 ] && BINS+=("topology-label:topology-label")

# A release tarball: copied into the private work dir first, so the bytes
# checked are the bytes unpacked; checked against the SHA256SUMS beside it
# (when there is one: a listed mismatch or an unlisted tarball is refused);
# unpacked there, bounded; FROM becomes its bin/.
# What a release may unpack to: a release is a few static binaries, scripts
# and a README (tens of MB), and unpacking happens on the node's disk.
MAX_UNPACKED_BYTES=$((256 * 1024 * 1024))
MAX_MEMBERS=1000
MAX_SUMS_BYTES=$((1024 * 1024))

# Sets WANT to the checksum of $1 (a tarball's name) listed in the
# SHA256SUMS at $2, or to "" when there is none. A SHA256SUMS there in any
# form that is not a readable regular file (a FIFO, a directory, a dangling
# link, unreadable) is a refusal, never "no checksums": that would install
# the tarball unverified. So is a SHA256SUMS that does not list it.
WANT=""
release_checksum() {
    local name=$1 sums=$2 copy=$CNI_RS_WORK/SHA256SUMS
    WANT=""
    if [ ! -e "$sums" ] && [ ! -L "$sums" ]; then
        return 0
    fi
    [ -f "$sums" ] ||
        refuse "$sums exists but is not a regular file (a FIFO, a directory or a dangling link?); $name would install unverified"
    head -c $((MAX_SUMS_BYTES + 1)) -- "$sums" >"$copy" 2>/dev/null ||
        refuse "$sums exists but cannot be read; $name would install unverified"
    [ "$(wc -c <"$copy")" -le "$MAX_SUMS_BYTES" ] ||
        refuse "$sums is over $MAX_SUMS_BYTES bytes: not a release's checksum file"
    WANT=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1; exit }' "$copy")
    [ -n "$WANT" ] || refuse "$sums does not list $name"
}

# Refuses a tarball that would unpack to more than MAX_UNPACKED_BYTES, to
# more than MAX_MEMBERS members, or to anything but files and directories,
# before anything is written: first the decompressed stream (a gzip bomb),
# then the members' sizes as listed (sparse members unpack to their full
# size, from a tiny stream).
check_release_size() {
    local tgz=$1 copy=$2 stream listing bad
    stream=$(gzip -dc <"$copy" 2>/dev/null | head -c $((MAX_UNPACKED_BYTES + 1)) | wc -c) || true
    [ "${stream:-0}" -le "$MAX_UNPACKED_BYTES" ] ||
        refuse "$tgz unpacks to over $MAX_UNPACKED_BYTES bytes: not a cni-rs release"
    listing=$(tar -tvzf "$copy" --numeric-owner 2>"$CNI_RS_WORK/tar.err") ||
        refuse "cannot unpack $tgz: $(head -c 300 "$CNI_RS_WORK/tar.err")"
    bad=$(awk -v max="$MAX_UNPACKED_BYTES" -v members="$MAX_MEMBERS" '
        NF == 0 { next }
        { n++ }
        substr($1, 1, 1) != "-" && substr($1, 1, 1) != "d" { print "a member that is not a file or directory"; exit }
        $3 !~ /^[0-9]+$/ { print "a member without a size"; exit }
        { total += $3 }
        total > max { print "over " max " bytes"; exit }
        n > members { print "over " members " members"; exit }' <<<"$listing")
    [ -z "$bad" ] || refuse "$tgz unpacks to $bad: not a cni-rs release"
}

unpack_release() {
    local tgz=$1 sums name top copy dest=$CNI_RS_WORK/release
    [ -f "$tgz" ] || refuse "--from $tgz is not a regular file"
    name=$(basename -- "$tgz")
    sums=$(dirname -- "$tgz")/SHA256SUMS
    release_checksum "$name" "$sums"
    copy=$CNI_RS_WORK/$name
    cp -- "$tgz" "$copy" || refuse "cannot read $tgz"
    if [ -n "$WANT" ]; then
        [ "$(sha256sum <"$copy" | cut -d' ' -f1)" = "$WANT" ] ||
            refuse "$name does not match its checksum in $sums (corrupt or replaced download)"
        log "$name matches $sums"
    fi
    check_release_size "$tgz" "$copy"
    mkdir -p "$dest"
    # The listing was checked; the extraction is bounded anyway (no file
    # over the bound, SIGXFSZ past it), and so is the result.
    (ulimit -f $((MAX_UNPACKED_BYTES / 1024)) &&
        tar -xzf "$copy" -C "$dest" --no-same-owner --no-same-permissions) 2>"$CNI_RS_WORK/tar.err" ||
        refuse "cannot unpack $tgz: $(head -c 300 "$CNI_RS_WORK/tar.err")"
    [ "$(du -sb -- "$dest" | cut -f1)" -le "$MAX_UNPACKED_BYTES" ] ||
        refuse "$tgz unpacked to over $MAX_UNPACKED_BYTES bytes: not a cni-rs release"
    top=$(find "$dest" -mindepth 1 -maxdepth 1)
    if [ -z "$top" ] || [ "$(wc -l <<<"$top")" != 1 ] || [ -L "$top" ] || [ ! -d "$top" ] ||
        [ -L "$top/bin" ] || [ ! -d "$top/bin" ]; then
        refuse "$tgz is not a cni-rs release (one directory holding bin/)"
    fi
    # Only regular files are installed from a tarball (no links out of it).
    if [ -n "$(find "$top/bin" -mindepth 1 ! -type f)" ]; then
        refuse "$tgz holds something other than regular files in bin/"
    fi
    FROM=$top/bin
}

resolve_from() {
    local pair
    case "$FROM" in
        *.tgz | *.tar.gz) unpack_release "$FROM" ;;
    esac
    # An unpacked release (dist/linux-<arch>/) holds the plugins in bin/.
    if [ -n "$FROM" ] && [ ! -e "$FROM/bandwidth" ] && [ -d "$FROM/bin" ]; then
        FROM=$FROM/bin
    fi
    if [ -z "$FROM" ]; then
        if [ -x "$HERE/bin/bandwidth" ]; then
            FROM=$HERE/bin # the image's layout: /opt/cni-rs/{install.sh,bin/}
        else
            # A checkout: build (a no-op when up to date), so a stale build
            # is never installed; without cargo, use what is built.
            FROM=${CARGO_TARGET_DIR:-$(dirname -- "$HERE")/target}/release
            if [ "$DRY_RUN" = 0 ] && command -v cargo >/dev/null; then
                log "building release binaries (cargo build --release -p bandwidth -p topology-label)"
                (cd "$(dirname -- "$HERE")" && cargo build --release --quiet -p bandwidth -p topology-label) >&2 ||
                    refuse "cargo build failed"
            fi
            if [ "$DRY_RUN" = 1 ] && [ ! -x "$FROM/bandwidth" ]; then
                log "$FROM/bandwidth is not built yet (a real run builds it)"
                return
            fi
        fi
    fi
    for pair in "${BINS[@]}"; do
        [ -x "$FROM/${pair#*:}" ] ||
            refuse "$FROM/${pair#*:} is missing or not executable (pass --from DIR or TARBALL with the built plugins, or install cargo)"
    done
}

# Fills SUPPORTED with the versions `bandwidth` answers to VERSION; refuses
# a binary that does not run here (wrong architecture, truncated copy).
SUPPORTED=""
probe_binaries() {
    local out
    if ! out=$(CNI_COMMAND=VERSION "$FROM/bandwidth" </dev/null 2>&1) ||
        ! SUPPORTED=$(jq -r '.supportedVersions | join(" ")' <<<"$out" 2>/dev/null); then
        refuse "$FROM/bandwidth does not run on this machine or does not answer VERSION: ${out:0:200}"
    fi
}

# --- our entries ----------------------------------------------------------
# The namespace policy file: checked to be a readable regular file before
# jq opens it (a FIFO would block the installer), and a JSON object; the
# plugin itself judges the rest (see the STATUS check in apply_once).
NS_POLICY_JSON=null
if [ -n "$NS_POLICY" ]; then
    [ -e "$NS_POLICY" ] || refuse "--namespace-policy $NS_POLICY does not exist"
    [ -f "$NS_POLICY" ] || refuse "--namespace-policy $NS_POLICY is not a regular file"
    [ -r "$NS_POLICY" ] || refuse "--namespace-policy $NS_POLICY is not readable"
    NS_POLICY_JSON=$(timeout 10 jq -c 'if type == "object" then . else error("must be a JSON object of namespaces") end' \
        "$NS_POLICY" 2>&1) || refuse "--namespace-policy $NS_POLICY: ${NS_POLICY_JSON:0:300}"
fi
# The trafficClasses block (node policy); the plugin's STATUS check below
# judges it like any other setting.
TC_JSON=null
if [ "$TRAFFIC_CLASSES" = 1 ]; then
    for r in "$CROSS_ZONE_RATE" "$OUTSIDE_RATE"; do
        [ -z "$r" ] || [[ "$r" =~ ^[1-9][0-9]{0,17}$ ]] || usage_error "a zone rate must be bits per second (digits), got '$r'"
    done
    [ -z "$ZONE_CIDRS_FILE" ] || [[ "$ZONE_CIDRS_FILE" == /* ]] || usage_error "--zone-cidrs-file must be an absolute path"
    if [ -n "$ZONE_CIDRS_FILE" ] && [ ! -f "$ZONE_CIDRS_FILE" ]; then
        log "note: $ZONE_CIDRS_FILE does not exist yet; pods get code 11 (try again) until node bootstrap writes it"
    fi
    [ -z "$ZONE" ] || [ -n "$ZONE_CIDRS_FILE" ] || usage_error "--zone needs --zone-cidrs-file (without both, IMDS answers)"
    TC_JSON=$(jq -cn --arg zone "$ZONE" --arg file "$ZONE_CIDRS_FILE" --arg cross "$CROSS_ZONE_RATE" \
        --arg out "$OUTSIDE_RATE" --argjson unshaped "$SAME_ZONE_UNSHAPED" '
        def cap($r): if $r == "" then {} else {ingressRate: ($r | tonumber), egressRate: ($r | tonumber)} end;
        {}
        + (if $zone != "" then {zone: $zone} else {} end)
        + (if $file != "" then {zoneCidrsFile: $file} else {} end)
        + {sameZone: (if $unshaped then {shaped: false} else {} end),
           crossZone: cap($cross), outside: cap($out)}')
fi
BW_ENTRY=$(jq -cn --arg rb "$RUNTIME_BURST" --argjson lat "$LATENCY_MS" --arg em "$EGRESS_MODE" --argjson np "$NS_POLICY_JSON" \
    --argjson tc "$TC_JSON" \
    '{type: "bandwidth-rs", capabilities: {bandwidth: true}, runtimeBurst: $rb, latencyMs: $lat, egressMode: $em}
     + (if $np != null then {namespacePolicy: $np} else {} end)
     + (if $tc != null then {trafficClasses: $tc} else {} end)')
TL_ENTRY=null
if [ "$TOPOLOGY" = 1 ]; then
    TL_ENTRY=$(jq -cn --arg lf "$LABELS_FILE" --argjson imds "$IMDS" --arg alias "$ALIAS" --argjson alias_set "$ALIAS_SET" '
        {type: "topology-label", capabilities: {"io.kubernetes.cri.pod-annotations": true}}
        + (if $lf != "" then {labelsFile: $lf} else {} end)
        + (if $imds then {imds: {enabled: true}} else {} end)
        + (if $alias_set then {alias: $alias} else {} end)')
fi

# The conflist patch (a jq program of its own: what it does is documented there).
PATCH_JQ=$HERE/lib/install-patch.jq
[ -r "$PATCH_JQ" ] || refuse "$PATCH_JQ is missing (install.sh needs its lib/ directory)"
patch_conflist() { # patch_conflist OLD NEW
    jq --argjson bw "$BW_ENTRY" --argjson tl "$TL_ENTRY" --arg replaced_key "$CNI_RS_REPLACED_KEY" \
        -f "$PATCH_JQ" "$1" >"$2"
}

# --- one pass --------------------------------------------------------------
apply_once() {
    local pair src dst name copy=() version conf_dir tries out
    cni_rs_workdir
    resolve_from
    check_conflist "$CONFLIST"
    conf_dir=$(dirname -- "$CONFLIST")
    [ -d "$CNI_BIN_DIR" ] || refuse "CNI bin dir $CNI_BIN_DIR does not exist (pass --cni-bin-dir)"

    # Our plugins must speak the list's version and accept our entries, or
    # every pod on the node would fail to start: check with the binaries.
    version=$(jq -r '.cniVersion // ""' "$CONFLIST")
    if [ -x "$FROM/bandwidth" ]; then
        probe_binaries
        [[ " $SUPPORTED " == *" $version "* ]] ||
            refuse "$CONFLIST has cniVersion '$version'; our plugins support $SUPPORTED"
        if ! out=$(jq -c '. + {cniVersion: "1.1.0", name: "cni-rs-install-check"}' <<<"$BW_ENTRY" |
            CNI_COMMAND=STATUS "$FROM/bandwidth" 2>/dev/null) &&
            [ "$(jq -r '.code // 0' <<<"$out" 2>/dev/null)" = 7 ]; then
            refuse "bandwidth rejects these settings: $(jq -r '.details // .msg' <<<"$out")"
        fi
        if [ "$TOPOLOGY" = 1 ] && [ -x "$FROM/topology-label" ] &&
            ! out=$(jq -c '. + {cniVersion: "1.1.0", name: "cni-rs-install-check"}' <<<"$TL_ENTRY" |
                CNI_COMMAND=STATUS "$FROM/topology-label" 2>/dev/null) &&
            [ "$(jq -r '.code // 0' <<<"$out" 2>/dev/null)" = 7 ]; then
            refuse "topology-label rejects these settings: $(jq -r '.details // .msg' <<<"$out")"
        fi
    fi

    # What would change.
    for pair in "${BINS[@]}"; do
        name=${pair%%:*}
        src=$FROM/${pair#*:}
        dst=$CNI_BIN_DIR/$name
        [ -x "$src" ] || continue # dry run before the first build
        if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s -- "$src" "$dst" && [ "$(stat -c %a -- "$dst")" = 755 ]; then
            continue
        fi
        copy+=("$pair")
    done
    cp -- "$CONFLIST" "$CNI_RS_WORK/old"
    patch_conflist "$CNI_RS_WORK/old" "$CNI_RS_WORK/new"
    local conf_changes=1
    same_json "$CNI_RS_WORK/old" "$CNI_RS_WORK/new" && conf_changes=0

    if [ "$DRY_RUN" = 1 ]; then
        for pair in "${copy[@]}"; do log "would install $CNI_BIN_DIR/${pair%%:*} from $FROM/${pair#*:}"; done
        if [ "$conf_changes" = 1 ]; then
            log "would patch $CONFLIST (backup: $BACKUP):"
            show_diff "$CONFLIST" "$CNI_RS_WORK/new"
        elif [ "${#copy[@]}" = 0 ]; then
            log "nothing to do: $CONFLIST and $CNI_BIN_DIR are up to date"
        fi
        return 0
    fi
    if [ "${#copy[@]}" = 0 ] && [ "$conf_changes" = 0 ]; then
        return 0
    fi

    # Refuse before changing anything if a write would fail.
    [ "${#copy[@]}" = 0 ] || probe_writable "$CNI_BIN_DIR" "cannot install the plugins"
    if [ "$conf_changes" = 1 ]; then
        probe_writable "$conf_dir" "cannot patch $CONFLIST"
        probe_writable "$BACKUP_DIR" "cannot keep a backup of $CONFLIST"
    fi

    # Binaries first: the conflist never names a plugin that is not there.
    for pair in "${copy[@]}"; do
        name=${pair%%:*}
        src=$FROM/${pair#*:}
        dst=$CNI_BIN_DIR/$name
        local tmp
        tmp=$(mktemp "$CNI_BIN_DIR/.$name.tmp.XXXXXX")
        CNI_RS_TMPFILES+=("$tmp")
        cp -- "$src" "$tmp"
        chmod 0755 -- "$tmp"
        sync -- "$tmp" 2>/dev/null || true
        mv -f -T -- "$tmp" "$dst" # rename: a running plugin keeps its old inode
        log "installed $dst"
    done

    [ "$conf_changes" = 1 ] || return 0
    # aws-node may rename a fresh file in while we compute: write only if
    # the file is still what we read, else recompute (a few times).
    for tries in 1 2 3 4 5; do
        write_atomic "$CNI_RS_WORK/old" "$BACKUP" "$CONFLIST"
        if cmp -s -- "$CONFLIST" "$CNI_RS_WORK/old"; then
            write_atomic "$CNI_RS_WORK/new" "$CONFLIST" "$CONFLIST"
            log "patched $CONFLIST (previous version in $BACKUP)"
            return 0
        fi
        log "$CONFLIST changed while patching it; again ($tries)"
        check_conflist "$CONFLIST"
        cp -- "$CONFLIST" "$CNI_RS_WORK/old"
        patch_conflist "$CNI_RS_WORK/old" "$CNI_RS_WORK/new"
        same_json "$CNI_RS_WORK/old" "$CNI_RS_WORK/new" && return 0
    done
    refuse "$CONFLIST keeps changing under us; try again"
}

# --- watch mode ------------------------------------------------------------
STOP=0
WAIT_PID=""
INOTIFY_PID=""
on_term() {
    STOP=1
    if [ -n "$INOTIFY_PID" ]; then kill "$INOTIFY_PID" 2>/dev/null || true; fi
    if [ -n "$WAIT_PID" ]; then kill "$WAIT_PID" 2>/dev/null || true; fi
}

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
stamped() { # prints each line of $1 to stderr after a UTC timestamp
    local t line
    t=$(stamp)
    while IFS= read -r line; do printf '%s %s\n' "$t" "$line" >&2; done <<<"$1"
}

# Each pass runs as a child process, so `set -e` holds inside it and a
# refusal (conflist missing while aws-node starts, malformed JSON) is
# reported once and retried, never fatal.
LAST_ERR=""
reapply() {
    local out rc=0
    out=$("$SELF" "${PASS[@]}" --from "$FROM" 2>&1) || rc=$?
    if [ "$rc" = 0 ]; then
        [ -z "$out" ] || stamped "$out"
        [ -z "$LAST_ERR" ] || stamped "$CNI_RS_PROG: applied again"
        LAST_ERR=""
    elif [ "$out" != "$LAST_ERR" ]; then
        stamped "$out (retrying every ${INTERVAL}s)"
        LAST_ERR=$out
    fi
}

CONF_BASE=$(basename -- "$CONFLIST")
relevant() { # an event's path: the conflist or one of our binaries?
    case "${1##*/}" in
        "$CONF_BASE" | bandwidth-rs | topology-label) return 0 ;;
        *) return 1 ;;
    esac
}

pause() { # interruptible sleep
    sleep "$1" &
    WAIT_PID=$!
    wait "$WAIT_PID" || true
    WAIT_PID=""
}

watch_loop() {
    local conf_dir fd path deadline mode=poll dirs
    trap on_term TERM INT
    cni_rs_workdir
    resolve_from
    conf_dir=$(dirname -- "$CONFLIST")
    if [ "$POLL" = 0 ] && command -v inotifywait >/dev/null; then mode=inotify; fi
    log "watching $CONFLIST and $CNI_BIN_DIR ($mode, every ${INTERVAL}s); SIGTERM stops"
    reapply
    while [ "$STOP" = 0 ]; do
        if [ "$mode" = poll ] || [ ! -d "$conf_dir" ] || [ ! -d "$CNI_BIN_DIR" ]; then
            pause "$INTERVAL"
            [ "$STOP" = 0 ] && reapply
            continue
        fi
        dirs=("$conf_dir")
        [ "$CNI_BIN_DIR" -ef "$conf_dir" ] || dirs+=("$CNI_BIN_DIR")
        exec {fd}< <(exec inotifywait -m -q -e close_write,moved_to,create,delete,attrib --format '%w%f' "${dirs[@]}" 2>/dev/null)
        INOTIFY_PID=$!
        # Changes before the watches were set are caught by this pass.
        reapply
        while [ "$STOP" = 0 ]; do
            if read -r -t "$INTERVAL" -u "$fd" path; then
                relevant "$path" || continue
                # Debounce: let a burst of writes (aws-node's init copying
                # every plugin, our own rename) settle, at most ~3 s.
                deadline=$((SECONDS + 3))
                while [ "$SECONDS" -lt "$deadline" ] && read -r -t 0.3 -u "$fd" path; do :; done
                reapply
            elif [ $? -gt 128 ]; then
                [ "$STOP" = 0 ] || break
                reapply # periodic re-check: lost events, overflow
            else
                break # inotifywait exited (a watched dir went away)
            fi
        done
        kill "$INOTIFY_PID" 2>/dev/null || true
        wait "$INOTIFY_PID" 2>/dev/null || true
        INOTIFY_PID=""
        exec {fd}<&-
        [ "$STOP" = 0 ] && pause "$INTERVAL"
    done
    stamped "$CNI_RS_PROG: stopped"
}

if [ "$WATCH" = 1 ]; then
    watch_loop
else
    apply_once
fi
