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
//! This module parses and validates them (pure) and computes, per direction,
//! the HTB tree that enforces them ([`plan`], pure); `apply` installs it.

use crate::config::{Limit, MAX_BURST_BITS, MAX_RATE_BITS, MIN_RATE_BITS};
use crate::tbf::{L2_HEADER_BYTES, Shape, shape};
use cni_netlink::htb::{ClassifierSpec, ETH_P_IPV6, HtbClassSpec, prefix_keys};
use cni_netlink::tc::ETH_P_IP;
use cni_types::error::{CniError, Code};
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::path::Path;

/// Most CIDRs one attachment may classify by, over all classes: each is a
/// u32 entry per direction, tried in order for every packet, so the list
/// stays short enough to cost nothing measurable (BENCHMARKS.md). One
/// constant with IMDS's zone facts, which are held to it before caching.
pub use node_topology::MAX_PEER_CIDRS;
/// "No limit" for an HTB class, which needs a rate: 100 Gbit/s, above any
/// pod's veth.
pub const UNLIMITED_BYTES_PER_SEC: u64 = 12_500_000_000;
/// Handle of the root htb (`1:`), the same major as the tbf it replaces.
pub const ROOT_HANDLE: u32 = 0x0001_0000;
/// The class holding the pod's limit, parent of every shaped class.
pub const POD_CLASS: u32 = ROOT_HANDLE | 1;
/// Leaf class `i` is `1:(10+i)` (hex), its bfifo `(10+i):`.
const FIRST_LEAF_MINOR: u32 = 0x10;
/// u32 prios on the root htb: one instance per protocol.
pub const PRIO_V4: u16 = 1;
pub const PRIO_V6: u16 = 2;
/// Largest HTB quantum the kernel takes without a warning.
const MAX_QUANTUM: u64 = 200_000;
/// Queue of a class with no limit: it only fills when the device itself
/// pushes back, like a txqueuelen of 1000 frames.
const UNLIMITED_QUEUE_FRAMES: u64 = 1000;

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

fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg).with_details(details)
}

/// A value under `key` of `obj`, matching the key in any case (v1.5.x's
/// Go JSON did).
fn get_any_case<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn parse_cidrs(v: &Value, what: &str) -> Result<Vec<IpNetwork>, CniError> {
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
fn subnets_in(obj: &Value, block: &str) -> Result<Option<PeerClasses>, CniError> {
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

fn class_limit(
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
        (Some(r), _) if !(MIN_RATE_BITS..=MAX_RATE_BITS).contains(&r) => Err(invalid(
            format!("trafficClasses.{class}.{dir}Rate out of range"),
            format!("{dir}Rate={r} bits/s is outside {MIN_RATE_BITS}..={MAX_RATE_BITS}"),
        )),
        (_, Some(b)) if b > MAX_BURST_BITS => Err(invalid(
            format!("trafficClasses.{class}.{dir}Burst too large"),
            format!("{dir}Burst={b} bits exceeds {MAX_BURST_BITS}"),
        )),
        (Some(r), b) => Ok(Some(Limit {
            rate_bits: r,
            burst_bits: b.filter(|b| *b > 0),
        })),
    }
}

/// Our own blocks are exact: a misspelt key is an error, not ignored.
fn refuse_unknown_keys(
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

fn parse_class(
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

/// The zone CIDR map: `{"zone": ["cidr", ...]}`.
fn parse_zone_map(v: &Value, what: &str) -> Result<Vec<(String, Vec<IpNetwork>)>, CniError> {
    let Some(obj) = v.as_object() else {
        return Err(invalid(
            format!("invalid {what}"),
            format!("{what} must map zone names to CIDR lists, got {v}"),
        ));
    };
    obj.iter()
        .map(|(zone, cidrs)| {
            let what = format!("{what}.{zone}");
            let cidrs = parse_cidrs(cidrs, &what)?;
            // A zone as wide as the internet makes every peer "same zone".
            for c in &cidrs {
                node_topology::check_zone_prefix(c.ip(), c.prefix()).map_err(|e| {
                    invalid(
                        format!("zone CIDR too wide in {what}"),
                        format!("{what}: {e}"),
                    )
                })?;
            }
            Ok((zone.clone(), cidrs))
        })
        .collect()
}

/// The largest zone CIDRs file we read: node bootstrap writes a few KiB.
const MAX_ZONE_FILE_BYTES: u64 = 1 << 20;

/// Where the zone facts come from: resolved on ADD and CHECK only, never on
/// DEL (which needs none, and must not wait for IMDS or a missing file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneSource {
    /// `zone` and `zoneCidrs` inline (validated at parse).
    Inline {
        zone: String,
        zones: Vec<(String, Vec<IpNetwork>)>,
    },
    /// `zoneCidrsFile`, with an inline `zone` that wins over the file's.
    File { path: String, zone: Option<String> },
    /// Neither: on EKS, the node's zone, its ENIs' subnets (same zone) and
    /// the VPC's CIDR blocks (the rest of the VPC: other zones) from IMDSv2.
    Imds(node_topology::ImdsConf),
}

/// The zone classes before their CIDRs are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    pub source: ZoneSource,
    /// sameZone, crossZone, outside (CIDRs empty until resolved).
    pub classes: [PeerClass; 3],
}

/// The classes as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassSpec {
    Subnets(PeerClasses),
    Zones(Box<ZoneSpec>),
}

