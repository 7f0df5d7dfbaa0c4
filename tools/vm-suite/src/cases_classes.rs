//! Traffic classes by peer (same zone unshaped, cross zone capped, the
//! rest under the pod's limit) in both egress modes, and the counting-only
//! tree, with real flows per class and the operator's per-class counters.

use anyhow::{Context as _, Result, ensure};
use cni_netlink::Netlink;
use cni_netlink::bpf::CLSACT_EGRESS;
use serde_json::{Value, json};
use std::path::Path;

use crate::Report;
use crate::cases_pod::check_backstop;
use crate::cases_tbf::cni_rs_row;
use crate::conf::{self, BW_STATE, CROSS_CAP, POD_LIMIT};
use crate::inspect;
use crate::plugin;
use crate::traffic::{End, flow};
use crate::world::{Peers, Pod};

/// A root htb with its classes on `index`: the number of classes.
fn htb_tree(nl: &mut Netlink, index: u32, what: &str) -> Result<usize> {
    let root = inspect::root(nl, index)?;
    ensure!(
        root.as_ref().is_some_and(|q| q.kind == "htb"),
        "{what}: root {root:?}"
    );
    let n = nl.htb_classes(index)?.len();
    ensure!(n >= 3, "{what}: {n} classes");
    Ok(n)
}

/// The pod's `eth0` has a clsact whose egress hook runs our eBPF
/// priority reset (`cni_rs_prio0`): the guard against `SO_PRIORITY`
/// picking a class, loaded by this kernel's verifier.
fn bpf_guard(pod: &Pod) -> Result<()> {
    let mut pn = pod.w.ns.netlink()?;
    let eth0 = pn.link_by_name("eth0")?.context("no eth0")?;
    ensure!(
        inspect::kinds(&mut pn, eth0.index)?.contains(&"clsact".to_string()),
        "no clsact in the pod"
    );
    let f = pn.filters(eth0.index, CLSACT_EGRESS)?;
    ensure!(f.iter().any(|f| f.kind == "bpf"), "no bpf filter: {f:?}");
    Ok(())
}

fn add(pod: &Pod, mode: &str, limit: Option<u64>, cross: Value) -> Result<Value> {
    let c = conf::bandwidth(
        pod,
        "0.4.0",
        json!({"egressMode": mode, "trafficClasses": conf::classes(cross),
               "runtimeConfig": conf::annotations(limit, limit)}),
    );
    plugin::run("bandwidth", "ADD", pod, &c)?.ok()?;
    plugin::run("bandwidth", "CHECK", pod, &c)?.ok()?;
    Ok(c)
}

fn del(pod: &Pod, c: &Value) -> Result<()> {
    plugin::run("bandwidth", "DEL", pod, c)?.ok()?;
    inspect::assert_clean(&[Path::new(BW_STATE)], Some(&pod.w.ns))
}

fn class_bytes(row: &Value, dir: &str, class: &str) -> u64 {
    row[dir]["classes"][class]["bytes"].as_u64().unwrap_or(0)
}

