#!/usr/bin/env bash
# What traffic classes cost an invocation: ADD and DEL of one pod without
# classes (tbf), with zone classes (htb trees: 3 classes, 3 CIDRs), and a
# pod without a limit on a node with zone classes (counting only), in ifb
# and pod egress modes. Same binary, same pod, same run; hyperfine runs in
# 3 rounds through every configuration (each ADD prepared by a DEL and each
# DEL by an ADD). Keeps the raw measurements for tools/bench-report
# (section 9 of BENCHMARKS.md):
#   OUT_DIR/MODE-VARIANT-VERB.json  hyperfine's export, the rounds' times pooled
#   OUT_DIR/facts                   what was left on the node
#
# usage: scripts/lib/classes-cost.sh BANDWIDTH_BINARY RUNS OUT_DIR
set -euo pipefail
USAGE="usage: classes-cost.sh BANDWIDTH_BINARY RUNS OUT_DIR"
BW=${1:?$USAGE}
RUNS=${2:?$USAGE}
OUT=${3:?$USAGE}
mkdir -p "$OUT"
PFX="clb$$"
NODE="$PFX-node" POD="$PFX-pod"
WORK=$(mktemp -d)
cleanup() {
    ip netns del "$NODE" 2>/dev/null || true
    ip netns del "$POD" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${CLB_DEBUG:-}" ] && trap "echo work in \$WORK" EXIT
ip netns add "$NODE"; ip netns add "$POD"
ip -n "$NODE" link add vhclb type veth peer name eth0 netns "$POD"
ip -n "$NODE" link set vhclb up; ip -n "$POD" link set eth0 up
ip -n "$NODE" addr add 10.77.0.1/24 dev vhclb; ip -n "$POD" addr add 10.77.0.2/24 dev eth0

ZONES='{"zone":"us-west-2a","zoneCidrs":{"us-west-2a":["10.1.0.0/16","2600:1f14:1::/56"],"us-west-2b":["10.2.0.0/16"]},
        "sameZone":{"shaped":false},"crossZone":{"ingressRate":20000000,"egressRate":20000000},"outside":{}}'
RATES='{"bandwidth":{"ingressRate":200000000,"ingressBurst":4294967295,"egressRate":200000000,"egressBurst":4294967295}}'
conf() { # conf MODE RUNTIMECONFIG CLASSES(json or null)
    jq -cn --arg mode "$1" --argjson rc "$2" --argjson tc "$3" --arg st "$WORK/state" --arg ns "/var/run/netns/$POD" '
      {cniVersion:"1.0.0", name:"clb", type:"bandwidth", stateDir:$st, egressMode:$mode, runtimeConfig:$rc,
       prevResult:{cniVersion:"1.0.0", interfaces:[{name:"vhclb"},{name:"eth0",sandbox:$ns}],
                   ips:[{interface:1,address:"10.77.0.2/24"}]}}
      + (if $tc == null then {} else {trafficClasses:$tc} end)'
}
run_script() { # run_script NAME VERB CONF -> path of a script running one verb
    printf '%s' "$3" > "$WORK/$1.json"
    cat > "$WORK/$1-$2.sh" <<EOF
#!/bin/sh
CNI_COMMAND=$2 CNI_CONTAINERID=clb1 CNI_NETNS=/var/run/netns/$POD CNI_IFNAME=eth0 CNI_PATH=/nonexistent \
  exec "$BW" < "$WORK/$1.json" > /dev/null
EOF
    chmod +x "$WORK/$1-$2.sh"
    echo "$WORK/$1-$2.sh"
}
timed() { # timed NAME VERB CONF ROUND: hyperfine runs of one verb -> WORK/rounds/ROUND/NAME-VERB.json
    local add del prep cmd
    add=$(run_script "$1" ADD "$3"); del=$(run_script "$1" DEL "$3")
    if [ "$2" = ADD ]; then prep=$del cmd=$add; else prep=$add cmd=$del; fi
    mkdir -p "$WORK/rounds/$4"
    ip netns exec "$NODE" hyperfine -N --style none --warmup 3 --runs "$PER_ROUND" \
        --export-json "$WORK/rounds/$4/$1-$2.json" --prepare "$prep" "$cmd" > "$WORK/hf.log" 2>&1 || { cat "$WORK/hf.log" >&2; exit 1; }
    ip netns exec "$NODE" "$del" || true
}
# In rounds that go through every configuration, pooled, as section 1 does:
# a configuration's runs are spread over the section, so a slow spell of
# the machine weighs on all of them alike instead of on one ratio.
ROUNDS=3
PER_ROUND=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
for round in $(seq "$ROUNDS"); do
    for mode in ifb pod; do
        for variant in tbf classes counting; do
            case $variant in
                tbf) c=$(conf "$mode" "$RATES" null) ;;
                classes) c=$(conf "$mode" "$RATES" "$ZONES") ;;
                counting) c=$(conf "$mode" '{}' "$ZONES") ;;
            esac
            timed "$mode-$variant" ADD "$c" "$round"; timed "$mode-$variant" DEL "$c" "$round"
        done
    done
done
for f in "$WORK"/rounds/1/*.json; do
    name=$(basename "$f")
    jq -s '{results: [{command: .[0].results[0].command, times: (map(.results[0].times) | add)}]}' \
        "$WORK"/rounds/*/"$name" > "$OUT/$name"
done
# Nothing of ours may be left.
left=$(ip netns exec "$NODE" tc qdisc show | grep -cE 'htb|tbf|bfifo|ingress' || true)
# Our parked ifbs (ifbPool) outlive the pods by design: not counted.
ifbs=$(ip -n "$NODE" -o link show type ifb | grep -vc '^[0-9]*: ifb-parked[0-9]*:' || true)
printf 'left_qdiscs %s\nleft_ifbs %s\n' "$left" "$ifbs" > "$OUT/facts"