impl ClassSpec {
    pub fn origin(&self) -> Origin {
        match self {
            ClassSpec::Subnets(_) => Origin::Subnets,
            ClassSpec::Zones(_) => Origin::Zones,
        }
    }

    /// The classes with their CIDRs: reads `zoneCidrsFile` or asks IMDS
    /// (through the node's shared cache) when that is the source.
    pub fn resolve(&self) -> Result<PeerClasses, CniError> {
        let z = match self {
            ClassSpec::Subnets(c) => return Ok(c.clone()),
            ClassSpec::Zones(z) => z,
        };
        let (same, cross) = match &z.source {
            ZoneSource::Inline { zone, zones } => split_zones(zone, zones)?,
            ZoneSource::File { path, zone } => {
                let file = read_zone_file(path)?;
                let map = parse_zone_map(
                    file.get("zoneCidrs").unwrap_or(&file),
                    &format!("zoneCidrsFile {path}"),
                )?;
                let zone = zone
                    .clone()
                    .or_else(|| file.get("zone").and_then(Value::as_str).map(String::from))
                    .filter(|z| !z.is_empty())
                    .ok_or_else(|| {
                        invalid(
                            "trafficClasses.zoneCidrsFile without the node's zone",
                            format!(
                                "neither trafficClasses.zone nor {path} names this node's zone"
                            ),
                        )
                    })?;
                split_zones(&zone, &map)?
            }
            ZoneSource::Imds(conf) => imds_zones(conf)?,
        };
        let [s, c, o] = z.classes.clone();
        let classes = vec![
            PeerClass { cidrs: same, ..s },
            PeerClass { cidrs: cross, ..c },
            o,
        ];
        let out = PeerClasses {
            origin: Origin::Zones,
            classes,
        };
        check_count(&out)?;
        Ok(out)
    }
}

/// This zone's CIDRs and every other listed zone's.
#[allow(clippy::type_complexity)]
fn split_zones(
    zone: &str,
    zones: &[(String, Vec<IpNetwork>)],
) -> Result<(Vec<IpNetwork>, Vec<IpNetwork>), CniError> {
    if !zones.iter().any(|(z, _)| z == zone) {
        return Err(invalid(
            "trafficClasses.zoneCidrs does not list the node's zone",
            format!("zone {zone:?} has no entry; same-zone peers could not be told apart"),
        ));
    }
    let mut same = Vec::new();
    let mut cross = Vec::new();
    for (z, cidrs) in zones {
        if z == zone {
            same.extend(cidrs.iter().copied());
        } else {
            cross.extend(cidrs.iter().copied());
        }
    }
    Ok((same, cross))
}

#[allow(clippy::type_complexity)]
fn imds_zones(
    conf: &node_topology::ImdsConf,
) -> Result<(Vec<IpNetwork>, Vec<IpNetwork>), CniError> {
    let unavailable = |why: String| {
        CniError::new(
            Code::TryAgainLater,
            "the node's zone and network are unknown (trafficClasses from IMDS)",
        )
        .with_details(why)
    };
    let (labels, net) =
        node_topology::imds::labels_and_network(conf).map_err(|e| unavailable(format!("{e:#}")))?;
    let zone = labels.get(node_topology::ZONE).cloned().unwrap_or_default();
    if zone.is_empty() {
        return Err(unavailable("IMDS gave no availability zone".into()));
    }
    // Parsed and checked (width, count) before node-topology cached them.
    let parse = |list: &[node_topology::Cidr]| -> Result<Vec<IpNetwork>, CniError> {
        list.iter()
            .map(|c| {
                IpNetwork::new(c.addr, c.prefix)
                    .map_err(|e| unavailable(format!("IMDS CIDR {c}: {e}")))
            })
            .collect()
    };
    Ok((parse(&net.subnet_cidrs)?, parse(&net.vpc_cidrs)?))
}

