//! BENCHMARKS.md from the raw measurements. Fixed prose lives in
//! `templates/` with `{{name}}` holes; tables and figures are made here.
//! A section that did not run is left out, so a partial bench still
//! renders (its header says which sections it has).

mod helpers;
mod invocation;
mod scale;
mod targets;
mod traffic;

use crate::parse::Raw;
use crate::verdicts::Figures;

/// One section's text from the run's measurements and figures.
type Section = fn(&Raw, &Figures) -> String;

/// The whole report.
pub fn report(raw: &Raw) -> String {
    let f = Figures::compute(raw);
    let sections: [(u32, Section); 11] = [
        (1, invocation::section1),
        (2, invocation::section2),
        (3, traffic::section3),
        (4, traffic::section4),
        (5, traffic::section5),
        (6, scale::section6),
        (7, invocation::section7),
        (8, traffic::section8),
        (9, helpers::section9),
        (10, helpers::section10),
        (11, helpers::section11),
    ];
    let mut parts = vec![header(raw)];
    for (n, render) in sections {
        if raw.facts.ran(n) {
            parts.push(render(raw, &f));
        }
    }
    parts.push(targets::targets(raw, &f));
    parts.push(include_str!("../../templates/reproduce.md").to_string());
    let mut out = parts
        .iter()
        .map(|p| p.trim_end())
        .collect::<Vec<_>>()
        .join("\n\n");
    out.push('\n');
    out
}

/// Put `values` into a template's `{{name}}` holes. A hole left open is a
/// bug in this program: it panics, and the fixture test catches it.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(i) = out.find("{{") {
        panic!(
            "template hole not filled: {}",
            &out[i..out.len().min(i + 40)]
        );
    }
    out
}

/// `x` with `prec` decimals, or "?" when it was not measured.
pub fn num(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "?".to_string(), |x| format!("{x:.prec$}"))
}

/// A difference with its sign: "+2.65", "-0.19".
pub fn signed(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "?".to_string(), |x| format!("{x:+.prec$}"))
}

/// A ratio as the tables write it: "0.44x".
pub fn times(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}x"))
}

/// A markdown table: header cells, then rows.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    let mut out = format!("{}\n|{}\n", row(&head), "---|".repeat(head.len()));
    for r in rows {
        out.push_str(&row(r));
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// One table row; an empty cell is "| |".
fn row(cells: &[String]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.is_empty() {
                " ".into()
            } else {
                format!(" {c} ")
            }
        })
        .collect();
    format!("|{}|", cells.join("|"))
}

fn header(raw: &Raw) -> String {
    let t = |k: &str| raw.facts.text(k);
    let contended = raw.facts.get("contended").filter(|c| !c.is_empty());
    let contention = contended.map_or_else(
        || "no other build ran during the measurements".to_string(),
        |c| format!("**a cargo build was running during: {c}** (timings are noisier than usual)"),
    );
    let mut rows = vec![
        vec!["date".into(), t("date")],
        vec!["kernel".into(), t("kernel")],
        vec!["CPU".into(), format!("{} ({} cores)", t("cpu"), t("ncpu"))],
        vec![
            "ours".into(),
            format!(
                "commit {}, {}: the release as shipped (`scripts/release.sh`: static musl, profile dist = release + opt-level z, LTO, codegen-units 1, panic=abort, strip)",
                t("commit"),
                t("rustc")
            ),
        ],
        vec![
            "reference".into(),
            format!(
                "Debian containernetworking-plugins {} (`/usr/lib/cni/bandwidth`, `/usr/lib/cni/tuning`; CNI versions {})",
                t("refver"),
                t("ref_cni")
            ),
        ],
        vec![
            "tools".into(),
            format!("hyperfine {}, iperf3 {}", t("hyperfine"), t("iperf3")),
        ],
        vec![
            "run".into(),
            format!("{} s end to end; {contention}", t("total_secs")),
        ],
    ];
    if !(1..=11).all(|s| raw.facts.ran(s)) {
        let ran = raw
            .facts
            .get("sections")
            .unwrap_or("none")
            .replace(' ', ", ");
        rows.push(vec!["sections".into(), format!("{ran} only (a partial run, `--sections`; its figures are not comparable with a full run's)")]);
    }
    fill(
        include_str!("../../templates/header.md"),
        &[("facts_table", table(&["", ""], &rows)), ("mtu", t("mtu"))],
    )
}
