#!/usr/bin/env bash
# The main job in one command: the EKS "fair bandwidth" walkthrough on one
# machine. Simulated pods are wired by `vpc-cni-sim` (an aws-cni look-alike)
# and our plugins, chained from conflist-examples/single-node-sim.conflist
# by `cni-run` (the same runtime path the tests use), inside a private
# "node" network namespace: the host's own interfaces are never touched.
#
#   1. iperf3 into an unshaped pod, per second;
#   2. the same pod shaped at --rate by our bandwidth plugin with the
#      runtime's "unlimited" burst (containerd's u32::MAX), both directions;
#   3. the same with the reference Go bandwidth plugin (Debian's
#      containernetworking-plugins), showing the first-second burst;
#   4. a pod without annotations in a namespace whose policy gives it a
#      default rate (namespacePolicy): fair by default;
#   5. tc/ip views of the shaped pod, a per-second table, an SVG chart;
#   6. tears everything down, also on Ctrl-C or failure.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# The cross-AZ walkthrough is its own script (scripts/lib/demo-zones.sh).
if [ "${1:-}" = "--zones" ]; then
    exec "$ROOT/scripts/lib/demo-zones.sh" "$@"
fi

RATE=1G
SECS=10
KEEP=0
usage() {
    cat <<USAGE
usage: scripts/demo.sh (as root) [--rate RATE] [--seconds N] [--keep] [--help]
       scripts/demo.sh --zones [options]   the cross-AZ walkthrough (--zones --help)
  --rate RATE    limit for the shaped pod, as a Kubernetes quantity (default 1G; e.g. 500M, 100M, 10Mi)
  --seconds N    length of each iperf3 run (default 10)
  --keep         leave the node and pods up to explore (prints how to remove them)
USAGE
}
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --seconds) SECS=${2:?--seconds needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 3 && "$SECS" -le 120 ]] || { echo "--seconds must be 3..120" >&2; exit 2; }

RATE_BITS=$(scripts/lib/quantity.sh "$RATE") || { echo "invalid rate $RATE" >&2; exit 2; }
RATE_MBIT=$(awk -v b="$RATE_BITS" 'BEGIN { printf "%.1f", b / 1e6 }')
# The "batch" namespace's policy default: half the demo rate.
DEFAULT_BITS=$((RATE_BITS / 2))
DEFAULT_MBIT=$(awk -v b="$DEFAULT_BITS" 'BEGIN { printf "%.1f", b / 1e6 }')

# --- preflight: say clearly what is missing --------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root (it creates network namespaces, veths and qdiscs): run it as root" >&2
    exit 1
fi
missing=()
for pair in ip:iproute2 tc:iproute2 ss:iproute2 iperf3:iperf3 jq:jq awk:gawk; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ -x /usr/lib/cni/bandwidth ] || missing+=(containernetworking-plugins)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        echo "demo: could not install ${missing[*]} (apt-get failed)" >&2
    fi
fi
for c in ip tc ss iperf3 jq; do
    command -v "$c" >/dev/null || { echo "demo: missing $c and could not install it" >&2; exit 1; }
done
PROBE="cnidemo-probe-$$"
if ! ip netns add "$PROBE" 2>/dev/null; then
    echo "demo: this machine cannot create network namespaces (ip netns add failed)" >&2
    exit 1
fi
ip netns del "$PROBE"

echo "==> building release binaries"
# One cargo invocation: on a fresh clone the dependencies dominate the build.
cargo build --release --quiet -p bandwidth -p topology-label -p cni-rs -p vpc-cni-sim -p integration-tests --bins
REL="$ROOT/target/release"

# --- the simulated node ----------------------------------------------------
WORK=$(mktemp -d /tmp/cni-demo.XXXXXX)
NODE="cnidemo-node-$$"
CLIENT_NS="cnidemo-client-$$"
WEB_NS="cnidemo-web-$$"
ADDED=()   # "container-id cni-path" of pods to DEL on teardown

