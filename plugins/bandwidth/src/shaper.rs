//! The netlink work: install, verify and remove the tc layout.
//!
//! Layout (same as the reference, so `tc` output looks familiar):
//! - into the pod: root tbf `1:` on the host veth;
//! - out of the pod: ifb `bwp…`, `ingress` qdisc on the host veth, a u32
//!   match-all filter redirecting to the ifb, root tbf `1:` on the ifb.
//!
//! Out of the pod can instead be shaped by a root tbf on the container
//! interface inside the pod netns (`egressMode: "pod"`), which leaves the
//! host veth's ingress hook (`ffff:`) to a network policy agent's `clsact`.
//!
//! What we installed is recorded in the attachment's state file before it
//! is installed, so DEL, CHECK and GC touch only what is ours, also after a
//! crash half-way through ADD.

use crate::config::{BandwidthConf, EgressMode};
use crate::devices::{IfbOwner, MAX_ALIAS_BYTES, ifb_alias, ifb_candidates, ifb_name, ifb_owner};
use crate::shaping::{Shape, shape};
use anyhow::Context as _;
use cni_netlink::tc::{
    ETH_P_ALL, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR, TbfSpec,
};
use cni_netlink::{Link, Netlink, netns};
use cni_types::env::NetnsId;
use cni_types::error::{CniError, Code, ResultExt};
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
    /// Root tbf `1:` on the host veth (ingress shaping) is ours.
    pub ingress_tbf: bool,
    /// The egress ifb's name, when egress is shaped.
    pub ifb: Option<String>,
    /// We created the `ingress` qdisc on the host veth (never a foreign one).
    pub ingress_qdisc: bool,
    /// Our redirect filter's prio under `ffff:`.
    pub filter_prio: Option<u16>,
    /// Root tbf `1:` on the container interface (egress mode "pod") is ours.
    #[serde(default)]
    pub pod_tbf: bool,
    /// How egress is shaped (`ifb` or `pod`), for CHECK and operators.
    #[serde(default)]
    pub egress_mode: Option<EgressMode>,
    /// The pod's network namespace at ADD (device and inode of its nsfs
    /// file): DEL and CHECK act inside a namespace only when it is this one.
    #[serde(default)]
    pub netns: Option<NetnsId>,
}

