//! The Targets table and, for each missed target, why and what would
//! close it (templates/missed.md, one `@@ key` paragraph per target).

use super::invocation::rss;
use super::{fill, num, signed, table, times};
use crate::parse::Raw;
use crate::stats::ratio;
use crate::verdicts::{Figures, Target, Verdict, above_floor, med, verdict};

fn p90(raw: &Raw, key: &str) -> Option<f64> {
    raw.hf.get(key).map(|s| s.p90)
}

fn worst(w: &crate::verdicts::Worst, prec: usize) -> String {
    w.as_ref().map_or("?".into(), |(v, at)| {
        format!("{v:.prec$} {at}").trim_end().to_string()
    })
}

/// Two waves' wall times, ours / the reference's, and their ratio.
fn walls(w: Option<(f64, f64)>) -> String {
    w.map_or("?".into(), |(o, r)| {
        format!("{o:.1} / {r:.1} ms = {:.2}x", o / r)
    })
}

/// (target, label, measured) in the table's order.
fn rows(raw: &Raw, f: &Figures) -> Vec<(Target, String, String)> {
    let n3 = |x| num(x, 3);
    let pods = f.pods;
    let lat = |imp: &str, cfg: &str| {
        num(
            raw.latency
                .get(&format!("{imp}-{cfg}"))
                .and_then(|l| l.loaded())
                .map(|s| s.p99),
            1,
        )
    };
    let ovs = |i: usize| num(f.ovs_first[i], 2);
    let lat_worse = f.lat_worse.as_ref().map_or("?".into(), |w| {
        if w.is_empty() {
            "none".into()
        } else {
            format!("worse in: {}", w.join(", "))
        }
    });
    use Target::*;
    vec![
        (Add, "bandwidth ADD above the process-start floor <= 0.25x the reference's (ifb egress)".into(),
            format!("{} / {} ms = {}x", n3(above_floor(raw, "bw-add")), n3(above_floor(raw, "ref-bw-add")), n3(f.add_r))),
        (PodAdd, "the same, egressMode pod <= 0.15x".into(),
            format!("{} / {} ms = {}x", n3(above_floor(raw, "bw-pod-add")), n3(above_floor(raw, "ref-bw-add")), n3(f.pod_add_r))),
        (TopologyLabel, "topology-label vs tuning, ADD and DEL above the floor <= 0.35x".into(),
            format!("ADD {}x, DEL {}x", n3(f.tl_add_r), n3(f.tl_del_r))),
        (Del, "DEL no slower than the reference (median)".into(),
            format!("{} / {} ms = {}x (p90 {} / {})", n3(med(raw, "bw-del")), n3(med(raw, "ref-bw-del")), n3(f.del_r), n3(p90(raw, "bw-del")), n3(p90(raw, "ref-bw-del")))),
        (Rss, "peak RSS <= 0.5x".into(), format!("{}x (topology-label vs tuning: {}x)", n3(f.rss_r), n3(f.rss_tl_r))),
        (Size, "binary size <= 0.6x".into(), format!("{}x (topology-label vs tuning: {}x)", n3(f.size_r), n3(f.size_tl_r))),
        (Probe, format!("our ADD alone with {pods} pods on the node <= 1.05x with none"),
            format!("{}x, {} ms (reference: {}x, {} ms; `ip link add` of an ifb: {} ms)", n3(f.probe_r), signed(f.probe_delta, 2), n3(f.probe_ref_r), signed(f.probe_ref_delta, 2), signed(f.probe_ifb_delta, 2))),
        (CniRs, format!("`cni-rs pods` with {pods} attachments under 30 ms (issue 26)"), format!("{} ms ({}x with 1)", n3(f.cnirs_ms), n3(f.cnirs_r))),
        (Accuracy, "accuracy within 3% (wire / rate, all rates and directions)".into(),
            format!("worst: {}", f.acc_worst.as_ref().map_or("?", |w| w.1.as_str()))),
        (ClassesAdd, "ADD with traffic classes <= 1.5x without (same run)".into(),
            format!("ifb mode {}, pod mode {}", times(f.cl_add_r, 2), times(f.cl_pod_add_r, 2))),
        (Churn, "16 pods' DELs started together (ifb mode), wall time, no slower than the reference".into(), walls(f.churn_del16)),
        (ChurnPod, "the same in egressMode pod (with the backstop), vs the reference's ifb mode".into(), walls(f.churn_pod_del16)),
        (Backstop, "pod-mode backstop: TCP at a 1G limit and at line rate, with / without it >= 0.95x".into(),
            format!("1G {}x, line rate {}x", n3(f.bs_1g_r), n3(f.bs_line_r))),
        (ClassAccuracy, "per class: steady within 3%, first second <= 1.1x, counters within 2% of the wire".into(),
            format!("worst steady deviation {}, first second {}x of the class's ceiling, counters {}", worst(&f.cl_acc_worst, 4), n3(f.cl_first_worst), num(f.cl_count_worst, 4))),
        (Overshoot, "first-second overshoot <= 1.1x (ours, default policy)".into(),
            format!("10M: {}x, 1G: {}x (reference: {}x, {}x)", ovs(0), ovs(1), ovs(2), ovs(3))),
        (Latency, "p99 RTT under load <= latencyMs + 5 = 30 ms (containerd burst, 100 Mbit/s)".into(),
            format!("{} ms (reference: {} ms). At 10 Mbit/s (not a target: the GSO floor sets it, section 8) {} ms (reference {} ms)", lat("ours", "sentinel100"), lat("ref", "sentinel100"), lat("ours", "sentinel"), lat("ref", "sentinel"))),
        (LatencyVsRef, "latency under load: no configuration where ours has a p99 more than 5% above the reference's".into(), format!("{lat_worse} (section 5)")),
        (Scale, format!("the whole chain's ADD at pod {pods} <= 1.5x pod 1 (median of 10)"),
            format!("sequential {}, parallel {}", times(f.scale_r, 2), times(f.scale_rp, 2))),
        (Leaks, "zero leaks (and no failures)".into(),
            format!("{} leaked objects, {} failed invocations", num(f.leaks, 0), f.fails.map_or("?".into(), |n| n.to_string()))),
        (RunTime, "`scripts/bench.sh` under 15 minutes".into(), format!("{} s", num(f.total_secs, 0))),
    ]
}

