#!/usr/bin/env bash
# Benchmarks of our `bandwidth` and `topology-label` plugins side by side
# with the reference Go plugins of Debian's containernetworking-plugins
# (/usr/lib/cni/bandwidth and /usr/lib/cni/tuning), in the same run, as
# ratios. Writes BENCHMARKS.md (or --out FILE) and prints it.
#
#   1. ADD/DEL wall time per invocation (hyperfine -N, --prepare resets the
#      attachment between runs), the process-start floor and the kernel's
#      own ifb create/delete cost;
#   2. peak RSS (GNU time %M) and binary size;
#   3. shaping accuracy with iperf3 at 10M/100M/1G, both directions;
#   4. first-second overshoot with containerd's "unlimited" burst;
#   5. ping RTT into a pod whose shaped direction is saturated;
#   6. scale: 1000 simulated pods on one node, sequential and 2-way parallel,
#      ADD latency first vs last pods, our bandwidth ADD alone with 0 and
#      with 1000 other pods, DEL of all, leaks;
#   7. syscalls of one ADD and one DEL (strace -f -c), ours and the reference;
#   8. the queue floor sweep (scripts/lib/queue-sweep.sh): goodput and RTT
#      by tbf queue size at 10 Mbit/s, MTU 1500 and 9001;
#   9. traffic classes: ADD/DEL with and without classes, counting only
#      (scripts/lib/classes-cost.sh), and accuracy and counters per class
#      with three peers (scripts/lib/classes-accuracy.sh);
#  10. the pod-mode backstop (scripts/lib/backstop-cost.sh): ADD/DEL, the
#      nf_tables share, TCP at 1G and line rate with and without it;
#  11. churn in parallel (scripts/lib/churn-waves.sh): 16 and 64 pods'
#      ADDs, then DELs, started together, ours (ifb, pod) and the reference.
# Ours are the static release binaries scripts/release.sh ships
# (dist/linux-amd64), exactly what a node installs.
#
# This script only drives the measurements: it leaves the tools' raw output
# (hyperfine and iperf3 JSON, GNU time, strace, ping, per-call times) in a
# directory (tools/bench-report/README.md describes it), and
# tools/bench-report computes every statistic, the verdicts and the report.
#
# Everything happens inside network namespaces this script creates (a private
# "node" netns, pods as netns wired by vpc-cni-sim): the host's interfaces
# and routes are never touched. Needs root. Target: under 15 minutes.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export LC_ALL=C

RUNS=60
ROUNDS=3
WARMUP=3
PODS=1000
SECS=6
ALL_SECTIONS="1 2 3 4 5 6 7 8 9 10 11"
SECTIONS=$ALL_SECTIONS
RAW=""
OUT="$ROOT/BENCHMARKS.md"
usage() {
    cat <<USAGE
usage: scripts/bench.sh (as root) [--runs N] [--pods N] [--secs N] [--sections LIST] [--raw DIR] [--out FILE] [--help]
  --runs N         hyperfine runs per invocation benchmark (default 60, at least 50 for the report)
  --pods N         simulated pods per scale phase (default 1000)
  --secs N         seconds per iperf3 run in sections 3, 4, 9 and 10 (default 6)
  --sections LIST  only these sections, e.g. 1,7 or 9,11 (default all: $ALL_SECTIONS);
                   the report then has only them and says it is partial
  --raw DIR        keep the raw measurements in DIR (new or empty); the report again:
                   cargo run -p bench-report -- DIR > FILE
  --out FILE       where to write the report (default BENCHMARKS.md at the repository root)
A quick check of the whole pipeline: --sections 1,7 --runs 12 --out /tmp/b.md (about a minute).
USAGE
}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
        --pods) PODS=${2:?--pods needs a value}; shift 2 ;;
        --secs) SECS=${2:?--secs needs a value}; shift 2 ;;
        --sections) SECTIONS=${2:?--sections needs a value}; shift 2 ;;
        --raw) RAW=${2:?--raw needs a value}; shift 2 ;;
        --out) OUT=${2:?--out needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 10 ]] || { echo "--runs must be >= 10" >&2; exit 2; }
[[ "$PODS" =~ ^[0-9]+$ && "$PODS" -ge 20 && "$PODS" -le 2000 ]] || { echo "--pods must be 20..2000" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 4 ]] || { echo "--secs must be >= 4" >&2; exit 2; }
SECTIONS=$(tr ',' ' ' <<<"$SECTIONS" | xargs -n 1 | sort -n -u | xargs)
for s in $SECTIONS; do
    [[ " $ALL_SECTIONS " == *" $s "* ]] || { echo "--sections: no section $s (1..11)" >&2; exit 2; }
done
if [ -n "$RAW" ]; then
    [ ! -e "$RAW" ] || [ -z "$(ls -A "$RAW")" ] || { echo "--raw $RAW: not empty (one run per directory)" >&2; exit 2; }
    mkdir -p "$RAW"; RAW=$(cd "$RAW" && pwd)
fi
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
want_any() { local s; for s; do want "$s" && return 0; done; return 1; }

log() { printf '[%3ds] %s\n' "$SECONDS" "$*"; }

# --- preflight ---------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces, veths, ifbs, qdiscs): run it as root" >&2
    exit 1
fi
missing=()
for pair in ip:iproute2 tc:iproute2 ss:iproute2 hyperfine:hyperfine iperf3:iperf3 ping:iputils-ping \
            jq:jq /usr/bin/time:time xargs:findutils file:file strace:strace gcc:gcc musl-gcc:musl-tools; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ -x /usr/lib/cni/bandwidth ] && [ -x /usr/lib/cni/tuning ] || missing+=(containernetworking-plugins)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for c in ip tc ss hyperfine iperf3 ping jq /usr/bin/time gcc musl-gcc /usr/lib/cni/bandwidth /usr/lib/cni/tuning; do
    command -v "$c" >/dev/null || { echo "bench: missing $c and could not install it" >&2; exit 1; }
