//! The plugin's own configuration keys, parsed and validated before anything
//! changes: templates, profiles, MTU ranges, sysctl keys and values, and the
//! sysctl allowlist are all checked here (code 7 on any problem).

use cni_types::error::{CniError, Code};
use cni_types::{NetConf, ResultExt};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Labels by Kubernetes key.
pub type Labels = BTreeMap<String, String>;

pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const REGION: &str = "topology.kubernetes.io/region";
pub const ZONE_ID: &str = "topology.k8s.aws/zone-id";
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const ARCH: &str = "kubernetes.io/arch";

pub const DEFAULT_STATE_DIR: &str = "/run/cni/topology-label";
pub const DEFAULT_ALIAS: &str = "{namespace}/{pod} {zone}";
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
const DEFAULT_IMDS_TIMEOUT_MS: u64 = 500;
const DEFAULT_CACHE_TTL_SECONDS: u64 = 3600;
const DEFAULT_FAILURE_BACKOFF_SECONDS: u64 = 30;
const MAX_SYSCTL_VALUE: usize = 256;
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
    imds: Option<RawImds>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawImds {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    cache_file: Option<PathBuf>,
    #[serde(default)]
    cache_ttl_seconds: Option<u64>,
    #[serde(default)]
    failure_backoff_seconds: Option<u64>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// IMDS settings.
#[derive(Debug, Clone)]
pub struct ImdsConf {
    /// `http://host[:port]` without a trailing slash.
    pub endpoint: String,
    pub timeout: Duration,
    pub cache_file: PathBuf,
    pub cache_ttl: Duration,
    /// After a failed fetch, pods skip IMDS this long instead of each
    /// waiting out the timeout (0 disables).
    pub failure_backoff: Duration,
}

/// One profile: settings applied when every `match` label has that value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub matches: Labels,
    pub mtu: Option<u32>,
    pub txqueuelen: Option<u32>,
    /// Key template (dotted, may contain `{ifname}`) -> value.
    pub sysctls: BTreeMap<String, String>,
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

fn invalid(msg: impl Into<String>) -> anyhow::Error {
    CniError::new(Code::InvalidConfig, "invalid topology-label configuration")
        .with_details(msg.into())
        .into()
}

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
                Some(parse_imds(i, &state_dir)?)
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

fn parse_imds(i: RawImds, state_dir: &std::path::Path) -> anyhow::Result<ImdsConf> {
    let endpoint = i
        .endpoint
        .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let host = endpoint.strip_prefix("http://").ok_or_else(|| {
        invalid(format!(
            "imds.endpoint {endpoint:?} must be a plain http:// URL (IMDS has no TLS)"
        ))
    })?;
    if host.is_empty()
        || host.contains(['/', '?', '#', '@'])
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!(
            "imds.endpoint {endpoint:?} must be http://host[:port] with no path"
        )));
    }
    let timeout_ms = i.timeout_ms.unwrap_or(DEFAULT_IMDS_TIMEOUT_MS);
    if !(1..=30_000).contains(&timeout_ms) {
        return Err(invalid(format!(
            "imds.timeoutMs {timeout_ms} must be 1..30000"
        )));
    }
    let cache_file = i
        .cache_file
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| state_dir.join("imds-cache.json"));
    if !cache_file.is_absolute() {
        return Err(invalid(format!(
            "imds.cacheFile {} must be an absolute path",
            cache_file.display()
        )));
    }
    Ok(ImdsConf {
        endpoint,
        timeout: Duration::from_millis(timeout_ms),
        cache_file,
        cache_ttl: Duration::from_secs(i.cache_ttl_seconds.unwrap_or(DEFAULT_CACHE_TTL_SECONDS)),
        failure_backoff: Duration::from_secs(
            i.failure_backoff_seconds
                .unwrap_or(DEFAULT_FAILURE_BACKOFF_SECONDS),
        ),
    })
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

/// A label key and value as Kubernetes allows them (loosely for keys:
/// printable ASCII, no whitespace; values: `[A-Za-z0-9._-]`, at most 63).
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 317 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} is not a valid label key",
            cni_types::error::excerpt(key)
        ));
    }
    if value.len() > 63
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "{key}: {} is not a valid label value (at most 63 of [A-Za-z0-9._-])",
            cni_types::error::excerpt(value)
        ));
    }
    Ok(())
}

fn check_sysctl_value(v: &str) -> Result<(), String> {
    if v.len() > MAX_SYSCTL_VALUE {
        return Err(format!("value longer than {MAX_SYSCTL_VALUE} bytes"));
    }
    if v.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
        return Err(format!(
            "value {} contains a newline or NUL",
            cni_types::error::excerpt(v)
        ));
    }
    Ok(())
}

