# Prints one run's summary (demo-zones-run.jq's output) for a person.
def mb: . / 1e6 | . * 100 | round / 100 | tostring + " MB";
def usd6: (. * 1e6 | round) as $u | "$" + (($u / 1e6 | floor) | tostring) + "." + ("000000" + (($u % 1000000) | tostring))[-6:];
def mbit: if . == null then "-" else (. / 1e6 | . * 10 | round / 10 | tostring + " Mbit/s") end;
"    requests answered per zone: " + (.requests_by_zone | to_entries | map("\(.key) \(.value)") | join(", ")),
"    bytes counted by cni-rs (all pods, both directions): same zone \(.same_zone_bytes | mb), cross zone \(.cross_zone_bytes | mb)",
"    the client received \(.bytes_received_by_client | mb) (its own count); cni-rs counted \(.client_counted_bytes | mb) at its veth",
"    per request: cross-zone \(.cross_zone_rate_bits | mbit), same-zone \(.same_zone_rate_bits | mbit)",
(.pods | to_entries[] | "      \(.key) (\(.value.zone)): same zone \(.value.same_zone_bytes | mb), cross zone \(.value.cross_zone_bytes | mb)"),
"    estimated inter-AZ cost: \(.est_cost_usd | usd6) in \(.seconds * 10 | round / 10) s; at this rate $\(.projected_monthly_usd * 100 | round / 100) a month"
