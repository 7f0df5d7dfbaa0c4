//! bandwidth's pool of parked ifbs against the kernel: DEL parks its ifb
//! (down, renamed `ifb-parked<N>`, marked for the state dir's pool, no
//! qdisc of ours), the next pod's ADD takes it (its name, mark and MTU,
//! up, shaped), `ifbPool` bounds it (0: DEL deletes, as the reference
//! does), GC of a network without pods empties it, and a taken ifb shapes
//! real traffic and counts only its new pod's bytes.

use integration_tests::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const NET: &str = "pool-net";

struct Node {
    node: Netns,
    state: TempDir,
}

impl Node {
    fn new() -> Node {
        require_root();
        Node {
            node: Netns::new("pooln").unwrap(),
            state: TempDir::new("poolst"),
        }
    }

    fn conf(&self, pod: &Pod, extra: Value) -> Value {
        merged(
            json!({"cniVersion": "1.1.0", "name": NET, "type": "bandwidth",
                   "stateDir": self.state.str(), "prevResult": pod.prev_result("1.1.0"),
                   "egressRate": 100_000_000, "egressBurst": 1_000_000,
                   "ingressRate": 100_000_000, "ingressBurst": 1_000_000}),
            extra,
        )
    }

    fn run(&self, pod: &Pod, verb: &str, extra: Value) -> Outcome {
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&self.node),
            &pod.env(verb),
            self.conf(pod, extra).to_string().as_bytes(),
        )
    }

    fn gc(&self, valid: Value, extra: Value) -> Outcome {
        let conf = merged(
            json!({"cniVersion": "1.1.0", "name": NET, "type": "bandwidth",
                   "stateDir": self.state.str(), "cni.dev/valid-attachments": valid}),
            extra,
        );
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&self.node),
            &env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]),
            conf.to_string().as_bytes(),
        )
    }

    /// The ifb the pod's ADD reported (its interface after the pod's own).
    fn ifb_of(&self, added: &Outcome) -> Value {
        let out = added.json();
        let name = out["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["name"].as_str())
            .find(|n| n.starts_with("bwp"))
            .expect("an ifb in the result")
            .to_string();
        self.node.link(&name).expect("the reported ifb exists")
    }
}

