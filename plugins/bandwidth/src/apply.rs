//! The netlink work behind the verbs, on one model: from the config and
//! the attachment, [`desired`] lists the kernel objects ([`Object`]) the
//! attachment should have, each with its parameters, and the state record
//! ([`Installed`]) says which objects are ours. Then:
//! - ADD ([`install`]) decides everything that could refuse before the
//!   first change, records its intent, removes what is ours but no longer
//!   wanted, and makes each wanted object (creating what is missing,
//!   replacing what differs, adopting its own leftovers and the reference
//!   plugin's layout), undoing what it created when a step fails;
//! - CHECK ([`verify`]) compares each wanted object with the kernel;
//! - DEL and GC ([`teardown`]) remove what is ours in reverse order,
//!   continuing past failures and reporting them all.
//!
//! Layout (the reference's, so `tc` output looks familiar):
//! - into the pod: root `1:` on the host veth;
//! - out of the pod: ifb `bwp…`, `ingress` qdisc on the host veth, a u32
//!   match-all filter redirecting to the ifb, root `1:` on the ifb; or
//!   (`egressMode: "pod"`, and counting without a limit) root `1:` on the
//!   container interface inside the pod netns, which leaves the host veth's
//!   ingress hook (`ffff:`) to a network policy agent's `clsact`.
//!
//! Each root is a tbf, or with traffic classes an htb tree
//! ([`crate::layout`]).

use crate::classes::{ClassName, Direction, Origin, PeerClasses};
use crate::config::{BandwidthConf, EgressMode};
use crate::devices::{IfbOwner, MAX_ALIAS_BYTES, ifb_alias, ifb_candidates, ifb_name, ifb_owner};
use crate::layout::{RootLayout, install_root, root_difference};
use crate::tbf::{Shape, shape};
use anyhow::Context as _;
use cni_netlink::backstop::Backstop;
use cni_netlink::bpf::{CLSACT_EGRESS, PRIORITY_RESET_PRIO};
use cni_netlink::tc::{
    ETH_P_ALL, INGRESS_HANDLE, Qdisc, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR,
};
use cni_netlink::{Link, Netlink, netns};
use cni_types::env::NetnsId;
use cni_types::error::{CniError, Code, Failures, ResultExt};
use cni_types::{log_info, log_warn};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Priority of our redirect filter under `ffff:` (the reference's).
pub const FILTER_PRIO: u16 = 1;

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
    fn of(layout: &RootLayout) -> RootKinds {
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

    fn union(a: Option<RootKinds>, b: RootKinds) -> RootKinds {
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
    fn owner_of(&self, link: &Link) -> IfbOwner {
        ifb_owner(link, self.network, self.container_id, self.ifname)
    }

    pub(crate) fn alias(&self) -> String {
        ifb_alias(self.network, self.container_id, self.ifname)
    }
}

/// The host veth recorded in `inst`, if it still exists under the same
/// index and name (an index can be reused by a new pod).
fn recorded_host(nl: &mut Netlink, inst: &Installed) -> anyhow::Result<Option<Link>> {
    let link = nl
        .link_by_index(inst.host_index)
        .cni_with(Code::Kernel, || format!("looking up {}", inst.host_veth))?;
    Ok(link.filter(|l| l.name == inst.host_veth))
}

/// The shapes for both directions on this host veth.
pub fn shapes(conf: &BandwidthConf, host: &Link) -> (Option<Shape>, Option<Shape>) {
    let mk = |l: &crate::config::Limit| {
        let s = shape(l, host.mtu, conf.latency_ms);
        if s.burst_raised_to_mtu {
            log_warn!(
                "burst raised to {} bytes to fit a full-size frame on {}",
                s.burst_bytes,
                host.name
            );
        }
        s
    };
    (conf.ingress.as_ref().map(mk), conf.egress.as_ref().map(mk))
}

/// One kernel object of an attachment, with what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// Root `1:` on the host veth: traffic into the pod.
    HostRoot(RootLayout),
    /// The ifb egress is redirected to (created, marked, up, host MTU).
    Ifb(String),
    /// The `ingress` qdisc on the host veth.
    IngressQdisc,
    /// The u32 match-all redirect at [`FILTER_PRIO`] under `ffff:` to the ifb.
    Redirect(String),
    /// Root `1:` on the ifb: traffic out of the pod.
    IfbRoot(String, RootLayout),
    /// A clsact on the container interface whose egress filter sets
    /// `skb->priority` to 0 before the htb there can classify by it
    /// ([`cni_netlink::bpf`]): only under an htb.
    PodHook,
    /// Root `1:` on the container interface inside the pod.
    PodRoot(RootLayout),
    /// The host-side backstop of egress shaped inside the pod: an
    /// nf_tables table on the host veth's ingress that a pod sending past
    /// its own qdiscs (`PACKET_QDISC_BYPASS`) cannot reach.
    Backstop(Backstop),
}

/// The objects an attachment should have, in the order they are made
/// (parents and targets first). Pure.
pub fn desired(
    ingress: Option<RootLayout>,
    egress: Option<RootLayout>,
    mode: EgressMode,
    ifb: Option<&str>,
    backstop: Option<Backstop>,
) -> Vec<Object> {
    let mut out = Vec::with_capacity(5);
    if let Some(l) = ingress {
        out.push(Object::HostRoot(l));
    }
    match (egress, mode, ifb) {
        (None, _, _) => {}
        (Some(l), EgressMode::Pod, _) | (Some(l), _, None) => {
            // The backstop first: the pod is held before its shaper exists.
            if let Some(b) = backstop {
                out.push(Object::Backstop(b));
            }
            if matches!(l, RootLayout::Htb(_)) {
                out.push(Object::PodHook);
            }
            out.push(Object::PodRoot(l));
        }
        (Some(l), _, Some(name)) => {
            out.push(Object::Ifb(name.to_string()));
            out.push(Object::IngressQdisc);
            out.push(Object::Redirect(name.to_string()));
            out.push(Object::IfbRoot(name.to_string(), l));
        }
    }
    out
}

impl Installed {
    /// Marks `objects` as ours (the claims before ADD touches the kernel).
    fn claim(&mut self, objects: &[Object]) {
        for o in objects {
            match o {
                Object::HostRoot(l) => {
                    self.ingress_tbf = true;
                    self.ingress_root_kinds =
                        Some(RootKinds::union(self.ingress_root_kinds, RootKinds::of(l)));
                }
                Object::Ifb(name) => self.ifb = Some(name.clone()),
                Object::IngressQdisc => self.ingress_qdisc = true,
                Object::Redirect(_) => self.filter_prio = Some(FILTER_PRIO),
                Object::IfbRoot(..) => {}
                Object::PodHook => self.pod_clsact = true,
                Object::PodRoot(l) => {
                    self.pod_tbf = true;
                    self.pod_root_kinds =
                        Some(RootKinds::union(self.pod_root_kinds, RootKinds::of(l)));
                }
                Object::Backstop(b) => self.backstop = Some(b.table.clone()),
            }
        }
    }

    /// Exactly `objects` as ours (after a successful ADD).
    fn set_to(&mut self, objects: &[Object]) {
        self.ingress_tbf = false;
        self.ifb = None;
        self.ingress_qdisc = false;
        self.filter_prio = None;
        self.pod_tbf = false;
        self.pod_clsact = false;
        self.ingress_root_kinds = None;
        self.pod_root_kinds = None;
        self.backstop = None;
        self.claim(objects);
        self.egress_mode = objects.iter().find_map(|o| match o {
            Object::IfbRoot(..) => Some(EgressMode::Ifb),
            Object::PodRoot(_) => Some(EgressMode::Pod),
            _ => None,
        });
    }
}

/// What to delete when a failing ADD rolls back, in reverse order.
enum Undo {
    Link(u32),
    Root(u32),
    IngressQdisc(u32),
    Filter(u32),
    PodRoot(PathBuf, String, Option<RootKinds>),
    PodHook(PathBuf, String),
    /// A backstop table and its owner (network, container id, ifname).
    Backstop(String, [String; 3]),
}

fn run_undo(nl: &mut Netlink, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::Link(i) => nl.delete_link(i),
            Undo::Root(i) => nl.delete_qdisc(i, TC_H_ROOT, TBF_HANDLE),
            Undo::IngressQdisc(i) => nl.delete_qdisc(i, TC_H_INGRESS, INGRESS_HANDLE),
            Undo::Filter(i) => nl.delete_filter(i, INGRESS_HANDLE, FILTER_PRIO, ETH_P_ALL),
            Undo::PodRoot(ns, ifname, kinds) => {
                if let Err(e) = remove_pod_root(&ns, &ifname, kinds) {
                    log_warn!("rollback step failed: {e:#}");
                }
                Ok(true)
            }
            Undo::PodHook(ns, ifname) => {
                if let Err(e) = remove_pod_hook(&ns, &ifname) {
                    log_warn!("rollback step failed: {e:#}");
                }
                Ok(true)
            }
            Undo::Backstop(table, [network, container_id, ifname]) => {
                let who = Attachment {
                    network: &network,
                    container_id: &container_id,
                    ifname: &ifname,
                };
                if let Err(e) = crate::backstop::remove(&table, &who) {
                    log_warn!("rollback step failed: {e:#}");
                }
                Ok(true)
            }
        };
        if let Err(e) = r {
            log_warn!("rollback step failed: {e}");
        }
    }
}

