//! Never touch what is not ours: the adversarial findings of the second
//! ownership pass, each reproduced against the built plugins in private
//! namespaces. Every test failed on the code before the fix.

use integration_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const NET: &str = "own-net";
const ZONE: &str = "topology.kubernetes.io/zone";

fn bw() -> std::path::PathBuf {
    plugin_bin("bandwidth")
}

fn tl() -> std::path::PathBuf {
    plugin_bin("topology-label")
}

struct World {
    node: Netns,
    pod: Pod,
    state: TempDir,
}

fn world() -> World {
    let node = Netns::new("ownn").unwrap();
    let pod = Pod::new(&node).unwrap();
    World {
        node,
        pod,
        state: TempDir::new("owst"),
    }
}

/// A config for `plugin` on `pod`, with `extra` keys on top.
fn conf(plugin: &str, net: &str, pod: &Pod, state: &TempDir, extra: Value) -> Value {
    merged(
        json!({
            "cniVersion": "1.0.0", "name": net, "type": plugin,
            "stateDir": state.str(),
            "prevResult": pod.prev_result("1.0.0"),
        }),
        extra,
    )
}

fn egress(rate: u64) -> Value {
    json!({"egressRate": rate, "egressBurst": 80_000})
}

/// Egress shaped inside the pod (`egressMode: pod`), 8 Mbit/s.
fn pod_mode_egress() -> Value {
    json!({"egressMode": "pod", "egressRate": 8_000_000, "egressBurst": 80_000})
}

/// A root `tbf 1:` that someone else put on `dev` in `ns`.
fn add_foreign_tbf(ns: &Netns, dev: &str) {
    ns.exec(&[
        "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst",
        "10k", "latency", "50ms",
    ])
    .unwrap();
}

fn ingress(rate: u64) -> Value {
    json!({"ingressRate": rate, "ingressBurst": 80_000})
}

fn run(bin: &std::path::Path, node: &Netns, env: &[(String, String)], conf: &Value) -> Outcome {
    run_plugin(bin, Some(node), env, conf.to_string().as_bytes())
}

fn ifbs(node: &Netns) -> Vec<String> {
    let mut v: Vec<String> = node
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("bwp"))
        .collect();
    v.sort();
    v
}

fn tbf_rate(ns: &Netns, dev: &str) -> Option<u64> {
    ns.qdisc(dev, "tbf")
        .and_then(|q| q["options"]["rate"].as_u64())
}

/// The ifb the host veth's redirect filter points at.
fn redirect_target(node: &Netns, host_veth: &str) -> Option<String> {
    let filters = node.filters(host_veth, "ingress");
    filters.iter().find_map(|f| {
        f["options"]["actions"]
            .as_array()?
            .iter()
            .find_map(|a| a["to_dev"].as_str().map(str::to_string))
    })
}

/// A second interface `ifname` in `pod`'s netns, veth-paired with a new
/// host veth in `node`, with its own /24.
struct Extra {
    host_veth: String,
    ifname: String,
    ip: String,
}

fn add_interface(node: &Netns, pod: &Pod, ifname: &str, subnet: u8) -> Extra {
    let host_veth = unique("vx");
    node.ip(&[
        "link",
        "add",
        &host_veth,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        &pod.ns.name,
    ])
    .unwrap();
    let host_ip = format!("10.250.{subnet}.1");
    let ip = format!("10.250.{subnet}.2");
    node.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_veth])
        .unwrap();
    node.ip(&["link", "set", &host_veth, "up"]).unwrap();
    pod.ns
        .ip(&["addr", "add", &format!("{ip}/24"), "dev", ifname])
        .unwrap();
    pod.ns.ip(&["link", "set", ifname, "up"]).unwrap();
    Extra {
        host_veth,
        ifname: ifname.to_string(),
        ip,
    }
}

impl Extra {
    fn prev_result(&self, pod: &Pod) -> Value {
        json!({"cniVersion": "1.0.0",
               "interfaces": [{"name": self.host_veth},
                              {"name": self.ifname, "sandbox": pod.ns.path_str()}],
               "ips": [{"interface": 1, "address": format!("{}/24", self.ip)}]})
    }

