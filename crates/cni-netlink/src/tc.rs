//! Traffic control: qdiscs (tbf, ingress, clsact) and u32/mirred filters
//! (those in `tc_filter.rs`, re-exported here).
//!
//! tbf options are encoded by hand because netlink-packet-route has no tbf
//! support. Every answer is decoded by hand, from the raw bytes, reading
//! only what [`Qdisc`] and [`Filter`] hold: netlink-packet-route's decoders
//! of every tc kind and attribute were a large part of a plugin's code.

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcHeader, TcMessage},
};

use crate::{Netlink, NlError, Result};

#[path = "tc_filter.rs"]
pub(crate) mod filter;
pub use filter::{Filter, Mirred};

/// Parent of the root (egress) qdisc.
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;
/// Parent of the ingress/clsact qdisc.
pub const TC_H_INGRESS: u32 = 0xFFFF_FFF1;
/// Handle of the ingress/clsact qdisc (`ffff:`), also the filter parent on ingress.
pub const INGRESS_HANDLE: u32 = 0xFFFF_0000;
/// Handle we give the root tbf (`1:`), so it can be found and replaced.
pub const TBF_HANDLE: u32 = 0x0001_0000;
/// `TCA_EGRESS_REDIR`: mirred redirects to the target's egress.
pub const TCA_EGRESS_REDIR: i32 = 1;
/// `ETH_P_ALL`: a filter protocol matching every frame.
pub const ETH_P_ALL: u16 = 0x0003;
/// `ETH_P_IP`: a filter protocol matching IPv4 only.
pub const ETH_P_IP: u16 = 0x0800;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
/// `sizeof(struct tcmsg)`: family and padding, ifindex, handle, parent, info.
const TCMSG_LEN: usize = 20;
/// `RTM_NEWQDISC`: a qdisc's description, in dumps and GET answers.
const RTM_NEWQDISC: u16 = 36;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
pub(crate) const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `sizeof(struct tc_tbf_qopt)`.
const TBF_QOPT_LEN: usize = 36;
/// `PSCHED_SHIFT`: one scheduler tick is 64 ns.
const PSCHED_SHIFT: u32 = 6;
const NSEC_PER_SEC: u128 = 1_000_000_000;

/// What a caller wants a tbf to enforce, in the units the CNI config uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfSpec {
    /// Token rate; values >= 2^32 are sent as `TCA_TBF_RATE64`.
    pub rate_bytes_per_sec: u64,
    /// Bucket size, sent as `TCA_TBF_BURST` so the kernel needs no tick maths.
    pub burst_bytes: u32,
    /// Queue limit of the tbf's child bfifo.
    pub limit_bytes: u32,
}

/// The tbf parameters the kernel dumps back, to verify or diff against a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfParams {
    /// Effective rate: the larger of the u32 rate field and `TCA_TBF_RATE64`.
    pub rate_bytes_per_sec: u64,
    /// Queue limit in bytes.
    pub limit_bytes: u32,
    /// Bucket size as time in 64 ns ticks (the kernel does not dump the burst
    /// in bytes); truncated to 32 bits by the kernel.
    pub buffer_ticks: u32,
}

impl TbfParams {
    /// True when the dumped qdisc enforces `spec`, allowing for the kernel's
    /// rounding of the burst time, so a retried ADD can skip the replace.
    pub fn matches(&self, spec: &TbfSpec) -> bool {
        if self.rate_bytes_per_sec != spec.rate_bytes_per_sec
            || self.limit_bytes != spec.limit_bytes
        {
            return false;
        }
        // The kernel truncates its 64-bit tick count to u32 when dumping.
        let want = burst_to_ticks_u64(spec.rate_bytes_per_sec, spec.burst_bytes) as u32;
        let diff = want
            .wrapping_sub(self.buffer_ticks)
            .min(self.buffer_ticks.wrapping_sub(want));
        diff <= 1 + want / 1_000_000
    }
}

