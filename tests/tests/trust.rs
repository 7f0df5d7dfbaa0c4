//! Trust, round three (issue 24): what a pod with containerd's default
//! capabilities and a stale runtime call can do.
//!
//! - A pod with only `CAP_NET_RAW` floods with `PACKET_QDISC_BYPASS` past
//!   its own qdiscs, next to a network policy agent's clsact whose prio-1
//!   filter (attached after ADD) passes everything: in `egressMode: pod`
//!   the host-side backstop holds it to the limit (and each class cap),
//!   and the counters count what really left; honest TCP through the
//!   in-pod shaper still reaches the rate. In ifb mode the host side
//!   shapes it anyway.
//! - A node's class caps bind pods without a limit of their own.
//! - A stale DEL whose recorded namespace inode was reused by another pod
//!   touches nothing inside that pod (bandwidth and topology-label).
//! - GC of a pod-mode attachment leaves nothing in a living pod netns.

use integration_tests::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOOD_SECONDS: u64 = 5;
const CROSS_RATE: u64 = 20_000_000;

struct Peer {
    ns: Netns,
    ip: String,
}

struct Site {
    node: Netns,
    pod: Pod,
    /// same zone, cross zone, outside
    peers: [Peer; 3],
    state: TempDir,
}

fn site() -> Site {
    let node = Netns::new("trn").unwrap();
    let pod = Pod::new(&node).unwrap();
    pod.set_mtu(&node, 9001).unwrap();
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let peers = ["10.1.0", "10.2.0", "203.0.113"].map(|net| {
        let ns = Netns::new("trp").unwrap();
        let veth = unique("tp");
        node.ip(&[
            "link", "add", &veth, "mtu", "9001", "type", "veth", "peer", "name", "eth0", "mtu",
            "9001", "netns", &ns.name,
        ])
        .unwrap();
        node.ip(&["addr", "add", &format!("{net}.1/24"), "dev", &veth])
            .unwrap();
        node.ip(&["link", "set", &veth, "up"]).unwrap();
        ns.ip(&["addr", "add", &format!("{net}.2/24"), "dev", "eth0"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns.ip(&["route", "add", "default", "via", &format!("{net}.1")])
            .unwrap();
        Peer {
            ns,
            ip: format!("{net}.2"),
        }
    });
    Site {
        node,
        pod,
        peers,
        state: TempDir::new("trst"),
    }
}

fn zone_classes() -> Value {
    json!({
        "zone": "us-west-2a",
        "zoneCidrs": {"us-west-2a": ["10.1.0.0/16"], "us-west-2b": ["10.2.0.0/16"]},
        "sameZone": {"shaped": false},
        "crossZone": {"ingressRate": CROSS_RATE, "egressRate": CROSS_RATE},
        "outside": {}
    })
}

fn conf(site: &Site, egress_rate: Option<u64>, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0", "name": "trust-net", "type": "bandwidth",
        "stateDir": site.state.str(),
        "prevResult": site.pod.prev_result("1.0.0"),
    });
    if let Some(r) = egress_rate {
        // containerd's burst: u32::MAX bits.
        c["runtimeConfig"] =
            json!({"bandwidth": {"EgressRate": r, "EgressBurst": 4_294_967_295u64}});
    }
    merged(c, extra)
}

fn run(site: &Site, verb: &str, conf: &Value) -> Outcome {
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&site.node),
        &site.pod.env(verb),
        conf.to_string().as_bytes(),
    )
}

/// The VPC CNI network policy agent, as this kernel can emulate it: a
/// clsact on the host veth and a prio-1 handle-1 `bpf` filter on its
/// ingress hook that ends classification for every packet.
fn attach_agent(site: &Site) {
    let dev = &site.pod.host_veth;
    site.node
        .exec(&["tc", "qdisc", "add", "dev", dev, "clsact"])
        .unwrap();
    site.node
        .exec(&[
            "tc",
            "filter",
            "replace",
            "dev",
            dev,
            "ingress",
            "prio",
            "1",
            "handle",
            "1",
            "protocol",
            "all",
            "bpf",
            "bytecode",
            "1,6 0 0 4294967295",
        ])
        .unwrap();
}

