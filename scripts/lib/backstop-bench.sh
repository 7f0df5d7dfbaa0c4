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
#
# usage: scripts/lib/backstop-bench.sh BANDWIDTH_BINARY [RUNS] [SECONDS]
set -euo pipefail
BW=${1:?usage: backstop-bench.sh BANDWIDTH_BINARY [RUNS] [SECONDS]}
RUNS=${2:-60}
SECS=${3:-5}
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
median() { # median CMD PREPARE
    ip netns exec "$NODE" hyperfine -N --style none --warmup 5 --runs "$RUNS" \
        --export-json "$WORK/hf.json" --prepare "$2" "$1" > "$WORK/hf.log" 2>&1 || { cat "$WORK/hf.log" >&2; exit 1; }
    jq -r '[.results[0].times[]] | sort | .[length/2|floor] * 1000' "$WORK/hf.json"
}
add_ms=$(median "$add" "$del")
del_ms=$(median "$del" "$add")
ip netns exec "$NODE" "$del"
# Where an invocation's time goes: strace -T over 20 runs of each verb,
# summing the syscalls on the NETLINK_NETFILTER socket (strace -yy names it).
share() { # share SCRIPT PREPARE -> "nft_ms total_ms nft_calls"
    local nft=0 total=0 calls=0
    for _ in $(seq 20); do
        ip netns exec "$NODE" "$2" >/dev/null 2>&1 || true
        ip netns exec "$NODE" strace -f -T -yy -o "$WORK/st.txt" "$1" || true
        read -r n t k < <(awk '
            /NETLINK:\[NETFILTER/ && /<[0-9.]+>$/ { match($0, /<[0-9.]+>$/); n += substr($0, RSTART + 1, RLENGTH - 2); k++ }
            /<[0-9.]+>$/ { match($0, /<[0-9.]+>$/); t += substr($0, RSTART + 1, RLENGTH - 2) }
            END { printf "%f %f %d\n", n * 1000, t * 1000, k }' "$WORK/st.txt")
        nft=$(awk -v a="$nft" -v b="$n" 'BEGIN { print a + b }')
        total=$(awk -v a="$total" -v b="$t" 'BEGIN { print a + b }')
        calls=$k
    done
    awk -v n="$nft" -v t="$total" -v k="$calls" 'BEGIN { printf "%.3f %.3f %d\n", n / 20, t / 20, k }'
}
read -r add_nft add_sys add_calls < <(share "$add" "$del")
ip netns exec "$NODE" "$add" >/dev/null
read -r del_nft del_sys del_calls < <(share "$del" "$add")
printf 'invocation (pod mode, 1G, with the backstop): ADD %.3f ms, DEL %.3f ms (hyperfine medians, %s runs)\n' "$add_ms" "$del_ms" "$RUNS"
printf 'nf_tables requests (strace -T, mean of 20): ADD %s ms in %s calls of %s ms in all syscalls; DEL %s ms in %s calls of %s ms\n' \
    "$add_nft" "$add_calls" "$add_sys" "$del_nft" "$del_calls" "$del_sys"
# The rest of DEL's cost is not a syscall strace can time: the socket's
# release at exit waits for nf_tables' destroy work (an RCU grace period)
# after a deletion. Timed here as close() of the same socket, by the nft
# CLI deleting a table of the same shape.
ip -n "$NODE" link add vhclose type veth peer name vhclose1
ip netns exec "$NODE" nft add table netdev close_probe
ip netns exec "$NODE" nft add chain netdev close_probe c "{ type filter hook ingress device vhclose priority 0; }"
ip netns exec "$NODE" strace -T -e trace=close -o "$WORK/close.txt" nft delete table netdev close_probe
release_ms=$(awk '/NETLINK|close\([0-9]+\)/ && /<[0-9.]+>$/ { match($0, /<[0-9.]+>$/); v = substr($0, RSTART + 1, RLENGTH - 2) * 1000; if (v > m) m = v } END { printf "%.3f", m }' "$WORK/close.txt")
printf 'release of an nf_tables socket after a deletion (slowest close() of nft delete table): %s ms\n' "$release_ms"

# Per packet.
iperf_once() { # iperf_once -> "receiver_bits_per_second sender_cpu_percent"
    ip netns exec "$PEER" iperf3 -s -1 -p 5299 -B 10.79.0.2 > /dev/null 2>&1 &
    local srv=$!
    for _ in $(seq 50); do ip netns exec "$PEER" ss -ltn | grep -q ':5299 ' && break; sleep 0.05; done
    ip netns exec "$POD" iperf3 -c 10.79.0.2 -p 5299 -t "$SECS" -J > "$WORK/ip.json"
    wait "$srv" || true
    jq -r '"\(.end.sum_received.bits_per_second) \(.end.cpu_utilization_percent.host_total)"' "$WORK/ip.json"
}
printf '%-40s %14s %14s %10s\n' "limit, backstop" "receiver Mb/s" "sender CPU %" "runs"
for rate in 1000000000 100000000000; do
    c=$(conf "$rate")
    verb_script ADD "$c" > /dev/null; verb_script DEL "$c" > /dev/null
    declare -A sum_bps=() sum_cpu=()
    for round in 1 2 3; do
        for with in yes no; do
            ip netns exec "$NODE" "$WORK/ADD.sh"
            if [ "$with" = no ]; then
                t=$(ip netns exec "$NODE" nft list tables | awk '/cni_bw_/ { print $3 }')
                ip netns exec "$NODE" nft delete table netdev "$t"
            fi
            read -r bps cpu < <(iperf_once)
            sum_bps[$with]=$(awk -v a="${sum_bps[$with]:-0}" -v b="$bps" 'BEGIN { print a + b }')
            sum_cpu[$with]=$(awk -v a="${sum_cpu[$with]:-0}" -v b="$cpu" 'BEGIN { print a + b }')
            ip netns exec "$NODE" "$WORK/DEL.sh"
            : "$round"
        done
    done
    for with in yes no; do
        awk -v r="$rate" -v w="$with" -v b="${sum_bps[$with]}" -v c="${sum_cpu[$with]}" \
            'BEGIN { printf "%-40s %14.1f %14.1f %10d\n", sprintf("%s, %s", (r >= 1e11 ? "100G (line rate)" : "1G"), (w == "yes" ? "with" : "without")), b / 3 / 1e6, c / 3, 3 }'
    done
    unset sum_bps sum_cpu
done
left=$(ip netns exec "$NODE" nft list tables | grep -c cni_bw_ || true)
echo "left on the node: $left nft tables"
