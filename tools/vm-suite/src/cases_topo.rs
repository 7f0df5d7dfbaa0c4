//! topology-label on 6.1: the alias on both veth ends, the zone profile's
//! MTU (both ends) and a sysctl inside the pod, CHECK, and DEL restoring
//! every previous value.

use anyhow::{Context as _, Result, ensure};
use cni_netlink::Netlink;
use serde_json::{Value, json};
use std::path::Path;

use crate::Report;
use crate::conf::{NET, TOPO_STATE};
use crate::inspect;
use crate::plugin;
use crate::world::Pod;

const ZONE: &str = "topology.kubernetes.io/zone";
const RP_FILTER: &str = "/proc/sys/net/ipv4/conf/eth0/rp_filter";

/// (alias, mtu) of the host veth and of the pod's eth0, and the pod's
/// rp_filter (`/proc/sys/net` follows the thread's namespace).
fn observe(pod: &Pod) -> Result<[(Option<String>, u32); 2]> {
    let mut nl = Netlink::new()?;
    let h = nl.link_by_name(&pod.w.host)?.context("host veth")?;
    let p = pod
        .w
        .ns
        .run(|| Netlink::new()?.link_by_name("eth0")?.context("pod eth0"))?;
    Ok([(h.alias, h.mtu), (p.alias, p.mtu)])
}

fn rp_filter(pod: &Pod) -> Result<String> {
    pod.w
        .ns
        .run(|| Ok(std::fs::read_to_string(RP_FILTER)?.trim().to_string()))
}

fn conf(pod: &Pod) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "topology-label",
        "stateDir": TOPO_STATE,
        "labels": {ZONE: "us-west-2a"},
        "profiles": [{"match": {ZONE: "us-west-2a"}, "mtu": 1400,
                      "sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "2"}}],
        "prevResult": pod.prev_result("1.0.0"),
    })
}

pub fn topology_label(r: &mut Report) {
    r.case("topology-label", || {
        let pod = Pod::new(8, "shop")?;
        let c = conf(&pod);
        let (before, rp0) = (observe(&pod)?, rp_filter(&pod)?);
        let out = plugin::run("topology-label", "ADD", &pod, &c)?.ok()?;
        ensure!(out == pod.prev_result("1.0.0"), "prevResult not passed through: {out}");
        let want = format!("shop/{} us-west-2a", pod.name);
        let got = observe(&pod)?;
        for (side, (alias, mtu)) in ["host veth", "pod eth0"].iter().zip(&got) {
            ensure!(alias.as_deref() == Some(want.as_str()), "{side} alias {alias:?}");
            ensure!(*mtu == 1400, "{side} mtu {mtu}");
        }
        ensure!(rp_filter(&pod)? == "2", "rp_filter {}", rp_filter(&pod)?);
        plugin::run("topology-label", "CHECK", &pod, &c)?.ok()?;
        plugin::run("topology-label", "DEL", &pod, &c)?.ok()?;
        ensure!(observe(&pod)? == before, "DEL left {:?}, was {before:?}", observe(&pod)?);
        ensure!(rp_filter(&pod)? == rp0, "rp_filter not restored");
        inspect::assert_clean(&[Path::new(TOPO_STATE)], Some(&pod.w.ns))?;
        plugin::del_bare("topology-label", &pod, &c)?.ok()?;
        Ok(format!(
            "alias {want:?} on both ends, mtu 1400 both ends, rp_filter 2 in the pod; CHECK 0; DEL restored mtu {} and rp_filter {rp0}",
            before[0].1
        ))
    });
}
