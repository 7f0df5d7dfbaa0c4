//! The raw files of the sections measured by bench.sh's helpers and loops:
//! latency pings, the scale run's per-pod times, the queue sweep, traffic
//! classes (cost and accuracy), churn waves and the pod-mode backstop.

use super::tools::{self, Iperf, Ping};
use super::{Facts, files, read};
use crate::stats::{Summary, median};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Section 5: one configuration's pings, idle and under load.
#[derive(Debug, Clone)]
pub struct Latency {
    pub idle: Ping,
    pub loaded: Ping,
}

impl Latency {
    pub fn idle_median(&self) -> Option<f64> {
        median(&self.idle.times_ms)
    }
    pub fn loaded(&self) -> Option<Summary> {
        Summary::of(&self.loaded.times_ms)
    }
    /// Lost pings, percent of those sent (500 asked when ping said nothing).
    pub fn loss_pct(&self) -> f64 {
        let sent = self.loaded.transmitted.unwrap_or(500) as f64;
        let got = self.loaded.times_ms.len() as f64;
        if sent == 0.0 {
            100.0
        } else {
            100.0 * (sent - got) / sent
        }
    }
}

/// `latency/TAG.idle` and `latency/TAG.loaded`: ping's output as is.
pub fn latency_dir(dir: &Path) -> Result<BTreeMap<String, Latency>> {
    let mut out = BTreeMap::new();
    for (tag, path) in files(dir, ".loaded")? {
        let idle = read(&dir.join(format!("{tag}.idle"))).unwrap_or_default();
        let loaded = tools::ping(&read(&path)?);
        out.insert(
            tag,
            Latency {
                idle: tools::ping(&idle),
                loaded,
            },
        );
    }
    Ok(out)
}

/// Section 6: one phase (sequential or parallel) of the scale run.
#[derive(Debug, Clone, Default)]
pub struct ScalePhase {
    /// (pod index, exit code, ms) of each `cni-run add`.
    pub add: Vec<(u32, i32, f64)>,
    pub del: Vec<(u32, i32, f64)>,
    pub add_total_s: Option<f64>,
    pub del_total_s: Option<f64>,
    pub ifbs_up: Option<f64>,
    pub after_del: Option<Vec<f64>>,
    /// The bandwidth plugin's parked ifbs after DEL (its ifbPool): not
    /// leaks, bounded by the pool's size.
    pub parked: Option<f64>,
    pub leaks: Option<Vec<f64>>,
}

impl ScalePhase {
    fn times(calls: &[(u32, i32, f64)], keep: impl Fn(u32) -> bool) -> Vec<f64> {
        calls.iter().filter(|c| keep(c.0)).map(|c| c.2).collect()
    }
    /// Median ADD of pods 1..10.
    pub fn first10(&self) -> Option<f64> {
        median(&Self::times(&self.add, |i| i <= 10))
    }
    /// Median ADD of the last ten pods.
    pub fn last10(&self, pods: u32) -> Option<f64> {
        median(&Self::times(&self.add, |i| i + 10 > pods))
    }
    pub fn add_all(&self) -> Option<Summary> {
        Summary::of(&Self::times(&self.add, |_| true))
    }
    pub fn del_all(&self) -> Option<Summary> {
        Summary::of(&Self::times(&self.del, |_| true))
    }
    pub fn add_fail(&self) -> usize {
        self.add.iter().filter(|c| c.1 != 0).count()
    }
    pub fn del_fail(&self) -> usize {
        self.del.iter().filter(|c| c.1 != 0).count()
    }
}

/// `scale/PHASE.add|del` ("INDEX EXIT_CODE MICROSECONDS" lines) and the
/// phase's facts (`scale_PHASE_add_span T0 T1`, `..._ifbs_up`, leaks).
pub fn scale_dir(dir: &Path, facts: &Facts) -> Result<BTreeMap<String, ScalePhase>> {
    let calls = |text: &str| -> Vec<(u32, i32, f64)> {
        let one = |l: &str| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.parse::<f64>().ok()? / 1000.0,
            ))
        };
        text.lines().filter_map(one).collect()
    };
    let span = |key: String| {
        facts
            .nums(&key)
            .filter(|v| v.len() == 2)
            .map(|v| v[1] - v[0])
    };
    let mut out = BTreeMap::new();
    for (ph, path) in files(dir, ".add")? {
        let del = read(&dir.join(format!("{ph}.del"))).unwrap_or_default();
        let phase = ScalePhase {
            add: calls(&read(&path)?),
            del: calls(&del),
            add_total_s: span(format!("scale_{ph}_add_span")),
            del_total_s: span(format!("scale_{ph}_del_span")),
            ifbs_up: facts.num(&format!("scale_{ph}_ifbs_up")),
            after_del: facts.nums(&format!("scale_{ph}_after_del")),
            parked: facts.num(&format!("scale_{ph}_parked")),
            leaks: facts.nums(&format!("scale_{ph}_leaks")),
        };
        out.insert(ph, phase);
    }
    Ok(out)
}

