#!/usr/bin/env bash
# The cross-AZ walkthrough (scripts/demo.sh --zones): did traffic stay in
# its zone, and what did crossing zones cost? A simulated three-zone VPC on
# one machine, in private namespaces only: three nodes (one per zone, each
# with its own pod subnet) routed to each other through a VPC router; on
# each node pods wired by vpc-cni-sim, then topology-label, then bandwidth
# with the node's zone classes from its zoneCidrsFile (as node bootstrap
# writes it). One backend per zone serves a fixed payload over HTTP; one
# client in zone a asks for it N times:
#   1. random:  each request to any backend (kube-proxy without hints);
#   2. hinted:  each to the backend in the client's zone (topology hints);
#   3. capped:  random again, every pod re-added under the node's
#               cross-zone cap (trafficClasses.crossZone rates).
# After each run, `cni-rs pods --json` on every node gives each pod's bytes
# by zone class (the kernel's counters); the cost is those bytes times the
# price, each direction billed. Writes target/demo-zones.json and an SVG.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

REQUESTS=100
PAYLOAD=1000000
CAP=16M
PRICE=0.01
OUT="$ROOT/target/demo-zones.json"
SVG="$ROOT/target/demo-zones.svg"
SEED=7
usage() {
    cat <<USAGE
usage: scripts/demo.sh --zones (as root) [--requests N] [--payload BYTES] [--cap RATE]
                      [--price-per-gb USD] [--out FILE.json] [--svg FILE.svg]
  --requests N        requests per run (default 100)
  --payload BYTES     size of each backend's answer (default 1000000)
  --cap RATE          the node cross-zone cap of run 3, a Kubernetes quantity (default 16M)
  --price-per-gb USD  inter-AZ price per GB and direction (default 0.01)
USAGE
}
while [ $# -gt 0 ]; do
    case "$1" in
        --zones) shift ;;
        --requests) REQUESTS=${2:?}; shift 2 ;;
        --payload) PAYLOAD=${2:?}; shift 2 ;;
        --cap) CAP=${2:?}; shift 2 ;;
        --price-per-gb) PRICE=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --svg) SVG=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$REQUESTS" =~ ^[0-9]+$ && "$REQUESTS" -ge 3 && "$REQUESTS" -le 10000 ]] || { echo "--requests must be 3..10000" >&2; exit 2; }
