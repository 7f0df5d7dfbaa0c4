//! One tiny eBPF program, and the clsact hook that runs it: it sets
//! `skb->priority` to 0 before a packet reaches the device's root qdisc.
//!
//! Why: htb picks a class by `skb->priority` before any filter runs (a
//! priority equal to `1:0` selects its unlimited direct queue, one equal to
//! `1:minor` that class). A socket sets its priority with `SO_PRIORITY`,
//! to any value with `CAP_NET_RAW`, which containerd grants by default. On
//! the host side that does not matter: a packet crossing a veth gets
//! priority 0 (`dev_forward_skb`). But an htb on the pod's own interface
//! (`egressMode: pod` with traffic classes) sees the pod's sockets'
//! priorities as they are, and a pod could pick the unshaped class.
//!
//! The program is four instructions, loaded with `bpf(BPF_PROG_LOAD)` (no
//! ELF, no loader library) and attached as a direct-action `bpf` filter on
//! the interface's clsact egress hook; it returns `TC_ACT_UNSPEC`, so it
//! decides nothing else about the packet.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcOption},
};
use nix::libc;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::tc::{ETH_P_ALL, tc_header, tc_message};
use crate::{Netlink, NlError, Result};

/// Parent of filters on a clsact's egress hook (`ffff:fff3`).
pub const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;
/// Our filter's prio there.
pub const PRIORITY_RESET_PRIO: u16 = 1;
/// The program's and the filter's name, as `tc filter show` prints it.
pub const PRIORITY_RESET_NAME: &str = "cni_rs_prio0";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `offsetof(struct __sk_buff, priority)`.
const SKB_PRIORITY_OFFSET: i16 = 32;
/// `TC_ACT_UNSPEC`: no verdict, the packet goes on.
const TC_ACT_UNSPEC: i32 = -1;

