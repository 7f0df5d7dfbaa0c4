#!/usr/bin/env bash
# Pod churn in parallel: N attachments' ADDs started together, then their
# DELs started together, as a runtime does when a node drains or a Job's
# pods finish at once. Ours (ifb and pod egress modes) and the reference
# (Debian's /usr/lib/cni/bandwidth, ifb) on the same pods, in the same run.
# Prints, per plugin, mode and N: the wall time of the whole wave and the
# median and p99 (nearest rank) of one call's time inside the wave.
#
# usage: scripts/lib/churn-bench.sh BANDWIDTH_BINARY [N...]   (default N: 16 64)
set -euo pipefail
BW=${1:?usage: churn-bench.sh BANDWIDTH_BINARY [N...]}
shift
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
wave() { # wave BIN VERB N MODE -> "wall_ms median_ms p99_ms"
    local out="$WORK/calls" t0 t1
    : > "$out"
    t0=$(date +%s%N)
    for i in $(seq "$3"); do one "$1" "$2" "$i" "$4" "$out" & done
    wait
    t1=$(date +%s%N)
    sort -n "$out" | awk -v wall=$((t1 - t0)) '{ v[NR] = $1 } END {
        m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.99 + 0.999)]; if (p == "") p = v[NR]
        printf "%.1f %.1f %.1f\n", wall / 1e6, m / 1e6, p / 1e6 }'
}
printf '%-34s %5s %12s %12s %10s %12s %12s %10s\n' "plugin, egress" N "ADD wall ms" "ADD med ms" "ADD p99" "DEL wall ms" "DEL med ms" "DEL p99"
for n in "${SIZES[@]}"; do
    for run in "ours ifb $BW ifb" "ours pod $BW pod" "reference ifb $REF ifb"; do
        read -r who mode bin m <<< "$run"
        for i in $(seq "$n"); do conf "$i" "$m" > "$WORK/conf-$i-$m.json"; done
        read -r aw am ap < <(wave "$bin" ADD "$n" "$m")
        read -r dw dm dp < <(wave "$bin" DEL "$n" "$m")
        # The reference's DEL leaves the host veth's qdiscs: clear them so
        # the next run starts from the same node.
        for i in $(seq "$n"); do
            tc -n "$NODE" qdisc del dev "vh$i" root 2>/dev/null || true
            tc -n "$NODE" qdisc del dev "vh$i" ingress 2>/dev/null || true
        done
        printf '%-34s %5s %12s %12s %10s %12s %12s %10s\n' "$who, $mode" "$n" "$aw" "$am" "$ap" "$dw" "$dm" "$dp"
    done
done
left=$(ip -n "$NODE" -o link show type ifb | wc -l)
tables=$(ip netns exec "$NODE" nft list tables 2>/dev/null | grep -c cni_bw_ || true)
failed=$(wc -l < "$WORK/errors" 2>/dev/null || echo 0)
echo "left on the node: $left ifbs, $tables nft tables; failed calls: $(grep -c failed "$WORK/errors" 2>/dev/null || echo 0) ($failed lines on stderr)"
