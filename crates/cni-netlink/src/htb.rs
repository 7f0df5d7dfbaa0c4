//! HTB trees: the root `htb` qdisc, its classes, the bfifo queue under each
//! leaf class, and u32 filters that pick a class by address.
//!
//! Encoded and decoded by hand, like tbf: netlink-packet-route has no htb
//! support, and a class dump is parsed raw (only the attributes needed) so
//! the operator's view costs no allocation per attribute.
//!
//! Every class gets an explicit `quantum`: with none, the kernel derives it
//! from `rate / r2q` and logs "quantum of class X is small/big" to dmesg for
//! most real rates (the warning the reference's v1.5 shipped).

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{
        TcAttribute, TcFilterU32Option, TcHandle, TcOption, TcU32Key, TcU32Selector,
        TcU32SelectorFlags,
    },
};

use crate::tc::{TC_H_ROOT, TCA_HTB_INIT, burst_to_ticks, push_nla, ratespec};
use crate::{Netlink, NlError, Result};

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_DIRECT_QLEN: u16 = 5;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;
/// `sizeof(struct tc_htb_opt)`: two ratespecs, buffer, cbuffer, quantum,
/// level, prio.
const HTB_OPT_LEN: usize = 44;
/// `sizeof(struct tcmsg)`.
const TCMSG_LEN: usize = 20;
const RTM_NEWTCLASS: u16 = 40;
const RTM_NEWQDISC: u16 = 36;
/// Packets HTB queues for itself when no class takes them. Our trees always
/// name a default class, so this only bounds a kernel corner case; set
/// explicitly because the kernel's default is the device's txqueuelen,
/// which is 0 on some ifbs.
const DIRECT_QLEN: u32 = 1000;

/// `ETH_P_IPV6`: a filter protocol matching IPv6 only.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// One HTB class as we want it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClassSpec {
    /// `major:minor` of the class.
    pub classid: u32,
    /// The qdisc (`major:0`) or the parent class.
    pub parent: u32,
    /// Guaranteed rate, bytes/s.
    pub rate: u64,
    /// Most it may reach by borrowing from its parent, bytes/s.
    pub ceil: u64,
    /// Bucket at `rate`, bytes.
    pub burst: u32,
    /// Bucket at `ceil`, bytes.
    pub cburst: u32,
    /// Bytes a class may send per round when siblings borrow; explicit.
    pub quantum: u32,
}

/// One HTB class as the kernel dumps it, with its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HtbClass {
    /// Interface of the class's qdisc.
    pub ifindex: u32,
    /// `major:minor` of the class.
    pub classid: u32,
    /// Parent class or qdisc.
    pub parent: u32,
    /// The class's kind (`htb` for ours).
    pub kind: String,
    /// Guaranteed rate, bytes/s.
    pub rate: u64,
    /// Ceiling, bytes/s.
    pub ceil: u64,
    /// Bucket at `rate`, in 64 ns ticks.
    pub buffer_ticks: u32,
    /// Bucket at `ceil`, in 64 ns ticks.
    pub cbuffer_ticks: u32,
    /// DRR quantum, bytes.
    pub quantum: u32,
    /// Bytes the class sent (dequeued), headers included.
    pub bytes: u64,
    /// Packets the class sent (a GSO packet counts once).
    pub packets: u64,
    /// Packets its queue dropped.
    pub drops: u64,
    /// Times the class had to wait for tokens.
    pub overlimits: u64,
}

/// One u32 key: `(word at network header + off) & mask == val`, with
/// `mask` and `val` in host order of the big-endian word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct U32Match {
    /// Mask over the 32-bit word.
    pub mask: u32,
    /// Value after masking.
    pub val: u32,
    /// Byte offset from the network header.
    pub off: i32,
}

/// A u32 filter that sends matching packets to an HTB class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierSpec {
    /// Filter priority (one u32 instance per prio and protocol).
    pub prio: u16,
    /// `ETH_P_IP` or [`ETH_P_IPV6`].
    pub protocol: u16,
    /// All must match (a CIDR is one to four keys).
    pub keys: Vec<U32Match>,
    /// The class matching packets go to.
    pub classid: u32,
}

/// A bfifo qdisc as dumped: where it hangs and its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fifo {
    /// Its handle (`major:0`).
    pub handle: u32,
    /// The class it queues for.
    pub parent: u32,
    /// `bfifo` (true) or `pfifo`.
    pub bytes_mode: bool,
    /// Its limit (bytes for bfifo, packets for pfifo).
    pub limit: u32,
}

