//! Where labels come from, and which source wins.
//!
//! Lowest to highest: the binary's own architecture, IMDS (live or cached),
//! `labelsFile`, the static `labels` map, then pod annotations for the keys
//! listed in `annotationOverrides` only.

use crate::config::{ARCH, Config, INSTANCE_TYPE, Labels, REGION, ZONE, ZONE_ID, check_label};
use crate::imds;
use cni_types::error::{CniError, Code};
use cni_types::{NetConf, log_warn};
use serde_json::Value;

/// The runtimeConfig key containerd fills with the pod's annotations.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
/// Label sources shared with `bandwidth` live in `node-topology`.
pub use node_topology::{own_arch, read_labels_file};

/// The pod's annotations from runtimeConfig (containerd's capability).
pub fn annotations(conf: &NetConf) -> Labels {
    let mut out = Labels::new();
    if let Some(Value::Object(m)) = conf.runtime_config_entry(ANNOTATIONS_CAPABILITY) {
        for (k, v) in m {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    out
}

/// The node's labels from every source but annotations.
/// `Ok(labels)` even when IMDS fails, unless the configuration requires a zone.
pub fn node_labels(cfg: &Config) -> anyhow::Result<Labels> {
    let file = match &cfg.labels_file {
        Some(p) => read_labels_file(p)?,
        None => Labels::new(),
    };
    let mut labels = Labels::new();
    if let Some(arch) = own_arch() {
        labels.insert(ARCH.to_string(), arch.to_string());
    }
    if let Some(imds_conf) = &cfg.imds {
        // Ask IMDS only for what no higher source already answers.
        let covered = [ZONE, ZONE_ID, REGION, INSTANCE_TYPE]
            .iter()
            .all(|k| cfg.labels.contains_key(*k) || file.contains_key(*k));
        if !covered {
            match imds::labels(imds_conf) {
                Ok(l) => labels.extend(l),
                Err(e) => log_warn!("IMDS gave no labels: {e:#}"),
            }
        }
    }
    labels.extend(file);
    labels.extend(cfg.labels.clone());
    if cfg.required && !labels.contains_key(ZONE) {
        return Err(CniError::new(
            Code::TryAgainLater,
            "node topology labels are required but no source answered",
        )
        .with_details(format!(
            "{ZONE} is not set by labels, labelsFile or IMDS (or its cache)"
        ))
        .into());
    }
    Ok(labels)
}

/// Lays allowlisted annotations over `labels`. Annotation keys are the label
/// keys themselves; values must be valid label values.
pub fn apply_annotations(
    cfg: &Config,
    labels: &mut Labels,
    annotations: &Labels,
) -> anyhow::Result<()> {
    for key in &cfg.annotation_overrides {
        if let Some(v) = annotations.get(key) {
            check_label(key, v).map_err(|why| -> anyhow::Error {
                CniError::new(Code::InvalidConfig, "invalid pod annotation")
                    .with_details(why.to_string())
                    .into()
            })?;
            labels.insert(key.clone(), v.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(extra: Value) -> Config {
        let mut v = json!({"cniVersion":"1.0.0","name":"net","type":"topology-label"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Config::from_netconf(&NetConf::from_value(v).unwrap()).unwrap()
    }

    #[test]
    fn precedence() {
        let dir = std::env::temp_dir().join(format!("tl-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("labels.json");
        std::fs::write(
            &f,
            r#"{"topology.kubernetes.io/zone":"file-a","topology.kubernetes.io/region":"file-r"}"#,
        )
        .unwrap();
        let c = cfg(json!({
            "labelsFile": f,
            "labels": {"topology.kubernetes.io/zone": "static-a"},
            "annotationOverrides": ["topology.kubernetes.io/region"]
        }));
        let mut l = node_labels(&c).unwrap();
        assert_eq!(l[ZONE], "static-a");
        assert_eq!(l[REGION], "file-r");
        let mut ann = Labels::new();
        ann.insert(ZONE.into(), "ann-zone".into());
        ann.insert(REGION.into(), "ann-region".into());
        apply_annotations(&c, &mut l, &ann).unwrap();
        assert_eq!(l[ZONE], "static-a", "zone not allowlisted");
        assert_eq!(l[REGION], "ann-region");
        ann.insert(REGION.into(), "bad value!".into());
        assert!(apply_annotations(&c, &mut l, &ann).is_err());

        std::fs::write(&f, "{not json").unwrap();
        let e = node_labels(&c).unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, Code::InvalidConfig);
        std::fs::write(&f, r#"{"a":1}"#).unwrap();
        assert!(node_labels(&c).is_err());
        std::fs::remove_file(&f).unwrap();
        assert_eq!(node_labels(&c).unwrap()[ZONE], "static-a");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn required_without_zone_is_try_again() {
        let c = cfg(json!({"required": true}));
        let e = node_labels(&c).unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, Code::TryAgainLater);
        assert!(node_labels(&cfg(json!({}))).unwrap().contains_key(ARCH));
    }
}
