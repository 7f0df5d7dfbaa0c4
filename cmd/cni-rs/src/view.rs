//! The node's attachments as an operator sees them: both plugins' state
//! files joined with live kernel counters. Read-only: nothing here writes
//! a state file or touches a device.
//!
//! Cost: one link dump and one qdisc dump for the whole node, whatever the
//! number of pods. Only pods shaped inside their own namespace
//! (`egressMode: pod`) need one more dump each, in that namespace.

use anyhow::Context as _;
use bandwidth_plugin::config::EgressMode;
use bandwidth_plugin::record::Installed;
use cni_netlink::tc::{QdiscCounters, TBF_HANDLE, TC_H_ROOT};
use cni_netlink::{LinkCounters, Netlink};
use cni_types::env::{NetnsId, PodRef};
use cni_types::state::{Survey, Surveyed, survey};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use topology_label_plugin::state::Summary as LabelSummary;

/// Where the plugins keep their state (their `stateDir`s).
#[derive(Debug, Clone)]
pub struct Sources {
    pub bandwidth: PathBuf,
    pub topology_label: PathBuf,
}

/// One direction of an attachment. `ingress` is into the pod (the host
/// veth transmits it), `egress` out of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Direction {
    /// The rate given to the kernel; `None` when unshaped.
    pub rate_bits_per_second: Option<u64>,
    /// Bytes through the pod's host veth as the kernel counts them there:
    /// a GSO super-packet (up to 64 KiB of TCP payload) counts once, with
    /// one set of headers, so this is the payload plus well under 1% (the
    /// sum of frame sizes after segmentation is up to 4.5% more at MTU
    /// 1500). `None` when the device is gone.
    pub bytes: Option<u64>,
    /// Packets through the host veth (a GSO super-packet counts once).
    pub packets: Option<u64>,
    /// Packets our tbf dropped (its queue was full); 0 when unshaped.
    pub drops: Option<u64>,
    /// Times a packet waited for tokens: the pod hit its limit.
    pub overlimits: Option<u64>,
    /// Per traffic class (`sameZone`, `crossZone`, `outside`, or
    /// `shaped`/`unshaped` for subnets): what the class's htb leaf sent,
    /// headers of every frame included; for egress shaped inside the pod,
    /// what the host-side backstop let through (IP packets as the host
    /// veth received them). Empty without classes.
    pub classes: BTreeMap<String, ClassCounters>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClassCounters {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
}

/// A pod's bytes by zone class, both directions summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneBytes {
    pub same_zone: u64,
    pub cross_zone: u64,
    pub outside: u64,
}

impl ZoneBytes {
    pub fn add(&mut self, o: ZoneBytes) {
        self.same_zone += o.same_zone;
        self.cross_zone += o.cross_zone;
        self.outside += o.outside;
    }
}

/// One attachment (a pod's interface on one network), or a state file that
/// could not be read (`error` set, identity unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    pub network: Option<String>,
    pub zone: Option<String>,
    pub host_veth: Option<String>,
    pub egress_mode: Option<String>,
    pub ingress: Direction,
    pub egress: Direction,
    /// Bytes by zone class, both directions (see [`crate::cost`]); `None`
    /// without zone classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_bytes: Option<ZoneBytes>,
    /// The cross-zone bytes at the inter-AZ price (`--price-per-gb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub est_cost_usd: Option<f64>,
    /// The recorded devices are gone (the pod was deleted without a DEL).
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything one look at the node found.
#[derive(Debug, Default)]
pub struct NodeView {
    pub rows: Vec<Row>,
    /// Whether any state dir could be read (a missing one reads as empty).
    pub anything_read: bool,
    /// Sources that could not be read, with why (also shown to the operator).
    pub problems: Vec<String>,
}