/// `TCA_OPTIONS` of the root htb: `TCA_HTB_INIT` naming the default class
/// and an explicit direct queue.
pub fn encode_htb_init(default_minor: u32) -> Vec<u8> {
    let mut glob = Vec::with_capacity(20);
    glob.extend_from_slice(&TC_HTB_PROTOVER.to_ne_bytes());
    glob.extend_from_slice(&10u32.to_ne_bytes()); // rate2quantum: unused, quanta are explicit
    glob.extend_from_slice(&default_minor.to_ne_bytes());
    glob.extend_from_slice(&0u32.to_ne_bytes()); // debug
    glob.extend_from_slice(&0u32.to_ne_bytes()); // direct_pkts (read-only)
    let mut out = Vec::with_capacity(36);
    push_nla(&mut out, TCA_HTB_INIT, &glob);
    push_nla(&mut out, TCA_HTB_DIRECT_QLEN, &DIRECT_QLEN.to_ne_bytes());
    out
}

/// `TCA_OPTIONS` of one class: `TCA_HTB_PARMS`, plus the 64-bit rates when
/// they do not fit 32 bits.
pub fn encode_htb_class(spec: &HtbClassSpec) -> Vec<u8> {
    let mut opt = Vec::with_capacity(HTB_OPT_LEN);
    ratespec(&mut opt, spec.rate);
    ratespec(&mut opt, spec.ceil);
    opt.extend_from_slice(&burst_to_ticks(spec.rate, spec.burst).to_ne_bytes());
    opt.extend_from_slice(&burst_to_ticks(spec.ceil, spec.cburst).to_ne_bytes());
    opt.extend_from_slice(&spec.quantum.to_ne_bytes());
    opt.extend_from_slice(&0u32.to_ne_bytes()); // level (kernel's)
    opt.extend_from_slice(&0u32.to_ne_bytes()); // prio
    debug_assert_eq!(opt.len(), HTB_OPT_LEN);
    let mut out = Vec::with_capacity(80);
    push_nla(&mut out, TCA_HTB_PARMS, &opt);
    if spec.rate > u64::from(u32::MAX) {
        push_nla(&mut out, TCA_HTB_RATE64, &spec.rate.to_ne_bytes());
    }
    if spec.ceil > u64::from(u32::MAX) {
        push_nla(&mut out, TCA_HTB_CEIL64, &spec.ceil.to_ne_bytes());
    }
    out
}

/// Decodes an RTM_NEWTCLASS payload: kind, htb parameters and counters.
fn class_from_raw(payload: &[u8]) -> Option<HtbClass> {
    let mut c = HtbClass {
        ifindex: crate::read_u32(payload, 4)?,
        classid: crate::read_u32(payload, 8)?,
        parent: crate::read_u32(payload, 12)?,
        ..Default::default()
    };
    let (mut rate64, mut ceil64) = (0u64, 0u64);
    let mut options = None;
    let (kind, counters) =
        crate::tc::kind_and_counters(payload.get(TCMSG_LEN..)?, &mut |ty, p| {
            if ty == TCA_OPTIONS {
                options = Some(p);
            }
        })?;
    for (oty, op) in crate::raw_attrs(options.unwrap_or_default()) {
        match oty {
            TCA_HTB_PARMS if op.len() >= HTB_OPT_LEN => {
                c.rate = u64::from(crate::read_u32(op, 8)?);
                c.ceil = u64::from(crate::read_u32(op, 20)?);
                c.buffer_ticks = crate::read_u32(op, 24)?;
                c.cbuffer_ticks = crate::read_u32(op, 28)?;
                c.quantum = crate::read_u32(op, 32)?;
            }
            TCA_HTB_RATE64 => rate64 = crate::read_u64(op, 0)?,
            TCA_HTB_CEIL64 => ceil64 = crate::read_u64(op, 0)?,
            _ => {}
        }
    }
    c.kind = kind;
    c.bytes = counters.bytes;
    c.packets = counters.packets;
    c.drops = counters.drops;
    c.overlimits = counters.overlimits;
    c.rate = c.rate.max(rate64);
    c.ceil = c.ceil.max(ceil64);
    Some(c)
}