fn flags_up(l: &Value) -> bool {
    l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

#[test]
fn del_parks_the_ifb_and_the_next_pod_takes_it() {
    let n = Node::new();
    let (a, b) = (Pod::new(&n.node).unwrap(), Pod::new(&n.node).unwrap());
    b.set_mtu(&n.node, 9001).unwrap();
    let made = n.ifb_of(&n.run(&a, "ADD", json!({})).ok());
    n.run(&a, "DEL", json!({})).ok();

    assert_eq!(n.node.parked_ifbs(), ["ifb-parked0"]);
    let parked = n.node.link("ifb-parked0").unwrap();
    assert_eq!(parked["ifindex"], made["ifindex"], "parked, not deleted");
    assert_eq!(
        parked["ifalias"].as_str(),
        Some(format!("cni-bandwidth parked pool={}", n.state.str()).as_str())
    );
    assert!(!flags_up(&parked));
    assert!(
        n.node.qdisc("ifb-parked0", "tbf").is_none(),
        "its shaper went"
    );
    assert!(
        n.node
            .qdiscs(&a.host_veth)
            .iter()
            .all(|q| q["kind"] == "noqueue")
    );
    assert!(n.state.files().is_empty());

    let taken = n.ifb_of(&n.run(&b, "ADD", json!({})).ok());
    assert_eq!(
        taken["ifindex"], made["ifindex"],
        "the parked ifb is reused"
    );
    assert!(taken["ifalias"].as_str().unwrap().contains(&b.container_id));
    assert!(flags_up(&taken));
    assert_eq!(taken["mtu"], 9001, "the new pod's MTU");
    let name = taken["ifname"].as_str().unwrap();
    assert!(n.node.qdisc(name, "tbf").is_some(), "shaped");
    let filters = n.node.filters(&b.host_veth, "ingress");
    assert!(
        Value::from(filters.clone()).to_string().contains(name),
        "redirected: {filters:?}"
    );
    assert!(n.node.parked_ifbs().is_empty());
    n.run(&b, "CHECK", json!({})).ok();

    n.run(&b, "DEL", json!({})).ok();
    assert_eq!(n.node.parked_ifbs(), ["ifb-parked0"]);
    n.gc(json!([]), json!({})).ok();
    assert!(
        n.node.parked_ifbs().is_empty(),
        "GC without pods empties the pool"
    );
    let left = n.node.node_leftovers();
    assert!(left.iter().all(|l| !l.contains("ifb")), "{left:?}");
}

#[test]
fn the_pool_is_bounded_and_zero_turns_it_off() {
    let n = Node::new();
    let pods: Vec<Pod> = (0..3).map(|_| Pod::new(&n.node).unwrap()).collect();
    let two = json!({"ifbPool": 2});
    for p in &pods {
        n.run(p, "ADD", two.clone()).ok();
    }
    for p in &pods {
        n.run(p, "DEL", two.clone()).ok();
    }
    assert_eq!(
        n.node.parked_ifbs(),
        ["ifb-parked0", "ifb-parked1"],
        "the third was deleted"
    );
    let ifbs = |node: &Netns| {
        node.link_names()
            .into_iter()
            .filter(|l| l.starts_with("bwp"))
            .count()
    };
    assert_eq!(ifbs(&n.node), 0);

    // GC of a network with pods keeps what the config allows.
    n.run(&pods[0], "ADD", two.clone()).ok();
    let valid = json!([{"containerID": pods[0].container_id, "ifname": "eth0"}]);
    n.gc(valid, json!({"ifbPool": 1})).ok();
    assert_eq!(
        n.node.parked_ifbs(),
        ["ifb-parked0"],
        "one taken, the other trimmed to 1"
    );
    let off = json!({"ifbPool": 0});
    n.run(&pods[0], "DEL", off.clone()).ok();
    assert_eq!(n.node.parked_ifbs(), ["ifb-parked0"], "0: DEL deletes");
    assert_eq!(ifbs(&n.node), 0);
    n.run(&pods[1], "ADD", off.clone()).ok();
    assert_eq!(n.node.parked_ifbs(), ["ifb-parked0"], "0: ADD takes none");
    n.run(&pods[1], "DEL", off).ok();
    n.gc(json!([]), json!({})).ok();
    assert!(n.node.parked_ifbs().is_empty() && n.state.files().is_empty());
}

#[test]
fn bad_pool_sizes_are_refused_and_change_nothing() {
    let n = Node::new();
    let pod = Pod::new(&n.node).unwrap();
    let before = n.node.snapshot();
    for bad in [json!(257), json!(-1), json!("16"), json!(2.5), json!(null)] {
        let extra = json!({"ifbPool": bad});
        if bad.is_null() {
            // null is "not given": the default.
            continue;
        }
        let e = n.run(&pod, "ADD", extra.clone()).err(7);
        assert!(e["msg"].as_str().unwrap().contains("ifbPool"), "{bad}: {e}");
        assert_eq!(n.node.snapshot(), before, "{bad}");
        assert!(n.state.files().is_empty());
        // DEL still succeeds (and deletes, without a config to trust).
        n.run(&pod, "DEL", extra).ok();
    }
}

/// A taken ifb shapes as a new one does, and `cni-rs pods` counts only its
/// new pod's bytes out of the pod (the ifb's own counters keep the
/// previous pod's).
#[test]
fn a_taken_ifb_shapes_real_traffic_and_counts_from_zero() {
    let _serial = serial();
    let n = Node::new();
    let (a, b) = (Pod::new(&n.node).unwrap(), Pod::new(&n.node).unwrap());
    // MTU 9001 as on EKS: iperf3 counts payload, tbf the wire (see
    // bandwidth_traffic.rs).
    a.set_mtu(&n.node, 9001).unwrap();
    b.set_mtu(&n.node, 9001).unwrap();
    let rate = json!({"egressRate": 20_000_000, "egressBurst": 200_000});
    n.run(&a, "ADD", rate.clone()).ok();
    let first = iperf(&n.node, &a.host_ip, &a.ns, 3).unwrap();
    first.assert_shaped(20_000_000, "out of pod a");
    n.run(&a, "DEL", rate.clone()).ok();
    let taken = n.ifb_of(&n.run(&b, "ADD", rate.clone()).ok());
    let device_tx = taken["stats64"]["tx"]["bytes"].as_u64();
    let second = iperf(&n.node, &b.host_ip, &b.ns, 3).unwrap();
    second.assert_shaped(20_000_000, "out of pod b, through a taken ifb");

    let out = Command::new("ip")
        .args(["netns", "exec", &n.node.name])
        .arg(plugin_bin("cni-rs"))
        .args(["pods", "--json", "--bandwidth-state-dir", &n.state.str()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["containerId"] == b.container_id.as_str())
        .unwrap_or_else(|| panic!("b's row: {rows}"));
    let counted = row["egress"]["bytes"].as_u64().unwrap();
    let sent = second.bytes;
    assert!(
        counted >= sent && counted < sent + sent / 5,
        "b's egress {counted} bytes for {sent} sent (device tx before b: {device_tx:?})"
    );
    n.run(&b, "DEL", rate).ok();
}