/// Reads both state dirs and the kernel's counters and joins them.
pub fn look(sources: &Sources) -> NodeView {
    let mut view = NodeView::default();
    // Three independent reads, side by side: each state dir is thousands
    // of small files on a big node, and the kernel's answers are dumps.
    let (bw, tl, kernel) = std::thread::scope(|s| {
        let kernel = s.spawn(Kernel::read);
        let tl = s.spawn(|| {
            survey::<LabelSummary>(
                &sources.topology_label,
                topology_label_plugin::apply::STATE_OWNER,
            )
        });
        let bw = survey::<Installed>(
            &sources.bandwidth,
            <bandwidth_plugin::Bandwidth as cni_types::skel::Plugin>::NAME,
        );
        (bw, joined(tl.join()), joined(kernel.join()))
    });
    let bw = found(
        bw,
        <bandwidth_plugin::Bandwidth as cni_types::skel::Plugin>::NAME,
        &mut view,
    );
    let tl = found(tl, topology_label_plugin::apply::STATE_OWNER, &mut view);
    // Without the kernel's counters the state alone is still worth
    // printing (counters shown as unknown); without any state there is
    // nothing to show.
    let kernel = match kernel {
        Ok(k) => Some(k),
        Err(e) => {
            view.problems.push(format!("kernel counters: {e:#}"));
            None
        }
    };
    view.rows.reserve(bw.found.len().max(tl.found.len()));
    for (mut b, mut t) in pair_by_attachment(bw.found, tl.found) {
        let (network, container_id, ifname) = match (&mut b, &mut t) {
            (Some(s), _) => take_identity(s),
            (None, Some(s)) => take_identity(s),
            (None, None) => continue,
        };
        let mut row = Row {
            network: Some(network),
            container_id: Some(container_id),
            ifname: Some(ifname),
            ..Default::default()
        };
        fill(&mut row, b.as_ref(), t.as_ref(), kernel.as_ref());
        view.rows.push(row);
    }
    for (path, why) in bw.broken.into_iter().chain(tl.broken) {
        view.rows.push(Row {
            stale: true,
            error: Some(format!("{}: {why}", path.display())),
            ..Default::default()
        });
    }
    sort_rows(&mut view.rows);
    view
}

/// By namespace, pod, container, interface: the order operators read. A
/// row is ~0.5 KB, so the order is found on indices and the rows moved once.
fn sort_rows(rows: &mut Vec<Row>) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&rows[a], &rows[b]);
        (&a.namespace, &a.pod, &a.container_id, &a.ifname, &a.error).cmp(&(
            &b.namespace,
            &b.pod,
            &b.container_id,
            &b.ifname,
            &b.error,
        ))
    });
    let mut taken: Vec<Option<Row>> = std::mem::take(rows).into_iter().map(Some).collect();
    rows.extend(order.into_iter().filter_map(|i| taken[i].take()));
}

/// One attachment's records: bandwidth's and topology-label's.
type Records = (Option<Surveyed<Installed>>, Option<Surveyed<LabelSummary>>);

/// A record's attachment: network, container, interface.
fn identity<T>(s: &Surveyed<T>) -> (&str, &str, &str) {
    (&s.network, &s.container_id, &s.ifname)
}

/// The identity strings, moved out for the row (the rest of a row is
/// filled from the records' data).
fn take_identity<T>(s: &mut Surveyed<T>) -> (String, String, String) {
    (
        std::mem::take(&mut s.network),
        std::mem::take(&mut s.container_id),
        std::mem::take(&mut s.ifname),
    )
}

/// Sorted by identity, keeping the first (in file name order) of each.
fn one_per_identity<T>(records: &mut Vec<Surveyed<T>>) {
    records.sort_by(|x, y| identity(x).cmp(&identity(y)));
    records.dedup_by(|x, y| identity(x) == identity(y));
}

