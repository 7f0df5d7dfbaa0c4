//! Namespace policy: a node's default and maximum rates per Kubernetes
//! namespace, the way a LimitRange gives defaults and maxima for CPU and
//! memory. Without it only pods whose authors add the bandwidth
//! annotations are shaped, and at whatever rate they write.
//!
//! `namespacePolicy` maps a namespace (or `"*"`, for any other namespace
//! and for calls without `K8S_POD_NAMESPACE`) to:
//! - `default`: the rate per direction when the pod asks for none;
//! - `max`: a rate asked above it is lowered to it (a pod may always ask
//!   for less), with a warning naming the namespace, the pod, what was
//!   asked and what was applied;
//! - `exempt: true`: the pod's own annotations only, as without a policy.

use crate::rates::{Limit, rate_in_range};
use crate::tbf::DEFAULT_BUCKET_MS;
use cni_types::config::typed;
use cni_types::error::{CniError, Code};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The entry for namespaces the policy does not name.
pub const ANY_NAMESPACE: &str = "*";

/// Rates per direction, bits/s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rates {
    pub ingress_rate: Option<u64>,
    pub egress_rate: Option<u64>,
}

/// One namespace's entry.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    pub default: Rates,
    #[serde(default)]
    pub max: Rates,
    #[serde(default)]
    pub exempt: bool,
}

/// The validated policy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    entries: BTreeMap<String, Entry>,
}

/// What the policy did to one direction, for the state file and operators.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// What the pod (or the static config) asked for, bits/s.
    pub asked: Option<u64>,
    /// What is applied, bits/s.
    pub applied: Option<u64>,
    /// The namespace's default filled in a missing rate.
    pub defaulted: bool,
    /// The namespace's max lowered the rate asked.
    pub capped: bool,
}

/// What the policy decided for one attachment.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    /// The entry that applied: the namespace's own, or `"*"`.
    pub entry: String,
    pub ingress: Decision,
    pub egress: Decision,
}

fn invalid(details: String) -> CniError {
    CniError::new(Code::InvalidConfig, "invalid namespacePolicy").with_details(details)
}

fn check_rate(ns: &str, what: &str, rate: Option<u64>) -> Result<(), CniError> {
    match rate {
        Some(r) => rate_in_range(&format!("{ns:?}.{what}"), r).map_err(invalid),
        None => Ok(()),
    }
}

impl Entry {
    fn validate(&self, ns: &str) -> Result<(), CniError> {
        if self.exempt && (self.default != Rates::default() || self.max != Rates::default()) {
            return Err(invalid(format!(
                "{ns:?}: an exempt namespace has no default or max"
            )));
        }
        for (what, d, m) in [
            (
                "ingressRate",
                self.default.ingress_rate,
                self.max.ingress_rate,
            ),
            ("egressRate", self.default.egress_rate, self.max.egress_rate),
        ] {
            check_rate(ns, &format!("default.{what}"), d)?;
            check_rate(ns, &format!("max.{what}"), m)?;
            if let (Some(d), Some(m)) = (d, m)
                && d > m
            {
                return Err(invalid(format!(
                    "{ns:?}: default.{what} {d} is above max.{what} {m}"
                )));
            }
        }
        Ok(())
    }
}

impl NamespacePolicy {
    /// `namespacePolicy` from the plugin config; `None` when absent.
    pub fn parse(raw: &Value) -> Result<Option<NamespacePolicy>, CniError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Top {
            namespace_policy: Option<BTreeMap<String, Entry>>,
        }
        let Some(entries) = typed::<Top>(raw, "")?.namespace_policy else {
            return Ok(None);
        };
        for (ns, entry) in &entries {
            entry.validate(ns)?;
        }
        Ok(Some(NamespacePolicy { entries }))
    }

    /// The entry for `namespace` (or `"*"`), and its key.
    fn entry_for(&self, namespace: Option<&str>) -> Option<(&str, &Entry)> {
        namespace
            .and_then(|ns| self.entries.get_key_value(ns))
            .or_else(|| self.entries.get_key_value(ANY_NAMESPACE))
            .map(|(k, e)| (k.as_str(), e))
    }

    /// Applies the policy to the limits asked for; `None` when no entry
    /// applies (or the namespace is exempt): the limits stay as asked.
    pub fn apply(
        &self,
        namespace: Option<&str>,
        ingress: &mut Option<Limit>,
        egress: &mut Option<Limit>,
    ) -> Option<PolicyRecord> {
        let (key, entry) = self.entry_for(namespace)?;
        if entry.exempt {
            return None;
        }
        Some(PolicyRecord {
            entry: key.to_string(),
            ingress: decide(ingress, entry.default.ingress_rate, entry.max.ingress_rate),
            egress: decide(egress, entry.default.egress_rate, entry.max.egress_rate),
        })
    }
}

