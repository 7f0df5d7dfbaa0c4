//! What crossing zones costs: each pod's bytes by zone class, both
//! directions, and a node's summary per zone.
//!
//! AWS bills inter-AZ transfer in each direction: a GB leaving one zone
//! costs the price there and again arriving in the other. So a pod's bill
//! is its `crossZone` bytes in (ingress) plus out (egress), times the
//! price: a transfer between two pods is billed at both of them, as AWS
//! bills it twice. Bytes are what the classes count (every frame's
//! headers included: ~0.7% over the payload at MTU 9001).

use crate::text::{cell, si};
pub use crate::view::ZoneBytes;
use crate::view::{NodeView, Row};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// AWS's inter-AZ price in most regions, per GB and direction.
pub const DEFAULT_PRICE_PER_GB: f64 = 0.01;

/// The row's bytes by zone class; `None` without zone classes (subnets
/// or no classes: nothing says which zone a peer is in).
fn zone_bytes(r: &Row) -> Option<ZoneBytes> {
    let classes = || r.ingress.classes.iter().chain(&r.egress.classes);
    if !classes().any(|(name, _)| name == "crossZone") {
        return None;
    }
    let mut b = ZoneBytes::default();
    for (name, c) in classes() {
        match name.as_str() {
            "sameZone" => b.same_zone += c.bytes,
            "crossZone" => b.cross_zone += c.bytes,
            "outside" => b.outside += c.bytes,
            _ => {}
        }
    }
    Some(b)
}

/// Dollars for `bytes` of inter-AZ transfer (one direction each).
pub fn usd(bytes: u64, price_per_gb: f64) -> f64 {
    bytes as f64 / 1e9 * price_per_gb
}

/// Fills each row's zone bytes and estimated cost.
pub fn annotate(view: &mut NodeView, price_per_gb: f64) {
    for r in &mut view.rows {
        r.zone_bytes = zone_bytes(r);
        r.est_cost_usd = r.zone_bytes.map(|b| usd(b.cross_zone, price_per_gb));
    }
}

/// One zone's pods on this node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSummary {
    pub zone: String,
    pub pods: usize,
    pub bytes: ZoneBytes,
    pub est_cost_usd: f64,
    pub price_per_gb_usd: f64,
}

/// Per zone of this node's pods (the zone topology-label recorded; `-`
/// when unknown), for the pods with zone classes; stale rows left out.
/// Reads the rows' zone bytes as [`annotate`] filled them.
pub fn by_zone(view: &NodeView, price_per_gb: f64) -> Vec<ZoneSummary> {
    let mut zones: BTreeMap<String, (usize, ZoneBytes)> = BTreeMap::new();
    for r in view.rows.iter().filter(|r| r.error.is_none() && !r.stale) {
        let Some(b) = r.zone_bytes else { continue };
        let e = zones
            .entry(r.zone.clone().unwrap_or_else(|| "-".into()))
            .or_default();
        e.0 += 1;
        e.1.add(b);
    }
    zones
        .into_iter()
        .map(|(zone, (pods, bytes))| ZoneSummary {
            zone,
            pods,
            bytes,
            est_cost_usd: usd(bytes.cross_zone, price_per_gb),
            price_per_gb_usd: price_per_gb,
        })
        .collect()
}

/// The per-zone summary as an aligned table.
pub fn zones_table(zones: &[ZoneSummary], price_per_gb: f64) -> String {
    let mut out = format!(
        "{:<24} {:>5} {:>12} {:>12} {:>12} {:>12}\n",
        "ZONE", "PODS", "SAME-ZONE", "CROSS-ZONE", "OUTSIDE", "EST. COST"
    );
    for z in zones {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>12} {:>12} {:>12} {:>12}",
            cell(&z.zone),
            z.pods,
            si(z.bytes.same_zone),
            si(z.bytes.cross_zone),
            si(z.bytes.outside),
            format!("${:.4}", z.est_cost_usd),
        );
    }
    let _ = writeln!(
        out,
        "(bytes both directions, as the pods' zone classes counted them; cost = cross-zone bytes x ${price_per_gb}/GB, each direction billed)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{ClassCounters, Direction};

    fn class(bytes: u64) -> ClassCounters {
        ClassCounters {
            bytes,
            ..Default::default()
        }
    }

    fn row(zone: &str, cross_in: u64, cross_out: u64, same: u64) -> Row {
        let dir = |cross: u64| Direction {
            classes: [
                ("crossZone".to_string(), class(cross)),
                ("sameZone".to_string(), class(same)),
                ("outside".to_string(), class(1)),
            ]
            .into(),
            ..Default::default()
        };
        Row {
            zone: Some(zone.into()),
            ingress: dir(cross_in),
            egress: dir(cross_out),
            ..Default::default()
        }
    }

    #[test]
    fn both_directions_are_billed() {
        let mut view = NodeView {
            rows: vec![row("a", 2_000_000_000, 1_000_000_000, 5), Row::default()],
            ..Default::default()
        };
        annotate(&mut view, DEFAULT_PRICE_PER_GB);
        let b = view.rows[0].zone_bytes.expect("zone classes");
        assert_eq!(
            (b.cross_zone, b.same_zone, b.outside),
            (3_000_000_000, 10, 2)
        );
        assert!((view.rows[0].est_cost_usd.unwrap_or_default() - 0.03).abs() < 1e-12);
        assert_eq!(view.rows[1].zone_bytes, None, "no classes, no zone bytes");
        assert_eq!(view.rows[1].est_cost_usd, None);
    }

    #[test]
    fn zones_sum_their_pods_and_leave_stale_ones_out() {
        let mut stale = row("a", 7, 7, 7);
        stale.stale = true;
        let mut view = NodeView {
            rows: vec![
                row("b", 1, 2, 3),
                row("a", 10, 20, 30),
                row("b", 100, 0, 0),
                stale,
            ],
            ..Default::default()
        };
        annotate(&mut view, 0.02);
        let z = by_zone(&view, 0.02);
        assert_eq!(z.len(), 2);
        assert_eq!(
            (z[0].zone.as_str(), z[0].pods, z[0].bytes.cross_zone),
            ("a", 1, 30)
        );
        assert_eq!(
            (z[1].zone.as_str(), z[1].pods, z[1].bytes.cross_zone),
            ("b", 2, 103)
        );
        assert!(zones_table(&z, 0.02).contains("$0.02/GB"));
    }
}
