//! Zone profiles: settings (MTU, txqueuelen, sysctls) chosen by the node's
//! labels, merged in list order.

use node_topology::Labels;
use std::collections::BTreeMap;

/// One profile: settings applied when every `match` label has that value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub matches: Labels,
    pub mtu: Option<u32>,
    pub txqueuelen: Option<u32>,
    /// Key template (dotted, may contain `{ifname}`) -> value.
    pub sysctls: BTreeMap<String, String>,
}

/// The settings the matching profiles add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub mtu: Option<u32>,
    pub txqueuelen: Option<u32>,
    pub sysctls: BTreeMap<String, String>,
}

/// Every profile whose `match` holds (all its labels equal; an empty match
/// always holds) is applied in list order; a later profile overrides an
/// earlier one setting by setting (mtu, txqueuelen, each sysctl key).
pub fn merge_profiles(profiles: &[Profile], labels: &Labels) -> Settings {
    let mut s = Settings::default();
    for p in profiles {
        if p.matches.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            if p.mtu.is_some() {
                s.mtu = p.mtu;
            }
            if p.txqueuelen.is_some() {
                s.txqueuelen = p.txqueuelen;
            }
            for (k, v) in &p.sysctls {
                s.sysctls.insert(k.clone(), v.clone());
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_topology::ZONE;

    #[test]
    fn profiles_merge_in_order() {
        let p = |m: &[(&str, &str)], mtu: Option<u32>, q: Option<u32>| Profile {
            matches: m
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            mtu,
            txqueuelen: q,
            sysctls: BTreeMap::new(),
        };
        let profiles = vec![
            p(&[], Some(9001), Some(1000)),
            p(&[(ZONE, "a")], Some(1500), None),
            p(&[(ZONE, "b")], Some(1400), None),
        ];
        let mut l = Labels::new();
        l.insert(ZONE.into(), "a".into());
        let s = merge_profiles(&profiles, &l);
        assert_eq!((s.mtu, s.txqueuelen), (Some(1500), Some(1000)));
        l.clear();
        let s = merge_profiles(&profiles, &l);
        assert_eq!(s.mtu, Some(9001));
    }
}