fn agent_intact(site: &Site) -> bool {
    site.node
        .filters(&site.pod.host_veth, "ingress")
        .iter()
        .any(|f| f["kind"] == "bpf")
}

fn rx_bytes(ns: &Netns) -> u64 {
    let v: Value = serde_json::from_str(
        &ns.exec(&["ip", "-j", "-s", "link", "show", "eth0"])
            .unwrap(),
    )
    .unwrap();
    v[0]["stats64"]["rx"]["bytes"].as_u64().unwrap()
}

/// Floods `peer` from the pod for FLOOD_SECONDS with only CAP_NET_RAW,
/// past the pod's qdiscs; returns the bytes the peer received in each
/// second (sampled at its wire) and what the flooder sent.
fn flood(site: &Site, peer: &Peer) -> (Vec<u64>, u64) {
    let host_mac = site.node.link(&site.pod.host_veth).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let script = repo_root().join("tests/scripts/qdisc_bypass_flood.py");
    let secs = FLOOD_SECONDS.to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", &site.pod.ns.name])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["--inh-caps=-all,+net_raw", "--ambient-caps=+net_raw"])
        .args(["--bounding-set=-all,+net_raw", "/usr/bin/python3"])
        .arg(&script)
        .args(["eth0", &host_mac, &site.pod.pod_ip, &peer.ip, &secs, "8000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut last = rx_bytes(&peer.ns);
    let mut per_second = Vec::new();
    for s in 1..=FLOOD_SECONDS {
        let next = start + Duration::from_secs(s);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let now = rx_bytes(&peer.ns);
        per_second.push(now - last);
        last = now;
    }
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("flooder failed: {}", String::from_utf8_lossy(&out.stderr)));
    // CAP_NET_RAW (bit 13) only: no CAP_NET_ADMIN (bit 12).
    let caps = u64::from_str_radix(report["capEff"].as_str().unwrap(), 16).unwrap();
    assert_eq!(caps, 1 << 13, "the flooder must hold CAP_NET_RAW only");
    (per_second, report["bytes"].as_u64().unwrap())
}

/// What the backstop promises for a flood after a quiet second: its
/// bucket (one second of rate plus the burst) once, then the rate. Each
/// second after the first two within 10% of the rate; the whole flood
/// within the rate plus one second's worth and the burst.
fn assert_held(per_second: &[u64], sent: u64, rate_bits: u64, burst_bytes: u64, what: &str) {
    let rate = rate_bits / 8;
    let total: u64 = per_second.iter().sum();
    eprintln!(
        "{what}: flooder sent {} MB; peer got {:?} B/s (limit {rate} B/s)",
        sent / 1_000_000,
        per_second
    );
    assert!(
        sent > 20 * rate * FLOOD_SECONDS,
        "{what}: the flood was too weak to prove anything"
    );
    let bound = rate * (FLOOD_SECONDS + 1) + burst_bytes;
    assert!(
        total <= bound + bound / 20,
        "{what}: {total} B in {FLOOD_SECONDS} s, bound {bound}"
    );
    // The window after the bucket is spent: the rate, within 10%.
    let steady: u64 = per_second[2..].iter().sum();
    let window = rate * (FLOOD_SECONDS - 2);
    assert!(
        steady <= window + window / 10,
        "{what}: {steady} B in the last {} s, limit {window}",
        FLOOD_SECONDS - 2
    );
}

fn nft_counter(site: &Site, name: &str) -> (u64, u64) {
    let table = our_tables(&site.node).pop().unwrap_or_default();
    let out = site
        .node
        .exec(&["nft", "-j", "list", "table", "netdev", &table])
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("counter"))
        .find(|c| c["name"] == name)
        .map(|c| {
            (
                c["bytes"].as_u64().unwrap_or(0),
                c["packets"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0))
}

/// `cni-rs pods --json`: egress bytes of one class of the site's pod.
fn cni_rs_class_bytes(site: &Site, class: &str) -> u64 {
    let out = site
        .node
        .exec(&[
            plugin_bin("cni-rs").to_str().unwrap(),
            "pods",
            "--json",
            "--bandwidth-state-dir",
            &site.state.str(),
            "--topology-state-dir",
            "/nonexistent-cnirs-test",
        ])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["containerId"] == site.pod.container_id.as_str())
        .and_then(|r| r["egress"]["classes"][class]["bytes"].as_u64())
        .unwrap_or(0)
}

fn our_tables(node: &Netns) -> Vec<String> {
    node.backstop_tables()
}

/// Issue 24 item 1, without classes: 15 Mbit/s out, a 13 Gbit/s flood.
#[test]
fn pod_mode_qdisc_bypass_is_held_by_the_host_side_backstop() {
    let _serial = serial();
    let site = site();
    let rate = 15_000_000;
    let c = conf(&site, Some(rate), json!({"egressMode": "pod"}));
    run(&site, "ADD", &c).ok();
    attach_agent(&site);
    let outside = &site.peers[2];
    let (per_second, sent) = flood(&site, outside);
    let burst = u64::from(u32::MAX) / 8 + 1;
    assert_held(
        &per_second,
        sent,
        rate,
        burst.min(rate / 8 / 40 + 9015),
        "pod mode",
    );
    let (dropped, _) = nft_counter(&site, "dropped_all");
    assert!(dropped > sent / 2, "dropped {dropped} of {sent}");
    let (passed, _) = nft_counter(&site, "sent_all");
    let received: u64 = per_second.iter().sum();
    eprintln!("backstop counted {passed} B passed; the peer received {received} B");
    assert!(agent_intact(&site), "the agent's filter is untouched");
    // Honest TCP through the in-pod shaper never trips the backstop.
    let before = nft_counter(&site, "dropped_all").1;
    iperf(&outside.ns, &outside.ip, &site.pod.ns, 7)
        .unwrap()
        .assert_shaped(rate, "honest TCP next to the backstop");
    assert_eq!(
        nft_counter(&site, "dropped_all").1,
        before,
        "honest TCP was dropped"
    );
    run(&site, "CHECK", &c).ok();
    // Another tool flushes the node's ruleset: CHECK says so; ADD repairs.
    site.node.exec(&["nft", "flush", "ruleset"]).unwrap();
    let v = run(&site, "CHECK", &c).err(101);
    assert!(v["msg"].as_str().unwrap().contains("backstop"), "{v}");
    run(&site, "ADD", &c).ok();
    run(&site, "CHECK", &c).ok();
    run(&site, "DEL", &c).ok();
    run(&site, "DEL", &c).ok();
    assert!(
        our_tables(&site.node).is_empty(),
        "{:?}",
        our_tables(&site.node)
    );
    assert!(agent_intact(&site), "DEL leaves the agent's filter");
}

/// In ifb mode the host side shapes what bypassed the pod's qdiscs: the
/// agent-free hook redirects every packet to the ifb.
#[test]
fn ifb_mode_holds_a_qdisc_bypass_flood() {
    let _serial = serial();
    let site = site();
    let rate = 15_000_000;
    let c = conf(&site, Some(rate), json!({"egressMode": "ifb"}));
    run(&site, "ADD", &c).ok();
    let (per_second, sent) = flood(&site, &site.peers[2]);
    let total: u64 = per_second.iter().sum();
    eprintln!("ifb mode: sent {sent}, peer got {per_second:?}");
    let limit = rate / 8 * FLOOD_SECONDS;
    assert!(
        total <= limit + limit / 10,
        "{total} B through ifb, limit {limit}"
    );
    assert!(our_tables(&site.node).is_empty(), "no backstop in ifb mode");
    run(&site, "DEL", &c).ok();
}

/// With traffic classes: a flood at the cross-zone peer is held to the
/// 20 Mbit/s cap, and the class counter counts what really left.
#[test]
fn pod_mode_classes_hold_a_bypass_flood_per_class() {
    let _serial = serial();
    let site = site();
    let c = conf(
        &site,
        Some(200_000_000),
        json!({"egressMode": "pod", "trafficClasses": zone_classes()}),
    );
    run(&site, "ADD", &c).ok();
    attach_agent(&site);
    let cross = &site.peers[1];
    let before = nft_counter(&site, "sent_crossZone").0;
    let reported_before = cni_rs_class_bytes(&site, "crossZone");
    let (per_second, sent) = flood(&site, cross);
    assert_held(
        &per_second,
        sent,
        CROSS_RATE,
        2 * (65_536 + 9015),
        "crossZone cap",
    );
    let counted = nft_counter(&site, "sent_crossZone").0 - before;
    let received: u64 = per_second.iter().sum();
    eprintln!("crossZone: counted {counted} B, peer received {received} B");
    // Counted at L3 on the host veth, received at L2 by the peer: the
    // 14-byte Ethernet header of each 8000-byte frame, and the last
    // second still in flight when sampling stopped.
    assert!(
        counted.abs_diff(received) * 100 <= received * 3,
        "counted {counted}, received {received}"
    );
    // `cni-rs pods` reports that count, not the pod's htb (which never
    // saw the flood).
    let reported = cni_rs_class_bytes(&site, "crossZone") - reported_before;
    assert!(
        reported.abs_diff(received) * 100 <= received * 3,
        "cni-rs reported {reported}, received {received}"
    );
    run(&site, "CHECK", &c).ok();
    run(&site, "DEL", &c).ok();
    assert!(our_tables(&site.node).is_empty());
}

/// Issue 24 item 3: a pod with no limit of its own is still held to the
/// node's cross-zone cap, in both egress modes.
#[test]
fn node_class_caps_bind_pods_without_a_limit() {
    let _serial = serial();
    let site = site();
    for mode in ["ifb", "pod"] {
        let c = conf(
            &site,
            None,
            json!({"egressMode": mode, "trafficClasses": zone_classes()}),
        );
        run(&site, "ADD", &c).ok();
        let cross = &site.peers[1];
        iperf(&cross.ns, &cross.ip, &site.pod.ns, 7)
            .unwrap()
            .assert_shaped(CROSS_RATE, &format!("{mode}: no limit, crossZone cap"));
        if mode == "pod" {
            attach_agent(&site);
            let (per_second, sent) = flood(&site, cross);
            assert_held(
                &per_second,
                sent,
                CROSS_RATE,
                2 * (65_536 + 9015),
                "pod: no limit",
            );
        }
        run(&site, "CHECK", &c).ok();
        run(&site, "DEL", &c).ok();
        assert!(our_tables(&site.node).is_empty());
    }
}

/// Rewrites the recorded namespace of `state`'s one record to `id`
/// (device, inode) as the kernel's inode reuse would make it look.
fn rewrite_recorded_inode(dir: &TempDir, container_id: &str, key: &str, to: &Value) {
    for f in dir.files() {
        if !f.contains(container_id) {
            continue;
        }
        let p = dir.path.join(&f);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let rec = &mut v[key];
        rec["dev"] = to["dev"].clone();
        rec["ino"] = to["ino"].clone();
        std::fs::write(&p, v.to_string()).unwrap();
    }
}

fn nsfs_id(ns: &Netns) -> Value {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(ns.path()).unwrap();
    json!({"dev": m.dev(), "ino": m.ino()})
}

/// Issue 24 item 2: pod A's namespace is gone without a DEL and its
/// inode now names pod B's; the runtime's late DEL for A (CNI_NETNS = B's
/// path) must not touch B. The reuse is made deterministic by writing B's
/// device and inode into A's record, which is what the kernel's reuse
/// produces.
#[test]
fn a_stale_del_never_acts_inside_a_namespace_that_reused_the_inode() {
    let node = Netns::new("trn").unwrap();
    let a = Pod::new(&node).unwrap();
    let b = Pod::new(&node).unwrap();
    let state = TempDir::new("trsd");
    let bw = |p: &Pod| {
        json!({
            "cniVersion": "1.0.0", "name": "stale-net", "type": "bandwidth", "stateDir": state.str(),
            "egressMode": "pod",
            "runtimeConfig": {"bandwidth": {"egressRate": 10_000_000, "egressBurst": 100_000}},
            "prevResult": p.prev_result("1.0.0"),
        })
    };
    for p in [&a, &b] {
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&node),
            &p.env("ADD"),
            bw(p).to_string().as_bytes(),
        )
        .ok();
    }
    rewrite_recorded_inode(&state, &a.container_id, "netns", &nsfs_id(&b.ns));
    // A's late DEL, with B's path.
    let env = with_env(a.env("DEL"), "CNI_NETNS", &b.ns.path_str());
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&node),
        &env,
        bw(&a).to_string().as_bytes(),
    )
    .ok();
    assert!(
        b.ns.qdisc("eth0", "tbf").is_some(),
        "the stale DEL removed B's tbf"
    );
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&node),
        &b.env("CHECK"),
        bw(&b).to_string().as_bytes(),
    )
    .ok();

    // topology-label: the late DEL must not revert B's MTU and sysctls.
    let tls = TempDir::new("trtl");
    let tl = |p: &Pod| {
        json!({
            "cniVersion": "1.0.0", "name": "stale-net", "type": "topology-label", "stateDir": tls.str(),
            "labels": {"topology.kubernetes.io/zone": "us-west-2a"},
            "profiles": [{"match": {"topology.kubernetes.io/zone": "us-west-2a"}, "mtu": 1400, "txqueuelen": 2000,
                          "sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "2"}}],
            "prevResult": p.prev_result("1.0.0"),
        })
    };
    for p in [&a, &b] {
        run_plugin(
            &plugin_bin("topology-label"),
            Some(&node),
            &p.env("ADD"),
            tl(p).to_string().as_bytes(),
        )
        .ok();
    }
    rewrite_recorded_inode(&tls, &a.container_id, "netnsId", &nsfs_id(&b.ns));
    let env = with_env(a.env("DEL"), "CNI_NETNS", &b.ns.path_str());
    run_plugin(
        &plugin_bin("topology-label"),
        Some(&node),
        &env,
        tl(&a).to_string().as_bytes(),
    )
    .ok();
    assert_eq!(
        b.ns.link("eth0").unwrap()["mtu"],
        1400,
        "the stale DEL reverted B's MTU"
    );
    let rp =
        b.ns.exec(&["sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"])
            .unwrap();
    assert_eq!(rp.trim(), "2", "the stale DEL reverted B's rp_filter");
}

/// Issue 24 item 6: GC of a pod-mode attachment removes its htb, clsact
/// and BPF filter inside the pod's namespace while that still exists, and
/// its backstop table.
#[test]
fn gc_removes_the_pod_side_and_the_backstop() {
    let site = site();
    let c = conf(
        &site,
        Some(50_000_000),
        json!({"cniVersion": "1.1.0", "egressMode": "pod", "trafficClasses": zone_classes()}),
    );
    let mut c = c;
    c["prevResult"] = site.pod.prev_result("1.1.0");
    run(&site, "ADD", &c).ok();
    assert!(site.pod.ns.qdisc("eth0", "htb").is_some());
    assert!(site.pod.ns.qdisc("eth0", "clsact").is_some());
    assert_eq!(our_tables(&site.node).len(), 1);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&site.node),
        &env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]),
        gc.to_string().as_bytes(),
    )
    .ok();
    for kind in ["htb", "clsact"] {
        assert!(
            site.pod.ns.qdisc("eth0", kind).is_none(),
            "GC left the pod's {kind}"
        );
    }
    assert!(
        our_tables(&site.node).is_empty(),
        "GC left {:?}",
        our_tables(&site.node)
    );
    assert!(site.state.files().is_empty());
}
