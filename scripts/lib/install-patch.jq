# The patch. Our entries are found by type. Our bandwidth-rs entry takes the
# place of an existing one, else of the first reference `bandwidth` entry
# (kept inside ours under $replaced_key for uninstall), else goes at the
# end; topology-label always goes right before it: interface settings (MTU)
# must settle before shaping, or a tbf sized for the old MTU drops every
# full-size frame. Every other reference `bandwidth`, duplicate of ours, key
# and plugin stays out of it.
#
# Called by scripts/install.sh with $bw, $tl (null without topology-label)
# and $replaced_key.
def drop: .type == "bandwidth" or .type == "bandwidth-rs" or .type == "topology-label";
.plugins as $p
| ($p | to_entries) as $e
| ([$e[] | select(.value.type == "bandwidth-rs") | .key] | first) as $own_bw
| ([$e[] | select(.value.type == "bandwidth") | .key] | first) as $ref_bw
| (if $own_bw != null then $own_bw else $ref_bw end) as $bw_at
| (([$p[] | select(.type == "bandwidth-rs") | .[$replaced_key] | select(. != null)] | first)
   // ([$p[] | select(.type == "bandwidth")] | first)) as $replaced
| ($bw + (if $replaced != null then {($replaced_key): $replaced} else {} end)) as $bw_entry
| ((if $tl != null then [$tl] else [] end) + [$bw_entry]) as $ours
| .plugins = (
    [ $e[]
      | if .key == $bw_at then $ours[]
        elif (.value | drop) then empty
        else .value end ]
    + (if $bw_at == null then $ours else [] end))
