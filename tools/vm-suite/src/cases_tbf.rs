//! The reference layout (root tbf on the host veth, ifb for traffic out of
//! the pod), its traffic both ways, CHECK after tampering, containerd's DEL
//! without a netns, the namespace policy and GC.

use anyhow::{Context as _, Result, bail, ensure};
use cni_netlink::Netlink;
use cni_netlink::tc::{INGRESS_HANDLE, TCA_EGRESS_REDIR, TbfSpec};
use serde_json::{Value, json};
use std::path::Path;

use crate::Report;
use crate::conf::{self, BW_STATE, RATE};
use crate::inspect;
use crate::plugin::{self, merged};
use crate::traffic::{End, flow};
use crate::world::Pod;

/// What the VM pushes without any shaping, both ways, in this boot: the
/// check that every shaped rate is a real limit, not the VM's ceiling.
pub fn unshaped(r: &mut Report) -> f64 {
    let mut best = 0.0;
    r.case("traffic-unshaped", || {
        let pod = Pod::new(1, "default")?;
        let out = flow(&End::of(&pod.w), &End::node_side(&pod.w))?;
        let inn = flow(&End::node_side(&pod.w), &End::of(&pod.w))?;
        best = out.steady().min(inn.steady());
        let detail = format!(
            "pod->node {:.1} Mbit/s ({}), node->pod {:.1} Mbit/s ({})",
            out.steady() / 1e6,
            out.seconds(),
            inn.steady() / 1e6,
            inn.seconds()
        );
        // Below 1.5x the highest limit checked, a "held" limit proves nothing.
        ensure!(
            best >= 1.5 * conf::POD_LIMIT as f64,
            "{detail}: too slow to prove any limit"
        );
        Ok(detail)
    });
    best
}

fn ifb_mode(pod: &Pod) -> Value {
    conf::bandwidth(
        pod,
        "0.4.0",
        json!({"egressMode": "ifb", "runtimeConfig": conf::annotations(Some(RATE), Some(RATE))}),
    )
}

/// The ifb layout: tbf on the host veth, ingress qdisc + u32 redirect to
/// the `bwp…` ifb, tbf there; the result lists the ifb. Returns the ifb.
fn check_ifb_layout(pod: &Pod, result: &Value, rate: u64) -> Result<String> {
    let mut nl = Netlink::new()?;
    let host = pod.w.host_index()?;
    ensure!(
        inspect::root_tbf_rate(&mut nl, host)? == rate,
        "host veth tbf rate"
    );
    let ifbs = inspect::ifbs(&mut nl)?;
    let [ifb] = ifbs.as_slice() else {
        bail!("expected one ifb, found {ifbs:?}");
    };
    ensure!(ifb.name.starts_with("bwp"), "ifb named {}", ifb.name);
    ensure!(
        inspect::root_tbf_rate(&mut nl, ifb.index)? == rate,
        "ifb tbf rate"
    );
    ensure!(
        inspect::kinds(&mut nl, host)?.contains(&"ingress".to_string()),
        "no ingress qdisc on the host veth"
    );
    let redirect = nl.filters(host, INGRESS_HANDLE)?.into_iter().any(|f| {
        f.kind == "u32"
            && f.mirred
                .iter()
                .any(|m| m.action == TCA_EGRESS_REDIR && m.ifindex == ifb.index)
    });
    ensure!(redirect, "no u32 redirect to {}", ifb.name);
    let listed = result["interfaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|i| i["name"] == ifb.name.as_str()));
    ensure!(listed, "the result does not list {}: {result}", ifb.name);
    Ok(ifb.name.clone())
}

/// The operator's view: `cni-rs pods --json`'s row for `pod`.
pub fn cni_rs_row(pod: &Pod) -> Result<Value> {
    let o = std::process::Command::new(plugin::bin("cni-rs"))
        .args(["pods", "--json", "--bandwidth-state-dir", BW_STATE])
        .args(["--topology-state-dir", conf::TOPO_STATE])
        .output()
        .context("running cni-rs")?;
    let rows: Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("cni-rs --json: {}", String::from_utf8_lossy(&o.stderr)))?;
    rows.as_array()
        .and_then(|a| a.iter().find(|row| row["containerId"] == pod.id.as_str()))
        .cloned()
        .with_context(|| format!("no row for {} in {rows}", pod.id))
}