pub struct AddRequest<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a Path,
    pub netns_id: Option<NetnsId>,
    pub egress_mode: EgressMode,
    pub ingress: Option<Shape>,
    pub egress: Option<Shape>,
    pub policy: Option<crate::policy::PolicyRecord>,
    pub pod: Option<cni_types::env::PodRef>,
    /// Peer classes, when configured.
    pub classes: Option<&'a PeerClasses>,
    pub latency_ms: u32,
}

impl AddRequest<'_> {
    /// What goes at the root of the device shaping `dir`: a tbf for the
    /// pod's limit; an htb tree when classes are configured and there is a
    /// limit to split, or (zone classes) always, to count. None: nothing.
    pub fn layout(&self, dir: Direction, mtu: u32) -> Option<RootLayout> {
        let shape = match dir {
            Direction::IntoPod => self.ingress.as_ref(),
            Direction::OutOfPod => self.egress.as_ref(),
        };
        match self.classes {
            Some(c) if shape.is_some() || c.origin == Origin::Zones => Some(RootLayout::Htb(
                crate::classes::plan(c, shape, dir, mtu, self.latency_ms),
            )),
            _ => shape.map(|s| RootLayout::Tbf(*s)),
        }
    }

    /// A node class cap binds this pod in `dir` though it has no limit.
    pub fn caps_bind(&self, dir: Direction) -> bool {
        self.classes
            .is_some_and(|c| crate::classes::caps_bind_unlimited(c, dir))
    }

    /// The host-side backstop, when egress is shaped inside the pod.
    pub fn backstop(
        &self,
        host: &Link,
        mode: EgressMode,
        egress_shaped: bool,
    ) -> anyhow::Result<Option<Backstop>> {
        let held = self.egress.is_some() || self.caps_bind(Direction::OutOfPod);
        if !(egress_shaped && held && mode == EgressMode::Pod) {
            return Ok(None);
        }
        let b = crate::backstop::spec(self, host);
        crate::backstop::refuse_long_owner(&b)?;
        Ok(Some(b))
    }

    pub fn attachment(&self) -> Attachment<'_> {
        Attachment {
            network: self.network,
            container_id: self.container_id,
            ifname: self.ifname,
        }
    }
}

