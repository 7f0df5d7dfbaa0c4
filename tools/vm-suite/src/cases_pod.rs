//! `egressMode: pod`: the shaper inside the pod, and the host-side
//! nf_tables backstop that holds a pod flooding past its own qdiscs.

use anyhow::{Context as _, Result, ensure};
use cni_netlink::Netlink;
use cni_netlink::nft::Nft;
use serde_json::json;
use std::path::Path;

use crate::Report;
use crate::conf::{self, BW_STATE, RATE};
use crate::inspect;
use crate::plugin;
use crate::traffic::{self, End, flow};
use crate::world::{Peers, Pod};

const FLOOD_SECONDS: u64 = 5;

/// Our table hooks the host veth, its comment names the attachment, and
/// it holds a limit: returns its name.
pub fn check_backstop(pod: &Pod) -> Result<String> {
    let tables = inspect::tables()?;
    let [(name, owner)] = tables.as_slice() else {
        anyhow::bail!("expected one backstop table, found {tables:?}");
    };
    let owner = owner.clone().unwrap_or_default();
    ensure!(owner.contains(&pod.id), "table {name}'s comment {owner:?}");
    let o = Nft::new()?.observe(name)?;
    ensure!(
        o.hook_dev.as_deref() == Some(pod.w.host.as_str()),
        "table {name} hooks {:?}",
        o.hook_dev
    );
    ensure!(
        !o.limits.is_empty() && !o.rules.is_empty(),
        "table {name}: {o:?}"
    );
    Ok(name.clone())
}

pub fn pod_mode(r: &mut Report, peers: &Peers) {
    let pod = match Pod::new(3, "default") {
        Ok(p) => p,
        Err(e) => return r.setup_failed("pod-mode", e),
    };
    let c = conf::bandwidth(
        &pod,
        "0.4.0",
        json!({"egressMode": "pod", "runtimeConfig": conf::annotations(Some(RATE), Some(RATE))}),
    );
    r.case("pod-mode", || {
        plugin::run("bandwidth", "ADD", &pod, &c)?.ok()?;
        let mut nl = Netlink::new()?;
        let host = pod.w.host_index()?;
        ensure!(
            inspect::root_tbf_rate(&mut nl, host)? == RATE,
            "host veth tbf"
        );
        ensure!(
            inspect::kinds(&mut nl, host)? == ["tbf"],
            "host veth: {:?}",
            inspect::kinds(&mut nl, host)?
        );
        ensure!(inspect::ifbs(&mut nl)?.is_empty(), "an ifb in pod mode");
        let mut pn = pod.w.ns.netlink()?;
        let eth0 = pn.link_by_name("eth0")?.context("no eth0")?;
        ensure!(
            inspect::root_tbf_rate(&mut pn, eth0.index)? == RATE,
            "pod eth0 tbf"
        );
        let table = check_backstop(&pod)?;
        plugin::run("bandwidth", "CHECK", &pod, &c)?.ok()?;
        Ok(format!(
            "tbf {RATE} b/s in the pod and on {}, no ifb, backstop {table}; CHECK 0",
            pod.w.host
        ))
    });
    r.case("traffic-pod-egress", || {
        let before = inspect::counter("sent_all")?;
        let f = flow(&End::of(&pod.w), &End::node_side(&pod.w))?;
        let after = inspect::counter("sent_all")?;
        let dropped = inspect::counter("dropped_all")?;
        ensure!(
            after.0 > before.0 + f.total,
            "backstop sent_all moved {} B for {} B",
            after.0 - before.0,
            f.total
        );
        Ok(format!(
            "{}; backstop sent_all +{} B, dropped_all {} pkts",
            f.held(RATE, "pod->node, shaped in the pod")?,
            after.0 - before.0,
            dropped.1
        ))
    });
    r.case("bypass-flood", || flood_held(&pod, peers));
    r.case("pod-mode-del", || {
        plugin::run("bandwidth", "DEL", &pod, &c)?.ok()?;
        inspect::assert_clean(&[Path::new(BW_STATE)], Some(&pod.w.ns))?;
        plugin::run("bandwidth", "DEL", &pod, &c)?.ok()?;
        Ok("DEL removed both tbfs, the backstop table and the state; DEL again: 0".into())
    });
}

/// A flood past the pod's tbf, from inside the pod: the backstop holds
/// what reaches the peer to the pod's limit once its bucket (one second of
/// the rate plus the burst) is spent, and counts the drops.
fn flood_held(pod: &Pod, peers: &Peers) -> Result<String> {
    let mut nl = Netlink::new()?;
    let mac = nl
        .link_by_name(&pod.w.host)?
        .and_then(|l| l.mac)
        .context("host veth MAC")?;
    let dropped0 = inspect::counter("dropped_all")?;
    let f = traffic::flood(&pod.w, mac, &peers.outside, FLOOD_SECONDS)?;
    let dropped = inspect::counter("dropped_all")?.1 - dropped0.1;
    let rate = RATE / 8;
    let detail = format!(
        "flooder sent {:.1} MB in {FLOOD_SECONDS} s; peer got {:?} B/s (limit {rate} B/s); backstop dropped {dropped} pkts",
        f.sent as f64 / 1e6,
        f.per_second
    );
    ensure!(
        f.sent > 5 * rate * FLOOD_SECONDS,
        "{detail}: too weak a flood to prove anything"
    );
    ensure!(dropped > 0, "{detail}: nothing dropped");
    let total: u64 = f.per_second.iter().sum();
    let bound = rate * (FLOOD_SECONDS + 1) + rate;
    ensure!(total <= bound, "{detail}: {total} B over the bound {bound}");
    // After the bucket: each second within 10% of the limit.
    for (i, b) in f.per_second.iter().enumerate().skip(2) {
        ensure!(
            *b <= rate + rate / 10,
            "{detail}: second {} over the limit",
            i + 1
        );
        // Held, not cut off: the limit's worth still gets through.
        ensure!(*b >= rate / 2, "{detail}: second {} starved", i + 1);
    }
    Ok(detail)
}