/// Section 8: one (MTU, queue limit) run of the queue sweep.
#[derive(Debug, Clone)]
pub struct SweepRun {
    pub mtu: u32,
    pub limit: u64,
    /// After the first second (the bucket's burst), bits/s.
    pub goodput: Option<f64>,
    pub ping: Ping,
}

/// `sweep/MTU-LIMIT.json` (iperf3 client) and `sweep/MTU-LIMIT.ping`.
pub fn sweep_dir(dir: &Path) -> Result<Vec<SweepRun>> {
    let mut out = Vec::new();
    for (stem, path) in files(dir, ".ping")? {
        let (mtu, limit) = stem.split_once('-').context("sweep file not MTU-LIMIT")?;
        let goodput = read(&dir.join(format!("{stem}.json")))
            .ok()
            .and_then(|t| tools::iperf(&t).ok())
            .and_then(|r| tools::rate_of(r.intervals.iter().skip(1)));
        out.push(SweepRun {
            mtu: mtu.parse()?,
            limit: limit.parse()?,
            goodput,
            ping: tools::ping(&read(&path)?),
        });
    }
    out.sort_by_key(|r| (r.mtu, r.limit));
    Ok(out)
}

/// Section 9: `classes-cost/MODE-VARIANT-VERB.json` hyperfine exports ->
/// median ms by "MODE-VARIANT-VERB".
pub fn classes_cost_dir(dir: &Path) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for (key, path) in files(dir, ".json")? {
        let times = tools::hyperfine_times_ms(&read(&path)?)
            .with_context(|| format!("in {}", path.display()))?;
        if let Some(m) = median(&times) {
            out.insert(key, m);
        }
    }
    Ok(out)
}

/// Section 9: one class's flow in one direction and egress mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFlow {
    pub mode: String,
    pub direction: String,
    pub class: String,
    /// What the config gives the class, bits/s; 0 = unshaped.
    pub expected: f64,
    /// Median second after the first, at the receiver (TCP payload).
    pub steady: f64,
    pub first: f64,
    pub counted: f64,
    pub wire: f64,
}

/// Header bytes per full segment at MTU 9001 (Ethernet 14, IP 20, TCP 32
/// with timestamps) over its payload: what the class counter sees on top
/// of what iperf3 reports into the pod.
const INGRESS_WIRE_PER_PAYLOAD: f64 = 1.0 + 66.0 / 8949.0;

/// `classes-accuracy/MODE/counts` lines "DIRECTION I CLASS EXPECTED
/// COUNTED_BEFORE COUNTED_AFTER RX_BEFORE RX_AFTER", and the receiver's
/// iperf3 report of flow I in `classes-accuracy/MODE/DIRECTION-I.json`.
pub fn classes_acc_dir(dir: &Path) -> Result<Vec<ClassFlow>> {
    let mut out = Vec::new();
    for mode in ["ifb", "pod"] {
        let Ok(counts) = read(&dir.join(mode).join("counts")) else {
            continue;
        };
        for line in counts.lines().filter(|l| !l.trim().is_empty()) {
            let w: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(w.len() == 8, "classes-accuracy counts line: {line}");
            let n = |i: usize| w[i].parse::<f64>().with_context(|| format!("in {line}"));
            let report = tools::iperf(&read(
                &dir.join(mode).join(format!("{}-{}.json", w[0], w[1])),
            )?)?;
            out.push(class_flow(
                mode,
                &w,
                &report,
                [n(3)?, n(4)?, n(5)?, n(6)?, n(7)?],
            ));
        }
    }
    Ok(out)
}

fn class_flow(mode: &str, w: &[&str], report: &Iperf, n: [f64; 5]) -> ClassFlow {
    let [expected, counted_before, counted_after, rx_before, rx_after] = n;
    let secs: Vec<f64> = report
        .intervals
        .iter()
        .filter(|i| i.seconds > 0.5)
        .skip(1)
        .map(|i| i.bits_per_second)
        .collect();
    let wire = if w[0] == "egress" {
        rx_after - rx_before
    } else {
        (report.received_bytes.unwrap_or(0.0) * INGRESS_WIRE_PER_PAYLOAD).round()
    };
    ClassFlow {
        mode: mode.to_string(),
        direction: w[0].to_string(),
        class: w[2].to_string(),
        expected,
        steady: median(&secs).unwrap_or(0.0),
        first: report.intervals.first().map_or(0.0, |i| i.bits_per_second),
        counted: counted_after - counted_before,
        wire,
    }
}

/// Section 11: one wave of N calls started together.
#[derive(Debug, Clone)]
pub struct Wave {
    pub wall_ms: f64,
    pub calls_ms: Summary,
}

#[derive(Debug, Clone)]
pub struct ChurnRun {
    pub who: String,
    pub mode: String,
    pub n: u32,
    pub add: Option<Wave>,
    pub del: Option<Wave>,
}

