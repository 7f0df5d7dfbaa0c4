#!/usr/bin/env bash
# Pod churn in parallel: N attachments' ADDs started together, then their
# DELs started together, as a runtime does when a node drains or a Job's
# pods finish at once. Ours (ifb and pod egress modes) and the reference
# (Debian's /usr/lib/cni/bandwidth, ifb) on the same pods, in the same run.
# Keeps the raw measurements for tools/bench-report (section 11 of
# BENCHMARKS.md: each wave's wall time, the median and p99 of its calls):
#   OUT_DIR/WHO-MODE-N-VERB.calls  one call's time per line (ns)
#   OUT_DIR/WHO-MODE-N-VERB.wall   the wave's start and end (ns)
#   OUT_DIR/facts                  what was left on the node, failed calls
#
# usage: scripts/lib/churn-waves.sh BANDWIDTH_BINARY OUT_DIR [N...]   (default N: 16 64)
set -euo pipefail
USAGE="usage: churn-waves.sh BANDWIDTH_BINARY OUT_DIR [N...]"
BW=${1:?$USAGE}
OUT=${2:?$USAGE}
shift 2
mkdir -p "$OUT"
SIZES=("$@")
[ "${#SIZES[@]}" -gt 0 ] || SIZES=(16 64)
REF=/usr/lib/cni/bandwidth
PFX="chb$$"
NODE="$PFX-node"
WORK=$(mktemp -d)
MAX=0
for n in "${SIZES[@]}"; do [ "$n" -gt "$MAX" ] && MAX=$n; done
cleanup() {
    for i in $(seq "$MAX"); do ip netns del "$PFX-p$i" 2>/dev/null || true; done
    ip netns del "$NODE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NODE"
for i in $(seq "$MAX"); do
    ip netns add "$PFX-p$i"
    ip -n "$NODE" link add "vh$i" type veth peer name eth0 netns "$PFX-p$i"
    ip -n "$NODE" link set "vh$i" up
    ip -n "$PFX-p$i" link set eth0 up
done

conf() { # conf I MODE -> the invocation's stdin
    jq -cn --arg i "$1" --arg mode "$2" --arg st "$WORK/state" --arg ns "/var/run/netns/$PFX-p$1" '
      {cniVersion:"1.0.0", name:"churn", type:"bandwidth", stateDir:$st, egressMode:$mode,
       runtimeConfig:{bandwidth:{ingressRate:100000000, ingressBurst:4294967295,
                                 egressRate:100000000, egressBurst:4294967295}},
       prevResult:{cniVersion:"1.0.0", interfaces:[{name:("vh" + $i)},{name:"eth0",sandbox:$ns}],
                   ips:[{interface:1,address:"10.80.0.2/24"}]}}'
}
one() { # one BIN VERB I MODE OUT: one timed call (ns) appended to OUT
    local t0 t1
    t0=$(date +%s%N)
    CNI_COMMAND=$2 CNI_CONTAINERID="churn$3" CNI_NETNS="/var/run/netns/$PFX-p$3" CNI_IFNAME=eth0 \
        CNI_PATH=/usr/lib/cni ip netns exec "$NODE" "$1" < "$WORK/conf-$3-$4.json" > /dev/null 2>> "$WORK/errors" \
        || echo "$2 $3 failed" >> "$WORK/errors"
    t1=$(date +%s%N)
    echo $((t1 - t0)) >> "$5"
}
wave() { # wave BIN VERB N MODE WHO: the calls' times and the wave's span
    local out="$OUT/$5-$4-$3-$2" t0 t1
    : > "$out.calls"
    t0=$(date +%s%N)
    for i in $(seq "$3"); do one "$1" "$2" "$i" "$4" "$out.calls" & done
    wait
    t1=$(date +%s%N)
    echo "$t0 $t1" > "$out.wall"
}
: > "$WORK/errors"
for n in "${SIZES[@]}"; do
    for run in "ours ifb $BW ifb" "ours pod $BW pod" "reference ifb $REF ifb"; do
        read -r who _ bin m <<< "$run"
        for i in $(seq "$n"); do conf "$i" "$m" > "$WORK/conf-$i-$m.json"; done
        wave "$bin" ADD "$n" "$m" "$who"
        wave "$bin" DEL "$n" "$m" "$who"
        # The reference's DEL leaves the host veth's qdiscs: clear them so
        # the next run starts from the same node.
        for i in $(seq "$n"); do
            tc -n "$NODE" qdisc del dev "vh$i" root 2>/dev/null || true
            tc -n "$NODE" qdisc del dev "vh$i" ingress 2>/dev/null || true
        done
    done
done
{
    # Our parked ifbs (ifbPool) outlive the pods by design: counted apart.
    echo "left_ifbs $(ip -n "$NODE" -o link show type ifb | grep -vc '^[0-9]*: ifb-parked[0-9]*:' || true)"
    echo "parked_ifbs $(ip -n "$NODE" -o link show type ifb | grep -c '^[0-9]*: ifb-parked[0-9]*:' || true)"
    echo "left_tables $(ip netns exec "$NODE" nft list tables 2>/dev/null | grep -c cni_bw_ || true)"
    echo "failed_calls $(grep -c failed "$WORK/errors" || true)"
    echo "stderr_lines $(wc -l < "$WORK/errors")"
} > "$OUT/facts"
