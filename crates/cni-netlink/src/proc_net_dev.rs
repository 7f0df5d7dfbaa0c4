//! Every interface's counters from `/proc/net/dev`, each with its index
//! from one `SIOCGIFINDEX`: the operator's view of a whole node.
//!
//! Why not a link dump: each veth's `RTM_NEWLINK` carries its peer's netns
//! id, which the kernel finds by walking the node's table of netns ids
//! (`peernet2id`), so a dump of N pods' veths costs O(N²): ~20 ms of kernel
//! time at 1000 pods, most of `cni-rs pods`. `/proc/net/dev` gives the
//! same counters (both come from `dev_get_stats`) and the names, and an
//! index lookup by name is a hash lookup; together ~3 ms at 1000 pods.

use crate::LinkCounters;
use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The file, in the reading task's netns.
const PROC_NET_DEV: &str = "/proc/net/dev";

/// One interface's line: name and counters, index not yet known.
fn parse_line(line: &str) -> Option<LinkCounters> {
    // Names cannot contain ':' or spaces (dev_valid_name).
    let (name, rest) = line.split_once(':')?;
    let n: Vec<u64> = rest
        .split_ascii_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // receive: bytes packets errs drop fifo frame compressed multicast;
    // transmit: bytes packets ...
    if n.len() < 10 {
        return None;
    }
    Some(LinkCounters {
        index: 0,
        name: name.trim().to_string(),
        rx_bytes: n[0],
        rx_packets: n[1],
        tx_bytes: n[8],
        tx_packets: n[9],
    })
}

/// Every line after the two header lines.
fn parse(text: &str) -> Vec<LinkCounters> {
    text.lines().skip(2).filter_map(parse_line).collect()
}

/// `name`'s index in `sock`'s netns; `None` when it is gone (deleted since
/// the file was read).
fn index_of(sock: &OwnedFd, name: &str) -> io::Result<Option<u32>> {
    // SAFETY: an all-zero ifreq is valid (a name of NULs, a zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Ok(None);
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFINDEX reads the NUL-terminated name and writes the
    // index into the ifreq we own, nothing else.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODEV) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the kernel filled the union's index member.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    Ok(u32::try_from(index).ok())
}

/// Every interface of the calling thread's netns with its counters and
/// index. Interfaces that disappear while being read are left out.
pub fn link_counters() -> io::Result<Vec<LinkCounters>> {
    let text = std::fs::read_to_string(PROC_NET_DEV)?;
    // Any socket answers SIOCGIFINDEX for its netns; a unix one needs no
    // network stack of its own.
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    for mut link in parse(&text) {
        if let Some(index) = index_of(&sock, &link.name)? {
            link.index = index;
            out.push(link);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_format() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0\n\
eni1a2b3c4d5e6: 9876543210 12345 0 1 0 0 0 0 42 7 0 0 0 0 0 0\n\
broken: 1 2 3\n";
        let links = parse(text);
        assert_eq!(links.len(), 2);
        assert_eq!(links[1].name, "eni1a2b3c4d5e6");
        assert_eq!(
            (
                links[1].rx_bytes,
                links[1].rx_packets,
                links[1].tx_bytes,
                links[1].tx_packets
            ),
            (9_876_543_210, 12_345, 42, 7)
        );
    }

    #[test]
    fn reads_this_netns() {
        let links = link_counters().expect("read /proc/net/dev");
        let lo = links.iter().find(|l| l.name == "lo").expect("lo is listed");
        assert_eq!(lo.index, 1);
    }
}