/// A sysctl key after `{ifname}` substitution, as components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlKey {
    pub components: Vec<String>,
}

impl SysctlKey {
    /// Validates a dotted key template, substitutes `{ifname}` per component
    /// (so an ifname with dots stays one component, as the kernel's own
    /// `eth0/100` convention wants) and checks the allowlist.
    pub fn resolve(
        template: &str,
        ifname: &str,
        allow: Option<&[Pattern]>,
    ) -> Result<SysctlKey, String> {
        if template.contains('/') || template.contains('\0') {
            return Err(format!(
                "key {template:?}: use the dotted form; '/' and NUL are not allowed"
            ));
        }
        let mut components = Vec::new();
        for part in template.split('.') {
            if part.is_empty() {
                return Err(format!("key {template:?} has an empty component"));
            }
            let c = part.replace("{ifname}", ifname);
            if c.is_empty()
                || c == "."
                || c == ".."
                || c.contains('/')
                || c.contains('\0')
                || c.contains(['{', '}'])
                || c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return Err(format!(
                    "key {template:?}: component {part:?} is not allowed"
                ));
            }
            components.push(c);
        }
        if components.first().map(String::as_str) != Some("net") || components.len() < 2 {
            return Err(format!(
                "key {template:?}: only net.* sysctls can be set in a pod's network namespace"
            ));
        }
        let key = SysctlKey { components };
        if let Some(patterns) = allow
            && !patterns.iter().any(|p| p.matches(&key.components))
        {
            return Err(format!("key {template:?} is not in sysctlAllowlist"));
        }
        Ok(key)
    }

    /// Dotted display form (an ifname's dots shown as `/`, like sysctl(8)).
    pub fn display(&self) -> String {
        self.components
            .iter()
            .map(|c| c.replace('.', "/"))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Path under /proc/sys.
    pub fn path(&self) -> PathBuf {
        let mut p = PathBuf::from("/proc/sys");
        for c in &self.components {
            p.push(c);
        }
        p
    }
}

/// An allowlist pattern: dotted components; `*` inside a component matches
/// any run of characters in that component, a component `**` matches any
/// number (>= 0) of components. `{ifname}` matches the attachment's ifname
/// only in the sense that it is written literally as `*` would be: use `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<String>,
}

