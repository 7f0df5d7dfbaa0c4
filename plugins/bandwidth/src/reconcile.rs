//! ADD's reconcile: from what the kernel has and what the record owns to
//! what the plan wants. Everything that could refuse is decided before the
//! first change; the intent is recorded; what is ours but unwanted goes;
//! each wanted object is made (kept when it matches, rebuilt when it
//! differs, adopted from our own or the reference plugin's leftovers); a
//! failed step undoes what this ADD created.

use crate::config::EgressMode;
use crate::devices::{IfbOwner, ifb_name};
use crate::htb_plan::Direction;
pub use crate::ifb_choice::IfbTaken;
use crate::ifb_choice::choose_ifb;
use crate::ifb_pool::Taken;
use crate::layout::{RootLayout, install_root};
use crate::plan::{AddRequest, FILTER_PRIO, Object, desired};
use crate::pod::{
    delete_qdisc_if, has_priority_reset, in_pod, pod_top_qdiscs, remove_pod_hook, remove_pod_root,
    vanished_if_none,
};
use crate::record::{Attachment, ClassRecord, Installed, RootKinds, root_is_ours};
use crate::teardown::delete_owned_ifb;
use anyhow::Context as _;
use cni_netlink::Link;
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{
    ETH_P_ALL, INGRESS_HANDLE, Qdisc, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR,
};
use cni_types::error::{CniError, Code, ResultExt};
use cni_types::{log_info, log_warn};
use std::path::PathBuf;

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

