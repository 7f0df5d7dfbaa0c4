//! The three ways to print a [`NodeView`]: an aligned table for people,
//! JSON for scripts, and the Prometheus text format for node_exporter's
//! textfile collector.

use crate::text::{cell, si};
use crate::view::{ClassCounters, Direction, NodeView, Row};
use std::fmt::Write as _;

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), si)
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn who(r: &Row) -> String {
    match (&r.namespace, &r.pod) {
        (Some(ns), Some(p)) => format!("{ns}/{p}"),
        _ => "-".to_string(),
    }
}

fn dir_cells(d: &Direction) -> [String; 4] {
    [
        opt(d.rate_bits_per_second),
        opt(d.bytes),
        opt(d.drops),
        opt(d.overlimits),
    ]
}

/// The aligned table, one row per attachment; problems after it.
pub fn table(view: &NodeView) -> String {
    let header = [
        "NAMESPACE/POD",
        "CONTAINER",
        "IF",
        "ZONE",
        "HOST VETH",
        "EGRESS",
        "IN RATE",
        "IN BYTES",
        "IN DROPS",
        "IN OVERLIM",
        "OUT RATE",
        "OUT BYTES",
        "OUT DROPS",
        "OUT OVERLIM",
        "X-ZONE",
        "EST. COST",
        "",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in view.rows.iter().filter(|r| r.error.is_none()) {
        lines.push(row_cells(r).iter().map(|c| cell(c)).collect());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let row: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(row.join("  ").trim_end());
        out.push('\n');
    }
    for r in view.rows.iter().filter_map(|r| r.error.as_ref()) {
        let _ = writeln!(out, "! unreadable state: {}", cell(r));
    }
    for p in &view.problems {
        let _ = writeln!(out, "! {}", cell(p));
    }
    out
}

/// One attachment's cells, unescaped, in the table's column order.
fn row_cells(r: &Row) -> Vec<String> {
    let mut cells = vec![
        who(r),
        r.container_id.as_deref().map_or("-".into(), short_id),
        r.ifname.clone().unwrap_or_else(|| "-".into()),
        r.zone.clone().unwrap_or_else(|| "-".into()),
        r.host_veth.clone().unwrap_or_else(|| "-".into()),
        r.egress_mode.clone().unwrap_or_else(|| "-".into()),
    ];
    cells.extend(dir_cells(&r.ingress));
    cells.extend(dir_cells(&r.egress));
    cells.push(r.zone_bytes.map_or("-".into(), |b| si(b.cross_zone)));
    cells.push(r.est_cost_usd.map_or("-".into(), |c| format!("${c:.4}")));
    cells.push(if r.stale {
        "stale".into()
    } else {
        String::new()
    });
    cells
}

/// Below this many rows one thread writes the array: a second one costs
/// more to start than it saves.
const JSON_SPLIT_ROWS: usize = 256;

/// About what one row takes pretty-printed, to size the buffer once.
const JSON_ROW_BYTES: usize = 640;

/// The rows as a pretty JSON array and a newline (problems go to stderr,
/// not into the array). On a big node this is the view's largest serial
/// step (~6 ms of 1000 rows), so the two halves are written side by side
/// and joined.
pub fn json(view: &NodeView) -> String {
    let rows = &view.rows;
    let text = if rows.len() < JSON_SPLIT_ROWS {
        pretty_array(rows)
    } else {
        let (a, b) = rows.split_at(rows.len() / 2);
        let (a, b) = std::thread::scope(|s| {
            let b = s.spawn(|| pretty_array(b));
            (pretty_array(a), b.join().unwrap_or_default())
        });
        join_pretty_arrays(a, &b)
    };
    let mut text = String::from_utf8(text).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// `rows` as serde_json's pretty array (empty on a serialisation error,
/// which derived impls of plain data do not have).
fn pretty_array(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * JSON_ROW_BYTES + 2);
    if serde_json::to_writer_pretty(&mut out, rows).is_err() {
        out.clear();
    }
    out
}

/// Two pretty arrays of non-empty halves as the pretty array of both: the
/// first up to its closing `"\n]"`, a comma, then the second after its `[`
/// (each element is indented the same in both).
fn join_pretty_arrays(mut a: Vec<u8>, b: &[u8]) -> Vec<u8> {
    let well_formed = a.ends_with(b"\n]") && b.starts_with(b"[\n");
    if !well_formed {
        return b"[]".to_vec();
    }
    a.truncate(a.len() - 2);
    a.reserve(b.len());
    a.push(b',');
    a.extend_from_slice(&b[1..]);
    a
}

/// A label value in the text format: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format, following its naming rules:
/// counters end in `_total`, the configured rate is a gauge in base units
/// (bits per second), every family has HELP and TYPE.
pub fn prometheus(view: &NodeView, price_per_gb: f64) -> String {
    let mut out = String::new();
    // Unreadable and stale attachments have no counters to trust: they are
    // only counted, by the last family.
    let rows: Vec<&Row> = view
        .rows
        .iter()
        .filter(|r| r.error.is_none() && !r.stale)
        .collect();
    write_direction_families(&mut out, &rows);
    write_class_families(&mut out, &rows);
    write_unreadable_attachments(&mut out, view);
    // Dollars are computed where the bytes are summed, in PromQL
    // (docs/operating.md): the price is a sample to multiply by.
    write_family_header(
        &mut out,
        "cni_rs_inter_az_price_usd_per_gb",
        "gauge",
        "The inter-AZ transfer price per GB and direction cni-rs was given (--price-per-gb): multiply cross-zone class bytes by it.",
    );
    let _ = writeln!(out, "cni_rs_inter_az_price_usd_per_gb {price_per_gb}");
    out
}

/// The families with one sample per attachment and direction: what the
/// host veth (or its ifb's root) counted, what the shaper did, the configured rate.
fn write_direction_families(out: &mut String, rows: &[&Row]) {
    type Get = fn(&Direction) -> Option<u64>;
    let families: [(&str, &str, &str, Get); 5] = [
        (
            "cni_rs_bytes_total",
            "counter",
            "Bytes the pod received (ingress) or sent past its shaper (egress), as the kernel counts them on its host veth (or the root qdisc of its ifb).",
            |d| d.bytes,
        ),
        (
            "cni_rs_packets_total",
            "counter",
            "Packets the pod received (ingress) or sent past its shaper (egress); a GSO super-packet counts once.",
            |d| d.packets,
        ),
        (
            "cni_rs_drops_total",
            "counter",
            "Packets the pod's shaper dropped because its queue was full.",
            |d| d.drops,
        ),
        (
            "cni_rs_overlimits_total",
            "counter",
            "Times a packet of the pod had to wait for tokens: the pod was at its limit.",
            |d| d.overlimits,
        ),
        (
            "cni_rs_rate_bits_per_second",
            "gauge",
            "The rate the pod is shaped to, as given to the kernel.",
            |d| d.rate_bits_per_second,
        ),
    ];
    for (name, kind, help, get) in families {
        write_family_header(out, name, kind, help);
        for r in rows {
            let pod = pod_labels(r);
            for (direction, d) in [("ingress", &r.ingress), ("egress", &r.egress)] {
                // A counter that could not be read has no sample, rather
                // than a made-up zero.
                if let Some(v) = get(d) {
                    let _ = writeln!(out, "{name}{{{pod},direction=\"{direction}\"}} {v}");
                }
            }
        }
    }
}

/// Per traffic class: what each class's leaf sent, so a dashboard can
/// sum cross-zone bytes per pod or namespace.
fn write_class_families(out: &mut String, rows: &[&Row]) {
    type Get = fn(&ClassCounters) -> u64;
    let families: [(&str, &str, Get); 2] = [
        (
            "cni_rs_class_bytes_total",
            "Bytes of the pod per traffic class (sameZone, crossZone, outside; shaped/unshaped for subnets) and direction, every frame's headers included.",
            |c| c.bytes,
        ),
        (
            "cni_rs_class_drops_total",
            "Packets of the pod dropped in one traffic class's queue.",
            |c| c.drops,
        ),
    ];
    for (name, help, get) in families {
        write_family_header(out, name, "counter", help);
        for r in rows {
            let pod = pod_labels(r);
            for (direction, d) in [("ingress", &r.ingress), ("egress", &r.egress)] {
                for (class, c) in &d.classes {
                    let _ = writeln!(
                        out,
                        "{name}{{{pod},direction=\"{direction}\",class=\"{}\"}} {}",
                        label(class),
                        get(c)
                    );
                }
            }
        }
    }
}

/// What could not be read is a metric too, so an alert can see it.
fn write_unreadable_attachments(out: &mut String, view: &NodeView) {
    write_family_header(
        out,
        "cni_rs_unreadable_attachments",
        "gauge",
        "Attachments whose state file could not be read, or whose devices are gone.",
    );
    let bad = view
        .rows
        .iter()
        .filter(|r| r.error.is_some() || r.stale)
        .count();
    let _ = writeln!(out, "cni_rs_unreadable_attachments {bad}");
}

/// A family's `# HELP` and `# TYPE` lines, which precede its samples.
fn write_family_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The labels that say whose sample it is (namespace, pod, interface,
/// zone), escaped; an unknown one is empty, so every sample of a family
/// has the same label names.
fn pod_labels(r: &Row) -> String {
    format!(
        "namespace=\"{}\",pod=\"{}\",interface=\"{}\",zone=\"{}\"",
        label(r.namespace.as_deref().unwrap_or("")),
        label(r.pod.as_deref().unwrap_or("")),
        label(r.ifname.as_deref().unwrap_or("")),
        label(r.zone.as_deref().unwrap_or("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows that differ, some with classes and an error, to tell halves apart.
    fn numbered_rows(n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| {
                let mut r = Row {
                    pod: Some(format!("pod-{i}")),
                    stale: i % 3 == 0,
                    error: (i % 7 == 0).then(|| format!("broken \"{i}\"")),
                    ..Default::default()
                };
                r.ingress.bytes = Some(i as u64);
                if i % 5 == 0 {
                    r.egress
                        .classes
                        .insert("crossZone".into(), ClassCounters::default());
                }
                r
            })
            .collect()
    }

    #[test]
    fn json_in_two_halves_is_the_one_pretty_array() {
        for n in [
            0,
            1,
            2,
            JSON_SPLIT_ROWS - 1,
            JSON_SPLIT_ROWS,
            JSON_SPLIT_ROWS + 1,
            1001,
        ] {
            let view = NodeView {
                rows: numbered_rows(n),
                ..Default::default()
            };
            let whole = serde_json::to_string_pretty(&view.rows).unwrap() + "\n";
            assert_eq!(json(&view), whole, "{n} rows");
        }
    }

    #[test]
    fn si_units_read_like_annotations() {
        assert_eq!(si(10_000_000), "10M");
        assert_eq!(si(1_500_000_000), "1.5G");
        assert_eq!(si(812_345), "812k");
        assert_eq!(si(999), "999");
    }

    #[test]
    fn table_cells_escape_control_characters_and_keep_unicode() {
        assert_eq!(cell("web\nx\ty\rz"), "web\\nx\\ty\\rz");
        assert_eq!(cell("a\u{1b}[31mb\u{7f}\0"), "a\\x1b[31mb\\x7f\\x00");
        assert_eq!(
            cell("c1\u{85}bidi\u{202e}zw\u{200b}"),
            "c1\\u{85}bidi\\u{202e}zw\\u{200b}"
        );
        assert_eq!(cell("back\\slash"), "back\\\\slash");
        assert_eq!(cell("zone-é-東京-🙂"), "zone-é-東京-🙂");
    }

    #[test]
    fn a_hostile_pod_name_stays_on_its_row() {
        let hostile = Row {
            namespace: Some("ns\ttab".into()),
            pod: Some("evil\npod\u{1b}[2J".into()),
            container_id: Some("c1".into()),
            ifname: Some("eth0".into()),
            zone: Some("z\r".into()),
            ..Default::default()
        };
        let plain = Row {
            namespace: Some("shop".into()),
            pod: Some("web".into()),
            container_id: Some("c2".into()),
            ..Default::default()
        };
        let broken = Row {
            error: Some("/run/x\ny: bad".into()),
            ..Default::default()
        };
        let view = NodeView {
            rows: vec![hostile, plain, broken],
            anything_read: true,
            problems: vec!["kernel\u{1b}]0;x\u{7}".into()],
        };
        let text = table(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "header, two rows, two problems: {text:?}");
        assert!(
            lines[1].starts_with("ns\\ttab/evil\\npod\\x1b[2J  c1"),
            "{text:?}"
        );
        assert!(lines[2].starts_with("shop/web"), "{text:?}");
        assert_eq!(lines[3], "! unreadable state: /run/x\\ny: bad");
        assert_eq!(lines[4], "! kernel\\x1b]0;x\\x07");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        // Columns stay aligned: every row's second cell starts where the
        // header's does.
        let col = lines[0].find("CONTAINER").unwrap();
        assert_eq!(&lines[1][col..col + 2], "c1", "{text:?}");
        assert_eq!(&lines[2][col..col + 2], "c2", "{text:?}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn prometheus_has_help_type_and_one_sample_per_direction() {
        let mut r = Row {
            namespace: Some("shop".into()),
            pod: Some("web".into()),
            ifname: Some("eth0".into()),
            ..Default::default()
        };
        r.ingress.bytes = Some(5);
        r.egress.bytes = Some(6);
        r.ingress.rate_bits_per_second = Some(10);
        let view = NodeView {
            rows: vec![r],
            anything_read: true,
            problems: vec![],
        };
        let text = prometheus(&view, 0.01);
        assert!(text.contains("# TYPE cni_rs_bytes_total counter"));
        assert!(text.contains(
            "cni_rs_bytes_total{namespace=\"shop\",pod=\"web\",interface=\"eth0\",zone=\"\",direction=\"egress\"} 6"
        ));
        assert_eq!(text.matches("cni_rs_rate_bits_per_second{").count(), 1);
        assert!(text.contains("cni_rs_unreadable_attachments 0\n"));
        assert!(text.ends_with("cni_rs_inter_az_price_usd_per_gb 0.01\n"));
    }
}
