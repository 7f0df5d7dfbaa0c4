//! `cni-rs`: the operator's view of this node's CNI attachments.
//!
//!   cni-rs pods [--json | --prometheus] [--bandwidth-state-dir DIR] [--topology-state-dir DIR]
//!   cni-rs metrics --textfile PATH [--interval SECONDS] [state dir options]
//!   cni-rs install [--watch] [options]   (see `installer`)
//!   cni-rs uninstall [options]
//!
//! Read-only (it never writes a state file or touches a device); needs
//! root only to read `/run/cni` and, for pods shaped inside their own
//! namespace, to enter it.

mod apply;
mod conflist;
mod cost;
mod diff;
mod entries;
mod install_opts;
mod installer;
mod node_files;
mod ordered_json;
mod release;
mod render;
mod signals;
mod tar_stream;
mod text;
mod textfile;
mod uninstall;
mod view;
mod watch;

/// `pods` and a one-shot `metrics` live for milliseconds and read every
/// attachment's state: a bump arena (no mmap/munmap per buffer, as musl's
/// allocator does), the system allocator past 32 MiB (about 3000
/// attachments). `metrics --interval` retires it as it starts: a process
/// that runs for weeks must reuse what it frees; so does `install --watch`.
#[global_allocator]
static ALLOC: bump_arena::BumpArena<{ 32 << 20 }, std::alloc::System> =
    bump_arena::BumpArena::new(std::alloc::System);

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use view::Sources;

const USAGE: &str = "\
usage: cni-rs pods [--json | --prometheus] [options]
       cni-rs zones [--json] [options]
       cni-rs metrics --textfile PATH [--interval SECONDS] [options]
       cni-rs install [--watch] [options]    (cni-rs install --help)
       cni-rs uninstall [options]            (cni-rs uninstall --help)

install   copies the plugins into the CNI bin dir and chains them after
          the AWS VPC CNI in its conflist; --watch keeps them there
uninstall removes them and restores the chain
pods      one row per attachment on this node (both plugins' state joined
          with the kernel's counters): namespace/pod, container, interface,
          zone, host veth, egress mode, and per direction (IN = into the
          pod) the rate, bytes, drops and overlimits (the pod hit its limit),
          and with zone classes the bytes that crossed zones and their cost
zones     per zone of this node's pods: same-zone, cross-zone and outside
          bytes (both directions) and the inter-AZ cost of the cross-zone ones
metrics   writes the same as Prometheus metrics to PATH atomically (for
          node_exporter --collector.textfile.directory); once, or every
          SECONDS until stopped. PATH is world-readable (0644) and missing
          directories are created 0755, so a non-root node_exporter reads it

options:
  --json                     a JSON array, for scripts
  --price-per-gb USD         inter-AZ price per GB and direction (default 0.01)
  --prometheus               the Prometheus text format, on stdout
  --bandwidth-state-dir DIR  bandwidth's stateDir (default /run/cni/bandwidth)
  --topology-state-dir DIR   topology-label's stateDir (default /run/cni/topology-label)
  -h, --help                 this text
  --version                  the version

Exit status: 0 when anything could be read (unreadable state files are
marked in the output), 1 when nothing could, 2 for bad usage.
";

#[derive(Debug, PartialEq)]
enum Format {
    Table,
    Json,
    Prometheus,
}

#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Version,
    Pods(Format),
    Zones(Format),
    Metrics {
        textfile: PathBuf,
        interval: Option<Duration>,
    },
}

/// Where to read and how to price.
#[derive(Debug, Clone)]
struct Settings {
    sources: Sources,
    price_per_gb: f64,
}