fn read_zone_file(path: &str) -> Result<Value, CniError> {
    let bytes = cni_types::fsutil::read_bounded(Path::new(path), MAX_ZONE_FILE_BYTES)
        .map_err(|e| {
            CniError::new(Code::Io, "cannot read trafficClasses.zoneCidrsFile")
                .with_details(format!("{path}: {e:#}"))
        })?
        .ok_or_else(|| {
            // Node bootstrap may not have written it yet: worth a retry.
            CniError::new(
                Code::TryAgainLater,
                "trafficClasses.zoneCidrsFile does not exist (yet)",
            )
            .with_details(format!("{path} is missing; node bootstrap writes it"))
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            "invalid trafficClasses.zoneCidrsFile",
            format!("{path} is not JSON: {e}"),
        )
    })
}

/// `trafficClasses` (node policy, top level only).
fn zones_in(raw: &Value) -> Result<Option<ZoneSpec>, CniError> {
    let tc = match raw.get("trafficClasses") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(v) => {
            return Err(invalid(
                "invalid trafficClasses",
                format!("trafficClasses must be an object, got {v}"),
            ));
        }
    };
    const KEYS: [&str; 7] = [
        "zone",
        "zoneCidrs",
        "zoneCidrsFile",
        "imds",
        "sameZone",
        "crossZone",
        "outside",
    ];
    refuse_unknown_keys(tc, &KEYS, "trafficClasses")?;
    let zone = match tc.get("zone") {
        None | Some(Value::Null) => None,
        Some(Value::String(z)) if !z.is_empty() => Some(z.clone()),
        Some(v) => {
            return Err(invalid(
                "invalid trafficClasses.zone",
                format!("zone must be a zone name, got {v}"),
            ));
        }
    };
    let file = match tc.get("zoneCidrsFile") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if Path::new(p).is_absolute() => Some(p.clone()),
        Some(v) => {
            return Err(invalid(
                "invalid trafficClasses.zoneCidrsFile",
                format!("zoneCidrsFile must be an absolute path, got {v}"),
            ));
        }
    };
    let inline = tc.get("zoneCidrs").filter(|v| !v.is_null());
    let source = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "trafficClasses has both zoneCidrs and zoneCidrsFile",
                "keep one source of zone CIDRs",
            ));
        }
        (Some(m), None) => {
            let zones = parse_zone_map(m, "trafficClasses.zoneCidrs")?;
            let zone = zone.ok_or_else(|| {
                invalid(
                    "trafficClasses.zoneCidrs without the node's zone",
                    "set trafficClasses.zone to this node's zone (topology.kubernetes.io/zone)",
                )
            })?;
            // Checked now: an inline map that cannot work is bad input.
            split_zones(&zone, &zones)?;
            ZoneSource::Inline { zone, zones }
        }
        (None, Some(path)) => ZoneSource::File { path, zone },
        (None, None) => {
            if zone.is_some() {
                return Err(invalid(
                    "trafficClasses.zone without zone CIDRs",
                    "with a zone, give zoneCidrs or zoneCidrsFile; leave all three out to learn them from IMDS",
                ));
            }
            let raw_imds: node_topology::RawImds = match tc.get("imds") {
                None | Some(Value::Null) => node_topology::RawImds::default(),
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| invalid("invalid trafficClasses.imds", e.to_string()))?,
            };
            let conf = node_topology::ImdsConf::parse(
                &raw_imds,
                Path::new(node_topology::DEFAULT_IMDS_CACHE),
            )
            .map_err(|e| invalid("invalid trafficClasses.imds", e.0))?;
            ZoneSource::Imds(conf)
        }
    };
    let classes = [
        parse_class(tc, "sameZone", ClassName::SameZone, Vec::new())?,
        parse_class(tc, "crossZone", ClassName::CrossZone, Vec::new())?,
        parse_class(tc, "outside", ClassName::Outside, Vec::new())?,
    ];
    Ok(Some(ZoneSpec { source, classes }))
}

fn check_count(c: &PeerClasses) -> Result<(), CniError> {
    let n: usize = c.classes.iter().map(|c| c.cidrs.len()).sum();
    if n > MAX_PEER_CIDRS {
        return Err(invalid(
            "too many peer CIDRs",
            format!(
                "{n} CIDRs; at most {MAX_PEER_CIDRS} per attachment (each is a filter tried for every packet)"
            ),
        ));
    }
    Ok(())
}