mkdir -p "$WORK/ours" "$WORK/ref" "$WORK/cache" "$WORK/state"
for b in bandwidth topology-label vpc-cni-sim; do ln -s "$REL/$b" "$WORK/ours/$b"; done
for b in topology-label vpc-cni-sim; do ln -s "$REL/$b" "$WORK/ref/$b"; done
HAVE_REF=0
if [ -x /usr/lib/cni/bandwidth ]; then ln -s /usr/lib/cni/bandwidth "$WORK/ref/bandwidth"; HAVE_REF=1; fi
CONF="$WORK/10-aws.conflist"
jq --arg st "$WORK/state" --argjson d "$DEFAULT_BITS" '.plugins |= map(.stateDir = ($st + "/" + .type)
      | if .type == "bandwidth" then .namespacePolicy = {batch: {default: {ingressRate: $d, egressRate: $d}}} else . end)' \
    conflist-examples/single-node-sim.conflist > "$CONF"

cni() { # cni VERB CONTAINER_ID NETNS POD CNI_PATH CAP_ARGS [NAMESPACE]
    ip netns exec "$NODE" "$REL/cni-run" "$1" --conflist "$CONF" --container-id "$2" \
        --netns "/var/run/netns/$3" --ifname eth0 --cni-path "$5" --cache-dir "$WORK/cache" \
        --args "IgnoreUnknown=1;K8S_POD_NAMESPACE=${7:-demo};K8S_POD_NAME=$4;K8S_POD_UID=uid-$4;K8S_POD_INFRA_CONTAINER_ID=$2" \
        --cap-args "$6"
}

teardown() {
    local rc=$?
    trap - EXIT INT TERM
    # The iperf3 server of an interrupted measurement: ours, by pid.
    if [ -s "$WORK/iperf3-server.pid" ]; then
        kill "$(cat "$WORK/iperf3-server.pid")" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ] && [ "$rc" = 0 ]; then
        echo
        echo "--keep: left up. Explore with: ip netns exec $NODE tc qdisc show; ip -n $NODE link"
        echo "remove with: ip netns del $NODE; ip netns del $CLIENT_NS; ip netns del $WEB_NS; rm -rf $WORK"
        return
    fi
    for entry in "${ADDED[@]}"; do
        # shellcheck disable=SC2086 # entries are space-separated fields
        set -- $entry
        cni del "$1" "$2" "$3" "$3" "$4" '{}' >/dev/null 2>&1 || true
    done
    ip netns del "$CLIENT_NS" 2>/dev/null || true
    ip netns del "$WEB_NS" 2>/dev/null || true
    ip netns del "$NODE" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap teardown EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

ip netns add "$NODE"
ip netns add "$CLIENT_NS"
ip netns add "$WEB_NS"
ip -n "$NODE" link set lo up
ip -n "$NODE" addr add 10.99.255.254/32 dev lo
ip netns exec "$NODE" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'

add_pod() { # add_pod ID NETNS POD CNI_PATH CAP_ARGS [NAMESPACE] -> prints pod IP
    local out
    out=$(cni add "$1" "$2" "$3" "$4" "$5" "${6:-demo}")
    ADDED+=("$1 $2 $4")
    jq -r '.ips[0].address | split("/")[0]' <<<"$out"
}
del_pod() { # del_pod ID NETNS CNI_PATH
    cni del "$1" "$2" "$2" "$3" '{}' >/dev/null
    local keep=() e
    for e in "${ADDED[@]}"; do [ "${e%% *}" = "$1" ] || keep+=("$e"); done
    ADDED=("${keep[@]}")
}