/// `churn/WHO-MODE-N-VERB.calls` (ns per call) and `.wall` ("T0 T1" ns),
/// in the order the helper runs them: by N, then ours ifb, ours pod, the
/// reference.
pub fn churn_dir(dir: &Path) -> Result<Vec<ChurnRun>> {
    let wave = |stem: &str| -> Result<Option<Wave>> {
        let Ok(calls) = read(&dir.join(format!("{stem}.calls"))) else {
            return Ok(None);
        };
        let wall = tools::numbers(&read(&dir.join(format!("{stem}.wall")))?.replace(' ', "\n"));
        let ms: Vec<f64> = tools::numbers(&calls).iter().map(|ns| ns / 1e6).collect();
        Ok(match (wall.as_slice(), Summary::of(&ms)) {
            ([t0, t1], Some(s)) => Some(Wave {
                wall_ms: (t1 - t0) / 1e6,
                calls_ms: s,
            }),
            _ => None,
        })
    };
    let mut out = Vec::new();
    for (stem, _) in files(dir, "-ADD.calls")? {
        let mut w = stem.splitn(3, '-');
        let (Some(who), Some(mode), Some(n)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        out.push(ChurnRun {
            who: who.to_string(),
            mode: mode.to_string(),
            n: n.parse().with_context(|| format!("churn file {stem}"))?,
            add: wave(&format!("{stem}-ADD"))?,
            del: wave(&format!("{stem}-DEL"))?,
        });
    }
    let order = |r: &ChurnRun| (r.n, r.who != "ours", r.mode != "ifb");
    out.sort_by_key(order);
    Ok(out)
}

/// One verb's time in nf_tables requests against all its syscalls, means
/// over the traced runs (`strace -T`).
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub nft_ms: f64,
    pub all_ms: f64,
    /// Requests on the nf_tables socket in one run (the last).
    pub calls: usize,
    pub runs: usize,
}

/// Section 10's measurements.
#[derive(Debug, Clone, Default)]
pub struct Backstop {
    pub add_ms: Option<f64>,
    pub del_ms: Option<f64>,
    pub runs: usize,
    /// Per verb, where its syscall time goes.
    pub share: BTreeMap<String, Share>,
    pub release_ms: Option<f64>,
    /// (limit in bits/s, with the backstop) -> (receiver bits/s, sender
    /// CPU %) per run.
    pub tcp: BTreeMap<(u64, bool), Vec<(f64, f64)>>,
}

/// `backstop/`: `hf-ADD.json`, `hf-DEL.json`, `strace-VERB-K.txt`
/// (`strace -f -T -yy`), `close.txt` (`strace -T -e trace=close` of nft)
/// and `iperf-LIMIT-with|without-ROUND.json` (the pod's client report).
pub fn backstop_dir(dir: &Path) -> Result<Option<Backstop>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let hf = |verb: &str| -> Result<Vec<f64>> {
        read(&dir.join(format!("hf-{verb}.json")))
            .map_or(Ok(Vec::new()), |t| tools::hyperfine_times_ms(&t))
    };
    let (add, del) = (hf("ADD")?, hf("DEL")?);
    let mut b = Backstop {
        add_ms: median(&add),
        del_ms: median(&del),
        runs: add.len(),
        ..Default::default()
    };
    for verb in ["ADD", "DEL"] {
        let traces = files(dir, ".txt")?;
        let runs: Vec<(f64, f64, usize)> = traces
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("strace-{verb}-")))
            .map(|(_, p)| read(p).map(|t| nft_share(&t)))
            .collect::<Result<_>>()?;
        if let Some(last) = runs.last() {
            let k = runs.len() as f64;
            let sum = runs.iter().fold((0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1));
            let share = Share {
                nft_ms: sum.0 / k,
                all_ms: sum.1 / k,
                calls: last.2,
                runs: runs.len(),
            };
            b.share.insert(verb.to_string(), share);
        }
    }
    b.release_ms = read(&dir.join("close.txt"))
        .ok()
        .and_then(|t| slowest_close_ms(&t));
    for (stem, path) in files(dir, ".json")?
        .into_iter()
        .filter(|(s, _)| s.starts_with("iperf-"))
    {
        let w: Vec<&str> = stem.split('-').collect();
        let report =
            tools::iperf(&read(&path)?).with_context(|| format!("in {}", path.display()))?;
        let run = (
            report.received_bps.unwrap_or(0.0),
            report.host_cpu.unwrap_or(0.0),
        );
        b.tcp
            .entry((w[1].parse()?, w[2] == "with"))
            .or_default()
            .push(run);
    }
    Ok(Some(b))
}

/// One `strace -f -T -yy` run: (ms in calls on the NETLINK_NETFILTER
/// socket, ms in all calls, how many calls on that socket).
pub fn nft_share(text: &str) -> (f64, f64, usize) {
    let (mut nft, mut all, mut calls) = (0.0, 0.0, 0);
    for (line, t) in text
        .lines()
        .filter_map(|l| Some((l, tools::strace_time(l)?)))
    {
        all += t;
        if line.contains("NETLINK:[NETFILTER") {
            nft += t;
            calls += 1;
        }
    }
    (nft * 1000.0, all * 1000.0, calls)
}

/// The slowest `close()` of a socket in nft's trace: the release that
/// waits for nf_tables' destroy work.
pub fn slowest_close_ms(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.contains("close("))
        .filter_map(tools::strace_time)
        .map(|t| t * 1000.0)
        .reduce(f64::max)
}