/// `struct bpf_insn`, encoded: opcode, registers (dst low nibble, src high),
/// offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0x0f);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// `r2 = 0; *(u32 *)(r1 + priority) = r2; r0 = TC_ACT_UNSPEC; exit`.
pub fn priority_reset_program() -> Vec<u8> {
    const BPF_ALU64_MOV_K: u8 = 0x07 | 0xb0;
    const BPF_STX_MEM_W: u8 = 0x03 | 0x60;
    const BPF_JMP_EXIT: u8 = 0x05 | 0x90;
    [
        insn(BPF_ALU64_MOV_K, 2, 0, 0, 0),
        insn(BPF_STX_MEM_W, 1, 2, SKB_PRIORITY_OFFSET, 0),
        insn(BPF_ALU64_MOV_K, 0, 0, 0, TC_ACT_UNSPEC),
        insn(BPF_JMP_EXIT, 0, 0, 0, 0),
    ]
    .concat()
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to the fields we set.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads the priority-reset program; the fd keeps it alive until a filter
/// holds it. On a refusal the verifier's log is in the error.
pub fn load_priority_reset() -> Result<OwnedFd> {
    let prog = priority_reset_program();
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..PRIORITY_RESET_NAME.len()].copy_from_slice(PRIORITY_RESET_NAME.as_bytes());
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: (prog.len() / 8) as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` prefix of
    // the size passed; the pointers in it (program, license, log buffer)
    // outlive the call, and the kernel writes only into `log` (at most
    // `log_size` bytes).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let verifier = String::from_utf8_lossy(&log[..end]);
        return Err(load_error(std::io::Error::last_os_error(), &verifier));
    }
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A refused `BPF_PROG_LOAD`, with the OS error's text once. As
/// [`NlError::Kernel`] the text came twice wherever the cause chain is
/// printed (the CNI error's details, `{:#}` in logs): once in the
/// variant's message and again as its `source()`. Here the message carries
/// it and there is no source below; the error's kind stays the errno's.
fn load_error(os: std::io::Error, verifier: &str) -> NlError {
    let verifier = verifier.trim();
    let mut msg = format!(
        "loading the priority-reset eBPF program (needs CONFIG_BPF_SYSCALL and cls_bpf): {os}"
    );
    if !verifier.is_empty() {
        msg.push_str(&format!("; verifier: {verifier}"));
    }
    NlError::Io(std::io::Error::new(os.kind(), msg))
}

impl Netlink {
    /// Attaches the priority-reset program on `index`'s clsact egress hook
    /// (the clsact must exist), as a direct-action `bpf` filter.
    pub fn add_priority_reset(&mut self, index: u32) -> Result<()> {
        let prog = load_priority_reset()?;
        let fd = u32::try_from(prog.as_raw_fd())
            .map_err(|_| NlError::invalid_input("negative program fd"))?;
        let header = tc_header(
            index,
            CLSACT_EGRESS,
            0,
            crate::tc::filter_info(PRIORITY_RESET_PRIO, ETH_P_ALL),
        )?;
        let attrs = vec![
            TcAttribute::Kind("bpf".to_string()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(fd)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(PRIORITY_RESET_NAME.to_string())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]),
        ];
        self.request(
            &format!("add priority-reset bpf filter on link #{index}"),
            RouteNetlinkMessage::NewTrafficFilter(tc_message(header, attrs)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        // The filter holds the program now; our fd closes here.
        drop(prog);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encoding() {
        let p = priority_reset_program();
        assert_eq!(p.len(), 32);
        assert_eq!(&p[0..2], &[0xb7, 0x02], "r2 = 0");
        assert_eq!(&p[8..10], &[0x63, 0x21], "*(u32 *)(r1 + off) = r2");
        assert_eq!(i16::from_ne_bytes([p[10], p[11]]), 32);
        assert_eq!(i32::from_ne_bytes([p[20], p[21], p[22], p[23]]), -1);
        assert_eq!(p[24], 0x95, "exit");
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
    }

    #[test]
    fn the_kernel_accepts_it() {
        // Root and a kernel with BPF: the verifier must accept the program.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        if let Err(e) = load_priority_reset() {
            // qemu-user has no bpf(2): nothing to judge there.
            if no_bpf_syscall(&e) {
                return;
            }
            panic!("{e}");
        }
    }

    fn no_bpf_syscall(e: &NlError) -> bool {
        matches!(e, NlError::Io(io) if io.kind() == std::io::ErrorKind::Unsupported)
    }

    /// The CNI error a plugin makes of a load failure, as `apply` wraps it.
    fn details_of(e: NlError) -> String {
        use cni_types::error::{CniError, Code, ResultExt as _};
        let wrapped = Err::<(), _>(e)
            .cni(Code::Kernel, "resetting skb priority on the pod's eth0")
            .unwrap_err();
        CniError::from_anyhow(&wrapped).details
    }

    #[test]
    fn load_error_names_the_os_error_once() {
        let eperm = "Operation not permitted (os error 1)";
        let d = details_of(load_error(std::io::Error::from_raw_os_error(1), ""));
        assert_eq!(d.matches(eperm).count(), 1, "{d}");
        assert!(
            d.starts_with("loading the priority-reset eBPF program"),
            "{d}"
        );
        let d = details_of(load_error(
            std::io::Error::from_raw_os_error(libc::EACCES),
            "0: R1 invalid mem access\n",
        ));
        assert_eq!(d.matches("(os error 13)").count(), 1, "{d}");
        assert!(d.ends_with("; verifier: 0: R1 invalid mem access"), "{d}");
    }

    /// A real refusal: this thread without CAP_BPF and CAP_SYS_ADMIN in
    /// its effective set (capabilities are per thread) gets EPERM.
    #[test]
    fn refused_load_names_the_os_error_once() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let refused = std::thread::spawn(|| {
            drop_effective(&[21, 39])?; // CAP_SYS_ADMIN, CAP_BPF
            load_priority_reset().err()
        })
        .join()
        .expect("the loading thread");
        let Some(e) = refused else {
            return; // no capset here (qemu-user), or it loaded anyway
        };
        if no_bpf_syscall(&e) {
            return;
        }
        let d = details_of(e);
        assert_eq!(
            d.matches("Operation not permitted (os error 1)").count(),
            1,
            "{d}"
        );
    }

    /// Clears `caps` from the calling thread's effective set; `None` when
    /// the kernel (or an emulator) refuses.
    fn drop_effective(caps: &[u32]) -> Option<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Default, Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: header and two data structs, as capget/capset v3 expect;
        // both outlive the calls.
        let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        if got != 0 {
            return None;
        }
        for cap in caps {
            data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        }
        // SAFETY: as above.
        let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        (set == 0).then_some(())
    }
}
