//! The figures the targets are judged on, and the verdicts. A figure is
//! None when its section did not run (a partial bench): its target then
//! reads "not measured" instead of passing or failing on a missing number.

use crate::parse::Raw;
use crate::stats::{deviation, diff, ratio};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured",
        })
    }
}

impl Verdict {
    fn of(ok: Option<bool>) -> Verdict {
        match ok {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::Missed,
            None => Verdict::NotMeasured,
        }
    }
    /// Met when every part is met; not measured when any part is missing.
    fn all(parts: &[Option<bool>]) -> Verdict {
        Verdict::of(
            parts
                .iter()
                .copied()
                .collect::<Option<Vec<bool>>>()
                .map(|v| v.iter().all(|b| *b)),
        )
    }
}

fn at_most(x: Option<f64>, limit: f64) -> Option<bool> {
    x.map(|x| x <= limit)
}

fn at_least(x: Option<f64>, limit: f64) -> Option<bool> {
    x.map(|x| x >= limit)
}

/// The worst of several values with where it was: (value, label).
pub type Worst = Option<(f64, String)>;

fn worst(items: impl Iterator<Item = (f64, String)>) -> Worst {
    items.fold(None, |w: Worst, (v, at)| match w {
        Some((m, _)) if m >= v => w,
        _ => Some((v, at)),
    })
}

/// Every number a target row or a "why missed" paragraph quotes.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub pods: u32,
    pub add_r: Option<f64>,
    pub pod_add_r: Option<f64>,
    pub tl_add_r: Option<f64>,
    pub tl_del_r: Option<f64>,
    pub del_r: Option<f64>,
    pub rss_r: Option<f64>,
    pub rss_tl_r: Option<f64>,
    pub size_r: Option<f64>,
    pub size_tl_r: Option<f64>,
    /// Our ADD alone with PODS pods / with none, and the deltas (ms).
    pub probe_r: Option<f64>,
    pub probe_delta: Option<f64>,
    pub probe_ref_r: Option<f64>,
    pub probe_ref_delta: Option<f64>,
    pub probe_ifb_delta: Option<f64>,
    pub cnirs_r: Option<f64>,
    pub cnirs_ms: Option<f64>,
    /// |wire / rate - 1| of ours, at "RATE DIR (wire ratio)".
    pub acc_worst: Worst,
    pub cl_add_r: Option<f64>,
    pub cl_pod_add_r: Option<f64>,
    /// 16 DELs together, wall ms: ours (ifb), the reference.
    pub churn_del16: Option<(f64, f64)>,
    /// 16 DELs together, wall ms: ours (pod mode), the reference (ifb).
    pub churn_pod_del16: Option<(f64, f64)>,
    pub bs_1g_r: Option<f64>,
    pub bs_line_r: Option<f64>,
    pub cl_acc_worst: Worst,
    pub cl_first_worst: Option<f64>,
    pub cl_count_worst: Option<f64>,
    /// First second / rate into the pod: [ours 10M, ours 1G, ref 10M, ref 1G].
    pub ovs_first: [Option<f64>; 4],
    /// Loaded p99 (ms) with containerd's burst at 100 Mbit/s: ours, ref.
    pub lat100_p99: (Option<f64>, Option<f64>),
    /// Configurations where our p99 is more than 5% above the reference's.
    pub lat_worse: Option<Vec<String>>,
    pub scale_r: Option<f64>,
    pub scale_rp: Option<f64>,
    pub leaks: Option<f64>,
    pub fails: Option<usize>,
    pub total_secs: Option<f64>,
    pub full_run: bool,
}

/// The three rates of sections 3 and 4: (name, bits/s).
pub const RATES: [(&str, f64); 3] = [("10M", 1e7), ("100M", 1e8), ("1G", 1e9)];

/// The latency configurations of section 5, in table order.
pub const LAT_CONFIGS: [&str; 3] = ["sentinel", "explicit", "sentinel100"];

impl Figures {
    pub fn compute(raw: &Raw) -> Figures {
        let pods = raw.facts.num("pods").unwrap_or(1000.0) as u32;
        let mut f = Figures {
            pods,
            ..Default::default()
        };
        f.invocation(raw);
        f.node(raw);
        f.traffic(raw);
        f.helpers(raw);
        f.total_secs = raw.facts.num("total_secs");
        f.full_run = (1..=11).all(|s| raw.facts.ran(s));
        f
    }

    fn invocation(&mut self, raw: &Raw) {
        let above = |k: &str| above_floor(raw, k);
        self.add_r = ratio(above("bw-add"), above("ref-bw-add"));
        self.pod_add_r = ratio(above("bw-pod-add"), above("ref-bw-add"));
        self.tl_add_r = ratio(above("tl-add"), above("tuning-add"));
        self.tl_del_r = ratio(above("tl-del"), above("tuning-del"));
        self.del_r = ratio(med(raw, "bw-del"), med(raw, "ref-bw-del"));
        let rss = |k: &str| raw.rss.get(k).map(|s| s.median);
        self.rss_r = ratio(rss("bw"), rss("ref-bw"));
        self.rss_tl_r = ratio(rss("tl"), rss("tuning"));
        let size = |k: &str| raw.facts.num(&format!("size_{k}"));
        self.size_r = ratio(size("bandwidth"), size("ref_bandwidth"));
        self.size_tl_r = ratio(size("topology_label"), size("tuning"));
    }