impl Installed {
    /// True when `netns` is the namespace this record's pod side lives in
    /// (records of earlier versions have none: any pod namespace).
    pub fn same_pod(&self, netns: Option<NetnsId>) -> bool {
        self.netns.is_none() || self.netns == netns
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

    fn alias(&self) -> String {
        ifb_alias(self.network, self.container_id, self.ifname)
    }
}

fn spec(s: &Shape) -> TbfSpec {
    TbfSpec {
        rate_bytes_per_sec: s.rate_bytes_per_sec,
        burst_bytes: s.burst_bytes,
        limit_bytes: s.limit_bytes,
    }
}

fn kernel<T>(r: cni_netlink::Result<T>, what: impl FnOnce() -> String) -> anyhow::Result<T> {
    r.with_context(what)
        .cni(Code::Kernel, "netlink request failed")
}

/// The host veth recorded in `inst`, if it still exists under the same
/// index and name (an index can be reused by a new pod).
fn recorded_host(nl: &mut Netlink, inst: &Installed) -> anyhow::Result<Option<Link>> {
    let link = kernel(nl.link_by_index(inst.host_index), || {
        format!("looking up {}", inst.host_veth)
    })?;
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

/// What to delete when a failing ADD rolls back, in reverse order.
enum Undo {
    Link(u32),
    RootTbf(u32),
    IngressQdisc(u32),
    Filter(u32),
    PodTbf(PathBuf, String),
}

fn run_undo(nl: &mut Netlink, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::Link(i) => nl.delete_link(i),
            Undo::RootTbf(i) => nl.delete_qdisc(i, TC_H_ROOT, TBF_HANDLE),
            Undo::IngressQdisc(i) => nl.delete_qdisc(i, TC_H_INGRESS, INGRESS_HANDLE),
            Undo::Filter(i) => nl.delete_filter(i, INGRESS_HANDLE, FILTER_PRIO, ETH_P_ALL),
            Undo::PodTbf(ns, ifname) => {
                if let Err(e) = remove_pod_tbf(&ns, &ifname) {
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
}

impl AddRequest<'_> {
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
        egress_mode: prev.and_then(|p| p.egress_mode),
        netns: req.netns_id,
    };
    let qdiscs = kernel(nl.qdiscs(host.index), || {
        format!("listing qdiscs of {}", host.name)
    })?;
    adopt_own_layout(nl, host, req, &qdiscs, &mut owned)?;
    let mode = resolve_egress_mode(req, host, &qdiscs, owned.ingress_qdisc)?;
    if req.ingress.is_some() {
        let root = qdiscs.iter().find(|q| q.is_root());
        refuse_foreign_root(root, owned.ingress_tbf, &host.name)?;
    }
    if req.egress.is_some() && mode == EgressMode::Pod {
        let root = pod_root_qdisc(req.netns, req.ifname)?;
        refuse_foreign_root(
            root.as_ref(),
            owned.pod_tbf,
            &format!("the pod's {}", req.ifname),
        )?;
    }
    let ifb = match (&req.egress, mode) {
        (Some(_), EgressMode::Ifb | EgressMode::Auto) => Some(choose_ifb(nl, req, &owned)?),
        _ => None,
    };
    // The claims: a superset of what this ADD may create, recorded before
    // the kernel is touched, so a crash from here on leaves a state file
    // that lets DEL find everything.
    let mut inst = owned.clone();
    inst.ingress_tbf |= req.ingress.is_some();
    match (&req.egress, &ifb) {
        (Some(_), Some(name)) => {
            inst.ifb = Some(name.clone());
            inst.ingress_qdisc = true;
            inst.filter_prio = Some(FILTER_PRIO);
        }
        (Some(_), None) => inst.pod_tbf = true,
        (None, _) => {}
    }
    save(&inst)?;
    let mut undo = Vec::new();
    let plan = Plan {
        qdiscs: &qdiscs,
        mode,
        owned: &owned,
        ifb: ifb.as_deref(),
    };
    match install_steps(nl, host, req, &plan, &mut inst, &mut undo) {
        Ok(ifb) => {
            save(&inst)?;
            Ok((inst, ifb))
        }
        Err(e) => {
            run_undo(nl, undo);
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
    device: &str,
) -> anyhow::Result<()> {
    let Some(r) = root else { return Ok(()) };
    let free = r.is_default_root() || (ours && r.is_root_tbf());
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
        match kernel(nl.link_by_name(name), || format!("looking up {name}"))? {
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
        match kernel(nl.link_by_name(name), || format!("looking up {name}"))? {
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

/// What `install` found and decided before the first change.
struct Plan<'a> {
    qdiscs: &'a [cni_netlink::tc::Qdisc],
    mode: EgressMode,
    /// What the attachment owned before this ADD.
    owned: &'a Installed,
    /// The ifb name chosen for egress (mode ifb).
    ifb: Option<&'a str>,
}

fn install_steps(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    plan: &Plan<'_>,
    inst: &mut Installed,
    undo: &mut Vec<Undo>,
) -> anyhow::Result<Option<Link>> {
    let (qdiscs, mode, owned) = (plan.qdiscs, plan.mode, plan.owned);
    let root = qdiscs.iter().find(|q| q.is_root());

    // Into the pod: root tbf on the host veth (coexists with a clsact).
    // The root was judged free (default or ours) before anything changed.
    match &req.ingress {
        Some(s) => {
            if root.is_none_or(|r| !r.is_root_tbf()) {
                undo.push(Undo::RootTbf(host.index));
            }
            kernel(nl.replace_root_tbf(host.index, &spec(s)), || {
                format!("installing tbf on {}", host.name)
            })?;
            inst.ingress_tbf = true;
            log_info!(
                "ingress: tbf rate {}B/s burst {}B limit {}B on {}",
                s.rate_bytes_per_sec,
                s.burst_bytes,
                s.limit_bytes,
                host.name
            );
        }
        None => {
            if owned.ingress_tbf && root.is_some_and(|r| r.is_root_tbf()) {
                kernel(nl.delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE), || {
                    format!("removing tbf from {}", host.name)
                })?;
            }
            inst.ingress_tbf = false;
        }
    }

    // Out of the pod.
    let Some(s) = &req.egress else {
        remove_egress(nl, host, inst, &req.attachment())?;
        remove_pod_side(req.netns, req.ifname, inst)?;
        inst.egress_mode = None;
        return Ok(None);
    };
    if mode == EgressMode::Pod {
        // Only what was ours before: the claims for ifb mode were not made.
        inst.ingress_qdisc = owned.ingress_qdisc;
        inst.filter_prio = owned.filter_prio;
        remove_egress(nl, host, inst, &req.attachment())?;
        let existed = owned.pod_tbf
            && pod_root_qdisc(req.netns, req.ifname)?.is_some_and(|q| q.is_root_tbf());
        netns::run_in(req.netns, || {
            let mut pn = Netlink::new().context("opening netlink in the pod netns")?;
            let link = kernel(pn.link_by_name(req.ifname), || {
                format!("looking up {}", req.ifname)
            })?
            .ok_or_else(|| {
                CniError::new(
                    Code::InterfaceNotFound,
                    format!("{} vanished from the pod", req.ifname),
                )
            })?;
            kernel(pn.replace_root_tbf(link.index, &spec(s)), || {
                format!("installing tbf on the pod's {}", req.ifname)
            })
        })?;
        if !existed {
            undo.push(Undo::PodTbf(
                req.netns.to_path_buf(),
                req.ifname.to_string(),
            ));
        }
        inst.pod_tbf = true;
        inst.egress_mode = Some(EgressMode::Pod);
        log_info!(
            "egress (mode pod): tbf rate {}B/s burst {}B limit {}B on {} inside the pod",
            s.rate_bytes_per_sec,
            s.burst_bytes,
            s.limit_bytes,
            req.ifname
        );
        return Ok(None);
    }
    // Mode ifb: ingress qdisc + redirect + tbf on the ifb.
    inst.pod_tbf = owned.pod_tbf;
    remove_pod_side(req.netns, req.ifname, inst)?;
    inst.egress_mode = Some(EgressMode::Ifb);
    let name = plan
        .ifb
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("internal: no ifb chosen for egress"))?;
    let alias = req.attachment().alias();
    let ifb = match kernel(nl.link_by_name(&name), || format!("looking up {name}"))? {
        Some(existing) => {
            // Ours (marked for this attachment, left by a retried or
            // crashed ADD, or adopted from the reference plugin's layout):
            // bring it in line. choose_ifb never hands out another's.
            if req.attachment().owner_of(&existing) == IfbOwner::Foreign {
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
                kernel(nl.set_mtu(existing.index, host.mtu), || {
                    format!("setting mtu of {name}")
                })?;
            }
            if existing.alias.as_deref() != Some(alias.as_str()) {
                kernel(nl.set_alias(existing.index, &alias), || {
                    format!("marking {name}")
                })?;
            }
            if !existing.up {
                kernel(nl.set_up(existing.index), || format!("bringing up {name}"))?;
            }
            existing
        }
        None => {
            let l = kernel(nl.create_ifb(&name, host.mtu, Some(&alias)), || {
                format!("creating ifb {name}")
            })?;
            undo.push(Undo::Link(l.index));
            l
        }
    };
    inst.ifb = Some(name.clone());

    match qdiscs.iter().find(|q| q.on_ingress_hook()) {
        None => {
            kernel(nl.add_ingress_qdisc(host.index), || {
                format!("adding ingress qdisc to {}", host.name)
            })?;
            undo.push(Undo::IngressQdisc(host.index));
            inst.ingress_qdisc = true;
        }
        Some(q) if q.is_ingress() && owned.ingress_qdisc => {}
        Some(q) => {
            return Err(CniError::new(
                Code::Kernel,
                format!("{} already has a {} qdisc that we did not create", host.name, q.kind),
            )
            .with_details("another tc user (for example the VPC CNI network policy agent) owns ffff:; egress shaping through an ifb would bypass or break it")
            .into());
        }
    }

    let filters = kernel(nl.filters(host.index, INGRESS_HANDLE), || {
        format!("listing filters of {}", host.name)
    })?;
    let at_prio: Vec<_> = filters.iter().filter(|f| f.prio == FILTER_PRIO).collect();
    let ours_ok = at_prio.iter().any(|f| {
        f.kind == "u32"
            && f.mirred
                .iter()
                .any(|m| m.action == TCA_EGRESS_REDIR && m.ifindex == ifb.index)
    });
    if !ours_ok {
        if !at_prio.is_empty() {
            if owned.filter_prio != Some(FILTER_PRIO) {
                return Err(CniError::new(
                    Code::Kernel,
                    format!("{} has a foreign filter at prio {FILTER_PRIO}", host.name),
                )
                .into());
            }
            // Our own stale filter (redirecting to an ifb that was re-created).
            kernel(
                nl.delete_filter(host.index, INGRESS_HANDLE, FILTER_PRIO, ETH_P_ALL),
                || "removing stale filter".into(),
            )?;
        }
        kernel(
            nl.add_u32_redirect_all(host.index, INGRESS_HANDLE, FILTER_PRIO, ifb.index),
            || format!("redirecting {} to {name}", host.name),
        )?;
        if owned.filter_prio.is_none() {
            undo.push(Undo::Filter(host.index));
        }
    }

    kernel(nl.replace_root_tbf(ifb.index, &spec(s)), || {
        format!("installing tbf on {name}")
    })?;
    log_info!(
        "egress: tbf rate {}B/s burst {}B limit {}B on {name} (from {})",
        s.rate_bytes_per_sec,
        s.burst_bytes,
        s.limit_bytes,
        host.name
    );
    Ok(Some(ifb))
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
    let filters = kernel(nl.filters(host.index, INGRESS_HANDLE), || {
        format!("listing filters of {}", host.name)
    })?;
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
    let Some(ifb) = kernel(nl.link_by_index(target), || format!("looking up #{target}"))? else {
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

/// The root qdisc of the container interface inside the pod, if any.
fn pod_root_qdisc(ns: &Path, ifname: &str) -> anyhow::Result<Option<cni_netlink::tc::Qdisc>> {
    netns::run_in(ns, || {
        let mut pn = Netlink::new().context("opening netlink in the pod netns")?;
        let Some(link) = kernel(pn.link_by_name(ifname), || format!("looking up {ifname}"))? else {
            return Ok(None);
        };
        let qs = kernel(pn.qdiscs(link.index), || {
            format!("listing qdiscs of {ifname}")
        })?;
        Ok(qs.into_iter().find(|q| q.is_root()))
    })
}

/// Removes our root tbf from the container interface, if it is still there.
fn remove_pod_tbf(ns: &Path, ifname: &str) -> anyhow::Result<()> {
    netns::run_in(ns, || {
        let mut pn = Netlink::new().context("opening netlink in the pod netns")?;
        let Some(link) = kernel(pn.link_by_name(ifname), || format!("looking up {ifname}"))? else {
            return Ok(());
        };
        let qs = kernel(pn.qdiscs(link.index), || {
            format!("listing qdiscs of {ifname}")
        })?;
        if qs.iter().any(|q| q.is_root_tbf()) {
            kernel(pn.delete_qdisc(link.index, TC_H_ROOT, TBF_HANDLE), || {
                format!("removing tbf from the pod's {ifname}")
            })?;
        }
        Ok(())
    })
}

fn remove_pod_side(ns: &Path, ifname: &str, inst: &mut Installed) -> anyhow::Result<()> {
    if inst.pod_tbf {
        remove_pod_tbf(ns, ifname)?;
        inst.pod_tbf = false;
    }
    Ok(())
}

/// Removes egress shaping: our filter, our ingress qdisc, our ifb.
fn remove_egress(
    nl: &mut Netlink,
    host: &Link,
    inst: &mut Installed,
    who: &Attachment<'_>,
) -> anyhow::Result<()> {
    if let Some(prio) = inst.filter_prio {
        kernel(
            nl.delete_filter(host.index, INGRESS_HANDLE, prio, ETH_P_ALL),
            || format!("removing filter from {}", host.name),
        )?;
        inst.filter_prio = None;
    }
    if inst.ingress_qdisc {
        let ours = kernel(nl.qdiscs(host.index), || {
            format!("listing qdiscs of {}", host.name)
        })?
        .iter()
        .any(|q| q.is_ingress());
        if ours {
            kernel(
                nl.delete_qdisc(host.index, TC_H_INGRESS, INGRESS_HANDLE),
                || format!("removing ingress qdisc from {}", host.name),
            )?;
        }
        inst.ingress_qdisc = false;
    }
    if let Some(name) = inst.ifb.take() {
        delete_owned_ifb(nl, &name, who)?;
    }
    Ok(())
}

/// Deletes the ifb `name` if it is this attachment's: marked for it, or
/// unmarked (the reference plugin's, or created and killed before the
/// mark; the caller knows the name is this attachment's). An ifb marked
/// for another attachment is left alone: deleting it would blackhole that
/// pod's egress. Fine when it is already gone.
pub fn delete_owned_ifb(nl: &mut Netlink, name: &str, who: &Attachment<'_>) -> anyhow::Result<()> {
    let Some(l) = kernel(nl.link_by_name(name), || format!("looking up {name}"))? else {
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
            kernel(nl.delete_link(l.index), || format!("deleting {name}"))?;
            log_info!("deleted {name}");
        }
    }
    Ok(())
}

/// Removes everything `inst` records, as far as it still exists and is
/// still ours. `pod` is the netns and container interface when DEL has
/// them and the netns is the one recorded at ADD; without them a pod-side
/// tbf goes away with the pod's netns.
pub fn teardown(
    nl: &mut Netlink,
    inst: &Installed,
    who: &Attachment<'_>,
    pod: Option<(&Path, &str)>,
) -> anyhow::Result<()> {
    let mut inst = inst.clone();
    if let Some((ns, ifname)) = pod {
        remove_pod_side(ns, ifname, &mut inst)?;
    }
    // The ifb first: it alone survives the pod's veth going away.
    if let Some(name) = inst.ifb.clone() {
        delete_owned_ifb(nl, &name, who)?;
    }
    if let Some(host) = recorded_host(nl, &inst)? {
        if inst.ingress_tbf {
            let ours = kernel(nl.qdiscs(host.index), || {
                format!("listing qdiscs of {}", host.name)
            })?
            .iter()
            .any(|q| q.is_root_tbf());
            if ours {
                kernel(nl.delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE), || {
                    format!("removing tbf from {}", host.name)
                })?;
            }
        }
        inst.ifb = None;
        remove_egress(nl, &host, &mut inst, who)?;
    }
    Ok(())
}

/// CHECK: the first difference between what should be and what is.
pub fn verify(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    inst: Option<&Installed>,
) -> anyhow::Result<()> {
    let mismatch = |m: String| -> anyhow::Error { CniError::new(Code::CheckMismatch, m).into() };
    let tbf_on = |nl: &mut Netlink, link: &Link, s: &Shape| -> anyhow::Result<()> {
        let qs = kernel(nl.qdiscs(link.index), || {
            format!("listing qdiscs of {}", link.name)
        })?;
        let Some(q) = qs.iter().find(|q| q.is_root_tbf()) else {
            return Err(mismatch(format!("{}: root tbf 1: is missing", link.name)));
        };
        let Some(p) = q.tbf else {
            return Err(mismatch(format!("{}: tbf options unreadable", link.name)));
        };
        let want = spec(s);
        if p.rate_bytes_per_sec != want.rate_bytes_per_sec {
            return Err(mismatch(format!(
                "{}: tbf rate is {} B/s, expected {}",
                link.name, p.rate_bytes_per_sec, want.rate_bytes_per_sec
            )));
        }
        if p.limit_bytes != want.limit_bytes {
            return Err(mismatch(format!(
                "{}: tbf limit is {} B, expected {}",
                link.name, p.limit_bytes, want.limit_bytes
            )));
        }
        if !p.matches(&want) {
            return Err(mismatch(format!(
                "{}: tbf burst differs from {} B",
                link.name, want.burst_bytes
            )));
        }
        Ok(())
    };
    if inst.is_none() && (req.ingress.is_some() || req.egress.is_some()) {
        return Err(mismatch("no record of an ADD for this attachment".into()));
    }
    if let Some(i) = inst
        && !i.same_pod(req.netns_id)
    {
        return Err(mismatch(format!(
            "CNI_NETNS {} is not the network namespace ADD shaped",
            req.netns.display()
        )));
    }
    if let Some(s) = &req.ingress {
        tbf_on(nl, host, s)?;
    }
    if let (Some(s), Some(EgressMode::Pod)) = (&req.egress, inst.and_then(|i| i.egress_mode)) {
        return netns::run_in(req.netns, || {
            let mut pn = Netlink::new().context("opening netlink in the pod netns")?;
            let link = kernel(pn.link_by_name(req.ifname), || {
                format!("looking up {}", req.ifname)
            })?
            .ok_or_else(|| mismatch(format!("{} is missing in the pod", req.ifname)))?;
            tbf_on(&mut pn, &link, s)
        });
    }
    if let Some(s) = &req.egress {
        let name = inst
            .and_then(|i| i.ifb.clone())
            .unwrap_or_else(|| ifb_name(req.network, req.container_id));
        let Some(ifb) = kernel(nl.link_by_name(&name), || format!("looking up {name}"))? else {
            return Err(mismatch(format!("ifb {name} is missing")));
        };
        tbf_on(nl, &ifb, s)?;
        let qs = kernel(nl.qdiscs(host.index), || {
            format!("listing qdiscs of {}", host.name)
        })?;
        if !qs.iter().any(|q| q.is_ingress()) {
            return Err(mismatch(format!("{}: ingress qdisc is missing", host.name)));
        }
        let fs = kernel(nl.filters(host.index, INGRESS_HANDLE), || {
            format!("listing filters of {}", host.name)
        })?;
        let redirect = fs
            .iter()
            .find(|f| f.prio == FILTER_PRIO && f.kind == "u32" && !f.mirred.is_empty());
        let Some(f) = redirect else {
            return Err(mismatch(format!(
                "{}: redirect filter to {name} is missing",
                host.name
            )));
        };
        if !f
            .mirred
            .iter()
            .any(|m| m.action == TCA_EGRESS_REDIR && m.ifindex == ifb.index)
        {
            return Err(mismatch(format!(
                "{}: filter redirects to ifindex {:?}, expected {name} ({})",
                host.name,
                f.mirred.iter().map(|m| m.ifindex).collect::<Vec<_>>(),
                ifb.index
            )));
        }
    }
    Ok(())
}