fn parse(args: &[String]) -> Result<(Command, Settings), String> {
    let mut sources = Sources {
        bandwidth: PathBuf::from(bandwidth_plugin::config::DEFAULT_STATE_DIR),
        topology_label: PathBuf::from(topology_label_plugin::config::DEFAULT_STATE_DIR),
    };
    let mut price_per_gb = cost::DEFAULT_PRICE_PER_GB;
    let mut it = args.iter();
    let verb = match it.next().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => return Ok((Command::Help, settings(sources))),
        Some("--version") => return Ok((Command::Version, settings(sources))),
        Some(v @ ("pods" | "zones" | "metrics")) => v.to_string(),
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    let mut format = Format::Table;
    let mut textfile = None;
    let mut interval = None;
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{what} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok((Command::Help, settings(sources))),
            "--json" if verb != "metrics" => format = Format::Json,
            "--prometheus" if verb == "pods" => format = Format::Prometheus,
            "--bandwidth-state-dir" => sources.bandwidth = value(a)?.into(),
            "--topology-state-dir" => sources.topology_label = value(a)?.into(),
            "--price-per-gb" => {
                let v = value(a)?;
                price_per_gb = v
                    .parse()
                    .ok()
                    .filter(|p: &f64| p.is_finite() && (0.0..=100.0).contains(p))
                    .ok_or_else(|| format!("--price-per-gb must be 0..100 (USD), got {v:?}"))?;
            }
            "--textfile" if verb == "metrics" => textfile = Some(PathBuf::from(value(a)?)),
            "--interval" if verb == "metrics" => {
                let v = value(a)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 1.0 && *s <= 86_400.0)
                    .ok_or_else(|| format!("--interval must be 1..86400 seconds, got {v:?}"))?;
                interval = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown option {other:?} for {verb}")),
        }
    }
    let cmd = match verb.as_str() {
        "pods" => Command::Pods(format),
        "zones" => Command::Zones(format),
        _ => {
            let textfile = textfile.ok_or("metrics needs --textfile PATH")?;
            if !textfile.to_string_lossy().ends_with(".prom") {
                return Err(format!(
                    "--textfile {} must end in .prom (node_exporter reads only those)",
                    textfile.display()
                ));
            }
            Command::Metrics { textfile, interval }
        }
    };
    Ok((
        cmd,
        Settings {
            sources,
            price_per_gb,
        },
    ))
}

fn settings(sources: Sources) -> Settings {
    Settings {
        sources,
        price_per_gb: cost::DEFAULT_PRICE_PER_GB,
    }
}

