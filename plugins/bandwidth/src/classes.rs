//! Traffic classes: which peers a pod's traffic goes to or comes from, and
//! how each class is shaped and counted.
//!
//! The **peer** decides: the source address for traffic into the pod, the
//! destination for traffic out of it. Sources of classes (one per config):
//! - `unshapedSubnets`: peers in those CIDRs bypass the pod's limit;
//! - `shapedSubnets`: only peers in those CIDRs are limited;
//! - `trafficClasses`: `sameZone`, `crossZone` and `outside` (anything
//!   else), each exempt (`"shaped": false`), capped inside the pod's limit
//!   (its own rates), or sharing the pod's limit (empty), and always counted.
//!
//! This module holds the class types and parses and validates a class
//! block (pure). Zone facts (inline, a file, IMDS) are resolved in
//! [`crate::zones`]; the HTB tree for a direction is planned from resolved
//! classes in [`crate::htb_plan`].

use crate::config::{Limit, MAX_RATE_BITS, MIN_RATE_BITS, burst_in_range, rate_in_range};
use cni_types::error::{CniError, Code};
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

/// Most CIDRs one attachment may classify by, over all classes: each is a
/// u32 entry per direction, tried in order for every packet, so the list
/// stays short enough to cost nothing measurable (BENCHMARKS.md). One
/// constant with IMDS's zone facts, which are held to it before caching.
pub use node_topology::MAX_PEER_CIDRS;

/// The classes a config can define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClassName {
    SameZone,
    CrossZone,
    Outside,
    /// `unshapedSubnets`' peers, or everything but `shapedSubnets`' peers.
    Unshaped,
    /// `shapedSubnets`' peers, or everything but `unshapedSubnets`' peers.
    Shaped,
}

impl ClassName {
    pub fn as_str(self) -> &'static str {
        match self {
            ClassName::SameZone => "sameZone",
            ClassName::CrossZone => "crossZone",
            ClassName::Outside => "outside",
            ClassName::Unshaped => "unshaped",
            ClassName::Shaped => "shaped",
        }
    }
}

/// One class of peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClass {
    pub name: ClassName,
    /// Peers in these CIDRs belong here (empty: the default class, last).
    pub cidrs: Vec<IpNetwork>,
    /// Within the pod's limit (true) or exempt from it.
    pub shaped: bool,
    /// The class's own cap per direction, inside the pod's limit.
    pub ingress: Option<Limit>,
    pub egress: Option<Limit>,
}

/// Where the classes came from (decides whether unlimited pods are counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Subnets,
    Zones,
}

/// The classes in match order; the last one is the default (no CIDRs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClasses {
    pub origin: Origin,
    pub classes: Vec<PeerClass>,
}

pub(crate) fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg).with_details(details)
}

/// A value under `key` of `obj`, matching the key in any case (v1.5.x's
/// Go JSON did).
pub(crate) fn get_any_case<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

pub(crate) fn parse_cidrs(v: &Value, what: &str) -> Result<Vec<IpNetwork>, CniError> {
    let Some(items) = v.as_array() else {
        return Err(invalid(
            format!("invalid {what}"),
            format!("{what} must be a list of CIDRs, got {v}"),
        ));
    };
    items
        .iter()
        .map(|item| {
            let s = item.as_str().ok_or_else(|| {
                invalid(
                    format!("invalid {what}"),
                    format!("{what}: {item} is not a string"),
                )
            })?;
            s.parse::<IpNetwork>().map_err(|e| {
                invalid(
                    format!("invalid CIDR in {what}"),
                    format!("{what}: {s:?} is not an IPv4/IPv6 CIDR ({e})"),
                )
            })
        })
        .collect()
}