    fn env(&self, pod: &Pod, command: &str) -> Vec<(String, String)> {
        with_env(pod.env(command), "CNI_IFNAME", &self.ifname)
    }
}

/// Finding 1: a pod with eth0 and net1 on one network shared one ifb, and
/// DEL of net1 blackholed eth0's egress.
#[test]
fn two_interfaces_of_one_pod_get_their_own_ifbs() {
    let w = world();
    let net1 = add_interface(&w.node, &w.pod, "net1", 1);
    let c0 = conf("bandwidth", NET, &w.pod, &w.state, egress(8_000_000));
    let mut c1 = conf("bandwidth", NET, &w.pod, &w.state, egress(16_000_000));
    c1["prevResult"] = net1.prev_result(&w.pod);
    run(&bw(), &w.node, &w.pod.env("ADD"), &c0).ok();
    run(&bw(), &w.node, &net1.env(&w.pod, "ADD"), &c1).ok();
    assert_eq!(ifbs(&w.node).len(), 2, "one ifb each: {:?}", ifbs(&w.node));
    let ifb0 = redirect_target(&w.node, &w.pod.host_veth).expect("eth0 redirect");
    let ifb1 = redirect_target(&w.node, &net1.host_veth).expect("net1 redirect");
    assert_ne!(ifb0, ifb1);
    assert_eq!(tbf_rate(&w.node, &ifb0), Some(1_000_000), "eth0 keeps 8M");
    assert_eq!(tbf_rate(&w.node, &ifb1), Some(2_000_000));
    run(&bw(), &w.node, &net1.env(&w.pod, "DEL"), &c1).ok();
    // eth0 is still shaped and still passes traffic.
    assert_eq!(ifbs(&w.node), vec![ifb0.clone()]);
    assert_eq!(tbf_rate(&w.node, &ifb0), Some(1_000_000));
    run(&bw(), &w.node, &w.pod.env("CHECK"), &c0).ok();
    let _server = listener(&w.node, 5301);
    assert!(
        tcp_connects(&w.pod.ns, &w.pod.host_ip, 5301),
        "eth0's egress is blackholed"
    );
    run(&bw(), &w.node, &w.pod.env("DEL"), &c0).ok();
    assert!(ifbs(&w.node).is_empty());
    assert!(w.state.files().is_empty(), "{:?}", w.state.files());
}

/// Finding 1: `advnetA` + `bc1` and `advnet` + `Abc1` concatenate alike.
#[test]
fn concatenated_identities_do_not_share_an_ifb() {
    let w = world();
    let mut a = Pod::new(&w.node).unwrap();
    a.container_id = "bc1".into();
    let mut b = Pod::new(&w.node).unwrap();
    b.container_id = "Abc1".into();
    let ca = conf("bandwidth", "advnetA", &a, &w.state, egress(8_000_000));
    let cb = conf("bandwidth", "advnet", &b, &w.state, egress(16_000_000));
    run(&bw(), &w.node, &a.env("ADD"), &ca).ok();
    run(&bw(), &w.node, &b.env("ADD"), &cb).ok();
    let ifa = redirect_target(&w.node, &a.host_veth).unwrap();
    let ifb = redirect_target(&w.node, &b.host_veth).unwrap();
    assert_ne!(ifa, ifb);
    run(&bw(), &w.node, &b.env("DEL"), &cb).ok();
    assert_eq!(
        tbf_rate(&w.node, &ifa),
        Some(1_000_000),
        "a's ifb is intact"
    );
    run(&bw(), &w.node, &a.env("CHECK"), &ca).ok();
    run(&bw(), &w.node, &a.env("DEL"), &ca).ok();
    assert!(ifbs(&w.node).is_empty());
}

