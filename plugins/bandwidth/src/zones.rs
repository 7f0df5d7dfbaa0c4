//! Zone facts: where `trafficClasses`' same-zone and cross-zone CIDRs come
//! from (inline, `zoneCidrsFile`, or IMDS on EKS) and resolving them into
//! [`PeerClasses`] before anything is planned; and [`parse`], the class
//! block as configured (subnets or zones).

use crate::classes::{
    ClassKeys, ClassName, MAX_PEER_CIDRS, Origin, PeerClass, PeerClasses, invalid, parse_cidrs,
    parse_class, subnets_in,
};
use cni_types::config::typed;
use cni_types::error::{CniError, Code};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The zone CIDR map as written: `{"zone": ["cidr", ...]}`.
pub type ZoneCidrs = BTreeMap<String, Vec<String>>;

/// The zone CIDR map, parsed and each CIDR held to a zone's width.
fn parse_zone_map(map: &ZoneCidrs, what: &str) -> Result<Vec<(String, Vec<IpNetwork>)>, CniError> {
    map.iter()
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
                let what = format!("zoneCidrsFile {path}");
                let map = parse_zone_map(&file.zone_cidrs, &what)?;
                let zone = zone
                    .clone()
                    .or(file.zone)
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

/// `zoneCidrsFile` as node bootstrap writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZoneFile {
    zone: Option<String>,
    zone_cidrs: ZoneCidrs,
}

fn read_zone_file(path: &str) -> Result<ZoneFile, CniError> {
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
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            "invalid trafficClasses.zoneCidrsFile",
            format!("{path} is not JSON: {e}"),
        )
    })?;
    let what = format!("zoneCidrsFile {path}");
    // Node bootstrap writes either `{"zone": .., "zoneCidrs": {..}}` or
    // the bare zone map.
    if value.get("zoneCidrs").is_some() {
        typed(&value, &what)
    } else {
        Ok(ZoneFile {
            zone: None,
            zone_cidrs: typed(&value, &what)?,
        })
    }
}

/// `trafficClasses` as written (node policy, top level only).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TrafficClassesKeys {
    zone: Option<String>,
    zone_cidrs: Option<ZoneCidrs>,
    zone_cidrs_file: Option<String>,
    imds: Option<node_topology::RawImds>,
    same_zone: Option<ClassKeys>,
    cross_zone: Option<ClassKeys>,
    outside: Option<ClassKeys>,
}

/// The top-level key this module reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Top {
    traffic_classes: Option<TrafficClassesKeys>,
}

/// The zone classes of `trafficClasses`, validated (CIDRs unresolved).
fn zones_in(tc: TrafficClassesKeys) -> Result<ZoneSpec, CniError> {
    if tc.zone.as_deref() == Some("") {
        return Err(invalid(
            "invalid trafficClasses.zone",
            "zone must be a zone name, got \"\"",
        ));
    }
    if let Some(p) = tc
        .zone_cidrs_file
        .as_deref()
        .filter(|p| !Path::new(p).is_absolute())
    {
        return Err(invalid(
            "invalid trafficClasses.zoneCidrsFile",
            format!("zoneCidrsFile must be an absolute path, got {p:?}"),
        ));
    }
    let classes = [
        parse_class(
            tc.same_zone.as_ref(),
            "sameZone",
            ClassName::SameZone,
            Vec::new(),
        )?,
        parse_class(
            tc.cross_zone.as_ref(),
            "crossZone",
            ClassName::CrossZone,
            Vec::new(),
        )?,
        parse_class(
            tc.outside.as_ref(),
            "outside",
            ClassName::Outside,
            Vec::new(),
        )?,
    ];
    let source = zone_source(tc.zone, tc.zone_cidrs, tc.zone_cidrs_file, tc.imds)?;
    Ok(ZoneSpec { source, classes })
}

/// Where the zone CIDRs come from: `zoneCidrs` inline (checked now: an
/// inline map that cannot work is bad input), `zoneCidrsFile`, or, with
/// none of `zone`, `zoneCidrs` and `zoneCidrsFile`, IMDS.
fn zone_source(
    zone: Option<String>,
    inline: Option<ZoneCidrs>,
    file: Option<String>,
    imds: Option<node_topology::RawImds>,
) -> Result<ZoneSource, CniError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            "trafficClasses has both zoneCidrs and zoneCidrsFile",
            "keep one source of zone CIDRs",
        )),
        (Some(m), None) => {
            let zones = parse_zone_map(&m, "trafficClasses.zoneCidrs")?;
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
            let conf = node_topology::ImdsConf::parse(
                &imds.unwrap_or_default(),
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
    let top = subnets_in(raw, "")?;
    let pod = match runtime {
        Some(r) => subnets_in(r, "runtimeConfig.bandwidth")?,
        None => None,
    };
    let written: Top = typed(raw, "")?;
    let zones = written.traffic_classes.map(zones_in).transpose()?;
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
