//! Renders the report from a small real run (tests/fixtures/raw, see
//! README.md) and checks key lines: a figure from each section's own
//! statistics, each verdict, and that the report keeps BENCHMARKS.md's
//! sections in order.

use std::path::Path;

fn report() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/raw");
    bench_report::report(&dir).expect("the fixture renders")
}

fn has(report: &str, line: &str) {
    assert!(
        report.lines().any(|l| l == line),
        "missing line:\n{line}\nin:\n{report}"
    );
}

#[test]
fn every_section_renders_its_figures() {
    let r = report();
    for line in [
        "| run | 478 s end to end; no other build ran during the measurements |",
        // 1: medians and p90 pooled over three rounds, above the floor
        "| bandwidth ADD (ingress + egress) | 2.578 | 3.441 | 4.922 | 5.845 | 0.52x | 1.204 / 3.548 | 0.34x |",
        "| **floor**: with-stdin + static no-op (subtracted above) | 1.375 | 1.521 |",
        // 2: the median of five GNU time peaks
        "| bandwidth peak RSS (KiB) | 1948 | 4312 | 0.45x |",
        // 3, 4: iperf3's intervals, steady and the first second
        "| into the pod | 1G | 992.3 | 0.992 | 1.000 | ours |",
        "acc-ours-10M-in        10.1 10 9.3 10.5",
        "| 10M | 1.01x | 154.12x | 1.00x | 29.95x |",
        // 5: ping percentiles and loss
        "| 100 Mbit/s, containerd burst | ours | 0.066 | 7.7 | 21.8 | 21.8 | 0% |",
        // 6: per-pod times, hyperfine probes, leak counts
        "| ADD median / p90 / p99, all pods (ms) | 22.3 / 23.4 / 26.4 | 47.2 / 57.3 / 69.8 |",
        "| `cni-rs pods --json` with 1 / 20 attachments (ms) | 0.590 / 2.022 = 3.43x | |",
        "| after netns deletion (leaks) | 0, 0, 0, 0, 0, 0 | 0, 0, 0, 0, 0, 0 |",
        // 7: strace -c, the six most called
        "| ours ADD (ifb) | 166 | 0.09 | recvfrom 24, sendto 18, close 12, open 11, fcntl 9, rt_sigprocmask 8 |",
        // 8: goodput after the first second, nearest-rank pings
        "| 9001 | 74551 | 60 | 9.81 | 98.8% | 22.4 | 56.3 | ours |",
        // 9: the helpers' layout, now computed here
        "ifb: classes                            3.628     18.163",
        "ifb mode: ADD with classes / without = 1.16x, DEL 0.87x",
        "| pod | ingress | crossZone | 20 | 19.9 | 0.9952 | 20.6 | 1.0125 |",
        // 10, 11
        "1G, with                                          998.6            1.0          3",
        "ours, ifb                             16        103.5         65.4       92.1         95.3         69.8       86.2",
        "left on the node: 0 ifbs, 0 nft tables; failed calls: 0 (0 lines on stderr)",
    ] {
        has(&r, line);
    }
    assert!(!r.contains("{{"), "a template hole is left");
}

#[test]
fn targets_and_verdicts() {
    let r = report();
    for line in [
        "| bandwidth ADD above the process-start floor <= 0.25x the reference's (ifb egress) | 1.204 / 3.548 ms = 0.339x | **missed** |",
        "| peak RSS <= 0.5x | 0.452x (topology-label vs tuning: 0.431x) | met |",
        "| our ADD alone with 20 pods on the node <= 1.05x with none | 0.930x, -0.19 ms (reference: 0.948x, -0.27 ms; `ip link add` of an ifb: +0.37 ms) | met |",
        "| `cni-rs pods` with 20 attachments under 30 ms (issue 26) | 2.022 ms (3.430x with 1) | met |",
        "| 16 pods' DELs started together (ifb mode), wall time, no slower than the reference | 95.3 / 123.9 ms = 0.77x | met |",
        "| the same in egressMode pod (with the backstop), vs the reference's ifb mode | 188.2 / 123.9 ms = 1.52x | **missed** |",
        "| pod-mode backstop: TCP at a 1G limit and at line rate, with / without it >= 0.95x | 1G 1.000x, line rate 1.017x | met |",
        "| latency under load: no configuration where ours has a p99 more than 5% above the reference's | worse in: explicit, sentinel100 (section 5) | **missed** |",
        "| zero leaks (and no failures) | 0 leaked objects, 0 failed invocations | met |",
        "| `scripts/bench.sh` under 15 minutes | 478 s | met |",
    ] {
        has(&r, line);
    }
    // One paragraph per missed target that has one, none for a met one.
    let why = r
        .split("### Missed targets")
        .nth(1)
        .expect("missed targets");
    for missed in [
        "bandwidth ADD above the floor",
        "ADD in egressMode pod",
        "DEL vs the reference",
        "Binary size",
        "Latency vs the reference",
        "16 DELs together in egressMode pod",
    ] {
        assert!(
            why.contains(&format!("- **{missed}")),
            "no paragraph for {missed}"
        );
    }
    assert!(!why.contains("**Peak RSS.**"));
    assert!(!why.contains("**cni-rs pods at"), "met in the fixture");
    assert_eq!(
        why.matches("\n- **").count() + usize::from(why.starts_with("- **")),
        6
    );
}

#[test]
fn sections_as_in_benchmarks_md() {
    // The repository's BENCHMARKS.md is this program's output; its "##"
    // headings are the sections, in order (the pod count aside).
    let headings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("## "))
            .map(|l| {
                if l.starts_with("## 6. Scale: ") {
                    "## 6. Scale".into()
                } else {
                    l.to_string()
                }
            })
            .collect()
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    let checked_in = std::fs::read_to_string(repo).expect("BENCHMARKS.md");
    assert_eq!(headings(&report()), headings(&checked_in));
}
