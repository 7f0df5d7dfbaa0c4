//! Sections 1 (invocation wall time), 2 (peak RSS and size) and 7
//! (syscalls): one invocation of a plugin, ours against the reference.

use super::{fill, num, table, times};
use crate::parse::Raw;
use crate::stats::ratio;
use crate::verdicts::{Figures, above_floor, med};

fn p90(raw: &Raw, key: &str) -> Option<f64> {
    raw.hf.get(key).map(|s| s.p90)
}

/// Runs per round: the rounds split `--runs`, rounded up.
pub fn per_round(raw: &Raw) -> String {
    let runs = raw.facts.num("runs").unwrap_or(60.0);
    let rounds = raw.facts.num("rounds").unwrap_or(3.0);
    format!("{}", (runs / rounds).ceil())
}

pub fn section1(raw: &Raw, _: &Figures) -> String {
    let t = |k: &str| raw.facts.text(k);
    let inv = |label: &str, ours: &str, theirs: &str| {
        vec![
            label.to_string(),
            num(med(raw, ours), 3),
            num(p90(raw, ours), 3),
            num(med(raw, theirs), 3),
            num(p90(raw, theirs), 3),
            times(ratio(med(raw, ours), med(raw, theirs)), 2),
            format!(
                "{} / {}",
                num(above_floor(raw, ours), 3),
                num(above_floor(raw, theirs), 3)
            ),
            times(ratio(above_floor(raw, ours), above_floor(raw, theirs)), 2),
        ]
    };
    let invocation = table(
        &[
            "invocation (ms)",
            "ours median",
            "ours p90",
            "reference median",
            "reference p90",
            "ratio (median)",
            "above floor: ours / ref",
            "ratio above floor",
        ],
        &[
            inv("bandwidth ADD (ingress + egress)", "bw-add", "ref-bw-add"),
            inv("bandwidth DEL", "bw-del", "ref-bw-del"),
            inv("topology-label ADD vs tuning ADD", "tl-add", "tuning-add"),
            inv("topology-label DEL vs tuning DEL", "tl-del", "tuning-del"),
        ],
    );
    let (before, after) = (tl_state(&t("tl_before")), tl_state(&t("tl_after")));
    fill(
        include_str!("../../templates/s1.md"),
        &[
            ("hyperfine", t("hyperfine")),
            ("runs", t("runs")),
            ("rounds", t("rounds")),
            ("per_round", per_round(raw)),
            ("warmup", t("warmup")),
            ("ref_cni", t("ref_cni")),
            ("layout_ours_add", t("layout_ours_add")),
            ("layout_ref_add", t("layout_ref_add")),
            ("layout_ours_reset", t("layout_ours_reset")),
            ("invocation_table", invocation),
            ("tl_sysctl_key", t("tl_sysctl_key")),
            ("tl_before_mtus", before.0),
            ("tl_before_arp", before.1),
            ("tl_after_mtus", after.0),
            ("tl_after_arp", after.1),
            ("tl_alias", after.2),
            ("variants_table", variants(raw)),
            ("context_table", context(raw)),
        ],
    )
}

/// "POD_MTU HOST_MTU ARP_IGNORE ALIAS..." -> ("POD / HOST", arp, alias).
fn tl_state(s: &str) -> (String, String, String) {
    let w: Vec<&str> = s.split_whitespace().collect();
    let at = |i: usize| w.get(i).copied().unwrap_or("?").to_string();
    (
        format!("{} / {}", at(0), at(1)),
        at(2),
        w.get(3..).map_or("?".into(), |a| a.join(" ")),
    )
}

fn variants(raw: &Raw) -> String {
    let var = |label: &str, add: &str, del: &str| {
        vec![
            label.to_string(),
            num(med(raw, add), 3),
            num(p90(raw, add), 3),
            times(
                ratio(above_floor(raw, add), above_floor(raw, "ref-bw-add")),
                2,
            ),
            num(med(raw, del), 3),
            num(p90(raw, del), 3),
            times(ratio(med(raw, del), med(raw, "ref-bw-del")), 2),
        ]
    };
    table(
        &[
            "ours, variant (ms)",
            "ADD median",
            "ADD p90",
            "ADD above floor / reference's",
            "DEL median",
            "DEL p90",
            "DEL / reference's",
        ],
        &[
            var(
                "default (ifb, stateDir on tmpfs), as above",
                "bw-add",
                "bw-del",
            ),
            var("stateDir on disk", "bw-shm-add", "bw-shm-del"),
            var("egressMode pod", "bw-pod-add", "bw-pod-del"),
            var(
                "ifbPool 0 (DEL deletes its ifb, ADD creates one)",
                "bw-nopool-add",
                "bw-nopool-del",
            ),
        ],
    )
}