/// The classes as configured: `trafficClasses`, or the subnets of
/// `runtimeConfig.bandwidth` (the pod's) else of the top level (the
/// node's). None of these is one of the four rate keys, so they never
/// decide which rate block applies. Zone CIDRs from a file or IMDS are
/// read later, by [`ClassSpec::resolve`].
pub fn parse(raw: &Value, runtime: Option<&Value>) -> Result<Option<ClassSpec>, CniError> {
    let top = subnets_in(raw, "config")?;
    let pod = match runtime {
        Some(r) => subnets_in(r, "runtimeConfig.bandwidth")?,
        None => None,
    };
    let zones = zones_in(raw)?;
    let subnets = pod.or(top);
    match (zones, subnets) {
        (Some(_), Some(_)) => Err(invalid(
            "trafficClasses and shaped/unshapedSubnets cannot be combined",
            "zone classes already classify every peer; express the exemption as \"shaped\": false on a class",
        )),
        (Some(z), None) => Ok(Some(ClassSpec::Zones(Box::new(z)))),
        (None, Some(s)) => {
            check_count(&s)?;
            Ok(Some(ClassSpec::Subnets(s)))
        }
        (None, None) => Ok(None),
    }
}

/// Which way traffic flows, which decides where the peer's address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Shaped on the host veth: the peer is the source.
    IntoPod,
    /// Shaped on the ifb or the pod's interface: the peer is the destination.
    OutOfPod,
}

/// One direction's HTB tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtbPlan {
    pub default_minor: u32,
    pub classes: Vec<HtbClassSpec>,
    /// (class, bfifo handle, limit bytes) per leaf.
    pub leaves: Vec<(u32, u32, u32)>,
    pub filters: Vec<ClassifierSpec>,
    /// The leaf class of each named class.
    pub names: Vec<(ClassName, u32)>,
}

/// A leaf's queue: what the tbf would hold (`latencyMs` at the rate, one
/// GSO packet plus a frame at least), but never less than two GSO packets.
/// A class shares its device with the other classes' flows, and one GSO
/// packet of queue left a 20 Mbit/s class of three concurrent flows at
/// 0.93-0.96x in steady state (tail drops of whole GSO packets, and
/// retransmissions lost again behind them); two kept it within 1%
/// (BENCHMARKS.md section 9). Below ~48 Mbit/s at MTU 9001 this floor, not
/// `latencyMs`, bounds the class's wait.
fn leaf_queue(limit_bytes: u32, frame: u64) -> u32 {
    let two_gso = 2 * (crate::tbf::GSO_MAX_BYTES + frame);
    u32::try_from(u64::from(limit_bytes).max(two_gso)).unwrap_or(u32::MAX)
}

fn quantum(rate: u64, frame: u64) -> u32 {
    // As r2q=10 would, but explicit and within the kernel's quiet range.
    (rate / 10).clamp(frame, MAX_QUANTUM) as u32
}

fn filters_for(cidrs: &[IpNetwork], dir: Direction, classid: u32) -> Vec<ClassifierSpec> {
    cidrs
        .iter()
        .map(|net| {
            let (prio, protocol, words, off) = match (net, dir) {
                (IpNetwork::V4(n), d) => (
                    PRIO_V4,
                    ETH_P_IP,
                    vec![u32::from(n.network())],
                    if d == Direction::IntoPod { 12 } else { 16 },
                ),
                (IpNetwork::V6(n), d) => {
                    let o = n.network().octets();
                    let words = o
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    (
                        PRIO_V6,
                        ETH_P_IPV6,
                        words,
                        if d == Direction::IntoPod { 8 } else { 24 },
                    )
                }
            };
            ClassifierSpec {
                prio,
                protocol,
                keys: prefix_keys(&words, net.prefix(), off),
                classid,
            }
        })
        .collect()
}

/// The HTB tree for one direction: `pod` is the pod's limit there (None:
/// count only, nothing limited). Pure.
///
/// ```text
/// 1: htb (default: the last class)
/// ├── 1:1  the pod's limit (rate = ceil = pod rate)        [when limited]
/// │   ├── 1:1x  a class with its own cap: rate = ceil = cap (guaranteed)
/// │   └── 1:1y  a class sharing the limit: rate = what caps leave, ceil = pod
/// └── 1:1z  an unshaped class (or every class when counting only): 100G
/// ```
/// Each leaf has a bfifo bounded like our tbf's queue (`latencyMs` at its
/// ceiling, GSO floor), and each CIDR a u32 filter in class order.
/// A shaped class's own cap in direction `dir`: with a pod limit, only a
/// cap below it; without one, any cap (node caps bind every pod). Pure.
pub fn class_cap(
    c: &PeerClass,
    pod: Option<&Shape>,
    dir: Direction,
    mtu: u32,
    latency_ms: u32,
) -> Option<Shape> {
    if !c.shaped {
        return None;
    }
    let l = match dir {
        Direction::IntoPod => c.ingress,
        Direction::OutOfPod => c.egress,
    }?;
    let s = shape(&l, mtu, latency_ms);
    match pod {
        Some(p) => (s.rate_bytes_per_sec < p.rate_bytes_per_sec).then_some(s),
        None => Some(s),
    }
}

