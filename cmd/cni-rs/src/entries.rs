//! Our two conflist entries, built from the install flags and judged by
//! the plugins' own config code (the same functions ADD runs, linked in
//! here) before anything on the node changes: a setting every ADD would
//! refuse would fail every pod on the node.
//!
//! Typed structs, serialized in field order: the entries come out in the
//! same key order on every run, so a second install changes nothing.

use crate::install_opts::{ClassFlags, Settings};
use crate::node_files::{self, ReadError};
use crate::ordered_json::Json;
use cni_types::config::NetConf;
use cni_types::error::CniError;
use serde::Serialize;
use std::path::Path;

/// An admin's policy file is a few KB.
const MAX_POLICY_BYTES: u64 = 1 << 20;

#[derive(Serialize)]
struct Caps {
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<bool>,
    #[serde(
        rename = "io.kubernetes.cri.pod-annotations",
        skip_serializing_if = "Option::is_none"
    )]
    annotations: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BandwidthEntry<'a> {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    capabilities: Caps,
    runtime_burst: &'a str,
    latency_ms: u32,
    egress_mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_policy: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic_classes: Option<Classes<'a>>,
}

/// A class's cap: both directions, or nothing.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Cap {
    #[serde(skip_serializing_if = "Option::is_none")]
    ingress_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    egress_rate: Option<u64>,
}

impl Cap {
    fn of(rate: Option<u64>) -> Cap {
        Cap {
            ingress_rate: rate,
            egress_rate: rate,
        }
    }
}

#[derive(Serialize)]
struct SameZone {
    #[serde(skip_serializing_if = "Option::is_none")]
    shaped: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Classes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone_cidrs_file: Option<&'a str>,
    same_zone: SameZone,
    cross_zone: Cap,
    outside: Cap,
}

#[derive(Serialize)]
struct Imds {
    enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TopologyEntry<'a> {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    capabilities: Caps,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels_file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    imds: Option<Imds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<&'a str>,
}

/// Our entries: bandwidth-rs, and topology-label unless left out.
pub struct Entries {
    pub bandwidth: Json,
    pub topology: Option<Json>,
    /// Said once before the pass (a zone file that is not there yet).
    pub notes: Vec<String>,
}

