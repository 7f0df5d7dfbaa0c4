//! The pod side: acting inside the pod's namespace (through a handle the
//! kernel seam opens there) on the container interface's qdiscs.

use crate::record::{RootKinds, root_is_ours};
use cni_netlink::Link;
use cni_netlink::bpf::{CLSACT_EGRESS, PRIORITY_RESET_PRIO};
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{INGRESS_HANDLE, Qdisc, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
use cni_types::error::{CniError, Code, ResultExt};
use std::path::Path;

/// Runs `f` inside the pod's netns with a socket there and the container
/// interface (`None` when it is gone).
pub(crate) fn in_pod<T>(
    k: &mut dyn Kernel,
    ns: &Path,
    ifname: &str,
    f: impl FnOnce(&mut dyn Kernel, Option<Link>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut pn = k.in_netns(ns)?;
    let link = pn
        .link_by_name(ifname)
        .cni_with(Code::Kernel, || format!("looking up {ifname}"))?;
    f(&mut *pn, link)
}

/// The container interface ADD found a moment ago, or code 102 when it is gone.
pub(crate) fn vanished_if_none(link: Option<Link>, ifname: &str) -> anyhow::Result<Link> {
    link.ok_or_else(|| {
        CniError::new(
            Code::InterfaceNotFound,
            format!("{ifname} vanished from the pod"),
        )
        .into()
    })
}

/// The container interface CHECK looks at, or a mismatch when it is gone.
pub(crate) fn missing_if_none(link: Option<Link>, ifname: &str) -> anyhow::Result<Link> {
    link.ok_or_else(|| {
        CniError::new(
            Code::CheckMismatch,
            format!("{ifname} is missing in the pod"),
        )
        .into()
    })
}

/// The root and ingress-hook qdiscs of the container interface inside the
/// pod, if any.
pub(crate) fn pod_top_qdiscs(
    k: &mut dyn Kernel,
    ns: &Path,
    ifname: &str,
) -> anyhow::Result<(Option<Qdisc>, Option<Qdisc>)> {
    in_pod(k, ns, ifname, |pn, link| {
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
pub(crate) fn has_priority_reset(nl: &mut dyn Kernel, link: &Link) -> anyhow::Result<bool> {
    let filters = nl
        .filters(link.index, CLSACT_EGRESS)
        .cni_with(Code::Kernel, || format!("listing filters of {}", link.name))?;
    Ok(filters
        .iter()
        .any(|f| f.kind == "bpf" && f.prio == PRIORITY_RESET_PRIO))
}

/// Removes our clsact from the container interface, if it is still there.
pub(crate) fn remove_pod_hook(k: &mut dyn Kernel, ns: &Path, ifname: &str) -> anyhow::Result<()> {
    in_pod(k, ns, ifname, |pn, link| match link {
        Some(link) => delete_qdisc_if(pn, &link, Qdisc::is_clsact, TC_H_INGRESS, INGRESS_HANDLE),
        None => Ok(()),
    })
}

/// Removes our root `1:` from the container interface, if it is still
/// there and of a kind the record says is ours.
pub(crate) fn remove_pod_root(
    k: &mut dyn Kernel,
    ns: &Path,
    ifname: &str,
    kinds: Option<RootKinds>,
) -> anyhow::Result<()> {
    in_pod(k, ns, ifname, |pn, link| match link {
        Some(link) => delete_qdisc_if(pn, &link, |q| root_is_ours(kinds, q), TC_H_ROOT, TBF_HANDLE),
        None => Ok(()),
    })
}

/// Deletes `link`'s qdisc at (`parent`, `handle`) if the one there is
/// `what` (by kind too: `ingress` and `clsact` share `ffff:`, and a tbf
/// may have been replaced by someone else's qdisc since).
pub(crate) fn delete_qdisc_if(
    nl: &mut dyn Kernel,
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
