//! `cni-rs install` and `cni-rs uninstall`: what `scripts/install.sh` and
//! `uninstall.sh` did in shell and jq, with the same flags and guarantees
//! (those scripts are now thin wrappers around these commands). Only the
//! commands' own work happens here: `pods` and `metrics` never reach this
//! module, so their start-up stays as it was.
//!
//! Messages go to stderr as `cni-rs install: ...`; a refusal says why and
//! exits 1 with nothing changed; bad usage exits 2; `--dry-run`'s diff is
//! the only thing on stdout.

use crate::apply::{self, Source};
use crate::entries;
use crate::install_opts::{self, INSTALL_USAGE, InstallOpts, Mode, Parsed, UNINSTALL_USAGE};
use crate::uninstall;
use crate::watch;
use std::process::ExitCode;

/// Runs `verb` (`install` or `uninstall`) with the arguments after it.
pub fn main(verb: &str, args: &[String]) -> ExitCode {
    let prog = format!("cni-rs {verb}");
    let usage_error = |e: String| {
        eprintln!("{prog}: {e} (see --help)");
        ExitCode::from(2)
    };
    let mut log = |l: String| eprintln!("{prog}: {l}");
    let res = if verb == "install" {
        match install_opts::parse_install(args) {
            Err(e) => return usage_error(e),
            Ok(Parsed::Help) => return help(INSTALL_USAGE),
            Ok(Parsed::Run(o)) => install(&o, &mut log),
        }
    } else {
        match install_opts::parse_uninstall(args) {
            Err(e) => return usage_error(e),
            Ok(Parsed::Help) => return help(UNINSTALL_USAGE),
            Ok(Parsed::Run(o)) => uninstall::run(&o, &mut log).map(|()| ExitCode::SUCCESS),
        }
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{prog}: refusing: {e}");
            ExitCode::FAILURE
        }
    }
}

fn help(text: &str) -> ExitCode {
    crate::exit_after(crate::emit(text))
}

fn install(o: &InstallOpts, log: &mut dyn FnMut(String)) -> Result<ExitCode, String> {
    // The settings are judged first: a bad one is refused in every mode,
    // before a watcher would start.
    let e = entries::build(&o.settings)?;
    for note in &e.notes {
        log(note.clone());
    }
    match o.mode {
        Mode::Watch { interval, poll } => Ok(watch::run(o, interval, poll)),
        Mode::Once | Mode::DryRun => {
            let source = Source::resolve(o.from.as_deref(), log)?;
            apply::once(&o.paths, &source, &e, o.mode == Mode::DryRun, log)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