/// Both plugins' records paired by attachment: each list sorted by
/// identity, then merged, so no identity is copied or hashed (1000 pods
/// are 2000 records). A second record of the same identity in one
/// directory (a file under an earlier version's name) is left out: the
/// first by file name counts.
fn pair_by_attachment(
    mut bw: Vec<Surveyed<Installed>>,
    mut tl: Vec<Surveyed<LabelSummary>>,
) -> Vec<Records> {
    use std::cmp::Ordering;
    one_per_identity(&mut bw);
    one_per_identity(&mut tl);
    let mut out = Vec::with_capacity(bw.len().max(tl.len()));
    let (mut bw, mut tl) = (bw.into_iter().peekable(), tl.into_iter().peekable());
    loop {
        let next = match (bw.peek(), tl.peek()) {
            (Some(b), Some(t)) => identity(b).cmp(&identity(t)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return out,
        };
        out.push(match next {
            Ordering::Less => (bw.next(), None),
            Ordering::Greater => (None, tl.next()),
            Ordering::Equal => (bw.next(), tl.next()),
        });
    }
}

/// A reading thread's answer; a panic there is a failed read, not ours.
fn joined<T>(r: std::thread::Result<anyhow::Result<T>>) -> anyhow::Result<T> {
    r.unwrap_or_else(|_| Err(anyhow::anyhow!("the reading thread panicked")))
}

/// A state dir's survey, or nothing and the reason among the problems.
fn found<T>(survey: anyhow::Result<Survey<T>>, owner: &str, view: &mut NodeView) -> Survey<T> {
    match survey {
        Ok(s) => {
            view.anything_read = true;
            s
        }
        Err(e) => {
            view.problems.push(format!("{owner} state: {e:#}"));
            Survey::default()
        }
    }
}

/// The node's counters, from one dump per object kind.
struct Kernel {
    links: HashMap<u32, LinkCounters>,
    links_by_name: HashMap<String, u32>,
    /// Our root qdisc (see [`is_our_root`]) by device index.
    roots: HashMap<u32, QdiscCounters>,
    /// The counters of our backstop tables (egress shaped inside the pod):
    /// table → (counter, bytes, packets). Empty without nf_tables.
    backstops: HashMap<String, Vec<(String, u64, u64)>>,
}

impl Kernel {
    fn read() -> anyhow::Result<Kernel> {
        let mut nl = Netlink::new().context("opening a netlink socket")?;
        // /proc/net/dev first: a link dump costs the kernel O(pods²) (see
        // cni_netlink::proc_net_dev); the dump where /proc is not there.
        let links = match cni_netlink::proc_net_dev::link_counters() {
            Ok(links) => links,
            Err(_) => nl.link_counters().context("dumping links")?,
        };
        let qdiscs = nl.qdisc_counters().context("dumping qdiscs")?;
        // Best effort: a node without nf_tables has no backstops to read.
        let backstops = cni_netlink::nft::Nft::new()
            .and_then(|mut n| n.all_counters())
            .unwrap_or_default();
        Ok(Kernel::new(links, qdiscs, backstops))
    }

    fn new(
        links: Vec<LinkCounters>,
        qdiscs: Vec<QdiscCounters>,
        backstops: HashMap<String, Vec<(String, u64, u64)>>,
    ) -> Kernel {
        Kernel {
            links_by_name: links.iter().map(|l| (l.name.clone(), l.index)).collect(),
            links: links.into_iter().map(|l| (l.index, l)).collect(),
            // Looked up once per attachment: a map, not a scan of the
            // node's every qdisc per pod.
            roots: qdiscs
                .into_iter()
                .filter(is_our_root)
                .map(|q| (q.ifindex, q))
                .collect(),
            backstops,
        }
    }

    /// Our root tbf (`1:`) on a device, if it is there.
    fn root_tbf(&self, ifindex: u32) -> Option<&QdiscCounters> {
        self.roots.get(&ifindex)
    }
}

/// Our root `1:` on a device: a tbf, or the htb of traffic classes.
fn is_our_root(q: &QdiscCounters) -> bool {
    q.parent == TC_H_ROOT && q.handle == TBF_HANDLE && (q.kind == "tbf" || q.kind == "htb")
}

/// Our root on the device `ifindex`, among `qdiscs`.
fn root_tbf_in(qdiscs: &[QdiscCounters], ifindex: u32) -> Option<&QdiscCounters> {
    qdiscs
        .iter()
        .find(|q| q.ifindex == ifindex && is_our_root(q))
}

/// The named classes' counters on one device of the current namespace
/// (class dumps are per device: one request per shaped device of a pod
/// with classes).
fn class_counters(bw: &Installed, ifindex: u32) -> BTreeMap<String, ClassCounters> {
    let Ok(classes) = Netlink::new().and_then(|mut nl| nl.htb_classes(ifindex)) else {
        return BTreeMap::new();
    };
    classes
        .into_iter()
        .filter_map(|c| {
            let rec = bw
                .classes
                .iter()
                .find(|r| TBF_HANDLE | r.minor == c.classid)?;
            Some((
                rec.name.as_str().to_string(),
                ClassCounters {
                    bytes: c.bytes,
                    packets: c.packets,
                    drops: c.drops,
                    overlimits: c.overlimits,
                },
            ))
        })
        .collect()
}

/// Fills one attachment's row from its state records and the kernel.
fn fill(
    row: &mut Row,
    b: Option<&Surveyed<Installed>>,
    t: Option<&Surveyed<LabelSummary>>,
    kernel: Option<&Kernel>,
) {
    let bw: Option<&Installed> = b.map(|s| &s.data);
    let tl: Option<&LabelSummary> = t.map(|s| &s.data);
    let host = fill_from_records(row, bw, tl);
    let Some(kernel) = kernel else { return };
    let link = host
        .as_ref()
        .and_then(|(index, name)| kernel.links.get(index).filter(|l| &l.name == name));
    let Some(link) = link else {
        row.stale = true;
        return;
    };
    let ifb = fill_device_counters(row, bw, link, kernel);
    let ifname = row.ifname.as_deref().unwrap_or_default();
    if let Some(bw) = bw.filter(|b| !b.classes.is_empty()) {
        if bw.ingress_tbf {
            row.ingress.classes = class_counters(bw, link.index);
        }
        row.egress.classes = match (ifb, bw.pod_tbf) {
            (Some(ifb), _) => class_counters(bw, ifb.index),
            (None, true) => pod_side_classes(bw, ifname),
            (None, false) => BTreeMap::new(),
        };
    }
    let (ingress_q, egress_q) =
        shaping_counters(bw, link.index, ifb.map(|l| l.index), ifname, kernel);
    fill_throttled(&mut row.ingress, ingress_q);
    fill_throttled(&mut row.egress, egress_q);
    let backstop = bw
        .and_then(|b| b.backstop.as_ref())
        .and_then(|t| kernel.backstops.get(t));
    if let Some(counters) = backstop {
        count_backstop(&mut row.egress, counters);
    }
}

/// The part of a row the state records alone give: who, where, how shaped.
/// Returns the host veth as recorded (index, name), for the caller to find
/// in the kernel's links.
fn fill_from_records(
    row: &mut Row,
    bw: Option<&Installed>,
    tl: Option<&LabelSummary>,
) -> Option<(u32, String)> {
    let pod: Option<&PodRef> = bw
        .and_then(|b| b.pod.as_ref())
        .or(tl.and_then(|t| t.pod.as_ref()));
    row.namespace = pod.map(|p| p.namespace.clone());
    row.pod = pod.map(|p| p.name.clone());
    row.zone = tl.and_then(|t| t.zone.clone());
    // The host veth as recorded: index and name must both still match.
    let host = bw
        .map(|b| (b.host_index, b.host_veth.clone()))
        .or(tl.and_then(|t| t.host.as_ref().map(|h| (h.index, h.name.clone()))));
    row.host_veth = host.as_ref().map(|h| h.1.clone());
    row.egress_mode = bw.and_then(|b| b.egress_mode).map(|m| match m {
        EgressMode::Pod => "pod".to_string(),
        _ => "ifb".to_string(),
    });
    row.ingress.rate_bits_per_second = bw.and_then(|b| b.ingress_rate);
    row.egress.rate_bits_per_second = bw.and_then(|b| b.egress_rate);
    host
}

/// Bytes and packets of both directions from the devices' counters: the
/// host veth's, or for egress the ifb's when there is one. Returns the
/// ifb's link, which the class and tbf counters are read from too.
fn fill_device_counters<'k>(
    row: &mut Row,
    bw: Option<&Installed>,
    link: &LinkCounters,
    kernel: &'k Kernel,
) -> Option<&'k LinkCounters> {
    row.ingress.bytes = Some(link.tx_bytes);
    row.ingress.packets = Some(link.tx_packets);
    row.egress.bytes = Some(link.rx_bytes);
    row.egress.packets = Some(link.rx_packets);
    // In ifb mode the host veth receives what the pod sent, including what
    // the ifb's tbf then drops: what left the pod's shaper is what the
    // ifb's root sent on (in pod mode and unshaped, the veth already sees
    // that). The root's counters, not the ifb's: the root is this pod's
    // own, while the ifb may have served a pod before (a parked ifb taken
    // again keeps its device counters; see bandwidth's ifb_pool).
    let ifb = bw
        .and_then(|b| b.ifb.as_ref())
        .and_then(|name| kernel.links_by_name.get(name))
        .and_then(|i| kernel.links.get(i));
    if let Some(ifb) = ifb {
        let (bytes, packets) = kernel
            .root_tbf(ifb.index)
            .map_or((ifb.tx_bytes, ifb.tx_packets), |q| (q.bytes, q.packets));
        row.egress.bytes = Some(bytes);
        row.egress.packets = Some(packets);
    }
    ifb
}

