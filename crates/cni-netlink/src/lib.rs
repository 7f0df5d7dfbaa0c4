//! Synchronous rtnetlink helpers (links, addresses, routes, tc) and network
//! namespace guards shared by the CNI plugins.
//!
//! A plain blocking `NETLINK_ROUTE` socket is used instead of an async stack:
//! plugins issue a handful of requests per invocation, so a runtime would only
//! add binary size and start-up latency.

#![warn(missing_docs)]

use std::io;

use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::libc;

/// Addresses, routes and neighbours: only the simulator wires pods.
#[cfg(any(test, feature = "testing"))]
mod addr;
pub mod backstop;
pub mod bpf;
mod exchange;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod host_veth;
pub mod htb;
pub mod kernel;
mod link;
pub mod netns;
pub mod nft;
pub mod proc_net_dev;
pub mod tc;
#[cfg(test)]
mod wire_tests;

use exchange::{Exchange, Parsed};
pub use link::{IFB_TXQUEUELEN, Link, LinkChange, LinkCounters};

/// Size of the receive buffer: dumps put many messages in one datagram (at
/// most 32 KiB); a larger datagram is detected with `MSG_TRUNC` and reported
/// as an error, never parsed cut.
pub(crate) const RECV_BUF_SIZE: usize = 64 * 1024;
/// What [`Netlink::dump_each`] hands each data message to: its type and
/// payload, or `None` when the dump starts over.
type RawHandler<'a> = &'a mut dyn FnMut(Option<(u16, &[u8])>);
/// How often a dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is retried.
pub(crate) const DUMP_RETRIES: usize = 5;
/// Length of `struct nlmsghdr`.
pub(crate) const NLMSG_HDR_LEN: usize = 16;

/// Errors from the kernel or the netlink exchange, kept apart so callers can
/// branch on the errno (e.g. "already exists") without parsing strings.
#[derive(thiserror::Error, Debug)]
pub enum NlError {
    /// The kernel rejected a request; `source` carries its errno so callers
    /// can tell "missing" from "exists" from real failures.
    #[error("{op}: {errno}")]
    Kernel {
        /// The operation that failed, plus the kernel's extended-ack text if any.
        op: String,
        /// The errno the kernel returned, as an OS error. Not the error's
        /// `source`: the message already names it, and a cause chain
        /// (`{:#}`, CNI error details) would print it twice.
        errno: io::Error,
    },
    /// The kernel's answer could not be understood; no errno to act on.
    #[error("{op}: {msg}")]
    Protocol {
        /// The operation that was being performed.
        op: String,
        /// What was wrong with the answer.
        msg: String,
    },
    /// Socket-level failure (creating, sending, receiving) or invalid input.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl NlError {
    /// The errno behind the error, so callers can make decisions without
    /// matching on variants.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => errno.raw_os_error(),
            NlError::Io(e) => e.raw_os_error(),
            NlError::Protocol { .. } => None,
        }
    }

    /// True when the object (link, qdisc, filter) does not exist, so cleanup
    /// paths (CNI DEL) can treat it as already done: the kernel reports
    /// missing objects as `ENODEV` (link) or `ENOENT` (qdisc/filter). A tc
    /// delete that names a missing parent or handle answers `EINVAL`;
    /// [`Netlink::request_delete`] decides that case on the request's type.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(libc::ENODEV) | Some(libc::ENOENT))
    }

    /// True on `EEXIST`, so idempotent callers can distinguish "already
    /// there" from real failures.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    pub(crate) fn protocol(op: &str, msg: impl Into<String>) -> Self {
        NlError::Protocol {
            op: op.to_string(),
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid_input(msg: impl Into<String>) -> Self {
        NlError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg.into()))
    }
}

/// Result alias so every call site carries the errno-aware [`NlError`].
pub type Result<T> = std::result::Result<T, NlError>;

/// A blocking rtnetlink connection; the socket stays bound to the network
/// namespace of the thread that created it, so it can be created inside a
/// pod netns and used after switching back.
pub struct Netlink {
    sock: Socket,
    cap_ack: bool,
    buf: Vec<u8>,
}

/// A native-endian u32 at `off`.
pub(crate) fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// A native-endian i32 at `off`.
pub(crate) fn read_i32(buf: &[u8], off: usize) -> Option<i32> {
    read_u32(buf, off).map(|v| v as i32)
}

/// A big-endian (network order) u32 at `off`.
pub(crate) fn read_be_u32(buf: &[u8], off: usize) -> Option<u32> {
    read_u32(buf, off).map(u32::from_be)
}

