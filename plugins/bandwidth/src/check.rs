//! CHECK: the first difference between the plan and the kernel, object by
//! object (qdiscs, classes, leaf queues, filters and their matches, the
//! backstop), as code 101.

use crate::config::EgressMode;
use crate::devices::ifb_name;
use crate::htb_plan::Direction;
use crate::layout::{RootLayout, root_difference};
use crate::plan::{AddRequest, FILTER_PRIO, Object, desired};
use crate::pod::{has_priority_reset, in_pod, missing_if_none};
use crate::record::Installed;
use cni_netlink::Link;
use cni_netlink::bpf::PRIORITY_RESET_PRIO;
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{INGRESS_HANDLE, TCA_EGRESS_REDIR};
use cni_types::error::{CniError, Code, ResultExt};

fn mismatch(m: String) -> anyhow::Error {
    CniError::new(Code::CheckMismatch, m).into()
}

/// CHECK of one device's root against the wanted layout.
fn check_root(nl: &mut dyn Kernel, link: &Link, want: &RootLayout) -> anyhow::Result<()> {
    match root_difference(nl, link, want)? {
        Some(m) => Err(mismatch(m)),
        None => Ok(()),
    }
}

/// CHECK of one object against the kernel; `ifb` carries the ifb found by
/// an earlier [`Object::Ifb`] to the objects that refer to it.
fn check_object(
    nl: &mut dyn Kernel,
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
            check_redirect(nl, host, name, target)
        }
        Object::IfbRoot(name, l) => {
            let target = ifb
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("internal: {name}'s root before the ifb"))?;
            check_root(nl, target, l)
        }
        Object::PodHook => in_pod(nl, req.netns, req.ifname, |pn, link| {
            check_pod_hook(pn, link, req.ifname)
        }),
        Object::PodRoot(l) => in_pod(nl, req.netns, req.ifname, |pn, link| {
            let link = missing_if_none(link, req.ifname)?;
            check_root(pn, &link, l)
        }),
        Object::Backstop(b) => match crate::backstop::verify(nl, b)? {
            Some(d) => Err(mismatch(d)),
            None => Ok(()),
        },
    }
}

/// CHECK: the first difference between what should be and what is, object
/// by object (qdiscs, classes, leaf queues, filters and their matches).
pub fn verify(
    nl: &mut dyn Kernel,
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
    let backstop = crate::backstop::for_request(req, host, mode, egress.is_some())?;
    let mut found_ifb = None;
    for o in desired(ingress, egress, mode, Some(&ifb), backstop) {
        check_object(nl, host, req, &o, &mut found_ifb)?;
    }
    Ok(())
}

/// Our match-all redirect at FILTER_PRIO, to the ifb found.
fn check_redirect(
    nl: &mut dyn Kernel,
    host: &Link,
    name: &str,
    target: &Link,
) -> anyhow::Result<()> {
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
        return Ok(());
    }
    Err(mismatch(format!(
        "{}: filter redirects to ifindex {:?}, expected {name} ({})",
        host.name,
        f.mirred.iter().map(|m| m.ifindex).collect::<Vec<_>>(),
        target.index
    )))
}

/// Our clsact and priority-reset filter on the container interface.
fn check_pod_hook(pn: &mut dyn Kernel, link: Option<Link>, ifname: &str) -> anyhow::Result<()> {
    let link = missing_if_none(link, ifname)?;
    let hook = pn
        .top_qdiscs(link.index)
        .cni_with(Code::Kernel, || format!("listing qdiscs of {ifname}"))?
        .into_iter()
        .any(|q| q.is_clsact());
    if hook && has_priority_reset(pn, &link)? {
        return Ok(());
    }
    Err(mismatch(format!(
        "{ifname}: the priority-reset filter (clsact egress, bpf prio {PRIORITY_RESET_PRIO}) is missing"
    )))
}