PORT=5201
measure() { # measure RECEIVER_NS RECEIVER_IP SENDER_NS OUT_JSON [SECONDS] : receiver-side per-second Mbit/s
    local secs=${5:-$SECS}
    PORT=$((PORT + 1))
    ip netns exec "$1" iperf3 -s -1 -J -p "$PORT" -B "$2" > "$4" 2>/dev/null &
    local spid=$! i
    # measure runs in $(…): the pid reaches teardown through a file.
    echo "$spid" > "$WORK/iperf3-server.pid"
    for i in $(seq 50); do ip netns exec "$1" ss -ltn | grep -q ":$PORT " && break; sleep 0.05; done
    ip netns exec "$3" iperf3 -c "$2" -p "$PORT" -t "$secs" -J > /dev/null
    wait "$spid"
    : > "$WORK/iperf3-server.pid"
    jq -r '[.intervals[] | select(.sum.seconds > 0.5) | (.sum.bits_per_second / 1e6)] | .[] | (. * 10 | round / 10)' "$4"
}

CAPS=$(jq -nc --argjson r "$RATE_BITS" '{
  bandwidth: {IngressRate: $r, IngressBurst: 4294967295, EgressRate: $r, EgressBurst: 4294967295},
  "io.kubernetes.cri.pod-annotations": {"kubernetes.io/ingress-bandwidth": "'"$RATE"'", "kubernetes.io/egress-bandwidth": "'"$RATE"'"}
}')

echo "==> node $NODE: pods 'client' and 'web' wired by vpc-cni-sim (aws-cni look-alike)"
CLIENT_IP=$(add_pod demo-client "$CLIENT_NS" client "$WORK/ours" '{}')

echo "==> run 1: web without limits, iperf3 client -> web for ${SECS}s"
WEB_IP=$(add_pod demo-web-1 "$WEB_NS" web "$WORK/ours" '{}')
mapfile -t UNSHAPED < <(measure "$WEB_NS" "$WEB_IP" "$CLIENT_NS" "$WORK/run1.json")
del_pod demo-web-1 "$WEB_NS" "$WORK/ours"

echo "==> run 2: web annotated ingress/egress-bandwidth=$RATE, our bandwidth plugin (runtime burst 4294967295 bits)"
WEB_IP=$(add_pod demo-web-2 "$WEB_NS" web "$WORK/ours" "$CAPS")
echo
echo "--- tc qdisc show (node) ---"
ip netns exec "$NODE" tc qdisc show | grep -E "eni|bwp" || true
echo "--- ip link (node): who is behind each veth (aliases from topology-label) ---"
ip -n "$NODE" -j link show | jq -r '.[] | select(.ifname | test("^(eni|bwp)")) | "\(.ifname)  mtu \(.mtu)  qdisc \(.qdisc)  alias: \(.ifalias // "-")"'
echo
mapfile -t OURS < <(measure "$WEB_NS" "$WEB_IP" "$CLIENT_NS" "$WORK/run2.json")
EGRESS_SECS=$(( SECS > 10 ? SECS / 2 : 5 ))
echo "==> run 2b: web -> client (egress of the shaped pod) for ${EGRESS_SECS}s"
mapfile -t OURS_EGRESS < <(measure "$CLIENT_NS" "$CLIENT_IP" "$WEB_NS" "$WORK/run2b.json" "$EGRESS_SECS")
echo "==> cni-rs pods: the operator's view after the shaped runs (IN = into the pod)"
ip netns exec "$NODE" "$REL/cni-rs" pods --bandwidth-state-dir "$WORK/state/bandwidth" \
    --topology-state-dir "$WORK/state/topology-label" | sed 's/^/    /'
del_pod demo-web-2 "$WEB_NS" "$WORK/ours"

REF_RUN=()
if [ "$HAVE_REF" = 1 ]; then
    echo "==> run 3: same annotations, reference Go bandwidth plugin ($(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo installed))"
    WEB_IP=$(add_pod demo-web-3 "$WEB_NS" web "$WORK/ref" "$CAPS")
    ip netns exec "$NODE" tc qdisc show | grep -E "tbf" | sed 's/^/    reference: /' || true
    mapfile -t REF_RUN < <(measure "$WEB_NS" "$WEB_IP" "$CLIENT_NS" "$WORK/run3.json")
    del_pod demo-web-3 "$WEB_NS" "$WORK/ref"
