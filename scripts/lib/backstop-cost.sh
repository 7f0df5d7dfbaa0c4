#!/usr/bin/env bash
# What the pod-mode backstop (an nf_tables netdev table per pod on the host
# veth's ingress) costs:
#   - per invocation: ADD and DEL medians in pod mode (hyperfine, each ADD
#     prepared by a DEL and each DEL by an ADD), and the share of the
#     nf_tables requests in them (strace -T: time inside the sendmsg/recvmsg
#     calls on the NETLINK_NETFILTER socket, against the whole verb's);
#   - per packet: TCP from the pod to a peer (MTU 9001, the pod's GSO on),
#     at a 1 Gbit/s limit and at line rate (a 100 Gbit/s limit that never
#     binds), with the backstop and with its table deleted by hand, runs
#     interleaved; iperf3's receiver throughput and the sender's CPU.
# Keeps the raw measurements for tools/bench-report (section 10 of
# BENCHMARKS.md):
#   OUT_DIR/hf-ADD.json, hf-DEL.json   hyperfine's exports
#   OUT_DIR/strace-VERB-K.txt          strace -f -T -yy of run K of a verb
#   OUT_DIR/close.txt                  strace -T -e trace=close of nft
#   OUT_DIR/iperf-LIMIT-with|without-ROUND.json   the pod's iperf3 report
#   OUT_DIR/facts                      what was left on the node
#
# usage: scripts/lib/backstop-cost.sh BANDWIDTH_BINARY RUNS SECONDS OUT_DIR
set -euo pipefail
USAGE="usage: backstop-cost.sh BANDWIDTH_BINARY RUNS SECONDS OUT_DIR"
BW=${1:?$USAGE}
RUNS=${2:?$USAGE}
SECS=${3:?$USAGE}
OUT=${4:?$USAGE}
mkdir -p "$OUT"
PFX="bsb$$"
NODE="$PFX-node" POD="$PFX-pod" PEER="$PFX-peer"
WORK=$(mktemp -d)
cleanup() {
    for ns in "$NODE" "$POD" "$PEER"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
for ns in "$NODE" "$POD" "$PEER"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NODE" link add vhbsb mtu 9001 type veth peer name eth0 mtu 9001 netns "$POD"
ip -n "$NODE" link add vpbsb mtu 9001 type veth peer name eth0 mtu 9001 netns "$PEER"
ip -n "$NODE" addr add 10.78.0.1/24 dev vhbsb; ip -n "$POD" addr add 10.78.0.2/24 dev eth0
ip -n "$NODE" addr add 10.79.0.1/24 dev vpbsb; ip -n "$PEER" addr add 10.79.0.2/24 dev eth0
for l in vhbsb vpbsb; do ip -n "$NODE" link set "$l" up; done
ip -n "$POD" link set eth0 up; ip -n "$PEER" link set eth0 up
ip -n "$POD" route add default via 10.78.0.1; ip -n "$PEER" route add default via 10.79.0.1
ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1
# Another pod's backstop on the node, as on any node with pods: without
# one, each ADD and DEL would switch the kernel's ingress static keys on
# and off (text patching and RCU waits that a busy node never pays).
if [ "${BSB_ALONE:-}" != 1 ]; then
    ip -n "$NODE" link add vhother type veth peer name vhother1
    ip netns exec "$NODE" nft add table netdev other_pod
    ip netns exec "$NODE" nft add chain netdev other_pod c "{ type filter hook ingress device vhother priority 0; }"
fi

conf() { # conf EGRESS_RATE
    jq -cn --argjson r "$1" --arg st "$WORK/state" --arg ns "/var/run/netns/$POD" '
      {cniVersion:"1.0.0", name:"bsb", type:"bandwidth", stateDir:$st, egressMode:"pod",
       runtimeConfig:{bandwidth:{egressRate:$r, egressBurst:4294967295}},
       prevResult:{cniVersion:"1.0.0", interfaces:[{name:"vhbsb"},{name:"eth0",sandbox:$ns}],
                   ips:[{interface:1,address:"10.78.0.2/24"}]}}'
}
verb_script() { # verb_script VERB CONF -> path
    printf '%s' "$2" > "$WORK/conf.json"
    cat > "$WORK/$1.sh" <<EOF
#!/bin/sh
CNI_COMMAND=$1 CNI_CONTAINERID=bsb1 CNI_NETNS=/var/run/netns/$POD CNI_IFNAME=eth0 CNI_PATH=/nonexistent \
  exec "$BW" < "$WORK/conf.json" > /dev/null
EOF
    chmod +x "$WORK/$1.sh"
    echo "$WORK/$1.sh"
}
c=$(conf 1000000000)
add=$(verb_script ADD "$c"); del=$(verb_script DEL "$c")
timed() { # timed VERB CMD PREPARE -> OUT_DIR/hf-VERB.json
    ip netns exec "$NODE" hyperfine -N --style none --warmup 5 --runs "$RUNS" \
        --export-json "$OUT/hf-$1.json" --prepare "$3" "$2" > "$WORK/hf.log" 2>&1 || { cat "$WORK/hf.log" >&2; exit 1; }
}
timed ADD "$add" "$del"
timed DEL "$del" "$add"
ip netns exec "$NODE" "$del"
# Where an invocation's time goes: strace -T over 20 runs of each verb
# (strace -yy names the NETLINK_NETFILTER socket of each call).
traced() { # traced VERB SCRIPT PREPARE
    local k
    for k in $(seq 20); do
        ip netns exec "$NODE" "$3" >/dev/null 2>&1 || true
        ip netns exec "$NODE" strace -f -T -yy -o "$OUT/strace-$1-$k.txt" "$2" || true
    done
}
traced ADD "$add" "$del"
ip netns exec "$NODE" "$add" >/dev/null
traced DEL "$del" "$add"
# The rest of DEL's cost is not a syscall strace can time: the socket's
# release at exit waits for nf_tables' destroy work (an RCU grace period)
# after a deletion. Timed here as close() of the same socket, by the nft
# CLI deleting a table of the same shape.
ip -n "$NODE" link add vhclose type veth peer name vhclose1
ip netns exec "$NODE" nft add table netdev close_probe
ip netns exec "$NODE" nft add chain netdev close_probe c "{ type filter hook ingress device vhclose priority 0; }"
ip netns exec "$NODE" strace -T -e trace=close -o "$OUT/close.txt" nft delete table netdev close_probe

# Per packet.
iperf_once() { # iperf_once OUT_JSON
    ip netns exec "$PEER" iperf3 -s -1 -p 5299 -B 10.79.0.2 > /dev/null 2>&1 &
    local srv=$!
    for _ in $(seq 50); do ip netns exec "$PEER" ss -ltn | grep -q ':5299 ' && break; sleep 0.05; done
    ip netns exec "$POD" iperf3 -c 10.79.0.2 -p 5299 -t "$SECS" -J > "$1"
    wait "$srv" || true
}
for rate in 1000000000 100000000000; do
    c=$(conf "$rate")
    verb_script ADD "$c" > /dev/null; verb_script DEL "$c" > /dev/null
    for round in 1 2 3; do
        for with in with without; do
            ip netns exec "$NODE" "$WORK/ADD.sh"
            if [ "$with" = without ]; then
                t=$(ip netns exec "$NODE" nft list tables | awk '/cni_bw_/ { print $3 }')
                ip netns exec "$NODE" nft delete table netdev "$t"
            fi
            iperf_once "$OUT/iperf-$rate-$with-$round.json"
            ip netns exec "$NODE" "$WORK/DEL.sh"
        done
    done
done
left=$(ip netns exec "$NODE" nft list tables | grep -c cni_bw_ || true)
printf 'left_tables %s\nsecs %s\n' "$left" "$SECS" > "$OUT/facts"
