//! Where labels come from, and which source wins.
//!
//! Lowest to highest: the binary's own architecture, IMDS (live or cached),
//! `labelsFile`, the static `labels` map, then pod annotations for the keys
//! listed in `annotationOverrides` only.

use crate::config::{ARCH, Config, INSTANCE_TYPE, Labels, REGION, ZONE, ZONE_ID, check_label};
use crate::imds;
use cni_types::error::{CniError, Code};
use cni_types::{NetConf, ResultExt, log_warn};
use serde_json::Value;

/// The runtimeConfig key containerd fills with the pod's annotations.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
const MAX_LABELS_FILE: u64 = 1 << 20;

/// `kubernetes.io/arch` of the binary's own target.
pub fn own_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        "arm" => Some("arm"),
        "s390x" => Some("s390x"),
        "powerpc64" => Some("ppc64le"),
        "riscv64" => Some("riscv64"),
        _ => None,
    }
}

/// Reads `labelsFile`: a JSON object of strings. A missing file is no labels.
pub fn read_labels_file(path: &std::path::Path) -> anyhow::Result<Labels> {
    // The operator's file, but never through a symlink at its last
    // component, and never blocking on a FIFO.
    let bytes = match cni_types::fsutil::read_bounded(path, MAX_LABELS_FILE) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Labels::new()),
        // Too large: the file's content is wrong, not the I/O.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("malformed labelsFile {}", path.display()),
            )
            .with_details(format!("larger than {MAX_LABELS_FILE} bytes"))
            .into());
        }
        Err(e) => {
            return Err(e).cni_with(Code::Io, || {
                format!("cannot read labelsFile {}", path.display())
            });
        }
    };
    let malformed = |why: String| -> anyhow::Error {
        CniError::new(
            Code::InvalidConfig,
            format!("malformed labelsFile {}", path.display()),
        )
        .with_details(why)
        .into()
    };
    // Content that is not UTF-8 text is a malformed file, not an I/O failure.
    let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8 text".into()))?;
    if text.len() as u64 > MAX_LABELS_FILE {
        return Err(malformed(format!("larger than {MAX_LABELS_FILE} bytes")));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("not a JSON object of label: value".into()))?;
    let mut labels = Labels::new();
    for (k, v) in obj {
        let s = v
            .as_str()
            .ok_or_else(|| malformed(format!("{k}: value is not a string")))?;
        check_label(k, s).map_err(|e| malformed(e.to_string()))?;
        labels.insert(k.clone(), s.to_string());
    }
    Ok(labels)
}

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
