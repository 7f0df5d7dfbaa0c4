//! Shaping next to another tc user: the VPC CNI network policy agent puts
//! a `clsact` qdisc and its programs on the pod's host veth. Stand-in here:
//! a `clsact` whose ingress hook drops TCP to one port (u32 match, mirred
//! redirect into an ifb kept down: this kernel has no `gact`). Egress is
//! then shaped inside the pod, the policy keeps working, and DEL leaves
//! the foreign qdisc and filter alone.

use integration_tests::*;
use serde_json::{Value, json};

const RATE: u64 = 100_000_000;
const BLOCKED: u16 = 7777;

struct Env {
    node: Netns,
    pod: Pod,
    state: TempDir,
    drop_ifb: String,
}

fn setup() -> Env {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    pod.set_mtu(&node, 9001).unwrap();
    let drop_ifb = unique("pol");
    node.ip(&["link", "add", &drop_ifb, "type", "ifb"]).unwrap();
    Env {
        node,
        pod,
        state: TempDir::new("bwst"),
        drop_ifb,
    }
}

impl Env {
    /// The policy stand-in: clsact + a filter dropping pod -> node TCP to BLOCKED.
    fn install_policy(&self) {
        let dev = &self.pod.host_veth;
        self.node
            .exec(&["tc", "qdisc", "add", "dev", dev, "clsact"])
            .unwrap();
        self.node
            .exec(&[
                "tc",
                "filter",
                "add",
                "dev",
                dev,
                "ingress",
                "prio",
                "10",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "protocol",
                "6",
                "0xff",
                "match",
                "ip",
                "dport",
                &BLOCKED.to_string(),
                "0xffff",
                "action",
                "mirred",
                "egress",
                "redirect",
                "dev",
                &self.drop_ifb,
            ])
            .unwrap();
    }

    fn policy_intact(&self) {
        let dev = &self.pod.host_veth;
        assert!(
            self.node.qdisc(dev, "clsact").is_some(),
            "foreign clsact removed"
        );
        let f = self.node.filters(dev, "ingress");
        let to_drop = f.iter().any(|f| {
            f["options"]["actions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["to_dev"] == self.drop_ifb.as_str()))
        });
        assert!(to_drop, "foreign filter removed: {f:?}");
    }

    fn conf(&self, mode: Option<&str>) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "coexist-net", "type": "bandwidth",
            "capabilities": {"bandwidth": true}, "stateDir": self.state.str(),
            "runtimeConfig": {"bandwidth": {"IngressRate": RATE, "IngressBurst": 4_294_967_295u64, "EgressRate": RATE, "EgressBurst": 4_294_967_295u64}},
            "prevResult": self.pod.prev_result("1.0.0"),
        });
        if let Some(m) = mode {
            c["egressMode"] = json!(m);
        }
        c
    }

    fn run(&self, verb: &str, conf: &Value) -> Outcome {
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&self.node),
            &self.pod.env(verb),
            conf.to_string().as_bytes(),
        )
    }

    fn pod_tbf(&self) -> Option<Value> {
        self.pod.ns.qdisc("eth0", "tbf")
    }

    fn assert_blocked_and_shaped(&self) {
        let _listen = listener(&self.node, BLOCKED);
        assert!(
            !tcp_connects(&self.pod.ns, &self.pod.host_ip, BLOCKED),
            "policy port reachable"
        );
        let into = iperf(&self.pod.ns, &self.pod.pod_ip, &self.node, 4).unwrap();
        let out = iperf(&self.node, &self.pod.host_ip, &self.pod.ns, 4).unwrap();
        into.assert_shaped(RATE, "into pod");
        out.assert_shaped(RATE, "out of pod");
    }
}

#[test]
fn policy_before_add_auto_shapes_inside_the_pod() {
    let _s = serial();
    let e = setup();
    e.install_policy();
    {
        let _l = listener(&e.node, BLOCKED);
        assert!(
            !tcp_connects(&e.pod.ns, &e.pod.host_ip, BLOCKED),
            "stand-in policy drops the port"
        );
        let _l2 = listener(&e.node, 7778);
        assert!(
            tcp_connects(&e.pod.ns, &e.pod.host_ip, 7778),
            "other ports pass"
        );
    }
    let conf = e.conf(None);
    let out = e.run("ADD", &conf).ok().json();
    assert_eq!(
        out["interfaces"].as_array().unwrap().len(),
        2,
        "no ifb in pod mode"
    );
    assert!(e.pod_tbf().is_some(), "egress tbf inside the pod");
    assert!(
        e.node.qdisc(&e.pod.host_veth, "tbf").is_some(),
        "ingress tbf next to clsact"
    );
    e.policy_intact();
    e.run("CHECK", &conf).ok();
    e.assert_blocked_and_shaped();
    e.run("DEL", &conf).ok();
    e.policy_intact();
    assert!(e.pod_tbf().is_none());
    assert!(e.node.qdisc(&e.pod.host_veth, "tbf").is_none());
    assert!(e.state.files().is_empty());
    e.run("DEL", &conf).ok();
    e.policy_intact();
}

#[test]
fn policy_after_add_with_pod_mode() {
    let _s = serial();
    let e = setup();
    let conf = e.conf(Some("pod"));
    e.run("ADD", &conf).ok();
    assert!(
        e.node.qdisc(&e.pod.host_veth, "ingress").is_none(),
        "host ingress hook left free"
    );
    // The agent attaches after the pod started: it can, and it works.
    e.install_policy();
    e.policy_intact();
    e.run("CHECK", &conf).ok();
    e.assert_blocked_and_shaped();
    // A retried ADD (auto) keeps shaping inside the pod and the policy intact.
    e.run("ADD", &e.conf(None)).ok();
    e.policy_intact();
    assert!(e.pod_tbf().is_some());
    e.run("DEL", &conf).ok();
    e.policy_intact();
    assert!(e.pod_tbf().is_none());
}

#[test]
fn ifb_mode_next_to_foreign_clsact_refused_and_nothing_changes() {
    let e = setup();
    e.install_policy();
    let before = e.node.snapshot();
    let pod_before = e.pod.ns.snapshot();
    let err = e.run("ADD", &e.conf(Some("ifb"))).err(7);
    assert!(err["msg"].as_str().unwrap().contains("clsact"), "{err}");
    assert_eq!(e.node.snapshot(), before);
    assert_eq!(e.pod.ns.snapshot(), pod_before);
    assert!(e.state.files().is_empty());
    e.policy_intact();
}