/// Asks for the arena in 2 MiB pages where the node allows it (THP
/// `madvise` or `always`): a look at 1000 attachments touches ~10 MiB of
/// it, ~2500 page faults in 4 KiB pages, about a seventh of the process's
/// CPU time (`perf`, BENCHMARKS.md). Without THP nothing changes.
fn arena_in_huge_pages() {
    const HUGE: usize = 2 << 20;
    let (base, len) = ALLOC.region();
    let start = (base as usize).next_multiple_of(HUGE);
    let end = (base as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside the arena, a static of ours; the
        // advice changes how its pages are backed, never their contents.
        unsafe {
            nix::libc::madvise(
                start as *mut nix::libc::c_void,
                end - start,
                nix::libc::MADV_HUGEPAGE,
            );
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(verb @ ("install" | "uninstall")) = args.first().map(String::as_str) {
        return installer::main(verb, &args[1..]);
    }
    let (cmd, settings) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cni-rs: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    // Once, and only where the arena serves the whole run: `metrics
    // --interval` retires it before its first look.
    if matches!(
        cmd,
        Command::Pods(_) | Command::Zones(_) | Command::Metrics { interval: None, .. }
    ) {
        arena_in_huge_pages();
    }
    match cmd {
        Command::Help => exit_after(emit(USAGE)),
        Command::Version => exit_after(emit(&format!("cni-rs {}\n", env!("CARGO_PKG_VERSION")))),
        Command::Pods(format) => pods(format, &settings),
        Command::Zones(format) => zones(format, &settings),
        Command::Metrics { textfile, interval } => metrics(&textfile, interval, &settings),
    }
}

/// One look at the node, with each pod's zone bytes and cost.
fn look(settings: &Settings) -> view::NodeView {
    let mut node = view::look(&settings.sources);
    cost::annotate(&mut node, settings.price_per_gb);
    node
}

fn pods(format: Format, settings: &Settings) -> ExitCode {
    let node = look(settings);
    let text = match format {
        Format::Table => render::table(&node),
        Format::Json => render::json(&node),
        Format::Prometheus => render::prometheus(&node, settings.price_per_gb),
    };
    if format != Format::Table {
        for p in &node.problems {
            eprintln!("cni-rs: {p}");
        }
    }
    if !emit(&text) {
        return ExitCode::FAILURE;
    }
    exit_for(&node)
}

/// Writes a command's output to stdout. A reader that went away (`| head`)
/// ends the output quietly, as it does for other tools; any other failure
/// is reported, and is the caller's to turn into a failed exit.
pub(crate) fn emit(text: &str) -> bool {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => true,
        Err(e) => {
            eprintln!("cni-rs: writing the output: {e}");
            false
        }
    }
}

/// Success when the output was written (see [`emit`]).
pub(crate) fn exit_after(written: bool) -> ExitCode {
    if written {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn zones(format: Format, settings: &Settings) -> ExitCode {
    let node = look(settings);
    let zones = cost::by_zone(&node, settings.price_per_gb);
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&zones).unwrap_or_else(|_| "[]".into()) + "\n",
        _ => cost::zones_table(&zones, settings.price_per_gb),
    };
    for p in &node.problems {
        eprintln!("cni-rs: {p}");
    }
    if !emit(&text) {
        return ExitCode::FAILURE;
    }
    exit_for(&node)
}

fn metrics(
    textfile: &std::path::Path,
    interval: Option<Duration>,
    settings: &Settings,
) -> ExitCode {
    if interval.is_some() {
        // Weeks of refreshes must reuse what they free.
        ALLOC.retire();
    }
    // SIGTERM/SIGINT end the refreshes with status 0, also as PID 1 in
    // the DaemonSet's container (a plain sleep would ignore them there);
    // blocked before the first pass, so a stop during it is not lost.
    let mut stop = match interval.map(|_| signals::Stop::block()).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cni-rs: cannot take SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        let node = look(settings);
        for p in &node.problems {
            eprintln!("cni-rs: {p}");
        }
        // Temp file + rename in the same directory, 0644 so that
        // node_exporter (uid 65534) can read it.
        let text = render::prometheus(&node, settings.price_per_gb);
        if let Err(e) = textfile::write(textfile, text.as_bytes()) {
            eprintln!("cni-rs: writing {}: {e}", textfile.display());
            if interval.is_none() {
                return ExitCode::FAILURE;
            }
        }
        match (interval, stop.as_mut()) {
            (Some(every), Some(stop)) => {
                if stop.wait(every) {
                    return ExitCode::SUCCESS;
                }
            }
            _ => return exit_for(&node),
        }
    }
}

fn exit_for(node: &view::NodeView) -> ExitCode {
    if node.anything_read {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn commands_and_options() {
        assert_eq!(parse(&args("")).unwrap().0, Command::Help);
        assert_eq!(
            parse(&args("pods")).unwrap().0,
            Command::Pods(Format::Table)
        );
        assert_eq!(
            parse(&args("pods --json")).unwrap().0,
            Command::Pods(Format::Json)
        );
        let (cmd, set) = parse(&args("pods --prometheus --bandwidth-state-dir /x")).unwrap();
        assert_eq!(cmd, Command::Pods(Format::Prometheus));
        assert_eq!(set.sources.bandwidth, PathBuf::from("/x"));
        assert_eq!(set.price_per_gb, cost::DEFAULT_PRICE_PER_GB);
        let (cmd, set) = parse(&args("zones --json --price-per-gb 0.02")).unwrap();
        assert_eq!(
            (cmd, set.price_per_gb),
            (Command::Zones(Format::Json), 0.02)
        );
        assert_eq!(
            parse(&args("metrics --textfile /d/cni.prom --interval 15"))
                .unwrap()
                .0,
            Command::Metrics {
                textfile: "/d/cni.prom".into(),
                interval: Some(Duration::from_secs(15))
            }
        );
    }

    #[test]
    fn bad_usage_is_refused() {
        for bad in [
            "frobnicate",
            "pods --textfile x.prom",
            "pods --bandwidth-state-dir",
            "metrics",
            "metrics --textfile /d/cni.txt",
            "metrics --textfile /d/c.prom --interval 0",
            "metrics --textfile /d/c.prom --interval nan",
            "metrics --json --textfile /d/c.prom",
            "zones --prometheus",
            "pods --price-per-gb",
            "pods --price-per-gb -1",
            "pods --price-per-gb NaN",
            "zones --price-per-gb 1e9",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