/// Decodes an RTM_NEWQDISC payload when it is a fifo.
fn fifo_from_raw(payload: &[u8]) -> Option<Fifo> {
    let handle = crate::read_u32(payload, 8)?;
    let parent = crate::read_u32(payload, 12)?;
    let mut kind = String::new();
    let mut limit = None;
    for (ty, p) in crate::raw_attrs(payload.get(TCMSG_LEN..)?) {
        match ty {
            TCA_KIND => kind = crate::c_string(p),
            // struct tc_fifo_qopt { u32 limit; }, not nested
            TCA_OPTIONS => limit = crate::read_u32(p, 0),
            _ => {}
        }
    }
    let bytes_mode = match kind.as_str() {
        "bfifo" => true,
        "pfifo" => false,
        _ => return None,
    };
    Some(Fifo {
        handle,
        parent,
        bytes_mode,
        limit: limit?,
    })
}

/// The u32 keys matching `prefix_len` leading bits of an address whose
/// big-endian words are `words`, at `off` from the network header. A /0
/// is one key with mask 0: it matches every packet of the protocol.
pub fn prefix_keys(words: &[u32], prefix_len: u8, off: i32) -> Vec<U32Match> {
    let mut keys = Vec::with_capacity(words.len());
    let mut left = u32::from(prefix_len);
    for (i, w) in words.iter().enumerate() {
        if left == 0 {
            break;
        }
        let bits = left.min(32);
        let mask = if bits == 32 {
            u32::MAX
        } else {
            !(u32::MAX >> bits)
        };
        keys.push(U32Match {
            mask,
            val: w & mask,
            off: off + 4 * i as i32,
        });
        left -= bits;
    }
    if keys.is_empty() {
        keys.push(U32Match {
            mask: 0,
            val: 0,
            off,
        });
    }
    keys
}