fn context(raw: &Raw) -> String {
    let rows = [
        ("static no-op, exec'd directly", "noop"),
        (
            "**floor**: with-stdin + static no-op (subtracted above)",
            "floor",
        ),
        ("floor again, at the end of the section", "floor-again"),
        (
            "with-stdin + the same no-op linked dynamically (glibc)",
            "floor-dyn",
        ),
        (
            "kernel: `ip link add X type ifb` (ip's own start included)",
            "ifb-add",
        ),
        (
            "kernel: `ip link del X` (an ifb; ip's own start included)",
            "ifb-del",
        ),
        (
            "kernel: `tc qdisc del dev VETH root` (a tbf; tc's start included)",
            "tbf-del",
        ),
        (
            "kernel: `tc qdisc del dev VETH ingress` (tc's start included)",
            "ingress-del",
        ),
    ];
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, k)| vec![label.to_string(), num(med(raw, k), 3), num(p90(raw, k), 3)])
        .collect();
    table(&["command (ms)", "median", "p90"], &rows)
}

/// Peak RSS median, KiB.
pub fn rss(raw: &Raw, key: &str) -> Option<f64> {
    raw.rss.get(key).map(|s| s.median)
}

pub fn section2(raw: &Raw, _: &Figures) -> String {
    let size = |k: &str| raw.facts.num(&format!("size_{k}"));
    let row = |label: &str, ours: Option<f64>, theirs: Option<f64>| {
        vec![
            label.to_string(),
            num(ours, 0),
            num(theirs, 0),
            times(ratio(ours, theirs), 2),
        ]
    };
    let rows = [
        row(
            "bandwidth peak RSS (KiB)",
            rss(raw, "bw"),
            rss(raw, "ref-bw"),
        ),
        row(
            "topology-label vs tuning peak RSS (KiB)",
            rss(raw, "tl"),
            rss(raw, "tuning"),
        ),
        row(
            "bandwidth binary (bytes)",
            size("bandwidth"),
            size("ref_bandwidth"),
        ),
        row(
            "topology-label vs tuning binary (bytes)",
            size("topology_label"),
            size("tuning"),
        ),
    ];
    fill(
        include_str!("../../templates/s2.md"),
        &[
            ("table", table(&["", "ours", "reference", "ratio"], &rows)),
            ("linkage_ours", linkage(&raw.facts.text("file_bandwidth"))),
            (
                "linkage_ref",
                linkage(&raw.facts.text("file_ref_bandwidth")),
            ),
            ("rss_noop", num(rss(raw, "noop"), 0)),
            ("rss_noop_dyn", num(rss(raw, "noop-dyn"), 0)),
        ],
    )
}

/// From `file -b`: "static-pie linked, stripped".
pub fn linkage(file: &str) -> String {
    let linked = [
        "static-pie linked",
        "statically linked",
        "dynamically linked",
    ]
    .into_iter()
    .find(|l| file.contains(l))
    .unwrap_or("?");
    let stripped = if file.contains("not stripped") {
        "not stripped"
    } else {
        "stripped"
    };
    format!("{linked}, {stripped}")
}

pub fn section7(raw: &Raw, _: &Figures) -> String {
    let runs = [
        ("ours-add", "ours ADD (ifb)"),
        ("ours-pod-add", "ours ADD (egressMode pod)"),
        ("ref-add", "reference ADD"),
        ("ours-del", "ours DEL (ifb)"),
        ("ref-del", "reference DEL"),
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|(k, label)| match raw.strace.get(*k) {
            Some(s) => vec![
                label.to_string(),
                s.total_calls.to_string(),
                format!("{:.2}", s.total_seconds * 1000.0),
                s.top(6)
                    .iter()
                    .map(|(n, c)| format!("{n} {c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
            None => vec![label.to_string(), "?".into(), "?".into(), "?".into()],
        })
        .collect();
    let head = [
        "invocation",
        "syscalls",
        "time in syscalls (ms, traced)",
        "most frequent",
    ];
    fill(
        include_str!("../../templates/s7.md"),
        &[("table", table(&head, &rows))],
    )
}
