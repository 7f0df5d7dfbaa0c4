//! Sections 3 (accuracy), 4 (overshoot), 5 (latency under load) and 8
//! (the queue floor sweep): real traffic through a shaped pod.

use super::{fill, num, table, times};
use crate::parse::Raw;
use crate::stats::{Summary, nearest_rank, ratio};
use crate::verdicts::{Figures, LAT_CONFIGS, RATES, wire_factor};

fn secs(raw: &Raw) -> f64 {
    raw.facts.num("secs").unwrap_or(6.0)
}

fn steady(raw: &Raw, tag: &str) -> Option<f64> {
    raw.iperf.get(tag)?.steady_mbit(secs(raw))
}

pub fn section3(raw: &Raw, _: &Figures) -> String {
    let wire = wire_factor(raw);
    let mut rows = Vec::new();
    for (name, bits) in RATES {
        let mbit = Some(bits / 1e6);
        for (dir, label) in [("in", "into the pod"), ("out", "out of the pod")] {
            for (imp, plugin) in [("ours", "ours"), ("ref", "reference")] {
                let s = steady(raw, &format!("acc-{imp}-{name}-{dir}"));
                let on_wire = s.zip(wire).map(|(s, w)| s * w);
                rows.push(vec![
                    label.to_string(),
                    name.to_string(),
                    num(s, 1),
                    num(ratio(s, mbit), 3),
                    num(ratio(on_wire, mbit), 3),
                    plugin.to_string(),
                ]);
            }
        }
    }
    let head = [
        "direction",
        "rate",
        "steady goodput (Mbit/s)",
        "goodput / rate",
        "wire / rate",
        "plugin",
    ];
    let mtu = raw.facts.num("mtu");
    fill(
        include_str!("../../templates/s3.md"),
        &[
            ("iperf3", raw.facts.text("iperf3")),
            ("secs", raw.facts.text("secs")),
            ("unshaped_steady", num(steady(raw, "unshaped"), 2)),
            ("mtu", raw.facts.text("mtu")),
            ("payload", num(mtu.map(|m| m - 52.0), 0)),
            ("frame", num(mtu.map(|m| m + 14.0), 0)),
            ("wire", num(wire, 5)),
            ("table", table(&head, &rows)),
            ("per_second", per_second(raw)),
        ],
    )
}

/// Every run's per-second receiver throughput, one decimal, as jq wrote
/// it before (an integer without ".0").
fn per_second(raw: &Raw) -> String {
    let fmt = |x: f64| {
        let x = (x * 10.0).round() / 10.0;
        if x.fract() == 0.0 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    raw.iperf
        .iter()
        .map(|(tag, r)| {
            let v: Vec<String> = r.per_second_mbit().into_iter().map(fmt).collect();
            format!("{tag:<22} {}", v.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn section4(raw: &Raw, f: &Figures) -> String {
    let mean = |imp: &str, name: &str, bits: f64| {
        ratio(
            raw.iperf.get(&format!("ovs-{imp}-{name}"))?.mean_mbit(),
            Some(bits / 1e6),
        )
    };
    let row = |name: &str, bits: f64, i: usize| {
        vec![
            name.to_string(),
            times(f.ovs_first[i], 2),
            times(f.ovs_first[i + 2], 2),
            times(mean("ours", name, bits), 2),
            times(mean("ref", name, bits), 2),
        ]
    };
    let s = raw.facts.text("secs");
    let (m1, m2) = (
        format!("ours: {s} s mean / rate"),
        format!("reference: {s} s mean / rate"),
    );
    let head = [
        "rate",
        "ours: first second / rate",
        "reference: first second / rate",
        &m1,
        &m2,
    ];
    let unshaped_first = raw.iperf.get("unshaped").and_then(|r| r.first_mbit());
    fill(
        include_str!("../../templates/s4.md"),
        &[
            ("secs", s.clone()),
            ("ours_tbf_10m", raw.facts.text("ours_tbf_10m")),
            ("ref_tbf_10m", raw.facts.text("ref_tbf_10m")),
            (
                "table",
                table(&head, &[row("10M", 1e7, 0), row("1G", 1e9, 1)]),
            ),
            ("unshaped_first", num(unshaped_first, 2)),
        ],
    )
}

pub fn section5(raw: &Raw, _: &Figures) -> String {
    let labels = [
        "containerd burst (u32::MAX)",
        "explicit burst 25 ms",
        "100 Mbit/s, containerd burst",
    ];
    let mut rows = Vec::new();
    for (cfg, label) in LAT_CONFIGS.iter().zip(labels) {
        for (imp, plugin) in [("ours", "ours"), ("ref", "reference")] {
            let l = raw.latency.get(&format!("{imp}-{cfg}"));
            let loaded = l.and_then(|l| l.loaded());
            let field = |pick: fn(&Summary) -> f64| num(loaded.as_ref().map(pick), 1);
            rows.push(vec![
                label.to_string(),
                plugin.to_string(),
                num(l.and_then(|l| l.idle_median()), 3),
                field(|s| s.median),
                field(|s| s.p99),
                field(|s| s.max),
                format!("{}%", num(l.map(|l| l.loss_pct()), 0)),
            ]);
        }
    }
    let head = [
        "config",
        "plugin",
        "idle p50 (ms)",
        "loaded p50 (ms)",
        "loaded p99 (ms)",
        "max (ms)",
        "ping loss",
    ];
    let floor = raw.facts.num("mtu").map(|m| 65536.0 + m + 14.0);
    fill(
        include_str!("../../templates/s5.md"),
        &[
            ("lat_secs", raw.facts.text("lat_secs")),
            ("table", table(&head, &rows)),
            ("gso_floor", num(floor, 0)),
            ("mtu", raw.facts.text("mtu")),
            ("gso_floor_ms", num(floor.map(|b| b * 8.0 / 10_000.0), 0)),
        ],
    )
}

pub fn section8(raw: &Raw, _: &Figures) -> String {
    let rate = raw.facts.num("sweep_rate").unwrap_or(1e7);
    let rows: Vec<Vec<String>> = raw
        .sweep
        .iter()
        .map(|r| {
            let m = f64::from(r.mtu);
            let best = rate * (m - 52.0) / (m + 14.0);
            let mut pings = r.ping.times_ms.clone();
            pings.sort_by(f64::total_cmp);
            // A sample, printed as ping printed it (its precision varies).
            let pct = |p: usize| {
                if pings.is_empty() {
                    "-".into()
                } else {
                    format!("{}", nearest_rank(&pings, p))
                }
            };
            let mark = if r.limit == 62_500 {
                "the reference's queue"
            } else if r.limit == 65_536 + u64::from(r.mtu) + 14 {
                "ours"
            } else {
                ""
            };
            vec![
                r.mtu.to_string(),
                r.limit.to_string(),
                format!("{:.0}", r.limit as f64 * 8000.0 / rate),
                num(r.goodput.map(|g| g / 1e6), 2),
                r.goodput
                    .map_or("-".into(), |g| format!("{:.1}%", 100.0 * g / best)),
                pct(50),
                pct(99),
                mark.to_string(),
            ]
        })
        .collect();
    let head = [
        "MTU",
        "queue (bytes)",
        "queue at the rate (ms)",
        "goodput (Mbit/s)",
        "of the most TCP can carry",
        "ping p50 (ms)",
        "ping p99 (ms)",
        "",
    ];
    fill(
        include_str!("../../templates/s8.md"),
        &[("table", table(&head, &rows))],
    )
}
