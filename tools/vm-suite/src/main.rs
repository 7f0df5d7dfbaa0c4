//! `vm-suite`: TEST ONLY. The program `scripts/lib/vm-tier.sh` boots as
//! /init's payload inside a real Linux 6.1 VM (Debian bookworm's cloud
//! kernel, amd64 or arm64, under qemu). It wires pods and peers itself,
//! runs the release plugins from `/opt/cni/bin` as a runtime would, checks
//! what the kernel holds and what real packets do, and prints exactly one
//! line per case:
//!
//!   VMTEST <case> PASS|FAIL <detail>
//!
//! between `VMTEST-BEGIN` and `VMTEST-END` lines. The host script fails
//! the tier on any FAIL and on any expected case that never printed.
//!
//! Usage: vm-suite [full|nohtb]   (nohtb: the boot without `sch_htb`)

mod cases_classes;
mod cases_nohtb;
mod cases_pod;
mod cases_tbf;
mod cases_topo;
mod conf;
mod inspect;
mod plugin;
mod traffic;
mod world;

use anyhow::Result;

/// Prints one result line per case and counts them.
#[derive(Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
}

impl Report {
    /// Runs one case and prints its line; returns whether it passed.
    pub fn case(&mut self, name: &str, f: impl FnOnce() -> Result<String>) -> bool {
        let (verdict, detail, ok) = match f() {
            Ok(d) => ("PASS", d, true),
            Err(e) => ("FAIL", format!("{e:#}"), false),
        };
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        // One line, whatever the detail holds: the host reads lines.
        let detail: String = detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        println!("VMTEST {name} {verdict} {detail}");
        ok
    }

    /// A scenario whose set-up failed: its cases never print, so the host
    /// reports them missing; this line says why.
    pub fn setup_failed(&mut self, scenario: &str, e: anyhow::Error) {
        self.case(&format!("{scenario}-setup"), || Err(e));
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "full".into());
    println!(
        "VMTEST-BEGIN {mode} {} {}",
        std::env::consts::ARCH,
        kernel_release()
    );
    let mut r = Report::default();
    if let Err(e) = std::fs::create_dir_all(conf::BW_STATE)
        .and_then(|()| std::fs::create_dir_all(conf::TOPO_STATE))
    {
        r.setup_failed("state-dirs", e.into());
    }
    if let Err(e) = world::enable_forwarding() {
        r.setup_failed("forwarding", e);
    }
    match mode.as_str() {
        "nohtb" => cases_nohtb::run(&mut r),
        _ => run_full(&mut r),
    }
    r.case("kernel-log", kernel_log);
    println!("VMTEST-END passed={} failed={}", r.passed, r.failed);
}

/// The kernel's log after every case (it is kept off the console): no
/// warning, oops or HTB quantum complaint. Read from /dev/kmsg, one record
/// per read, until it has nothing more (EAGAIN).
fn kernel_log() -> Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    const BAD: [&str; 5] = ["WARNING:", "BUG:", "Oops", "quantum of class", "Call Trace"];
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let (mut records, mut bad) = (0, Vec::new());
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                records += 1;
                let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                if BAD.iter().any(|b| line.contains(b)) {
                    bad.push(line.trim().to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // A record overwritten while reading: go on with the next.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::ensure!(bad.is_empty(), "the kernel logged: {}", bad.join(" | "));
    Ok(format!(
        "{records} records, no warning, oops or HTB quantum complaint"
    ))
}

fn run_full(r: &mut Report) {
    let peers = match world::Peers::new() {
        Ok(p) => p,
        Err(e) => return r.setup_failed("peers", e),
    };
    let unshaped = cases_tbf::unshaped(r);
    cases_tbf::tbf_ifb(r, unshaped);
    cases_tbf::namespace_policy(r);
    cases_tbf::gc(r);
    cases_pod::pod_mode(r, &peers);
    cases_classes::classes_ifb(r, &peers);
    cases_classes::classes_pod(r, &peers);
    cases_classes::counting_only(r, &peers);
    cases_topo::topology_label(r);
    r.case("zero-leaks", || {
        inspect::assert_clean(
            &[
                std::path::Path::new(conf::BW_STATE),
                std::path::Path::new(conf::TOPO_STATE),
            ],
            None,
        )?;
        Ok("no ifb, shaping qdisc, nft table or state file left in the node".into())
    });
}
