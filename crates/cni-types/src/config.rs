//! The network configuration a runtime writes on stdin.
//!
//! The common keys are typed here; each plugin reads its own keys from
//! [`NetConf::raw`] with [`NetConf::plugin_config`]. Unknown keys are
//! ignored everywhere, because runtimes add their own.

use crate::error::{CniError, Code};
use crate::result::CniResult;
use crate::version::Version;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// `value` as `T`: the one way plugins read their own keys, into serde
/// structs. A refusal is code 7 and names the key's path under `what`
/// (`""` for the top level), e.g. `invalid trafficClasses.sameZone` with
/// `trafficClasses.sameZone.ingressRate: invalid type: string "1M", ...`.
pub fn typed<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, CniError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = match (what, path.as_str()) {
            (w, ".") => w.to_string(),
            ("", p) => p.to_string(),
            (w, p) => format!("{w}.{p}"),
        };
        // The message names the block (the path without its last key), the
        // details the key and what was wrong with it.
        let block = at.rsplit_once('.').map_or(at.as_str(), |(b, _)| b);
        let block = if block.is_empty() || at.is_empty() {
            "plugin configuration"
        } else {
            block
        };
        CniError::new(Code::InvalidConfig, format!("invalid {block}")).with_details(
            if at.is_empty() {
                e.inner().to_string()
            } else {
                format!("{at}: {}", e.inner())
            },
        )
    })
}

/// The keys of `obj` that match one of `keys` in any case, read as `T`
/// under the spelling in `keys`. Go's encoding/json matches keys without
/// regard to case, so runtimes send either (containerd `IngressRate`,
/// CRI-O `ingressRate`), and so do users copying them. As in Go, when one
/// key comes in several cases the last non-null one in map order wins, a
/// `null` means "not set", and a bad value in any spelling is refused.
/// Other keys of `obj` are not read: the object is shared.
pub fn any_case<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    keys: &[&str],
    what: &str,
) -> Result<T, CniError> {
    let mut chosen = Map::new();
    let mut shadowed = Vec::new();
    for (key, value) in obj {
        let Some(canonical) = keys.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        if let Some(earlier) = chosen.insert(canonical.to_string(), value.clone()) {
            shadowed.push((canonical.to_string(), earlier));
        }
    }
    for (key, value) in shadowed {
        typed::<T>(&Value::Object(Map::from_iter([(key, value)])), what)?;
    }
    typed(&Value::Object(chosen), what)
}

/// Runtimes never send more than a few KiB; anything near this is not a config.
pub const MAX_STDIN_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
struct Common {
    #[serde(default, rename = "cniVersion")]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    plugin_type: Option<String>,
    #[serde(default)]
    capabilities: Option<Map<String, Value>>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<Map<String, Value>>,
    #[serde(default, rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
}

/// A parsed network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    pub capabilities: Map<String, Value>,
    pub runtime_config: Map<String, Value>,
    pub prev_result: Option<Value>,
    pub args: Option<Value>,
    /// The whole document, for plugin-specific keys.
    pub raw: Value,
}

/// The `cniVersion` of a document, if it has a readable one. Used to answer
/// errors in the caller's version even when the rest is unusable.
pub fn peek_version(raw: &Value) -> Option<Version> {
    raw.get("cniVersion")
        .and_then(Value::as_str)
        .and_then(Version::parse)
}

impl NetConf {
    /// Decodes stdin into a JSON object (code 6 when it is not one).
    pub fn decode(bytes: &[u8]) -> Result<Value, CniError> {
        if bytes.len() > MAX_STDIN_BYTES {
            return Err(
                CniError::new(Code::InvalidConfig, "network configuration too large")
                    .with_details(format!("stdin exceeds {MAX_STDIN_BYTES} bytes")),
            );
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(Code::Decode, "cannot decode network configuration")
                .with_details(e.to_string())
        })?;
        if !value.is_object() {
            return Err(
                CniError::new(Code::Decode, "cannot decode network configuration")
                    .with_details("stdin is not a JSON object"),
            );
        }
        Ok(value)
    }

    /// Reads the common keys of a decoded document.
    pub fn from_value(raw: Value) -> Result<NetConf, CniError> {
        let common = Common::deserialize(&raw).map_err(|e| {
            CniError::new(Code::Decode, "cannot decode network configuration")
                .with_details(e.to_string())
        })?;
        let version_str = common.cni_version.unwrap_or_default();
        let version = Version::parse(&version_str).ok_or_else(|| {
            let supported: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
            CniError::new(Code::IncompatibleVersion, "incompatible CNI version").with_details(
                format!(
                    "cniVersion {version_str:?} is not one of {}",
                    supported.join(", ")
                ),
            )
        })?;
        Ok(NetConf {
            version,
            name: common.name.unwrap_or_default(),
            plugin_type: common.plugin_type.unwrap_or_default(),
            capabilities: common.capabilities.unwrap_or_default(),
            runtime_config: common.runtime_config.unwrap_or_default(),
            prev_result: common.prev_result.filter(|v| !v.is_null()),
            args: common.args,
            raw,
        })
    }

    /// The plugin's own keys, read from the whole document (code 7 on a type error).
    pub fn plugin_config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        typed(&self.raw, "")
    }

    /// `prevResult` as a typed result, `None` when absent.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result
            .as_ref()
            .map(|v| {
                CniResult::from_value(v).map_err(|e| {
                    CniError::new(Code::Decode, "cannot decode prevResult")
                        .with_details(e.to_string())
                })
            })
            .transpose()
    }

    /// A `runtimeConfig` entry, matched case-insensitively: Go runtimes and
    /// plugins match JSON keys without regard to case, and users copy both.
    pub fn runtime_config_entry(&self, key: &str) -> Option<&Value> {
        self.runtime_config.get(key).or_else(|| {
            self.runtime_config
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }

    /// `cni.dev/valid-attachments` of a GC request. The key is required:
    /// without it a GC would judge every attachment stale and remove them
    /// all, so its absence is malformed input (code 7, nothing touched).
    /// `null` and `[]` mean, as the spec says, that none is valid.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        match self.raw.get("cni.dev/valid-attachments") {
            None => Err(CniError::new(
                Code::InvalidConfig,
                "GC without cni.dev/valid-attachments",
            )
            .with_details(
                "the runtime must list the attachments that are still valid; refusing to treat every attachment as stale",
            )),
            Some(Value::Null) => Ok(Vec::new()),
            Some(v) => Vec::<Attachment>::deserialize(v).map_err(|e| {
                CniError::new(Code::Decode, "cannot decode cni.dev/valid-attachments")
                    .with_details(e.to_string())
            }),
        }
    }
}