fn bytes(row: &Value, dir: &str) -> u64 {
    row[dir]["bytes"].as_u64().unwrap_or(0)
}

pub fn tbf_ifb(r: &mut Report, unshaped: f64) {
    let pod = match Pod::new(2, "default") {
        Ok(p) => p,
        Err(e) => return r.setup_failed("tbf-ifb", e),
    };
    let c = ifb_mode(&pod);
    r.case("tbf-ifb", || {
        let res = plugin::run("bandwidth", "ADD", &pod, &c)?.ok()?;
        let ifb = check_ifb_layout(&pod, &res, RATE)?;
        plugin::run("bandwidth", "CHECK", &pod, &c)?.ok()?;
        Ok(format!(
            "ADD+CHECK: tbf {RATE} b/s on {} and {ifb}, u32 redirect",
            pod.w.host
        ))
    });
    let before = cni_rs_row(&pod);
    let mut moved = (0u64, 0u64);
    r.case("traffic-tbf-ingress", || {
        let f = flow(&End::node_side(&pod.w), &End::of(&pod.w))?;
        moved.0 = f.total;
        Ok(format!(
            "{}; unshaped {:.1}",
            f.held(RATE, "node->pod")?,
            unshaped / 1e6
        ))
    });
    r.case("traffic-tbf-egress", || {
        let f = flow(&End::of(&pod.w), &End::node_side(&pod.w))?;
        moved.1 = f.total;
        Ok(format!(
            "{}; unshaped {:.1}",
            f.held(RATE, "pod->node via ifb")?,
            unshaped / 1e6
        ))
    });
    r.case("cni-rs-pods", || {
        let (b, a) = (before?, cni_rs_row(&pod)?);
        ensure!(a["egressMode"] == "ifb", "egressMode {}", a["egressMode"]);
        for (dir, got) in [("ingress", moved.0), ("egress", moved.1)] {
            ensure!(a[dir]["rateBitsPerSecond"] == RATE, "{dir} rate: {a}");
            let d = bytes(&a, dir).saturating_sub(bytes(&b, dir));
            // The counters carry every frame's headers on top of the payload.
            ensure!(
                d >= got && d <= got + got / 5 + 100_000,
                "{dir}: counters moved {d} B for {got} B of payload"
            );
        }
        Ok(format!(
            "rows read the tbf counters: ingress +{} B, egress +{} B",
            bytes(&a, "ingress") - bytes(&b, "ingress"),
            bytes(&a, "egress") - bytes(&b, "egress")
        ))
    });
    r.case("check-after-tamper", || tamper(&pod, &c));
    r.case("del-without-netns", || {
        plugin::del_bare("bandwidth", &pod, &c)?.ok()?;
        // The pod side has nothing in ifb mode: the whole attachment is gone.
        inspect::assert_clean(&[Path::new(BW_STATE)], Some(&pod.w.ns))?;
        plugin::run("bandwidth", "DEL", &pod, &c)?.ok()?;
        plugin::del_bare("bandwidth", &pod, &c)?.ok()?;
        Ok("containerd's bare DEL removed the ifb, qdiscs, filter and state; DEL again: 0".into())
    });
}

/// Another tbf rate on the ifb: CHECK answers 101 naming it; a retried
/// ADD puts it back.
fn tamper(pod: &Pod, c: &Value) -> Result<String> {
    let mut nl = Netlink::new()?;
    let ifb = inspect::ifbs(&mut nl)?.pop().context("no ifb")?;
    let spec = TbfSpec {
        rate_bytes_per_sec: RATE / 16,
        burst_bytes: 20_000,
        limit_bytes: 100_000,
    };
    nl.replace_root_tbf(ifb.index, &spec)?;
    let e = plugin::run("bandwidth", "CHECK", pod, c)?.err(101)?;
    let said = format!("{} {}", e["msg"], e["details"]);
    ensure!(
        said.contains(&ifb.name) || said.contains("tbf"),
        "CHECK said {said}"
    );
    plugin::run("bandwidth", "ADD", pod, c)?.ok()?;
    plugin::run("bandwidth", "CHECK", pod, c)?.ok()?;
    ensure!(
        inspect::root_tbf_rate(&mut nl, ifb.index)? == RATE,
        "ADD did not repair"
    );
    Ok(format!("CHECK 101 ({}); ADD repaired, CHECK 0", e["msg"]))
}

