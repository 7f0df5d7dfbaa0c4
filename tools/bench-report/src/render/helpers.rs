//! Sections 9 (traffic classes), 10 (the pod-mode backstop) and 11 (churn
//! in parallel), measured by scripts/lib's helpers. Their code blocks keep
//! the column layout the helpers printed before this program.

use super::{fill, num, table};
use crate::parse::Raw;
use crate::stats::ratio;
use crate::verdicts::Figures;

pub fn section9(raw: &Raw, _: &Figures) -> String {
    let rows: Vec<Vec<String>> = raw
        .classes_acc
        .iter()
        .map(|c| {
            let shaped = c.expected > 0.0;
            vec![
                c.mode.clone(),
                c.direction.clone(),
                c.class.clone(),
                if shaped {
                    format!("{:.0}", c.expected / 1e6)
                } else {
                    "unshaped".into()
                },
                format!("{:.1}", c.steady / 1e6),
                if shaped {
                    format!("{:.4}", c.steady / c.expected)
                } else {
                    "-".into()
                },
                format!("{:.1}", c.first / 1e6),
                num(ratio(Some(c.counted), Some(c.wire)), 4),
            ]
        })
        .collect();
    let head = [
        "egress mode",
        "direction",
        "class",
        "expected (Mbit/s)",
        "steady (Mbit/s)",
        "steady / expected",
        "first second (Mbit/s)",
        "counted / wire",
    ];
    fill(
        include_str!("../../templates/s9.md"),
        &[
            ("runs", raw.facts.text("runs")),
            ("cost", classes_cost(raw)),
            ("secs", raw.facts.text("secs")),
            ("table", table(&head, &rows)),
        ],
    )
}

fn classes_cost(raw: &Raw) -> String {
    let ms = |k: String| raw.classes_cost.get(&k).copied();
    let mut out = vec![format!(
        "{:<34} {:>10} {:>10}",
        "configuration", "ADD ms", "DEL ms"
    )];
    for mode in ["ifb", "pod"] {
        for variant in ["tbf", "classes", "counting"] {
            let (a, d) = (
                ms(format!("{mode}-{variant}-ADD")),
                ms(format!("{mode}-{variant}-DEL")),
            );
            out.push(format!(
                "{:<34} {:>10} {:>10}",
                format!("{mode}: {variant}"),
                num(a, 3),
                num(d, 3)
            ));
        }
    }
    let f = |k: &str| raw.facts.text(&format!("classes-cost.{k}"));
    out.push(format!(
        "left on the node: {} qdiscs, {} ifbs",
        f("left_qdiscs"),
        f("left_ifbs")
    ));
    for mode in ["ifb", "pod"] {
        let r = |verb: &str| {
            let k = |v: &str| ms(format!("{mode}-{v}-{verb}"));
            num(ratio(k("classes"), k("tbf")), 2)
        };
        out.push(format!(
            "{mode} mode: ADD with classes / without = {}x, DEL {}x",
            r("ADD"),
            r("DEL")
        ));
    }
    out.join("\n")
}

pub fn section10(raw: &Raw, _: &Figures) -> String {
    let b = raw.backstop.clone().unwrap_or_default();
    let share = |v: &str| b.share.get(v).cloned();
    let (add, del) = (share("ADD"), share("DEL"));
    let traced = add.as_ref().map_or(0, |s| s.runs);
    let mut out = vec![
        format!(
            "invocation (pod mode, 1G, with the backstop): ADD {} ms, DEL {} ms (hyperfine medians, {} runs)",
            num(b.add_ms, 3),
            num(b.del_ms, 3),
            b.runs
        ),
        format!(
            "nf_tables requests (strace -T, mean of {traced}): ADD {} ms in {} calls of {} ms in all syscalls; DEL {} ms in {} calls of {} ms",
            num(add.as_ref().map(|s| s.nft_ms), 3),
            add.as_ref().map_or("?".into(), |s| s.calls.to_string()),
            num(add.as_ref().map(|s| s.all_ms), 3),
            num(del.as_ref().map(|s| s.nft_ms), 3),
            del.as_ref().map_or("?".into(), |s| s.calls.to_string()),
            num(del.as_ref().map(|s| s.all_ms), 3),
        ),
        format!(
            "release of an nf_tables socket after a deletion (slowest close() of nft delete table): {} ms",
            num(b.release_ms, 3)
        ),
        format!(
            "{:<40} {:>14} {:>14} {:>10}",
            "limit, backstop", "receiver Mb/s", "sender CPU %", "runs"
        ),
    ];
    // 1G before line rate, "with" before "without", as the helper runs them.
    let mut tcp: Vec<_> = b.tcp.iter().collect();
    tcp.sort_by_key(|((limit, with), _)| (*limit, !*with));
    for ((limit, with), runs) in tcp {
        let k = runs.len() as f64;
        let limit = if *limit >= 100_000_000_000 {
            "100G (line rate)"
        } else {
            "1G"
        };
        let label = format!("{limit}, {}", if *with { "with" } else { "without" });
        let (bps, cpu) = runs.iter().fold((0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1));
        out.push(format!(
            "{label:<40} {:>14.1} {:>14.1} {:>10}",
            bps / k / 1e6,
            cpu / k,
            runs.len()
        ));
    }
    out.push(format!(
        "left on the node: {} nft tables",
        raw.facts.text("backstop.left_tables")
    ));
    fill(
        include_str!("../../templates/s10.md"),
        &[
            ("runs", b.runs.to_string()),
            ("secs", raw.facts.text("backstop.secs")),
            ("output", out.join("\n")),
        ],
    )
}

pub fn section11(raw: &Raw, _: &Figures) -> String {
    let line = |c: [&str; 8]| {
        format!(
            "{:<34} {:>5} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
        )
    };
    let mut out = vec![line([
        "plugin, egress",
        "N",
        "ADD wall ms",
        "ADD med ms",
        "ADD p99",
        "DEL wall ms",
        "DEL med ms",
        "DEL p99",
    ])];
    for r in &raw.churn {
        let wave = |w: &Option<crate::parse::helpers::Wave>| match w {
            Some(w) => [w.wall_ms, w.calls_ms.median, w.calls_ms.p99].map(|x| format!("{x:.1}")),
            None => ["?", "?", "?"].map(String::from),
        };
        let (a, d) = (wave(&r.add), wave(&r.del));
        let who = format!("{}, {}", r.who, r.mode);
        out.push(line([
            &who,
            &r.n.to_string(),
            &a[0],
            &a[1],
            &a[2],
            &d[0],
            &d[1],
            &d[2],
        ]));
    }
    let f = |k: &str| raw.facts.text(&format!("churn.{k}"));
    out.push(format!(
        "left on the node: {} ifbs{}, {} nft tables; failed calls: {} ({} lines on stderr)",
        f("left_ifbs"),
        raw.facts
            .get("churn.parked_ifbs")
            .map_or(String::new(), |n| format!(" (and {n} parked by ifbPool)")),
        f("left_tables"),
        f("failed_calls"),
        f("stderr_lines")
    ));
    fill(
        include_str!("../../templates/s11.md"),
        &[("output", out.join("\n"))],
    )
}