/// `unshapedSubnets` / `shapedSubnets` of one object (top level or
/// `runtimeConfig.bandwidth`): `None` when it has neither.
pub(crate) fn subnets_in(obj: &Value, block: &str) -> Result<Option<PeerClasses>, CniError> {
    let Some(obj) = obj.as_object() else {
        return Ok(None);
    };
    // An empty list is no list, as in the reference's v1.5 (a `shaped`
    // class matching nothing would silently lift the pod's limit).
    let given = |v: &&Value| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty());
    let unshaped = get_any_case(obj, "unshapedSubnets").filter(given);
    let shaped = get_any_case(obj, "shapedSubnets").filter(given);
    let (list, exempt_listed) = match (unshaped, shaped) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "unshapedSubnets and shapedSubnets are mutually exclusive",
                format!("{block} sets both; keep the one that describes fewer peers"),
            ));
        }
        (Some(u), None) => (parse_cidrs(u, &format!("{block}.unshapedSubnets"))?, true),
        (None, Some(s)) => (parse_cidrs(s, &format!("{block}.shapedSubnets"))?, false),
    };
    let listed = PeerClass {
        name: if exempt_listed {
            ClassName::Unshaped
        } else {
            ClassName::Shaped
        },
        cidrs: list,
        shaped: !exempt_listed,
        ingress: None,
        egress: None,
    };
    let rest = PeerClass {
        name: if exempt_listed {
            ClassName::Shaped
        } else {
            ClassName::Unshaped
        },
        cidrs: Vec::new(),
        shaped: exempt_listed,
        ingress: None,
        egress: None,
    };
    Ok(Some(PeerClasses {
        origin: Origin::Subnets,
        classes: vec![listed, rest],
    }))
}

pub(crate) fn class_limit(
    obj: &Map<String, Value>,
    class: &str,
    dir: &str,
) -> Result<Option<Limit>, CniError> {
    let num = |key: String| -> Result<Option<u64>, CniError> {
        match obj.get(&key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                invalid(
                    format!("invalid trafficClasses.{class}.{key}"),
                    format!("{key} must be a non-negative integer (bits), got {v}"),
                )
            }),
        }
    };
    let rate = num(format!("{dir}Rate"))?;
    let burst = num(format!("{dir}Burst"))?;
    match (rate, burst) {
        (None, None | Some(0)) => Ok(None),
        (None, Some(b)) => Err(invalid(
            format!("trafficClasses.{class}.{dir}Burst is set but {dir}Rate is not"),
            format!("{dir}Burst={b} caps nothing without a {dir}Rate"),
        )),
        // 0 would read as "no cap", which is what omitting the key means;
        // namespacePolicy refuses 0 too.
        (Some(0), _) => Err(invalid(
            format!("trafficClasses.{class}.{dir}Rate is 0"),
            format!(
                "{dir}Rate=0 is not a cap; omit {dir}Rate for no cap of its own, or give {MIN_RATE_BITS}..={MAX_RATE_BITS} bits/s"
            ),
        )),
        (Some(r), b) => {
            rate_in_range(&format!("{dir}Rate"), r).map_err(|d| {
                invalid(format!("trafficClasses.{class}.{dir}Rate out of range"), d)
            })?;
            burst_in_range(&format!("{dir}Burst"), b.unwrap_or(0))
                .map_err(|d| invalid(format!("trafficClasses.{class}.{dir}Burst too large"), d))?;
            Ok(Some(Limit {
                rate_bits: r,
                burst_bits: b.filter(|b| *b > 0),
            }))
        }
    }
}

/// Our own blocks are exact: a misspelt key is an error, not ignored.
pub(crate) fn refuse_unknown_keys(
    obj: &Map<String, Value>,
    keys: &[&str],
    what: &str,
) -> Result<(), CniError> {
    match obj.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            format!("unknown key {what}.{k}"),
            format!("{what} takes {}", keys.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(crate) fn parse_class(
    tc: &Map<String, Value>,
    key: &str,
    name: ClassName,
    cidrs: Vec<IpNetwork>,
) -> Result<PeerClass, CniError> {
    let obj = match tc.get(key) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(v) => {
            return Err(invalid(
                format!("invalid trafficClasses.{key}"),
                format!("{key} must be an object, got {v}"),
            ));
        }
    };
    const KEYS: [&str; 5] = [
        "shaped",
        "ingressRate",
        "ingressBurst",
        "egressRate",
        "egressBurst",
    ];
    refuse_unknown_keys(&obj, &KEYS, &format!("trafficClasses.{key}"))?;
    let shaped = match obj.get("shaped") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(invalid(
                format!("invalid trafficClasses.{key}.shaped"),
                format!("shaped must be true or false, got {v}"),
            ));
        }
    };
    let ingress = class_limit(&obj, key, "ingress")?;
    let egress = class_limit(&obj, key, "egress")?;
    if !shaped && (ingress.is_some() || egress.is_some()) {
        return Err(invalid(
            format!("trafficClasses.{key} is unshaped and has a rate"),
            "\"shaped\": false exempts the class from every limit; drop its rates or the flag",
        ));
    }
    Ok(PeerClass {
        name,
        cidrs,
        shaped,
        ingress,
        egress,
    })
}

#[cfg(test)]
#[path = "classes_tests.rs"]
mod tests;
