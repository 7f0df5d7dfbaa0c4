//! A minimal pod sandbox ("pause") process for the containerd end-to-end
//! test (`tests/cri-e2e`), which compiles this file on its own with `rustc`
//! and `-C target-feature=+crt-static` into a static binary and ships it as
//! the only file of a locally built OCI image (no image can be pulled here).
//!
//! Like Kubernetes' pause: block until SIGINT or SIGTERM, then exit 0,
//! reaping any zombie children (it is PID 1 of the sandbox) on SIGCHLD.
//! The signals are blocked and taken with `sigwait`: blocked signals are
//! delivered even to a PID 1 without handlers. Only `std` is used (the
//! static build has no Cargo dependencies), hence the few libc
//! declarations below.

use std::os::raw::c_int;

/// glibc's and musl's `sigset_t` are both 128 bytes.
#[repr(C)]
struct SigSet([u64; 16]);

const SIG_BLOCK: c_int = 0;
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;

unsafe extern "C" {
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

fn main() {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid, writable sigset_t-sized buffer; the process
    // is single-threaded, so sigprocmask applies to the only thread.
    unsafe {
        sigemptyset(&mut set);
        for sig in [SIGINT, SIGTERM, SIGCHLD] {
            sigaddset(&mut set, sig);
        }
        if sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            eprintln!("pause: sigprocmask failed");
            std::process::exit(1);
        }
    }
    loop {
        let mut sig: c_int = 0;
        // SAFETY: both pointers are valid for the call.
        if unsafe { sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if sig == SIGCHLD {
            let mut status: c_int = 0;
            // SAFETY: reaping any child without blocking.
            while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
            continue;
        }
        std::process::exit(0);
    }
}