fn run_undo(nl: &mut dyn Kernel, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::Link(i) => nl.delete_link(i),
            Undo::Root(i) => nl.delete_qdisc(i, TC_H_ROOT, TBF_HANDLE),
            Undo::IngressQdisc(i) => nl.delete_qdisc(i, TC_H_INGRESS, INGRESS_HANDLE),
            Undo::Filter(i) => nl.delete_filter(i, INGRESS_HANDLE, FILTER_PRIO, ETH_P_ALL),
            Undo::PodRoot(ns, ifname, kinds) => {
                if let Err(e) = remove_pod_root(nl, &ns, &ifname, kinds) {
                    log_warn!("rollback step failed: {e:#}");
                }
                Ok(true)
            }
            Undo::PodHook(ns, ifname) => {
                if let Err(e) = remove_pod_hook(nl, &ns, &ifname) {
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
                if let Err(e) = crate::backstop::remove(nl, &table, &who) {
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

/// Installs the layout on `host`, replacing what a previous ADD of the
/// same attachment left (`previous`). Returns what is now installed and the
/// ifb link (for the result). On failure, removes what this call created.
///
/// Everything that could refuse (a foreign root qdisc, a foreign ingress
/// hook, no free ifb name) is decided before the first change, so a
/// refusal leaves the node as it was.
pub fn install(
    nl: &mut dyn Kernel,
    host: &Link,
    req: &AddRequest<'_>,
    previous: Option<&Installed>,
    save: &mut dyn FnMut(&Installed) -> anyhow::Result<()>,
) -> anyhow::Result<(Installed, Option<Link>)> {
    let mut owned = owned_before(host, req, previous);
    let qdiscs = nl
        .top_qdiscs(host.index)
        .cni_with(Code::Kernel, || format!("listing qdiscs of {}", host.name))?;
    adopt_own_layout(nl, host, req, &qdiscs, &mut owned)?;
    let ours = crate::backstop::table_name(&req.attachment());
    crate::backstop::sweep_stale_on_device(nl, &host.name, &ours)?;
    let d = decide(nl, host, req, &qdiscs, &owned)?;
    // The claims: what was ours plus what this ADD may create, recorded
    // before the kernel is touched, so a crash from here on leaves a state
    // file that lets DEL find everything.
    let mut inst = owned.clone();
    inst.classes = d.classes;
    inst.claim(&d.want);
    save(&inst)?;
    let mut run = Reconcile {
        nl,
        host,
        req,
        qdiscs: &qdiscs,
        pod_root: d.pod_root.as_ref(),
        pod_hook: d.pod_hook.as_ref(),
        owned: &owned,
        undo: Vec::new(),
        ifb: None,
    };
    let made = run
        .remove_unwanted(&d.want)
        .and_then(|()| d.want.iter().try_for_each(|o| run.ensure(o)));
    match made {
        Ok(()) => {
            inst.set_to(&d.want);
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

/// What was ours before this ADD, which decides ownership: the previous
/// record of the same host veth (index and name). The pod side of a
/// record counts only in the namespace it was made in.
fn owned_before(host: &Link, req: &AddRequest<'_>, previous: Option<&Installed>) -> Installed {
    let prev = previous.filter(|p| p.host_index == host.index && p.host_veth == host.name);
    Installed {
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
        // The table is judged by its owner mark, not by the host veth: a
        // re-ADD on a new veth must still find (and remove) the old one.
        backstop: previous.and_then(|p| p.backstop.clone()),
    }
}

/// What one ADD decided before its first change.
struct Decision {
    want: Vec<Object>,
    classes: Vec<ClassRecord>,
    /// The container interface's root and hook qdiscs, read once (pod mode).
    pod_root: Option<Qdisc>,
    pod_hook: Option<Qdisc>,
}

/// The egress mode, the refusals (foreign roots and hooks, no free ifb
/// name) and the wanted objects: everything that could refuse, decided
/// before anything changes.
fn decide(
    nl: &mut dyn Kernel,
    host: &Link,
    req: &AddRequest<'_>,
    qdiscs: &[Qdisc],
    owned: &Installed,
) -> anyhow::Result<Decision> {
    let ingress_layout = req.layout(Direction::IntoPod, host.mtu);
    let egress_layout = req.layout(Direction::OutOfPod, host.mtu);
    // Counting without a limit needs no ifb (whose deletion would add the
    // kernel's ~20 ms to every DEL): the pod side counts what leaves it.
    let mode =
        if req.egress.is_none() && egress_layout.is_some() && !req.caps_bind(Direction::OutOfPod) {
            EgressMode::Pod
        } else {
            resolve_egress_mode(req, host, qdiscs, owned.ingress_qdisc)?
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
    let (pod_root, pod_hook) = if egress_layout.is_some() && mode == EgressMode::Pod {
        judge_pod_side(nl, req, owned, egress_layout.as_ref())?
    } else {
        (None, None)
    };
    let ifb = match (&egress_layout, mode) {
        (Some(_), EgressMode::Ifb | EgressMode::Auto) => Some(choose_ifb(nl, req, owned)?),
        _ => None,
    };
    let classes = class_records([&ingress_layout, &egress_layout]);
    let backstop = crate::backstop::for_request(req, host, mode, egress_layout.is_some())?;
    let want = desired(
        ingress_layout,
        egress_layout,
        mode,
        ifb.as_deref(),
        backstop,
    );
    Ok(Decision {
        want,
        classes,
        pod_root,
        pod_hook,
    })
}

/// The pod's root and hook qdiscs, judged: a foreign root, or a foreign
/// hook where an htb needs our clsact, is refused.
fn judge_pod_side(
    nl: &mut dyn Kernel,
    req: &AddRequest<'_>,
    owned: &Installed,
    egress: Option<&RootLayout>,
) -> anyhow::Result<(Option<Qdisc>, Option<Qdisc>)> {
    let (root, hook) = pod_top_qdiscs(nl, req.netns, req.ifname)?;
    let device = format!("the pod's {}", req.ifname);
    refuse_foreign_root(root.as_ref(), owned.pod_tbf, owned.pod_root_kinds, &device)?;
    if matches!(egress, Some(RootLayout::Htb(_))) {
        refuse_foreign_hook(hook.as_ref(), owned.pod_clsact, &device)?;
    }
    Ok((root, hook))
}

/// The classes' leaf minors, for the record (the same in both directions).
fn class_records(layouts: [&Option<RootLayout>; 2]) -> Vec<ClassRecord> {
    layouts
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
        .unwrap_or_default()
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

/// One ADD's way from what is there to what is wanted: what it found
/// before the first change, and what to undo if a step fails.
struct Reconcile<'a, 'n> {
    nl: &'n mut dyn Kernel,
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
            remove_pod_root(
                self.nl,
                self.req.netns,
                self.req.ifname,
                owned.pod_root_kinds,
            )?;
        }
        if owned.pod_clsact && !wants(|o| matches!(o, Object::PodHook)) {
            remove_pod_hook(self.nl, self.req.netns, self.req.ifname)?;
        }
        if let Some(table) = &owned.backstop
            && !wants(|o| matches!(o, Object::Backstop(_)))
        {
            crate::backstop::remove(self.nl, table, &self.req.attachment())?;
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
        match o {
            Object::HostRoot(layout) => self.host_root(layout),
            Object::Ifb(name) => {
                let made = self.ifb_link(name)?;
                self.ifb = Some(made);
                Ok(())
            }
            Object::IngressQdisc => self.ingress_qdisc(),
            Object::Redirect(_) => {
                let ifb = self.made_ifb()?;
                self.redirect_to(&ifb)
            }
            Object::IfbRoot(_, layout) => self.ifb_root(layout),
            Object::PodHook => self.pod_hook(),
            Object::Backstop(b) => self.backstop(b),
            Object::PodRoot(layout) => self.pod_root(layout),
        }
    }

    fn host_root(&mut self, layout: &RootLayout) -> anyhow::Result<()> {
        let host = self.host;
        // Judged free (default) or ours before anything changed.
        let root = self.qdiscs.iter().find(|q| q.is_root());
        if root.is_none_or(|r| !r.is_root_shaper()) {
            self.undo.push(Undo::Root(host.index));
        }
        install_root(self.nl, host, layout, root)?;
        log_info!("ingress: {} on {}", layout.describe(), host.name);
        Ok(())
    }

    fn ifb_root(&mut self, layout: &RootLayout) -> anyhow::Result<()> {
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
        // Up only now, shaper in place: made or taken down (see
        // Netlink::create_ifb), before the redirect sends it traffic.
        if !ifb.up {
            self.nl
                .set_up(ifb.index)
                .cni_with(Code::Kernel, || format!("bringing up {}", ifb.name))?;
        }
        let (how, host) = (layout.describe(), &self.host.name);
        log_info!("egress: {how} on {} (from {host})", ifb.name);
        Ok(())
    }

    /// Our clsact on the container interface with the priority-reset
    /// filter (see [`cni_netlink::bpf`]).
    fn pod_hook(&mut self) -> anyhow::Result<()> {
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
        in_pod(self.nl, req.netns, req.ifname, |pn, link| {
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
        })
    }

    fn backstop(&mut self, b: &cni_netlink::backstop::Backstop) -> anyhow::Result<()> {
        if crate::backstop::ensure(self.nl, b)? {
            let who = self.req.attachment();
            self.undo.push(Undo::Backstop(
                b.table.clone(),
                [who.network, who.container_id, who.ifname].map(String::from),
            ));
        }
        Ok(())
    }

    fn pod_root(&mut self, layout: &RootLayout) -> anyhow::Result<()> {
        let req = self.req;
        let pod_root = self.pod_root;
        let existed = self.owned.pod_tbf
            && pod_root.is_some_and(|q| root_is_ours(self.owned.pod_root_kinds, q));
        if !existed {
            // Before the change: a tree that fails half-way (a class, a
            // queue, a filter) is this ADD's to remove. (Found by the fake
            // kernel's step-by-step rollback test.)
            self.undo.push(Undo::PodRoot(
                req.netns.to_path_buf(),
                req.ifname.to_string(),
                Some(RootKinds::of(layout)),
            ));
        }
        in_pod(self.nl, req.netns, req.ifname, |pn, link| {
            let link = vanished_if_none(link, req.ifname)?;
            install_root(pn, &link, layout, pod_root)
                .with_context(|| format!("in the pod's {}", req.ifname))
        })?;
        log_info!(
            "egress (inside the pod): {} on {}",
            layout.describe(),
            req.ifname
        );
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
            return self.new_ifb(name, &alias);
        };
        if who.owner_of(&existing) == IfbOwner::Foreign {
            // choose_ifb judged the name free or ours a moment ago: another
            // attachment's ADD, in parallel, has made it since.
            log_info!(
                "{name} is now {:?} {:?}, made since this ADD chose it",
                existing.kind,
                existing.alias
            );
            return Err(IfbTaken(name.to_string()).into());
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
        Ok((existing, false))
    }

    /// An ifb under `name` that did not exist: a parked one taken from
    /// the pool (whose qdiscs are then listed: not fresh), else a new one.
    fn new_ifb(&mut self, name: &str, alias: &str) -> anyhow::Result<(Link, bool)> {
        let mtu = self.host.mtu;
        let taken = match self.req.ifb_pool {
            Some(pool) => pool.take(self.nl, name, alias, mtu)?,
            None => Taken::Empty,
        };
        let (l, fresh) = match taken {
            Taken::Ifb(l) => (l, false),
            Taken::Empty => match self.nl.create_ifb(name, mtu, Some(alias)) {
                Ok(l) => {
                    // Once, for the ifb's life (parked and taken again, it
                    // keeps it): every ADD that brings it up gains.
                    if let Err(e) = self.nl.disable_ipv6(name) {
                        log_info!("{name}: IPv6 stays on ({e})");
                    }
                    (l, true)
                }
                // Another attachment's ADD, running in parallel, made it
                // between our look and our create: try again from the top.
                Err(e) if e.is_exists() => return Err(IfbTaken(name.to_string()).into()),
                Err(e) => return Err(e).cni_with(Code::Kernel, || format!("creating ifb {name}")),
            },
            Taken::NameTaken => return Err(IfbTaken(name.to_string()).into()),
        };
        // Undone by deletion either way: a failed ADD is rare, and an ifb
        // half set up for this attachment is not one to hand on.
        self.undo.push(Undo::Link(l.index));
        Ok((l, fresh))
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
    nl: &mut dyn Kernel,
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
        // A pod held by node class caps alone is shaped too: refused the same.
        (EgressMode::Ifb, Some(q))
            if req.egress.is_some() || req.caps_bind(Direction::OutOfPod) =>
        {
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

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
