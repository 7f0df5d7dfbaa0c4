//! The HTB tree of one direction, planned from resolved classes and the
//! pod's limit: class rates and ceilings, leaf queues, quanta and the u32
//! filters that pick a class by peer. Pure arithmetic, unit-tested in
//! `classes_tests.rs`.

use crate::classes::{ClassName, PeerClass, PeerClasses};
use crate::tbf::{L2_HEADER_BYTES, Shape, shape};
use cni_netlink::htb::{ClassifierSpec, ETH_P_IPV6, HtbClassSpec, prefix_keys};
use cni_netlink::tc::ETH_P_IP;
use ipnetwork::IpNetwork;

/// "No limit" for an HTB class, which needs a rate: 100 Gbit/s, above any
/// pod's veth.
pub const UNLIMITED_BYTES_PER_SEC: u64 = 12_500_000_000;
/// Handle of the root htb (`1:`), the same major as the tbf it replaces.
pub const ROOT_HANDLE: u32 = 0x0001_0000;
/// The class holding the pod's limit, parent of every shaped class.
pub const POD_CLASS: u32 = ROOT_HANDLE | 1;
/// Leaf class `i` is `1:(10+i)` (hex), its bfifo `(10+i):`.
const FIRST_LEAF_MINOR: u32 = 0x10;
/// u32 prios on the root htb: one instance per protocol.
pub const PRIO_V4: u16 = 1;
pub const PRIO_V6: u16 = 2;
/// Largest HTB quantum the kernel takes without a warning.
const MAX_QUANTUM: u64 = 200_000;
/// Queue of a class with no limit: it only fills when the device itself
/// pushes back, like a txqueuelen of 1000 frames.
const UNLIMITED_QUEUE_FRAMES: u64 = 1000;

/// Which way traffic flows, which decides where the peer's address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Shaped on the host veth: the peer is the source.
    IntoPod,
    /// Shaped on the ifb or the pod's interface: the peer is the destination.
    OutOfPod,
}

/// One direction's HTB tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtbPlan {
    pub default_minor: u32,
    pub classes: Vec<HtbClassSpec>,
    /// (class, bfifo handle, limit bytes) per leaf.
    pub leaves: Vec<(u32, u32, u32)>,
    pub filters: Vec<ClassifierSpec>,
    /// The leaf class of each named class.
    pub names: Vec<(ClassName, u32)>,
}

/// A leaf's queue: what the tbf would hold (`latencyMs` at the rate, one
/// GSO packet plus a frame at least), but never less than two GSO packets.
/// A class shares its device with the other classes' flows, and one GSO
/// packet of queue left a 20 Mbit/s class of three concurrent flows at
/// 0.93-0.96x in steady state (tail drops of whole GSO packets, and
/// retransmissions lost again behind them); two kept it within 1%
/// (BENCHMARKS.md section 9). Below ~48 Mbit/s at MTU 9001 this floor, not
/// `latencyMs`, bounds the class's wait.
pub(crate) fn leaf_queue(limit_bytes: u32, frame: u64) -> u32 {
    let two_gso = 2 * (crate::tbf::GSO_MAX_BYTES + frame);
    u32::try_from(u64::from(limit_bytes).max(two_gso)).unwrap_or(u32::MAX)
}

pub(crate) fn quantum(rate: u64, frame: u64) -> u32 {
    // As r2q=10 would, but explicit and within the kernel's quiet range.
    (rate / 10).clamp(frame, MAX_QUANTUM) as u32
}

pub(crate) fn filters_for(
    cidrs: &[IpNetwork],
    dir: Direction,
    classid: u32,
) -> Vec<ClassifierSpec> {
    cidrs
        .iter()
        .map(|net| {
            let (prio, protocol, words, off) = match (net, dir) {
                (IpNetwork::V4(n), d) => (
                    PRIO_V4,
                    ETH_P_IP,
                    vec![u32::from(n.network())],
                    if d == Direction::IntoPod { 12 } else { 16 },
                ),
                (IpNetwork::V6(n), d) => {
                    let o = n.network().octets();
                    let words = o
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    (
                        PRIO_V6,
                        ETH_P_IPV6,
                        words,
                        if d == Direction::IntoPod { 8 } else { 24 },
                    )
                }
            };
            ClassifierSpec {
                prio,
                protocol,
                keys: prefix_keys(&words, net.prefix(), off),
                classid,
            }
        })
        .collect()
}

/// The HTB tree for one direction: `pod` is the pod's limit there (None:
/// count only, nothing limited). Pure.
///
/// ```text
/// 1: htb (default: the last class)
/// ├── 1:1  the pod's limit (rate = ceil = pod rate)        [when limited]
/// │   ├── 1:1x  a class with its own cap: rate = ceil = cap (guaranteed)
/// │   └── 1:1y  a class sharing the limit: rate = what caps leave, ceil = pod
/// └── 1:1z  an unshaped class (or every class when counting only): 100G
/// ```
/// Each leaf has a bfifo bounded like our tbf's queue (`latencyMs` at its
/// ceiling, GSO floor), and each CIDR a u32 filter in class order.
/// A shaped class's own cap in direction `dir`: with a pod limit, only a
/// cap below it; without one, any cap (node caps bind every pod). Pure.
pub fn class_cap(
    c: &PeerClass,
    pod: Option<&Shape>,
    dir: Direction,
    mtu: u32,
    latency_ms: u32,
) -> Option<Shape> {
    if !c.shaped {
        return None;
    }
    let l = match dir {
        Direction::IntoPod => c.ingress,
        Direction::OutOfPod => c.egress,
    }?;
    let s = shape(&l, mtu, latency_ms);
    match pod {
        Some(p) => (s.rate_bytes_per_sec < p.rate_bytes_per_sec).then_some(s),
        None => Some(s),
    }
}

