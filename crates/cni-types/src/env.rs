//! `CNI_*` environment: parsing and the spec's per-verb requirements.

use crate::error::{CniError, Code};
use std::path::PathBuf;

pub use crate::netns::{NetnsId, check_netns_fd, validate_netns};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Verbs acting on one attachment need its container id and ifname.
    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// DEL must work without a netns: containerd's second DEL has none.
    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Keys are kept in order; the pod identity keys
/// that Kubernetes runtimes send are exposed directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: Vec<(String, String)>,
}

/// Keys we understand; any other key needs `IgnoreUnknown=1/true`.
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_UID",
    "K8S_POD_INFRA_CONTAINER_ID",
];

/// Which Kubernetes pod an attachment belongs to, as the runtime named it in
/// `CNI_ARGS`: recorded in state files for operators (`cni-rs pods`), never
/// used to decide what to touch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl CniArgs {
    /// The pod, when the runtime sent both its namespace and its name.
    pub fn pod(&self) -> Option<PodRef> {
        Some(PodRef {
            namespace: self.pod_namespace()?.to_string(),
            name: self.pod_name()?.to_string(),
        })
    }

    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(CniError::new(Code::InvalidEnv, "invalid CNI_ARGS")
                    .with_details(format!("pair {item:?} is not KEY=VALUE")));
            };
            if k.is_empty() {
                return Err(CniError::new(Code::InvalidEnv, "invalid CNI_ARGS")
                    .with_details(format!("pair {item:?} has an empty key")));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        let args = CniArgs { pairs };
        let ignore_unknown = args
            .get("IgnoreUnknown")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
        if !ignore_unknown
            && let Some((k, _)) = args
                .pairs
                .iter()
                .find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str()))
        {
            return Err(
                CniError::new(Code::InvalidEnv, "unknown key in CNI_ARGS").with_details(format!(
                    "{k:?} is not understood and IgnoreUnknown is not set"
                )),
            );
        }
        Ok(args)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.get("K8S_POD_NAMESPACE").filter(|s| !s.is_empty())
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME").filter(|s| !s.is_empty())
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.get("K8S_POD_UID").filter(|s| !s.is_empty())
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Empty for VERSION, STATUS and GC.
    pub container_id: String,
    /// `None` when unset or empty (allowed for DEL), and on DEL when it is
    /// gone, not a network namespace, or the plugin's own.
    pub netns: Option<PathBuf>,
    /// The identity of `netns`, set by the dispatcher once it validated it.
    pub netns_id: Option<NetnsId>,
    /// Empty for VERSION, STATUS and GC.
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the spec's rule for container ids
/// and, the same, for network names.
pub(crate) fn matches_id_rule(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The spec's container id rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if matches_id_rule(id) {
        Ok(())
    } else {
        Err(CniError::new(Code::InvalidEnv, "invalid CNI_CONTAINERID")
            .with_details(format!("{id:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")))
    }
}

/// The spec's interface name rule: 1..15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(CniError::new(Code::InvalidEnv, "invalid CNI_IFNAME")
            .with_details(format!("{name:?} {why}"))),
    }
}

impl Env {
    /// Reads and validates the environment through `get` (injectable for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        if cmd.is_empty() {
            return Err(CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set"));
        }
        let command = Command::parse(&cmd).ok_or_else(|| {
            CniError::new(Code::InvalidEnv, "unknown CNI_COMMAND").with_details(format!(
                "{cmd:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
            ))
        })?;
        Self::for_command(command, get)
    }

    fn for_command(
        command: Command,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Env, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let require = |k: &str| {
            nonempty(k).ok_or_else(|| {
                CniError::new(Code::InvalidEnv, format!("{k} is not set"))
                    .with_details(format!("{} requires {k}", command.as_str()))
            })
        };
        let (container_id, ifname) = if command.needs_attachment() {
            let id = require("CNI_CONTAINERID")?;
            validate_container_id(&id)?;
            let ifname = require("CNI_IFNAME")?;
            validate_ifname(&ifname)?;
            (id, ifname)
        } else {
            (String::new(), String::new())
        };
        let netns = if command.needs_netns() {
            Some(PathBuf::from(require("CNI_NETNS")?))
        } else {
            nonempty("CNI_NETNS").map(PathBuf::from)
        };
        let args = match nonempty("CNI_ARGS") {
            Some(s) if command.needs_attachment() => CniArgs::parse(&s)?,
            _ => CniArgs::default(),
        };
        let path = nonempty("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Env {
            command,
            container_id,
            netns,
            netns_id: None,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn add_env_parses() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.path.len(), 2);
    }

    #[test]
    fn missing_and_unknown_command() {
        assert_eq!(env(&[]).unwrap_err().code, Code::InvalidEnv);
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            Code::InvalidEnv
        );
    }

    #[test]
    fn del_needs_no_netns_but_add_does() {
        let del = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(del.netns, None);
        let add = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(add.unwrap_err().msg.contains("CNI_NETNS"));
    }

    #[test]
    fn version_needs_nothing() {
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
    }

    #[test]
    fn container_id_rule() {
        for ok in ["a", "0abc", "a_b.c-d", "f3b9c0e8d1"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", ".a", "a/b", "a b", "a;b", "ä"] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ifname_rule() {
        for ok in ["eth0", "a", "net1.100", "x23456789012345"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a:b",
            "a b",
            "a\tb",
            "x234567890123456",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse(
            "K8S_POD_UID=u1;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c;Other=x",
        )
        .unwrap();
        assert_eq!(a.pod_namespace(), Some("ns"));
        assert_eq!(a.pod_name(), Some("p"));
        assert_eq!(a.pod_uid(), Some("u1"));
        assert_eq!(a.get("Other"), Some("x"));
        assert!(CniArgs::parse("Other=x").is_err());
        assert!(CniArgs::parse("K8S_POD_NAME").is_err());
        assert!(CniArgs::parse("=v;IgnoreUnknown=1").is_err());
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert!(CniArgs::parse("IgnoreUnknown=true;Foo=bar;").is_ok());
    }
}