/// One direction's drops and overlimits from the tbf shaping it, if found.
fn fill_throttled(dir: &mut Direction, q: Throttled) {
    match (dir.rate_bits_per_second, q) {
        (_, Some((drops, overlimits))) => {
            dir.drops = Some(drops);
            dir.overlimits = Some(overlimits);
        }
        // Unshaped: nothing of ours can drop or hold a packet.
        (None, None) => {
            dir.drops = Some(0);
            dir.overlimits = Some(0);
        }
        // Shaped, but our tbf is not where the record says.
        (Some(_), None) => {}
    }
}

/// Egress shaped inside the pod: what really left it is what the host
/// side's backstop let through (a pod sending past its own qdiscs is
/// counted there, not by the pod's htb), and what it dropped adds to the
/// drops. Per class when there are classes (`sent_<class>`).
fn count_backstop(dir: &mut Direction, counters: &[(String, u64, u64)]) {
    let (mut bytes, mut packets, mut dropped) = (0, 0, 0);
    for (name, b, p) in counters {
        if let Some(class) = name.strip_prefix("sent_") {
            bytes += b;
            packets += p;
            if let Some(c) = dir.classes.get_mut(class) {
                c.bytes = *b;
                c.packets = *p;
            }
        } else if let Some(class) = name.strip_prefix("dropped_") {
            dropped += p;
            if let Some(c) = dir.classes.get_mut(class) {
                c.drops += p;
            }
        }
    }
    dir.bytes = Some(bytes);
    dir.packets = Some(packets);
    dir.drops = Some(dir.drops.unwrap_or(0) + dropped);
}

