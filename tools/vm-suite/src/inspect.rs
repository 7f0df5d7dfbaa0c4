//! What the kernel holds, read back through cni-netlink's dumps (there is
//! no `tc` or `nft` binary in the VM): qdiscs, classes, filters, links and
//! our nf_tables tables, and the sweep for anything left behind.

use anyhow::{Context as _, Result, bail};
use cni_netlink::nft::Nft;
use cni_netlink::tc::{Qdisc, TC_H_ROOT};
use cni_netlink::{Link, Netlink};
use std::path::Path;

use crate::world::Ns;

/// The qdiscs a plugin installs; anything else is the kernel's default.
const SHAPING_KINDS: [&str; 6] = ["tbf", "htb", "bfifo", "ingress", "clsact", "pfifo"];

/// The root qdisc of `index`, if it is not the kernel's default.
pub fn root(nl: &mut Netlink, index: u32) -> Result<Option<Qdisc>> {
    Ok(nl
        .qdiscs(index)?
        .into_iter()
        .find(|q| q.parent == TC_H_ROOT && q.handle != 0))
}

/// The rate (bits/s) of the root tbf of `index`, or an error naming what
/// is there instead.
pub fn root_tbf_rate(nl: &mut Netlink, index: u32) -> Result<u64> {
    match root(nl, index)? {
        Some(q) if q.kind == "tbf" => {
            Ok(q.tbf.context("tbf without options")?.rate_bytes_per_sec * 8)
        }
        other => bail!("no root tbf on #{index}: {other:?}"),
    }
}

/// The kinds of every qdisc on `index` (children included), sorted.
pub fn kinds(nl: &mut Netlink, index: u32) -> Result<Vec<String>> {
    let mut k: Vec<String> = nl
        .qdiscs(index)?
        .into_iter()
        .filter(|q| SHAPING_KINDS.contains(&q.kind.as_str()))
        .map(|q| q.kind)
        .collect();
    k.sort();
    Ok(k)
}

/// The ifbs the ifb module makes when it loads (`numifbs`, default 2:
/// `ifb0`, `ifb1`, down, no alias), as on a node whose kernel loads it on
/// demand: nobody's attachment.
fn kernels_own(l: &Link) -> bool {
    l.alias.is_none()
        && l.name
            .strip_prefix("ifb")
            .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// An ifb the bandwidth plugin parked (its `ifbPool`): a DEL leaves it
/// for the next ADD, marked for no attachment.
fn parked(l: &Link) -> bool {
    l.alias
        .as_deref()
        .is_some_and(|a| a.starts_with("cni-bandwidth parked pool="))
}

/// Every ifb in the node but the module's own and the parked ones: those
/// an attachment uses.
pub fn ifbs(nl: &mut Netlink) -> Result<Vec<Link>> {
    Ok(nl
        .links()?
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("ifb") && !kernels_own(l) && !parked(l))
        .collect())
}

/// Our nf_tables tables in the node: (name, comment).
pub fn tables() -> Result<Vec<(String, Option<String>)>> {
    let mut nft = Nft::new().context("nf_tables socket")?;
    Ok(nft
        .backstop_tables()?
        .into_iter()
        .map(|t| (t.name, t.owner))
        .collect())
}

/// A counter of our only table: (bytes, packets).
pub fn counter(name: &str) -> Result<(u64, u64)> {
    let mut nft = Nft::new()?;
    for (_, counters) in nft.all_counters()? {
        if let Some((_, b, p)) = counters.into_iter().find(|(n, ..)| n == name) {
            return Ok((b, p));
        }
    }
    bail!("no counter {name} in any table of ours")
}

/// State files in `dir` (the lock file is the store's, kept by design).
pub fn state_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Everything a pod's networking can leave behind: ifbs (but up to 16
/// parked ones) and shaping qdiscs in the node, our nf_tables tables, state files, and shaping
/// qdiscs on the pod's `eth0` (when the pod still exists).
pub fn leftovers(state_dirs: &[&Path], pod: Option<&Ns>) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let mut nl = Netlink::new()?;
    let links = nl.links()?;
    // Parked ifbs outlive pods by design, within the pool's default bound
    // (a shaper left on one is still reported, below).
    let parked_count = links.iter().filter(|l| parked(l)).count();
    if parked_count > 16 {
        left.push(format!("{parked_count} parked ifbs"));
    }
    for l in links {
        if l.kind.as_deref() == Some("ifb") && !kernels_own(&l) && !parked(&l) {
            left.push(format!("ifb {}", l.name));
        }
        for k in kinds(&mut nl, l.index)? {
            left.push(format!("{k} on {}", l.name));
        }
    }
    left.extend(tables()?.into_iter().map(|(t, _)| format!("nft table {t}")));
    for d in state_dirs {
        left.extend(
            state_files(d)
                .into_iter()
                .map(|f| format!("state file {f}")),
        );
    }
    if let Some(ns) = pod {
        let mut pn = ns.netlink()?;
        if let Some(eth0) = pn.link_by_name("eth0")? {
            for k in kinds(&mut pn, eth0.index)? {
                left.push(format!("{k} on {}'s eth0", ns.name));
            }
        }
    }
    Ok(left)
}

/// Fails with the list when anything is left.
pub fn assert_clean(state_dirs: &[&Path], pod: Option<&Ns>) -> Result<()> {
    let left = leftovers(state_dirs, pod)?;
    if !left.is_empty() {
        bail!("left behind: {}", left.join(", "));
    }
    Ok(())
}