else
    echo "==> run 3 skipped: the reference plugin (containernetworking-plugins) is not installed"
fi

echo "==> run 4: pod 'batch' in namespace 'batch', no annotations; the namespace policy's default is ${DEFAULT_MBIT} Mbit/s"
BATCH_IP=$(add_pod demo-batch "$WEB_NS" batch "$WORK/ours" '{}' batch)
ip netns exec "$NODE" tc qdisc show | grep -E "tbf" | sed 's/^/    batch: /' || true
mapfile -t BATCH < <(measure "$WEB_NS" "$BATCH_IP" "$CLIENT_NS" "$WORK/run4.json" 5)
del_pod demo-batch "$WEB_NS" "$WORK/ours"

# --- report ----------------------------------------------------------------
TSV="$WORK/runs.tsv"
printf 'second\tunshaped\tours (%s)\treference (%s)\tours, egress\n' "$RATE" "$RATE" > "$TSV"
for i in $(seq 0 $((SECS - 1))); do
    printf '%d\t%s\t%s\t%s\t%s\n' $((i + 1)) "${UNSHAPED[$i]:--}" "${OURS[$i]:--}" "${REF_RUN[$i]:--}" "${OURS_EGRESS[$i]:--}" >> "$TSV"
done
echo
echo "Throughput into the web pod, Mbit/s per second at the receiver (limit $RATE_MBIT Mbit/s):"
column -t -s $'\t' "$TSV" 2>/dev/null || cat "$TSV"
summary() { # name values... (against the demo's rate; LIMIT_MBIT overrides)
    local name=$1; shift
    [ $# -gt 0 ] || return 0
    awk -v n="$name" -v r="${LIMIT_MBIT:-$RATE_MBIT}" 'BEGIN { for (i = 2; i < ARGC; i++) { s += ARGV[i]; c++ }; f = ARGV[2];
        printf "  %-22s first second %8.1f Mbit/s (%.2fx limit)   average %8.1f Mbit/s (%.2fx)\n", n, f, f / r, s / c, s / c / r }' x "$@"
}
echo
summary "unshaped" "${UNSHAPED[@]}"
summary "ours" "${OURS[@]}"
summary "ours, egress" "${OURS_EGRESS[@]}"
[ "${#REF_RUN[@]}" -gt 0 ] && summary "reference" "${REF_RUN[@]}"
LIMIT_MBIT=$DEFAULT_MBIT summary "batch, no annotations" "${BATCH[@]}"
echo "  (batch: limit = namespace default ${DEFAULT_MBIT} Mbit/s, from namespacePolicy)"
echo "  (tbf meters bytes on the wire; iperf3 shows TCP payload, 0.7% less at MTU 9001)"

CHART="${DEMO_CHART:-$ROOT/target/demo-throughput.svg}"
mkdir -p "$(dirname "$CHART")"
# Cap the axis at the shaped runs' range, so the unshaped line (often 10x
# higher) does not flatten the first-second difference the chart is about.
YMAX=$(cut -f3,4 "$TSV" | tail -n +2 | tr '\t' '\n' | grep -v '^-$' | sort -g | tail -1)
YMAX=$(awk -v m="${YMAX:-0}" -v r="$RATE_MBIT" 'BEGIN { x = (m > r ? m : r) * 1.25; printf "%.0f", x }')
# Columns reordered so our line is drawn last, on top of the reference's.
awk -F '\t' -v OFS='\t' '{ print $1, $2, $4, $3 }' "$TSV" | awk -v rate="$RATE_MBIT" -v ymax="$YMAX" \
    -v colors="#888888,#d62728,#1f77b4" \
    -v title="iperf3 into a pod annotated ${RATE} (vpc-cni-sim + bandwidth)" -f scripts/lib/throughput-svg.awk > "$CHART"
echo
echo "chart: $CHART"