/// One qdisc from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    /// Interface the qdisc is attached to.
    pub ifindex: u32,
    /// Qdisc handle (`major:0` as a u32).
    pub handle: u32,
    /// Parent handle ([`TC_H_ROOT`], [`TC_H_INGRESS`] or a class).
    pub parent: u32,
    /// Qdisc kind ("tbf", "ingress", "clsact", "noqueue", ..).
    pub kind: String,
    /// Decoded options when the qdisc is a tbf.
    pub tbf: Option<TbfParams>,
    /// An htb's default class minor (`TCA_HTB_INIT`'s `defcls`).
    pub htb_default: Option<u32>,
}

impl Qdisc {
    /// The device's root qdisc (egress).
    pub fn is_root(&self) -> bool {
        self.parent == TC_H_ROOT
    }

    /// The kernel's default root (handle `0:`): nobody installed it, so
    /// anyone may replace it.
    pub fn is_default_root(&self) -> bool {
        self.is_root() && self.handle == 0
    }

    /// A root tbf with handle `1:`, the layout ours and the reference's use.
    pub fn is_root_tbf(&self) -> bool {
        self.is_root() && self.kind == "tbf" && self.handle == TBF_HANDLE
    }

    /// A root qdisc `1:` of a kind the bandwidth plugin installs there (tbf,
    /// or htb when traffic classes are configured).
    pub fn is_root_shaper(&self) -> bool {
        self.is_root() && self.handle == TBF_HANDLE && (self.kind == "tbf" || self.kind == "htb")
    }

    /// An `ingress` qdisc (not a `clsact`, which sits on the same hook).
    pub fn is_ingress(&self) -> bool {
        self.parent == TC_H_INGRESS && self.kind == "ingress"
    }

    /// A `clsact` (ingress and egress hooks).
    pub fn is_clsact(&self) -> bool {
        self.parent == TC_H_INGRESS && self.kind == "clsact"
    }

    /// Anything on the ingress hook (`ingress` or `clsact`).
    pub fn on_ingress_hook(&self) -> bool {
        self.parent == TC_H_INGRESS
    }
}

fn burst_to_ticks_u64(rate_bytes_per_sec: u64, burst_bytes: u32) -> u64 {
    if rate_bytes_per_sec == 0 {
        return u64::MAX;
    }
    let ns = u128::from(burst_bytes) * NSEC_PER_SEC / u128::from(rate_bytes_per_sec);
    u64::try_from(ns >> PSCHED_SHIFT).unwrap_or(u64::MAX)
}

/// Converts a burst in bytes to the tbf `buffer` field (time to send it at
/// `rate`, in 64 ns ticks), saturating instead of wrapping.
pub fn burst_to_ticks(rate_bytes_per_sec: u64, burst_bytes: u32) -> u32 {
    u32::try_from(burst_to_ticks_u64(rate_bytes_per_sec, burst_bytes)).unwrap_or(u32::MAX)
}

/// Converts a dumped tbf `buffer` (ticks) back to bytes at `rate`, so a
/// dumped qdisc can be compared with a burst in bytes.
pub fn ticks_to_burst(rate_bytes_per_sec: u64, ticks: u32) -> u64 {
    let ns = u128::from(ticks) << PSCHED_SHIFT;
    u64::try_from(ns * u128::from(rate_bytes_per_sec) / NSEC_PER_SEC).unwrap_or(u64::MAX)
}

/// Appends one attribute (header, value, padding) to a raw options payload.
pub(crate) fn push_nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    // Attribute values here are at most 44 bytes, far below u16::MAX.
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + ((4 - len % 4) % 4), 0);
}

/// Appends a `struct tc_ratespec` for `rate` bytes/s (32 bits, saturating:
/// callers send the 64-bit rate as its own attribute). The link layer is
/// Ethernet, so the kernel needs no rate table.
pub(crate) fn ratespec(out: &mut Vec<u8>, rate: u64) {
    out.push(0); // cell_log
    out.push(TC_LINKLAYER_ETHERNET);
    out.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    out.extend_from_slice(&(-1i16).to_ne_bytes()); // cell_align
    out.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    out.extend_from_slice(&u32::try_from(rate).unwrap_or(u32::MAX).to_ne_bytes());
}

