//! usage: bench-report RAW_DIR              BENCHMARKS.md on stdout
//!        bench-report --progress RAW_DIR KEY   one hyperfine benchmark's median and p90

use anyhow::{Result, bail};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--progress", dir, key] => bench_report::progress(Path::new(dir), key)?,
        [dir] if !dir.starts_with('-') => bench_report::report(Path::new(dir))?,
        _ => bail!("usage: bench-report RAW_DIR | bench-report --progress RAW_DIR KEY"),
    };
    println!("{}", out.trim_end());
    Ok(())
}