/// Installs the layout on `host`, replacing what a previous ADD of the
/// same attachment left (`previous`). Returns what is now installed and the
/// ifb link (for the result). On failure, removes what this call created.
///
/// Everything that could refuse (a foreign root qdisc, a foreign ingress
/// hook, no free ifb name) is decided before the first change, so a
/// refusal leaves the node as it was.
pub fn install(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    previous: Option<&Installed>,
    save: &mut dyn FnMut(&Installed) -> anyhow::Result<()>,
) -> anyhow::Result<(Installed, Option<Link>)> {
    let prev = previous.filter(|p| p.host_index == host.index && p.host_veth == host.name);
    // What was ours before this ADD decides ownership. The pod side of a
    // record counts only in the namespace it was made in.
    let mut owned = Installed {
        host_veth: host.name.clone(),
        host_index: host.index,
        ingress_tbf: prev.is_some_and(|p| p.ingress_tbf),
        ifb: prev.and_then(|p| p.ifb.clone()),
        ingress_qdisc: prev.is_some_and(|p| p.ingress_qdisc),
        filter_prio: prev.and_then(|p| p.filter_prio),
        pod_tbf: prev.is_some_and(|p| p.pod_tbf && p.same_pod(req.netns_id)),
        ingress_root_kinds: prev.and_then(|p| p.ingress_root_kinds),
        pod_root_kinds: prev.and_then(|p| p.pod_root_kinds),
        pod_clsact: prev.is_some_and(|p| p.pod_clsact && p.same_pod(req.netns_id)),
        egress_mode: prev.and_then(|p| p.egress_mode),
        netns: req.netns_id,
        policy: req.policy.clone(),
        pod: req.pod.clone(),
        ingress_rate: req.ingress.map(|s| s.rate_bytes_per_sec.saturating_mul(8)),
        egress_rate: req.egress.map(|s| s.rate_bytes_per_sec.saturating_mul(8)),
        netns_path: (!req.netns.as_os_str().is_empty()).then(|| req.netns.display().to_string()),
        classes: Vec::new(),
        backstop: prev.and_then(|p| p.backstop.clone()),
    };
    let ingress_layout = req.layout(Direction::IntoPod, host.mtu);
    let egress_layout = req.layout(Direction::OutOfPod, host.mtu);
    let qdiscs = nl
        .top_qdiscs(host.index)
        .cni_with(Code::Kernel, || format!("listing qdiscs of {}", host.name))?;
    adopt_own_layout(nl, host, req, &qdiscs, &mut owned)?;
    // Counting without a limit needs no ifb (whose deletion would add the
    // kernel's ~20 ms to every DEL): the pod side counts what leaves it.
    let mode =
        if req.egress.is_none() && egress_layout.is_some() && !req.caps_bind(Direction::OutOfPod) {
            EgressMode::Pod
        } else {
            resolve_egress_mode(req, host, &qdiscs, owned.ingress_qdisc)?
        };
    if ingress_layout.is_some() {
        let root = qdiscs.iter().find(|q| q.is_root());
        refuse_foreign_root(
            root,
            owned.ingress_tbf,
            owned.ingress_root_kinds,
            &host.name,
        )?;
    }
    // The pod's root and hook qdiscs, read once: judged here, and reused
    // by the steps that install the pod side.
    let (pod_root, pod_hook) = if egress_layout.is_some() && mode == EgressMode::Pod {
        let (root, hook) = pod_top_qdiscs(req.netns, req.ifname)?;
        let device = format!("the pod's {}", req.ifname);
        refuse_foreign_root(root.as_ref(), owned.pod_tbf, owned.pod_root_kinds, &device)?;
        if matches!(egress_layout, Some(RootLayout::Htb(_))) {
            refuse_foreign_hook(hook.as_ref(), owned.pod_clsact, &device)?;
        }
        (root, hook)
    } else {
        (None, None)
    };
    let ifb = match (&egress_layout, mode) {
        (Some(_), EgressMode::Ifb | EgressMode::Auto) => Some(choose_ifb(nl, req, &owned)?),
        _ => None,
    };
    let classes = [&ingress_layout, &egress_layout]
        .into_iter()
        .find_map(|l| match l {
            Some(RootLayout::Htb(p)) => Some(
                p.names
                    .iter()
                    .map(|&(name, minor)| ClassRecord { name, minor })
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    let backstop = req.backstop(host, mode, egress_layout.is_some())?;
    let want = desired(
        ingress_layout,
        egress_layout,
        mode,
        ifb.as_deref(),
        backstop,
    );
    // The claims: what was ours plus what this ADD may create, recorded
    // before the kernel is touched, so a crash from here on leaves a state
    // file that lets DEL find everything.
    let mut inst = owned.clone();
    inst.classes = classes;
    inst.claim(&want);
    save(&inst)?;
    let mut run = Reconcile {
        nl,
        host,
        req,
        qdiscs: &qdiscs,
        pod_root: pod_root.as_ref(),
        pod_hook: pod_hook.as_ref(),
        owned: &owned,
        undo: Vec::new(),
        ifb: None,
    };
    let made = run
        .remove_unwanted(&want)
        .and_then(|()| want.iter().try_for_each(|o| run.ensure(o)));
    match made {
        Ok(()) => {
            inst.set_to(&want);
            save(&inst)?;
            Ok((inst, run.ifb.map(|(l, _)| l)))
        }
        Err(e) => {
            let undo = std::mem::take(&mut run.undo);
            run_undo(run.nl, undo);
            Err(e)
        }
    }
}

/// Only the kernel's default root (handle `0:`) is free to replace; a root
/// qdisc with a handle was put there by someone, and is ours only when our
/// record (or an adopted layout of this attachment) says so.
fn refuse_foreign_root(
    root: Option<&cni_netlink::tc::Qdisc>,
    ours: bool,
    kinds: Option<RootKinds>,
    device: &str,
) -> anyhow::Result<()> {
    let Some(r) = root else { return Ok(()) };
    let free = r.is_default_root() || (ours && root_is_ours(kinds, r));
    if free {
        return Ok(());
    }
    Err(
        CniError::new(Code::Kernel, format!("{device} already has a root qdisc"))
            .with_details(format!(
                "a {} qdisc {:x}: we did not create is installed; refusing to replace it",
                r.kind,
                r.handle >> 16
            ))
            .into(),
    )
}

/// The ifb this attachment uses: the one it already owns when it still
/// is its own, else the first candidate name that is free or marked as
/// this attachment's. A name held by another attachment (or anything
/// else) is never adopted: two attachments sharing an ifb would rewrite
/// each other's rate, and one's DEL would blackhole the other.
fn choose_ifb(nl: &mut Netlink, req: &AddRequest<'_>, owned: &Installed) -> anyhow::Result<String> {
    let who = req.attachment();
    if who.alias().len() > MAX_ALIAS_BYTES {
        return Err(CniError::new(
            Code::InvalidConfig,
            "network name and container id are too long to mark an ifb as ours",
        )
        .with_details(format!(
            "the ifb's alias would be {} bytes; the kernel keeps {MAX_ALIAS_BYTES}",
            who.alias().len()
        ))
        .into());
    }
    if let Some(name) = &owned.ifb {
        match nl
            .link_by_name(name)
            .cni_with(Code::Kernel, || format!("looking up {name}"))?
        {
            None => return Ok(name.clone()),
            Some(l) if who.owner_of(&l) != IfbOwner::Foreign => return Ok(name.clone()),
            Some(l) => log_warn!(
                "{name} recorded for this attachment now belongs to someone else ({:?}); choosing another name",
                l.alias
            ),
        }
    }
    let candidates = ifb_candidates(req.network, req.container_id, req.ifname);
    for name in &candidates {
        match nl
            .link_by_name(name)
            .cni_with(Code::Kernel, || format!("looking up {name}"))?
        {
            None => return Ok(name.clone()),
            Some(l) if who.owner_of(&l) == IfbOwner::ThisAttachment => return Ok(name.clone()),
            Some(l) => log_info!(
                "{name} is taken ({} {:?}); trying the next name",
                l.kind.as_deref().unwrap_or("link"),
                l.alias
            ),
        }
    }
    Err(
        CniError::new(Code::Kernel, "no free ifb name for this attachment")
            .with_details(format!(
                "every candidate ({}) exists and belongs to someone else",
                candidates.join(", ")
            ))
            .into(),
    )
}

/// One ADD's way from what is there to what is wanted: what it found
/// before the first change, and what to undo if a step fails.
struct Reconcile<'a, 'n> {
    nl: &'n mut Netlink,
    host: &'a Link,
    req: &'a AddRequest<'a>,
    /// The host veth's root and ingress-hook qdiscs before the ADD.
    qdiscs: &'a [Qdisc],
    /// The container interface's root qdisc (mode pod).
    pod_root: Option<&'a Qdisc>,
    /// The container interface's ingress-hook qdisc (mode pod).
    pod_hook: Option<&'a Qdisc>,
    /// What the attachment owned before this ADD.
    owned: &'a Installed,
    undo: Vec<Undo>,
    /// The ifb once made, and whether this ADD created it.
    ifb: Option<(Link, bool)>,
}

impl Reconcile<'_, '_> {
    /// Removes what is ours but not wanted any more (egress moved between
    /// the ifb and the pod, a direction no longer shaped), before anything
    /// is made: the ingress hook or a root may be needed by what follows.
    fn remove_unwanted(&mut self, want: &[Object]) -> anyhow::Result<()> {
        let wants = |f: fn(&Object) -> bool| want.iter().any(f);
        let (host, owned) = (self.host, self.owned);
        if owned.pod_tbf && !wants(|o| matches!(o, Object::PodRoot(_))) {
            remove_pod_root(self.req.netns, self.req.ifname, owned.pod_root_kinds)?;
        }
        if owned.pod_clsact && !wants(|o| matches!(o, Object::PodHook)) {
            remove_pod_hook(self.req.netns, self.req.ifname)?;
        }
        if let Some(table) = &owned.backstop
            && !wants(|o| matches!(o, Object::Backstop(_)))
        {
            crate::backstop::remove(table, &self.req.attachment())?;
        }
        if !wants(|o| matches!(o, Object::Redirect(_)))
            && let Some(prio) = owned.filter_prio
        {
            self.nl
                .delete_filter(host.index, INGRESS_HANDLE, prio, ETH_P_ALL)
                .cni_with(Code::Kernel, || {
                    format!("removing filter from {}", host.name)
                })?;
        }
        if owned.ingress_qdisc && !wants(|o| matches!(o, Object::IngressQdisc)) {
            delete_qdisc_if(
                self.nl,
                host,
                Qdisc::is_ingress,
                TC_H_INGRESS,
                INGRESS_HANDLE,
            )?;
        }
        if let Some(name) = &owned.ifb
            && !want.contains(&Object::Ifb(name.clone()))
        {
            delete_owned_ifb(self.nl, name, &self.req.attachment())?;
        }
        if owned.ingress_tbf && !wants(|o| matches!(o, Object::HostRoot(_))) {
            let root = self.qdiscs.iter().find(|q| q.is_root());
            if root.is_some_and(|r| root_is_ours(owned.ingress_root_kinds, r)) {
                self.nl
                    .delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE)
                    .cni_with(Code::Kernel, || {
                        format!("removing our root qdisc from {}", host.name)
                    })?;
            }
        }
        Ok(())
    }

    /// Makes one object what it should be.
    fn ensure(&mut self, o: &Object) -> anyhow::Result<()> {
        let host = self.host;
        match o {
            Object::HostRoot(layout) => {
                // Judged free (default) or ours before anything changed.
                let root = self.qdiscs.iter().find(|q| q.is_root());
                if root.is_none_or(|r| !r.is_root_shaper()) {
                    self.undo.push(Undo::Root(host.index));
                }
                install_root(self.nl, host, layout, root)?;
                log_info!("ingress: {} on {}", layout.describe(), host.name);
            }
            Object::Ifb(name) => {
                let made = self.ifb_link(name)?;
                self.ifb = Some(made);
            }
            Object::IngressQdisc => self.ingress_qdisc()?,
            Object::Redirect(_) => {
                let ifb = self.made_ifb()?;
                self.redirect_to(&ifb)?;
            }
            Object::IfbRoot(_, layout) => {
                let (ifb, created) = self
                    .ifb
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("internal: the ifb root before the ifb"))?;
                // The ifb is ours whole; a new one has only the default.
                let root = if created {
                    None
                } else {
                    self.nl
                        .top_qdiscs(ifb.index)
                        .cni_with(Code::Kernel, || format!("listing qdiscs of {}", ifb.name))?
                        .into_iter()
                        .find(|q| q.is_root())
                };
                install_root(self.nl, &ifb, layout, root.as_ref())?;
                log_info!(
                    "egress: {} on {} (from {})",
                    layout.describe(),
                    ifb.name,
                    host.name
                );
            }
            Object::PodHook => {
                let req = self.req;
                let existed = self.owned.pod_clsact && self.pod_hook.is_some_and(Qdisc::is_clsact);
                if !existed {
                    // Before the change: a clsact added by a step that then
                    // fails is this ADD's to remove.
                    self.undo.push(Undo::PodHook(
                        req.netns.to_path_buf(),
                        req.ifname.to_string(),
                    ));
                }
                in_pod(req.netns, req.ifname, |pn, link| {
                    let link = vanished_if_none(link, req.ifname)?;
                    if !existed {
                        pn.add_clsact_qdisc(link.index).cni_with(Code::Kernel, || {
                            format!("adding a clsact to the pod's {}", req.ifname)
                        })?;
                    }
                    if !has_priority_reset(pn, &link)? {
                        pn.add_priority_reset(link.index)
                            .cni_with(Code::Kernel, || {
                                format!("resetting skb priority on the pod's {}", req.ifname)
                            })?;
                    }
                    Ok(())
                })?;
            }
            Object::Backstop(b) => {
                if crate::backstop::ensure(b)? {
                    let who = self.req.attachment();
                    self.undo.push(Undo::Backstop(
                        b.table.clone(),
                        [who.network, who.container_id, who.ifname].map(String::from),
                    ));
                }
            }
            Object::PodRoot(layout) => {
                let req = self.req;
                let pod_root = self.pod_root;
                let existed = self.owned.pod_tbf
                    && pod_root.is_some_and(|q| root_is_ours(self.owned.pod_root_kinds, q));
                in_pod(req.netns, req.ifname, |pn, link| {
                    let link = vanished_if_none(link, req.ifname)?;
                    install_root(pn, &link, layout, pod_root)
                        .with_context(|| format!("in the pod's {}", req.ifname))
                })?;
                if !existed {
                    self.undo.push(Undo::PodRoot(
                        req.netns.to_path_buf(),
                        req.ifname.to_string(),
                        Some(RootKinds::of(layout)),
                    ));
                }
                log_info!(
                    "egress (inside the pod): {} on {}",
                    layout.describe(),
                    req.ifname
                );
            }
        }
        Ok(())
    }

    fn made_ifb(&self) -> anyhow::Result<Link> {
        self.ifb
            .as_ref()
            .map(|(l, _)| l.clone())
            .ok_or_else(|| anyhow::anyhow!("internal: the redirect before the ifb"))
    }

    /// The chosen ifb: created, or (ours: marked for this attachment, left
    /// by a retried or crashed ADD, or adopted from the reference plugin's
    /// layout) brought in line. choose_ifb never hands out another's.
    /// True when it was created now.
    fn ifb_link(&mut self, name: &str) -> anyhow::Result<(Link, bool)> {
        let host = self.host;
        let who = self.req.attachment();
        let alias = who.alias();
        let existing = self
            .nl
            .link_by_name(name)
            .cni_with(Code::Kernel, || format!("looking up {name}"))?;
        let Some(existing) = existing else {
            let l = self
                .nl
                .create_ifb(name, host.mtu, Some(&alias))
                .cni_with(Code::Kernel, || format!("creating ifb {name}"))?;
            self.undo.push(Undo::Link(l.index));
            return Ok((l, true));
        };
        if who.owner_of(&existing) == IfbOwner::Foreign {
            return Err(
                CniError::new(Code::Kernel, format!("{name} belongs to someone else"))
                    .with_details(format!(
                        "kind {:?}, alias {:?}",
                        existing.kind, existing.alias
                    ))
                    .into(),
            );
        }
        if existing.mtu != host.mtu {
            self.nl
                .set_mtu(existing.index, host.mtu)
                .cni_with(Code::Kernel, || format!("setting mtu of {name}"))?;
        }
        if existing.alias.as_deref() != Some(alias.as_str()) {
            self.nl
                .set_alias(existing.index, &alias)
                .cni_with(Code::Kernel, || format!("marking {name}"))?;
        }
        if !existing.up {
            self.nl
                .set_up(existing.index)
                .cni_with(Code::Kernel, || format!("bringing up {name}"))?;
        }
        Ok((existing, false))
    }

    /// The `ingress` qdisc on the host veth: ours, or added now.
    fn ingress_qdisc(&mut self) -> anyhow::Result<()> {
        let host = self.host;
        match self.qdiscs.iter().find(|q| q.on_ingress_hook()) {
            None => {
                self.nl
                    .add_ingress_qdisc(host.index)
                    .cni_with(Code::Kernel, || {
                        format!("adding ingress qdisc to {}", host.name)
                    })?;
                self.undo.push(Undo::IngressQdisc(host.index));
                Ok(())
            }
            Some(q) if q.is_ingress() && self.owned.ingress_qdisc => Ok(()),
            Some(q) => Err(CniError::new(
                Code::Kernel,
                format!("{} already has a {} qdisc that we did not create", host.name, q.kind),
            )
            .with_details("another tc user (for example the VPC CNI network policy agent) owns ffff:; egress shaping through an ifb would bypass or break it")
            .into()),
        }
    }

    /// Our match-all redirect at FILTER_PRIO to `ifb`; a stale one of ours
    /// is replaced, a foreign filter at that prio refused.
    fn redirect_to(&mut self, ifb: &Link) -> anyhow::Result<()> {
        let (host, owned) = (self.host, self.owned);
        let filters = self
            .nl
            .filters(host.index, INGRESS_HANDLE)
            .cni_with(Code::Kernel, || format!("listing filters of {}", host.name))?;
        let at_prio: Vec<_> = filters.iter().filter(|f| f.prio == FILTER_PRIO).collect();
        let ours_ok = at_prio.iter().any(|f| {
            f.kind == "u32"
                && f.mirred
                    .iter()
                    .any(|m| m.action == TCA_EGRESS_REDIR && m.ifindex == ifb.index)
        });
        if ours_ok {
            return Ok(());
        }
        if !at_prio.is_empty() {
            if owned.filter_prio != Some(FILTER_PRIO) {
                return Err(CniError::new(
                    Code::Kernel,
                    format!("{} has a foreign filter at prio {FILTER_PRIO}", host.name),
                )
                .into());
            }
            // Our own stale filter (redirecting to an ifb that was re-created).
            self.nl
                .delete_filter(host.index, INGRESS_HANDLE, FILTER_PRIO, ETH_P_ALL)
                .cni_with(Code::Kernel, || "removing stale filter")?;
        }
        self.nl
            .add_u32_redirect_all(host.index, INGRESS_HANDLE, FILTER_PRIO, ifb.index)
            .cni_with(Code::Kernel, || {
                format!("redirecting {} to {}", host.name, ifb.name)
            })?;
        if owned.filter_prio.is_none() {
            self.undo.push(Undo::Filter(host.index));
        }
        Ok(())
    }
}

/// An `ingress` qdisc whose redirects all go to one ifb of this attachment
/// was made for this attachment: by us before the state was lost (the ifb
/// carries our mark), or by the reference plugin before an upgrade (an
/// unmarked ifb under the reference name, prio 1 and root tbf `1:`). It is
/// adopted rather than taken for another tc user's, which would shape
/// egress twice. An ifb marked for another attachment is never adopted.
fn adopt_own_layout(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    qdiscs: &[cni_netlink::tc::Qdisc],
    owned: &mut Installed,
) -> anyhow::Result<()> {
    let has_ingress = qdiscs.iter().any(|q| q.is_ingress());
    if owned.ingress_qdisc || !has_ingress {
        return Ok(());
    }
    let filters = nl
        .filters(host.index, INGRESS_HANDLE)
        .cni_with(Code::Kernel, || format!("listing filters of {}", host.name))?;
    let redirects: Vec<_> = filters.iter().filter(|f| !f.mirred.is_empty()).collect();
    let Some(target) = redirects
        .first()
        .and_then(|f| f.mirred.first())
        .map(|m| m.ifindex)
    else {
        return Ok(());
    };
    let all_to_target = redirects
        .iter()
        .all(|f| f.kind == "u32" && f.mirred.iter().all(|m| m.ifindex == target));
    if !all_to_target {
        return Ok(());
    }
    let Some(ifb) = nl
        .link_by_index(target)
        .cni_with(Code::Kernel, || format!("looking up #{target}"))?
    else {
        return Ok(());
    };
    let ours = match req.attachment().owner_of(&ifb) {
        IfbOwner::ThisAttachment => true,
        IfbOwner::Unmarked => ifb.name == ifb_name(req.network, req.container_id),
        IfbOwner::Foreign => false,
    };
    if ours {
        log_info!(
            "adopting the ingress qdisc, filter and {} on {} (made for this attachment)",
            ifb.name,
            host.name
        );
        owned.ingress_qdisc = true;
        owned.filter_prio = redirects.first().map(|f| f.prio);
        owned.ifb = Some(ifb.name);
        owned.ingress_tbf |= qdiscs.iter().any(|q| q.is_root_tbf());
    }
    Ok(())
}

/// ifb or pod, from the config and what already sits on the host veth's
/// ingress hook. `ifb` next to a foreign `clsact`/`ingress` is refused: an
/// ifb redirect there would break the other user or let traffic skip it.
fn resolve_egress_mode(
    req: &AddRequest<'_>,
    host: &Link,
    qdiscs: &[cni_netlink::tc::Qdisc],
    ingress_qdisc_is_ours: bool,
) -> anyhow::Result<EgressMode> {
    let foreign = qdiscs
        .iter()
        .find(|q| q.on_ingress_hook() && !(q.is_ingress() && ingress_qdisc_is_ours));
    let mode = match (req.egress_mode, foreign) {
        (EgressMode::Ifb, Some(q)) if req.egress.is_some() => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("egressMode \"ifb\" conflicts with a {} qdisc on {}", q.kind, host.name),
            )
            .with_details(
                "another tc user (for example the VPC CNI network policy agent) owns the ingress hook ffff: of the host veth; \
                 use egressMode \"pod\" or \"auto\" to shape egress inside the pod instead",
            )
            .into());
        }
        (EgressMode::Auto, Some(q)) => {
            log_info!(
                "egress: {} has a foreign {} qdisc, shaping egress inside the pod",
                host.name,
                q.kind
            );
            EgressMode::Pod
        }
        (EgressMode::Auto, None) => EgressMode::Ifb,
        (m, _) => m,
    };
    Ok(mode)
}