    fn node(&mut self, raw: &Raw) {
        let at = |k: &str| {
            (
                med(raw, &format!("{k}-at{}", self.pods)),
                med(raw, &format!("{k}-at0")),
            )
        };
        let (ours, ours0) = at("bw-add");
        let (theirs, theirs0) = at("ref-bw-add");
        let (ifb, ifb0) = at("ifb-add");
        self.probe_r = ratio(ours, ours0);
        self.probe_delta = diff(ours, ours0);
        self.probe_ref_r = ratio(theirs, theirs0);
        self.probe_ref_delta = diff(theirs, theirs0);
        self.probe_ifb_delta = diff(ifb, ifb0);
        self.cnirs_ms = med(raw, &format!("cnirs-at{}", self.pods));
        self.cnirs_r = ratio(self.cnirs_ms, med(raw, "cnirs-at1"));
        let (s, p) = (raw.scale.get("s"), raw.scale.get("p"));
        self.scale_r = s.and_then(|s| ratio(s.last10(self.pods), s.first10()));
        self.scale_rp = p.and_then(|p| ratio(p.last10(self.pods), p.first10()));
        if let (Some(s), Some(p)) = (s, p) {
            let leaks = [&s.leaks, &p.leaks].map(|l| l.as_ref().map(|v| v.iter().sum::<f64>()));
            self.leaks = leaks[0].zip(leaks[1]).map(|(a, b)| a + b);
            self.fails = Some(s.add_fail() + s.del_fail() + p.add_fail() + p.del_fail());
        }
    }

    fn traffic(&mut self, raw: &Raw) {
        let secs = raw.facts.num("secs").unwrap_or(6.0);
        let wire = wire_factor(raw);
        let ratios = RATES.iter().flat_map(|(name, bits)| {
            ["in", "out"].map(|d| {
                let steady = raw
                    .iperf
                    .get(&format!("acc-ours-{name}-{d}"))?
                    .steady_mbit(secs)?;
                Some((*name, d, steady * wire? / (bits / 1e6)))
            })
        });
        let ratios: Option<Vec<_>> = ratios.collect();
        self.acc_worst = ratios.and_then(|v| {
            worst(
                v.into_iter()
                    .map(|(n, d, w)| (deviation(w), format!("{n} {d} ({w:.4})"))),
            )
        });
        let first = |imp: &str, name: &str, bits: f64| {
            Some(raw.iperf.get(&format!("ovs-{imp}-{name}"))?.first_mbit()? / (bits / 1e6))
        };
        self.ovs_first = [
            first("ours", "10M", 1e7),
            first("ours", "1G", 1e9),
            first("ref", "10M", 1e7),
            first("ref", "1G", 1e9),
        ];
        let p99 =
            |imp: &str, cfg: &str| Some(raw.latency.get(&format!("{imp}-{cfg}"))?.loaded()?.p99);
        self.lat100_p99 = (p99("ours", "sentinel100"), p99("ref", "sentinel100"));
        // Worse = a p99 more than 5% above the reference's: two runs of one
        // layout differ by about that (TCP's window, not the queue limit,
        // bounds these p99s).
        self.lat_worse = LAT_CONFIGS
            .iter()
            .map(|c| Some((c.to_string(), p99("ours", c)? > p99("ref", c)? * 1.05)))
            .collect::<Option<Vec<_>>>()
            .map(|v| {
                v.into_iter()
                    .filter(|(_, worse)| *worse)
                    .map(|(c, _)| c)
                    .collect()
            });
    }

    fn helpers(&mut self, raw: &Raw) {
        let cost = |k: &str| raw.classes_cost.get(k).copied();
        self.cl_add_r = ratio(cost("ifb-classes-ADD"), cost("ifb-tbf-ADD"));
        self.cl_pod_add_r = ratio(cost("pod-classes-ADD"), cost("pod-tbf-ADD"));
        let shaped = || raw.classes_acc.iter().filter(|c| c.expected > 0.0);
        let label = |c: &crate::parse::helpers::ClassFlow| {
            format!("{} {} {}", c.mode, c.direction, c.class)
        };
        self.cl_acc_worst = worst(shaped().map(|c| (deviation(c.steady / c.expected), label(c))));
        // The first second against the class's ceiling: its cap, or the
        // pod's limit (200 Mbit/s in classes-accuracy.sh) for a class without one.
        let ceiling = |c: &crate::parse::helpers::ClassFlow| {
            if c.class == "crossZone" {
                c.expected
            } else {
                200e6
            }
        };
        self.cl_first_worst =
            worst(shaped().map(|c| (c.first / ceiling(c), String::new()))).map(|w| w.0);
        let counts = raw
            .classes_acc
            .iter()
            .map(|c| (deviation(c.counted / c.wire), String::new()));
        self.cl_count_worst = worst(counts).map(|w| w.0);
        let del_wall = |who: &str, mode: &str| {
            let run = raw
                .churn
                .iter()
                .find(|r| r.who == who && r.mode == mode && r.n == 16)?;
            Some(run.del.as_ref()?.wall_ms)
        };
        let reference = del_wall("reference", "ifb");
        self.churn_del16 = del_wall("ours", "ifb").zip(reference);
        self.churn_pod_del16 = del_wall("ours", "pod").zip(reference);
        if let Some(b) = &raw.backstop {
            let mean = |limit: u64, with: bool| {
                let runs = b.tcp.get(&(limit, with))?;
                Some(runs.iter().map(|r| r.0).sum::<f64>() / runs.len() as f64)
            };
            self.bs_1g_r = ratio(mean(1_000_000_000, true), mean(1_000_000_000, false));
            self.bs_line_r = ratio(mean(100_000_000_000, true), mean(100_000_000_000, false));
        }
    }
}