pub fn targets(raw: &Raw, f: &Figures) -> String {
    // A partial run leaves out what it did not measure; a full run shows
    // a target it could not measure, so a broken section is visible.
    let judged: Vec<(Target, Verdict, Vec<String>)> = rows(raw, f)
        .into_iter()
        .map(|(t, label, measured)| (t, verdict(f, t), vec![label, measured]))
        .filter(|(_, v, _)| f.full_run || *v != Verdict::NotMeasured)
        .collect();
    let rows: Vec<Vec<String>> = judged
        .iter()
        .map(|(_, v, cells)| [cells.clone(), vec![v.to_string()]].concat())
        .collect();
    let mut out = format!(
        "## Targets\n\n{}\n",
        table(&["target", "measured", "verdict"], &rows)
    );
    let values = why_values(raw, f);
    let missed: Vec<String> = judged
        .iter()
        .filter(|(_, v, _)| *v == Verdict::Missed)
        .filter_map(|(t, _, _)| why(*t))
        .map(|text| fill(text, &values))
        .collect();
    if !missed.is_empty() {
        out.push_str("\n### Missed targets: why, and what would close them\n\n");
        out.push_str(&missed.join("\n\n"));
        out.push('\n');
    }
    out
}

/// The paragraph for a missed target; the backstop's has none (its
/// section says it).
fn why(t: Target) -> Option<&'static str> {
    use Target::*;
    let key = match t {
        Add => "add",
        PodAdd => "podadd",
        TopologyLabel => "tl",
        Del => "del",
        Rss => "rss",
        Size => "size",
        ClassAccuracy => "clacc",
        Probe => "probe",
        CniRs => "cnirs",
        LatencyVsRef => "latref",
        Accuracy => "acc",
        Overshoot => "ovs",
        Latency => "lat",
        Scale => "scale",
        Leaks => "leak",
        Churn => "churn",
        ChurnPod => "churnpod",
        RunTime => "time",
        ClassesAdd => "classes",
        Backstop => return None,
    };
    let all = include_str!("../../templates/missed.md");
    let start = all.find(&format!("@@ {key}\n"))? + key.len() + 4;
    let end = all[start..].find("\n@@ ").map_or(all.len(), |i| start + i);
    Some(all[start..end].trim())
}