done
command -v cargo >/dev/null || { echo "bench: cargo not found" >&2; exit 1; }

# Another build on this 2-core machine skews every timing: wait for it (a
# while), and say in the report if measurements ran next to one.
CONTENDED=()
quiet() { # quiet PHASE
    local waited=0
    while pgrep -x cargo >/dev/null && [ "$waited" -lt 90 ]; do
        [ "$waited" = 0 ] && log "a cargo build is running: waiting for it before '$1' (max 90 s)"
        sleep 3; waited=$((waited + 3))
    done
    if pgrep -x cargo >/dev/null; then
        log "warning: cargo still running, measuring '$1' anyway"
        CONTENDED+=("$1")
    fi
}


# --- build ---------------------------------------------------------------------
log "building the release (scripts/release.sh --arch amd64), the test tools and the report"
scripts/release.sh --arch amd64 >/dev/null
cargo build --release --quiet -p vpc-cni-sim --bins
cargo build --release --quiet -p integration-tests --bins
cargo build --release --quiet -p bench-report
REL="$ROOT/target/release"
REPORT="$REL/bench-report"
# The floor's two helpers, in C (tests/bench-helpers): the no-op and the
# stdin redirector, static with musl, so the floor is the cheapest process
# start there is (a static glibc no-op pays ~0.3 ms of libc start-up here,
# a Rust one more: neither is the process floor). The same no-op linked
# dynamically against glibc is context.
HELPERS="$ROOT/target/bench-helpers"
mkdir -p "$HELPERS"
musl-gcc -O2 -static -o "$HELPERS/with-stdin" tests/bench-helpers/with-stdin.c
musl-gcc -O2 -static -o "$HELPERS/bench-noop" tests/bench-helpers/noop.c
gcc -O2 -o "$HELPERS/bench-noop-dyn" tests/bench-helpers/noop.c
WS="$HELPERS/with-stdin"; NOOP="$HELPERS/bench-noop"; NOOP_DYN="$HELPERS/bench-noop-dyn"
# Ours as shipped: static musl, profile dist.
BW="$ROOT/dist/linux-amd64/bin/bandwidth"; TL="$ROOT/dist/linux-amd64/bin/topology-label"
CNIRS="$ROOT/dist/linux-amd64/bin/cni-rs"
REFBW=/usr/lib/cni/bandwidth; REFTUNE=/usr/lib/cni/tuning

# --- the node, pods and cleanup --------------------------------------------------
WORK=$(mktemp -d /tmp/cni-bench.XXXXXX)
PFX="cnibench-$$"
NODE="$PFX-node"
SERVERS=()   # iperf3 server pids
cleanup() {
    local rc=$? p ns
    trap - EXIT INT TERM
    for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null || true; done
    # Pods' netns (by our unique prefix), then the node with every link in it.
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^$PFX-" | grep -v "^$NODE\$"); do
        ip netns del "$ns" 2>/dev/null || true
    done
    ip netns del "$NODE" 2>/dev/null || true
    rm -rf "$WORK"
    [ -z "${SHM:-}" ] || rm -rf "$SHM"
    [ "$rc" = 0 ] || echo "bench: failed (exit $rc) after ${SECONDS}s; cleaned up" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

mkdir -p "$WORK"/{ours,ref,cache,state,in,iperf-client}
[ -n "$RAW" ] || RAW="$WORK/raw"
mkdir -p "$RAW"/{hf,rss,strace,iperf,latency,scale}
ln -s "$BW" "$WORK/ours/bandwidth"; ln -s "$TL" "$WORK/ours/topology-label"; ln -s "$TL" "$WORK/ref/topology-label"
for d in ours ref; do ln -s "$REL/vpc-cni-sim" "$WORK/$d/vpc-cni-sim"; done
ln -s "$REFBW" "$WORK/ref/bandwidth"

# --- facts for the report's header and prose (RAW/facts: "key value") ------------
fact() { printf '%s %s\n' "$1" "$2" >> "$RAW/facts"; }
fact sections "$SECTIONS"
fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
fact kernel "$(uname -r)"
fact cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
fact ncpu "$(nproc)"
fact rustc "$(rustc --version)"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes)"
fact commit "$COMMIT"
fact refver "$(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo "?")"
fact ref_cni "$(echo '{"cniVersion":"0.4.0"}' | CNI_COMMAND=VERSION "$REFBW" | jq -c .supportedVersions)"
fact hyperfine "$(hyperfine --version | awk '{ print $2 }')"
fact iperf3 "$(iperf3 --version | awk 'NR == 1 { print $2 }')"
for kv in "runs $RUNS" "rounds $ROUNDS" "warmup $WARMUP" "pods $PODS" "secs $SECS"; do fact "${kv% *}" "${kv#* }"; done
# The example chain (vpc-cni-sim -> topology-label -> bandwidth) with state in
# the temp dir and a /16 pool for the scale run; and the main plugin alone,
# whose result is the prevResult of the invocation benchmarks.
# State on tmpfs, as the plugins' default /run/cni/<plugin> is on EKS nodes
# (/run is not a tmpfs on this VM; /dev/shm is).
SHM=$(mktemp -d /dev/shm/cni-bench.XXXXXX)
STATE="$SHM/state"
CONF="$WORK/chain.conflist"
jq --arg st "$STATE" '.plugins |= map(.stateDir = ($st + "/" + .type))
    | .plugins[0].podCIDR = "10.99.0.0/16"' conflist-examples/single-node-sim.conflist > "$CONF"