pub fn namespace_policy(r: &mut Report) {
    r.case("namespace-policy", || {
        let pod = Pod::new(5, "tenant-a")?;
        let policy = json!({"namespacePolicy": {
            "tenant-a": {"default": {"ingressRate": conf::POLICY_DEFAULT, "egressRate": conf::POLICY_DEFAULT},
                         "max": {"ingressRate": conf::POLICY_MAX, "egressRate": conf::POLICY_MAX}},
            "*": {"exempt": true}}});
        let base = merged(conf::bandwidth(&pod, "0.4.0", json!({"egressMode": "ifb"})), policy);
        let asked = merged(base.clone(), json!({"runtimeConfig": conf::annotations(Some(100_000_000), None)}));
        let mut seen = Vec::new();
        for (c, want) in [(&base, conf::POLICY_DEFAULT), (&asked, conf::POLICY_MAX)] {
            let res = plugin::run("bandwidth", "ADD", &pod, c)?.ok()?;
            let mut nl = Netlink::new()?;
            ensure!(inspect::root_tbf_rate(&mut nl, pod.w.host_index()?)? == want, "ingress");
            let ifb = check_ifb_layout(&pod, &res, want);
            // The egress side: the asked pod gave none, so the default.
            let egress = if want == conf::POLICY_MAX { conf::POLICY_DEFAULT } else { want };
            if want == conf::POLICY_DEFAULT {
                ifb?;
            } else {
                let i = inspect::ifbs(&mut nl)?.pop().context("no ifb")?;
                ensure!(inspect::root_tbf_rate(&mut nl, i.index)? == egress, "egress");
            }
            plugin::run("bandwidth", "CHECK", &pod, c)?.ok()?;
            plugin::run("bandwidth", "DEL", &pod, c)?.ok()?;
            seen.push(format!("{}M", want / 1_000_000));
        }
        inspect::assert_clean(&[Path::new(BW_STATE)], Some(&pod.w.ns))?;
        Ok(format!("tenant-a: none asked -> default {}, 100M asked -> max {}", seen[0], seen[1]))
    });
}

pub fn gc(r: &mut Report) {
    r.case("gc", || {
        let (keep, stale) = (Pod::new(6, "default")?, Pod::new(7, "default")?);
        let c = |p: &Pod| {
            conf::bandwidth(
                p,
                "1.1.0",
                json!({"egressMode": "ifb",
                "runtimeConfig": conf::annotations(Some(RATE), Some(RATE))}),
            )
        };
        plugin::run("bandwidth", "ADD", &keep, &c(&keep))?.ok()?;
        plugin::run("bandwidth", "ADD", &stale, &c(&stale))?.ok()?;
        let mut nl = Netlink::new()?;
        ensure!(
            inspect::ifbs(&mut nl)?.len() == 2,
            "two ifbs after two ADDs"
        );
        let mut g = c(&keep);
        if let Some(o) = g.as_object_mut() {
            o.remove("prevResult");
        }
        g["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
        let env = [
            ("CNI_COMMAND".to_string(), "GC".to_string()),
            ("CNI_PATH".into(), "/opt/cni/bin".into()),
        ];
        plugin::run_env("bandwidth", &env, g.to_string().as_bytes())?.ok()?;
        ensure!(
            inspect::ifbs(&mut nl)?.len() == 1,
            "GC left {:?}",
            inspect::ifbs(&mut nl)?
        );
        ensure!(
            inspect::root(&mut nl, stale.w.host_index()?)?.is_none(),
            "stale tbf kept"
        );
        ensure!(
            inspect::state_files(Path::new(BW_STATE)).len() == 1,
            "state files"
        );
        plugin::run("bandwidth", "CHECK", &keep, &c(&keep))?.ok()?;
        plugin::run("bandwidth", "DEL", &keep, &c(&keep))?.ok()?;
        inspect::assert_clean(&[Path::new(BW_STATE)], Some(&keep.w.ns))?;
        Ok(
            "GC removed the stale attachment's ifb, tbf and state; the valid one still CHECKs"
                .into(),
        )
    });
}