/// Finding 2: DEL with CNI_NETNS = the plugin's own netns changed the node.
#[test]
fn del_with_the_node_namespace_changes_nothing_on_the_node() {
    let w = world();
    // The node has an interface named like the pod's, with a root tbf and
    // an rp_filter equal to what the pod is given.
    w.node
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])
        .unwrap();
    add_foreign_tbf(&w.node, "eth0");
    w.node
        .exec(&["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=2"])
        .unwrap();
    w.pod
        .ns
        .exec(&["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1"])
        .unwrap();
    let node_before = w.node.snapshot();
    let own = with_env(w.pod.env("DEL"), "CNI_NETNS", "/proc/self/ns/net");

    let cb = conf("bandwidth", NET, &w.pod, &w.state, pod_mode_egress());
    run(&bw(), &w.node, &w.pod.env("ADD"), &cb).ok();
    assert!(tbf_rate(&w.pod.ns, "eth0").is_some(), "pod-mode tbf");
    let own_add = with_env(w.pod.env("ADD"), "CNI_NETNS", "/proc/self/ns/net");
    run(&bw(), &w.node, &own_add, &cb).err(4);
    run(&bw(), &w.node, &own, &cb).ok();

    let tl_state = TempDir::new("owtl");
    let ct = conf(
        "topology-label",
        NET,
        &w.pod,
        &tl_state,
        json!({"labels": {ZONE: "us-test-1a"},
               "profiles": [{"match": {}, "mtu": 1400,
                             "sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "2"}}]}),
    );
    run(&tl(), &w.node, &w.pod.env("ADD"), &ct).ok();
    run(&tl(), &w.node, &own_add, &ct).err(4);
    run(&tl(), &w.node, &own, &ct).ok();

    assert_eq!(tbf_rate(&w.node, "eth0"), Some(125_000), "node's tbf kept");
    assert_eq!(
        w.node
            .exec(&["sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"])
            .unwrap()
            .trim(),
        "2",
        "node's rp_filter kept"
    );
    assert_eq!(w.node.snapshot(), node_before, "the node is as it was");
}

/// Finding 2: DEL and CHECK with another pod's netns under CNI_NETNS.
#[test]
fn del_and_check_in_another_pods_namespace_leave_it_alone() {
    let w = world();
    let other = Pod::new(&w.node).unwrap();
    add_foreign_tbf(&other.ns, "eth0");
    let cb = conf("bandwidth", NET, &w.pod, &w.state, pod_mode_egress());
    run(&bw(), &w.node, &w.pod.env("ADD"), &cb).ok();
    let elsewhere = |cmd: &str| with_env(w.pod.env(cmd), "CNI_NETNS", &other.ns.path_str());
    run(&bw(), &w.node, &elsewhere("CHECK"), &cb).err(101);
    run(&bw(), &w.node, &elsewhere("DEL"), &cb).ok();
    assert_eq!(
        tbf_rate(&other.ns, "eth0"),
        Some(125_000),
        "the other pod's tbf is kept"
    );
}

/// Finding 3: bandwidth before topology-label with a 1M limit gives a
/// 3125 B bucket; raising the MTU to 9000 then blackholed the pod.
#[test]
fn topology_label_refuses_an_mtu_above_a_shapers_burst() {
    let w = world();
    let mut cb = conf("bandwidth", NET, &w.pod, &w.state, json!({}));
    cb["runtimeConfig"] =
        json!({"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 4_294_967_295u64}});
    cb["capabilities"] = json!({"bandwidth": true});
    let tl_state = TempDir::new("owtl");
    let ct = conf(
        "topology-label",
        NET,
        &w.pod,
        &tl_state,
        json!({"labels": {ZONE: "us-test-1a"}, "profiles": [{"match": {}, "mtu": 9000}]}),
    );
    // Wrong order: refused with a clear message, nothing changed.
    run(&bw(), &w.node, &w.pod.env("ADD"), &cb).ok();
    let before = (w.node.snapshot(), w.pod.ns.snapshot());
    let err = run(&tl(), &w.node, &w.pod.env("ADD"), &ct).err(7);
    assert!(
        format!("{err}").contains("topology-label before bandwidth"),
        "{err}"
    );
    assert_eq!((w.node.snapshot(), w.pod.ns.snapshot()), before);
    run(&tl(), &w.node, &w.pod.env("DEL"), &ct).ok();
    run(&bw(), &w.node, &w.pod.env("DEL"), &cb).ok();
    // Right order: the bucket is sized for the final MTU and jumbo frames pass.
    run(&tl(), &w.node, &w.pod.env("ADD"), &ct).ok();
    run(&bw(), &w.node, &w.pod.env("ADD"), &cb).ok();
    let burst = w.node.qdisc(&w.pod.host_veth, "tbf").unwrap()["options"]["burst"]
        .as_u64()
        .unwrap();
    assert!(burst >= 9014, "burst {burst}");
    w.node
        .exec(&[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "8900",
            &w.pod.pod_ip,
        ])
        .expect("a jumbo frame reaches the pod");
    run(&bw(), &w.node, &w.pod.env("DEL"), &cb).ok();
    run(&tl(), &w.node, &w.pod.env("DEL"), &ct).ok();
}

/// Finding 4: `n+1` / `n,1` shared a state file, and removing `eth0`'s
/// state swept `eth0.tmp.1`'s.
#[test]
fn state_names_never_collide() {
    let w = world();
    let pairs = [("n+1", "n,1"), ("eth9", "eth9.tmp.1")];
    let mut extras = Vec::new();
    for (i, (a, b)) in pairs.iter().enumerate() {
        extras.push(add_interface(&w.node, &w.pod, a, 10 + 2 * i as u8));
        extras.push(add_interface(&w.node, &w.pod, b, 11 + 2 * i as u8));
    }
    let confs: Vec<Value> = extras
        .iter()
        .map(|x| {
            let mut c = conf("bandwidth", NET, &w.pod, &w.state, ingress(8_000_000));
            c["prevResult"] = x.prev_result(&w.pod);
            c
        })
        .collect();
    for (x, c) in extras.iter().zip(&confs) {
        run(&bw(), &w.node, &x.env(&w.pod, "ADD"), c).ok();
    }
    assert_eq!(w.state.files().len(), 4, "{:?}", w.state.files());
    // DEL the first of each pair: the second keeps its record.
    for i in [0, 2] {
        run(&bw(), &w.node, &extras[i].env(&w.pod, "DEL"), &confs[i]).ok();
        run(
            &bw(),
            &w.node,
            &extras[i + 1].env(&w.pod, "CHECK"),
            &confs[i + 1],
        )
        .ok();
    }
    for i in [1, 3] {
        run(&bw(), &w.node, &extras[i].env(&w.pod, "DEL"), &confs[i]).ok();
    }
    for x in &extras {
        assert!(
            w.node.qdisc(&x.host_veth, "tbf").is_none(),
            "tbf left on {}",
            x.ifname
        );
    }
    assert!(w.state.files().is_empty(), "{:?}", w.state.files());
}

fn mkfifo(path: &std::path::Path) {
    sh(&["mkfifo", &path.display().to_string()]).unwrap();
}

/// Finding 5: a FIFO at any path a plugin opens hung the verb.
#[test]
fn fifos_never_hang_a_verb() {
    let w = world();
    let files = TempDir::new("owff");
    let fifo = files.path.join("fifo");
    mkfifo(&fifo);
    let limit = Duration::from_secs(10);
    let within = |bin: &std::path::Path, env: &[(String, String)], c: &Value| {
        run_plugin_within(
            bin,
            Some(&w.node),
            env,
            c.to_string().as_bytes(),
            limit,
            Stderr::Captured,
        )
    };
    let fifo_s = fifo.display().to_string();
    let cb = conf("bandwidth", NET, &w.pod, &w.state, ingress(8_000_000));
    let ct = conf(
        "topology-label",
        NET,
        &w.pod,
        &w.state,
        json!({"labels": {ZONE: "us-test-1a"}}),
    );
    // CNI_NETNS: refused (code 4) at once.
    for (bin, c) in [(bw(), &cb), (tl(), &ct)] {
        let env = with_env(w.pod.env("ADD"), "CNI_NETNS", &fifo_s);
        let out = within(&bin, &env, c).expect("ADD hung on a FIFO CNI_NETNS");
        assert_eq!(out.json()["code"], 4, "{}", out.stdout);
        let env = with_env(w.pod.env("DEL"), "CNI_NETNS", &fifo_s);
        within(&bin, &env, c)
            .expect("DEL hung on a FIFO CNI_NETNS")
            .ok();
    }
    // logFile: logging is skipped, the verb works.
    for (bin, c) in [(bw(), &cb), (tl(), &ct)] {
        let mut c = c.clone();
        c["logFile"] = json!(fifo_s);
        within(&bin, &w.pod.env("ADD"), &c)
            .expect("ADD hung on a FIFO logFile")
            .ok();
        within(&bin, &w.pod.env("DEL"), &c)
            .expect("DEL hung on a FIFO logFile")
            .ok();
    }
    // labelsFile: an error, not a hang.
    let mut c = ct.clone();
    c["labelsFile"] = json!(fifo_s);
    let out = within(&tl(), &w.pod.env("ADD"), &c).expect("ADD hung on a FIFO labelsFile");
    assert_ne!(out.status, 0, "{}", out.stdout);
    // The state dir's lock and a state file.
    for (bin, c) in [(bw(), &cb), (tl(), &ct)] {
        let dir = TempDir::new("owfl");
        std::fs::create_dir_all(&dir.path).unwrap();
        mkfifo(&dir.path.join(".lock"));
        let mut c = c.clone();
        c["stateDir"] = json!(dir.str());
        let out = within(&bin, &w.pod.env("ADD"), &c).expect("ADD hung on a FIFO lock");
        assert_eq!(out.json()["code"], 5, "{}", out.stdout);
        let dir = TempDir::new("owfs");
        std::fs::create_dir_all(&dir.path).unwrap();
        mkfifo(
            &dir.path
                .join(format!("{NET}+{}+eth0.json", w.pod.container_id)),
        );
        c["stateDir"] = json!(dir.str());
        within(&bin, &w.pod.env("ADD"), &c).expect("ADD hung on a FIFO state file");
        within(&bin, &w.pod.env("DEL"), &c)
            .expect("DEL hung on a FIFO state file")
            .ok();
    }
}

/// Finding 6: `2>/dev/full` turned every logged error into SIGABRT.
#[test]
fn unwritable_stderr_still_answers() {
    let w = world();
    let bad = conf(
        "bandwidth",
        NET,
        &w.pod,
        &w.state,
        json!({"ingressRate": 1000}),
    );
    for (bin, c) in [
        (bw(), bad),
        (
            tl(),
            conf(
                "topology-label",
                NET,
                &w.pod,
                &w.state,
                json!({"profiles": [{"match": {}, "mtu": "x"}]}),
            ),
        ),
    ] {
        let out = run_plugin_within(
            &bin,
            Some(&w.node),
            &w.pod.env("ADD"),
            c.to_string().as_bytes(),
            Duration::from_secs(10),
            Stderr::Full,
        )
        .expect("finished");
        assert_eq!(
            out.status, 1,
            "exit status (134 is SIGABRT): {}",
            out.stdout
        );
        assert_eq!(out.json()["code"], 7, "{}", out.stdout);
    }
}

/// Finding 7: a 300-character network name or 250-character id made DEL
/// fail forever; names with `/`, `..`, spaces or newlines passed.
#[test]
fn long_and_invalid_names() {
    let w = world();
    for bin in [bw(), tl()] {
        for name in ["a/b", "..", "a b", "a\nb", "", "-x"] {
            let c = conf("bandwidth", name, &w.pod, &w.state, ingress(8_000_000));
            run(&bin, &w.node, &w.pod.env("ADD"), &c).err(7);
            run(&bin, &w.node, &w.pod.env("DEL"), &c).ok();
        }
    }
    // A 300-character (valid) network name: the state file name no longer
    // passes the 255-byte limit, so ADD, CHECK and DEL all work.
    let long_net = "n".repeat(300);
    let c = conf("bandwidth", &long_net, &w.pod, &w.state, ingress(8_000_000));
    run(&bw(), &w.node, &w.pod.env("ADD"), &c).ok();
    run(&bw(), &w.node, &w.pod.env("CHECK"), &c).ok();
    run(&bw(), &w.node, &w.pod.env("DEL"), &c).ok();
    run(&bw(), &w.node, &w.pod.env("DEL"), &c).ok();
    assert!(w.node.qdisc(&w.pod.host_veth, "tbf").is_none());
    assert!(w.state.files().is_empty(), "{:?}", w.state.files());
    // A long (valid) container id: ingress works; an ifb alias that the
    // kernel cannot hold is refused before anything changes.
    let mut pod = Pod::new(&w.node).unwrap();
    pod.container_id = format!("c{}", "0".repeat(249));
    let before = w.node.snapshot();
    let both = conf(
        "bandwidth",
        &"x".repeat(40),
        &pod,
        &w.state,
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000, "egressBurst": 80_000}),
    );
    run(&bw(), &w.node, &pod.env("ADD"), &both).err(7);
    assert_eq!(w.node.snapshot(), before);
    run(&bw(), &w.node, &pod.env("DEL"), &both).ok();
    let c = conf("bandwidth", NET, &pod, &w.state, ingress(8_000_000));
    run(&bw(), &w.node, &pod.env("ADD"), &c).ok();
    run(&bw(), &w.node, &pod.env("CHECK"), &c).ok();
    run(&bw(), &w.node, &pod.env("DEL"), &c).ok();
    assert!(w.node.qdisc(&pod.host_veth, "tbf").is_none());
    assert!(w.state.files().is_empty(), "{:?}", w.state.files());
}

/// Finding 8: a root qdisc with a handle was judged by kind and replaced.
#[test]
fn foreign_root_qdiscs_are_never_replaced() {
    let w = world();
    w.node
        .exec(&[
            "tc",
            "qdisc",
            "add",
            "dev",
            &w.pod.host_veth,
            "root",
            "handle",
            "5:",
            "pfifo",
        ])
        .unwrap();
    let c = conf("bandwidth", NET, &w.pod, &w.state, ingress(8_000_000));
    let before = w.node.snapshot();
    run(&bw(), &w.node, &w.pod.env("ADD"), &c).err(100);
    assert_eq!(w.node.snapshot(), before);
    run(&bw(), &w.node, &w.pod.env("DEL"), &c).ok();
    assert!(w.node.qdisc(&w.pod.host_veth, "pfifo").is_some());

    // Pod mode: a tbf 1: someone put in the pod is not ours.
    add_foreign_tbf(&w.pod.ns, "eth0");
    let p = conf("bandwidth", NET, &w.pod, &w.state, pod_mode_egress());
    let pod_before = w.pod.ns.snapshot();
    run(&bw(), &w.node, &w.pod.env("ADD"), &p).err(100);
    run(&bw(), &w.node, &w.pod.env("DEL"), &p).ok();
    assert_eq!(w.pod.ns.snapshot(), pod_before);
    assert_eq!(tbf_rate(&w.pod.ns, "eth0"), Some(125_000));
}

/// Finding 9: the host veth was matched by ifindex alone, so a veth of the
/// node whose index and peer index collide with the pod's was configured.
#[test]
fn host_veth_is_matched_by_index_and_namespace() {
    let node = Netns::new("ownn").unwrap();
    let pod_ns = Netns::new("ownp").unwrap();
    let elsewhere = Netns::new("ownx").unwrap();
    let decoy_peer_ns = Netns::new("owny").unwrap();
    // The pod's eth0 pairs with a veth in a third namespace, index 61.
    elsewhere
        .ip(&[
            "link",
            "add",
            "xp",
            "index",
            "61",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod_ns.name,
        ])
        .unwrap();
    let cont_index = pod_ns.link("eth0").unwrap()["ifindex"].as_u64().unwrap();
    // The node has a veth with index 61 whose peer has eth0's index.
    let decoy = unique("dcy");
    node.ip(&[
        "link",
        "add",
        &decoy,
        "index",
        "61",
        "type",
        "veth",
        "peer",
        "name",
        "dp",
        "netns",
        &decoy_peer_ns.name,
        "index",
        &cont_index.to_string(),
    ])
    .unwrap();
    let state = TempDir::new("owst");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": decoy}, {"name": "eth0", "sandbox": pod_ns.path_str()}],
        "ips": [{"interface": 1, "address": "10.251.0.2/24"}]});
    let env = env_of(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "decoytest"),
        ("CNI_NETNS", &pod_ns.path_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"),
    ]);
    let before = node.snapshot();
    let mut cb = json!({"cniVersion": "1.0.0", "name": NET, "type": "bandwidth",
        "stateDir": state.str(), "prevResult": prev,
        "ingressRate": 8_000_000, "ingressBurst": 80_000});
    run(&bw(), &node, &env, &cb).err(102);
    cb["type"] = json!("topology-label");
    cb["labels"] = json!({ZONE: "us-test-1a"});
    cb["alias"] = json!("{namespace}/{pod} {zone}");
    run(&tl(), &node, &env, &cb).err(102);
    assert_eq!(node.snapshot(), before, "the decoy was touched");
}

