//! Namespace policy (a LimitRange for bandwidth): defaults for pods that
//! ask for nothing, maxima for pods that ask for too much, exempt
//! namespaces, and the `"*"` fallback, checked in the kernel and with real
//! traffic (one measurement at a time: two cores).

use integration_tests::*;
use serde_json::{Value, json};

const NET: &str = "policy-net";
const M: u64 = 1_000_000;

/// Seconds per flow. Not 5: the kernel's cleanup of earlier tests'
/// namespaces runs in the background on this 2-core machine and took two
/// of five seconds of a 20 Mbit/s flow in one CI run (0.9575x steady with
/// 0.99x on either side); the median over 7 seconds after the first rides
/// that out without widening the 3% bound.
const SECONDS: u32 = 8;

fn policy() -> Value {
    json!({
        "tenant-a": {"default": {"ingressRate": 50 * M, "egressRate": 50 * M},
                     "max": {"ingressRate": 80 * M, "egressRate": 80 * M}},
        "kube-system": {"exempt": true},
        "*": {"default": {"ingressRate": 20 * M, "egressRate": 20 * M}}
    })
}

struct World {
    node: Netns,
    pod: Pod,
    state: TempDir,
}

fn world() -> World {
    let node = Netns::new("npn").unwrap();
    let pod = Pod::new(&node).unwrap();
    pod.set_mtu(&node, 9001).unwrap();
    World {
        node,
        pod,
        state: TempDir::new("npst"),
    }
}

