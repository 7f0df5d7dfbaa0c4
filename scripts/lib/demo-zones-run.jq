# One run of scripts/lib/demo-zones.sh: cni-rs's counters before and after
# ($before[0], $after[0]: pod -> {sameZone, crossZone, outside, zone}) and
# the client's own record ($client[0]) -> the run's summary.
def delta(p; k): (($after[0][p][k] // 0) - ($before[0][p][k] // 0));
def pods: $after[0] | keys;
def sum_of(k): [pods[] as $p | delta($p; k)] | add // 0;
def rate(reqs): (reqs | map(.bytes) | add // 0) as $b | (reqs | map(.seconds) | add // 0) as $s
    | if $s > 0 then ($b * 8 / $s | floor) else null end;
{
    name: $name,
    mode: $client[0].mode,
    seconds: $secs,
    requests_by_zone: $client[0].requests_by_zone,
    bytes_received_by_client: $client[0].bytes_received_by_client,
    cross_zone_bytes: sum_of("crossZone"),
    same_zone_bytes: sum_of("sameZone"),
    outside_bytes: sum_of("outside"),
    client_counted_bytes: (delta("client"; "crossZone") + delta("client"; "sameZone") + delta("client"; "outside")),
    pods: (pods | map({key: ., value: {zone: $after[0][.].zone, same_zone_bytes: delta(.; "sameZone"),
                                        cross_zone_bytes: delta(.; "crossZone")}}) | from_entries),
    cross_zone_rate_bits: rate($client[0].requests | map(select(.zone != $client[0].own_zone))),
    same_zone_rate_bits: rate($client[0].requests | map(select(.zone == $client[0].own_zone)))
  }
| .est_cost_usd = (.cross_zone_bytes / 1e9 * $price)
| .projected_monthly_usd = (if $secs > 0 then .est_cost_usd / $secs * 86400 * 30 else 0 end)