MAIN_CONF="$WORK/main-only.conflist"
jq '.plugins |= [.[0]]' "$CONF" > "$MAIN_CONF"
MTU=$(jq -r '.plugins[0].mtu' "$CONF")

ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip -n "$NODE" addr add 10.99.255.254/32 dev lo
ip netns exec "$NODE" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'

cni_args() { echo "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$1;K8S_POD_UID=uid-$1;K8S_POD_INFRA_CONTAINER_ID=$2"; }
cni() { # cni VERB CONFLIST CONTAINER_ID NETNS POD CNI_PATH CAP_ARGS
    ip netns exec "$NODE" "$REL/cni-run" "$1" --conflist "$2" --container-id "$3" \
        --netns "/var/run/netns/$4" --ifname eth0 --cni-path "$6" --cache-dir "$WORK/cache" \
        --args "$(cni_args "$5" "$3")" --cap-args "$7"
}
host_veth() { jq -r '[.interfaces[] | select((.sandbox // "") == "")][0].name'; }
pod_ip() { jq -r '.ips[0].address | split("/")[0]'; }

fact mtu "$MTU"

# --- the two pods of sections 1, 2, 6 and 7 ------------------------------------------
# Two pods wired by vpc-cni-sim alone; their results are the prevResult the
# plugins get, exactly as after the main plugin in a chain.
declare -A PREV ENI
IN="$WORK/in"
TL_SYSCTL_KEY="net.ipv4.conf.eth0.arp_ignore"
SENTINEL=4294967295   # containerd's "unlimited" burst (u32::MAX bits)
write_inputs() {
    local p
    for p in bw tl; do
        ip netns add "$PFX-$p"
        PREV[$p]=$(cni add "$MAIN_CONF" "bench-$p" "$PFX-$p" "$p" "$WORK/ours" '{}' | jq -c .)
        ENI[$p]=$(host_veth <<<"${PREV[$p]}")
    done
    local rate=100000000 burst=2500000   # 100 Mbit/s, 25 ms of burst, both directions
    jq -n --argjson prev "${PREV[bw]}" --arg st "$STATE/mb-bandwidth" --argjson r "$rate" --argjson b "$burst" \
        '{cniVersion: "0.4.0", name: "aws-cni", type: "bandwidth", ingressRate: $r, ingressBurst: $b,
          egressRate: $r, egressBurst: $b, stateDir: $st, prevResult: $prev}' > "$IN/bw.json"
    jq -n --argjson prev "${PREV[tl]}" --arg st "$STATE/mb-topology-label" --arg k "$TL_SYSCTL_KEY" \
        '{cniVersion: "0.4.0", name: "aws-cni", type: "topology-label",
          labels: {"topology.kubernetes.io/zone": "us-west-2a", "topology.kubernetes.io/region": "us-west-2",
                   "topology.k8s.aws/zone-id": "usw2-az1", "node.kubernetes.io/instance-type": "m6i.large"},
          alias: "{namespace}/{pod} {zone}",
          profiles: [{match: {"topology.kubernetes.io/zone": "us-west-2a"}, mtu: 1500, sysctls: {($k): "1"}}],
          stateDir: $st, prevResult: $prev}' > "$IN/tl.json"
    jq -n --argjson prev "${PREV[tl]}" --arg dd "$STATE/mb-tuning" --arg k "$TL_SYSCTL_KEY" \
        '{cniVersion: "0.4.0", name: "aws-cni", type: "tuning", mtu: 1500, sysctl: {($k): "1"},
          dataDir: $dd, prevResult: $prev}' > "$IN/tuning.json"
    echo '{}' > "$IN/empty.json"
    # Variants of ours for diagnosis: the state dir on disk (ext4), and
    # egress shaped inside the pod (egressMode "pod": no ifb to create or delete).
    jq --arg st "$WORK/state-disk/bandwidth" '.stateDir = $st' "$IN/bw.json" > "$IN/bw-shm.json"
    jq --arg st "$STATE/mb-bandwidth-pod" '.stateDir = $st | .egressMode = "pod"' "$IN/bw.json" > "$IN/bw-pod.json"
    jq '.ifbPool = 0' "$IN/bw.json" > "$IN/bw-nopool.json"
}

# The environment a runtime gives a plugin, and nothing else.
cni_env() { # cni_env POD -> NAME=VALUE words
    echo "PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_CONTAINERID=bench-$1 CNI_NETNS=/var/run/netns/$PFX-$1 CNI_IFNAME=eth0 CNI_PATH=$WORK/ours"
}
in_node() { # in_node POD CMD... : CMD in the node netns with the plugin environment
    local pod=$1; shift
    # shellcheck disable=SC2046
    ip netns exec "$NODE" env -i $(cni_env "$pod") CNI_ARGS="$(cni_args "$pod" "bench-$pod")" "$@"
}
invoke() { # invoke POD VERB PLUGIN INPUT
    in_node "$1" CNI_COMMAND="$2" "$3" < "$4" > "$WORK/last.out" 2>&1 || {
        echo "bench: $3 $2 failed: $(cat "$WORK/last.out")" >&2; return 1; }
}
# --prepare scripts for the bandwidth plugins. The reference's DEL deletes
# only the ifb, so the root tbf and the ingress qdisc on the host veth go by
# hand. Ours get the very same script (the tc deletes then find nothing):
# the same processes, the same time between runs, for both; that matters
# for DEL, whose cost is mostly the kernel's deferred ifb teardown.
mk_prep() { # mk_prep NAME INPUT PLUGIN -> $WORK/reset-NAME.sh, $WORK/readd-NAME.sh
    cat > "$WORK/reset-$1.sh" <<EOF
#!/bin/bash
"$WS" "$2" CNI_COMMAND=DEL "$3" >/dev/null 2>&1
tc qdisc del dev "${ENI[bw]}" root 2>/dev/null
tc qdisc del dev "${ENI[bw]}" ingress 2>/dev/null
exit 0
EOF
    cat > "$WORK/readd-$1.sh" <<EOF
#!/bin/bash
bash "$WORK/reset-$1.sh"
exec "$WS" "$2" CNI_COMMAND=ADD "$3" >/dev/null
EOF
}


