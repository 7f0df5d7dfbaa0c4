//! `cni-rs install --watch`, what the DaemonSet runs: applies, then stays
//! and applies again within seconds whenever aws-node re-renders the
//! conflist (every aws-node restart, an atomic rename) or a binary is
//! replaced (aws-node's init container copies its plugins on every start),
//! plus a safety re-check every `--interval`. inotify on both directories
//! (nix's, no helper process); `--poll`, or a directory that does not
//! exist yet, polls instead. SIGTERM or SIGINT (the kubelet stopping the
//! pod) ends it cleanly with status 0, also as PID 1 in a container (the
//! signals are blocked and read from a signalfd, so no handler is needed).
//!
//! A pass that refuses (the conflist missing while aws-node starts, a
//! half-edited file) is reported once, with the time, and retried; the
//! watcher never exits on it.

use crate::apply::{self, Source};
use crate::entries;
use crate::install_opts::InstallOpts;
use crate::signals::{self, Stop};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd as _;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// A burst of writes (aws-node's init copying every plugin, our own
/// renames) settles before a pass: quiet for this long...
const QUIET: Duration = Duration::from_millis(300);
/// ...or at most this long after the first event.
const SETTLE_MAX: Duration = Duration::from_secs(3);

struct Watcher<'a> {
    opts: &'a InstallOpts,
    interval: Duration,
    source: Option<Source>,
    last_err: Option<String>,
    stop: Stop,
}

pub fn run(opts: &InstallOpts, interval: Duration, poll_only: bool) -> ExitCode {
    // This process runs for weeks: it must reuse what it frees.
    crate::ALLOC.retire();
    let stop = match Stop::block() {
        Ok(s) => s,
        Err(e) => {
            say(&format!("cannot take SIGTERM: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut w = Watcher {
        opts,
        interval,
        source: None,
        last_err: None,
        stop,
    };
    let mode = if poll_only { "polling" } else { "inotify" };
    say(&format!(
        "watching {} and {} ({mode}, every {}s); SIGTERM stops",
        opts.paths.conflist.display(),
        opts.paths.cni_bin_dir.display(),
        interval.as_secs_f64()
    ));
    while !w.stop.requested() {
        let watched = if poll_only { None } else { w.inotify() };
        match watched {
            Some(ino) => w.inotify_round(&ino),
            None => {
                w.reapply();
                w.stop.wait(interval);
            }
        }
    }
    say("stopped");
    ExitCode::SUCCESS
}

/// A line on stderr after a UTC timestamp.
fn say(msg: &str) {
    eprintln!("{} cni-rs install: {msg}", stamp(SystemTime::now()));
}

/// `2024-05-01T12:00:00Z`.
fn stamp(t: SystemTime) -> String {
    cni_types::log::rfc3339(t, false)
}

impl Watcher<'_> {
    /// inotify on the conflist's directory and the bin dir, or `None`
    /// when one is missing (then this round polls).
    fn inotify(&self) -> Option<Inotify> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        for dir in [
            apply::parent(&self.opts.paths.conflist),
            &self.opts.paths.cni_bin_dir,
        ] {
            ino.add_watch(dir, mask).ok()?;
        }
        Some(ino)
    }

    /// Applies (changes before the watches were set are caught here), then
    /// waits for events until a signal, or until a watched directory goes
    /// away or the queue overflows (then a new round sets new watches).
    fn inotify_round(&mut self, ino: &Inotify) {
        self.reapply();
        loop {
            let (signal, event) = self.wait_both(ino, self.interval);
            if signal && self.stop.requested() {
                return;
            }
            if !event {
                self.reapply(); // the periodic re-check: lost events
                continue;
            }
            match self.relevant(ino) {
                Events::Relevant => {
                    self.settle(ino);
                    self.reapply();
                }
                Events::Ignored => {}
                Events::Reset => {
                    self.stop.wait(self.interval.min(Duration::from_secs(1)));
                    return;
                }
            }
        }
    }

    /// Polls the signalfd and inotify: (signal ready, events ready).
    fn wait_both(&self, ino: &Inotify, wait: Duration) -> (bool, bool) {
        let mut fds = [
            PollFd::new(self.stop.fd(), PollFlags::POLLIN),
            PollFd::new(ino.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, signals::timeout(wait)).is_err() {
            return (false, false);
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        (ready(&fds[0]), ready(&fds[1]))
    }

    fn relevant(&self, ino: &Inotify) -> Events {
        let conf_name = self.opts.paths.conflist.file_name();
        let mut out = Events::Ignored;
        for ev in ino.read_events().unwrap_or_default() {
            let reset = AddWatchFlags::IN_IGNORED
                | AddWatchFlags::IN_Q_OVERFLOW
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF;
            if ev.mask.intersects(reset) {
                return Events::Reset;
            }
            let name = ev.name.as_deref();
            if name.is_some_and(|n| {
                Some(n) == conf_name || n == "bandwidth-rs" || n == "topology-label"
            }) {
                out = Events::Relevant;
            }
        }
        out
    }

    /// Drains events until they stop for [`QUIET`] (at most [`SETTLE_MAX`]).
    fn settle(&self, ino: &Inotify) {
        let start = Instant::now();
        while start.elapsed() < SETTLE_MAX {
            let (signal, event) = self.wait_both(ino, QUIET);
            if signal || !event {
                return;
            }
            let _ = ino.read_events();
        }
    }

    /// One pass, its lines stamped; a refusal is said once until it changes.
    fn reapply(&mut self) {
        let mut lines = Vec::new();
        let res = self.pass(&mut |l| lines.push(l));
        for l in &lines {
            say(l);
        }
        match res {
            Ok(()) => {
                if self.last_err.take().is_some() {
                    say("applied again");
                }
            }
            Err(e) if self.last_err.as_ref() != Some(&e) => {
                say(&format!(
                    "refusing: {e} (retrying every {}s)",
                    self.interval.as_secs_f64()
                ));
                self.last_err = Some(e);
            }
            Err(_) => {}
        }
    }

    fn pass(&mut self, log: &mut dyn FnMut(String)) -> Result<(), String> {
        let source = match self.source.take() {
            Some(s) => s,
            None => Source::resolve(self.opts.from.as_deref(), log)?,
        };
        let source = self.source.insert(source);
        let entries = entries::build(&self.opts.settings)?;
        apply::once(&self.opts.paths, source, &entries, false, log)
    }
}

enum Events {
    Relevant,
    Ignored,
    Reset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800 + 3661);
        assert_eq!(stamp(t), "2024-05-01T13:01:01Z");
        assert_eq!(stamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