/// A native-endian u16 at `off`.
pub(crate) fn read_u16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off + 2)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Netlink {
    /// Opens the socket in the calling thread's current netns, which is what
    /// every later request will act on.
    pub fn new() -> Result<Self> {
        Self::with_socket(Socket::new(NETLINK_ROUTE)?)
    }

    /// Takes an rtnetlink socket opened elsewhere (in a pod's namespace,
    /// by `cni_types::netns::validate_netns`): requests act where it was
    /// made, whichever namespace the thread is in now.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the fd is an open socket we own; Socket closes it on drop.
        Self::with_socket(unsafe { Socket::from_raw_fd(fd.into_raw_fd()) })
    }

    fn with_socket(mut sock: Socket) -> Result<Self> {
        // Another descriptor of the same socket may have bound it already
        // (the kernel refuses a second bind with EINVAL).
        let mut bound = SocketAddr::new(0, 0);
        sock.get_address(&mut bound)?;
        if bound.port_number() == 0 {
            sock.bind_auto()?;
        }
        sock.connect(&SocketAddr::new(0, 0))?;
        // Both are best effort: they only improve error reporting.
        let cap_ack = sock.set_cap_ack(true).is_ok();
        let _ = sock.set_ext_ack(true);
        Ok(Netlink {
            sock,
            cap_ack,
            buf: vec![0; RECV_BUF_SIZE],
        })
    }

    /// Unique in the process, not per connection: connections may share
    /// one socket (descriptors of the pod's, see [`netns::rtnl_in`]), and
    /// none may take another's answers for its own.
    fn next_seq(&mut self) -> u32 {
        static NEXT_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        loop {
            let seq = NEXT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if seq != 0 {
                return seq;
            }
        }
    }

    /// Sends a request that expects an ACK; answer messages before it, if
    /// any, are dropped.
    pub(crate) fn request(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request_each(op, msg, flags, &mut |_| {})
    }

    /// Sends a request that expects an ACK and decodes its answer
    /// messages of type `ty` with `parse` (by hand, from the raw bytes:
    /// netlink-packet-route's decoders of every rtnetlink message and
    /// attribute were a quarter of a plugin's code). A message `parse`
    /// refuses is a protocol error, reported once the exchange has ended
    /// so the socket is left clean for the next request.
    pub(crate) fn request_parsed<T>(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        ty: u16,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut parsed = Parsed::new(ty, parse);
        self.request_each(op, msg, flags, &mut |m| parsed.take(m))?;
        parsed.finish(op)
    }

    /// Like [`Netlink::request`] but absorbs "not found" into `Ok(false)`,
    /// for delete paths that must be idempotent. For a qdisc or filter
    /// delete, `EINVAL` also means "not there" (a parent or handle that does
    /// not exist); the request's type decides, never the operation's text.
    pub(crate) fn request_delete(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<bool> {
        let tc_object = matches!(
            msg,
            RouteNetlinkMessage::DelQueueDiscipline(_) | RouteNetlinkMessage::DelTrafficFilter(_)
        );
        match self.request(op, msg, flags) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) if tc_object && e.errno() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Like [`Netlink::request`], but hands each answer message to `each`
    /// unparsed (type and payload after the netlink header).
    pub(crate) fn request_each(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        each: RawHandler<'_>,
    ) -> Result<()> {
        let seq = self.send(op, msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.receive_with(op, seq, false, each)?;
        Ok(())
    }

    /// Runs a dump and decodes its messages of type `ty` with `parse`, as
    /// [`Netlink::request_parsed`] does; an interrupted dump is retried.
    pub(crate) fn dump_parsed<T>(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        ty: u16,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut parsed = Parsed::new(ty, parse);
        self.dump_each(op, msg, &mut |m| parsed.take(m))?;
        parsed.finish(op)
    }

    fn send(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.send_encoded(op, &mut encode(msg, flags))
    }

    /// Sends an encoded request under the next sequence number, which it
    /// writes into the header: a retried dump resends the same bytes.
    fn send_encoded(&mut self, op: &str, out: &mut [u8]) -> Result<u32> {
        let seq = self.next_seq();
        if let Some(field) = out.get_mut(8..12) {
            field.copy_from_slice(&seq.to_ne_bytes());
        }
        send_datagram(&self.sock, op, out)?;
        Ok(seq)
    }

    /// Receives one datagram into `self.buf` and returns its length. One
    /// syscall: the buffer (64 KiB) is larger than anything rtnetlink sends
    /// (a dump datagram is at most 32 KiB), and MSG_TRUNC makes the kernel
    /// report a longer datagram's real length, so a truncation is an error
    /// instead of a silently cut message.
    fn recv_datagram(&mut self) -> Result<usize> {
        recv_datagram(&self.sock, &mut self.buf)
    }

    /// Runs a dump and hands each data message's type and payload (after
    /// the netlink header) to `each` as it arrives, unparsed: for dumps of
    /// the whole node, where decoding every attribute of every message
    /// (and allocating for each) would cost more than the kernel's work.
    /// `each(None)` means "start over": the kernel flagged the dump as
    /// inconsistent and it is being retried.
    pub(crate) fn dump_each(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        each: RawHandler<'_>,
    ) -> Result<()> {
        // Encoded once: cloning the typed message for each retry would
        // link a clone of every rtnetlink message type (tens of KB).
        let mut out = encode(msg, NLM_F_REQUEST | NLM_F_DUMP);
        for _ in 0..DUMP_RETRIES {
            let seq = self.send_encoded(op, &mut out)?;
            let interrupted = self.receive_with(op, seq, true, &mut *each)?;
            if !interrupted {
                return Ok(());
            }
            each(None);
        }
        Err(NlError::protocol(
            op,
            "dump kept being interrupted by concurrent changes",
        ))
    }

    /// Reads datagrams until the exchange for `seq` has ended (ACK, error,
    /// or `NLMSG_DONE` of a dump), handing its data messages to `each`;
    /// true when the kernel flagged the dump as interrupted. Messages of
    /// other sequence numbers (left over from an earlier aborted exchange)
    /// are skipped.
    fn receive_with(
        &mut self,
        op: &str,
        seq: u32,
        dump: bool,
        each: RawHandler<'_>,
    ) -> Result<bool> {
        let mut exchange = Exchange::new(op, seq, dump, self.cap_ack);
        loop {
            let len = self.recv_datagram()?;
            exchange.read_datagram(&self.buf[..len], each)?;
            if let Some(res) = exchange.finished {
                res?;
                return Ok(exchange.interrupted);
            }
        }
    }
}

/// A request as it goes on the wire, with sequence number 0 (the sender
/// sets it).
fn encode(msg: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut out = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut out);
    out
}

