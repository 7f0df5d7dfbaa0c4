//! The plugin's own configuration keys, parsed and validated before anything
//! changes: templates, profiles, MTU ranges, sysctl keys and values, and the
//! sysctl allowlist are all checked here (code 7 on any problem).

pub use crate::alias::{Template, Var, cut_alias};
pub use crate::profiles::{Profile, merge_profiles};
use crate::sysctl::check_sysctl_value;
pub use crate::sysctl::{Pattern, SysctlKey};
use cni_types::NetConf;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use node_topology::{
    ARCH, INSTANCE_TYPE, ImdsConf, Invalid, Labels, REGION, ZONE, ZONE_ID, check_label,
};

pub const DEFAULT_STATE_DIR: &str = "/run/cni/topology-label";
pub const DEFAULT_ALIAS: &str = "{namespace}/{pod} {zone}";
pub use node_topology::DEFAULT_IMDS_ENDPOINT;
const MIN_MTU: u32 = 68;
const MAX_MTU: u32 = 65535;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    labels_file: Option<PathBuf>,
    #[serde(default)]
    imds: Option<node_topology::RawImds>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    annotation_overrides: Vec<String>,
    #[serde(default)]
    profiles: Vec<RawProfile>,
    #[serde(default)]
    sysctl_allowlist: Option<Vec<String>>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
}

/// One profile as written: a block of ours, so a misspelt key is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    #[serde(default, rename = "match")]
    matches: Labels,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, alias = "txQueueLen", alias = "txQLen", alias = "txqlen")]
    txqueuelen: Option<u32>,
    #[serde(default)]
    sysctls: BTreeMap<String, String>,
}

/// The validated plugin configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub network: String,
    pub labels: Labels,
    pub labels_file: Option<PathBuf>,
    pub imds: Option<ImdsConf>,
    /// The zone label must be known from some source.
    pub required: bool,
    /// Alias template; `None` when aliases are disabled (`"alias": ""`).
    pub alias: Option<Template>,
    pub annotation_overrides: Vec<String>,
    pub profiles: Vec<Profile>,
    /// `None`: every `net.*` key is allowed.
    pub sysctl_allowlist: Option<Vec<Pattern>>,
    pub state_dir: PathBuf,
}

pub(crate) use crate::error::invalid;

impl Config {
    pub fn from_netconf(conf: &NetConf) -> anyhow::Result<Config> {
        let raw: Raw = conf.plugin_config()?;
        let state_dir = raw
            .state_dir
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid(format!(
                "stateDir {} must be an absolute path",
                state_dir.display()
            )));
        }
        let mut required = raw.required;
        let imds = match raw.imds {
            Some(i) if i.enabled => {
                required |= i.required;
                Some(
                    ImdsConf::parse(&i, &state_dir.join("imds-cache.json"))
                        .map_err(|e| invalid(e.0))?,
                )
            }
            Some(i) => {
                required |= i.required;
                None
            }
            None => None,
        };
        for (k, v) in &raw.labels {
            check_label(k, v).map_err(|e| invalid(format!("labels: {e}")))?;
        }
        let alias = match raw.alias {
            None => Some(Template::parse(DEFAULT_ALIAS)?),
            Some(s) if s.is_empty() => None,
            Some(s) => Some(Template::parse(&s)?),
        };
        let sysctl_allowlist = raw
            .sysctl_allowlist
            .map(|list| list.iter().map(|p| Pattern::parse(p)).collect())
            .transpose()?;
        let mut profiles = Vec::with_capacity(raw.profiles.len());
        for (i, p) in raw.profiles.into_iter().enumerate() {
            profiles.push(parse_profile(i, p, sysctl_allowlist.as_deref())?);
        }
        for key in &raw.annotation_overrides {
            if key.is_empty() || key.len() > 317 {
                return Err(invalid(format!(
                    "annotationOverrides: {key:?} is not a label key"
                )));
            }
        }
        Ok(Config {
            network: conf.name.clone(),
            labels: raw.labels,
            labels_file: raw.labels_file.filter(|p| !p.as_os_str().is_empty()),
            imds,
            required,
            alias,
            annotation_overrides: raw.annotation_overrides,
            profiles,
            sysctl_allowlist,
            state_dir,
        })
    }
}