impl World {
    /// The config; `annotated` is the rate containerd would pass from the
    /// pod's annotations (both directions), if any.
    fn conf(&self, annotated: Option<u64>) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": NET, "type": "bandwidth",
            "capabilities": {"bandwidth": true}, "stateDir": self.state.str(),
            "namespacePolicy": policy(),
            "prevResult": self.pod.prev_result("1.0.0"),
        });
        if let Some(r) = annotated {
            c["runtimeConfig"] = json!({"bandwidth": {"IngressRate": r, "IngressBurst": 4_294_967_295u64,
                                                      "EgressRate": r, "EgressBurst": 4_294_967_295u64}});
        }
        c
    }

    /// `CNI_ARGS` with `namespace` (none: no K8S_POD_NAMESPACE at all).
    fn env(&self, command: &str, namespace: Option<&str>) -> Vec<(String, String)> {
        let args = match namespace {
            Some(ns) => format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME=web"),
            None => "IgnoreUnknown=1".to_string(),
        };
        with_env(self.pod.env(command), "CNI_ARGS", &args)
    }

    fn run(&self, command: &str, namespace: Option<&str>, conf: &Value) -> Outcome {
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&self.node),
            &self.env(command, namespace),
            conf.to_string().as_bytes(),
        )
    }

    /// The tbf rates, bits/s: into the pod (host veth) and out of it (ifb).
    fn rates(&self) -> (Option<u64>, Option<u64>) {
        let rate = |dev: &str| {
            self.node
                .qdisc(dev, "tbf")
                .and_then(|q| q["options"]["rate"].as_u64())
                .map(|b| b * 8)
        };
        let ifb = self
            .node
            .link_names()
            .into_iter()
            .find(|l| l.starts_with("bwp"));
        (rate(&self.pod.host_veth), ifb.and_then(|i| rate(&i)))
    }

    fn measure_into_pod(&self) -> Throughput {
        iperf(&self.pod.ns, &self.pod.pod_ip, &self.node, SECONDS).unwrap()
    }

    fn measure_out_of_pod(&self) -> Throughput {
        iperf(&self.node, &self.pod.host_ip, &self.pod.ns, SECONDS).unwrap()
    }

    fn state_text(&self) -> String {
        files_under(&self.state.path)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

#[test]
fn unannotated_pod_gets_the_namespace_default() {
    let _serial = serial();
    let w = world();
    let c = w.conf(None);
    w.run("ADD", Some("tenant-a"), &c).ok();
    assert_eq!(w.rates(), (Some(50 * M), Some(50 * M)));
    assert!(
        w.state_text().contains("\"defaulted\": true"),
        "{}",
        w.state_text()
    );
    w.measure_into_pod()
        .assert_shaped(50 * M, "default, into the pod");
    w.measure_out_of_pod()
        .assert_shaped(50 * M, "default, out of the pod");
    w.run("CHECK", Some("tenant-a"), &c).ok();
    w.run("DEL", Some("tenant-a"), &c).ok();
    assert_eq!(w.rates(), (None, None));
}

#[test]
fn annotated_above_the_max_is_capped_and_check_follows_the_cap() {
    let _serial = serial();
    let w = world();
    let c = w.conf(Some(200 * M));
    let out = w.run("ADD", Some("tenant-a"), &c).ok();
    assert_eq!(w.rates(), (Some(80 * M), Some(80 * M)));
    for word in ["tenant-a", "web", "200000000", "80000000"] {
        assert!(
            out.stderr.contains(word),
            "the warning names {word}: {}",
            out.stderr
        );
    }
    let state = w.state_text();
    assert!(
        state.contains("\"capped\": true") && state.contains("\"asked\": 200000000"),
        "{state}"
    );
    w.measure_into_pod()
        .assert_shaped(80 * M, "capped, into the pod");
    w.run("CHECK", Some("tenant-a"), &c).ok();
    // The tbf changed to what was asked: CHECK sees the difference.
    w.node
        .exec(&[
            "tc",
            "qdisc",
            "change",
            "dev",
            &w.pod.host_veth,
            "root",
            "handle",
            "1:",
            "tbf",
            "rate",
            "200mbit",
            "burst",
            "625000",
            "limit",
            "625000",
        ])
        .unwrap();
    w.run("CHECK", Some("tenant-a"), &c).err(101);
    w.run("DEL", Some("tenant-a"), &c).ok();
}

/// `runtimeBurst: honor` keeps a runtime's 512 MiB bucket; a rate the max
/// lowers gets a bucket that fits the lowered rate (here the default, 25 ms
/// at 80 Mbit/s), not seconds at line rate.
#[test]
fn capped_rate_gets_a_bucket_that_fits_it() {
    let _serial = serial();
    let w = world();
    let mut c = w.conf(Some(20_000 * M));
    c["runtimeBurst"] = json!("honor");
    w.run("ADD", Some("tenant-a"), &c).ok();
    assert_eq!(w.rates(), (Some(80 * M), Some(80 * M)));
    let ifb = w
        .node
        .link_names()
        .into_iter()
        .find(|l| l.starts_with("bwp"))
        .unwrap();
    for dev in [w.pod.host_veth.as_str(), ifb.as_str()] {
        let tbf = w.node.qdisc(dev, "tbf").unwrap();
        assert_eq!(
            tbf["options"]["burst"].as_u64(),
            Some(250_000),
            "{dev}: 25 ms at 80 Mbit/s, not the asked 512 MiB: {tbf}"
        );
    }
    w.run("CHECK", Some("tenant-a"), &c).ok();
    w.run("DEL", Some("tenant-a"), &c).ok();
    // Not capped: the honoured burst stays as asked.
    let c = {
        let mut c = w.conf(Some(30 * M));
        c["runtimeBurst"] = json!("honor");
        c
    };
    w.run("ADD", Some("tenant-a"), &c).ok();
    let tbf = w.node.qdisc(&w.pod.host_veth, "tbf").unwrap();
    // 512 MiB, as the kernel reports it back (its tick rounding).
    let burst = tbf["options"]["burst"].as_u64().unwrap_or_default();
    assert!(burst.abs_diff(536_870_912) < 1024, "{tbf}");
    w.run("DEL", Some("tenant-a"), &c).ok();
    assert_eq!(w.rates(), (None, None));
}

#[test]
fn below_the_max_keeps_its_own_rate() {
    let _serial = serial();
    let w = world();
    let c = w.conf(Some(30 * M));
    w.run("ADD", Some("tenant-a"), &c).ok();
    assert_eq!(w.rates(), (Some(30 * M), Some(30 * M)));
    w.measure_into_pod()
        .assert_shaped(30 * M, "below the max, into the pod");
    w.run("DEL", Some("tenant-a"), &c).ok();
}

#[test]
fn exempt_namespace_is_as_without_a_policy() {
    let _serial = serial();
    let w = world();
    let before = w.node.snapshot();
    let c = w.conf(None);
    let out = w.run("ADD", Some("kube-system"), &c).ok();
    assert_eq!(w.rates(), (None, None));
    assert_eq!(w.node.snapshot(), before, "nothing installed");
    assert_eq!(out.json()["interfaces"].as_array().unwrap().len(), 2);
    let c = w.conf(Some(200 * M));
    w.run("ADD", Some("kube-system"), &c).ok();
    assert_eq!(w.rates(), (Some(200 * M), Some(200 * M)), "no max either");
    w.run("DEL", Some("kube-system"), &c).ok();
}

#[test]
fn star_applies_to_unlisted_namespaces_and_to_calls_without_one() {
    let _serial = serial();
    let w = world();
    let c = w.conf(None);
    w.run("ADD", Some("team-b"), &c).ok();
    assert_eq!(w.rates(), (Some(20 * M), Some(20 * M)));
    w.measure_into_pod()
        .assert_shaped(20 * M, "\"*\", into the pod");
    w.run("DEL", Some("team-b"), &c).ok();
    w.run("ADD", None, &c).ok();
    assert_eq!(w.rates(), (Some(20 * M), Some(20 * M)));
    w.measure_out_of_pod()
        .assert_shaped(20 * M, "\"*\" without a namespace, out of the pod");
    w.run("DEL", None, &c).ok();
    assert_eq!(w.rates(), (None, None));
}
