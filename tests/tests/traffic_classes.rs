//! Traffic classes with real traffic: a pod with three peers in their own
//! namespaces (same zone, other zone, outside), flows to all three at the
//! same time, both directions, IPv4 and IPv6, egress through an ifb and
//! inside the pod. Pod limit 200 Mbit/s, cross-zone capped at 20 Mbit/s,
//! same zone unshaped: each class must land within 3% of what the config
//! says (outside gets what the cap leaves: 180), first seconds within 1.1x,
//! and `cni-rs`'s per-class bytes within 2% of what each peer received.
//!
//! Also: both subnet lists (a shaped and an unshaped peer), counting-only
//! pods, CHECK against a broken tree, bad input, DEL and GC leaving nothing.

use integration_tests::*;
use serde_json::{Value, json};

/// Seconds per flow: 7, so a kernel background burst (namespace cleanup of
/// earlier tests) in two seconds cannot move the median (see
/// namespace_policy.rs).
const SECONDS: u32 = 7;
const POD_RATE: u64 = 200_000_000;
const CROSS_RATE: u64 = 20_000_000;
/// Pacing of the unshaped flow: above the pod's limit (proves it is not
/// limited) yet leaving CPU for the shaped flows on two cores: at 600M the
/// receivers of the shaped flows into the pod starved (cross-zone read
/// 0.957x with the class's own counters at 1.00x), and at 400M once 0.93x
/// in scripts/lib/classes-accuracy.sh.
const UNSHAPED_PACE: &str = "320M";
/// What the unshaped flow must exceed, in pod limits.
const UNSHAPED_ABOVE: f64 = 1.25;

struct Peer {
    ns: Netns,
    v4: String,
    v6: String,
}

struct Site {
    node: Netns,
    pod: Pod,
    pod_v6: String,
    /// same zone, cross zone, outside
    peers: [Peer; 3],
    state: TempDir,
}

const PEERS: [(&str, &str, &str); 3] = [
    ("10.1.0", "fd0a::", "same"),
    ("10.2.0", "fd0b::", "cross"),
    ("203.0.113", "fd0c::", "outside"),
];

fn site() -> Site {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    pod.set_mtu(&node, 9001).unwrap();
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    node.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:99::1/64",
        "dev",
        &pod.host_veth,
        "nodad",
    ])
    .unwrap();
    pod.ns
        .ip(&["-6", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"])
        .unwrap();
    pod.ns
        .ip(&["-6", "route", "add", "default", "via", "fd00:99::1"])
        .unwrap();
    let peers = PEERS.map(|(v4net, v6net, _)| {
        let ns = Netns::new("cnipeer").unwrap();
        let veth = unique("vp");
        node.ip(&[
            "link", "add", &veth, "mtu", "9001", "type", "veth", "peer", "name", "eth0", "mtu",
            "9001", "netns", &ns.name,
        ])
        .unwrap();
        node.ip(&["addr", "add", &format!("{v4net}.1/24"), "dev", &veth])
            .unwrap();
        node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6net}1/64"),
            "dev",
            &veth,
            "nodad",
        ])
        .unwrap();
        node.ip(&["link", "set", &veth, "up"]).unwrap();
        ns.ip(&["addr", "add", &format!("{v4net}.2/24"), "dev", "eth0"])
            .unwrap();
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6net}2/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns.ip(&["route", "add", "default", "via", &format!("{v4net}.1")])
            .unwrap();
        ns.ip(&["-6", "route", "add", "default", "via", &format!("{v6net}1")])
            .unwrap();
        Peer {
            ns,
            v4: format!("{v4net}.2"),
            v6: format!("{v6net}2"),
        }
    });
    Site {
        node,
        pod,
        pod_v6: "fd00:99::2".into(),
        peers,
        state: TempDir::new("tcst"),
    }
}