/// A tbf's (drops, overlimits).
type Throttled = Option<(u64, u64)>;

/// Drops and overlimits of the tbfs shaping each direction (ingress, egress):
/// the host veth's root tbf, and the ifb's (found once, by the caller) or,
/// in pod mode, the one on the container interface `ifname`.
fn shaping_counters(
    bw: Option<&Installed>,
    host_index: u32,
    ifb_index: Option<u32>,
    ifname: &str,
    kernel: &Kernel,
) -> (Throttled, Throttled) {
    let Some(bw) = bw else { return (None, None) };
    let pair = |q: &QdiscCounters| (q.drops, q.overlimits);
    let ingress = bw
        .ingress_tbf
        .then(|| kernel.root_tbf(host_index).map(pair))
        .flatten();
    let egress = match (&bw.ifb, bw.pod_tbf) {
        (Some(_), _) => ifb_index.and_then(|i| kernel.root_tbf(i)).map(pair),
        (None, true) => pod_side_tbf(bw, ifname).map(|q| pair(&q)),
        (None, false) => None,
    };
    (ingress, egress)
}

/// The class counters on the container interface `ifname`, inside the
/// recorded namespace (as [`pod_side_tbf`] finds it).
fn pod_side_classes(bw: &Installed, ifname: &str) -> BTreeMap<String, ClassCounters> {
    in_recorded_pod(bw, ifname, |_, index| Ok(class_counters(bw, index))).unwrap_or_default()
}

/// Runs `f` in the pod's namespace with the index of `ifname` there, only
/// if that namespace is still the recorded one.
fn in_recorded_pod<T>(
    bw: &Installed,
    ifname: &str,
    f: impl FnOnce(&mut Netlink, u32) -> cni_netlink::Result<T>,
) -> Option<T> {
    let path = Path::new(bw.netns_path.as_deref()?);
    let file = cni_types::fsutil::open_nonblocking(path).ok()?;
    let now = NetnsId::of_netns(&file).ok();
    if !NetnsId::matches_record(bw.netns, now) {
        return None;
    }
    cni_netlink::netns::run_in(path, || {
        let mut nl = Netlink::new()?;
        let Some(cont) = nl.link_by_name(ifname)? else {
            return Ok(None);
        };
        Ok(Some(f(&mut nl, cont.index)?))
    })
    .ok()
    .flatten()
}

