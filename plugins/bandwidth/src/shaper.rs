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
use crate::devices::{ifb_alias, ifb_name};
use crate::shaping::{Shape, shape};
use anyhow::Context as _;
use cni_netlink::tc::{
    ETH_P_ALL, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR, TbfSpec,
};
use cni_netlink::{Link, Netlink, netns};
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
    /// How egress is shaped ("ifb" or "pod"), for CHECK and operators.
    #[serde(default)]
    pub egress_mode: Option<String>,
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
    pub egress_mode: EgressMode,
    pub ingress: Option<Shape>,
    pub egress: Option<Shape>,
}

/// Installs the layout on `host`, replacing what a previous ADD of the
/// same attachment left (`previous`). Returns what is now installed and the
/// ifb link (for the result). On failure, removes what this call created.
pub fn install(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    previous: Option<&Installed>,
    save: &mut dyn FnMut(&Installed) -> anyhow::Result<()>,
) -> anyhow::Result<(Installed, Option<Link>)> {
    let prev = previous.filter(|p| p.host_index == host.index && p.host_veth == host.name);
    let mut inst = Installed {
        host_veth: host.name.clone(),
        host_index: host.index,
        ingress_tbf: req.ingress.is_some() || prev.is_some_and(|p| p.ingress_tbf),
        ifb: req
            .egress
            .map(|_| ifb_name(req.network, req.container_id))
            .or_else(|| prev.and_then(|p| p.ifb.clone())),
        ingress_qdisc: prev.is_some_and(|p| p.ingress_qdisc),
        filter_prio: prev.and_then(|p| p.filter_prio),
        pod_tbf: prev.is_some_and(|p| p.pod_tbf),
        egress_mode: prev.and_then(|p| p.egress_mode.clone()),
    };
    let qdiscs = kernel(nl.qdiscs(host.index), || {
        format!("listing qdiscs of {}", host.name)
    })?;
    // What was ours before this ADD decides ownership; the claims below only
    // make sure a crash leaves a record of everything we may create.
    let mut owned = inst.clone();
    adopt_own_layout(nl, host, req, &qdiscs, &mut owned)?;
    inst.ingress_qdisc = owned.ingress_qdisc;
    inst.filter_prio = owned.filter_prio;
    inst.ingress_tbf |= owned.ingress_tbf;
    if owned.ifb.is_some() {
        inst.ifb = owned.ifb.clone();
    }
    // Decided before anything changes, so a refusal leaves the host as it was.
    let mode = resolve_egress_mode(req, host, &qdiscs, owned.ingress_qdisc)?;
    match (&req.egress, mode) {
        (Some(_), EgressMode::Pod) => inst.pod_tbf = true,
        (Some(_), _) => {
            inst.ingress_qdisc = true;
            inst.filter_prio = Some(FILTER_PRIO);
        }
        (None, _) => {}
    }
    // One write records intent before the kernel is touched: a crash from
    // here on leaves a state file (a superset of what exists) that lets DEL
    // find everything.
    save(&inst)?;
    let mut undo = Vec::new();
    let plan = Plan {
        qdiscs: &qdiscs,
        mode,
        owned: &owned,
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

/// What `install` found and decided before the first change.
struct Plan<'a> {
    qdiscs: &'a [cni_netlink::tc::Qdisc],
    mode: EgressMode,
    /// What the attachment owned before this ADD.
    owned: &'a Installed,
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
    let root = qdiscs.iter().find(|q| q.parent == TC_H_ROOT);

    // Into the pod: root tbf on the host veth (coexists with a clsact).
    match &req.ingress {
        Some(s) => {
            if let Some(r) = root.filter(|r| {
                !(is_default_root(&r.kind) || (r.kind == "tbf" && r.handle == TBF_HANDLE))
            }) {
                return Err(CniError::new(
                    Code::Kernel,
                    format!("{} already has a root qdisc", host.name),
                )
                .with_details(format!(
                    "a {} qdisc {:#x} we did not create is installed; refusing to replace it",
                    r.kind, r.handle
                ))
                .into());
            }
            if root.is_none_or(|r| r.kind != "tbf") {
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
            if owned.ingress_tbf && root.is_some_and(|r| r.kind == "tbf" && r.handle == TBF_HANDLE)
            {
                kernel(nl.delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE), || {
                    format!("removing tbf from {}", host.name)
                })?;
            }
            inst.ingress_tbf = false;
        }
    }

    // Out of the pod.
    let Some(s) = &req.egress else {
        remove_egress(nl, host, inst)?;
        remove_pod_side(req.netns, req.ifname, inst)?;
        inst.egress_mode = None;
        return Ok(None);
    };
    if mode == EgressMode::Pod {
        // Only what was ours before: the claims for ifb mode were not made.
        inst.ingress_qdisc = owned.ingress_qdisc;
        inst.filter_prio = owned.filter_prio;
        remove_egress(nl, host, inst)?;
        let existed = pod_tbf_present(req.netns, req.ifname)?;
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
        inst.egress_mode = Some("pod".into());
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
    inst.egress_mode = Some("ifb".into());
    let name = ifb_name(req.network, req.container_id);
    let alias = ifb_alias(req.network, req.container_id, req.ifname);
    let ifb = match kernel(nl.link_by_name(&name), || format!("looking up {name}"))? {
        Some(existing) => {
            // Left by a crashed ADD of ours, or by the reference plugin
            // (same name scheme): adopt it, bring it in line.
            if existing.kind.as_deref() != Some("ifb") {
                return Err(CniError::new(
                    Code::Kernel,
                    format!("{name} exists and is not an ifb"),
                )
                .with_details(format!("kind {:?}", existing.kind))
                .into());
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

    match qdiscs.iter().find(|q| q.parent == TC_H_INGRESS) {
        None => {
            kernel(nl.add_ingress_qdisc(host.index), || {
                format!("adding ingress qdisc to {}", host.name)
            })?;
            undo.push(Undo::IngressQdisc(host.index));
            inst.ingress_qdisc = true;
        }
        Some(q) if q.kind == "ingress" && owned.ingress_qdisc => {}
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

/// An `ingress` qdisc whose redirects all go to this attachment's ifb was
/// made for this attachment: by us before the state was lost, or by the
/// reference plugin before an upgrade (it uses the same ifb name, prio 1
/// and root tbf `1:`). It is adopted rather than taken for another tc
/// user's, which would shape egress twice.
fn adopt_own_layout(
    nl: &mut Netlink,
    host: &Link,
    req: &AddRequest<'_>,
    qdiscs: &[cni_netlink::tc::Qdisc],
    owned: &mut Installed,
) -> anyhow::Result<()> {
    let has_ingress = qdiscs
        .iter()
        .any(|q| q.parent == TC_H_INGRESS && q.kind == "ingress");
    if owned.ingress_qdisc || !has_ingress {
        return Ok(());
    }
    let name = ifb_name(req.network, req.container_id);
    let Some(ifb) = kernel(nl.link_by_name(&name), || format!("looking up {name}"))? else {
        return Ok(());
    };
    let filters = kernel(nl.filters(host.index, INGRESS_HANDLE), || {
        format!("listing filters of {}", host.name)
    })?;
    let redirects: Vec<_> = filters.iter().filter(|f| !f.mirred.is_empty()).collect();
    let all_to_our_ifb = !redirects.is_empty()
        && redirects
            .iter()
            .all(|f| f.kind == "u32" && f.mirred.iter().all(|m| m.ifindex == ifb.index));
    if all_to_our_ifb {
        log_info!(
            "adopting the ingress qdisc, filter and {name} on {} (made for this attachment)",
            host.name
        );
        owned.ingress_qdisc = true;
        owned.filter_prio = redirects.first().map(|f| f.prio);
        owned.ifb = Some(name);
        owned.ingress_tbf |= qdiscs
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.kind == "tbf" && q.handle == TBF_HANDLE);
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
        .find(|q| q.parent == TC_H_INGRESS && !(q.kind == "ingress" && ingress_qdisc_is_ours));
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

fn pod_tbf_present(ns: &Path, ifname: &str) -> anyhow::Result<bool> {
    netns::run_in(ns, || {
        let mut pn = Netlink::new().context("opening netlink in the pod netns")?;
        let Some(link) = kernel(pn.link_by_name(ifname), || format!("looking up {ifname}"))? else {
            return Ok(false);
        };
        let qs = kernel(pn.qdiscs(link.index), || {
            format!("listing qdiscs of {ifname}")
        })?;
        Ok(qs
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.kind == "tbf" && q.handle == TBF_HANDLE))
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
        if qs
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.kind == "tbf" && q.handle == TBF_HANDLE)
        {
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

/// The qdiscs a device has before anyone configures it.
fn is_default_root(kind: &str) -> bool {
    matches!(
        kind,
        "noqueue" | "pfifo_fast" | "mq" | "fq_codel" | "pfifo" | "fq"
    )
}

/// Removes egress shaping: our filter, our ingress qdisc, our ifb.
fn remove_egress(nl: &mut Netlink, host: &Link, inst: &mut Installed) -> anyhow::Result<()> {
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
        .any(|q| q.parent == TC_H_INGRESS && q.kind == "ingress");
        if ours {
            kernel(
                nl.delete_qdisc(host.index, TC_H_INGRESS, INGRESS_HANDLE),
                || format!("removing ingress qdisc from {}", host.name),
            )?;
        }
        inst.ingress_qdisc = false;
    }
    if let Some(name) = inst.ifb.take() {
        delete_ifb(nl, &name)?;
    }
    Ok(())
}

/// Deletes an ifb by name; fine when it is already gone.
pub fn delete_ifb(nl: &mut Netlink, name: &str) -> anyhow::Result<()> {
    if let Some(l) = kernel(nl.link_by_name(name), || format!("looking up {name}"))?
        && l.kind.as_deref() == Some("ifb")
    {
        kernel(nl.delete_link(l.index), || format!("deleting {name}"))?;
        log_info!("deleted {name}");
    }
    Ok(())
}

/// Removes everything `inst` records, as far as it still exists. `pod` is
/// the netns and container interface when DEL has them; without them a
/// pod-side tbf goes away with the pod's netns.
pub fn teardown(
    nl: &mut Netlink,
    inst: &Installed,
    pod: Option<(&Path, &str)>,
) -> anyhow::Result<()> {
    let mut inst = inst.clone();
    if let Some((ns, ifname)) = pod {
        remove_pod_side(ns, ifname, &mut inst)?;
    }
    // The ifb first: it alone survives the pod's veth going away.
    if let Some(name) = inst.ifb.clone() {
        delete_ifb(nl, &name)?;
    }
    if let Some(host) = recorded_host(nl, &inst)? {
        if inst.ingress_tbf {
            let ours = kernel(nl.qdiscs(host.index), || {
                format!("listing qdiscs of {}", host.name)
            })?
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.kind == "tbf" && q.handle == TBF_HANDLE);
            if ours {
                kernel(nl.delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE), || {
                    format!("removing tbf from {}", host.name)
                })?;
            }
        }
        inst.ifb = None;
        remove_egress(nl, &host, &mut inst)?;
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
        let Some(q) = qs
            .iter()
            .find(|q| q.parent == TC_H_ROOT && q.kind == "tbf" && q.handle == TBF_HANDLE)
        else {
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
    if let Some(s) = &req.ingress {
        tbf_on(nl, host, s)?;
    }
    if let (Some(s), Some("pod")) = (&req.egress, inst.and_then(|i| i.egress_mode.as_deref())) {
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
        let name = ifb_name(req.network, req.container_id);
        let Some(ifb) = kernel(nl.link_by_name(&name), || format!("looking up {name}"))? else {
            return Err(mismatch(format!("ifb {name} is missing")));
        };
        tbf_on(nl, &ifb, s)?;
        let qs = kernel(nl.qdiscs(host.index), || {
            format!("listing qdiscs of {}", host.name)
        })?;
        if !qs
            .iter()
            .any(|q| q.parent == TC_H_INGRESS && q.kind == "ingress")
        {
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