/// Runs `f` inside the pod's netns with a socket there and the container
/// interface (`None` when it is gone).
fn in_pod<T>(
    ns: &Path,
    ifname: &str,
    f: impl FnOnce(&mut Netlink, Option<Link>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    netns::run_in(ns, || {
        let mut pn = Netlink::new().context("opening netlink in the pod netns")?;
        let link = pn
            .link_by_name(ifname)
            .cni_with(Code::Kernel, || format!("looking up {ifname}"))?;
        f(&mut pn, link)
    })
}

/// The container interface ADD found a moment ago, or code 102 when it is gone.
fn vanished_if_none(link: Option<Link>, ifname: &str) -> anyhow::Result<Link> {
    link.ok_or_else(|| {
        CniError::new(
            Code::InterfaceNotFound,
            format!("{ifname} vanished from the pod"),
        )
        .into()
    })
}

/// The container interface CHECK looks at, or a mismatch when it is gone.
fn missing_if_none(link: Option<Link>, ifname: &str) -> anyhow::Result<Link> {
    link.ok_or_else(|| mismatch(format!("{ifname} is missing in the pod")))
}

/// The root and ingress-hook qdiscs of the container interface inside the
/// pod, if any.
fn pod_top_qdiscs(ns: &Path, ifname: &str) -> anyhow::Result<(Option<Qdisc>, Option<Qdisc>)> {
    in_pod(ns, ifname, |pn, link| {
        let Some(link) = link else {
            return Ok((None, None));
        };
        let qs = pn
            .top_qdiscs(link.index)
            .cni_with(Code::Kernel, || format!("listing qdiscs of {ifname}"))?;
        let root = qs.iter().find(|q| q.is_root()).cloned();
        let hook = qs.into_iter().find(|q| q.on_ingress_hook());
        Ok((root, hook))
    })
}

/// Our priority-reset filter (see [`cni_netlink::bpf`]) is on `link`'s
/// clsact egress hook.
fn has_priority_reset(nl: &mut Netlink, link: &Link) -> anyhow::Result<bool> {
    let filters = nl
        .filters(link.index, CLSACT_EGRESS)
        .cni_with(Code::Kernel, || format!("listing filters of {}", link.name))?;
    Ok(filters
        .iter()
        .any(|f| f.kind == "bpf" && f.prio == PRIORITY_RESET_PRIO))
}

/// The container interface's ingress hook is free, or holds our clsact.
fn refuse_foreign_hook(hook: Option<&Qdisc>, ours: bool, device: &str) -> anyhow::Result<()> {
    match hook {
        None => Ok(()),
        Some(q) if ours && q.is_clsact() => Ok(()),
        Some(q) => Err(CniError::new(
            Code::Kernel,
            format!("{device} already has a {} qdisc that we did not create", q.kind),
        )
        .with_details(
            "traffic classes inside the pod need a clsact of ours there, to keep the pod's sockets from choosing an htb class by SO_PRIORITY",
        )
        .into()),
    }
}

/// Removes our clsact from the container interface, if it is still there.
fn remove_pod_hook(ns: &Path, ifname: &str) -> anyhow::Result<()> {
    in_pod(ns, ifname, |pn, link| match link {
        Some(link) => delete_qdisc_if(pn, &link, Qdisc::is_clsact, TC_H_INGRESS, INGRESS_HANDLE),
        None => Ok(()),
    })
}

/// Removes our root `1:` from the container interface, if it is still
/// there and of a kind the record says is ours.
fn remove_pod_root(ns: &Path, ifname: &str, kinds: Option<RootKinds>) -> anyhow::Result<()> {
    in_pod(ns, ifname, |pn, link| match link {
        Some(link) => delete_qdisc_if(pn, &link, |q| root_is_ours(kinds, q), TC_H_ROOT, TBF_HANDLE),
        None => Ok(()),
    })
}

/// Deletes `link`'s qdisc at (`parent`, `handle`) if the one there is
/// `what` (by kind too: `ingress` and `clsact` share `ffff:`, and a tbf
/// may have been replaced by someone else's qdisc since).
fn delete_qdisc_if(
    nl: &mut Netlink,
    link: &Link,
    what: impl Fn(&Qdisc) -> bool,
    parent: u32,
    handle: u32,
) -> anyhow::Result<()> {
    let present = nl
        .top_qdiscs(link.index)
        .cni_with(Code::Kernel, || format!("listing qdiscs of {}", link.name))?
        .iter()
        .any(what);
    if present {
        nl.delete_qdisc(link.index, parent, handle)
            .cni_with(Code::Kernel, || {
                format!("removing qdisc {:x}: from {}", handle >> 16, link.name)
            })?;
    }
    Ok(())
}

/// Deletes the ifb `name` if it is this attachment's: marked for it, or
/// unmarked (the reference plugin's, or created and killed before the
/// mark; the caller knows the name is this attachment's). An ifb marked
/// for another attachment is left alone: deleting it would blackhole that
/// pod's egress. Fine when it is already gone.
pub fn delete_owned_ifb(nl: &mut Netlink, name: &str, who: &Attachment<'_>) -> anyhow::Result<()> {
    let Some(l) = nl
        .link_by_name(name)
        .cni_with(Code::Kernel, || format!("looking up {name}"))?
    else {
        return Ok(());
    };
    match who.owner_of(&l) {
        IfbOwner::Foreign => {
            log_info!(
                "leaving {name}: it is not this attachment's ({:?})",
                l.alias
            );
        }
        IfbOwner::ThisAttachment | IfbOwner::Unmarked => {
            nl.delete_link(l.index)
                .cni_with(Code::Kernel, || format!("deleting {name}"))?;
            log_info!("deleted {name}");
        }
    }
    Ok(())
}

/// Removes everything `inst` records as ours, as far as it still exists
/// and is still ours, in the reverse of the order ADD makes it, going on
/// past a failed step and reporting every failure. `pod` is the netns and
/// container interface when DEL has them and the netns is the one
/// recorded at ADD; without them a pod-side root goes away with the pod's
/// netns.
pub fn teardown(
    nl: &mut Netlink,
    inst: &Installed,
    who: &Attachment<'_>,
    pod: Option<(&Path, &str)>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    if let Some((ns, ifname)) = pod {
        if inst.pod_tbf {
            failures.record(
                format!("root qdisc on the pod's {ifname}"),
                remove_pod_root(ns, ifname, inst.pod_root_kinds),
            );
        }
        if inst.pod_clsact {
            failures.record(
                format!("clsact on the pod's {ifname}"),
                remove_pod_hook(ns, ifname),
            );
        }
    }
    let host = failures
        .record(
            format!("looking up {}", inst.host_veth),
            recorded_host(nl, inst),
        )
        .flatten();
    if let Some(host) = &host {
        if let Some(prio) = inst.filter_prio {
            failures.record(
                format!("redirect filter on {}", host.name),
                nl.delete_filter(host.index, INGRESS_HANDLE, prio, ETH_P_ALL)
                    .cni_with(Code::Kernel, || {
                        format!("removing filter from {}", host.name)
                    }),
            );
        }
        if inst.ingress_qdisc {
            failures.record(
                format!("ingress qdisc on {}", host.name),
                delete_qdisc_if(nl, host, Qdisc::is_ingress, TC_H_INGRESS, INGRESS_HANDLE),
            );
        }
    }
    // The backstop's table outlives the host veth (newer kernels keep a
    // device's base chain): it goes whether or not the veth is there.
    if let Some(table) = &inst.backstop {
        failures.record(
            format!("backstop table {table}"),
            crate::backstop::remove(table, who),
        );
    }
    // The ifb outlives the pod's veth: it goes whether or not the host
    // veth is still there.
    if let Some(name) = &inst.ifb {
        failures.record(format!("ifb {name}"), delete_owned_ifb(nl, name, who));
    }
    if let Some(host) = &host
        && inst.ingress_tbf
    {
        failures.record(
            format!("root qdisc on {}", host.name),
            delete_qdisc_if(
                nl,
                host,
                |q| root_is_ours(inst.ingress_root_kinds, q),
                TC_H_ROOT,
                TBF_HANDLE,
            ),
        );
    }
    failures.finish(Code::Kernel, "removing the attachment's tc layout")
}

fn mismatch(m: String) -> anyhow::Error {
    CniError::new(Code::CheckMismatch, m).into()
}

/// The tbf parameters as dumped against the shape asked for: the first
/// difference, if any (pure, for CHECK).
pub(crate) fn tbf_difference(
    device: &str,
    q: Option<&cni_netlink::tc::Qdisc>,
    s: &Shape,
) -> Option<String> {
    let Some(q) = q else {
        return Some(format!("{device}: root tbf 1: is missing"));
    };
    let Some(p) = q.tbf else {
        return Some(format!("{device}: tbf options unreadable"));
    };
    let want = crate::layout::tbf_spec(s);
    if p.rate_bytes_per_sec != want.rate_bytes_per_sec {
        return Some(format!(
            "{device}: tbf rate is {} B/s, expected {}",
            p.rate_bytes_per_sec, want.rate_bytes_per_sec
        ));
    }
    if p.limit_bytes != want.limit_bytes {
        return Some(format!(
            "{device}: tbf limit is {} B, expected {}",
            p.limit_bytes, want.limit_bytes
        ));
    }
    if !p.matches(&want) {
        return Some(format!(
            "{device}: tbf burst differs from {} B",
            want.burst_bytes
        ));
    }
    None
}

/// CHECK of one device's root against the wanted layout.
fn check_root(nl: &mut Netlink, link: &Link, want: &RootLayout) -> anyhow::Result<()> {
    match root_difference(nl, link, want)? {
        Some(m) => Err(mismatch(m)),
        None => Ok(()),
    }
}

/// CHECK of one object against the kernel; `ifb` carries the ifb found by
/// an earlier [`Object::Ifb`] to the objects that refer to it.
fn check_object(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    o: &Object,
    ifb: &mut Option<Link>,
) -> anyhow::Result<()> {
    match o {
        Object::HostRoot(l) => check_root(nl, host, l),
        Object::Ifb(name) => {
            let link = nl
                .link_by_name(name)
                .cni_with(Code::Kernel, || format!("looking up {name}"))?;
            *ifb = Some(link.ok_or_else(|| mismatch(format!("ifb {name} is missing")))?);
            Ok(())
        }
        Object::IngressQdisc => {
            let qs = nl
                .top_qdiscs(host.index)
                .cni_with(Code::Kernel, || format!("listing qdiscs of {}", host.name))?;
            if qs.iter().any(|q| q.is_ingress()) {
                Ok(())
            } else {
                Err(mismatch(format!("{}: ingress qdisc is missing", host.name)))
            }
        }
        Object::Redirect(name) => {
            let target = ifb
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("internal: the redirect before the ifb"))?;
            let fs = nl
                .filters(host.index, INGRESS_HANDLE)
                .cni_with(Code::Kernel, || format!("listing filters of {}", host.name))?;
            let redirect = fs
                .iter()
                .find(|f| f.prio == FILTER_PRIO && f.kind == "u32" && !f.mirred.is_empty());
            let Some(f) = redirect else {
                return Err(mismatch(format!(
                    "{}: redirect filter to {name} is missing",
                    host.name
                )));
            };
            if f.mirred
                .iter()
                .any(|m| m.action == TCA_EGRESS_REDIR && m.ifindex == target.index)
            {
                Ok(())
            } else {
                Err(mismatch(format!(
                    "{}: filter redirects to ifindex {:?}, expected {name} ({})",
                    host.name,
                    f.mirred.iter().map(|m| m.ifindex).collect::<Vec<_>>(),
                    target.index
                )))
            }
        }
        Object::IfbRoot(name, l) => {
            let target = ifb
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("internal: {name}'s root before the ifb"))?;
            check_root(nl, target, l)
        }
        Object::PodHook => in_pod(req.netns, req.ifname, |pn, link| {
            let link = missing_if_none(link, req.ifname)?;
            let hook = pn
                .top_qdiscs(link.index)
                .cni_with(Code::Kernel, || format!("listing qdiscs of {}", req.ifname))?
                .into_iter()
                .any(|q| q.is_clsact());
            if hook && has_priority_reset(pn, &link)? {
                Ok(())
            } else {
                Err(mismatch(format!(
                    "{}: the priority-reset filter (clsact egress, bpf prio {PRIORITY_RESET_PRIO}) is missing",
                    req.ifname
                )))
            }
        }),
        Object::PodRoot(l) => in_pod(req.netns, req.ifname, |pn, link| {
            let link = missing_if_none(link, req.ifname)?;
            check_root(pn, &link, l)
        }),
        Object::Backstop(b) => match crate::backstop::verify(b)? {
            Some(d) => Err(mismatch(d)),
            None => Ok(()),
        },
    }
}