fn zone_classes() -> Value {
    json!({
        "zone": "us-west-2a",
        "zoneCidrs": {"us-west-2a": ["10.1.0.0/16", "fd0a::/32"], "us-west-2b": ["10.2.0.0/16", "fd0b::/32"]},
        "sameZone": {"shaped": false},
        "crossZone": {"ingressRate": CROSS_RATE, "egressRate": CROSS_RATE},
        "outside": {}
    })
}

fn conf(site: &Site, extra: Value) -> Value {
    merged(
        json!({
            "cniVersion": "1.0.0", "name": "classes-net", "type": "bandwidth",
            "stateDir": site.state.str(),
            "runtimeConfig": {"bandwidth": {"ingressRate": POD_RATE, "ingressBurst": 4_294_967_295u64,
                                             "egressRate": POD_RATE, "egressBurst": 4_294_967_295u64}},
            "prevResult": site.pod.prev_result("1.0.0"),
        }),
        extra,
    )
}

fn run(site: &Site, verb: &str, conf: &Value) -> Outcome {
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&site.node),
        &site.pod.env(verb),
        conf.to_string().as_bytes(),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    IntoPod,
    OutOfPod,
}

/// One flow per peer at the same time; `pace[i]` paces peer i's flow.
fn flows(site: &Site, way: Way, v6: bool, pace: [Option<&str>; 3]) -> Vec<Throughput> {
    flows_with(site, way, v6, &[(0, pace[0]), (1, pace[1]), (2, pace[2])])
}

