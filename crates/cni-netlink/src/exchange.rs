//! One request's answer as it is read: the netlink framing and the
//! control messages (ACK, error with its extended ack, DONE, overrun, the
//! dump-interrupted flag) decoded by hand from the raw bytes, and the
//! data messages handed on undecoded, to be parsed by the module that
//! asked. Nothing here uses netlink-packet-core's message parser: a
//! typed decoder of every rtnetlink message came with it.

use netlink_packet_core::NLM_F_DUMP_INTR;

use crate::{
    NLMSG_HDR_LEN, NlError, RawHandler, Result, align4, c_string, kernel_error, raw_attrs,
    read_i32, read_u16, read_u32,
};

/// Netlink's own message types (NOOP, ERROR, DONE, OVERRUN) are 1..=4;
/// rtnetlink's data messages start at 16.
const NLMSG_MAX_CONTROL: u16 = 15;
/// An ACK (code 0) or the kernel's refusal (a negative errno).
pub(crate) const NLMSG_ERROR: u16 = 2;
/// The end of a dump (code 0) or its failure (a negative errno).
pub(crate) const NLMSG_DONE: u16 = 3;
/// The kernel dropped messages: the answer is incomplete.
const NLMSG_OVERRUN: u16 = 4;
/// Extended-ack TLV carrying the kernel's human-readable error message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Set on an `NLMSG_ERROR` when extended-ack TLVs follow the request header.
const NLM_F_ACK_TLVS: u16 = 0x200;