/// Builds the nested `TCA_OPTIONS` payload for a tbf: `TCA_TBF_PARMS`,
/// `TCA_TBF_RATE64` when the rate does not fit 32 bits, and `TCA_TBF_BURST`.
pub fn encode_tbf_options(spec: &TbfSpec) -> Vec<u8> {
    let mut qopt = Vec::with_capacity(TBF_QOPT_LEN);
    ratespec(&mut qopt, spec.rate_bytes_per_sec);
    // struct tc_ratespec peakrate: unused
    qopt.extend_from_slice(&[0u8; 12]);
    qopt.extend_from_slice(&spec.limit_bytes.to_ne_bytes());
    qopt.extend_from_slice(
        &burst_to_ticks(spec.rate_bytes_per_sec, spec.burst_bytes).to_ne_bytes(),
    );
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu (peak bucket)
    debug_assert_eq!(qopt.len(), TBF_QOPT_LEN);

    let mut out = Vec::with_capacity(64);
    push_nla(&mut out, TCA_TBF_PARMS, &qopt);
    if spec.rate_bytes_per_sec > u64::from(u32::MAX) {
        push_nla(
            &mut out,
            TCA_TBF_RATE64,
            &spec.rate_bytes_per_sec.to_ne_bytes(),
        );
    }
    push_nla(&mut out, TCA_TBF_BURST, &spec.burst_bytes.to_ne_bytes());
    out
}

/// htb's `TCA_OPTIONS` attribute holding its global parameters (`tc_htb_glob`);
/// here because a qdisc dump decodes an htb's default class, and `htb`
/// builds on this module, never the other way.
pub(crate) const TCA_HTB_INIT: u16 = 2;

/// The default class minor from an htb qdisc's `TCA_OPTIONS` payload.
fn decode_htb_default(opts: &[u8]) -> Option<u32> {
    crate::raw_attrs(opts)
        .find(|(ty, p)| *ty == TCA_HTB_INIT && p.len() >= 20)
        .and_then(|(_, p)| crate::read_u32(p, 8))
}

/// Decodes the nested tbf `TCA_OPTIONS` payload the kernel dumps; `None`
/// when it carries no (valid) `TCA_TBF_PARMS`.
pub fn decode_tbf_options(opts: &[u8]) -> Option<TbfParams> {
    let mut parms: Option<(u32, u32, u32)> = None;
    let mut rate64: u64 = 0;
    for (ty, v) in crate::attrs(opts)? {
        match ty {
            TCA_TBF_PARMS if v.len() >= TBF_QOPT_LEN => {
                parms = Some((
                    crate::read_u32(v, 8)?,
                    crate::read_u32(v, 24)?,
                    crate::read_u32(v, 28)?,
                ));
            }
            TCA_TBF_RATE64 => rate64 = crate::read_u64(v, 0)?,
            _ => {}
        }
    }
    let (rate32, limit, buffer) = parms?;
    Some(TbfParams {
        rate_bytes_per_sec: u64::from(rate32).max(rate64),
        limit_bytes: limit,
        buffer_ticks: buffer,
    })
}

/// Builds the tc header; `info` carries prio and protocol for filters.
pub(crate) fn tc_header(index: u32, parent: u32, handle: u32, info: u32) -> Result<TcHeader> {
    let index = i32::try_from(index)
        .map_err(|_| NlError::invalid_input(format!("ifindex {index} out of range")))?;
    Ok(TcHeader {
        index,
        parent: parent.into(),
        handle: handle.into(),
        info,
        ..Default::default()
    })
}

/// Filter `info`: prio in the upper 16 bits, protocol in network byte order
/// in the lower 16 (what the kernel reads as `htons(ETH_P_*)`).
pub(crate) fn filter_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