# Ifbs in the node netns but our plugin's parked ones (its ifbPool: DEL
# parks its ifb, the next ADD takes it; they outlive pods by design, up to
# the pool's size, and are counted apart).
ifbs_in_use() { ip -n "$NODE" -o link show type ifb | grep -vc '^[0-9]*: ifb-parked[0-9]*:' || true; }
ifbs_parked() { ip -n "$NODE" -o link show type ifb | grep -c '^[0-9]*: ifb-parked[0-9]*:' || true; }
layout() { # what is on the bw pod's host veth and how many ifbs carry a tbf
    local q ifbs tbfs
    q=$(tc -n "$NODE" qdisc show dev "${ENI[bw]}" | awk '{ print $2 }' | sort | tr '\n' ' ')
    ifbs=$(ifbs_in_use)
    tbfs=$(tc -n "$NODE" qdisc show | grep -c '^qdisc tbf .* dev bwp' || true)
    echo "host veth: ${q:-none}| ifbs: $ifbs, tbf on ifb: $tbfs"
}
CLEAN_LAYOUT="host veth: noqueue | ifbs: 0, tbf on ifb: 0"
# Each ADD must do the full work from a clean veth, and each reset must
# leave a clean veth: check both plugins once before timing anything.
check_layouts() {
    local ours ours_del ref ref_del l
    invoke bw ADD "$BW" "$IN/bw.json"; ours=$(layout)
    invoke bw DEL "$BW" "$IN/bw.json"; ours_del=$(layout)
    invoke bw ADD "$REFBW" "$IN/bw.json"; ref=$(layout)
    in_node bw bash "$WORK/reset-ref.sh"; ref_del=$(layout)
    log "  after ADD, ours:      $ours"
    log "  after ADD, reference: $ref"
    log "  after reset:          ours: $ours_del / reference: $ref_del"
    for l in "$ours" "$ref"; do
        [[ "$l" == "host veth: ingress tbf | ifbs: 1, tbf on ifb: 1" ]] || { echo "bench: unexpected layout after ADD: $l" >&2; exit 1; }
    done
    for l in "$ours_del" "$ref_del"; do
        [[ "$l" == "$CLEAN_LAYOUT" ]] || { echo "bench: reset left something: $l" >&2; exit 1; }
    done
    fact layout_ours_add "$ours"; fact layout_ref_add "$ref"; fact layout_ours_reset "$ours_del"
}

# Each benchmark runs in ROUNDS rounds of RUNS/ROUNDS (ours, reference,
# ours, reference, ...) and the rounds are pooled (by tools/bench-report):
# slow drift on a shared machine then hits both sides alike.
hf() { # hf KEY POD PREPARE COMMAND ROUND -> RAW/hf/KEY.ROUND.json
    local key=$1 pod=$2 prep=$3 cmd=$4 round=$5 n=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
    if ! in_node "$pod" hyperfine -N --style none --warmup "$WARMUP" --runs "$n" \
            --export-json "$RAW/hf/$key.$round.json" --prepare "$prep" "$cmd" > "$WORK/hf.log" 2>&1; then
        echo "bench: hyperfine $key failed:" >&2; cat "$WORK/hf.log" >&2; return 1
    fi
    [ "$round" = "$ROUNDS" ] || [ "$round" = last ] || return 0
    log "  $(printf '%-16s' "$key") $("$REPORT" --progress "$RAW" "$key")"
}
tl_state() { # the tl pod: "<pod mtu> <host mtu> <arp_ignore> <alias>"
    echo "$(ip -n "$PFX-tl" -j link show eth0 | jq -r '.[0].mtu') $(ip -n "$NODE" -j link show "${ENI[tl]}" | jq -r '.[0].mtu')" \
        "$(ip netns exec "$PFX-tl" cat /proc/sys/net/ipv4/conf/eth0/arp_ignore) $(ip -n "$NODE" -j link show "${ENI[tl]}" | jq -r '.[0].ifalias // "-"')"
}
# tuning's DEL restores the MTU from its backup but not sysctls.
tuning_sysctl_reset() { ip netns exec "$PFX-tl" sh -c "echo ${TL_CLEAN_ARP:-0} > /proc/sys/net/ipv4/conf/eth0/arp_ignore"; }
clean_tl() { [ "$(tl_state)" = "$TL_CLEAN" ] || { echo "bench: tl pod not restored: $(tl_state) (was $TL_CLEAN)" >&2; exit 1; }; }
clean_bw() { [[ "$(layout)" == "$CLEAN_LAYOUT" ]] || { echo "bench: bw pod not clean: $(layout)" >&2; exit 1; }; }
setup_pods() {
    write_inputs
    mk_prep ours "$IN/bw.json" "$BW"
    mk_prep ref "$IN/bw.json" "$REFBW"
    mk_prep shm "$IN/bw-shm.json" "$BW"
    mk_prep pod "$IN/bw-pod.json" "$BW"
    mk_prep nopool "$IN/bw-nopool.json" "$BW"
    check_layouts
    TL_CLEAN=$(tl_state)
    TL_CLEAN_ARP=$(awk '{ print $3 }' <<<"$TL_CLEAN")
    fact tl_before "$TL_CLEAN"
    fact tl_sysctl_key "$TL_SYSCTL_KEY"
}

