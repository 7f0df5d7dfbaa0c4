//! Reading a raw-measurement directory as `scripts/bench.sh` leaves it
//! (layout in README.md next to Cargo.toml). A section that did not run
//! leaves no files, and reads as empty here: the report leaves it out.

pub mod helpers;
pub mod tools;
#[cfg(test)]
mod tools_tests;

use crate::stats::Summary;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// `facts`: one `key value` per line, the value the rest of the line.
#[derive(Debug, Default, Clone)]
pub struct Facts(BTreeMap<String, String>);

impl Facts {
    pub fn parse(text: &str) -> Facts {
        Facts(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| match l.split_once(' ') {
                    Some((k, v)) => (k.to_string(), v.trim().to_string()),
                    None => (l.trim().to_string(), String::new()),
                })
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// The value, or "?" in the prose when the run did not record it.
    pub fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or("?").to_string()
    }
    pub fn num(&self, key: &str) -> Option<f64> {
        self.get(key)?.split_whitespace().next()?.parse().ok()
    }
    /// Whitespace-separated numbers (leak counts, spans).
    pub fn nums(&self, key: &str) -> Option<Vec<f64>> {
        self.get(key)?
            .split_whitespace()
            .map(|w| w.parse().ok())
            .collect()
    }
    fn merge(&mut self, prefix: &str, other: Facts) {
        for (k, v) in other.0 {
            self.0.insert(format!("{prefix}.{k}"), v);
        }
    }
    /// The sections this run measured (`sections 1 2 3`).
    pub fn ran(&self, section: u32) -> bool {
        self.get("sections")
            .is_some_and(|s| s.split_whitespace().any(|w| w == section.to_string()))
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Raw {
    pub facts: Facts,
    /// hyperfine, by benchmark key, rounds pooled (ms).
    pub hf: BTreeMap<String, Summary>,
    /// Peak RSS by key (KiB).
    pub rss: BTreeMap<String, Summary>,
    pub strace: BTreeMap<String, tools::StraceCounts>,
    /// iperf3 receiver reports of sections 3-4, by tag.
    pub iperf: BTreeMap<String, tools::Iperf>,
    pub latency: BTreeMap<String, helpers::Latency>,
    pub scale: BTreeMap<String, helpers::ScalePhase>,
    pub sweep: Vec<helpers::SweepRun>,
    pub classes_cost: BTreeMap<String, f64>,
    pub classes_acc: Vec<helpers::ClassFlow>,
    pub churn: Vec<helpers::ChurnRun>,
    pub backstop: Option<helpers::Backstop>,
}

const HELPER_DIRS: [&str; 5] = [
    "sweep",
    "classes-cost",
    "classes-accuracy",
    "churn",
    "backstop",
];

pub fn load(dir: &Path) -> Result<Raw> {
    let mut facts = Facts::parse(&read(&dir.join("facts"))?);
    // The helpers run on their own and keep their facts in their own
    // directory; they join the run's as "DIR.key".
    for sub in HELPER_DIRS {
        if let Ok(text) = read(&dir.join(sub).join("facts")) {
            facts.merge(sub, Facts::parse(&text));
        }
    }
    Ok(Raw {
        hf: hyperfine_dir(&dir.join("hf"))?,
        rss: per_file(&dir.join("rss"), "", |t| {
            Ok(Summary::of(&tools::numbers(t)))
        })?
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect(),
        strace: per_file(&dir.join("strace"), ".txt", tools::strace_counts)?,
        iperf: per_file(&dir.join("iperf"), ".json", tools::iperf)?,
        latency: helpers::latency_dir(&dir.join("latency"))?,
        scale: helpers::scale_dir(&dir.join("scale"), &facts)?,
        sweep: helpers::sweep_dir(&dir.join("sweep"))?,
        classes_cost: helpers::classes_cost_dir(&dir.join("classes-cost"))?,
        classes_acc: helpers::classes_acc_dir(&dir.join("classes-accuracy"))?,
        churn: helpers::churn_dir(&dir.join("churn"))?,
        backstop: helpers::backstop_dir(&dir.join("backstop"))?,
        facts,
    })
}

pub fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The files of `dir` ending in `suffix`, sorted by name; none when the
/// directory is missing (the section did not run).
pub fn files(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf)>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(stem) = name
            .strip_suffix(suffix)
            .filter(|s| !s.is_empty() && path.is_file())
        {
            out.push((stem.to_string(), path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// Parse every `*suffix` file of `dir`, keyed by its name without it.
pub fn per_file<T>(
    dir: &Path,
    suffix: &str,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<BTreeMap<String, T>> {
    files(dir, suffix)?
        .into_iter()
        .filter(|(k, _)| !suffix.is_empty() || !k.contains('.'))
        .map(|(k, p)| {
            let v = parse(&read(&p)?).with_context(|| format!("in {}", p.display()))?;
            Ok((k, v))
        })
        .collect()
}

/// `hf/KEY.ROUND.json`: the rounds of one benchmark pooled, as the shell
/// interleaves ours and the reference round by round.
pub fn hyperfine_dir(dir: &Path) -> Result<BTreeMap<String, Summary>> {
    let mut pooled: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (stem, path) in files(dir, ".json")? {
        let key = stem.rsplit_once('.').map_or(stem.as_str(), |(k, _)| k);
        let times = tools::hyperfine_times_ms(&read(&path)?)
            .with_context(|| format!("in {}", path.display()))?;
        pooled.entry(key.to_string()).or_default().extend(times);
    }
    Ok(pooled
        .into_iter()
        .filter_map(|(k, v)| Some((k, Summary::of(&v)?)))
        .collect())
}