impl Pattern {
    pub fn parse(s: &str) -> anyhow::Result<Pattern> {
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        if s.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            return Err(invalid(format!(
                "sysctlAllowlist: {s:?} must be dotted components like net.ipv4.conf.*.rp_filter"
            )));
        }
        Ok(Pattern { parts })
    }

    pub fn matches(&self, key: &[String]) -> bool {
        fn go(p: &[String], k: &[String]) -> bool {
            match p.split_first() {
                None => k.is_empty(),
                Some((first, rest)) if first == "**" => {
                    (0..=k.len()).any(|skip| go(rest, &k[skip..]))
                }
                Some((first, rest)) => match k.split_first() {
                    Some((kf, krest)) => glob(first, kf) && go(rest, krest),
                    None => false,
                },
            }
        }
        go(&self.parts, key)
    }
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A parsed alias template: literal text and `{variable}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// Template variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Namespace,
    Pod,
    Uid,
    ContainerId,
    Ifname,
    Network,
    /// A label, by Kubernetes key (`zone`, `region`, ... are shorthands).
    Label(String),
}

impl Template {
    pub fn parse(s: &str) -> anyhow::Result<Template> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| invalid(format!("alias {s:?}: unclosed '{{'")))?;
            let name = &after[..close];
            let var = match name {
                "namespace" => Var::Namespace,
                "pod" => Var::Pod,
                "uid" => Var::Uid,
                "containerId" | "containerID" => Var::ContainerId,
                "ifname" => Var::Ifname,
                "network" => Var::Network,
                "zone" => Var::Label(ZONE.into()),
                "region" => Var::Label(REGION.into()),
                "zoneId" => Var::Label(ZONE_ID.into()),
                "instanceType" => Var::Label(INSTANCE_TYPE.into()),
                "arch" => Var::Label(ARCH.into()),
                other => match other.strip_prefix("label:") {
                    Some(k) if !k.is_empty() => Var::Label(k.to_string()),
                    _ => {
                        return Err(invalid(format!(
                            "alias {s:?}: unknown variable {{{other}}} (known: namespace, pod, uid, \
                             containerId, ifname, network, zone, region, zoneId, instanceType, arch, \
                             label:<key>)"
                        )));
                    }
                },
            };
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(invalid(format!("alias {s:?}: stray '}}'")));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders with `lookup`; unknown values render empty. Control
    /// characters are replaced and surrounding whitespace trimmed.
    pub fn render(&self, lookup: impl Fn(&Var) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v).unwrap_or_default()),
            }
        }
        let cleaned: String = out
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cleaned.trim().to_string()
    }
}

/// Kernel limit for `IFLA_IFALIAS`: IFALIASZ (256) including the NUL.
pub const MAX_ALIAS_BYTES: usize = 255;

/// Cuts `s` to at most [`MAX_ALIAS_BYTES`] on a UTF-8 character boundary.
pub fn cut_alias(s: &str) -> &str {
    if s.len() <= MAX_ALIAS_BYTES {
        return s;
    }
    let mut end = MAX_ALIAS_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The settings the matching profiles add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub mtu: Option<u32>,
    pub txqueuelen: Option<u32>,
    pub sysctls: BTreeMap<String, String>,
}

/// Every profile whose `match` holds (all its labels equal; an empty match
/// always holds) is applied in list order; a later profile overrides an
/// earlier one setting by setting (mtu, txqueuelen, each sysctl key).
pub fn merge_profiles(profiles: &[Profile], labels: &Labels) -> Settings {
    let mut s = Settings::default();
    for p in profiles {
        if p.matches.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            if p.mtu.is_some() {
                s.mtu = p.mtu;
            }
            if p.txqueuelen.is_some() {
                s.txqueuelen = p.txqueuelen;
            }
            for (k, v) in &p.sysctls {
                s.sysctls.insert(k.clone(), v.clone());
            }
        }
    }
    s
}

/// Context for a config error raised outside this module.
pub fn config_error<T>(r: Result<T, String>) -> anyhow::Result<T> {
    r.map_err(anyhow::Error::msg)
        .cni(Code::InvalidConfig, "invalid topology-label configuration")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn sysctl_keys() {
        let k = SysctlKey::resolve("net.ipv4.conf.{ifname}.rp_filter", "eth0.100", None).unwrap();
        assert_eq!(
            k.components,
            ["net", "ipv4", "conf", "eth0.100", "rp_filter"]
        );
        assert_eq!(
            k.path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(k.display(), "net.ipv4.conf.eth0/100.rp_filter");
        for bad in [
            "net",
            "kernel.x",
            "net..x",
            "net.ipv4.conf.{ifname}/../x",
            "net.{x}",
            "net. x",
        ] {
            assert!(SysctlKey::resolve(bad, "eth0", None).is_err(), "{bad}");
        }
        // ".." cannot appear as a component: "net.." has empty components.
        assert!(SysctlKey::resolve("net.{ifname}", "..", None).is_err());
        let allow = [Pattern::parse("net.ipv4.conf.*.rp_filter").unwrap()];
        assert!(
            SysctlKey::resolve("net.ipv4.conf.{ifname}.rp_filter", "eth0", Some(&allow)).is_ok()
        );
        assert!(SysctlKey::resolve("net.ipv4.ip_forward", "eth0", Some(&allow)).is_err());
        let all = [Pattern::parse("net.**").unwrap()];
        assert!(SysctlKey::resolve("net.ipv4.ip_forward", "eth0", Some(&all)).is_ok());
    }

    #[test]
    fn globbing() {
        assert!(glob("*", ""));
        assert!(glob("eth*", "eth0"));
        assert!(glob("*_filter", "rp_filter"));
        assert!(!glob("eth*", "lo"));
        assert!(glob("a*b*c", "axxbyyc"));
    }

    #[test]
    fn template_and_cut() {
        let t = Template::parse("{namespace}/{pod} {zone} {label:x}").unwrap();
        let s = t.render(|v| match v {
            Var::Namespace => Some("ns".into()),
            Var::Pod => Some("p".into()),
            Var::Label(k) if k == ZONE => Some("us-east-1a".into()),
            _ => None,
        });
        assert_eq!(s, "ns/p us-east-1a");
        let long = "é".repeat(200);
        let cut = cut_alias(&long);
        assert!(cut.len() <= 255 && cut.len() == 254);
        assert_eq!(cut_alias("abc"), "abc");
    }

    #[test]
    fn profiles_merge_in_order() {
        let p = |m: &[(&str, &str)], mtu: Option<u32>, q: Option<u32>| Profile {
            matches: m
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            mtu,
            txqueuelen: q,
            sysctls: BTreeMap::new(),
        };
        let profiles = vec![
            p(&[], Some(9001), Some(1000)),
            p(&[(ZONE, "a")], Some(1500), None),
            p(&[(ZONE, "b")], Some(1400), None),
        ];
        let mut l = Labels::new();
        l.insert(ZONE.into(), "a".into());
        let s = merge_profiles(&profiles, &l);
        assert_eq!((s.mtu, s.txqueuelen), (Some(1500), Some(1000)));
        l.clear();
        let s = merge_profiles(&profiles, &l);
        assert_eq!(s.mtu, Some(9001));
    }
}
