//! Parsers for what the measuring tools write: hyperfine's JSON export,
//! iperf3's JSON, `strace -c` and `strace -T` text, ping's output, and
//! GNU time's `%M`. Each takes the text and returns numbers; nothing here
//! reads files, so the tests feed them literal tool output.

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// hyperfine `--export-json`: every run's time, in milliseconds.
pub fn hyperfine_times_ms(json: &str) -> Result<Vec<f64>> {
    let v: Value = serde_json::from_str(json).context("hyperfine JSON")?;
    let times = v["results"][0]["times"]
        .as_array()
        .context("hyperfine JSON without results[0].times")?;
    Ok(times
        .iter()
        .filter_map(Value::as_f64)
        .map(|s| s * 1000.0)
        .collect())
}

/// One number per line (GNU time `%M`, per-call times); other lines are
/// skipped, as GNU time prepends "Command exited with non-zero status".
pub fn numbers(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// One iperf3 interval (`intervals[].sum`).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub start: f64,
    pub end: f64,
    pub seconds: f64,
    pub bytes: f64,
    pub bits_per_second: f64,
}

/// An iperf3 `-J` report: its intervals and the end summary's fields
/// the sections use.
#[derive(Debug, Clone, PartialEq)]
pub struct Iperf {
    pub intervals: Vec<Interval>,
    pub received_bytes: Option<f64>,
    pub received_bps: Option<f64>,
    pub host_cpu: Option<f64>,
}

pub fn iperf(json: &str) -> Result<Iperf> {
    let v: Value = serde_json::from_str(json).context("iperf3 JSON")?;
    let Some(list) = v["intervals"].as_array() else {
        bail!("iperf3 JSON without intervals (error: {})", v["error"]);
    };
    let num = |s: &Value, k: &str| s[k].as_f64().unwrap_or(0.0);
    let intervals = list
        .iter()
        .map(|i| {
            let s = &i["sum"];
            Interval {
                start: num(s, "start"),
                end: num(s, "end"),
                seconds: num(s, "seconds"),
                bytes: num(s, "bytes"),
                bits_per_second: num(s, "bits_per_second"),
            }
        })
        .collect();
    let end = &v["end"];
    Ok(Iperf {
        intervals,
        received_bytes: end["sum_received"]["bytes"].as_f64(),
        received_bps: end["sum_received"]["bits_per_second"].as_f64(),
        host_cpu: end["cpu_utilization_percent"]["host_total"].as_f64(),
    })
}

/// Bits per second of a set of intervals: bytes over time, which
/// per-second medians blur at low rates. None without time.
pub fn rate_of<'a>(intervals: impl Iterator<Item = &'a Interval>) -> Option<f64> {
    let (bytes, secs) = intervals.fold((0.0, 0.0), |(b, s), i| (b + i.bytes, s + i.seconds));
    (secs > 0.0).then(|| bytes * 8.0 / secs)
}

/// `strace -c`: the total and the per-syscall call counts.
#[derive(Debug, Clone, PartialEq)]
pub struct StraceCounts {
    pub total_calls: u64,
    pub total_seconds: f64,
    /// (name, calls), as strace lists them.
    pub calls: Vec<(String, u64)>,
}

impl StraceCounts {
    /// The `n` most called, ties by name.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v = self.calls.clone();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// Columns are found by the header's right edges, not by field number:
/// the usecs/call and errors columns are blank on some rows (and the
/// usecs/call one on the total row of older straces), which shifts fields.
pub fn strace_counts(text: &str) -> Result<StraceCounts> {
    let header = text
        .lines()
        .find(|l| l.contains("calls") && l.contains("syscall"))
        .context("strace -c output without its header")?;
    let edge = |name: &str| header.find(name).map(|i| i + name.len());
    let (secs_edge, calls_edge) = (edge("seconds").unwrap(), edge("calls").unwrap());
    let mut out = StraceCounts {
        total_calls: 0,
        total_seconds: 0.0,
        calls: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('-') && *l != header) {
        let (Some(calls), Some(name)) = (
            token_ending_at(line, calls_edge),
            line.split_whitespace().last(),
        ) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        if name == "total" {
            out.total_calls = calls;
            out.total_seconds = token_ending_at(line, secs_edge)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0);
        } else {
            out.calls.push((name.to_string(), calls));
        }
    }
    if out.total_calls == 0 {
        bail!("strace -c output without a total row");
    }
    Ok(out)
}

/// The whitespace-separated token of `line` whose last byte is at `edge - 1`.
fn token_ending_at(line: &str, edge: usize) -> Option<&str> {
    if line.len() < edge || !line.is_char_boundary(edge) {
        return None;
    }
    let head = &line[..edge];
    let start = head.rfind(' ').map_or(0, |i| i + 1);
    let tok = &head[start..];
    let after_ok = line[edge..].chars().next().is_none_or(|c| c == ' ');
    (!tok.is_empty() && after_ok).then_some(tok)
}

/// `strace -T` lines end in `<seconds>`: the time inside that syscall.
pub fn strace_time(line: &str) -> Option<f64> {
    let body = line.trim_end().strip_suffix('>')?;
    body[body.rfind('<')? + 1..].parse().ok()
}

/// A ping run: the reply times (ms) and how many it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub times_ms: Vec<f64>,
    pub transmitted: Option<u64>,
}

pub fn ping(text: &str) -> Ping {
    let times_ms = text
        .lines()
        .filter_map(|l| {
            let t = &l[l.find("time=")? + 5..];
            t.split([' ', 'm']).next()?.parse().ok()
        })
        .collect();
    let transmitted = text
        .lines()
        .find_map(|l| l.strip_suffix_word("packets transmitted"));
    Ping {
        times_ms,
        transmitted,
    }
}

trait LeadingCount {
    fn strip_suffix_word(&self, what: &str) -> Option<u64>;
}

impl LeadingCount for str {
    /// "500 packets transmitted, ..." -> 500
    fn strip_suffix_word(&self, what: &str) -> Option<u64> {
        let (n, rest) = self.split_once(' ')?;
        rest.starts_with(what).then(|| n.parse().ok())?
    }
}

impl Iperf {
    /// The first interval, Mbit/s: what the bucket let through at once.
    pub fn first_mbit(&self) -> Option<f64> {
        self.intervals.first().map(|i| i.bits_per_second / 1e6)
    }
    /// Whole intervals from second 2 on, Mbit/s. The server adds a last
    /// interval of a few ms after `secs`: left out, it is noise.
    pub fn steady_mbit(&self, secs: f64) -> Option<f64> {
        let steady = self
            .intervals
            .iter()
            .filter(|i| i.start >= 0.99 && i.seconds > 0.5 && i.end <= secs + 0.05);
        rate_of(steady).map(|b| b / 1e6)
    }
    /// All intervals, Mbit/s.
    pub fn mean_mbit(&self) -> Option<f64> {
        rate_of(self.intervals.iter()).map(|b| b / 1e6)
    }
    /// Each whole second, Mbit/s.
    pub fn per_second_mbit(&self) -> Vec<f64> {
        self.intervals
            .iter()
            .filter(|i| i.seconds > 0.5)
            .map(|i| i.bits_per_second / 1e6)
            .collect()
    }
}
