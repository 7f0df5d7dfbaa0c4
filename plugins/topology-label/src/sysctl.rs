//! Sysctls a profile may set inside the pod's network namespace: the key
//! model (`{ifname}` substituted per component, `net.*` only), the
//! operator's allowlist globs, value rules, and reading and writing them
//! under `/proc/sys` (which follows the calling thread's netns).

use cni_types::{Code, ResultExt};
use node_topology::Invalid;
use std::path::PathBuf;

/// Longest value we write to a sysctl.
const MAX_SYSCTL_VALUE: usize = 256;

/// A sysctl value as it may be written: bounded, one line.
pub fn check_sysctl_value(v: &str) -> Result<(), Invalid> {
    if v.len() > MAX_SYSCTL_VALUE {
        return Err(Invalid(format!(
            "value longer than {MAX_SYSCTL_VALUE} bytes"
        )));
    }
    if v.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
        return Err(Invalid(format!(
            "value {} contains a newline or NUL",
            cni_types::error::excerpt(v)
        )));
    }
    Ok(())
}

/// A sysctl key after `{ifname}` substitution, as components (an ifname
/// with dots stays one component). Saved in the state as that list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
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
    ) -> Result<SysctlKey, Invalid> {
        if template.contains('/') || template.contains('\0') {
            return Err(Invalid(format!(
                "key {template:?}: use the dotted form; '/' and NUL are not allowed"
            )));
        }
        let mut components = Vec::new();
        for part in template.split('.') {
            if part.is_empty() {
                return Err(Invalid(format!("key {template:?} has an empty component")));
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
                return Err(Invalid(format!(
                    "key {template:?}: component {part:?} is not allowed"
                )));
            }
            components.push(c);
        }
        if components.first().map(String::as_str) != Some("net") || components.len() < 2 {
            return Err(Invalid(format!(
                "key {template:?}: only net.* sysctls can be set in a pod's network namespace"
            )));
        }
        let key = SysctlKey { components };
        if let Some(patterns) = allow
            && !patterns.iter().any(|p| p.matches(&key.components))
        {
            return Err(Invalid(format!(
                "key {template:?} is not in sysctlAllowlist"
            )));
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
            return Err(crate::error::invalid(format!(
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

/// Compares sysctl values as the kernel prints them (whitespace-separated).
pub fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a sysctl in the calling thread's netns; `None` when it does not
/// exist. Never through a symlink, never blocking, bounded.
pub fn read(key: &SysctlKey) -> anyhow::Result<Option<String>> {
    let bytes = cni_types::fsutil::read_bounded(&key.path(), 4096)
        .cni_with(Code::Io, || format!("cannot read sysctl {}", key.display()))?;
    Ok(bytes.map(|b| {
        String::from_utf8_lossy(&b)
            .trim_end_matches('\n')
            .to_string()
    }))
}

/// Writes a sysctl in the calling thread's netns.
pub fn write(key: &SysctlKey, value: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = cni_types::fsutil::open_regular_nofollow(
        &key.path(),
        std::fs::OpenOptions::new().write(true),
    )
    .cni_with(Code::Kernel, || {
        format!("cannot open sysctl {}", key.display())
    })?;
    f.write_all(value.as_bytes()).cni_with(Code::Kernel, || {
        format!("cannot set sysctl {} to {value:?}", key.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