/// Every hole of templates/missed.md.
fn why_values(raw: &Raw, f: &Figures) -> Vec<(&'static str, String)> {
    let n3 = |x| num(x, 3);
    let calls = |k: &str| {
        raw.strace
            .get(k)
            .map_or("?".into(), |s| s.total_calls.to_string())
    };
    let (ours_rss, noop_rss) = (rss(raw, "bw"), rss(raw, "noop"));
    let mtu = raw.facts.num("mtu");
    let ovs_worst = f.ovs_first[0].zip(f.ovs_first[1]).map(|(a, b)| a.max(b));
    vec![
        ("above_ours", n3(above_floor(raw, "bw-add"))),
        ("above_ref", n3(above_floor(raw, "ref-bw-add"))),
        ("above_pod", n3(above_floor(raw, "bw-pod-add"))),
        ("add_r", n3(f.add_r)),
        ("pod_add_r", n3(f.pod_add_r)),
        ("tl_add_r", n3(f.tl_add_r)),
        ("tl_del_r", n3(f.tl_del_r)),
        ("sc_ours_add", calls("ours-add")),
        ("sc_ref_add", calls("ref-add")),
        ("sc_ours_del", calls("ours-del")),
        ("sc_ref_del", calls("ref-del")),
        ("ifb_add", n3(med(raw, "ifb-add"))),
        ("ifb_del", n3(med(raw, "ifb-del"))),
        ("ifb_del_p90", n3(p90(raw, "ifb-del"))),
        ("pod_del", n3(med(raw, "bw-pod-del"))),
        ("churn_pod", walls(f.churn_pod_del16)),
        ("churn_ifb", walls(f.churn_del16)),
        ("cl_add_r", times(f.cl_add_r, 2)),
        ("cl_pod_add_r", times(f.cl_pod_add_r, 2)),
        (
            "pod_del_r",
            times(ratio(med(raw, "bw-pod-del"), med(raw, "ref-bw-del")), 2),
        ),
        ("rss_ours", num(ours_rss, 0)),
        ("rss_ref", num(rss(raw, "ref-bw"), 0)),
        ("rss_r", n3(f.rss_r)),
        ("rss_noop", num(noop_rss, 0)),
        (
            "rss_own",
            num(ours_rss.zip(noop_rss).map(|(a, b)| a - b), 0),
        ),
        ("size_r", n3(f.size_r)),
        ("cl_acc_worst", worst(&f.cl_acc_worst, 4)),
        ("cl_count_worst", num(f.cl_count_worst, 4)),
        ("pods", f.pods.to_string()),
        ("probe_r", n3(f.probe_r)),
        ("probe_delta", signed(f.probe_delta, 2)),
        ("probe_ref_delta", signed(f.probe_ref_delta, 2)),
        ("probe_ifb_delta", signed(f.probe_ifb_delta, 2)),
        ("cnirs_r", n3(f.cnirs_r)),
        ("cnirs_ms", n3(f.cnirs_ms)),
        (
            "lat_worse",
            f.lat_worse.as_ref().map_or("?".into(), |w| w.join(", ")),
        ),
        ("gso_floor", num(mtu.map(|m| 65536.0 + m + 14.0), 0)),
        ("mtu", num(mtu, 0)),
        (
            "acc_worst_at",
            f.acc_worst.as_ref().map_or("?".into(), |w| w.1.clone()),
        ),
        ("ovs_worst", num(ovs_worst, 2)),
        ("lat100_ours", num(f.lat100_p99.0, 1)),
        ("scale_r", num(f.scale_r, 2)),
        ("scale_rp", num(f.scale_rp, 2)),
        ("leaks", num(f.leaks, 0)),
        ("fails", f.fails.map_or("?".into(), |n| n.to_string())),
        ("scale_errors", raw.facts.text("scale_errors")),
        ("total_secs", num(f.total_secs, 0)),
    ]
}
