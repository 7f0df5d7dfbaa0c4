//! Saved previous values, one JSON file per attachment in `stateDir` (the
//! shared [`cni_types::state::StateStore`]: 0600, temp file + rename, no
//! symlinks followed, identity checked on load, a directory lock), so DEL can
//! restore them and CHECK and GC know what ADD did.

use serde::{Deserialize, Serialize};

const STATE_VERSION: u32 = 1;

/// Link values; `None` means "not touched" (in `set`) or "unknown" (in `prev`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkValues {
    /// The alias; `Some("")` means "no alias".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
}

/// One interface we changed: where it is, what it had, what we set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub prev: LinkValues,
    pub set: LinkValues,
}

/// One sysctl we changed inside the pod netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlState {
    /// The key after `{ifname}` substitution (stored as its components).
    pub key: crate::sysctl::SysctlKey,
    pub prev: String,
    pub set: String,
}

/// Everything ADD changed for one attachment (the store keeps the identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The pod netns's identity at ADD: DEL and CHECK act inside a
    /// namespace only when it is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_id: Option<cni_types::env::NetnsId>,
    pub container: LinkState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<LinkState>,
    #[serde(default)]
    pub sysctls: Vec<SysctlState>,
    /// Sysctls an earlier ADD of this attachment changed that the current
    /// configuration no longer sets: not applied, only restored by DEL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_sysctls: Vec<SysctlState>,
    /// For operators (`cni-rs pods`), never to decide what to touch: the
    /// pod and its zone label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<cni_types::env::PodRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// What an operator's view of the node (`cni-rs pods`) reads of a
/// [`State`]: the pod, its zone and the host veth. Only these are decoded;
/// the rest of a record is skipped over, not built, which halves the cost
/// of reading a big node's thousand records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Summary {
    /// Required as in [`State`], so a file that is not a record is still
    /// reported as unreadable.
    pub version: u32,
    #[serde(default)]
    pub host: Option<HostLink>,
    #[serde(default)]
    pub pod: Option<cni_types::env::PodRef>,
    #[serde(default)]
    pub zone: Option<String>,
}

/// The host veth as [`LinkState`] records it, without the values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostLink {
    pub index: u32,
    pub name: String,
}

impl State {
    pub fn new(container: LinkState) -> State {
        State {
            version: STATE_VERSION,
            netns: None,
            netns_id: None,
            container,
            host: None,
            sysctls: Vec::new(),
            pod: None,
            zone: None,
            kept_sysctls: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_without_kept_sysctls_still_loads() {
        let old = r#"{"version":1,"container":{"index":2,"name":"eth0","prev":{"mtu":1500},"set":{"mtu":1400}},
            "sysctls":[{"key":["net","ipv4","tcp_keepalive_time"],"prev":"7200","set":"600"}]}"#;
        let st: State = serde_json::from_str(old).unwrap();
        assert!(st.kept_sysctls.is_empty());
        assert_eq!(st.sysctls.len(), 1);
        // And nothing new is written while there is nothing kept.
        assert!(!serde_json::to_string(&st).unwrap().contains("kept"));
    }

    #[test]
    fn a_summary_reads_what_a_full_record_says() {
        let link = |index, name: &str| LinkState {
            index,
            name: name.into(),
            prev: LinkValues::default(),
            set: LinkValues {
                alias: Some("shop/web us-west-2a".into()),
                mtu: Some(1500),
                txqlen: None,
            },
        };
        let mut st = State::new(link(2, "eth0"));
        st.host = Some(link(7, "eni1"));
        st.netns = Some("/var/run/netns/p".into());
        st.pod = Some(cni_types::env::PodRef {
            namespace: "shop".into(),
            name: "web".into(),
        });
        st.zone = Some("us-west-2a".into());
        let text = serde_json::to_string_pretty(&st).unwrap();
        let sum: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(sum.version, st.version);
        assert_eq!(
            sum.host,
            Some(HostLink {
                index: 7,
                name: "eni1".into()
            })
        );
        assert_eq!(sum.pod, st.pod);
        assert_eq!(sum.zone, st.zone);
        // Not a record: still refused.
        assert!(serde_json::from_str::<Summary>(r#"{"zone":"a"}"#).is_err());
    }
}
