#!/usr/bin/env bash
# How small can a tbf queue be before TCP loses throughput? Measured, not
# assumed: run by scripts/bench.sh (and by hand), as root.
#
# A client netns sends TCP (iperf3) through a router netns to a server
# netns; the router's veth towards the server carries a root tbf at RATE
# with a burst of 25 ms, exactly as our plugin shapes traffic into a pod.
# For each MTU and each queue limit it keeps the raw measurements, for
# tools/bench-report to compute the goodput after the first second and the
# RTT percentiles (`scripts/bench.sh --sections 8` runs it and renders them):
#   OUT_DIR/MTU-LIMIT.json  iperf3's client report (-J)
#   OUT_DIR/MTU-LIMIT.ping  the output of the pings that shared the queue
#
# usage: queue-sweep.sh RATE_BITS "MTU..." "LIMIT_BYTES..." SECONDS OUT_DIR
set -euo pipefail
RATE=${1:?rate in bits/s}
MTUS=${2:?MTUs}
LIMITS=${3:?limits in bytes}
SECS=${4:?seconds per run}
OUT=${5:?directory for the raw measurements}
mkdir -p "$OUT"
P="qsw$$"
cleanup() {
    local ns
    for ns in "$P-c" "$P-r" "$P-s"; do ip netns del "$ns" 2>/dev/null || true; done
    [ -z "${SRV:-}" ] || kill "$SRV" 2>/dev/null || true
}
trap cleanup EXIT
for ns in c r s; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
ip link add "$P-cr" netns "$P-c" type veth peer name rc netns "$P-r"
ip link add "$P-sr" netns "$P-s" type veth peer name rs netns "$P-r"
ip -n "$P-c" link set "$P-cr" name eth0
ip -n "$P-s" link set "$P-sr" name eth0
ip -n "$P-c" addr add 10.250.1.2/24 dev eth0
ip -n "$P-r" addr add 10.250.1.1/24 dev rc
ip -n "$P-s" addr add 10.250.2.2/24 dev eth0
ip -n "$P-r" addr add 10.250.2.1/24 dev rs
for pair in c:eth0 s:eth0 r:rc r:rs; do ip -n "$P-${pair%%:*}" link set "${pair#*:}" up; done
ip -n "$P-c" route add default via 10.250.1.1
ip -n "$P-s" route add default via 10.250.2.1
ip netns exec "$P-r" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
ip netns exec "$P-s" iperf3 -s -D -1 >/dev/null 2>&1 || true
BURST=$((RATE * 25 / 8000))

for mtu in $MTUS; do
    for dev in "c eth0" "r rc" "r rs" "s eth0"; do
        ip -n "$P-${dev% *}" link set "${dev#* }" mtu "$mtu"
    done
    for limit in $LIMITS; do
        ip netns exec "$P-r" tc qdisc replace dev rs root handle 1: tbf rate "$RATE"bit burst "$BURST" limit "$limit"
        ip netns exec "$P-s" iperf3 -s -1 >/dev/null 2>&1 &
        SRV=$!
        sleep 0.3
        # Pings from second 2 on share the queue with the saturating flow.
        (sleep 2; exec ip netns exec "$P-c" ping -n -i 0.02 -c $(( (SECS - 3) * 50 )) 10.250.2.2) \
            > "$OUT/$mtu-$limit.ping" 2>&1 &
        PING=$!
        ip netns exec "$P-c" iperf3 -c 10.250.2.2 -t "$SECS" -J > "$OUT/$mtu-$limit.json" 2>/dev/null || true
        wait "$PING" 2>/dev/null || true
        wait "$SRV" 2>/dev/null || true
        SRV=""
    done
done