pub(crate) fn tc_message(header: TcHeader, attributes: Vec<TcAttribute>) -> TcMessage {
    TcMessage::from_parts(header, attributes)
}

/// The fixed part of an answer's `struct tcmsg` (qdisc, class or filter).
pub(crate) struct TcMsg {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    /// Filters: prio in the upper 16 bits, protocol (network order) below.
    pub info: u32,
}

impl TcMsg {
    pub(crate) fn read(payload: &[u8]) -> Option<TcMsg> {
        Some(TcMsg {
            ifindex: crate::read_u32(payload, 4)?,
            handle: crate::read_u32(payload, 8)?,
            parent: crate::read_u32(payload, 12)?,
            info: crate::read_u32(payload, 16)?,
        })
    }
}

/// The kind (`TCA_KIND`) and options payload (`TCA_OPTIONS`) of a tc
/// answer's attributes, after its `tcmsg`; `None` when they are malformed.
pub(crate) fn kind_and_options(payload: &[u8]) -> Option<(String, Option<&[u8]>)> {
    let mut kind = String::new();
    let mut options = None;
    for (ty, p) in crate::attrs(payload.get(TCMSG_LEN..)?)? {
        match ty {
            TCA_KIND => kind = crate::c_string(p),
            TCA_OPTIONS => options = Some(p),
            _ => {}
        }
    }
    Some((kind, options))
}

/// From an RTM_NEWQDISC payload, by hand; a tbf's or htb's options are
/// decoded as far as they are well formed (a foreign qdisc's odd options
/// leave them unset, they do not fail the answer). `None` when the
/// message itself is cut short or its attributes are malformed.
pub(crate) fn qdisc_from_raw(payload: &[u8]) -> Option<Qdisc> {
    let header = TcMsg::read(payload)?;
    let (kind, options) = kind_and_options(payload)?;
    let (tbf, htb_default) = match (kind.as_str(), options) {
        ("tbf", Some(opts)) => (decode_tbf_options(opts), None),
        ("htb", Some(opts)) => (None, decode_htb_default(opts)),
        _ => (None, None),
    };
    Some(Qdisc {
        ifindex: header.ifindex,
        handle: header.handle,
        parent: header.parent,
        kind,
        tbf,
        htb_default,
    })
}

/// A qdisc's counters (`TCA_STATS2`), for the operator's view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QdiscCounters {
    /// Interface the qdisc is attached to.
    pub ifindex: u32,
    /// Qdisc handle (`major:0` as a u32).
    pub handle: u32,
    /// Parent handle.
    pub parent: u32,
    /// Qdisc kind (`tbf`, `ingress`, ...).
    pub kind: String,
    /// Bytes the qdisc sent on.
    pub bytes: u64,
    /// Packets the qdisc sent on.
    pub packets: u64,
    /// Packets the qdisc dropped (its queue was full).
    pub drops: u64,
    /// Times a packet had to wait for tokens: the "throttled" signal.
    pub overlimits: u64,
}

/// A tc object's counters as the kernel reports them (qdisc or class).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
}

