//! Shaping verified with real traffic: iperf3 between a pod and its node,
//! both directions, at 10M, 100M and 1G, with containerd's payload
//! (u32::MAX "unlimited" bursts). Steady state must be within 3% of the
//! rate and the first second within 1.1x (the reference lets ~3x through at
//! 1G and ~27x at 10M). Runs one measurement at a time: two cores.
//!
//! tbf meters bytes on the wire (Ethernet + IP + TCP headers included), as
//! the reference does; iperf3 reports TCP payload. Pods here use the AWS
//! VPC MTU of 9001, where headers cost 0.7% (at MTU 1500 they cost 4.4%,
//! and iperf3 shows 0.956x of the rate while the wire runs at 1.00x).

use integration_tests::*;
use serde_json::json;

const SECONDS: u32 = 5;

fn shaped_run(rate: u64) {
    let _serial = serial();
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    pod.set_mtu(&node, 9001).unwrap();
    let state = TempDir::new("bwst");
    let conf = json!({
        "cniVersion": "0.4.0", "name": "traffic-net", "type": "bandwidth",
        "capabilities": {"bandwidth": true}, "stateDir": state.str(),
        "runtimeConfig": {"bandwidth": {"IngressRate": rate, "IngressBurst": 4_294_967_295u64, "EgressRate": rate, "EgressBurst": 4_294_967_295u64}},
        "prevResult": pod.prev_result("0.4.0"),
    });
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&node),
        &pod.env("ADD"),
        conf.to_string().as_bytes(),
    )
    .ok();
    let into_pod = iperf(&pod.ns, &pod.pod_ip, &node, SECONDS).unwrap();
    let out_of_pod = iperf(&node, &pod.host_ip, &pod.ns, SECONDS).unwrap();
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(&node),
        &pod.env("DEL"),
        conf.to_string().as_bytes(),
    )
    .ok();
    into_pod.assert_shaped(rate, &format!("{rate} into pod"));
    out_of_pod.assert_shaped(rate, &format!("{rate} out of pod"));
}

#[test]
fn shaped_10m() {
    shaped_run(10_000_000);
}

#[test]
fn shaped_100m() {
    shaped_run(100_000_000);
}

#[test]
fn shaped_1g() {
    shaped_run(1_000_000_000);
}
