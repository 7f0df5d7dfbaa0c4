#!/usr/bin/env bash
# How small can a tbf queue be before TCP loses throughput? Measured, not
# assumed: run by scripts/bench.sh (and by hand), as root.
#
# A client netns sends TCP (iperf3) through a router netns to a server
# netns; the router's veth towards the server carries a root tbf at RATE
# with a burst of 25 ms, exactly as our plugin shapes traffic into a pod.
# For each MTU and each queue limit: the steady-state goodput (median of
# the seconds after the first) and the p99 RTT of pings sharing the queue.
#
# usage: queue-sweep.sh RATE_BITS "MTU..." "LIMIT_BYTES..." SECONDS
# prints one line per run: mtu limit goodput_bits p50_ms p99_ms
set -euo pipefail
RATE=${1:?rate in bits/s}
MTUS=${2:?MTUs}
LIMITS=${3:?limits in bytes}
SECS=${4:-6}
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
            > "/tmp/$P.ping.raw" 2>&1 &
        PING=$!
        ip netns exec "$P-c" iperf3 -c 10.250.2.2 -t "$SECS" -J > "/tmp/$P.json" 2>/dev/null || true
        wait "$PING" 2>/dev/null || true
        wait "$SRV" 2>/dev/null || true
        SRV=""
        # Goodput after the first second (the bucket's burst): bytes over
        # time, which per-second medians blur at low rates.
        gp=$(jq '[.intervals[1:][].sum] | if length == 0 then 0
                 else (map(.bytes) | add) * 8 / (map(.seconds) | add) | floor end' "/tmp/$P.json")
        read -r p50 p99 < <(sed -n 's/.*time=\([0-9.]*\) ms/\1/p' "/tmp/$P.ping.raw" | sort -g |
            awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit }
                   i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1
                   print v[i50 < 1 ? 1 : i50], v[i99] }')
        echo "$mtu $limit $gp $p50 $p99" >> "/tmp/$P.tp"
    done
done
cat "/tmp/$P.tp"
rm -f "/tmp/$P".*