# --- 1. invocation wall time -------------------------------------------------------
bandwidth_round() { # bandwidth_round ROUND: ADD and DEL of ours, its variants and the reference
    local v name key input plugin
    for v in ours:bw ref:ref-bw shm:bw-shm pod:bw-pod nopool:bw-nopool; do
        name=${v%%:*}; key=${v#*:}
        input="$IN/bw.json"; plugin=$BW
        case $name in ref) plugin=$REFBW ;; shm) input="$IN/bw-shm.json" ;; pod) input="$IN/bw-pod.json" ;; nopool) input="$IN/bw-nopool.json" ;; esac
        hf "$key-add"  bw "bash $WORK/reset-$name.sh" "$WS $input CNI_COMMAND=ADD $plugin" "$1"
        in_node bw bash "$WORK/reset-$name.sh"; clean_bw
        hf "$key-del"  bw "bash $WORK/readd-$name.sh" "$WS $input CNI_COMMAND=DEL $plugin" "$1"
        in_node bw bash "$WORK/reset-$name.sh"; clean_bw
    done
}
topology_round() { # topology_round ROUND: topology-label against tuning
    hf tl-add       tl "$WS $IN/tl.json CNI_COMMAND=DEL $TL" "$WS $IN/tl.json CNI_COMMAND=ADD $TL" "$1"
    invoke tl DEL "$TL" "$IN/tl.json"; clean_tl
    hf tuning-add   tl "$WS $IN/tuning.json CNI_COMMAND=DEL $REFTUNE" "$WS $IN/tuning.json CNI_COMMAND=ADD $REFTUNE" "$1"
    invoke tl DEL "$REFTUNE" "$IN/tuning.json"; tuning_sysctl_reset; clean_tl
    hf tl-del       tl "$WS $IN/tl.json CNI_COMMAND=ADD $TL" "$WS $IN/tl.json CNI_COMMAND=DEL $TL" "$1"
    clean_tl
    hf tuning-del   tl "$WS $IN/tuning.json CNI_COMMAND=ADD $REFTUNE" "$WS $IN/tuning.json CNI_COMMAND=DEL $REFTUNE" "$1"
    tuning_sysctl_reset; clean_tl
}
kernel_round() { # kernel_round ROUND: the kernel's share, with ip/tc (their own start included)
    ip -n "$NODE" link add bwbench0 type ifb
    hf ifb-add      bw "ip link del bwbench0" "ip link add bwbench0 type ifb" "$1"
    ip -n "$NODE" link del bwbench0
    hf ifb-del      bw "ip link add bwbench0 type ifb" "ip link del bwbench0" "$1"
    hf tbf-del      bw "tc qdisc add dev ${ENI[bw]} root tbf rate 100mbit burst 312500 limit 625000" "tc qdisc del dev ${ENI[bw]} root" "$1"
    hf ingress-del  bw "tc qdisc add dev ${ENI[bw]} ingress" "tc qdisc del dev ${ENI[bw]} ingress" "$1"
    clean_bw
}
section1() {
    local round
    quiet "invocation benchmarks"
    log "invocation benchmarks: $RUNS runs each in $ROUNDS rounds (+ $WARMUP warmup per round), state reset by --prepare"
    for round in $(seq "$ROUNDS"); do
        log "  round $round of $ROUNDS"
        hf noop         bw "$NOOP" "$NOOP" "$round"
        hf floor        bw "$NOOP" "$WS $IN/bw.json CNI_COMMAND=ADD $NOOP" "$round"
        hf floor-dyn    bw "$NOOP" "$WS $IN/bw.json CNI_COMMAND=ADD $NOOP_DYN" "$round"
        bandwidth_round "$round"
        topology_round "$round"
        kernel_round "$round"
    done
    hf floor-again  bw "$NOOP" "$WS $IN/bw.json CNI_COMMAND=ADD $NOOP" last
    # What the topology-label ADD did, once, for the report.
    invoke tl ADD "$TL" "$IN/tl.json"
    fact tl_after "$(tl_state)"
    invoke tl DEL "$TL" "$IN/tl.json"
}

# --- 7. syscalls of one invocation (measured here, reported as section 7) -------------
# strace -f -c around one ADD and one DEL (state reset as for the timings):
# how many syscalls and which; -f follows the reference's Go threads.
syscalls() { # syscalls KEY RESET_SCRIPT INPUT PLUGIN VERB -> RAW/strace/KEY.txt
    in_node bw bash "$2" >/dev/null 2>&1 || true
    [ "$5" = DEL ] && in_node bw CNI_COMMAND=ADD "$4" < "$3" >/dev/null 2>&1
    in_node bw CNI_COMMAND="$5" strace -f -c -o "$RAW/strace/$1.txt" "$4" < "$3" >/dev/null 2>&1 ||
        { echo "bench: strace $1 failed" >&2; return 1; }
    in_node bw bash "$2" >/dev/null 2>&1 || true
}
section7() {
    log "syscalls: strace -f -c of one ADD and one DEL each"
    syscalls ours-add "$WORK/reset-ours.sh" "$IN/bw.json" "$BW" ADD
    syscalls ours-pod-add "$WORK/reset-pod.sh" "$IN/bw-pod.json" "$BW" ADD
    syscalls ref-add "$WORK/reset-ref.sh" "$IN/bw.json" "$REFBW" ADD
    syscalls ours-del "$WORK/reset-ours.sh" "$IN/bw.json" "$BW" DEL
    syscalls ref-del "$WORK/reset-ref.sh" "$IN/bw.json" "$REFBW" DEL
    clean_bw
}