/// The median of a hyperfine benchmark, ms.
pub fn med(raw: &Raw, key: &str) -> Option<f64> {
    raw.hf.get(key).map(|s| s.median)
}

/// Median minus the process-start floor's median: the plugin's own work.
pub fn above_floor(raw: &Raw, key: &str) -> Option<f64> {
    diff(med(raw, key), med(raw, "floor"))
}

/// tbf meters frames on the wire, iperf3 reports TCP payload: a full
/// segment carries MTU - 52 payload bytes (IP 20, TCP 32 with timestamps)
/// in an MTU + 14 byte frame.
pub fn wire_factor(raw: &Raw) -> Option<f64> {
    let mtu = raw.facts.num("mtu")?;
    Some((mtu + 14.0) / (mtu - 52.0))
}

/// Target ids, in the order of the Targets table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Add,
    PodAdd,
    TopologyLabel,
    Del,
    Rss,
    Size,
    Probe,
    CniRs,
    Accuracy,
    ClassesAdd,
    Churn,
    ChurnPod,
    Backstop,
    ClassAccuracy,
    Overshoot,
    Latency,
    LatencyVsRef,
    Scale,
    Leaks,
    RunTime,
}

pub fn verdict(f: &Figures, t: Target) -> Verdict {
    use Target::*;
    match t {
        Add => Verdict::of(at_most(f.add_r, 0.25)),
        PodAdd => Verdict::of(at_most(f.pod_add_r, 0.15)),
        TopologyLabel => Verdict::all(&[at_most(f.tl_add_r, 0.35), at_most(f.tl_del_r, 0.35)]),
        Del => Verdict::of(at_most(f.del_r, 1.0)),
        Rss => Verdict::of(at_most(f.rss_r, 0.5)),
        Size => Verdict::of(at_most(f.size_r, 0.6)),
        Probe => Verdict::of(at_most(f.probe_r, 1.05)),
        CniRs => Verdict::all(&[at_most(f.cnirs_ms, 30.0)]),
        Accuracy => Verdict::of(at_most(f.acc_worst.as_ref().map(|w| w.0), 0.03)),
        ClassesAdd => Verdict::all(&[at_most(f.cl_add_r, 1.5), at_most(f.cl_pod_add_r, 1.5)]),
        Churn => Verdict::of(at_most(f.churn_del16.map(|(o, r)| o / r), 1.0)),
        ChurnPod => Verdict::of(at_most(f.churn_pod_del16.map(|(o, r)| o / r), 1.0)),
        Backstop => Verdict::all(&[at_least(f.bs_1g_r, 0.95), at_least(f.bs_line_r, 0.95)]),
        ClassAccuracy => Verdict::all(&[
            at_most(f.cl_acc_worst.as_ref().map(|w| w.0), 0.03),
            at_most(f.cl_first_worst, 1.1),
            at_most(f.cl_count_worst, 0.02),
        ]),
        Overshoot => Verdict::all(&[at_most(f.ovs_first[0], 1.1), at_most(f.ovs_first[1], 1.1)]),
        Latency => Verdict::of(at_most(f.lat100_p99.0, LAT_TARGET_MS)),
        LatencyVsRef => Verdict::of(f.lat_worse.as_ref().map(Vec::is_empty)),
        // The parallel phase is reported, not judged: two ADDs share two cores.
        Scale => Verdict::of(at_most(f.scale_r, 1.5)),
        // The row says "and no failures": bench.sh judged only the leaks.
        Leaks => Verdict::all(&[f.leaks.map(|l| l == 0.0), f.fails.map(|n| n == 0)]),
        // Only a whole run is judged against the whole run's budget.
        RunTime => Verdict::of(at_most(f.total_secs, 900.0).filter(|_| f.full_run)),
    }
}

/// latencyMs (25, the reference's fixed value and our default) + 5.
pub const LAT_TARGET_MS: f64 = 30.0;

#[cfg(test)]
#[path = "verdicts_tests.rs"]
mod tests;
