//! nf_tables over `NETLINK_NETFILTER`, by hand: the few messages the
//! bandwidth plugin's host-side backstop needs (tables, chains, rules and
//! named objects in the `netdev` family), sent as one transaction, and the
//! dumps CHECK, DEL and GC read back. What to put in a table is decided in
//! [`crate::backstop`]; this module only speaks the wire format.
//!
//! No `nft` binary and no libnftnl: a batch is a handful of netlink
//! messages, and the kernel applies it all or nothing.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::libc;

use crate::{
    DUMP_RETRIES, NLMSG_HDR_LEN, NlError, RECV_BUF_SIZE, Result, align4, c_string, raw_attrs,
    read_u16, read_u32, recv_datagram, send_datagram,
};

/// `NFPROTO_NETDEV`: tables whose base chains hook one device's ingress.
pub const NFPROTO_NETDEV: u8 = 5;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// `enum nf_tables_msg_types`.
pub(crate) mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const NEWOBJ: u8 = 18;
    pub const GETOBJ: u8 = 19;
}

use crate::exchange::{NLMSG_DONE, NLMSG_ERROR};
pub(crate) use netlink_packet_core::NLM_F_EXCL;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
const NLA_F_NESTED: u16 = 0x8000;
const NFGENMSG_LEN: usize = 4;
/// How long an answer may take before the plugin gives up (the kernel
/// answers in microseconds; a lost answer must not hold a verb forever).
const RECV_TIMEOUT_SECS: i64 = 10;

/// Attribute numbers (`linux/netfilter/nf_tables.h`).
pub(crate) mod attr {
    pub const TABLE_NAME: u16 = 1;
    pub const TABLE_FLAGS: u16 = 2;
    pub const TABLE_HANDLE: u16 = 4;
    pub const TABLE_USERDATA: u16 = 6;
    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
    pub const HOOK_DEV: u16 = 3;
    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_USERDATA: u16 = 7;
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;
    pub const OBJ_TABLE: u16 = 1;
    pub const OBJ_NAME: u16 = 2;
    pub const OBJ_TYPE: u16 = 3;
    pub const OBJ_DATA: u16 = 4;
    pub const LIMIT_RATE: u16 = 1;
    pub const LIMIT_UNIT: u16 = 2;
    pub const LIMIT_BURST: u16 = 3;
    pub const LIMIT_TYPE: u16 = 4;
    pub const LIMIT_FLAGS: u16 = 5;
    pub const COUNTER_BYTES: u16 = 1;
    pub const COUNTER_PACKETS: u16 = 2;
}

/// A netlink attribute tree being encoded (native-endian headers; values
/// as nf_tables wants them, mostly big-endian).
#[derive(Default, Clone)]
pub(crate) struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn bytes(mut self, kind: u16, v: &[u8]) -> Self {
        let len = 4 + v.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(v);
        self.0.resize(self.0.len() + (align4(len) - len), 0);
        self
    }

    pub fn str(self, kind: u16, s: &str) -> Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v)
    }

    pub fn be32(self, kind: u16, v: u32) -> Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn be64(self, kind: u16, v: u64) -> Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn nested(self, kind: u16, inner: Attrs) -> Self {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }
}

/// A comment as `nft` stores it in userdata (type 0, length, NUL-ended
/// text), so `nft list` prints ours as `comment "…"`. At most 254 bytes.
pub fn comment_udata(text: &str) -> Vec<u8> {
    let text = &text.as_bytes()[..text.len().min(253)];
    let mut v = vec![0u8, (text.len() + 1) as u8];
    v.extend_from_slice(text);
    v.push(0);
    v
}

/// The comment in a userdata blob written by [`comment_udata`] (or `nft`).
pub fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut off = 0;
    while off + 2 <= udata.len() {
        let (ty, len) = (udata[off], usize::from(udata[off + 1]));
        let v = udata.get(off + 2..off + 2 + len)?;
        if ty == 0 {
            return Some(c_string(v));
        }
        off += 2 + len;
    }
    None
}

/// One message of a batch: nf_tables type, flags and attributes.
pub(crate) struct Message {
    pub kind: u8,
    pub flags: u16,
    pub attrs: Attrs,
}