/// The kind and counters among a tc message's attributes (after the
/// `tcmsg` header): `TCA_STATS2`, or on kernels without it `TCA_STATS`.
/// `each` sees every other attribute (type, payload).
pub(crate) fn kind_and_counters<'a>(
    attrs: &'a [u8],
    each: &mut dyn FnMut(u16, &'a [u8]),
) -> Option<(String, Counters)> {
    const TCA_STATS: u16 = 3;
    const TCA_STATS2: u16 = 7;
    const TCA_STATS_BASIC: u16 = 1;
    const TCA_STATS_QUEUE: u16 = 3;
    // 64-bit packet count (the basic stats' is 32 bits and wraps).
    const TCA_STATS_PKT64: u16 = 8;
    let mut kind = String::new();
    let mut c = Counters::default();
    let mut have_stats2 = false;
    let mut old_stats: Option<&[u8]> = None;
    let mut packets64 = None;
    for (ty, p) in crate::raw_attrs(attrs) {
        match ty {
            TCA_KIND => kind = crate::c_string(p),
            TCA_STATS2 => {
                have_stats2 = true;
                for (sty, sp) in crate::raw_attrs(p) {
                    match sty {
                        // struct gnet_stats_basic: bytes u64, packets u32
                        TCA_STATS_BASIC => {
                            c.bytes = crate::read_u64(sp, 0)?;
                            c.packets = u64::from(crate::read_u32(sp, 8)?);
                        }
                        // struct gnet_stats_queue: qlen, backlog, drops,
                        // requeues, overlimits (u32 each)
                        TCA_STATS_QUEUE => {
                            c.drops = u64::from(crate::read_u32(sp, 8)?);
                            c.overlimits = u64::from(crate::read_u32(sp, 16)?);
                        }
                        TCA_STATS_PKT64 => packets64 = crate::read_u64(sp, 0),
                        _ => {}
                    }
                }
            }
            TCA_STATS => old_stats = Some(p),
            other => each(other, p),
        }
    }
    if let Some(p) = packets64 {
        c.packets = p;
    }
    // Kernels without TCA_STATS2: struct tc_stats (bytes u64, packets,
    // drops, overlimits u32).
    if let (false, Some(p)) = (have_stats2, old_stats) {
        c.bytes = crate::read_u64(p, 0)?;
        c.packets = u64::from(crate::read_u32(p, 8)?);
        c.drops = u64::from(crate::read_u32(p, 12)?);
        c.overlimits = u64::from(crate::read_u32(p, 16)?);
    }
    Some((kind, c))
}

/// From an RTM_NEWQDISC payload, unparsed but for the kind and counters.
fn qdisc_counters_from_raw(payload: &[u8]) -> Option<QdiscCounters> {
    let (kind, c) = kind_and_counters(payload.get(TCMSG_LEN..)?, &mut |_, _| {})?;
    Some(QdiscCounters {
        ifindex: crate::read_u32(payload, 4)?,
        handle: crate::read_u32(payload, 8)?,
        parent: crate::read_u32(payload, 12)?,
        kind,
        bytes: c.bytes,
        packets: c.packets,
        drops: c.drops,
        overlimits: c.overlimits,
    })
}