/// One request's answer while it is being read.
pub(crate) struct Exchange<'a> {
    /// The operation, for error messages.
    op: &'a str,
    /// The request's sequence number: only its messages belong here.
    seq: u32,
    /// A dump ends at `NLMSG_DONE`; a plain request at its ACK.
    dump: bool,
    /// The socket asked for capped ACKs: an error carries only the
    /// request's header, not the whole request, before its TLVs.
    cap_ack: bool,
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`).
    pub(crate) interrupted: bool,
    /// Set by the message that ends the exchange: its ACK (`Ok`), or the
    /// kernel's error.
    pub(crate) finished: Option<Result<()>>,
}

impl<'a> Exchange<'a> {
    /// The answer to request `seq`, for operation `op`.
    pub(crate) fn new(op: &'a str, seq: u32, dump: bool, cap_ack: bool) -> Self {
        Exchange {
            op,
            seq,
            dump,
            cap_ack,
            interrupted: false,
            finished: None,
        }
    }

    /// Walks the messages of one datagram. Those of other sequence numbers
    /// (left over from an earlier aborted exchange), and any after the one
    /// that ended the exchange, are skipped; a message cut short is an
    /// error, since nothing after it can be framed.
    pub(crate) fn read_datagram(&mut self, data: &[u8], each: RawHandler<'_>) -> Result<()> {
        let mut off = 0;
        while let Some(header) = data.get(off..off + NLMSG_HDR_LEN) {
            let (Some(msg_len), Some(msg_type), Some(msg_flags), Some(msg_seq)) = (
                read_u32(header, 0),
                read_u16(header, 4),
                read_u16(header, 6),
                read_u32(header, 8),
            ) else {
                break;
            };
            let msg_len = msg_len as usize;
            let Some(payload) = (msg_len >= NLMSG_HDR_LEN)
                .then(|| data.get(off + NLMSG_HDR_LEN..off.saturating_add(msg_len)))
                .flatten()
            else {
                return Err(NlError::protocol(self.op, "truncated netlink message"));
            };
            off += align4(msg_len);
            if msg_seq != self.seq || self.finished.is_some() {
                continue;
            }
            if msg_flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match msg_type {
                NLMSG_ERROR => self.finished = Some(self.ack_result(payload, msg_flags)),
                NLMSG_DONE => self.take_done(payload),
                NLMSG_OVERRUN => {
                    self.finished = Some(Err(NlError::protocol(self.op, "netlink overrun")));
                }
                // Data messages go to the caller undecoded; NOOP and
                // unknown control types carry nothing for us.
                ty if ty > NLMSG_MAX_CONTROL => each(Some((ty, payload))),
                _ => {}
            }
        }
        Ok(())
    }

    /// An `NLMSG_ERROR`'s verdict: code 0 is the ACK, a negative errno the
    /// kernel's refusal (with its extended-ack text when there is one).
    /// One too short to hold a code is a protocol error: it still ends the
    /// exchange, since no ACK will follow it.
    fn ack_result(&self, payload: &[u8], flags: u16) -> Result<()> {
        match read_i32(payload, 0) {
            None => Err(NlError::protocol(
                self.op,
                "truncated netlink error message",
            )),
            Some(0) => Ok(()),
            Some(code) => {
                let ext = self.extack_message(flags, payload.get(4..).unwrap_or_default());
                Err(kernel_error(self.op, code, ext))
            }
        }
    }

    /// An `NLMSG_DONE`: it ends a dump, with the error code the kernel
    /// put in it (and extended-ack TLVs after it, if any). A DONE on a
    /// plain request precedes its ACK: reading goes on. One too short to
    /// hold a code (no kernel sends that) ends the exchange as a protocol
    /// error rather than leaving it waiting.
    fn take_done(&mut self, payload: &[u8]) {
        match read_i32(payload, 0) {
            None => {
                self.finished = Some(Err(NlError::protocol(
                    self.op,
                    "truncated netlink done message",
                )));
            }
            Some(code) if code < 0 => {
                let ext = extack_from_tlvs(payload.get(4..).unwrap_or_default());
                self.finished = Some(Err(kernel_error(self.op, code, ext)));
            }
            Some(_) if self.dump => self.finished = Some(Ok(())),
            Some(_) => {}
        }
    }

    /// Extracts the kernel's extended-ack text from an `NLMSG_ERROR` payload
    /// after its code: the TLVs follow the embedded request header (the
    /// socket asked for capped acks) or the whole request.
    fn extack_message(&self, flags: u16, payload: &[u8]) -> Option<String> {
        if flags & NLM_F_ACK_TLVS == 0 {
            return None;
        }
        let tlv_off = if self.cap_ack {
            NLMSG_HDR_LEN
        } else {
            align4(read_u32(payload, 0)? as usize)
        };
        extack_from_tlvs(payload.get(tlv_off..)?)
    }
}

/// The answer messages of one type, decoded by a hand parser; the first
/// message it refuses is remembered so the exchange can finish first.
pub(crate) struct Parsed<T> {
    ty: u16,
    parse: fn(&[u8]) -> Option<T>,
    out: Vec<T>,
    refused: bool,
}

impl<T> Parsed<T> {
    pub(crate) fn new(ty: u16, parse: fn(&[u8]) -> Option<T>) -> Self {
        Parsed {
            ty,
            parse,
            out: Vec::new(),
            refused: false,
        }
    }

    /// Takes one message of the exchange; `None` (a dump starting over)
    /// forgets what came before.
    pub(crate) fn take(&mut self, msg: Option<(u16, &[u8])>) {
        match msg {
            Some((ty, p)) if ty == self.ty => match (self.parse)(p) {
                Some(v) => self.out.push(v),
                None => self.refused = true,
            },
            Some(_) => {}
            None => {
                self.out.clear();
                self.refused = false;
            }
        }
    }

    pub(crate) fn finish(self, op: &str) -> Result<Vec<T>> {
        if self.refused {
            return Err(NlError::protocol(
                op,
                format!("cannot parse kernel message of type {}", self.ty),
            ));
        }
        Ok(self.out)
    }
}

/// The kernel's human-readable error text among extended-ack TLVs.
fn extack_from_tlvs(tlvs: &[u8]) -> Option<String> {
    raw_attrs(tlvs)
        .filter(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| c_string(v).trim().to_string())
        .find(|s| !s.is_empty())
}