impl Message {
    pub fn new(kind: u8, attrs: Attrs) -> Message {
        let flags = match kind {
            msg::NEWRULE => NLM_F_CREATE | NLM_F_APPEND,
            msg::NEWTABLE | msg::NEWCHAIN | msg::NEWOBJ => NLM_F_CREATE,
            _ => 0,
        };
        Message { kind, flags, attrs }
    }
}

fn encode(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, a: &[u8]) {
    let len = NLMSG_HDR_LEN + NFGENMSG_LEN + a.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(a);
}

/// The whole transaction as one datagram: BATCH_BEGIN, each message with
/// an ACK requested, BATCH_END. Returns the bytes and the sequence numbers
/// that will be acknowledged. Pure (unit-tested).
pub(crate) fn batch(messages: &[Message], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut out = Vec::new();
    let mut seq = first_seq;
    encode(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let mut acked = Vec::with_capacity(messages.len());
    for m in messages {
        seq = seq.wrapping_add(1);
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(m.kind);
        let flags = NLM_F_REQUEST | NLM_F_ACK | m.flags;
        encode(&mut out, ty, flags, seq, NFPROTO_NETDEV, 0, &m.attrs.0);
        acked.push(seq);
    }
    seq = seq.wrapping_add(1);
    encode(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    (out, acked)
}

/// A blocking `NETLINK_NETFILTER` socket in the calling thread's netns.
pub struct Nft {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A data message of a dump: its nf_tables type and attributes.
pub(crate) struct Answer {
    pub kind: u8,
    pub attrs: Vec<u8>,
}

impl Answer {
    pub fn attr(&self, kind: u16) -> Option<&[u8]> {
        raw_attrs(&self.attrs)
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }

    pub fn string(&self, kind: u16) -> Option<String> {
        self.attr(kind).map(c_string)
    }
}

impl Nft {
    /// Opens the socket (the node's netns, for a plugin).
    pub fn new() -> Result<Nft> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let _ = sock.set_ext_ack(true);
        set_recv_timeout(&sock)?;
        Ok(Nft {
            sock,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(1),
            buf: vec![0; RECV_BUF_SIZE],
        })
    }

    fn send_all(&mut self, op: &str, bytes: &[u8]) -> Result<()> {
        send_datagram(&self.sock, op, bytes)
    }

    fn recv(&mut self) -> Result<usize> {
        recv_datagram(&self.sock, &mut self.buf)
    }

    /// Applies `messages` as one transaction: all or nothing. The first
    /// error the kernel reports is returned (with its errno).
    pub(crate) fn commit(&mut self, op: &str, messages: &[Message]) -> Result<()> {
        let first = self.seq;
        let (bytes, acked) = batch(messages, first);
        self.seq = first.wrapping_add(messages.len() as u32 + 2);
        self.send_all(op, &bytes)?;
        let mut pending: std::collections::HashSet<u32> = acked.into_iter().collect();
        let mut first_error = None;
        while !pending.is_empty() {
            let len = self.recv()?;
            for (ty, seq, payload) in messages_in(&self.buf[..len]) {
                // An error on the batch's own header (no nf_tables, no
                // memory) answers the whole batch: no message will be acked.
                let code = read_u32(payload, 0).map(|c| c as i32).unwrap_or(0);
                if ty == NLMSG_ERROR && seq == first && code != 0 {
                    return Err(kernel_error(op, code));
                }
                if ty == NLMSG_ERROR && pending.remove(&seq) {
                    let code = read_u32(payload, 0).map(|c| c as i32).unwrap_or(0);
                    if code != 0 && first_error.is_none() {
                        first_error = Some(kernel_error(op, code));
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A dump of `kind` in the netdev family, filtered by `attrs` where the
    /// kernel supports it (callers filter again). A dump the kernel flags
    /// as interrupted by a concurrent change (another tool committing) is
    /// run again: a table missed there would be taken for absent.
    pub(crate) fn dump(&mut self, op: &str, kind: u8, attrs: Attrs) -> Result<Vec<Answer>> {
        for _ in 0..DUMP_RETRIES {
            if let Some(answers) = self.dump_once(op, kind, &attrs)? {
                return Ok(answers);
            }
        }
        Err(NlError::protocol(
            op,
            "dump kept being interrupted by concurrent changes",
        ))
    }

    /// One dump; `None` when it was interrupted.
    fn dump_once(&mut self, op: &str, kind: u8, attrs: &Attrs) -> Result<Option<Vec<Answer>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut out = Vec::new();
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(kind);
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        encode(&mut out, ty, flags, seq, NFPROTO_NETDEV, 0, &attrs.0);
        self.send_all(op, &out)?;
        let mut answers = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.recv()?;
            for (ty, flags, s, payload) in messages_with_flags(&self.buf[..len]) {
                if s != seq {
                    continue;
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                let code = read_u32(payload, 0).map(|c| c as i32).unwrap_or(0);
                match ty {
                    // ENOENT: no table of that name (yet), nothing to list.
                    NLMSG_DONE | NLMSG_ERROR if code == 0 || -code == libc::ENOENT => {
                        return Ok((!interrupted).then_some(answers));
                    }
                    NLMSG_ERROR => return Err(kernel_error(op, code)),
                    _ if ty >> 8 == NFNL_SUBSYS_NFTABLES => answers.push(Answer {
                        kind: (ty & 0xff) as u8,
                        attrs: payload.get(NFGENMSG_LEN..).unwrap_or_default().to_vec(),
                    }),
                    _ => {}
                }
            }
        }
    }
}

fn set_recv_timeout(sock: &Socket) -> Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: a plain setsockopt with a timeval of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// (type, sequence, payload after the header) of each message in a datagram.
fn messages_in(data: &[u8]) -> Vec<(u16, u32, &[u8])> {
    messages_with_flags(data)
        .into_iter()
        .map(|(ty, _, seq, p)| (ty, seq, p))
        .collect()
}

/// (type, flags, sequence, payload) of each message in a datagram.
fn messages_with_flags(data: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDR_LEN <= data.len() {
        let (Some(len), Some(ty), Some(seq)) = (
            read_u32(data, off),
            read_u16(data, off + 4),
            read_u32(data, off + 8),
        ) else {
            break;
        };
        let len = len as usize;
        if len < NLMSG_HDR_LEN || off + len > data.len() {
            break;
        }
        let flags = read_u16(data, off + 6).unwrap_or(0);
        out.push((ty, flags, seq, &data[off + NLMSG_HDR_LEN..off + len]));
        off += align4(len);
    }
    out
}

fn kernel_error(op: &str, code: i32) -> NlError {
    crate::kernel_error(op, code, None)
}

/// A big-endian u64 attribute value.
pub(crate) fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// A big-endian u32 attribute value.
pub(crate) fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_flagged() {
        let a = Attrs::default()
            .str(1, "abc")
            .nested(2, Attrs::default().be32(1, 7));
        // "abc\0" is 4 bytes: 8 in all; the nested one: 4 + 8.
        assert_eq!(a.0.len(), 8 + 12);
        assert_eq!(u16::from_ne_bytes([a.0[10], a.0[11]]), 2 | NLA_F_NESTED);
        assert_eq!(&a.0[16..20], &7u32.to_be_bytes());
    }

    #[test]
    fn a_batch_is_framed_and_every_message_is_acked() {
        let m = [
            Message::new(msg::NEWTABLE, Attrs::default().str(attr::TABLE_NAME, "t")),
            Message::new(msg::NEWRULE, Attrs::default()),
        ];
        let (bytes, acked) = batch(&m, 10);
        assert_eq!(acked, vec![11, 12]);
        let msgs = messages_in(&bytes);
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0].0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[3].0, NFNL_MSG_BATCH_END);
        assert_eq!(
            msgs[1].0,
            (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg::NEWTABLE)
        );
        assert_eq!(msgs[1].2[0], NFPROTO_NETDEV);
    }

    #[test]
    fn comments_round_trip() {
        let u = comment_udata("cni-bandwidth net=n id=c if=eth0");
        assert_eq!(
            udata_comment(&u).as_deref(),
            Some("cni-bandwidth net=n id=c if=eth0")
        );
        assert_eq!(udata_comment(&[0, 200]), None);
    }
}
