//! bench-report: the statistics, the verdicts and the BENCHMARKS.md text
//! of `scripts/bench.sh`, from the raw measurements it leaves in a
//! directory. The shell only drives the measurements; everything computed
//! from them is here, tested, in one place.

pub mod parse;
pub mod render;
pub mod stats;
pub mod verdicts;

use std::path::Path;

/// The report of the raw-measurement directory `dir`.
pub fn report(dir: &Path) -> anyhow::Result<String> {
    Ok(render::report(&parse::load(dir)?))
}

/// One hyperfine benchmark's summary for bench.sh's progress log:
/// "median 2.186 ms  p90 2.601 ms  (n=60)".
pub fn progress(dir: &Path, key: &str) -> anyhow::Result<String> {
    // Only the hyperfine files: the rest of the run may be half written.
    let hf = parse::hyperfine_dir(&dir.join("hf"))?;
    let s = hf
        .get(key)
        .ok_or_else(|| anyhow::anyhow!("no hyperfine runs of {key} in {}", dir.display()))?;
    Ok(format!(
        "median {:7.3} ms  p90 {:7.3} ms  (n={})",
        s.median, s.p90, s.n
    ))
}
