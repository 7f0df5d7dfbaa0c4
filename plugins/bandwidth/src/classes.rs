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

use crate::rates::{
    Bits, Limit, MAX_RATE_BITS, MIN_RATE_BITS, bits, burst_in_range, rate_in_range,
};
use cni_types::config::any_case;
use cni_types::error::{CniError, Code};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

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

/// Parses CIDRs; `what` names the list, for the refusal.
pub(crate) fn parse_cidrs(items: &[String], what: &str) -> Result<Vec<IpNetwork>, CniError> {
    items
        .iter()
        .map(|s| {
            s.parse::<IpNetwork>().map_err(|e| {
                invalid(
                    format!("invalid CIDR in {what}"),
                    format!("{what}: {s:?} is not an IPv4/IPv6 CIDR ({e})"),
                )
            })
        })
        .collect()
}

/// `unshapedSubnets` / `shapedSubnets` as written; in any case, as the
/// reference's v1.5.x Go JSON matched them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubnetKeys {
    unshaped_subnets: Option<Vec<String>>,
    shaped_subnets: Option<Vec<String>>,
}

/// `unshapedSubnets` / `shapedSubnets` of one object (top level or
/// `runtimeConfig.bandwidth`, named by `block`): `None` when it has neither.
pub(crate) fn subnets_in(obj: &Value, block: &str) -> Result<Option<PeerClasses>, CniError> {
    let Some(obj) = obj.as_object() else {
        return Ok(None);
    };
    let keys: SubnetKeys = any_case(obj, &["unshapedSubnets", "shapedSubnets"], block)?;
    // An empty list is no list, as in the reference's v1.5 (a `shaped`
    // class matching nothing would silently lift the pod's limit).
    let given = |l: &Vec<String>| !l.is_empty();
    let (list, exempt_listed) = match (
        keys.unshaped_subnets.filter(given),
        keys.shaped_subnets.filter(given),
    ) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "unshapedSubnets and shapedSubnets are mutually exclusive",
                format!("{block} sets both; keep the one that describes fewer peers"),
            ));
        }
        (Some(u), None) => (parse_cidrs(&u, &format!("{block}.unshapedSubnets"))?, true),
        (None, Some(s)) => (parse_cidrs(&s, &format!("{block}.shapedSubnets"))?, false),
    };
    let (listed, rest) = if exempt_listed {
        (ClassName::Unshaped, ClassName::Shaped)
    } else {
        (ClassName::Shaped, ClassName::Unshaped)
    };
    let class = |name, cidrs, shaped| PeerClass {
        name,
        cidrs,
        shaped,
        ingress: None,
        egress: None,
    };
    Ok(Some(PeerClasses {
        origin: Origin::Subnets,
        classes: vec![
            class(listed, list, !exempt_listed),
            class(rest, Vec::new(), exempt_listed),
        ],
    }))
}

/// One class of `trafficClasses` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClassKeys {
    shaped: Option<bool>,
    ingress_rate: Option<Bits>,
    ingress_burst: Option<Bits>,
    egress_rate: Option<Bits>,
    egress_burst: Option<Bits>,
}

/// A class's own cap in one direction, validated.
fn class_limit(
    rate: Option<u64>,
    burst: Option<u64>,
    class: &str,
    dir: &str,
) -> Result<Option<Limit>, CniError> {
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

/// The class `key` (`sameZone`, ...) from its keys as written (absent: a
/// class that is shaped within the pod's limit, without a cap of its own).
pub(crate) fn parse_class(
    keys: Option<&ClassKeys>,
    key: &str,
    name: ClassName,
    cidrs: Vec<IpNetwork>,
) -> Result<PeerClass, CniError> {
    let k = keys.cloned().unwrap_or_default();
    let shaped = k.shaped.unwrap_or(true);
    let ingress = class_limit(bits(k.ingress_rate), bits(k.ingress_burst), key, "ingress")?;
    let egress = class_limit(bits(k.egress_rate), bits(k.egress_burst), key, "egress")?;
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