/// Only the state directory, for DEL and GC when the rest of the
/// configuration is unusable.
pub fn state_dir_of(raw: &serde_json::Value) -> PathBuf {
    cni_types::state::state_dir_in(raw, DEFAULT_STATE_DIR)
}

fn parse_profile(i: usize, p: RawProfile, allow: Option<&[Pattern]>) -> anyhow::Result<Profile> {
    if let Some(mtu) = p.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&mtu)
    {
        return Err(invalid(format!(
            "profiles[{i}].mtu {mtu} is outside {MIN_MTU}..{MAX_MTU}"
        )));
    }
    if let Some(q) = p.txqueuelen
        && q > i32::MAX as u32
    {
        return Err(invalid(format!(
            "profiles[{i}].txqueuelen {q} is too large"
        )));
    }
    for (key, value) in &p.sysctls {
        // Validate with a placeholder ifname: the real one is checked again
        // when substituted, but a bad template must fail on every pod.
        SysctlKey::resolve(key, "eth0", allow)
            .map_err(|e| invalid(format!("profiles[{i}].sysctls: {e}")))?;
        check_sysctl_value(value)
            .map_err(|e| invalid(format!("profiles[{i}].sysctls[{key:?}]: {e}")))?;
    }
    Ok(Profile {
        matches: p.matches,
        mtu: p.mtu,
        txqueuelen: p.txqueuelen,
        sysctls: p.sysctls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_types::error::CniError;
    use serde_json::json;
    use std::time::Duration;

    fn conf(extra: serde_json::Value) -> anyhow::Result<Config> {
        let mut v = json!({"cniVersion":"1.0.0","name":"net","type":"topology-label"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Config::from_netconf(&NetConf::from_value(v).unwrap())
    }

    fn code(e: anyhow::Error) -> u32 {
        CniError::from_anyhow(&e).code.number()
    }

    #[test]
    fn defaults() {
        let c = conf(json!({})).unwrap();
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.alias.is_some());
        assert!(c.imds.is_none());
        assert!(!c.required);
        let c = conf(json!({"imds":{"enabled":true}})).unwrap();
        let i = c.imds.unwrap();
        assert_eq!(i.endpoint, DEFAULT_IMDS_ENDPOINT);
        assert_eq!(i.timeout, Duration::from_millis(500));
        assert!(conf(json!({"alias":""})).unwrap().alias.is_none());
        assert!(
            conf(json!({"imds":{"enabled":false,"required":true}}))
                .unwrap()
                .required
        );
    }

    #[test]
    fn bad_configs_are_code_7() {
        for bad in [
            json!({"imds":{"enabled":true,"endpoint":"https://x"}}),
            json!({"imds":{"enabled":true,"endpoint":"http://x/path"}}),
            json!({"imds":{"enabled":true,"timeoutMs":0}}),
            json!({"alias":"{nope}"}),
            json!({"alias":"{zone"}),
            json!({"profiles":[{"mtu":67}]}),
            json!({"profiles":[{"mtu":65536}]}),
            json!({"profiles":[{"sysctls":{"kernel.hostname":"x"}}]}),
            json!({"profiles":[{"sysctls":{"net/ipv4/ip_forward":"1"}}]}),
            json!({"profiles":[{"sysctls":{"net.ipv4..x":"1"}}]}),
            json!({"profiles":[{"sysctls":{"net.ipv4.conf...":"1"}}]}),
            json!({"profiles":[{"sysctls":{"net.ipv4.conf.all.rp_filter":"1\n2"}}]}),
            json!({"profiles":[{"sysctls":{"net.ipv4.conf.all.rp_filter":"1"}}],
                   "sysctlAllowlist":["net.ipv6.**"]}),
            json!({"labels":{"topology.kubernetes.io/zone":"bad value"}}),
            json!({"stateDir":"relative"}),
            json!({"profiles":"x"}),
        ] {
            let e = conf(bad.clone()).unwrap_err();
            assert_eq!(code(e), 7, "{bad}");
        }
    }
}
