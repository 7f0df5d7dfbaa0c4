//! Section 6: many pods on one node.

use super::invocation::per_round;
use super::{fill, num, table, times};
use crate::parse::Raw;
use crate::parse::helpers::ScalePhase;
use crate::stats::ratio;
use crate::verdicts::{Figures, med};

/// "a / b = 1.23x" of two hyperfine medians.
fn before_after(raw: &Raw, before: &str, after: &str) -> String {
    let (b, a) = (med(raw, before), med(raw, after));
    format!("{} / {} = {}", num(b, 3), num(a, 3), times(ratio(a, b), 2))
}

fn counts(v: &Option<Vec<f64>>) -> String {
    v.as_ref().map_or("?".into(), |v| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// (label, sequential, 2-way parallel) rows of the two phases.
type Rows = Vec<(String, Vec<String>)>;

fn phase_rows(raw: &Raw, f: &Figures) -> Rows {
    let pods = f.pods;
    let none = ScalePhase::default();
    let (s, p) = (
        raw.scale.get("s").unwrap_or(&none),
        raw.scale.get("p").unwrap_or(&none),
    );
    let both = |pick: &dyn Fn(&ScalePhase) -> String| vec![pick(s), pick(p)];
    let add3 = |ph: &ScalePhase| {
        ph.add_all().map_or("?".into(), |a| {
            format!("{:.1} / {:.1} / {:.1}", a.median, a.p90, a.p99)
        })
    };
    let del2 = |ph: &ScalePhase| {
        ph.del_all()
            .map_or("?".into(), |d| format!("{:.1} / {:.1}", d.median, d.p90))
    };
    vec![
        (
            "ADD median, pods 1..10 (ms)".into(),
            both(&|ph| num(ph.first10(), 1)),
        ),
        (
            format!("ADD median, pods {}..{pods} (ms)", pods.saturating_sub(9)),
            both(&|ph| num(ph.last10(pods), 1)),
        ),
        (
            "last 10 / first 10".into(),
            vec![times(f.scale_r, 2), times(f.scale_rp, 2)],
        ),
        ("ADD median / p90 / p99, all pods (ms)".into(), both(&add3)),
        (
            format!("ADD total, {pods} pods (s)"),
            both(&|ph| num(ph.add_total_s, 2)),
        ),
        (
            "ifbs with all pods up".into(),
            both(&|ph| num(ph.ifbs_up, 0)),
        ),
        ("DEL median / p90 per pod (ms)".into(), both(&del2)),
        (
            format!("DEL total, {pods} pods (s)"),
            both(&|ph| num(ph.del_total_s, 2)),
        ),
    ]
}

/// One ADD (or `cni-rs pods`) on a node without, then with, the pods.
fn alone_rows(raw: &Raw, pods: u32) -> Rows {
    let alone = [
        (
            format!("our bandwidth ADD alone, median with 0 / {pods} other pods (ms)"),
            "bw-add",
            "0",
        ),
        ("the reference's, same (ms)".into(), "ref-bw-add", "0"),
        (
            format!("the kernel's share: `ip link add X type ifb` with 0 / {pods} other pods (ms)"),
            "ifb-add",
            "0",
        ),
        (
            format!("`cni-rs pods --json` with 1 / {pods} attachments (ms)"),
            "cnirs",
            "1",
        ),
    ];
    alone
        .into_iter()
        .map(|(label, k, from)| {
            let cell = before_after(raw, &format!("{k}-at{from}"), &format!("{k}-at{pods}"));
            (label, vec![cell, String::new()])
        })
        .collect()
}

fn leak_rows(raw: &Raw) -> Rows {
    let none = ScalePhase::default();
    let (s, p) = (
        raw.scale.get("s").unwrap_or(&none),
        raw.scale.get("p").unwrap_or(&none),
    );
    let both = |pick: &dyn Fn(&ScalePhase) -> String| vec![pick(s), pick(p)];
    let mut rows = vec![
        (
            "failed ADD / DEL".into(),
            both(&|ph| format!("{} / {}", ph.add_fail(), ph.del_fail())),
        ),
        (
            "after DEL: ifbs, links, qdiscs, state files, cache files, pod netns".into(),
            both(&|ph| counts(&ph.after_del)),
        ),
        (
            "after netns deletion (leaks)".into(),
            both(&|ph| counts(&ph.leaks)),
        ),
    ];
    if s.parked.is_some() || p.parked.is_some() {
        let parked = |ph: &ScalePhase| ph.parked.map_or("?".into(), |n| format!("{n}"));
        rows.insert(
            2,
            (
                "after DEL: parked ifbs (ifbPool: DEL parks, ADD takes; at most 16)".into(),
                both(&parked),
            ),
        );
    }
    rows
}

pub fn section6(raw: &Raw, f: &Figures) -> String {
    let pods = f.pods;
    let rows: Vec<Vec<String>> = [phase_rows(raw, f), alone_rows(raw, pods), leak_rows(raw)]
        .concat()
        .into_iter()
        .map(|(l, c)| [vec![l], c].concat())
        .collect();
    fill(
        include_str!("../../templates/s6.md"),
        &[
            ("pods", pods.to_string()),
            ("table", table(&["", "sequential", "2-way parallel"], &rows)),
            ("per_round", per_round(raw)),
        ],
    )
}