/// Sends one whole datagram on a netlink socket (rtnetlink's or
/// nf_tables'), retrying on EINTR.
pub(crate) fn send_datagram(sock: &Socket, op: &str, out: &[u8]) -> Result<()> {
    loop {
        match sock.send(out, 0) {
            Ok(n) if n == out.len() => return Ok(()),
            Ok(n) => {
                return Err(NlError::protocol(
                    op,
                    format!("short send: {n} of {} bytes", out.len()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one datagram into `buf` and returns its length, in one
/// syscall: MSG_TRUNC makes the kernel report a longer datagram's real
/// length, so a truncation is an error, never a silently cut message.
pub(crate) fn recv_datagram(sock: &Socket, buf: &mut [u8]) -> Result<usize> {
    loop {
        match sock.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => {
                return Err(NlError::protocol(
                    "receive",
                    format!(
                        "kernel datagram of {n} bytes exceeds the {} byte buffer",
                        buf.len()
                    ),
                ));
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The attributes (type without the nested/byte-order flags, payload) in
/// `buf`; stops at the first malformed one (shorter than its header, or
/// running past the end). For the counters of a whole node's dump, where
/// a cut attribute costs one value, not the answer; parsers that must
/// refuse a malformed message use [`attrs`].
pub(crate) fn raw_attrs(buf: &[u8]) -> impl Iterator<Item = Attr<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let (attr, next) = split_attr(rest)?;
        rest = next;
        Some(attr)
    })
}

/// The attributes in `buf` as [`raw_attrs`] walks them, or `None` when
/// they do not frame it exactly: one is cut short or stray bytes follow.
pub(crate) fn attrs(buf: &[u8]) -> Option<impl Iterator<Item = Attr<'_>>> {
    let mut rest = buf;
    while !rest.is_empty() {
        rest = split_attr(rest)?.1;
    }
    Some(raw_attrs(buf))
}

/// One attribute: its type (without the nested/byte-order flags) and payload.
type Attr<'a> = (u16, &'a [u8]);

/// The first attribute of `buf` (type, payload) and what follows it (after
/// its padding; the last one's may be missing); `None` when `buf` does not
/// start with a whole attribute.
fn split_attr(buf: &[u8]) -> Option<(Attr<'_>, &[u8])> {
    let len = usize::from(read_u16(buf, 0)?);
    let ty = read_u16(buf, 2)? & NLA_TYPE_MASK;
    // `get` refuses a length below the 4-byte header (start after end).
    let value = buf.get(4..len)?;
    let next = buf.get(align4(len)..).unwrap_or_default();
    Some(((ty, value), next))
}

/// A native-endian u64 at `off`.
pub(crate) fn read_u64(buf: &[u8], off: usize) -> Option<u64> {
    let b = buf.get(off..off + 8)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// A NUL-terminated string attribute.
pub(crate) fn c_string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

pub(crate) fn kernel_error(op: &str, code: i32, ext: Option<String>) -> NlError {
    let op = match ext {
        Some(ext) => format!("{op} ({ext})"),
        None => op.to_string(),
    };
    NlError::Kernel {
        op,
        errno: io::Error::from_raw_os_error(code.saturating_abs()),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::Netlink;
    use nix::sched::{CloneFlags, unshare};

    /// Moves the test thread into a fresh netns with `lo` up, so tests never
    /// touch the host's interfaces. `None` (the test skips, and says so)
    /// when not root: `cargo test` as a user still runs the pure tests.
    pub fn private_netns() -> Option<Netlink> {
        if !nix::unistd::geteuid().is_root() {
            // Not eprintln!: libtest would capture it and show it only on failure.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), concat!("skipped: this kernel test needs root (network namespaces); scripts/test.sh runs it", "\n").as_bytes());
            return None;
        }
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let mut nl = Netlink::new().expect("netlink socket");
        let lo = nl.link_by_name("lo").unwrap().expect("lo exists");
        nl.set_up(lo.index).unwrap();
        Some(nl)
    }
}