/// Finding 11: GC without the list removed every attachment.
#[test]
fn gc_needs_the_list_of_valid_attachments() {
    let w = world();
    let mut cb = conf("bandwidth", NET, &w.pod, &w.state, ingress(8_000_000));
    cb["cniVersion"] = json!("1.1.0");
    cb["prevResult"] = w.pod.prev_result("1.1.0");
    let tl_state = TempDir::new("owtl");
    let mut ct = conf(
        "topology-label",
        NET,
        &w.pod,
        &tl_state,
        json!({"labels": {ZONE: "us-test-1a"}}),
    );
    ct["cniVersion"] = json!("1.1.0");
    ct["prevResult"] = w.pod.prev_result("1.1.0");
    run(&bw(), &w.node, &w.pod.env("ADD"), &cb).ok();
    run(&tl(), &w.node, &w.pod.env("ADD"), &ct).ok();
    let gc = env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
    let files = (w.state.files(), tl_state.files());
    assert_eq!((files.0.len(), files.1.len()), (1, 1));
    for c in [&cb, &ct] {
        let mut g = c.clone();
        g.as_object_mut().unwrap().remove("prevResult");
        let bin = if c == &cb { bw() } else { tl() };
        run(&bin, &w.node, &gc, &g).err(7);
    }
    assert!(tbf_rate(&w.node, &w.pod.host_veth).is_some(), "tbf kept");
    assert_eq!((w.state.files(), tl_state.files()), files, "state kept");
    for c in [&cb, &ct] {
        let mut g = c.clone();
        g.as_object_mut().unwrap().remove("prevResult");
        g["cni.dev/valid-attachments"] = json!([]);
        let bin = if c == &cb { bw() } else { tl() };
        run(&bin, &w.node, &gc, &g).ok();
    }
    assert!(
        tbf_rate(&w.node, &w.pod.host_veth).is_none(),
        "none valid: collected"
    );
    assert!(w.state.files().is_empty(), "{:?}", w.state.files());
    assert!(tl_state.files().is_empty(), "{:?}", tl_state.files());
}