impl Netlink {
    /// The qdiscs at the top of one interface: its root qdisc and the one
    /// on its ingress hook (ingress or clsact), which is all a plugin
    /// judges. Each is asked for by parent (RTM_GETQDISC without
    /// NLM_F_DUMP), so the cost does not grow with the node: a dump lists
    /// every qdisc of every interface, and the kernel does not filter it by
    /// interface. (Older kernels also send a GET's answer to RTNLGRP_TC
    /// listeners, like `tc monitor`: a notification of an unchanged qdisc.)
    pub fn top_qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        let mut out = Vec::with_capacity(2);
        for parent in [TC_H_ROOT, TC_H_INGRESS] {
            let header = tc_header(index, parent, 0, 0)?;
            let asked = self.request_parsed(
                &format!("get qdisc under {parent:#x} of link #{index}"),
                RouteNetlinkMessage::GetQueueDiscipline(tc_message(header, vec![])),
                // The kernel answers a qdisc GET as a notification, sent
                // back to the asker only when it asks for an echo.
                NLM_F_ECHO,
                RTM_NEWQDISC,
                qdisc_from_raw,
            );
            match asked {
                Ok(qdiscs) => out.extend(qdiscs),
                // Nothing there: no such link (ENODEV), no ingress queue yet
                // (ENOENT), or only the kernel's built-in placeholder, which
                // it does not report (EINVAL).
                Err(e) if e.is_not_found() => {}
                Err(e) if e.errno() == Some(nix::libc::EINVAL) && parent == TC_H_INGRESS => {}
                // At the root, EINVAL may also mean a qdisc whose answer does
                // not fit the kernel's GET reply (a large schedule): the dump,
                // which has room, decides, so a foreign root is never missed.
                Err(e) if e.errno() == Some(nix::libc::EINVAL) => {
                    out.extend(
                        self.dump_qdiscs_of(index)?
                            .into_iter()
                            .filter(|q| q.parent == TC_H_ROOT),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every qdisc of the socket's netns with its counters, in one dump:
    /// the operator's view of the whole node costs one request, not one per
    /// pod.
    pub fn qdisc_counters(&mut self) -> Result<Vec<QdiscCounters>> {
        let header = tc_header(0, 0, 0, 0)?;
        let mut out = Vec::new();
        self.dump_each(
            "dump qdiscs with counters",
            RouteNetlinkMessage::GetQueueDiscipline(tc_message(header, vec![])),
            &mut |msg| match msg {
                Some((RTM_NEWQDISC, p)) => out.extend(qdisc_counters_from_raw(p)),
                Some(_) => {}
                None => out.clear(),
            },
        )?;
        Ok(out)
    }

    /// Lists every qdisc of one interface, children included (the kernel
    /// dumps all interfaces; the result is filtered here). Tests use it to
    /// see everything; plugins ask for [`Netlink::top_qdiscs`].
    #[cfg(any(test, feature = "testing"))]
    pub fn qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        self.dump_qdiscs_of(index)
    }

    fn dump_qdiscs_of(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        let header = tc_header(index, 0, 0, 0)?;
        let qdiscs = self.dump_parsed(
            &format!("dump qdiscs of link #{index}"),
            RouteNetlinkMessage::GetQueueDiscipline(tc_message(header, vec![])),
            RTM_NEWQDISC,
            qdisc_from_raw,
        )?;
        Ok(qdiscs.into_iter().filter(|q| q.ifindex == index).collect())
    }

    /// Installs or updates the root tbf (`1:`); create-or-replace makes a
    /// retry with new values succeed and replaces a foreign root qdisc.
    pub fn replace_root_tbf(&mut self, index: u32, spec: &TbfSpec) -> Result<()> {
        if spec.rate_bytes_per_sec == 0 || spec.burst_bytes == 0 {
            return Err(NlError::invalid_input(
                "tbf rate and burst must be non-zero",
            ));
        }
        let header = tc_header(index, TC_H_ROOT, TBF_HANDLE, 0)?;
        let attrs = vec![
            TcAttribute::Kind("tbf".to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, encode_tbf_options(spec))),
        ];
        self.request(
            &format!("replace root tbf on link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(tc_message(header, attrs)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Adds the ingress qdisc exclusively, so an existing ingress/clsact
    /// (possibly owned by someone else) is reported as `EEXIST`.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        self.add_ingress_like(index, "ingress")
    }

    /// Adds a clsact qdisc exclusively (tests use it to stand in for a
    /// policy agent; the plugin, for its hook on the pod's interface).
    pub fn add_clsact_qdisc(&mut self, index: u32) -> Result<()> {
        self.add_ingress_like(index, "clsact")
    }

    fn add_ingress_like(&mut self, index: u32, kind: &str) -> Result<()> {
        let header = tc_header(index, TC_H_INGRESS, INGRESS_HANDLE, 0)?;
        self.request(
            &format!("add {kind} qdisc on link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(tc_message(
                header,
                vec![TcAttribute::Kind(kind.to_string())],
            )),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Deletes a qdisc; `Ok(false)` when it (or the link) is not there, so
    /// teardown is idempotent. Check the kind first: ingress and clsact
    /// share the handle `ffff:`.
    pub fn delete_qdisc(&mut self, index: u32, parent: u32, handle: u32) -> Result<bool> {
        let header = tc_header(index, parent, handle, 0)?;
        self.request_delete(
            &format!("delete qdisc {handle:#x} (parent {parent:#x}) on link #{index}"),
            RouteNetlinkMessage::DelQueueDiscipline(tc_message(header, vec![])),
            0,
        )
    }
}

#[cfg(test)]
#[path = "tc_tests.rs"]
mod tests;
