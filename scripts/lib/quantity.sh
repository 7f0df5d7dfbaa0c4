#!/usr/bin/env bash
# A Kubernetes quantity (k/M/G/T decimal, Ki/Mi/Gi/Ti binary) in bits/s:
#   quantity.sh 16M -> 16000000
set -euo pipefail
q=${1:?usage: quantity.sh QUANTITY}
[[ "$q" =~ ^([0-9]+)(k|M|G|T|Ki|Mi|Gi|Ti)?$ ]] || { echo "invalid quantity $q" >&2; exit 2; }
num=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[2]:-}
case "$unit" in
    "") echo "$num" ;; k) echo $((num * 1000)) ;; M) echo $((num * 1000000)) ;;
    G) echo $((num * 1000000000)) ;; T) echo $((num * 1000000000000)) ;;
    Ki) echo $((num * 1024)) ;; Mi) echo $((num * 1048576)) ;; Gi) echo $((num * 1073741824)) ;;
    Ti) echo $((num * 1099511627776)) ;;
esac