/// The spec's network name rule, `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. State
/// file names, ifb aliases and log lines carry the name, so `/`, `..`,
/// spaces, newlines and the empty name are refused (code 7) on every verb
/// that can create or judge something. DEL is not refused: nothing could
/// have been created under such a name, and DEL must be able to succeed.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if crate::env::matches_id_rule(name) {
        return Ok(());
    }
    Err(
        CniError::new(Code::InvalidConfig, "invalid network name").with_details(format!(
            "{} must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$",
            crate::error::excerpt(name)
        )),
    )
}

/// The network name of a raw document (empty when absent or not a string),
/// for DEL when the config as a whole no longer parses.
pub fn raw_network_name(raw: &Value) -> &str {
    raw.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// One attachment a runtime still considers live (GC input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decode_rejects_non_objects_and_oversize() {
        assert_eq!(NetConf::decode(b"[1]").unwrap_err().code, Code::Decode);
        assert_eq!(NetConf::decode(b"{\"a\":").unwrap_err().code, Code::Decode);
        let big = vec![b' '; MAX_STDIN_BYTES + 1];
        assert_eq!(NetConf::decode(&big).unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn unknown_keys_ignored_and_version_checked() {
        let c = NetConf::from_value(
            json!({"cniVersion":"0.4.0","name":"n","type":"t","vendorKey":{"a":1}}),
        )
        .unwrap();
        assert_eq!(c.version, Version::V0_4_0);
        assert_eq!(c.name, "n");
        let e = NetConf::from_value(json!({"cniVersion":"9.9.9"})).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = NetConf::from_value(json!({"name":"x"})).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = NetConf::from_value(json!({"cniVersion":"1.0.0","name":5})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
    }

    #[test]
    fn runtime_config_is_case_insensitive() {
        let c = NetConf::from_value(
            json!({"cniVersion":"1.0.0","runtimeConfig":{"bandWidth":{"a":1}}}),
        )
        .unwrap();
        assert!(c.runtime_config_entry("bandwidth").is_some());
    }

    #[test]
    fn network_name_rule() {
        for ok in ["aws-cni", "n", "0.net_1-a"] {
            assert!(validate_network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-n", ".", "..", "a/b", "a b", "a\nb", "ä", "_x"] {
            assert_eq!(
                validate_network_name(bad).unwrap_err().code,
                Code::InvalidConfig,
                "{bad:?}"
            );
        }
        let long = "x/".repeat(5000);
        assert!(validate_network_name(&long).unwrap_err().details.len() < 200);
    }

    #[test]
    fn gc_without_valid_attachments_is_refused() {
        let c = NetConf::from_value(json!({"cniVersion":"1.1.0","name":"n"})).unwrap();
        assert_eq!(c.valid_attachments().unwrap_err().code, Code::InvalidConfig);
        for none in [json!(null), json!([])] {
            let c = NetConf::from_value(
                json!({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":none}),
            )
            .unwrap();
            assert_eq!(c.valid_attachments().unwrap(), vec![]);
        }
    }

    #[test]
    fn valid_attachments() {
        let c = NetConf::from_value(json!({
            "cniVersion":"1.1.0",
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]
        }))
        .unwrap();
        assert_eq!(
            c.valid_attachments().unwrap(),
            vec![Attachment {
                container_id: "a".into(),
                ifname: "eth0".into()
            }]
        );
    }
}
