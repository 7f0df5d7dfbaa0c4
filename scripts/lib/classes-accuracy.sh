#!/usr/bin/env bash
# Accuracy per traffic class with real traffic: a pod (MTU 9001) and three
# peers in their own namespaces (same zone, other zone, outside), wired
# through a "node" netns; the bandwidth plugin under test shapes the pod at
# 200 Mbit/s with cross-zone capped at 20 and same zone unshaped. Flows to
# (then from) the three peers run at the same time, iperf3, SECS seconds.
# Keeps the raw measurements for tools/bench-report (section 9 of
# BENCHMARKS.md), which computes steady (the median second after the
# first), the first second and counted / wire:
#   OUT_DIR/DIRECTION-I.json  the receiver's iperf3 report of flow I
#   OUT_DIR/counts            per flow: DIRECTION I CLASS EXPECTED_BITS
#       COUNTED_BEFORE COUNTED_AFTER RX_BEFORE RX_AFTER (the class's bytes
#       in `cni-rs pods --json`, the peer's eth0 rx bytes)
#
# usage: scripts/lib/classes-accuracy.sh BIN_DIR SECS MODE OUT_DIR
#   BIN_DIR holds bandwidth and cni-rs; MODE is the egressMode (ifb, pod)
set -euo pipefail
USAGE="usage: classes-accuracy.sh BIN_DIR SECS MODE OUT_DIR"
BIN=${1:?$USAGE}
SECS=${2:?$USAGE}
MODE=${3:?$USAGE}
OUT=${4:?$USAGE}
mkdir -p "$OUT"
: > "$OUT/counts"
POD_RATE=200000000 CROSS=20000000
P="cla$$"
WORK=$(mktemp -d)
NSS=("$P-node" "$P-pod" "$P-same" "$P-cross" "$P-out")
cleanup() {
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
for n in "${NSS[@]}"; do ip netns add "$n"; done
N="$P-node"
ip netns exec "$N" sysctl -qw net.ipv4.ip_forward=1
wire() { # wire NS HOSTDEV NET
    ip -n "$N" link add "$2" mtu 9001 type veth peer name eth0 mtu 9001 netns "$1"
    ip -n "$N" addr add "$3.1/24" dev "$2"; ip -n "$N" link set "$2" up
    ip -n "$1" addr add "$3.2/24" dev eth0; ip -n "$1" link set eth0 up
    ip -n "$1" link set lo up
    ip -n "$1" route add default via "$3.1"
}
wire "$P-pod" vhcla 10.77.0
wire "$P-same" vpsame 10.1.0
wire "$P-cross" vpcross 10.2.0
wire "$P-out" vpout 203.0.113
CONF=$(jq -cn --arg st "$WORK/state" --arg ns "/var/run/netns/$P-pod" --arg mode "$MODE" \
    --argjson pod "$POD_RATE" --argjson cross "$CROSS" '
  {cniVersion:"1.0.0", name:"cla", type:"bandwidth", stateDir:$st, egressMode:$mode,
   trafficClasses:{zone:"a", zoneCidrs:{a:["10.1.0.0/16"], b:["10.2.0.0/16"]},
                   sameZone:{shaped:false}, crossZone:{ingressRate:$cross, egressRate:$cross}, outside:{}},
   runtimeConfig:{bandwidth:{ingressRate:$pod, ingressBurst:4294967295, egressRate:$pod, egressBurst:4294967295}},
   prevResult:{cniVersion:"1.0.0", interfaces:[{name:"vhcla"},{name:"eth0",sandbox:$ns}],
               ips:[{interface:1,address:"10.77.0.2/24"}]}}')
cni() {
    printf '%s' "$CONF" | ip netns exec "$N" env CNI_COMMAND="$1" CNI_CONTAINERID=cla1 \
        CNI_NETNS="/var/run/netns/$P-pod" CNI_IFNAME=eth0 CNI_PATH=/nonexistent "$BIN/bandwidth" > /dev/null
}
cni ADD
classes() { # classes DIRECTION -> "sameZone crossZone outside" bytes
    ip netns exec "$N" "$BIN/cni-rs" pods --json --bandwidth-state-dir "$WORK/state" \
        --topology-state-dir /nonexistent-cla |
        jq -r --arg d "$1" '.[0][$d].classes | "\(.sameZone.bytes // 0) \(.crossZone.bytes // 0) \(.outside.bytes // 0)"'
}
rx() { ip -n "$1" -j -s link show eth0 | jq '.[0].stats64.rx.bytes'; }
PEERS=("$P-same" "$P-cross" "$P-out")
IPS=(10.1.0.2 10.2.0.2 203.0.113.2)
NAMES=(sameZone crossZone outside)
EXPECT=(0 "$CROSS" $((POD_RATE - CROSS)))
run_flows() { # run_flows egress|ingress
    local dir=$1 i pids=()
    for i in 0 1 2; do
        local port=$((5301 + i)) rns sns ip pace=()
        [ "$i" = 0 ] && pace=(-b 320M)
        if [ "$dir" = egress ]; then rns=${PEERS[$i]} sns="$P-pod" ip=${IPS[$i]}
        else rns="$P-pod" sns=${PEERS[$i]} ip=10.77.0.2; fi
        ip netns exec "$rns" iperf3 -s -1 -J -p "$port" -B "$ip" > "$OUT/$dir-$i.json" 2>/dev/null &
        pids+=($!)
        for _ in $(seq 50); do ip netns exec "$rns" ss -ltn | grep -q ":$port " && break; sleep 0.05; done
        ip netns exec "$sns" iperf3 -c "$ip" -p "$port" -t "$SECS" "${pace[@]}" > /dev/null 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
}
for dir in egress ingress; do
    read -r -a before <<<"$(classes "$dir")"
    rx0=(); for p in "${PEERS[@]}"; do rx0+=("$(rx "$p")"); done
    run_flows "$dir"
    read -r -a after <<<"$(classes "$dir")"
    for i in 0 1 2; do
        echo "$dir $i ${NAMES[$i]} ${EXPECT[$i]} ${before[i]} ${after[i]} ${rx0[i]} $(rx "${PEERS[$i]}")" >> "$OUT/counts"
    done
done
cni DEL
left=$(tc -n "$N" qdisc show | grep -cE 'htb|tbf|bfifo|ingress' || true)
[ "$left" = 0 ] || { echo "classes-accuracy: $left qdiscs left" >&2; exit 1; }
