#!/usr/bin/env bash
# One simulated pod's ADD or DEL for the scale section of scripts/bench.sh,
# run inside the node netns (by xargs, sequentially or 2-way parallel).
#   time-pod-verb.sh add|del PHASE INDEX
# Prints "INDEX EXIT_CODE MICROSECONDS" for the cni-run call alone (the
# runtime's view: cni-run + vpc-cni-sim + bandwidth + topology-label).
# The pod's netns (BENCH_PFX-PHASEINDEX) is created and removed by bench.sh.
# Environment: BENCH_REL (release dir with cni-run), BENCH_CONF, BENCH_PATH
# (CNI_PATH), BENCH_CACHE, BENCH_PFX, BENCH_CAPS (cap args JSON), BENCH_ERR.
set -u
export LC_ALL=C
verb=$1 phase=$2 i=$3
ns="$BENCH_PFX-$phase$i"
cid="scale-$phase-$i"
pod="$phase-pod-$i"
caps='{}'
[ "$verb" = add ] && caps=$BENCH_CAPS
t0=$EPOCHREALTIME
"$BENCH_REL/cni-run" "$verb" --conflist "$BENCH_CONF" --container-id "$cid" \
    --netns "/var/run/netns/$ns" --ifname eth0 --cni-path "$BENCH_PATH" --cache-dir "$BENCH_CACHE" \
    --args "IgnoreUnknown=1;K8S_POD_NAMESPACE=scale;K8S_POD_NAME=$pod;K8S_POD_UID=uid-$pod;K8S_POD_INFRA_CONTAINER_ID=$cid" \
    --cap-args "$caps" >/dev/null 2>>"$BENCH_ERR"
rc=$?
t1=$EPOCHREALTIME
t0=${t0/[.,]/}
t1=${t1/[.,]/}
echo "$i $rc $(( 10#$t1 - 10#$t0 ))"