/// True when some class has a cap in `dir` that binds a pod without a
/// limit of its own: such a pod is shaped, not only counted.
pub fn caps_bind_unlimited(classes: &PeerClasses, dir: Direction) -> bool {
    classes.classes.iter().any(|c| {
        c.shaped
            && match dir {
                Direction::IntoPod => c.ingress.is_some(),
                Direction::OutOfPod => c.egress.is_some(),
            }
    })
}

pub fn plan(
    classes: &PeerClasses,
    pod: Option<&Shape>,
    dir: Direction,
    mtu: u32,
    latency_ms: u32,
) -> HtbPlan {
    let frame = u64::from(mtu) + L2_HEADER_BYTES;
    let unlimited_burst = u32::try_from(UNLIMITED_BYTES_PER_SEC / 1000).unwrap_or(u32::MAX);
    let unlimited_queue = u32::try_from(UNLIMITED_QUEUE_FRAMES * frame).unwrap_or(u32::MAX);
    let mut out = HtbPlan {
        default_minor: 0,
        classes: Vec::new(),
        leaves: Vec::new(),
        filters: Vec::new(),
        names: Vec::new(),
    };
    if let Some(p) = pod {
        out.classes.push(HtbClassSpec {
            classid: POD_CLASS,
            parent: ROOT_HANDLE,
            rate: p.rate_bytes_per_sec,
            ceil: p.rate_bytes_per_sec,
            burst: p.burst_bytes,
            cburst: p.burst_bytes,
            quantum: quantum(p.rate_bytes_per_sec, frame),
        });
    }
    // Caps inside the pod's limit, scaled down together if they add up to
    // more than it (each keeps its ceiling).
    let cap_of = |c: &PeerClass| class_cap(c, pod, dir, mtu, latency_ms);
    let shaped_pod = |c: &PeerClass| pod.filter(|_| c.shaped);
    let caps: u64 = classes
        .classes
        .iter()
        .filter(|c| shaped_pod(c).is_some())
        .filter_map(|c| cap_of(c).map(|s| s.rate_bytes_per_sec))
        .sum();
    let sharing = classes
        .classes
        .iter()
        .filter(|c| shaped_pod(c).is_some() && cap_of(c).is_none())
        .count() as u64;
    for (i, c) in classes.classes.iter().enumerate() {
        let minor = FIRST_LEAF_MINOR + i as u32;
        let classid = ROOT_HANDLE | minor;
        let (spec, limit) = match (shaped_pod(c), cap_of(c)) {
            (Some(p), Some(cap)) => {
                let total = caps.max(1);
                let guaranteed = if caps > p.rate_bytes_per_sec {
                    (u128::from(cap.rate_bytes_per_sec) * u128::from(p.rate_bytes_per_sec)
                        / u128::from(total)) as u64
                } else {
                    cap.rate_bytes_per_sec
                };
                (
                    HtbClassSpec {
                        classid,
                        parent: POD_CLASS,
                        rate: guaranteed.max(1),
                        ceil: cap.rate_bytes_per_sec,
                        burst: cap.burst_bytes,
                        cburst: cap.burst_bytes,
                        quantum: quantum(cap.rate_bytes_per_sec, frame),
                    },
                    leaf_queue(cap.limit_bytes, frame),
                )
            }
            (Some(p), None) => {
                let left = p
                    .rate_bytes_per_sec
                    .saturating_sub(caps.min(p.rate_bytes_per_sec));
                let share = (left / sharing.max(1)).max(1);
                (
                    HtbClassSpec {
                        classid,
                        parent: POD_CLASS,
                        rate: share,
                        ceil: p.rate_bytes_per_sec,
                        burst: p.burst_bytes,
                        cburst: p.burst_bytes,
                        quantum: quantum(p.rate_bytes_per_sec, frame),
                    },
                    leaf_queue(p.limit_bytes, frame),
                )
            }
            // A node cap holds for a pod without a limit of its own too
            // (asking for nothing must not get more than asking for 1G):
            // the class has its cap, and shares with nothing.
            (None, Some(cap)) => (
                HtbClassSpec {
                    classid,
                    parent: ROOT_HANDLE,
                    rate: cap.rate_bytes_per_sec,
                    ceil: cap.rate_bytes_per_sec,
                    burst: cap.burst_bytes,
                    cburst: cap.burst_bytes,
                    quantum: quantum(cap.rate_bytes_per_sec, frame),
                },
                leaf_queue(cap.limit_bytes, frame),
            ),
            (None, None) => (
                HtbClassSpec {
                    classid,
                    parent: ROOT_HANDLE,
                    rate: UNLIMITED_BYTES_PER_SEC,
                    ceil: UNLIMITED_BYTES_PER_SEC,
                    burst: unlimited_burst,
                    cburst: unlimited_burst,
                    quantum: MAX_QUANTUM as u32,
                },
                unlimited_queue,
            ),
        };
        out.classes.push(spec);
        out.leaves.push((classid, minor << 16, limit));
        out.names.push((c.name, minor));
        out.filters.extend(filters_for(&c.cidrs, dir, classid));
        out.default_minor = minor;
    }
    // Per protocol, in class order (the kernel tries one prio after the
    // other, and entries of one prio in the order they were added).
    out.filters.sort_by_key(|f| f.prio);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zones(extra: Value) -> Value {
        let mut v = json!({
            "trafficClasses": {
                "zone": "us-west-2a",
                "zoneCidrs": {"us-west-2a": ["10.1.0.0/16", "2600:1f14:1::/56"], "us-west-2b": ["10.2.0.0/16"]},
                "sameZone": {"shaped": false},
                "crossZone": {"ingressRate": 20_000_000, "egressRate": 20_000_000},
                "outside": {}
            }
        });
        if let (Some(t), Some(e)) = (v["trafficClasses"].as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                t.insert(k.clone(), x.clone());
            }
        }
        v
    }

    fn code(r: Result<Option<ClassSpec>, CniError>) -> Code {
        match r {
            Err(e) => e.code,
            Ok(spec) => spec.expect("classes").resolve().unwrap_err().code,
        }
    }

    fn resolved(raw: &Value, runtime: Option<&Value>) -> PeerClasses {
        parse(raw, runtime).unwrap().unwrap().resolve().unwrap()
    }

    fn pod(rate_bits: u64) -> Shape {
        shape(
            &Limit {
                rate_bits,
                burst_bits: None,
            },
            9001,
            25,
        )
    }

    #[test]
    fn zone_classes_parse_in_match_order() {
        let c = resolved(&zones(json!({})), None);
        let names: Vec<_> = c.classes.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                ClassName::SameZone,
                ClassName::CrossZone,
                ClassName::Outside
            ]
        );
        assert_eq!(c.classes[0].cidrs.len(), 2);
        assert!(!c.classes[0].shaped);
        assert_eq!(c.classes[1].ingress.unwrap().rate_bits, 20_000_000);
        assert!(c.classes[2].cidrs.is_empty() && c.classes[2].shaped);
    }

    #[test]
    fn empty_subnet_lists_are_unset() {
        assert_eq!(parse(&json!({"shapedSubnets": []}), None).unwrap(), None);
        let c = resolved(
            &json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": []}),
            None,
        );
        assert_eq!(c.classes[0].name, ClassName::Unshaped);
    }

    #[test]
    fn subnets_any_case_runtime_over_top_level() {
        let raw = json!({"UnshapedSubnets": ["10.0.0.0/8"]});
        let c = resolved(&raw, None);
        assert_eq!(c.classes[0].name, ClassName::Unshaped);
        assert!(!c.classes[0].shaped && c.classes[1].shaped);
        let rt = json!({"shapedSubnets": ["192.168.0.0/16", "fd00::/8"]});
        let c = resolved(&raw, Some(&rt));
        assert_eq!(c.classes[0].name, ClassName::Shaped);
        assert_eq!(c.classes[0].cidrs.len(), 2);
    }

    #[test]
    fn bad_input_is_code_7() {
        let both = json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": ["10.1.0.0/16"]});
        assert_eq!(code(parse(&both, None)), Code::InvalidConfig);
        for bad in ["10.0.0.0/33", "2600::/129", "nonsense", "10.0.0/8"] {
            let v = json!({"unshapedSubnets": [bad]});
            assert_eq!(code(parse(&v, None)), Code::InvalidConfig, "{bad}");
        }
        let burst_only = zones(json!({"crossZone": {"egressBurst": 1000}}));
        assert_eq!(code(parse(&burst_only, None)), Code::InvalidConfig);
        for class in ["sameZone", "crossZone", "outside"] {
            for dir in ["ingress", "egress"] {
                for burst in [json!(null), json!(0), json!(80_000)] {
                    let zero = zones(json!({class: {
                        format!("{dir}Rate"): 0, format!("{dir}Burst"): burst
                    }}));
                    assert!(
                        matches!(parse(&zero, None), Err(e) if e.code == Code::InvalidConfig),
                        "{class}.{dir}Rate = 0, burst {burst}: refused when parsed"
                    );
                }
            }
        }
        let no_zone = json!({"trafficClasses": {"zoneCidrs": {"a": ["10.0.0.0/8"]}}});
        assert_eq!(code(parse(&no_zone, None)), Code::InvalidConfig);
        let unknown_zone = zones(json!({"zone": "eu-west-1a"}));
        assert_eq!(code(parse(&unknown_zone, None)), Code::InvalidConfig);
        let many: Vec<String> = (0..=MAX_PEER_CIDRS)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        assert_eq!(
            code(parse(&json!({"shapedSubnets": many}), None)),
            Code::InvalidConfig
        );
        let unshaped_rate = zones(json!({"sameZone": {"shaped": false, "ingressRate": 1000}}));
        assert_eq!(code(parse(&unshaped_rate, None)), Code::InvalidConfig);
        let typo = zones(json!({"crossZone": {"egresRate": 1000}}));
        assert_eq!(code(parse(&typo, None)), Code::InvalidConfig);
        let mixed = zones(json!({}));
        let mut mixed = mixed;
        mixed["unshapedSubnets"] = json!(["10.0.0.0/8"]);
        assert_eq!(code(parse(&mixed, None)), Code::InvalidConfig);
    }

    #[test]
    fn plan_caps_inside_the_pod_limit() {
        let c = resolved(&zones(json!({})), None);
        let p = pod(200_000_000);
        let plan = plan(&c, Some(&p), Direction::OutOfPod, 9001, 25);
        let by = |id: u32| plan.classes.iter().find(|k| k.classid == id).unwrap();
        assert_eq!(by(POD_CLASS).ceil, 25_000_000);
        let same = by(ROOT_HANDLE | 0x10);
        assert_eq!(same.parent, ROOT_HANDLE, "unshaped: outside the pod class");
        assert_eq!(same.ceil, UNLIMITED_BYTES_PER_SEC);
        let cross = by(ROOT_HANDLE | 0x11);
        assert_eq!((cross.rate, cross.ceil), (2_500_000, 2_500_000));
        let outside = by(ROOT_HANDLE | 0x12);
        assert_eq!((outside.rate, outside.ceil), (22_500_000, 25_000_000));
        assert_eq!(plan.default_minor, 0x12);
        // sameZone's v4 and v6 CIDR plus crossZone's v4, v4 first; egress
        // matches the destination.
        let prios: Vec<_> = plan.filters.iter().map(|f| f.prio).collect();
        assert_eq!(prios, [PRIO_V4, PRIO_V4, PRIO_V6]);
        assert_eq!(plan.filters[0].keys[0].off, 16);
        assert_eq!(plan.filters[0].classid, ROOT_HANDLE | 0x10);
        assert_eq!(plan.filters[1].classid, ROOT_HANDLE | 0x11);
        assert_eq!(plan.filters[2].keys[0].off, 24);
        for k in &plan.classes {
            assert!((9015..=200_000).contains(&k.quantum), "{k:?}");
        }
        let ingress = super::plan(&c, Some(&p), Direction::IntoPod, 9001, 25);
        assert_eq!(ingress.filters[0].keys[0].off, 12, "into the pod: source");
    }

    #[test]
    fn leaf_queues_hold_two_gso_packets_at_least() {
        let c = resolved(&zones(json!({})), None);
        let p = pod(200_000_000);
        let plan = plan(&c, Some(&p), Direction::OutOfPod, 9001, 25);
        let limit = |minor: u32| {
            plan.leaves
                .iter()
                .find(|(class, _, _)| *class == ROOT_HANDLE | minor)
                .map(|l| l.2)
                .unwrap()
        };
        assert_eq!(limit(0x11), 2 * (65_536 + 9015), "20 Mbit/s cap: the floor");
        assert_eq!(
            limit(0x12),
            p.limit_bytes,
            "200 Mbit/s: latencyMs at the rate"
        );
    }

    #[test]
    fn counting_only_limits_nothing_without_caps() {
        let c = resolved(&zones(json!({"crossZone": {}})), None);
        let plan = plan(&c, None, Direction::IntoPod, 1500, 25);
        assert_eq!(plan.classes.len(), 3, "no pod class");
        assert!(
            plan.classes
                .iter()
                .all(|k| k.parent == ROOT_HANDLE && k.ceil == UNLIMITED_BYTES_PER_SEC)
        );
        assert!(!caps_bind_unlimited(&c, Direction::IntoPod));
    }

    /// Asking for nothing must not get more than asking for 1G: a node's
    /// class cap holds for a pod without a limit, in both directions.
    #[test]
    fn node_caps_bind_a_pod_without_a_limit() {
        let c = resolved(&zones(json!({})), None);
        for dir in [Direction::IntoPod, Direction::OutOfPod] {
            assert!(caps_bind_unlimited(&c, dir));
            let plan = plan(&c, None, dir, 1500, 25);
            assert_eq!(plan.classes.len(), 3, "no pod class");
            let cross = plan
                .classes
                .iter()
                .find(|k| k.classid == ROOT_HANDLE | 0x11)
                .unwrap();
            assert_eq!((cross.rate, cross.ceil), (2_500_000, 2_500_000));
            assert_eq!(cross.parent, ROOT_HANDLE, "shares with nothing");
            let others = plan.classes.iter().filter(|k| k.classid != cross.classid);
            assert!(others.clone().all(|k| k.ceil == UNLIMITED_BYTES_PER_SEC));
        }
        let big = pod(1_000_000_000);
        let with_limit = plan(&c, Some(&big), Direction::OutOfPod, 1500, 25);
        let cross = with_limit
            .classes
            .iter()
            .find(|k| k.classid == ROOT_HANDLE | 0x11)
            .unwrap();
        assert_eq!(cross.ceil, 2_500_000, "the same cap with a 1G limit");
    }

    #[test]
    fn caps_above_the_pod_limit_are_scaled() {
        let v = zones(
            json!({"sameZone": {"egressRate": 150_000_000}, "crossZone": {"egressRate": 150_000_000}}),
        );
        let c = resolved(&v, None);
        let p = pod(200_000_000);
        let plan = plan(&c, Some(&p), Direction::OutOfPod, 9001, 25);
        let guaranteed: u64 = plan
            .classes
            .iter()
            .filter(|k| k.parent == POD_CLASS)
            .map(|k| k.rate)
            .sum();
        assert!(guaranteed <= 25_000_000 + 2, "{guaranteed}");
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zone_sources() {
        // Nothing given: IMDS, with the shared cache by default.
        let spec = parse(
            &json!({"trafficClasses": {"crossZone": {"egressRate": 1_000_000}}}),
            None,
        )
        .unwrap()
        .unwrap();
        let ClassSpec::Zones(z) = &spec else { panic!() };
        let ZoneSource::Imds(conf) = &z.source else {
            panic!("{:?}", z.source)
        };
        assert_eq!(
            conf.cache_file,
            Path::new(node_topology::DEFAULT_IMDS_CACHE)
        );
        // A file: read at resolve time, not at parse (DEL parses too).
        let dir = std::env::temp_dir().join(format!("zones-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("zones.json");
        let v = json!({"trafficClasses": {"zoneCidrsFile": f.to_str().unwrap()}});
        let spec = parse(&v, None).unwrap().unwrap();
        assert_eq!(
            spec.resolve().unwrap_err().code,
            Code::TryAgainLater,
            "missing file"
        );
        std::fs::write(
            &f,
            r#"{"zone": "b", "zoneCidrs": {"a": ["10.1.0.0/16"], "b": ["10.2.0.0/16"]}}"#,
        )
        .unwrap();
        let c = spec.resolve().unwrap();
        assert_eq!(c.classes[0].cidrs[0].to_string(), "10.2.0.0/16");
        assert_eq!(c.classes[1].cidrs[0].to_string(), "10.1.0.0/16");
        std::fs::write(&f, "not json").unwrap();
        assert_eq!(spec.resolve().unwrap_err().code, Code::InvalidConfig);
        let _ = std::fs::remove_dir_all(&dir);
        // A zone alone, or both sources, is bad input.
        for bad in [
            json!({"trafficClasses": {"zone": "a"}}),
            json!({"trafficClasses": {"zone": "a", "zoneCidrs": {"a": []}, "zoneCidrsFile": "/x"}}),
            json!({"trafficClasses": {"zoneCidrsFile": "relative.json"}}),
            json!({"trafficClasses": {"imds": {"endpoint": "https://x"}}}),
        ] {
            assert_eq!(
                parse(&bad, None).unwrap_err().code,
                Code::InvalidConfig,
                "{bad}"
            );
        }
    }
}