/// CHECK: the first difference between what should be and what is, object
/// by object (qdiscs, classes, leaf queues, filters and their matches).
pub fn verify(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    inst: Option<&Installed>,
) -> anyhow::Result<()> {
    let ingress = req.layout(Direction::IntoPod, host.mtu);
    let egress = req.layout(Direction::OutOfPod, host.mtu);
    if inst.is_none() && (ingress.is_some() || egress.is_some()) {
        return Err(mismatch("no record of an ADD for this attachment".into()));
    }
    // (CHECK refused another namespace before looking the host veth up.)
    let mode = match inst.and_then(|i| i.egress_mode) {
        Some(EgressMode::Pod) => EgressMode::Pod,
        _ => EgressMode::Ifb,
    };
    let ifb = inst
        .and_then(|i| i.ifb.clone())
        .unwrap_or_else(|| ifb_name(req.network, req.container_id));
    let backstop = req.backstop(host, mode, egress.is_some())?;
    let mut found_ifb = None;
    for o in desired(ingress, egress, mode, Some(&ifb), backstop) {
        check_object(nl, host, req, &o, &mut found_ifb)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_netlink::tc::{Qdisc, TbfParams};

    fn qdisc(kind: &str, parent: u32, handle: u32) -> Qdisc {
        Qdisc {
            ifindex: 7,
            handle,
            parent,
            kind: kind.into(),
            tbf: None,
            htb_default: None,
        }
    }

    fn req(mode: EgressMode, egress: bool) -> AddRequest<'static> {
        let s = Shape {
            rate_bytes_per_sec: 1_000_000,
            burst_bytes: 10_000,
            limit_bytes: 70_000,
            burst_raised_to_mtu: false,
        };
        AddRequest {
            network: "n",
            container_id: "c",
            ifname: "eth0",
            netns: Path::new("/nonexistent"),
            netns_id: None,
            egress_mode: mode,
            ingress: None,
            egress: egress.then_some(s),
            policy: None,
            pod: None,
            classes: None,
            latency_ms: 25,
        }
    }

    #[test]
    fn desired_objects_follow_mode_and_directions() {
        let s = req(EgressMode::Ifb, true).egress.unwrap();
        let t = || RootLayout::Tbf(s);
        assert_eq!(
            desired(Some(t()), Some(t()), EgressMode::Ifb, Some("bwp1"), None),
            vec![
                Object::HostRoot(t()),
                Object::Ifb("bwp1".into()),
                Object::IngressQdisc,
                Object::Redirect("bwp1".into()),
                Object::IfbRoot("bwp1".into(), t()),
            ],
            "the reference's layout, parents and targets first"
        );
        assert_eq!(
            desired(None, Some(t()), EgressMode::Pod, None, None),
            vec![Object::PodRoot(t())]
        );
        assert_eq!(
            desired(Some(t()), None, EgressMode::Ifb, None, None),
            vec![Object::HostRoot(t())]
        );
        let mut inst = Installed {
            ifb: Some("old".into()),
            filter_prio: Some(7),
            ingress_qdisc: true,
            ..Default::default()
        };
        inst.set_to(&desired(None, Some(t()), EgressMode::Pod, None, None));
        assert_eq!(
            (
                inst.ifb,
                inst.filter_prio,
                inst.ingress_qdisc,
                inst.pod_tbf,
                inst.egress_mode
            ),
            (None, None, false, true, Some(EgressMode::Pod)),
            "after ADD the record is exactly what is wanted"
        );
    }

    #[test]
    fn only_the_default_root_or_our_own_tbf_is_free() {
        let default = qdisc("noqueue", TC_H_ROOT, 0);
        let pfifo = qdisc("pfifo", TC_H_ROOT, 0x5_0000);
        let tbf = qdisc("tbf", TC_H_ROOT, TBF_HANDLE);
        assert!(refuse_foreign_root(None, false, None, "d").is_ok());
        assert!(refuse_foreign_root(Some(&default), false, None, "d").is_ok());
        assert!(refuse_foreign_root(Some(&pfifo), true, None, "d").is_err());
        assert!(
            refuse_foreign_root(Some(&tbf), false, None, "d").is_err(),
            "a tbf 1: we have no record of is someone's"
        );
        assert!(refuse_foreign_root(Some(&tbf), true, None, "d").is_ok());
        let htb = qdisc("htb", TC_H_ROOT, TBF_HANDLE);
        assert!(
            refuse_foreign_root(Some(&htb), true, None, "d").is_err(),
            "an earlier version only made tbfs: an htb 1: is someone's"
        );
        let both = Some(RootKinds {
            tbf: true,
            htb: true,
        });
        assert!(refuse_foreign_root(Some(&htb), true, both, "d").is_ok());
        assert!(root_is_ours(both, &tbf) && !root_is_ours(None, &htb));
    }

    #[test]
    fn egress_mode_follows_the_ingress_hook() {
        let host = Link::default();
        let clsact = [qdisc("clsact", TC_H_INGRESS, INGRESS_HANDLE)];
        let ingress = [qdisc("ingress", TC_H_INGRESS, INGRESS_HANDLE)];
        let mode = |m, e, qs: &[Qdisc], ours| resolve_egress_mode(&req(m, e), &host, qs, ours);
        assert_eq!(
            mode(EgressMode::Auto, true, &[], false).unwrap(),
            EgressMode::Ifb
        );
        assert_eq!(
            mode(EgressMode::Auto, true, &clsact, false).unwrap(),
            EgressMode::Pod
        );
        assert_eq!(
            mode(EgressMode::Auto, true, &ingress, true).unwrap(),
            EgressMode::Ifb,
            "our own ingress qdisc is no reason to move"
        );
        let err = mode(EgressMode::Ifb, true, &clsact, false).unwrap_err();
        assert_eq!(CniError::from_anyhow(&err).code, Code::InvalidConfig);
        assert_eq!(
            mode(EgressMode::Ifb, false, &clsact, false).unwrap(),
            EgressMode::Ifb,
            "no egress limit, nothing to refuse"
        );
        assert_eq!(
            mode(EgressMode::Pod, true, &[], false).unwrap(),
            EgressMode::Pod
        );
    }

    #[test]
    fn tbf_differences_are_named() {
        let s = req(EgressMode::Ifb, true).egress.unwrap();
        assert!(tbf_difference("d", None, &s).unwrap().contains("missing"));
        let mut q = qdisc("tbf", TC_H_ROOT, TBF_HANDLE);
        q.tbf = Some(TbfParams {
            rate_bytes_per_sec: 2_000_000,
            limit_bytes: 70_000,
            buffer_ticks: 0,
        });
        assert!(tbf_difference("d", Some(&q), &s).unwrap().contains("rate"));
        q.tbf = Some(TbfParams {
            rate_bytes_per_sec: 1_000_000,
            limit_bytes: 1,
            buffer_ticks: 0,
        });
        assert!(tbf_difference("d", Some(&q), &s).unwrap().contains("limit"));
    }
}