/// One flow to (or from) each listed peer at the same time, each paced or
/// not.
fn flows_with(site: &Site, way: Way, v6: bool, peers: &[(usize, Option<&str>)]) -> Vec<Throughput> {
    std::thread::scope(|s| {
        let handles: Vec<_> = peers
            .iter()
            .map(|&(i, pace)| {
                let peer = &site.peers[i];
                s.spawn(move || {
                    let args: Vec<&str> = pace.map(|p| vec!["-b", p]).unwrap_or_default();
                    let (pod_ip, peer_ip) = if v6 {
                        (site.pod_v6.as_str(), peer.v6.as_str())
                    } else {
                        (site.pod.pod_ip.as_str(), peer.v4.as_str())
                    };
                    match way {
                        Way::OutOfPod => {
                            iperf_with(&peer.ns, peer_ip, &site.pod.ns, SECONDS, &args)
                        }
                        Way::IntoPod => iperf_with(&site.pod.ns, pod_ip, &peer.ns, SECONDS, &args),
                    }
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Bytes `ns`'s eth0 received (the peer's wire).
fn rx_bytes(ns: &Netns) -> u64 {
    let v: Value = serde_json::from_str(
        &ns.exec(&["ip", "-j", "-s", "link", "show", "eth0"])
            .unwrap(),
    )
    .unwrap();
    v[0]["stats64"]["rx"]["bytes"].as_u64().unwrap()
}

/// `cni-rs pods --json` per-class bytes of our attachment, one direction.
fn class_bytes(site: &Site, direction: &str) -> Value {
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
    let row = v
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["containerId"] == site.pod.container_id.as_str())
        })
        .cloned()
        .unwrap_or(Value::Null);
    row[direction]["classes"].clone()
}

fn class_byte(v: &Value, class: &str) -> u64 {
    v[class]["bytes"].as_u64().unwrap_or(0)
}

fn assert_rate(t: &Throughput, rate: f64, ceiling: f64, what: &str) {
    let first = t.per_second[0] / ceiling;
    let steady = t.steady(1) / rate;
    eprintln!(
        "{what}: first second {first:.3}x of {ceiling:.0}, steady {steady:.4}x of {rate:.0}, per second {:?}",
        t.per_second
    );
    assert!(first <= 1.10, "{what}: first second {first:.3}x");
    assert!(
        (0.97..=1.03).contains(&steady),
        "{what}: steady {steady:.4}x of {rate}"
    );
}

/// The acceptance run for zone classes in one egress mode.
fn zone_run(mode: &str) {
    let _serial = serial();
    let site = site();
    let c = conf(
        &site,
        json!({"egressMode": mode, "trafficClasses": zone_classes()}),
    );
    run(&site, "ADD", &c).ok();
    run(&site, "CHECK", &c).ok();
    let names = ["sameZone", "crossZone", "outside"];
    for v6 in [false, true] {
        for way in [Way::OutOfPod, Way::IntoPod] {
            let dir = if way == Way::OutOfPod {
                "egress"
            } else {
                "ingress"
            };
            let label = format!("{mode} {dir} {}", if v6 { "v6" } else { "v4" });
            let before_classes = class_bytes(&site, dir);
            let before_rx: Vec<u64> = site.peers.iter().map(|p| rx_bytes(&p.ns)).collect();
            let t = flows(&site, way, v6, [Some(UNSHAPED_PACE), None, None]);
            let after_classes = class_bytes(&site, dir);
            let after_rx: Vec<u64> = site.peers.iter().map(|p| rx_bytes(&p.ns)).collect();
            let pod = POD_RATE as f64;
            let cross = CROSS_RATE as f64;
            assert!(
                t[0].steady(1) > UNSHAPED_ABOVE * pod,
                "{label}: same zone is unshaped, got {:.0} bit/s",
                t[0].steady(1)
            );
            assert_rate(&t[1], cross, cross, &format!("{label} crossZone"));
            assert_rate(&t[2], pod - cross, pod, &format!("{label} outside"));
            let shaped_first = (t[1].per_second[0] + t[2].per_second[0]) / pod;
            assert!(
                shaped_first <= 1.10,
                "{label}: pod limit first second {shaped_first:.3}x"
            );
            // Counters: out of the pod, each class's bytes against what its
            // peer received on the wire.
            if way == Way::OutOfPod {
                for (i, name) in names.iter().enumerate() {
                    let counted =
                        class_byte(&after_classes, name) - class_byte(&before_classes, name);
                    let wire = after_rx[i] - before_rx[i];
                    let ratio = counted as f64 / wire as f64;
                    eprintln!(
                        "{label} {name}: class {counted} B, peer received {wire} B ({ratio:.4})"
                    );
                    assert!((0.98..=1.02).contains(&ratio), "{label} {name}: {ratio:.4}");
                }
            } else {
                for (i, name) in names.iter().enumerate() {
                    let counted =
                        class_byte(&after_classes, name) - class_byte(&before_classes, name);
                    // Into the pod the receiver is the pod, shared by all
                    // three: what it got from each peer on the wire is its
                    // payload plus every frame's headers (Ethernet, IP, TCP
                    // with timestamps) at the MSS of MTU 9001.
                    let (mss, headers) = if v6 { (8929.0, 86.0) } else { (8949.0, 66.0) };
                    let wire = t[i].bytes as f64 * (1.0 + headers / mss);
                    let ratio = counted as f64 / wire;
                    eprintln!(
                        "{label} {name}: class {counted} B, pod received {wire:.0} B on the wire ({ratio:.4})"
                    );
                    assert!((0.98..=1.02).contains(&ratio), "{label} {name}: {ratio:.4}");
                }
            }
        }
    }
    run(&site, "DEL", &c).ok();
    assert_clean(&site);
}

fn assert_clean(site: &Site) {
    // The site's own veths stay; anything of ours must not.
    let left: Vec<String> = site
        .node
        .node_leftovers()
        .into_iter()
        .filter(|l| l.starts_with("qdisc") || l.contains("bwp"))
        .collect();
    assert!(left.is_empty(), "left on the node: {left:?}");
    let dev = site.pod.host_veth.as_str();
    let qs = site.node.qdiscs(dev);
    assert!(
        qs.iter()
            .all(|q| q["kind"] != "htb" && q["kind"] != "tbf" && q["kind"] != "bfifo"),
        "{dev}: {qs:?}"
    );
    let pod_qs = site.pod.ns.qdiscs("eth0");
    assert!(
        pod_qs
            .iter()
            .all(|q| q["kind"] != "htb" && q["kind"] != "tbf"),
        "pod: {pod_qs:?}"
    );
    assert!(
        site.state.files().is_empty(),
        "state: {:?}",
        site.state.files()
    );
}

#[test]
fn zone_classes_ifb_mode() {
    zone_run("ifb");
}

#[test]
fn zone_classes_pod_mode() {
    zone_run("pod");
}

/// A shaped and an unshaped peer, for each subnet list, both directions.
#[test]
fn shaped_and_unshaped_subnets() {
    let _serial = serial();
    let site = site();
    let limit = 50_000_000f64;
    for (key, list) in [
        ("unshapedSubnets", json!(["10.1.0.0/16", "fd0a::/32"])),
        (
            "shapedSubnets",
            json!(["10.2.0.0/16", "203.0.113.0/24", "fd0b::/32", "fd0c::/32"]),
        ),
    ] {
        // Subnets in the pod's runtime block, as v1.5.x accepted them.
        let c = conf(
            &site,
            json!({"runtimeConfig": {"bandwidth": {"ingressRate": 50_000_000, "ingressBurst": 4_294_967_295u64,
                "egressRate": 50_000_000, "egressBurst": 4_294_967_295u64, key: list}}}),
        );
        run(&site, "ADD", &c).ok();
        run(&site, "CHECK", &c).ok();
        for v6 in [false, true] {
            for way in [Way::OutOfPod, Way::IntoPod] {
                let label = format!(
                    "{key} {} {}",
                    if way == Way::OutOfPod {
                        "egress"
                    } else {
                        "ingress"
                    },
                    if v6 { "v6" } else { "v4" }
                );
                // peer 0 is unshaped (listed as unshaped / not listed as
                // shaped), peer 1 shaped; peer 2 idle.
                let t = flows_with(&site, way, v6, &[(0, Some(UNSHAPED_PACE)), (1, None)]);
                assert!(
                    t[0].steady(1) > 2.0 * limit,
                    "{label}: unshaped peer got {:.0}",
                    t[0].steady(1)
                );
                assert_rate(&t[1], limit, limit, &format!("{label} shaped peer"));
            }
        }
        run(&site, "DEL", &c).ok();
        assert_clean(&site);
    }
}

/// No limit, zone classes: counted per class, nothing limited, no ifb.
#[test]
fn counting_only_pods_are_counted_not_shaped() {
    let _serial = serial();
    let site = site();
    // No class caps: a node cap binds pods without a limit too (trust.rs).
    let mut classes = zone_classes();
    classes["crossZone"] = json!({});
    let c = merged(
        json!({
            "cniVersion": "1.0.0", "name": "classes-net", "type": "bandwidth",
            "stateDir": site.state.str(), "trafficClasses": classes,
            "prevResult": site.pod.prev_result("1.0.0"),
        }),
        json!({}),
    );
    run(&site, "ADD", &c).ok();
    run(&site, "CHECK", &c).ok();
    assert!(
        site.node.link_names().iter().all(|n| !n.starts_with("bwp")),
        "counting needs no ifb"
    );
    let t = flows(
        &site,
        Way::OutOfPod,
        false,
        [Some("300M"), Some("300M"), Some("300M")],
    );
    for (i, x) in t.iter().enumerate() {
        assert!(x.steady(1) > 250e6, "peer {i} limited: {:?}", x.per_second);
    }
    let eg = class_bytes(&site, "egress");
    for name in ["sameZone", "crossZone", "outside"] {
        assert!(
            class_byte(&eg, name) > 100_000_000,
            "{name} not counted: {eg}"
        );
    }
    run(&site, "DEL", &c).ok();
    run(&site, "DEL", &c).ok();
    assert_clean(&site);
}

/// CHECK looks at every object: a deleted filter, a changed class rate and
/// a missing class each fail it with code 101.
#[test]
fn check_sees_filters_classes_and_rates() {
    let _serial = serial();
    let site = site();
    let c = conf(
        &site,
        json!({"egressMode": "pod", "trafficClasses": zone_classes()}),
    );
    let host = site.pod.host_veth.clone();
    let pod_ns = site.pod.ns.name.clone();
    let breakages: [(&str, Vec<&str>); 6] = [
        (
            "deleted filter",
            vec![
                "tc", "filter", "del", "dev", &host, "parent", "1:", "prio", "2", "protocol",
                "ipv6",
            ],
        ),
        (
            "changed class rate",
            vec![
                "tc", "class", "change", "dev", &host, "parent", "1:1", "classid", "1:11", "htb",
                "rate", "30mbit", "ceil", "30mbit", "quantum", "10000",
            ],
        ),
        // outside, the default class: no filter points at it.
        (
            "missing class",
            vec!["tc", "class", "del", "dev", &host, "classid", "1:12"],
        ),
        // A filter of another kind sending everything to the unshaped class
        // (htb's default class cannot be changed in place on this kernel).
        (
            "foreign filter",
            vec![
                "tc",
                "filter",
                "add",
                "dev",
                &host,
                "parent",
                "1:",
                "prio",
                "3",
                "protocol",
                "all",
                "bpf",
                "bytecode",
                "1,6 0 0 4294967295,",
                "classid",
                "1:10",
            ],
        ),
        // Same rate, ceiling and quantum; a larger bucket.
        (
            "changed class burst",
            vec![
                "tc", "class", "change", "dev", &host, "parent", "1:1", "classid", "1:11", "htb",
                "rate", "20mbit", "ceil", "20mbit", "burst", "200k", "cburst", "200k", "quantum",
                "200000",
            ],
        ),
        // Inside the pod: the hook that keeps SO_PRIORITY from picking a class.
        (
            "missing priority reset",
            vec![
                "ip", "netns", "exec", &pod_ns, "tc", "qdisc", "del", "dev", "eth0", "clsact",
            ],
        ),
    ];
    for (what, cmd) in breakages {
        run(&site, "ADD", &c).ok();
        run(&site, "CHECK", &c).ok();
        site.node.exec(&cmd).unwrap();
        let err = run(&site, "CHECK", &c).err(101);
        eprintln!("{what}: {}", err["msg"]);
        // A retried ADD repairs it.
        run(&site, "ADD", &c).ok();
        run(&site, "CHECK", &c).ok();
    }
    run(&site, "DEL", &c).ok();
    assert_clean(&site);
}

/// Bad input: code 7 and nothing changed on the node.
#[test]
fn bad_class_input_is_refused_and_changes_nothing() {
    let _serial = serial();
    let site = site();
    let before = site.node.snapshot();
    let many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    let cases = [
        ("bad CIDR", json!({"unshapedSubnets": ["10.0.0.300/8"]})),
        (
            "both lists",
            json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": ["10.1.0.0/16"]}),
        ),
        (
            "v6 prefix over 128",
            json!({"shapedSubnets": ["fd00::/129"]}),
        ),
        (
            "burst without rate",
            json!({"trafficClasses": merged(zone_classes(), json!({"crossZone": {"egressBurst": 100000}}))}),
        ),
        (
            "zoneCidrs without the zone",
            json!({"trafficClasses": {"zoneCidrs": {"a": ["10.0.0.0/8"]}}}),
        ),
        (
            "zone not listed",
            json!({"trafficClasses": merged(zone_classes(), json!({"zone": "eu-west-1a"}))}),
        ),
        ("too many subnets", json!({"shapedSubnets": many})),
        (
            "subnets and zones",
            json!({"unshapedSubnets": ["10.0.0.0/8"], "trafficClasses": zone_classes()}),
        ),
        (
            "unshaped class with a rate",
            json!({"trafficClasses": merged(zone_classes(), json!({"sameZone": {"shaped": false, "egressRate": 1000000}}))}),
        ),
    ];
    for (what, extra) in cases {
        let c = conf(&site, extra);
        let err = run(&site, "ADD", &c).err(7);
        eprintln!("{what}: {}", err["msg"]);
        assert_eq!(site.node.snapshot(), before, "{what} changed the node");
        assert!(site.state.files().is_empty(), "{what} left state");
    }
}

/// GC of an attachment that is no longer valid removes its tree and ifb.
#[test]
fn gc_removes_class_trees() {
    let _serial = serial();
    let site = site();
    let c = conf(
        &site,
        json!({"egressMode": "ifb", "trafficClasses": zone_classes()}),
    );
    run(&site, "ADD", &c).ok();
    let mut gc = c.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    if let Some(o) = gc.as_object_mut() {
        o.remove("prevResult");
    }
    let env = vec![
        ("CNI_COMMAND".to_string(), "GC".to_string()),
        ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
    ];
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&site.node),
        &env,
        gc.to_string().as_bytes(),
    )
    .ok();
    assert_clean(&site);
}

/// EKS with no zone configuration: the zone, the ENIs' subnets (same zone)
/// and the VPC's CIDR blocks (the rest of the VPC: cross zone) come from
/// IMDSv2, through the cache topology-label uses, so the node asks once.
#[test]
fn zero_config_zones_from_imds() {
    use integration_tests::imds::{Imds, Mode};
    let _serial = serial();
    let site = site();
    let mut server = Imds::start(&site.node, Mode::Normal);
    let cache = TempDir::new("imdsc");
    let cache_file = format!("{}/imds-cache.json", cache.str());
    let imds = json!({"enabled": true, "endpoint": server.endpoint(), "timeoutMs": 2000, "cacheFile": cache_file});
    let c = conf(
        &site,
        json!({"egressMode": "ifb", "trafficClasses": {
            "imds": imds, "sameZone": {"shaped": false},
            "crossZone": {"ingressRate": CROSS_RATE, "egressRate": CROSS_RATE}}}),
    );
    run(&site, "ADD", &c).ok();
    run(&site, "CHECK", &c).ok();
    let asked = server.log().len();
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("vpc-ipv4-cidr-blocks")),
        "{:?}",
        server.log()
    );
    let cached = std::fs::read_to_string(&cache_file).unwrap();
    assert!(
        cached.contains("10.0.0.0/8") && cached.contains("us-test-1a"),
        "{cached}"
    );
    // topology-label on the same node reads the same cache: no request.
    let tl = json!({
        "cniVersion": "1.0.0", "name": "classes-net", "type": "topology-label",
        "stateDir": TempDir::new("tlst").str(), "imds": imds,
        "prevResult": site.pod.prev_result("1.0.0"),
    });
    run_plugin(
        &plugin_bin("topology-label"),
        Some(&site.node),
        &site.pod.env("ADD"),
        tl.to_string().as_bytes(),
    )
    .ok();
    assert_eq!(
        server.log().len(),
        asked,
        "topology-label asked again: {:?}",
        server.log()
    );
    run_plugin(
        &plugin_bin("topology-label"),
        Some(&site.node),
        &site.pod.env("DEL"),
        tl.to_string().as_bytes(),
    )
    .ok();
    // The classes IMDS described, with real traffic out of the pod.
    let t = flows(
        &site,
        Way::OutOfPod,
        false,
        [Some(UNSHAPED_PACE), None, None],
    );
    let (pod, cross) = (POD_RATE as f64, CROSS_RATE as f64);
    assert!(
        t[0].steady(1) > UNSHAPED_ABOVE * pod,
        "same zone (ENI subnet) is unshaped"
    );
    assert_rate(&t[1], cross, cross, "IMDS crossZone (VPC)");
    assert_rate(&t[2], pod - cross, pod, "IMDS outside");
    // IMDS gone: the cache answers a fresh ADD and CHECK.
    server.stop();
    run(&site, "DEL", &c).ok();
    run(&site, "ADD", &c).ok();
    run(&site, "CHECK", &c).ok();
    run(&site, "DEL", &c).ok();
    assert_clean(&site);
}

