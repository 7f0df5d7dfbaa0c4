# shellcheck shell=bash
# Shared by scripts/install.sh and scripts/uninstall.sh (sourced, not run):
# messages, conflist checks and atomic writes. Every write goes to a temp
# file in the destination's own directory, then rename(2) over the target,
# so a runtime reading the directory sees the old file or the new one,
# never half of one. Temp names start with "." and end in ".tmp.XXXXXX", so
# containerd and CRI-O (which load *.conf, *.conflist, *.json) never load
# one.

# Our plugin entries are recognised by type, `bandwidth-rs` and
# `topology-label`: nothing else in a conflist has these types (aws-node
# ships aws-cni, egress-cni (egress-v6-cni before), loopback, portmap,
# bandwidth, host-local and tuning).
# Key inside our bandwidth-rs entry that keeps the reference `bandwidth`
# entry it replaced (ENABLE_BANDWIDTH_PLUGIN=true), so uninstall can put it
# back. Plugins ignore keys they do not know.
# shellcheck disable=SC2034 # used by the scripts that source this
CNI_RS_REPLACED_KEY=x-cni-rs-replaced

CNI_RS_PROG=${CNI_RS_PROG:-cni-rs} # set by the sourcing script
CNI_RS_TMPFILES=()
CNI_RS_WORK=""

log() { printf '%s: %s\n' "$CNI_RS_PROG" "$*" >&2; }

# A refusal: says why and that nothing was changed, exits 1.
refuse() {
    printf '%s: refusing: %s\n' "$CNI_RS_PROG" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s (see --help)\n' "$CNI_RS_PROG" "$*" >&2
    exit 2
}

cni_rs_cleanup() {
    local f
    for f in "${CNI_RS_TMPFILES[@]}"; do
        [ -n "$f" ] && rm -f -- "$f"
    done
    if [ -n "$CNI_RS_WORK" ]; then rm -rf -- "$CNI_RS_WORK"; fi
}

# A private scratch directory (outside the node's CNI dirs), removed on exit.
cni_rs_workdir() {
    CNI_RS_WORK=$(mktemp -d "${TMPDIR:-/tmp}/cni-rs.XXXXXX")
    trap cni_rs_cleanup EXIT
}

# Checks that FILE is a conflist we can edit: a regular file holding exactly
# one JSON object with a "plugins" array of objects. Refuses otherwise.
check_conflist() {
    local f=$1 n err
    [ -e "$f" ] || refuse "$f does not exist (is the AWS VPC CNI running on this node? pass --conflist)"
    [ -f "$f" ] || refuse "$f is not a regular file"
    [ -r "$f" ] || refuse "$f is not readable"
    if ! n=$(jq -s length "$f" 2>"$CNI_RS_WORK/jq.err"); then
        err=$(head -c 300 "$CNI_RS_WORK/jq.err" | tr '\n' ' ')
        refuse "$f is not valid JSON (${err% }); it was left untouched"
    fi
    [ "$n" = 1 ] || refuse "$f is not valid JSON for a conflist: it holds $n JSON values, expected one object; it was left untouched"
    jq -e 'type == "object"' "$f" >/dev/null ||
        refuse "$f is not a JSON object; it was left untouched"
    jq -e '.plugins | type == "array"' "$f" >/dev/null ||
        refuse "$f has no \"plugins\" array (not a conflist); it was left untouched"
    jq -e '.plugins | all(type == "object")' "$f" >/dev/null ||
        refuse "$f has a \"plugins\" entry that is not a JSON object; it was left untouched"
}

# Whether two files hold the same JSON value (key order aside).
same_json() {
    jq -n -e --slurpfile a "$1" --slurpfile b "$2" '$a == $b' >/dev/null 2>&1
}

# Fails with a clear message unless a file can be created in DIR. The
# probe is the same mktemp the real write uses, so a read-only mount, a
# read-only bind or a full disk shows up here, before anything changed.
probe_writable() {
    local dir=$1 what=$2 out
    [ -d "$dir" ] || refuse "$what: $dir is not a directory"
    if ! out=$(mktemp "$dir/.cni-rs-probe.tmp.XXXXXX" 2>&1); then
        refuse "$what: cannot create a file in $dir (${out##*: }); nothing was changed"
    fi
    rm -f -- "$out"
}

# write_atomic CONTENT DEST MODE_FROM: DEST gets CONTENT's bytes through a
# temp file in DEST's directory and a rename, with the mode (and owner) of
# MODE_FROM. A DEST that is a symlink is replaced by a file.
write_atomic() {
    local content=$1 dest=$2 mode_from=$3 dir base tmp
    dir=$(dirname -- "$dest")
    base=$(basename -- "$dest")
    if ! tmp=$(mktemp "$dir/.$base.tmp.XXXXXX" 2>&1); then
        refuse "cannot create a file in $dir (${tmp##*: }); $dest was left untouched"
    fi
    CNI_RS_TMPFILES+=("$tmp")
    cat -- "$content" >"$tmp"
    chmod --reference="$mode_from" -- "$tmp"
    chown --reference="$mode_from" -- "$tmp" 2>/dev/null || true
    sync -- "$tmp" 2>/dev/null || true
    mv -f -T -- "$tmp" "$dest"
}

# Prints a unified diff of OLD -> NEW labelled with the conflist's path.
show_diff() {
    diff -u --label "$1" --label "$1 (new)" -- "$1" "$2" || true
}