impl Netlink {
    /// Adds a root htb (`handle:`) whose unclassified traffic goes to
    /// `handle:default_minor`. Exclusive: an existing root (ours or not) is
    /// the caller's to judge and remove first; the kernel cannot change a
    /// qdisc's kind in place.
    pub fn add_root_htb(&mut self, index: u32, handle: u32, default_minor: u32) -> Result<()> {
        let header = crate::tc::tc_header(index, TC_H_ROOT, handle, 0)?;
        let attrs = vec![
            TcAttribute::Kind("htb".to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, encode_htb_init(default_minor))),
        ];
        self.request(
            &format!("add root htb on link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(crate::tc::tc_message(header, attrs)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Adds one HTB class.
    pub fn add_htb_class(&mut self, index: u32, spec: &HtbClassSpec) -> Result<()> {
        if spec.rate == 0 || spec.ceil == 0 || spec.quantum == 0 {
            return Err(NlError::invalid_input(
                "htb rate, ceil and quantum must be non-zero",
            ));
        }
        let header = crate::tc::tc_header(index, spec.parent, spec.classid, 0)?;
        let attrs = vec![
            TcAttribute::Kind("htb".to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, encode_htb_class(spec))),
        ];
        self.request(
            &format!("add htb class {:x} on link #{index}", spec.classid),
            RouteNetlinkMessage::NewTrafficClass(crate::tc::tc_message(header, attrs)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Puts a bfifo of `limit_bytes` under class `parent`, so the class's
    /// queue is bounded in bytes (time at its rate), not by txqueuelen.
    pub fn add_leaf_bfifo(
        &mut self,
        index: u32,
        parent: u32,
        handle: u32,
        limit_bytes: u32,
    ) -> Result<()> {
        let header = crate::tc::tc_header(index, parent, handle, 0)?;
        let attrs = vec![
            TcAttribute::Kind("bfifo".to_string()),
            TcAttribute::Other(DefaultNla::new(
                TCA_OPTIONS,
                limit_bytes.to_ne_bytes().to_vec(),
            )),
        ];
        self.request(
            &format!("add bfifo under {parent:x} on link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(crate::tc::tc_message(header, attrs)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Adds a u32 filter under qdisc `parent` sending matches to a class.
    /// The kernel numbers u32 entries in the order they are added, and
    /// tries them in that order: callers add the most specific first.
    pub fn add_u32_classifier(
        &mut self,
        index: u32,
        parent: u32,
        spec: &ClassifierSpec,
    ) -> Result<()> {
        let keys: Vec<TcU32Key> = spec
            .keys
            .iter()
            .map(|k| {
                let mut key = TcU32Key::default();
                key.mask = k.mask;
                key.val = k.val;
                key.off = k.off;
                key
            })
            .collect();
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys =
            u8::try_from(keys.len()).map_err(|_| NlError::invalid_input("too many u32 keys"))?;
        sel.keys = keys;
        let header = crate::tc::tc_header(
            index,
            parent,
            0,
            crate::tc::filter_info(spec.prio, spec.protocol),
        )?;
        let attrs = vec![
            TcAttribute::Kind("u32".to_string()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(spec.classid))),
                TcOption::U32(TcFilterU32Option::Selector(sel)),
            ]),
        ];
        self.request(
            &format!(
                "add u32 classifier prio {} to class {:x} on link #{index}",
                spec.prio, spec.classid
            ),
            RouteNetlinkMessage::NewTrafficFilter(crate::tc::tc_message(header, attrs)),
            NLM_F_CREATE,
        )?;
        Ok(())
    }

    /// The HTB classes of one interface with their counters (the kernel
    /// dumps classes per interface).
    pub fn htb_classes(&mut self, index: u32) -> Result<Vec<HtbClass>> {
        let header = crate::tc::tc_header(index, 0, 0, 0)?;
        let mut out = Vec::new();
        self.dump_each(
            &format!("dump classes of link #{index}"),
            RouteNetlinkMessage::GetTrafficClass(crate::tc::tc_message(header, vec![])),
            &mut |msg| match msg {
                Some((RTM_NEWTCLASS, p)) => {
                    out.extend(class_from_raw(p).filter(|c| c.kind == "htb"))
                }
                Some(_) => {}
                None => out.clear(),
            },
        )?;
        Ok(out)
    }

    /// The fifo qdisc under class `parent`, if any (asked for by parent,
    /// like [`Netlink::top_qdiscs`]: no node-wide dump).
    pub fn fifo_under(&mut self, index: u32, parent: u32) -> Result<Option<Fifo>> {
        let header = crate::tc::tc_header(index, parent, 0, 0)?;
        let mut out = None;
        let asked = self.request_each(
            &format!("get qdisc under {parent:x} of link #{index}"),
            RouteNetlinkMessage::GetQueueDiscipline(crate::tc::tc_message(header, vec![])),
            NLM_F_ECHO,
            &mut |msg| {
                if let Some((RTM_NEWQDISC, p)) = msg {
                    out = out.or(fifo_from_raw(p));
                }
            },
        );
        match asked {
            Ok(()) => Ok(out),
            Err(e) if e.is_not_found() || e.errno() == Some(nix::libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_options_layout() {
        let spec = HtbClassSpec {
            classid: 0x1_0010,
            parent: 0x1_0001,
            rate: 2_500_000,
            ceil: 25_000_000,
            burst: 62_500,
            cburst: 625_000,
            quantum: 9015,
        };
        let b = encode_htb_class(&spec);
        assert_eq!(b.len(), 4 + HTB_OPT_LEN, "no 64-bit rates below 2^32");
        let o = &b[4..];
        assert_eq!(o[1], crate::tc::TC_LINKLAYER_ETHERNET);
        assert_eq!(crate::read_u32(o, 8), Some(2_500_000));
        assert_eq!(crate::read_u32(o, 20), Some(25_000_000));
        // 62.5 kB at 2.5 MB/s = 25 ms = 390625 ticks of 64 ns
        assert_eq!(crate::read_u32(o, 24), Some(390_625));
        assert_eq!(crate::read_u32(o, 32), Some(9015));
        let fast = HtbClassSpec {
            rate: 12_500_000_000,
            ceil: 12_500_000_000,
            ..spec
        };
        let b = encode_htb_class(&fast);
        assert_eq!(b.len(), 4 + HTB_OPT_LEN + 2 * 12, "RATE64 and CEIL64");
    }

    #[test]
    fn prefix_keys_cover_v4_and_v6() {
        let v4 = prefix_keys(&[0x0A01_0000], 16, 12);
        assert_eq!(
            v4,
            vec![U32Match {
                mask: 0xFFFF_0000,
                val: 0x0A01_0000,
                off: 12
            }]
        );
        let v6 = prefix_keys(&[0x2600_1f14, 0x0001_00ff, 0, 1], 56, 24);
        assert_eq!(v6.len(), 2);
        assert_eq!(v6[1].mask, 0xFFFF_FF00);
        assert_eq!(v6[1].val, 0x0001_0000);
        assert_eq!(v6[1].off, 28);
        assert_eq!(prefix_keys(&[1, 2, 3, 4], 128, 8).len(), 4);
        let all = prefix_keys(&[0x0A00_0000], 0, 16);
        assert_eq!(all[0].mask, 0, "a /0 matches everything");
    }
}