/// Zone facts that cannot be had are "try again later" (11), and change
/// nothing: no IMDS and no cache, or a zone file bootstrap has not written.
#[test]
fn unavailable_zone_facts_are_code_11_and_change_nothing() {
    let _serial = serial();
    let site = site();
    let before = site.node.snapshot();
    let cache = TempDir::new("imdsc");
    for tc in [
        json!({"imds": {"endpoint": "http://127.0.0.1:1", "timeoutMs": 200,
                         "cacheFile": format!("{}/c.json", cache.str())}}),
        json!({"zoneCidrsFile": format!("{}/not-yet.json", cache.str())}),
    ] {
        let c = conf(&site, json!({"trafficClasses": tc}));
        let err = run(&site, "ADD", &c).err(11);
        eprintln!("{}: {}", err["msg"], err["details"]);
        assert_eq!(site.node.snapshot(), before);
        assert!(site.state.files().is_empty());
        // DEL does not need the facts.
        run(&site, "DEL", &c).ok();
    }
}

/// Without classes the layout is exactly the one earlier versions (and the
/// reference) install: pinned as `tc -j` prints it, so the drop-in promise
/// cannot drift with the layout code.
#[test]
fn no_classes_layout_is_pinned() {
    let _serial = serial();
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    let state = TempDir::new("pinst");
    let c = json!({
        "cniVersion": "1.0.0", "name": "pin-net", "type": "bandwidth", "stateDir": state.str(),
        "runtimeConfig": {"bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 4_294_967_295u64,
                                         "egressRate": 20_000_000, "egressBurst": 4_294_967_295u64}},
        "prevResult": pod.prev_result("1.0.0"),
    });
    let run = |verb: &str| {
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&node),
            &pod.env(verb),
            c.to_string().as_bytes(),
        )
        .ok()
    };
    let added = run("ADD").json();
    let ifb = added["interfaces"][2]["name"].as_str().unwrap().to_string();
    let tc = |args: &[&str]| -> Value {
        let mut full = vec!["tc", "-j"];
        full.extend_from_slice(args);
        serde_json::from_str(&node.exec(&full).unwrap()).unwrap()
    };
    let host = tc(&["qdisc", "show", "dev", &pod.host_veth]);
    let mut filters = tc(&["filter", "show", "dev", &pod.host_veth, "parent", "ffff:"]);
    let on_ifb = tc(&["qdisc", "show", "dev", &ifb]);
    // The ifb's name is per attachment, the action's index per namespace.
    let action = &mut filters[2]["options"]["actions"][0];
    assert_eq!(action["to_dev"], ifb.as_str());
    for k in ["to_dev", "index", "ref", "bind"] {
        action.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(
        host,
        json!([{"kind":"tbf","handle":"1:","root":true,"refcnt":3,"options":{"rate":1250000,"burst":31250,"lat":28640}},
               {"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{}}])
    );
    assert_eq!(
        filters,
        json!([{"protocol":"all","pref":1,"kind":"u32","chain":0},
               {"protocol":"all","pref":1,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},
               {"protocol":"all","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","not_in_hw":true,
                 "match":{"value":"0","mask":"0","offmask":"","off":0},
                 "actions":[{"order":1,"kind":"mirred","mirred_action":"redirect","direction":"egress","control_action":{"type":"stolen"}}]}}])
    );
    assert_eq!(
        on_ifb,
        json!([{"kind":"tbf","handle":"1:","root":true,"refcnt":2,"options":{"rate":2500000,"burst":62500,"lat":1820}}])
    );
    run("DEL");
}

/// htb picks a class by `skb->priority` before any filter: a pod with
/// CAP_NET_RAW (containerd's default) could set `SO_PRIORITY` to `1:10`
/// (the unshaped class) or `1:0` (htb's unlimited direct queue). Crossing
/// the veth resets the priority (ifb mode and the host side); inside the
/// pod our clsact's eBPF filter does. Either way the flood lands in
/// `outside`, shaped.
#[test]
fn a_pod_cannot_pick_its_class_with_so_priority() {
    let _serial = serial();
    let site = site();
    for mode in ["pod", "ifb"] {
        let c = conf(
            &site,
            json!({"egressMode": mode, "trafficClasses": zone_classes()}),
        );
        run(&site, "ADD", &c).ok();
        let before = class_bytes(&site, "egress");
        for prio in [0x1_0010u32, 0x1_0000] {
            let script = format!(
                "import socket,time\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 s.setsockopt(socket.SOL_SOCKET,socket.SO_PRIORITY,{prio})\n\
                 t=time.time()\n\
                 while time.time()-t<0.5:\n    s.sendto(b'x'*1400,('{}',9))\n",
                site.peers[2].v4
            );
            site.pod.ns.exec(&["python3", "-c", &script]).unwrap();
        }
        let after = class_bytes(&site, "egress");
        let same = class_byte(&after, "sameZone") - class_byte(&before, "sameZone");
        let outside = class_byte(&after, "outside") - class_byte(&before, "outside");
        eprintln!("{mode}: sameZone +{same} B, outside +{outside} B");
        assert!(
            same < 10_000,
            "{mode}: the pod chose the unshaped class ({same} B)"
        );
        // One second at most of the pod's limit went out, plus its bucket.
        assert!(
            outside > 1_000_000 && outside < POD_RATE / 8 + 2_000_000,
            "{mode}: outside {outside} B"
        );
        let dev_qdisc = if mode == "pod" {
            site.pod
                .ns
                .exec(&["tc", "-j", "qdisc", "show", "dev", "eth0"])
                .unwrap()
        } else {
            let ifb = site
                .node
                .link_names()
                .into_iter()
                .find(|n| n.starts_with("bwp"))
                .unwrap();
            site.node
                .exec(&["tc", "-j", "qdisc", "show", "dev", &ifb])
                .unwrap()
        };
        let qs: Value = serde_json::from_str(&dev_qdisc).unwrap();
        let htb = qs
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["kind"] == "htb")
            .unwrap();
        assert_eq!(htb["options"]["direct_packets_stat"], 0, "{mode}: {htb}");
        run(&site, "CHECK", &c).ok();
        run(&site, "DEL", &c).ok();
        assert_clean(&site);
    }
}

/// Our record owns the root `1:` of the kind we installed: a node tool that
/// later puts its own `htb 1:` there (the handle htb users pick first) does
/// not become ours, and DEL leaves it.
#[test]
fn a_foreign_htb_under_our_handle_is_left_alone() {
    let _serial = serial();
    let site = site();
    let c = conf(&site, json!({"egressMode": "pod"}));
    run(&site, "ADD", &c).ok();
    let host = site.pod.host_veth.clone();
    // (The kernel cannot change a qdisc's kind in place: delete, then add.)
    site.node
        .exec(&["tc", "qdisc", "del", "dev", &host, "root"])
        .unwrap();
    site.node
        .exec(&[
            "tc", "qdisc", "add", "dev", &host, "root", "handle", "1:", "htb", "default", "1",
        ])
        .unwrap();
    run(&site, "CHECK", &c).err(101);
    // A retried ADD refuses to replace it; DEL removes only what is ours.
    run(&site, "ADD", &c).err(100);
    run(&site, "DEL", &c).ok();
    assert!(
        site.node.qdisc(&host, "htb").is_some(),
        "the foreign htb was deleted"
    );
    site.node
        .exec(&["tc", "qdisc", "del", "dev", &host, "root"])
        .unwrap();
    assert_clean(&site);
}