[[ "$PAYLOAD" =~ ^[0-9]+$ && "$PAYLOAD" -ge 1000 && "$PAYLOAD" -le 100000000 ]] || { echo "--payload must be 1000..100000000" >&2; exit 2; }
[[ "$PRICE" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "--price-per-gb must be a number" >&2; exit 2; }
CAP_BITS=$(scripts/lib/quantity.sh "$CAP") || { echo "invalid --cap $CAP" >&2; exit 2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root (it creates network namespaces, veths and qdiscs): run it as root" >&2
    exit 1
fi
missing=()
for pair in ip:iproute2 jq:jq python3:python3 awk:gawk; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# DEMO_BIN_DIR: binaries already built (the suite's test passes its own).
if [ -n "${DEMO_BIN_DIR:-}" ]; then
    REL=$DEMO_BIN_DIR
else
    echo "==> building release binaries"
    cargo build --release --quiet -p bandwidth -p topology-label -p cni-rs -p vpc-cni-sim -p integration-tests --bins
    REL="$ROOT/target/release"
fi

ZONES=(ap-northeast-2a ap-northeast-2b ap-northeast-2c)
LETTERS=(a b c)
TAG="cz$$"
WORK=$(mktemp -d /tmp/cni-demo-zones.XXXXXX)
ROUTER="$TAG-vpc"
SERVERS=()
ADDED=()  # "node container-id netns pod" of pods to DEL on teardown

teardown() {
    local rc=$? e p
    trap - EXIT INT TERM
    for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null || true; done
    for e in "${ADDED[@]}"; do
        # shellcheck disable=SC2086 # entries are space-separated fields
        set -- $e
        cni "$1" del "$2" "$3" "$4" '{}' >/dev/null 2>&1 || true
    done
    for ns in $(ip netns list | awk '{ print $1 }' | grep "^$TAG-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
    [ "$rc" = 0 ] || echo "demo: failed (exit $rc); torn down" >&2
    exit "$rc"
}
trap teardown EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

node_ns() { echo "$TAG-node-${LETTERS[$1]}"; }
conflist() { echo "$WORK/node-${LETTERS[$1]}/10-aws.conflist"; }

cni() { # cni NODE_INDEX VERB CONTAINER_ID NETNS POD CAP_ARGS
    local n=$1
    ip netns exec "$(node_ns "$n")" "$REL/cni-run" "$2" --conflist "$(conflist "$n")" --container-id "$3" \
        --netns "/var/run/netns/$4" --ifname eth0 --cni-path "$WORK/bin" --cache-dir "$WORK/node-${LETTERS[$n]}/cache" \
        --args "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$5;K8S_POD_UID=uid-$5;K8S_POD_INFRA_CONTAINER_ID=$3" \
        --cap-args "$6"
}

# --- the VPC: a router and three nodes, pod subnet 10.8<i>.0.0/24 each ------
mkdir -p "$WORK/bin"
for b in bandwidth topology-label vpc-cni-sim; do ln -s "$REL/$b" "$WORK/bin/$b"; done
ip netns add "$ROUTER"
ip netns exec "$ROUTER" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
zone_map=$(jq -nc --arg a "${ZONES[0]}" --arg b "${ZONES[1]}" --arg c "${ZONES[2]}" \
    '{($a): ["10.81.0.0/24"], ($b): ["10.82.0.0/24"], ($c): ["10.83.0.0/24"]}')
write_conflists() { # write_conflists CROSS_ZONE_CLASS_JSON
    local i dir
    for i in 0 1 2; do
        dir="$WORK/node-${LETTERS[$i]}"
        mkdir -p "$dir/cache" "$dir/state"
        # What node bootstrap writes: this node's zone and every zone's CIDRs.
        jq -n --arg z "${ZONES[$i]}" --argjson m "$zone_map" '{zone: $z, zoneCidrs: $m}' > "$dir/zone-cidrs.json"
        jq --arg st "$dir/state" --arg z "${ZONES[$i]}" --arg f "$dir/zone-cidrs.json" \
           --arg cidr "10.8$((i + 1)).0.0/24" --argjson cross "$1" '
          .plugins |= map(.stateDir = ($st + "/" + .type)
            | if .type == "vpc-cni-sim" then .podCIDR = $cidr
              elif .type == "topology-label" then .labels["topology.kubernetes.io/zone"] = $z
                | .labels["topology.kubernetes.io/region"] = "ap-northeast-2" | del(.labels["topology.k8s.aws/zone-id"])
              else .trafficClasses = {zoneCidrsFile: $f, sameZone: {}, crossZone: $cross, outside: {}} end)' \
           conflist-examples/single-node-sim.conflist > "$dir/10-aws.conflist"
    done
}
write_conflists '{}'
for i in 0 1 2; do
    n=$(node_ns "$i"); l=${LETTERS[$i]}
    ip netns add "$n"
    ip -n "$n" link set lo up
    ip netns exec "$n" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    ip -n "$ROUTER" link add "vpc-$l" type veth peer name uplink netns "$n"
    ip -n "$ROUTER" addr add "172.31.$((i + 1)).1/30" dev "vpc-$l"
    ip -n "$ROUTER" link set "vpc-$l" up
    ip -n "$n" addr add "172.31.$((i + 1)).2/30" dev uplink
    ip -n "$n" link set uplink mtu 9001 up
    ip -n "$ROUTER" link set "vpc-$l" mtu 9001
    ip -n "$n" route add 10.80.0.0/12 via "172.31.$((i + 1)).1"
    ip -n "$ROUTER" route add "10.8$((i + 1)).0.0/24" via "172.31.$((i + 1)).2"
done

add_pod() { # add_pod NODE_INDEX NAME -> pod IP
    local n=$1 ns="$TAG-$2" out
    ip netns list | grep -q "^$ns\b" || ip netns add "$ns"
    out=$(cni "$n" add "$TAG-$2" "$ns" "$2" '{}')
    ADDED+=("$n $TAG-$2 $ns $2")
    jq -r '.ips[0].address | split("/")[0]' <<<"$out"
}
del_pods() {
    local e
    for e in "${ADDED[@]}"; do
        # shellcheck disable=SC2086
        set -- $e
        cni "$1" del "$2" "$3" "$4" '{}' >/dev/null
    done
    ADDED=()
}
declare -A IP
start_pods() {
    local i
    for i in 0 1 2; do IP[backend-${LETTERS[$i]}]=$(add_pod "$i" "backend-${LETTERS[$i]}"); done
    IP[client]=$(add_pod 0 client)
}

# --- the backends: a fixed payload over HTTP ---------------------------------
head -c "$PAYLOAD" /dev/zero | tr '\0' 'x' > "$WORK/payload"
mkdir -p "$WORK/www" && mv "$WORK/payload" "$WORK/www/payload"
serve() { # serve NAME: python's http.server on port 80 of the pod
    ip netns exec "$TAG-$1" python3 -m http.server 80 --bind "${IP[$1]}" --directory "$WORK/www" >/dev/null 2>&1 &
    SERVERS+=("$!")
}
wait_served() {
    local b
    for b in backend-a backend-b backend-c; do
        for _ in $(seq 100); do
            ip netns exec "$TAG-client" python3 -c "import socket,sys; socket.create_connection((sys.argv[1], 80), 1).close()" "${IP[$b]}" 2>/dev/null && break
            sleep 0.1
        done
    done
}
stop_servers() { local p; for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; SERVERS=(); }

# Every pod's zone bytes, node by node: {"<pod>": {sameZone, crossZone, outside}}.
snapshot() {
    local i
    for i in 0 1 2; do
        ip netns exec "$(node_ns "$i")" "$REL/cni-rs" pods --json --price-per-gb "$PRICE" \
            --bandwidth-state-dir "$WORK/node-${LETTERS[$i]}/state/bandwidth" \
            --topology-state-dir "$WORK/node-${LETTERS[$i]}/state/topology-label"
    done | jq -s 'add | map(select(.zoneBytes) | {key: .pod, value: (.zoneBytes + {zone})}) | from_entries'
}

run() { # run NAME MODE
    local name=$1 mode=$2 t0 t1
    echo "==> run '$name': $REQUESTS requests of $PAYLOAD bytes from the client in ${ZONES[0]} ($mode)"
    snapshot > "$WORK/$name.before.json"
    t0=$EPOCHREALTIME
    ip netns exec "$TAG-client" python3 scripts/lib/zone-client.py "$mode" "$REQUESTS" "$SEED" "${ZONES[0]}" \
        "${ZONES[0]}=${IP[backend-a]}" "${ZONES[1]}=${IP[backend-b]}" "${ZONES[2]}=${IP[backend-c]}" > "$WORK/$name.client.json"
    t1=$EPOCHREALTIME
    snapshot > "$WORK/$name.after.json"
    jq -n --arg name "$name" --argjson price "$PRICE" --argjson secs "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        --slurpfile before "$WORK/$name.before.json" --slurpfile after "$WORK/$name.after.json" \
        --slurpfile client "$WORK/$name.client.json" -f scripts/lib/demo-zones-run.jq > "$WORK/$name.run.json"
}

report() { # report NAME
    jq -r --arg zones "${ZONES[*]}" -f scripts/lib/demo-zones-report.jq "$WORK/$1.run.json"
}

echo "==> VPC of three zones (${ZONES[*]}), a node per zone; pods: backend-a/b/c, client (${ZONES[0]})"
start_pods
for b in backend-a backend-b backend-c; do serve "$b"; done
wait_served
run random random; report random
run hinted hinted; report hinted

echo "==> every pod re-added under the node cross-zone cap of $CAP (trafficClasses.crossZone ingressRate/egressRate)"
stop_servers; del_pods
write_conflists "$(jq -nc --argjson r "$CAP_BITS" '{ingressRate: $r, egressRate: $r}')"
start_pods
for b in backend-a backend-b backend-c; do serve "$b"; done
wait_served
run capped random; report capped

mkdir -p "$(dirname "$OUT")" "$(dirname "$SVG")"
jq -s --argjson price "$PRICE" --argjson cap "$CAP_BITS" --argjson payload "$PAYLOAD" \
    '{price_per_gb_usd: $price, cross_zone_cap_bits: $cap, payload_bytes: $payload,
      runs: (map({key: .name, value: .}) | from_entries)}' \
    "$WORK/random.run.json" "$WORK/hinted.run.json" "$WORK/capped.run.json" > "$OUT"
jq -r '.runs | to_entries[] | [.key, .value.cross_zone_bytes, .value.est_cost_usd] | @tsv' "$OUT" |
    awk -f scripts/lib/zones-svg.awk -v title="Cross-zone bytes and inter-AZ cost per run ($REQUESTS requests of $PAYLOAD bytes)" > "$SVG"
echo
echo "summary: $OUT"
echo "chart:   $SVG"