/// A 10 kB invalid annotation value was echoed whole in the error.
#[test]
fn huge_annotation_is_not_echoed() {
    let w = world();
    let huge = "z".repeat(10_000);
    let mut ct = conf(
        "topology-label",
        NET,
        &w.pod,
        &w.state,
        json!({"labels": {ZONE: "us-test-1a"}, "annotationOverrides": [ZONE]}),
    );
    ct["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {ZONE: huge}});
    let out = run(&tl(), &w.node, &w.pod.env("ADD"), &ct);
    assert_ne!(out.status, 0);
    assert!(
        out.stdout.len() < 1000,
        "{} bytes: {}",
        out.stdout.len(),
        &out.stdout[..200]
    );
    assert!(
        out.stderr.len() < 2000,
        "{} bytes of stderr",
        out.stderr.len()
    );
}

/// Both plugins pointed at one `stateDir` wrote the same file name for an
/// attachment: topology-label's DEL removed bandwidth's record.
#[test]
fn one_state_dir_for_both_plugins() {
    let w = world();
    let cb = conf("bandwidth", NET, &w.pod, &w.state, egress(8_000_000));
    let ct = conf(
        "topology-label",
        NET,
        &w.pod,
        &w.state,
        json!({"labels": {ZONE: "us-test-1a"}, "alias": "{zone}"}),
    );
    run(&tl(), &w.node, &w.pod.env("ADD"), &ct).ok();
    run(&bw(), &w.node, &w.pod.env("ADD"), &cb).ok();
    assert_eq!(w.state.files().len(), 2, "{:?}", w.state.files());
    run(&tl(), &w.node, &w.pod.env("DEL"), &ct).ok();
    run(&bw(), &w.node, &w.pod.env("CHECK"), &cb).ok();
    run(&bw(), &w.node, &w.pod.env("DEL"), &cb).ok();
    assert!(ifbs(&w.node).is_empty(), "{:?}", ifbs(&w.node));
    assert!(w.state.files().is_empty(), "{:?}", w.state.files());
}
