//! Zone facts: where `trafficClasses`' same-zone and cross-zone CIDRs come
//! from (inline, `zoneCidrsFile`, or IMDS on EKS) and resolving them into
//! [`PeerClasses`] before anything is planned; and [`parse`], the class
//! block as configured (subnets or zones).

use crate::classes::{
    ClassName, MAX_PEER_CIDRS, Origin, PeerClass, PeerClasses, invalid, parse_cidrs, parse_class,
    refuse_unknown_keys, subnets_in,
};
use cni_types::error::{CniError, Code};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::path::Path;

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
    let source = zone_source(tc, zone, file)?;
    let classes = [
        parse_class(tc, "sameZone", ClassName::SameZone, Vec::new())?,
        parse_class(tc, "crossZone", ClassName::CrossZone, Vec::new())?,
        parse_class(tc, "outside", ClassName::Outside, Vec::new())?,
    ];
    Ok(Some(ZoneSpec { source, classes }))
}

/// Where the zone CIDRs come from: `zoneCidrs` inline (checked now: an
/// inline map that cannot work is bad input), `zoneCidrsFile`, or, with
/// none of `zone`, `zoneCidrs` and `zoneCidrsFile`, IMDS.
fn zone_source(
    tc: &serde_json::Map<String, Value>,
    zone: Option<String>,
    file: Option<String>,
) -> Result<ZoneSource, CniError> {
    let inline = tc.get("zoneCidrs").filter(|v| !v.is_null());
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            "trafficClasses has both zoneCidrs and zoneCidrsFile",
            "keep one source of zone CIDRs",
        )),
        (Some(m), None) => {
            let zones = parse_zone_map(m, "trafficClasses.zoneCidrs")?;
            let zone = zone.ok_or_else(|| {
                invalid(
                    "trafficClasses.zoneCidrs without the node's zone",
                    "set trafficClasses.zone to this node's zone (topology.kubernetes.io/zone)",
                )
            })?;
            split_zones(&zone, &zones)?;
            Ok(ZoneSource::Inline { zone, zones })
        }
        (None, Some(path)) => Ok(ZoneSource::File { path, zone }),
        (None, None) if zone.is_some() => Err(invalid(
            "trafficClasses.zone without zone CIDRs",
            "with a zone, give zoneCidrs or zoneCidrsFile; leave all three out to learn them from IMDS",
        )),
        (None, None) => {
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
            Ok(ZoneSource::Imds(conf))
        }
    }
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
