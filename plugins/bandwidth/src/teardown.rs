//! DEL and GC: remove what the record says is ours, as far as it still
//! exists and is still ours, in the reverse of the order ADD makes it (the
//! ifb first: see `teardown`), going on past a failed step and reporting
//! every failure.

use crate::devices::{IfbOwner, parse_ifb_alias};
use crate::ifb_pool::IfbPool;
use crate::pod::{delete_qdisc_if, remove_pod_hook, remove_pod_root};
use crate::record::{Attachment, Installed, root_is_ours};
use cni_netlink::Link;
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{ETH_P_ALL, INGRESS_HANDLE, Qdisc, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
use cni_types::error::{Code, Failures, ResultExt};
use cni_types::log_info;
use std::path::Path;

/// The host veth recorded in `inst`, if it still exists under the same
/// index and name (an index can be reused by a new pod).
fn recorded_host(nl: &mut dyn Kernel, inst: &Installed) -> anyhow::Result<Option<Link>> {
    let link = nl
        .link_by_index(inst.host_index)
        .cni_with(Code::Kernel, || format!("looking up {}", inst.host_veth))?;
    Ok(link.filter(|l| l.name == inst.host_veth))
}

/// This attachment's ifb `name`, if it exists and is its own: marked for
/// it, or unmarked (the reference plugin's, or created and killed before
/// the mark; the caller knows the name is this attachment's). One marked
/// for another attachment (or parked) is left alone: deleting it would
/// blackhole that pod's egress.
fn owned_ifb(
    nl: &mut dyn Kernel,
    name: &str,
    who: &Attachment<'_>,
) -> anyhow::Result<Option<Link>> {
    let Some(l) = nl
        .link_by_name(name)
        .cni_with(Code::Kernel, || format!("looking up {name}"))?
    else {
        return Ok(None);
    };
    match who.owner_of(&l) {
        IfbOwner::Foreign => {
            log_info!(
                "leaving {name}: it is not this attachment's ({:?})",
                l.alias
            );
            Ok(None)
        }
        IfbOwner::ThisAttachment | IfbOwner::Unmarked => Ok(Some(l)),
    }
}

/// Deletes the ifb `name` if it is this attachment's (see [`owned_ifb`]).
/// Fine when it is already gone.
pub fn delete_owned_ifb(
    nl: &mut dyn Kernel,
    name: &str,
    who: &Attachment<'_>,
) -> anyhow::Result<()> {
    match owned_ifb(nl, name, who)? {
        Some(l) => delete_ifb(nl, &l),
        None => Ok(()),
    }
}

fn delete_ifb(nl: &mut dyn Kernel, l: &Link) -> anyhow::Result<()> {
    nl.delete_link(l.index)
        .cni_with(Code::Kernel, || format!("deleting {}", l.name))?;
    log_info!("deleted {}", l.name);
    Ok(())
}

/// Parks the ifb `name` in `pool` if it is this attachment's, or deletes
/// it when the pool is full (or parking fails: nothing half-parked stays
/// this attachment's). Only once its redirect is gone.
fn park_owned_ifb(
    nl: &mut dyn Kernel,
    name: &str,
    who: &Attachment<'_>,
    pool: &IfbPool<'_>,
) -> anyhow::Result<()> {
    let Some(l) = owned_ifb(nl, name, who)? else {
        return Ok(());
    };
    match pool.park(nl, &l) {
        Ok(true) => return Ok(()),
        Ok(false) => log_info!("the ifb pool is full: deleting {name}"),
        Err(e) => log_info!("parking {name} failed ({e:#}): deleting it"),
    }
    delete_ifb(nl, &l)
}

/// Removes everything `inst` records as ours, as far as it still exists
/// and is still ours, going on past a failed step and reporting every
/// failure. `pod` is the netns and container interface when DEL has them
/// and the netns is the one recorded at ADD; without them a pod-side root
/// goes away with the pod's netns. With a `pool` that is on, the ifb is
/// parked there, after its redirect is gone (see [`crate::ifb_pool`]).
pub fn teardown(
    nl: &mut dyn Kernel,
    inst: &Installed,
    who: &Attachment<'_>,
    pod: Option<(&Path, &str)>,
    pool: Option<&IfbPool<'_>>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    let pool = pool.filter(|p| p.is_on());
    // Deleted, the ifb goes first, out of ADD's reverse order: the
    // redirect's mirred action holds a reference on it. Deleted first, the
    // ifb's unregister makes mirred drop that reference at once; with the
    // filter deleted first, the reference is dropped only by an RCU work
    // item, and the unregister polls for it (rcu_barrier, then sleeps of a
    // jiffy): 4-5 ms more per DEL (BENCHMARKS.md, section 1). The ifb
    // outlives the pod's veth: it goes whether or not the veth is there.
    if let (Some(name), None) = (&inst.ifb, pool) {
        failures.record(format!("ifb {name}"), delete_owned_ifb(nl, name, who));
    }
    if let Some((ns, ifname)) = pod {
        remove_pod_side(nl, inst, ns, ifname, &mut failures);
    }
    let looked_up = failures.record(
        format!("looking up {}", inst.host_veth),
        recorded_host(nl, inst),
    );
    let redirect_gone = match &looked_up {
        Some(Some(host)) => remove_host_hook(nl, inst, host, &mut failures),
        // Looked up and gone: its filter went with it.
        Some(None) => true,
        None => false,
    };
    let host = looked_up.flatten();
    if let (Some(name), Some(pool)) = (&inst.ifb, pool) {
        let done = if redirect_gone {
            park_owned_ifb(nl, name, who, pool)
        } else {
            delete_owned_ifb(nl, name, who)
        };
        failures.record(format!("ifb {name}"), done);
    }
    // The backstop's table outlives the host veth (newer kernels keep a
    // device's base chain): it goes whether or not the veth is there.
    if let Some(table) = &inst.backstop {
        failures.record(
            format!("backstop table {table}"),
            crate::backstop::remove(nl, table, who),
        );
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

/// The pod side of a pod-mode attachment: its root qdisc and clsact.
fn remove_pod_side(
    nl: &mut dyn Kernel,
    inst: &Installed,
    ns: &Path,
    ifname: &str,
    failures: &mut Failures,
) {
    if inst.pod_tbf {
        failures.record(
            format!("root qdisc on the pod's {ifname}"),
            remove_pod_root(nl, ns, ifname, inst.pod_root_kinds),
        );
    }
    if inst.pod_clsact {
        failures.record(
            format!("clsact on the pod's {ifname}"),
            remove_pod_hook(nl, ns, ifname),
        );
    }
}

/// Our redirect filter and `ingress` qdisc on the host veth. True when the
/// redirect is surely gone (removed, or never recorded).
fn remove_host_hook(
    nl: &mut dyn Kernel,
    inst: &Installed,
    host: &Link,
    failures: &mut Failures,
) -> bool {
    let mut gone = true;
    if let Some(prio) = inst.filter_prio {
        gone = failures
            .record(
                format!("redirect filter on {}", host.name),
                nl.delete_filter(host.index, INGRESS_HANDLE, prio, ETH_P_ALL)
                    .cni_with(Code::Kernel, || {
                        format!("removing filter from {}", host.name)
                    }),
            )
            .is_some();
    }
    if inst.ingress_qdisc {
        failures.record(
            format!("ingress qdisc on {}", host.name),
            delete_qdisc_if(nl, host, Qdisc::is_ingress, TC_H_INGRESS, INGRESS_HANDLE),
        );
    }
    gone
}

/// GC: ifbs marked as ours for `network` whose attachment is not valid
/// (state lost with a wiped /run, or a DEL that never came).
pub fn sweep_stale_ifbs(
    nl: &mut dyn Kernel,
    network: &str,
    valid: &dyn Fn(&str, &str) -> bool,
    failures: &mut Failures,
) {
    let Some(links) = failures.record(
        "listing links",
        nl.links().cni(Code::Kernel, "netlink request failed"),
    ) else {
        return;
    };
    for l in links.iter().filter(|l| l.kind.as_deref() == Some("ifb")) {
        let Some((net, cid, ifname)) = l.alias.as_deref().and_then(parse_ifb_alias) else {
            continue;
        };
        if net == network && !valid(cid, ifname) {
            log_info!("gc: deleting stale ifb {}", l.name);
            let who = Attachment {
                network,
                container_id: cid,
                ifname,
            };
            failures.record(
                format!("ifb {}", l.name),
                delete_owned_ifb(nl, &l.name, &who),
            );
        }
    }
}

/// GC: backstop tables marked as ours for `network` whose attachment is
/// not valid.
pub fn sweep_stale_tables(
    nl: &mut dyn Kernel,
    network: &str,
    valid: &dyn Fn(&str, &str) -> bool,
    failures: &mut Failures,
) {
    let listed = crate::backstop::stale_tables(nl, network, valid);
    let Some(stale) = failures.record("listing backstop tables", listed) else {
        return;
    };
    for (t, cid, ifname) in stale {
        log_info!("gc: deleting stale backstop table {}", t.name);
        let who = Attachment {
            network,
            container_id: &cid,
            ifname: &ifname,
        };
        failures.record(
            format!("nft table {}", t.name),
            crate::backstop::remove_stale(nl, &t, &who),
        );
    }
}
