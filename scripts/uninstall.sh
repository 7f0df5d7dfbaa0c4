#!/usr/bin/env bash
# Undoes scripts/install.sh on a node: removes our entries (types
# `bandwidth-rs` and `topology-label`) from the conflist, putting back the
# reference `bandwidth` entry ours replaced, then removes our binaries and
# the backup install.sh kept. The chain is computed from the file as it is
# now, not restored from the backup: aws-node may have re-rendered the file
# (new MTU, new settings) since the backup was taken.
# Stop the DaemonSet first, or its watcher puts everything back.
set -euo pipefail
shopt -s inherit_errexit

SELF=$(readlink -f -- "$0")
HERE=$(dirname -- "$SELF")
CNI_RS_PROG=cni-rs-uninstall
# shellcheck source=lib/cni-rs-node.sh
. "$HERE/lib/cni-rs-node.sh"

usage() {
    cat <<'USAGE'
usage: uninstall.sh [options]
Removes the Rust CNI plugins from this node and restores the AWS VPC CNI chain.
  --conflist FILE     (default /etc/cni/net.d/10-aws.conflist)
  --cni-bin-dir DIR   (default /opt/cni/bin)
  --backup-dir DIR    where install.sh kept <conflist name>.bak-rs, removed
                      here (default: the conflist's directory)
  --dry-run           print the conflist diff and what would be removed
  -h, --help
USAGE
}

CONFLIST=/etc/cni/net.d/10-aws.conflist
CNI_BIN_DIR=/opt/cni/bin
BACKUP_DIR=""
DRY_RUN=0
need() { [ $# -ge 2 ] || usage_error "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --conflist) need "$@"; CONFLIST=$2; shift 2 ;;
        --cni-bin-dir) need "$@"; CNI_BIN_DIR=$2; shift 2 ;;
        --backup-dir) need "$@"; BACKUP_DIR=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option $1" ;;
    esac
done
command -v jq >/dev/null || refuse "jq is not installed (Debian: apt-get install jq)"
[ -n "$BACKUP_DIR" ] || BACKUP_DIR=$(dirname -- "$CONFLIST")
BACKUP=$BACKUP_DIR/$(basename -- "$CONFLIST").bak-rs

# shellcheck disable=SC2016
UNPATCH='
.plugins |= [ .[]
  | if .type == "bandwidth-rs" then (.[$replaced_key] // empty)
    elif .type == "topology-label" then empty
    else . end ]
'

cni_rs_workdir
conf_changes=0
if [ -e "$CONFLIST" ]; then
    check_conflist "$CONFLIST"
    cp -- "$CONFLIST" "$CNI_RS_WORK/old"
    jq --arg replaced_key "$CNI_RS_REPLACED_KEY" "$UNPATCH" "$CNI_RS_WORK/old" >"$CNI_RS_WORK/new"
    same_json "$CNI_RS_WORK/old" "$CNI_RS_WORK/new" || conf_changes=1
else
    log "$CONFLIST does not exist: no entries to remove"
fi
remove=()
for name in bandwidth-rs topology-label; do
    if [ -e "$CNI_BIN_DIR/$name" ] || [ -L "$CNI_BIN_DIR/$name" ]; then remove+=("$CNI_BIN_DIR/$name"); fi
done
[ -e "$BACKUP" ] && remove+=("$BACKUP")

if [ "$DRY_RUN" = 1 ]; then
    [ "$conf_changes" = 0 ] || { log "would restore the chain in $CONFLIST:"; show_diff "$CONFLIST" "$CNI_RS_WORK/new"; }
    for f in "${remove[@]}"; do log "would remove $f"; done
    exit 0
fi

[ "$conf_changes" = 0 ] || probe_writable "$(dirname -- "$CONFLIST")" "cannot patch $CONFLIST"
[ "${#remove[@]}" = 0 ] || [ ! -d "$CNI_BIN_DIR" ] || probe_writable "$CNI_BIN_DIR" "cannot remove the plugins"

# The conflist first: once no entry names our plugins, removing them is safe.
if [ "$conf_changes" = 1 ]; then
    for tries in 1 2 3 4 5; do
        if cmp -s -- "$CONFLIST" "$CNI_RS_WORK/old"; then
            write_atomic "$CNI_RS_WORK/new" "$CONFLIST" "$CONFLIST"
            log "removed our entries from $CONFLIST"
            break
        fi
        [ "$tries" -lt 5 ] || refuse "$CONFLIST keeps changing under us; try again"
        log "$CONFLIST changed while editing it; again ($tries)"
        check_conflist "$CONFLIST"
        cp -- "$CONFLIST" "$CNI_RS_WORK/old"
        jq --arg replaced_key "$CNI_RS_REPLACED_KEY" "$UNPATCH" "$CNI_RS_WORK/old" >"$CNI_RS_WORK/new"
        same_json "$CNI_RS_WORK/old" "$CNI_RS_WORK/new" && break
    done
fi
for f in "${remove[@]}"; do
    rm -f -- "$f"
    log "removed $f"
done
[ "$conf_changes" = 1 ] || [ "${#remove[@]}" -gt 0 ] || log "nothing to do: nothing of ours on this node"