/// One direction: default when unset, max when above (pure).
fn decide(limit: &mut Option<Limit>, default: Option<u64>, max: Option<u64>) -> Decision {
    let asked = limit.map(|l| l.rate_bits);
    let mut d = Decision {
        asked,
        ..Decision::default()
    };
    if limit.is_none()
        && let Some(rate) = default
    {
        *limit = Some(Limit {
            rate_bits: rate,
            burst_bits: None,
        });
        d.defaulted = true;
    }
    if let (Some(l), Some(m)) = (limit.as_mut(), max)
        && l.rate_bits > m
    {
        l.burst_bits = capped_burst(l.burst_bits, l.rate_bits, m);
        l.rate_bits = m;
        d.capped = true;
    }
    d.applied = limit.map(|l| l.rate_bits);
    d
}

/// The bucket for a rate lowered from `asked` to `applied`: the asked burst
/// scaled by applied/asked, or the default bucket (`None`) when that is
/// smaller. A bucket sized for the asked rate would hold seconds at the
/// applied one (a runtime's 512 MiB at 120 Mbit/s: 36 s at line rate).
fn capped_burst(burst_bits: Option<u64>, asked: u64, applied: u64) -> Option<u64> {
    let burst = burst_bits?;
    let scaled = u128::from(burst) * u128::from(applied) / u128::from(asked.max(1));
    let default = u128::from(applied) * u128::from(DEFAULT_BUCKET_MS) / 1000;
    // `scaled` <= `burst` (applied < asked), so it fits in a u64.
    (scaled < default).then(|| u64::try_from(scaled).unwrap_or(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rates::MAX_RATE_BITS;
    use serde_json::json;

    fn policy(v: Value) -> Result<Option<NamespacePolicy>, CniError> {
        NamespacePolicy::parse(&json!({ "namespacePolicy": v }))
    }

    fn lim(rate: u64) -> Option<Limit> {
        Some(Limit {
            rate_bits: rate,
            burst_bits: Some(80_000),
        })
    }

    #[test]
    fn default_fills_max_caps_and_less_is_kept() {
        let p = policy(json!({
            "tenant-a": {"default": {"ingressRate": 100_000_000, "egressRate": 100_000_000},
                         "max": {"ingressRate": 500_000_000, "egressRate": 500_000_000}},
            "kube-system": {"exempt": true},
            "*": {"default": {"ingressRate": 50_000_000}}
        }))
        .unwrap()
        .unwrap();
        let (mut i, mut e) = (None, lim(900_000_000));
        let r = p.apply(Some("tenant-a"), &mut i, &mut e).unwrap();
        assert_eq!(i.unwrap().rate_bits, 100_000_000);
        assert_eq!(
            i.unwrap().burst_bits,
            None,
            "a default gets the default bucket"
        );
        assert_eq!(e.unwrap().rate_bits, 500_000_000);
        assert_eq!(
            e.unwrap().burst_bits,
            Some(44_444),
            "the asked burst scaled by 500/900"
        );
        assert!(r.ingress.defaulted && r.egress.capped);
        assert_eq!(r.egress.asked, Some(900_000_000));
        assert_eq!(r.egress.applied, Some(500_000_000));
        let (mut i, mut e) = (lim(10_000_000), None);
        let r = p.apply(Some("tenant-a"), &mut i, &mut e).unwrap();
        assert_eq!(i.unwrap().rate_bits, 10_000_000, "a pod may ask for less");
        assert!(!r.ingress.capped && !r.ingress.defaulted);
        // Exempt: as without a policy.
        let (mut i, mut e) = (None, lim(900_000_000));
        assert!(p.apply(Some("kube-system"), &mut i, &mut e).is_none());
        assert_eq!((i, e), (None, lim(900_000_000)));
        // "*": an unlisted namespace, and no namespace at all.
        for ns in [Some("other"), None] {
            let (mut i, mut e) = (None, None);
            let r = p.apply(ns, &mut i, &mut e).unwrap();
            assert_eq!(r.entry, "*");
            assert_eq!(i.unwrap().rate_bits, 50_000_000);
            assert_eq!(e, None, "no egress default: egress unshaped");
        }
    }

    #[test]
    fn capped_rate_gets_a_bucket_that_fits_it() {
        let p = policy(json!({
            "t": {"max": {"ingressRate": 120_000_000, "egressRate": 120_000_000}}
        }))
        .unwrap()
        .unwrap();
        // A runtime's honoured 512 MiB sentinel at 20G, capped to 120M: the
        // default bucket (25 ms at 120M), not 36 s at line rate.
        let sentinel = Some(Limit {
            rate_bits: 20_000_000_000,
            burst_bits: Some(4_294_967_295),
        });
        // A small burst scales with the rate: 1 Mbit at 1.2G is 100 kbit at 120M.
        let small = Some(Limit {
            rate_bits: 1_200_000_000,
            burst_bits: Some(1_000_000),
        });
        let (mut i, mut e) = (sentinel, small);
        let r = p.apply(Some("t"), &mut i, &mut e).unwrap();
        assert!(r.ingress.capped && r.egress.capped);
        assert_eq!(
            i,
            Some(Limit {
                rate_bits: 120_000_000,
                burst_bits: None
            })
        );
        assert_eq!(
            e,
            Some(Limit {
                rate_bits: 120_000_000,
                burst_bits: Some(100_000)
            })
        );
        let shaped = crate::tbf::shape(&i.unwrap(), 1500, 25);
        assert_eq!(shaped.burst_bytes, 375_000, "25 ms at 120 Mbit/s");
        // Not capped: the asked burst stays as it is.
        let (mut i, mut e) = (
            sentinel.map(|l| Limit {
                rate_bits: 100_000_000,
                ..l
            }),
            None,
        );
        p.apply(Some("t"), &mut i, &mut e).unwrap();
        assert_eq!(i.unwrap().burst_bits, Some(4_294_967_295));
        // The extremes do not overflow.
        let max_burst = crate::rates::MAX_BURST_BITS;
        assert_eq!(
            capped_burst(Some(max_burst), MAX_RATE_BITS, MAX_RATE_BITS - 1),
            Some(max_burst - 1)
        );
        assert_eq!(capped_burst(Some(u64::MAX), u64::MAX, 1_000), None);
        assert_eq!(capped_burst(None, 2_000, 1_000), None);
    }

    #[test]
    fn no_entry_no_change() {
        let p = policy(json!({"a": {"default": {"ingressRate": 1_000_000}}}))
            .unwrap()
            .unwrap();
        let (mut i, mut e) = (None, None);
        assert!(p.apply(Some("b"), &mut i, &mut e).is_none());
        assert!(policy(json!(null)).unwrap().is_none());
    }

    #[test]
    fn bad_policies_are_code_7() {
        for bad in [
            json!([1]),
            json!({"a": 5}),
            json!({"a": {"default": {"ingressRate": 0}}}),
            json!({"a": {"default": {"ingressRate": -5}}}),
            json!({"a": {"default": {"ingressRate": 100}}}),
            json!({"a": {"default": {"ingressRate": 2_000_000}, "max": {"ingressRate": 1_000_000}}}),
            json!({"a": {"defaults": {}}}),
            json!({"a": {"default": {"ingressrate": 1_000_000}}}),
            json!({"a": {"exempt": true, "max": {"egressRate": 1_000_000}}}),
            json!({"a": {"exempt": "yes"}}),
        ] {
            assert_eq!(
                policy(bad.clone()).unwrap_err().code,
                Code::InvalidConfig,
                "{bad}"
            );
        }
    }
}