/// Builds and judges the entries; `Err` is the refusal.
pub fn build(s: &Settings) -> Result<Entries, String> {
    let mut notes = Vec::new();
    let namespace_policy = s.namespace_policy.as_deref().map(read_policy).transpose()?;
    let classes = s.classes.as_ref().map(|c| classes(c, &mut notes));
    let bw = BandwidthEntry {
        plugin_type: "bandwidth-rs",
        capabilities: Caps {
            bandwidth: Some(true),
            annotations: None,
        },
        runtime_burst: &s.runtime_burst,
        latency_ms: s.latency_ms,
        egress_mode: &s.egress_mode,
        namespace_policy,
        traffic_classes: classes,
    };
    let bandwidth = to_json(&bw)?;
    judge("bandwidth", &bandwidth, |c| {
        bandwidth_plugin::config::BandwidthConf::parse(c).map(|_| ())
    })?;
    let topology = if s.topology {
        let tl = TopologyEntry {
            plugin_type: "topology-label",
            capabilities: Caps {
                bandwidth: None,
                annotations: Some(true),
            },
            labels_file: Some(s.labels_file.as_str()).filter(|f| !f.is_empty()),
            imds: s.imds.then_some(Imds { enabled: true }),
            alias: s.alias.as_deref(),
        };
        let tl = to_json(&tl)?;
        judge("topology-label", &tl, |c| {
            topology_label_plugin::config::Config::from_netconf(c)
                .map(|_| ())
                .map_err(|e| CniError::from_anyhow(&e))
        })?;
        Some(tl)
    } else {
        None
    };
    Ok(Entries {
        bandwidth,
        topology,
        notes,
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<Json, String> {
    Json::from_serialize(v).map_err(|e| format!("cannot render our entry: {e}"))
}

fn classes<'a>(c: &'a ClassFlags, notes: &mut Vec<String>) -> Classes<'a> {
    if let Some(f) = &c.zone_cidrs_file
        && !Path::new(f).is_file()
    {
        notes.push(format!(
            "note: {f} does not exist yet; pods get code 11 (try again) until node bootstrap writes it"
        ));
    }
    Classes {
        zone: c.zone.as_deref(),
        zone_cidrs_file: c.zone_cidrs_file.as_deref(),
        same_zone: SameZone {
            shaped: c.same_zone_unshaped.then_some(false),
        },
        cross_zone: Cap::of(c.cross_zone_rate),
        outside: Cap::of(c.outside_rate),
    }
}

/// The namespace policy file: a readable regular file holding a JSON
/// object (kept in its own key order); the plugin judges the rest.
fn read_policy(path: &Path) -> Result<Json, String> {
    let p = path.display();
    let bytes = node_files::read_regular(path, MAX_POLICY_BYTES).map_err(|e| match e {
        ReadError::Missing => format!("--namespace-policy {p} does not exist"),
        other => format!("--namespace-policy {p} {other}"),
    })?;
    match Json::parse(&bytes) {
        Ok(j @ Json::Object(_)) => Ok(j),
        Ok(_) => Err(format!(
            "--namespace-policy {p}: must be a JSON object of namespaces"
        )),
        Err(e) => Err(format!("--namespace-policy {p}: {e}")),
    }
}

/// Runs a plugin's own config check on `entry` as a runtime would hand it
/// over (inside a list of the newest version, with a name).
fn judge(
    plugin: &str,
    entry: &Json,
    check: impl FnOnce(&NetConf) -> Result<(), CniError>,
) -> Result<(), String> {
    let mut doc = entry.clone();
    doc.set("cniVersion", Json::String("1.1.0".into()));
    doc.set("name", Json::String("cni-rs-install-check".into()));
    let value = serde_json::to_value(&doc).map_err(|e| format!("cannot render our entry: {e}"))?;
    let conf = NetConf::from_value(value)
        .map_err(|e| format!("{plugin} rejects these settings: {}", why(&e)))?;
    check(&conf).map_err(|e| format!("{plugin} rejects these settings: {}", why(&e)))
}

fn why(e: &CniError) -> String {
    if e.details.is_empty() {
        e.msg.clone()
    } else {
        format!("{}: {}", e.msg, e.details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            latency_ms: 25,
            runtime_burst: "cap".into(),
            egress_mode: "auto".into(),
            namespace_policy: None,
            classes: None,
            labels_file: "/etc/cni/topology-labels.json".into(),
            imds: false,
            alias: None,
            topology: true,
        }
    }

    #[test]
    fn default_entries_in_the_shipped_key_order() {
        let e = build(&settings()).unwrap();
        assert_eq!(
            serde_json::to_string(&e.bandwidth).unwrap(),
            r#"{"type":"bandwidth-rs","capabilities":{"bandwidth":true},"runtimeBurst":"cap","latencyMs":25,"egressMode":"auto"}"#
        );
        assert_eq!(
            serde_json::to_string(&e.topology.unwrap()).unwrap(),
            r#"{"type":"topology-label","capabilities":{"io.kubernetes.cri.pod-annotations":true},"labelsFile":"/etc/cni/topology-labels.json"}"#
        );
    }

    #[test]
    fn the_plugins_judge_the_settings() {
        let mut s = settings();
        s.alias = Some("{nope}".into());
        let err = build(&s).err().unwrap();
        assert!(
            err.contains("topology-label rejects") && err.contains("{nope}"),
            "{err}"
        );
        let mut s = settings();
        s.classes = Some(ClassFlags {
            cross_zone_rate: Some(20_000_000),
            same_zone_unshaped: true,
            ..Default::default()
        });
        let e = build(&s).unwrap();
        assert_eq!(
            serde_json::to_string(e.bandwidth.get("trafficClasses").unwrap()).unwrap(),
            r#"{"sameZone":{"shaped":false},"crossZone":{"ingressRate":20000000,"egressRate":20000000},"outside":{}}"#
        );
    }
}
