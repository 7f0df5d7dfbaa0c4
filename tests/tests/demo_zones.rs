//! `scripts/demo.sh --zones`, shortened (30 requests of 300 kB): the
//! cross-AZ walkthrough runs, leaves nothing behind, and its summary holds
//! up. The bytes cni-rs counted agree with what the client received and
//! the backends sent within 2%; the hinted run crosses no zone; the random
//! run's cross-zone share follows its request split; under the node's
//! cross-zone cap cross-zone transfers stay within it while same-zone ones
//! do not slow down.

use integration_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const CAP_BITS: f64 = 16e6;

fn demo_namespaces() -> usize {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let name = l.split_whitespace().next().unwrap_or("");
            name.strip_prefix("cz")
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(pid, _)| pid.chars().all(|c| c.is_ascii_digit()))
        })
        .count()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Within 2%: the bytes cni-rs counted at the client, and at the
/// backends, against what the client received.
fn counted_agrees(name: &str, run: &Value) {
    let received = num(run, "bytes_received_by_client");
    let at_client = num(run, "client_counted_bytes");
    let at_backends: f64 = run["pods"]
        .as_object()
        .expect("pods")
        .iter()
        .filter(|(pod, _)| pod.starts_with("backend-"))
        .map(|(_, p)| num(p, "same_zone_bytes") + num(p, "cross_zone_bytes"))
        .sum();
    for (what, counted) in [("client", at_client), ("backends", at_backends)] {
        let off = (counted / received - 1.0).abs();
        assert!(
            off < 0.02,
            "{name}: counted at the {what} {counted} vs received {received} ({off:.4})"
        );
    }
}

#[test]
fn cross_az_walkthrough_counts_and_prices_what_crossed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = TempDir::new("demo-zones");
    let (json, svg) = (out.path.join("zones.json"), out.path.join("zones.svg"));
    let bins = plugin_bin("cni-rs");
    let before = demo_namespaces();
    let status = Command::new(root.join("scripts/demo.sh"))
        .args([
            "--zones",
            "--requests",
            "30",
            "--payload",
            "300000",
            "--cap",
            "16M",
        ])
        .arg("--out")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .env("DEMO_BIN_DIR", bins.parent().expect("bin dir"))
        .status()
        .expect("run the demo");
    assert!(status.success(), "demo --zones failed: {status}");
    assert_eq!(demo_namespaces(), before, "the demo left namespaces behind");
    assert!(
        std::fs::read_to_string(&svg)
            .expect("chart")
            .contains("<svg")
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("summary")).expect("JSON");
    let runs = &summary["runs"];
    for name in ["random", "hinted", "capped"] {
        counted_agrees(name, &runs[name]);
    }

    let hinted = &runs["hinted"];
    assert_eq!(
        num(hinted, "cross_zone_bytes"),
        0.0,
        "hinted crossed a zone: {hinted}"
    );
    assert_eq!(num(hinted, "est_cost_usd"), 0.0);
    assert_eq!(hinted["requests_by_zone"]["ap-northeast-2a"], 30);

    let random = &runs["random"];
    let by_zone = random["requests_by_zone"]
        .as_object()
        .expect("requests_by_zone");
    let total: f64 = by_zone.values().filter_map(Value::as_f64).sum();
    let local = by_zone["ap-northeast-2a"].as_f64().unwrap_or_default();
    let asked = 1.0 - local / total;
    let (cross, same) = (
        num(random, "cross_zone_bytes"),
        num(random, "same_zone_bytes"),
    );
    let share = cross / (cross + same);
    assert!(
        (share - asked).abs() < 0.05,
        "random: cross-zone bytes {share:.3} vs requests {asked:.3}"
    );
    let price = num(&summary, "price_per_gb_usd");
    assert!((num(random, "est_cost_usd") - cross / 1e9 * price).abs() < 1e-12);

    let capped = &runs["capped"];
    let cross_rate = num(capped, "cross_zone_rate_bits");
    let same_rate = num(capped, "same_zone_rate_bits");
    assert!(
        cross_rate <= CAP_BITS * 1.1,
        "capped: cross-zone at {cross_rate} bit/s, cap {CAP_BITS}"
    );
    assert!(
        cross_rate >= CAP_BITS * 0.5,
        "capped: cross-zone at {cross_rate} bit/s, far under the cap"
    );
    assert!(
        same_rate > CAP_BITS * 3.0,
        "capped: same-zone slowed to {same_rate} bit/s"
    );
}