/// True when some class has a cap in `dir` that binds a pod without a
/// limit of its own: such a pod is shaped, not only counted.
pub fn caps_bind_unlimited(classes: &PeerClasses, dir: Direction) -> bool {
    classes.classes.iter().any(|c| {
        c.shaped
            && match dir {
                Direction::IntoPod => c.ingress.is_some(),
                Direction::OutOfPod => c.egress.is_some(),
            }
    })
}

pub fn plan(
    classes: &PeerClasses,
    pod: Option<&Shape>,
    dir: Direction,
    mtu: u32,
    latency_ms: u32,
) -> HtbPlan {
    let frame = u64::from(mtu) + L2_HEADER_BYTES;
    let mut out = HtbPlan {
        default_minor: 0,
        classes: Vec::new(),
        leaves: Vec::new(),
        filters: Vec::new(),
        names: Vec::new(),
    };
    if let Some(p) = pod {
        out.classes.push(class(
            POD_CLASS,
            ROOT_HANDLE,
            p.rate_bytes_per_sec,
            p,
            frame,
        ));
    }
    let sizing = Sizing::of(classes, pod, |c| class_cap(c, pod, dir, mtu, latency_ms));
    for (i, c) in classes.classes.iter().enumerate() {
        let minor = FIRST_LEAF_MINOR + i as u32;
        let classid = ROOT_HANDLE | minor;
        let cap = class_cap(c, pod, dir, mtu, latency_ms);
        let (spec, limit) = leaf(classid, pod.filter(|_| c.shaped), cap, &sizing, frame);
        out.classes.push(spec);
        out.leaves.push((classid, minor << 16, limit));
        out.names.push((c.name, minor));
        out.filters.extend(filters_for(&c.cidrs, dir, classid));
        out.default_minor = minor;
    }
    // Per protocol, in class order (the kernel tries one prio after the
    // other, and entries of one prio in the order they were added).
    out.filters.sort_by_key(|f| f.prio);
    out
}

/// How a pod's limit is shared: the sum of the caps inside it (scaled
/// down together if they add up to more than it; each keeps its
/// ceiling) and how many shaped classes share what the caps leave.
struct Sizing {
    caps: u64,
    sharing: u64,
}

impl Sizing {
    fn of(
        classes: &PeerClasses,
        pod: Option<&Shape>,
        cap_of: impl Fn(&PeerClass) -> Option<Shape>,
    ) -> Sizing {
        let shaped = || classes.classes.iter().filter(|c| pod.is_some() && c.shaped);
        Sizing {
            caps: shaped()
                .filter_map(|c| cap_of(c).map(|s| s.rate_bytes_per_sec))
                .sum(),
            sharing: shaped().filter(|c| cap_of(c).is_none()).count() as u64,
        }
    }
}

/// A class of `rate` under `parent`, with `s`'s ceiling and buckets.
fn class(classid: u32, parent: u32, rate: u64, s: &Shape, frame: u64) -> HtbClassSpec {
    HtbClassSpec {
        classid,
        parent,
        rate: rate.max(1),
        ceil: s.rate_bytes_per_sec,
        burst: s.burst_bytes,
        cburst: s.burst_bytes,
        quantum: quantum(s.rate_bytes_per_sec, frame),
    }
}

/// One leaf class and its queue: capped inside the pod's limit, sharing
/// it, capped alone (a pod without a limit), or unlimited.
fn leaf(
    classid: u32,
    shaped_pod: Option<&Shape>,
    cap: Option<Shape>,
    sizing: &Sizing,
    frame: u64,
) -> (HtbClassSpec, u32) {
    let caps = sizing.caps;
    match (shaped_pod, cap) {
        (Some(p), Some(cap)) => {
            let guaranteed = if caps > p.rate_bytes_per_sec {
                (u128::from(cap.rate_bytes_per_sec) * u128::from(p.rate_bytes_per_sec)
                    / u128::from(caps.max(1))) as u64
            } else {
                cap.rate_bytes_per_sec
            };
            let spec = class(classid, POD_CLASS, guaranteed, &cap, frame);
            (spec, leaf_queue(cap.limit_bytes, frame))
        }
        (Some(p), None) => {
            let left = p
                .rate_bytes_per_sec
                .saturating_sub(caps.min(p.rate_bytes_per_sec));
            let share = left / sizing.sharing.max(1);
            (
                class(classid, POD_CLASS, share, p, frame),
                leaf_queue(p.limit_bytes, frame),
            )
        }
        // A node cap holds for a pod without a limit of its own too
        // (asking for nothing must not get more than asking for 1G): the
        // class has its cap, and shares with nothing.
        (None, Some(cap)) => {
            let spec = class(classid, ROOT_HANDLE, cap.rate_bytes_per_sec, &cap, frame);
            (spec, leaf_queue(cap.limit_bytes, frame))
        }
        (None, None) => unlimited(classid, frame),
    }
}

/// A class outside the pod's limit: it only counts.
fn unlimited(classid: u32, frame: u64) -> (HtbClassSpec, u32) {
    let burst = u32::try_from(UNLIMITED_BYTES_PER_SEC / 1000).unwrap_or(u32::MAX);
    let spec = HtbClassSpec {
        classid,
        parent: ROOT_HANDLE,
        rate: UNLIMITED_BYTES_PER_SEC,
        ceil: UNLIMITED_BYTES_PER_SEC,
        burst,
        cburst: burst,
        quantum: MAX_QUANTUM as u32,
    };
    let queue = u32::try_from(UNLIMITED_QUEUE_FRAMES * frame).unwrap_or(u32::MAX);
    (spec, queue)
}