# --- 2. peak RSS and size ------------------------------------------------------------
rss() { # rss KEY POD PLUGIN INPUT RESET_CMD... -> RAW/rss/KEY, one peak (KiB) per line
    local key=$1 pod=$2 plugin=$3 input=$4 i; shift 4
    : > "$RAW/rss/$key"
    for i in 1 2 3 4 5; do
        "$@" >/dev/null 2>&1 || true
        in_node "$pod" CNI_COMMAND=ADD /usr/bin/time -f %M -o "$WORK/rss.one" "$plugin" < "$input" > /dev/null
        cat "$WORK/rss.one" >> "$RAW/rss/$key"
    done
    "$@" >/dev/null 2>&1 || true
}
section2() {
    log "peak RSS (GNU time %M, 5 ADDs each, state reset between)"
    rss noop   bw "$NOOP"    "$IN/empty.json" true
    rss noop-dyn bw "$NOOP_DYN" "$IN/empty.json" true
    rss bw     bw "$BW"      "$IN/bw.json"    invoke bw DEL "$BW" "$IN/bw.json"
    rss ref-bw bw "$REFBW"   "$IN/bw.json"    in_node bw bash "$WORK/reset-ref.sh"
    rss tl     tl "$TL"      "$IN/tl.json"    invoke tl DEL "$TL" "$IN/tl.json"
    rss tuning tl "$REFTUNE" "$IN/tuning.json" invoke tl DEL "$REFTUNE" "$IN/tuning.json"
    fact size_bandwidth "$(stat -c %s "$BW")"; fact size_ref_bandwidth "$(stat -c %s "$REFBW")"
    fact size_topology_label "$(stat -c %s "$TL")"; fact size_tuning "$(stat -c %s "$REFTUNE")"
    fact file_bandwidth "$(file -b "$BW")"; fact file_ref_bandwidth "$(file -b "$REFBW")"
}

