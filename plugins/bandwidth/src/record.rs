//! The state record of one attachment: which kernel objects are ours
//! ([`Installed`]), the kinds our roots may be, and who an attachment is.
//! Written before ADD changes anything and after it succeeds; DEL, CHECK
//! and GC act only on what it names.

use crate::classes::ClassName;
use crate::config::EgressMode;
use crate::devices::{IfbOwner, ifb_alias, ifb_owner};
use crate::layout::RootLayout;
use cni_netlink::Link;
use cni_netlink::tc::Qdisc;
use cni_types::env::NetnsId;
use serde::{Deserialize, Serialize};

/// What one attachment has on the host, as recorded in its state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    pub host_veth: String,
    pub host_index: u32,
    /// The root `1:` on the host veth (a tbf, or an htb with classes) is
    /// ours. (The name is kept from when it could only be a tbf.)
    pub ingress_tbf: bool,
    /// The egress ifb's name, when egress is shaped.
    pub ifb: Option<String>,
    /// We created the `ingress` qdisc on the host veth (never a foreign one).
    pub ingress_qdisc: bool,
    /// Our redirect filter's prio under `ffff:`.
    pub filter_prio: Option<u16>,
    /// The root `1:` (tbf or htb) on the container interface (egress mode
    /// "pod", or counting only) is ours.
    #[serde(default)]
    pub pod_tbf: bool,
    /// The clsact on the container interface that resets `skb->priority`
    /// before its htb (pod-side classes) is ours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_clsact: bool,
    /// How egress is shaped (`ifb` or `pod`), for CHECK and operators.
    #[serde(default)]
    pub egress_mode: Option<EgressMode>,
    /// The pod's network namespace at ADD (device and inode of its nsfs
    /// file): DEL and CHECK act inside a namespace only when it is this one.
    #[serde(default)]
    pub netns: Option<NetnsId>,
    /// What the namespace policy decided (asked vs applied), when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyRecord>,
    /// For operators (`cni-rs pods`), never to decide what to touch: the
    /// pod, the rates given to the kernel (bits/s), and the netns path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<cni_types::env::PodRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<String>,
    /// The kinds our root `1:` on the host veth may be (see [`RootKinds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_root_kinds: Option<RootKinds>,
    /// The same for the root `1:` on the container interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_root_kinds: Option<RootKinds>,
    /// The traffic classes' leaf class minors (the same in both
    /// directions), for operators: `cni-rs` names the counters with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassRecord>,
    /// The host-side backstop's nf_tables table (netdev family), when
    /// egress is shaped inside the pod ([`crate::backstop`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backstop: Option<String>,
}

/// Which kinds a root `1:` of ours may be: the one ADD installed, or both
/// while an ADD replaces one kind with the other (a crash in between must
/// not leave either unowned). Records of earlier versions carry none: they
/// only ever made a tbf, so only a tbf counts as theirs. A root of another
/// kind under the same handle (a node tool's `htb 1:`) is never ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKinds {
    #[serde(default)]
    pub tbf: bool,
    #[serde(default)]
    pub htb: bool,
}

impl RootKinds {
    pub(crate) fn of(layout: &RootLayout) -> RootKinds {
        match layout {
            RootLayout::Tbf(_) => RootKinds {
                tbf: true,
                htb: false,
            },
            RootLayout::Htb(_) => RootKinds {
                tbf: false,
                htb: true,
            },
        }
    }

    pub(crate) fn union(a: Option<RootKinds>, b: RootKinds) -> RootKinds {
        let a = a.unwrap_or_default();
        RootKinds {
            tbf: a.tbf || b.tbf,
            htb: a.htb || b.htb,
        }
    }
}

/// `q` is our root `1:` by the record's kinds (`None`: an earlier
/// version's record, a tbf).
pub fn root_is_ours(kinds: Option<RootKinds>, q: &Qdisc) -> bool {
    let k = kinds.unwrap_or(RootKinds {
        tbf: true,
        htb: false,
    });
    q.is_root_shaper() && ((q.kind == "tbf" && k.tbf) || (q.kind == "htb" && k.htb))
}

/// One traffic class as recorded: its name and leaf class `1:minor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassRecord {
    pub name: ClassName,
    pub minor: u32,
}

impl Installed {
    /// True when `netns` is the namespace this record's pod side lives in
    /// (records of earlier versions have none: any pod namespace).
    pub fn same_pod(&self, netns: Option<NetnsId>) -> bool {
        NetnsId::matches_record(self.netns, netns)
    }
}

/// The attachment a record or a device belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Attachment<'_> {
    pub(crate) fn owner_of(&self, link: &Link) -> IfbOwner {
        ifb_owner(link, self.network, self.container_id, self.ifname)
    }

    pub(crate) fn alias(&self) -> String {
        ifb_alias(self.network, self.container_id, self.ifname)
    }
}