pub fn classes_ifb(r: &mut Report, peers: &Peers) {
    let pod = match Pod::new(4, "default") {
        Ok(p) => p,
        Err(e) => return r.setup_failed("classes-ifb", e),
    };
    let mut c = Value::Null;
    r.case("classes-ifb", || {
        c = add(&pod, "ifb", Some(POD_LIMIT), conf::cross_cap())?;
        let mut nl = Netlink::new()?;
        let host = htb_tree(&mut nl, pod.w.host_index()?, "host veth")?;
        let ifb = inspect::ifbs(&mut nl)?.pop().context("no ifb")?;
        let on_ifb = htb_tree(&mut nl, ifb.index, &ifb.name)?;
        Ok(format!(
            "htb on {} ({host} classes) and {} ({on_ifb}); CHECK 0",
            pod.w.host, ifb.name
        ))
    });
    let before = cni_rs_row(&pod);
    r.case("traffic-class-cross-egress", || {
        flow(&End::of(&pod.w), &End::of(&peers.cross))?.held(CROSS_CAP, "pod->cross zone")
    });
    r.case("traffic-class-cross-ingress", || {
        flow(&End::of(&peers.cross), &End::of(&pod.w))?.held(CROSS_CAP, "cross zone->pod")
    });
    r.case("traffic-class-outside-egress", || {
        flow(&End::of(&pod.w), &End::of(&peers.outside))?.held(POD_LIMIT, "pod->outside")
    });
    r.case("classes-counters", || {
        let (b, a) = (before?, cni_rs_row(&pod)?);
        let mut seen = Vec::new();
        for (dir, class) in [
            ("egress", "crossZone"),
            ("ingress", "crossZone"),
            ("egress", "outside"),
        ] {
            let d = class_bytes(&a, dir, class).saturating_sub(class_bytes(&b, dir, class));
            // Four seconds at the class's limit: at least a megabyte.
            ensure!(d > 1_000_000, "{dir} {class} moved {d} B: {a}");
            seen.push(format!("{dir} {class} +{d} B"));
        }
        Ok(format!("cni-rs pods --json per class: {}", seen.join(", ")))
    });
    r.case("classes-ifb-del", || {
        del(&pod, &c)?;
        Ok("nothing left".into())
    });
}

pub fn classes_pod(r: &mut Report, peers: &Peers) {
    let pod = match Pod::new(9, "default") {
        Ok(p) => p,
        Err(e) => return r.setup_failed("classes-pod", e),
    };
    let mut c = Value::Null;
    r.case("classes-pod", || {
        c = add(&pod, "pod", Some(POD_LIMIT), conf::cross_cap())?;
        let mut nl = Netlink::new()?;
        let host = htb_tree(&mut nl, pod.w.host_index()?, "host veth")?;
        let mut pn = pod.w.ns.netlink()?;
        let eth0 = pn.link_by_name("eth0")?.context("no eth0")?;
        let inside = htb_tree(&mut pn, eth0.index, "pod eth0")?;
        bpf_guard(&pod)?;
        ensure!(inspect::ifbs(&mut nl)?.is_empty(), "an ifb in pod mode");
        let table = check_backstop(&pod)?;
        Ok(format!(
            "htb on {} ({host} classes) and in the pod ({inside}), bpf guard cni_rs_prio0 loaded, backstop {table} with class chains; CHECK 0",
            pod.w.host
        ))
    });
    r.case("traffic-class-pod-cross-egress", || {
        let before = inspect::counter("sent_crossZone")?;
        let f = flow(&End::of(&pod.w), &End::of(&peers.cross))?;
        let after = inspect::counter("sent_crossZone")?;
        ensure!(
            after.0 >= before.0 + f.total,
            "backstop sent_crossZone moved {} B for {} B",
            after.0 - before.0,
            f.total
        );
        Ok(format!(
            "{}; backstop sent_crossZone +{} B",
            f.held(CROSS_CAP, "pod->cross zone, in-pod htb")?,
            after.0 - before.0
        ))
    });
    r.case("classes-pod-del", || {
        del(&pod, &c)?;
        Ok("nothing left, in the node or the pod".into())
    });
}

pub fn counting_only(r: &mut Report, peers: &Peers) {
    r.case("counting-only", || {
        let pod = Pod::new(10, "default")?;
        let c = add(&pod, "auto", None, json!({}))?;
        let mut nl = Netlink::new()?;
        htb_tree(&mut nl, pod.w.host_index()?, "host veth")?;
        ensure!(
            inspect::ifbs(&mut nl)?.is_empty(),
            "an ifb for counting only"
        );
        let before = cni_rs_row(&pod)?;
        let f = flow(&End::of(&pod.w), &End::of(&peers.same))?;
        let after = cni_rs_row(&pod)?;
        let d =
            class_bytes(&after, "egress", "sameZone") - class_bytes(&before, "egress", "sameZone");
        ensure!(
            d >= f.total,
            "sameZone egress counted {d} B for {} B",
            f.total
        );
        del(&pod, &c)?;
        Ok(format!(
            "no limit, no ifb: htb counts; pod->same zone {:.1} Mbit/s unshaped, counted +{d} B",
            f.steady() / 1e6
        ))
    });
}