# --- 3-5. traffic ----------------------------------------------------------------------
# Pods wired by the whole chain (vpc-cni-sim -> topology-label -> bandwidth);
# for the reference runs the CNI path has the Go bandwidth under the same name.
WEB_SEQ=0
web_add() { # web_add CNI_PATH CAPS ; sets WEB_IP and WEB_CID
    WEB_SEQ=$((WEB_SEQ + 1)); WEB_CID="web-$WEB_SEQ"
    WEB_IP=$(cni add "$CONF" "$WEB_CID" "$PFX-web" "web-$WEB_SEQ" "$1" "$2" | pod_ip)
}
web_del() { cni del "$CONF" "$WEB_CID" "$PFX-web" "web-$WEB_SEQ" "$1" '{}' > /dev/null; }
caps() { # caps RATE_BITS BURST_BITS
    jq -nc --argjson r "$1" --argjson b "$2" '{bandwidth: {IngressRate: $r, IngressBurst: $b, EgressRate: $r, EgressBurst: $b}}'
}
PORT=5300
start_server() { # start_server NS IP OUT_JSON ; sets SPID
    PORT=$((PORT + 1))
    ip netns exec "$1" iperf3 -s -1 -J -p "$PORT" -B "$2" > "$3" 2>/dev/null &
    SPID=$!; SERVERS+=("$SPID")
    local i
    for i in $(seq 60); do ip netns exec "$1" ss -ltn | grep -q ":$PORT " && return 0; sleep 0.05; done
    echo "bench: iperf3 server did not start" >&2; return 1
}
measure() { # measure RECV_NS RECV_IP SEND_NS TAG -> RAW/iperf/TAG.json, the receiver's report
    local out="$RAW/iperf/$4.json"
    start_server "$1" "$2" "$out"
    timeout 60 ip netns exec "$3" iperf3 -c "$2" -p "$PORT" -t "$SECS" -J > "$WORK/iperf-client/$4.json" || true
    wait "$SPID" || true
    jq -e '.intervals | length > 0' "$out" > /dev/null 2>&1 || { echo "bench: iperf3 $4 gave no result" >&2; return 1; }
}
RATES=(10M:10000000 100M:100000000 1G:1000000000)
section3() {
    local impl rr name bits
    log "accuracy: ${SECS}s iperf3 runs, burst = 25 ms of the rate (same explicit config for both)"
    for impl in ours ref; do
        for rr in "${RATES[@]}"; do
            name=${rr%%:*}; bits=${rr#*:}
            web_add "$WORK/$impl" "$(caps "$bits" $((bits / 40)))"
            measure "$PFX-web" "$WEB_IP" "$PFX-client" "acc-$impl-$name-in"
            measure "$PFX-client" "$CLIENT_IP" "$PFX-web" "acc-$impl-$name-out"
            web_del "$WORK/$impl"
            log "  $impl $name: measured into and out of the pod"
        done
    done
}
section4() {
    local impl rr name bits tbf
    log "overshoot: containerd's burst ($SENTINEL bits), into the pod, ${SECS}s"
    for impl in ours ref; do
        for rr in 10M:10000000 1G:1000000000; do
            name=${rr%%:*}; bits=${rr#*:}
            web_add "$WORK/$impl" "$(caps "$bits" "$SENTINEL")"
            if [ "$name" = 10M ]; then
                tbf=$(tc -n "$NODE" qdisc show | grep -m1 -E '^qdisc tbf 1: dev eni' | sed -E 's/^qdisc tbf 1: dev [^ ]+ root refcnt [0-9]+ //' || true)
                fact "${impl}_tbf_10m" "${tbf:-?}"
            fi
            measure "$PFX-web" "$WEB_IP" "$PFX-client" "ovs-$impl-$name"
            web_del "$WORK/$impl"
            log "  $impl $name: measured"
        done
    done
}
LAT_RATE=10000000; LAT_SECS=13
latency() { # latency IMPL CFG CAPS -> RAW/latency/IMPL-CFG.idle, .loaded (ping's output)
    local tag="$1-$2" cpid
    web_add "$WORK/$1" "$3"
    ip netns exec "$PFX-client" ping -n -i 0.05 -c 20 "$WEB_IP" > "$RAW/latency/$tag.idle" 2>&1 || true
    start_server "$PFX-web" "$WEB_IP" "$WORK/iperf-client/lat-$tag.json"
    timeout 40 ip netns exec "$PFX-client" iperf3 -c "$WEB_IP" -p "$PORT" -t "$LAT_SECS" -J > /dev/null 2>&1 &
    cpid=$!
    sleep 2
    ip netns exec "$PFX-client" ping -n -i 0.02 -c 500 -w 20 "$WEB_IP" > "$RAW/latency/$tag.loaded" 2>&1 || true
    wait "$cpid" || true
    wait "$SPID" || true
    web_del "$WORK/$1"
    log "  $1 ($2): $(grep -c 'time=' "$RAW/latency/$tag.loaded" || true) pings answered under load"
}
section5() {
    local impl
    log "latency under load: ping into a pod at 10M and 100M while iperf3 saturates that direction"
    fact lat_secs "$LAT_SECS"
    for impl in ours ref; do
        latency "$impl" sentinel "$(caps "$LAT_RATE" "$SENTINEL")"
        latency "$impl" explicit "$(caps "$LAT_RATE" $((LAT_RATE / 40)))"
        latency "$impl" sentinel100 "$(caps 100000000 "$SENTINEL")"
    done
}
traffic() { # sections 3, 4 and 5, whichever are wanted, on one client pod
    ip netns add "$PFX-client"
    CLIENT_IP=$(cni add "$CONF" client "$PFX-client" client "$WORK/ours" '{}' | pod_ip)
    ip netns add "$PFX-web"
    quiet "traffic"
    if want_any 3 4; then
        log "traffic: unshaped baseline, ${SECS}s"
        web_add "$WORK/ours" '{}'
        measure "$PFX-web" "$WEB_IP" "$PFX-client" unshaped
        web_del "$WORK/ours"
    fi
    if want 3; then section3; fi
    if want 4; then section4; fi
    if want 5; then section5; fi
    cni del "$CONF" client "$PFX-client" client "$WORK/ours" '{}' > /dev/null
    ip netns del "$PFX-web"; ip netns del "$PFX-client"
}

# --- 8. queue floor sweep ----------------------------------------------------------------
# What the tbf queue floor (bandwidth/src/tbf.rs) rests on: goodput and RTT
# by queue size at 10 Mbit/s with a 25 ms burst, at MTU 1500 and 9001.
section8() {
    local rate=10000000 q1500="20000 25000 31250 62500 67050" q9001="45000 50000 55000 58597 62500 74551"
    quiet "queue sweep"
    log "queue floor sweep: 10 Mbit/s, MTU 1500 ($q1500) and 9001 ($q9001), 8 s each"
    fact sweep_rate "$rate"
    scripts/lib/queue-sweep.sh "$rate" 1500 "$q1500" 8 "$RAW/sweep"
    scripts/lib/queue-sweep.sh "$rate" 9001 "$q9001" 8 "$RAW/sweep"
}

# --- 9. traffic classes ----------------------------------------------------------------
section9() {
    local m
    quiet "traffic classes"
    log "traffic classes: ADD/DEL with and without classes ($RUNS runs each), then accuracy per class (3 peers, $SECS s, ifb and pod modes)"
    scripts/lib/classes-cost.sh "$BW" "$RUNS" "$RAW/classes-cost"
    for m in ifb pod; do
        scripts/lib/classes-accuracy.sh "$(dirname "$BW")" "$SECS" "$m" "$RAW/classes-accuracy/$m"
    done
}

# --- 11. churn in parallel ----------------------------------------------------------------
section11() {
    quiet "churn"
    log "churn: 16 and 64 attachments' ADDs, then DELs, started together (ours ifb/pod, reference)"
    scripts/lib/churn-waves.sh "$BW" "$RAW/churn" 16 64
}

# --- 10. the pod-mode backstop -----------------------------------------------------------
section10() {
    quiet "backstop"
    log "pod-mode backstop: ADD/DEL ($RUNS runs), the nf_tables share, TCP at 1G and line rate with and without it"
    scripts/lib/backstop-cost.sh "$BW" "$RUNS" "$SECS" "$RAW/backstop"
}

# --- 6. scale ---------------------------------------------------------------------------
leaks() { # leaks -> "ifbs links qdiscs states caches netns"
    local ifbs links qd st ca ns
    ifbs=$(ifbs_in_use)
    links=$(ip -n "$NODE" -o link show | grep -v ': lo:' | grep -vc '^[0-9]*: ifb-parked[0-9]*:' || true)
    qd=$(tc -n "$NODE" qdisc show | grep -cE '^qdisc (tbf|ingress|clsact)' || true)
    st=$(find "$STATE" -path "$STATE/mb-*" -prune -o -type f ! -name .lock ! -name .ifb-pool -print | wc -l)
    ca=$(find "$WORK/cache" -type f | wc -l)
    ns=$(ip netns list | awk '{ print $1 }' | grep -c "^$PFX-[sp][0-9]" || true)
    echo "$ifbs $links $qd $st $ca $ns"
}
# Our bandwidth ADD alone on the bw pod (and the reference's), with N other
# pods on the node: what the node's size adds to one ADD.
probe_at() { # probe_at N
    hf "bw-add-at$1" bw "bash $WORK/reset-ours.sh" "$WS $IN/bw.json CNI_COMMAND=ADD $BW" last
    in_node bw bash "$WORK/reset-ours.sh"
    hf "ref-bw-add-at$1" bw "bash $WORK/reset-ref.sh" "$WS $IN/bw.json CNI_COMMAND=ADD $REFBW" last
    in_node bw bash "$WORK/reset-ref.sh"
    tc -n "$NODE" qdisc show dev "${ENI[bw]}" | grep -q 'qdisc noqueue' ||
        { echo "bench: bw pod not clean after the probe at $1" >&2; exit 1; }
    # The kernel's share: the same ifb creation by ip, among N pods.
    ip -n "$NODE" link add bwprobe0 type ifb   # the first prepare deletes it
    hf "ifb-add-at$1" bw "ip link del bwprobe0" "ip link add bwprobe0 type ifb" last
    ip -n "$NODE" link del bwprobe0 2>/dev/null || true
}
cnirs_at() { # cnirs_at N: `cni-rs pods` (the operator's view) with N attachments
    local rows
    hf "cnirs-at$1" bw "$NOOP" "$CNIRS_CMD" last
    rows=$(in_node bw "$CNIRS" "${CNIRS_ARGS[@]}" | jq length)
    log "  cni-rs pods lists $rows rows with $1 attachments"
    [ "$1" != 1 ] || [ "$rows" = 1 ] || { echo "bench: cni-rs does not list the one pod" >&2; exit 1; }
}
scale() { # scale PHASE PARALLELISM -> RAW/scale/PHASE.add|del and the phase's facts
    local ph=$1 par=$2 i t0
    for i in $(seq "$PODS"); do ip netns add "$PFX-$ph$i"; done
    # EPOCHREALTIME around the whole phase: bench-report takes the difference.
    t0=$EPOCHREALTIME
    seq "$PODS" | ip netns exec "$NODE" xargs -P "$par" -n 1 bash scripts/lib/time-pod-verb.sh add "$ph" > "$RAW/scale/$ph.add"
    fact "scale_${ph}_add_span" "$t0 $EPOCHREALTIME"
    fact "scale_${ph}_ifbs_up" "$(ifbs_in_use)"
    if [ "$ph" = s ]; then
        cnirs_at "$PODS"
        probe_at "$PODS"
        cni del "$MAIN_CONF" bench-bw "$PFX-bw" bw "$WORK/ours" '{}' > /dev/null
        ip netns del "$PFX-bw"
    fi
    t0=$EPOCHREALTIME
    seq "$PODS" | ip netns exec "$NODE" xargs -P "$par" -n 1 bash scripts/lib/time-pod-verb.sh del "$ph" > "$RAW/scale/$ph.del"
    fact "scale_${ph}_del_span" "$t0 $EPOCHREALTIME"
    fact "scale_${ph}_after_del" "$(leaks)"
    fact "scale_${ph}_parked" "$(ifbs_parked)"
    for i in $(seq "$PODS"); do ip netns del "$PFX-$ph$i" 2>/dev/null || true; done
    fact "scale_${ph}_leaks" "$(leaks)"
    log "  $ph (x$par): leaks (ifb link qdisc state cache netns) $(leaks); parked ifbs $(ifbs_parked)"
}
section6() {
    export BENCH_REL="$REL" BENCH_CONF="$CONF" BENCH_PATH="$WORK/ours" BENCH_CACHE="$WORK/cache" \
        BENCH_PFX="$PFX" BENCH_ERR="$WORK/scale-errors.log"
    BENCH_CAPS=$(jq -nc --argjson b "$SENTINEL" '{bandwidth: {IngressRate: 100000000, IngressBurst: $b, EgressRate: 100000000, EgressBurst: $b},
        "io.kubernetes.cri.pod-annotations": {"kubernetes.io/ingress-bandwidth": "100M", "kubernetes.io/egress-bandwidth": "100M"}}')
    export BENCH_CAPS
    : > "$BENCH_ERR"
    quiet "scale"
    log "scale: $PODS pods sequential, then $PODS fresh pods 2-way parallel (vpc-cni-sim -> topology-label -> bandwidth 100M)"
    probe_at 0
    # cni-rs pods with 1 attachment here, and with PODS in the sequential phase.
    CNIRS_ARGS=(pods --json --bandwidth-state-dir "$STATE/bandwidth" --topology-state-dir "$STATE/topology-label")
    CNIRS_CMD="$CNIRS ${CNIRS_ARGS[*]}"
    ip netns add "$PFX-one"
    cni add "$CONF" one "$PFX-one" one "$WORK/ours" "$BENCH_CAPS" > /dev/null
    cnirs_at 1
    cni del "$CONF" one "$PFX-one" one "$WORK/ours" '{}' > /dev/null
    ip netns del "$PFX-one"
    scale s 1
    scale p 2
    fact scale_errors "$(wc -l < "$BENCH_ERR")"
}

# --- the run ------------------------------------------------------------------------------
# In the order that keeps the timing-sensitive sections away from the
# traffic runs' aftermath; the report puts them in section order.
if want_any 1 2 6 7; then setup_pods; fi
if want 1; then section1; fi
if want 7; then section7; fi
if want 2; then section2; fi
if want_any 1 2 6 7; then
    # The bw pod stays for the scale section's "ADD alone with N pods" probe.
    cni del "$MAIN_CONF" bench-tl "$PFX-tl" tl "$WORK/ours" '{}' > /dev/null
    ip netns del "$PFX-tl"
fi
if want_any 3 4 5; then traffic; fi
if want 8; then section8; fi
if want 9; then section9; fi
if want 11; then section11; fi
if want 10; then section10; fi
if want 6; then section6; fi

# --- the report: every statistic and verdict is tools/bench-report's -----------------------
fact total_secs "$SECONDS"
fact contended "$(printf '%s, ' "${CONTENDED[@]}" | sed 's/, $//')"
log "writing $OUT (raw measurements in $RAW)"
mkdir -p "$(dirname "$OUT")"
"$REPORT" "$RAW" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo
cat "$OUT"
echo
log "done in ${SECONDS}s: $OUT"