/// The root tbf on the container interface `ifname`, inside the pod's
/// namespace (egressMode pod), only if that namespace is still the recorded
/// one. The interface is looked up by name, so another attachment's tbf in
/// the same pod (a second interface) is never reported as this one's.
fn pod_side_tbf(bw: &Installed, ifname: &str) -> Option<QdiscCounters> {
    in_recorded_pod(bw, ifname, |nl, index| {
        Ok(root_tbf_in(&nl.qdisc_counters()?, index).cloned())
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(ifindex: u32, parent: u32, handle: u32, kind: &str) -> QdiscCounters {
        QdiscCounters {
            ifindex,
            parent,
            handle,
            kind: kind.into(),
            drops: 3,
            overlimits: 7,
            ..Default::default()
        }
    }

    #[test]
    fn only_our_root_tbf_counts() {
        let qs = vec![
            q(2, TC_H_ROOT, 0x5_0000, "tbf"),
            q(3, TC_H_ROOT, TBF_HANDLE, "pfifo"),
            q(4, 0xFFFF_FFF1, 0xFFFF_0000, "ingress"),
            q(5, TC_H_ROOT, TBF_HANDLE, "tbf"),
        ];
        assert!(root_tbf_in(&qs, 2).is_none(), "a foreign tbf handle");
        assert!(root_tbf_in(&qs, 3).is_none(), "not a tbf");
        assert!(root_tbf_in(&qs, 4).is_none());
        assert_eq!(root_tbf_in(&qs, 5).map(|q| q.overlimits), Some(7));
    }

    fn surveyed<T: serde::de::DeserializeOwned>(data: serde_json::Value) -> Surveyed<T> {
        Surveyed {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            data: serde_json::from_value(data).expect("a record of this version"),
        }
    }

    fn with_identity<T>(mut s: Surveyed<T>, network: &str, container_id: &str) -> Surveyed<T> {
        s.network = network.into();
        s.container_id = container_id.into();
        s
    }

    #[test]
    fn records_pair_by_attachment_whichever_side_has_them() {
        let bw = |n: &str, c: &str, rate: u64| {
            with_identity(
                surveyed::<Installed>(serde_json::json!({
                    "hostVeth": "eni1", "hostIndex": 7, "ingressTbf": true,
                    "ingressQdisc": false, "ingressRate": rate
                })),
                n,
                c,
            )
        };
        let tl = |n: &str, c: &str| {
            with_identity(
                surveyed::<LabelSummary>(serde_json::json!({
                    "version": 1, "container": {"index": 2, "name": "eth0", "prev": {}, "set": {}}
                })),
                n,
                c,
            )
        };
        // Out of order, one only in each survey, one twice in bandwidth's.
        let pairs = pair_by_attachment(
            vec![
                bw("n", "c3", 3),
                bw("n", "c1", 1),
                bw("m", "c9", 9),
                bw("n", "c1", 2),
            ],
            vec![tl("n", "c2"), tl("n", "c1"), tl("n", "c3")],
        );
        let seen: Vec<(String, bool, bool)> = pairs
            .iter()
            .map(|(b, t)| {
                let s = b.as_ref().map(identity).or(t.as_ref().map(identity));
                let (n, c, _) = s.expect("one side");
                (format!("{n}/{c}"), b.is_some(), t.is_some())
            })
            .collect();
        let want = [
            ("m/c9", true, false),
            ("n/c1", true, true),
            ("n/c2", false, true),
            ("n/c3", true, true),
        ];
        assert_eq!(seen, want.map(|(k, b, t)| (k.to_string(), b, t)).to_vec());
        // Of the two n/c1 records, the first survey order's.
        assert_eq!(
            pairs[1].0.as_ref().and_then(|s| s.data.ingress_rate),
            Some(1)
        );
    }

    fn kernel(links: Vec<LinkCounters>, qdiscs: Vec<QdiscCounters>) -> Kernel {
        Kernel::new(links, qdiscs, HashMap::new())
    }

    /// Egress shaped inside the pod reports what passed the host-side
    /// backstop, per class, and adds what it dropped to the drops.
    #[test]
    fn the_backstop_counts_what_really_left_the_pod() {
        let mut dir = Direction {
            drops: Some(3),
            ..Default::default()
        };
        dir.classes
            .insert("crossZone".into(), ClassCounters::default());
        dir.classes
            .insert("outside".into(), ClassCounters::default());
        let counters = [
            ("sent_crossZone".to_string(), 1000, 10),
            ("dropped_crossZone".to_string(), 0, 50),
            ("sent_outside".to_string(), 500, 5),
            ("dropped_outside".to_string(), 0, 1),
        ];
        count_backstop(&mut dir, &counters);
        assert_eq!(
            (dir.bytes, dir.packets, dir.drops),
            (Some(1500), Some(15), Some(54))
        );
        assert_eq!(dir.classes["crossZone"].bytes, 1000);
        assert_eq!(dir.classes["crossZone"].drops, 50);
        assert_eq!(dir.classes["outside"].packets, 5);
    }

    fn link(index: u32, name: &str) -> LinkCounters {
        LinkCounters {
            index,
            name: name.into(),
            rx_bytes: 100,
            rx_packets: 1,
            tx_bytes: 200,
            tx_packets: 2,
        }
    }

    #[test]
    fn shaped_ifb_attachment_joins_both_records_and_counters() {
        let b: Surveyed<Installed> = surveyed(serde_json::json!({
            "hostVeth": "eni1", "hostIndex": 7, "ingressTbf": true, "ifb": "bwp1",
            "ingressQdisc": true, "filterPrio": 1, "egressMode": "ifb",
            "pod": {"namespace": "shop", "name": "web-1"},
            "ingressRate": 10000000, "egressRate": 20000000
        }));
        let t: Surveyed<LabelSummary> = surveyed(serde_json::json!({
            "version": 1, "container": {"index": 2, "name": "eth0",
                "prev": {}, "set": {}},
            "zone": "us-west-2a"
        }));
        let mut ifb_root = q(9, TC_H_ROOT, TBF_HANDLE, "tbf");
        (ifb_root.bytes, ifb_root.packets) = (150, 3);
        let k = kernel(
            vec![link(7, "eni1"), link(9, "bwp1")],
            vec![q(7, TC_H_ROOT, TBF_HANDLE, "tbf"), ifb_root],
        );
        let mut row = Row::default();
        fill(&mut row, Some(&b), Some(&t), Some(&k));
        assert_eq!(row.error, None);
        assert_eq!(
            (row.namespace.as_deref(), row.pod.as_deref()),
            (Some("shop"), Some("web-1"))
        );
        assert_eq!(row.zone.as_deref(), Some("us-west-2a"));
        assert_eq!(row.egress_mode.as_deref(), Some("ifb"));
        assert_eq!(row.ingress.rate_bits_per_second, Some(10_000_000));
        assert_eq!(row.ingress.bytes, Some(200), "into the pod = host veth tx");
        assert_eq!(
            (row.egress.bytes, row.egress.packets),
            (Some(150), Some(3)),
            "out of the pod = what the ifb's tbf sent (not the ifb's own tx: a reused ifb's go back further)"
        );
        assert_eq!(row.ingress.overlimits, Some(7));
        assert_eq!(row.egress.drops, Some(3), "the ifb's tbf");
        assert!(!row.stale);
    }

    #[test]
    fn unshaped_shows_zero_and_gone_devices_are_stale() {
        let t: Surveyed<LabelSummary> = surveyed(serde_json::json!({
            "version": 1, "container": {"index": 2, "name": "eth0", "prev": {}, "set": {}},
            "host": {"index": 7, "name": "eni1", "prev": {}, "set": {}}
        }));
        let k = kernel(vec![link(7, "eni1")], vec![]);
        let mut row = Row::default();
        fill(&mut row, None, Some(&t), Some(&k));
        assert_eq!(row.ingress.rate_bits_per_second, None);
        assert_eq!(
            (row.ingress.drops, row.ingress.overlimits),
            (Some(0), Some(0))
        );
        assert_eq!(row.ingress.bytes, Some(200));
        // The same index now names another device: the pod is gone.
        let k2 = kernel(vec![link(7, "eni2")], vec![]);
        let mut gone = Row::default();
        fill(&mut gone, None, Some(&t), Some(&k2));
        assert!(gone.stale);
        assert_eq!(gone.ingress.bytes, None);
    }
}
