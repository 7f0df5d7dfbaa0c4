//! SIGTERM and SIGINT for the long-running modes (`install --watch`,
//! `metrics --interval`): blocked and read from a signalfd, so a wait can
//! end on them and the process exits cleanly with status 0. This also
//! works as PID 1 in a container, where the kernel drops a signal that has
//! no handler (a plain sleep would ignore the kubelet's SIGTERM and be
//! killed after the grace period instead).

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd as _, BorrowedFd};
use std::time::Duration;

pub struct Stop {
    fd: SignalFd,
    stopped: bool,
}

impl Stop {
    /// Blocks SIGTERM and SIGINT for this (single-threaded) process.
    pub fn block() -> nix::Result<Stop> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Stop { fd, stopped: false })
    }

    /// The fd to poll next to others.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether a stop signal came (once read, it stays a stop).
    pub fn requested(&mut self) -> bool {
        if matches!(self.fd.read_signal(), Ok(Some(_))) {
            self.stopped = true;
        }
        self.stopped
    }

    /// Sleeps up to `wait`; true when a stop signal ended it.
    pub fn wait(&mut self, wait: Duration) -> bool {
        if self.stopped {
            return true;
        }
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, timeout(wait));
        self.requested()
    }
}

/// A poll timeout, the longest poll takes when `d` is longer.
pub fn timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX)
}
