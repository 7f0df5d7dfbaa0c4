//! The host-side backstop for a pod whose egress is shaped inside the pod
//! (`egressMode: pod`): a `netdev` table of ours whose base chain hooks the
//! host veth's ingress and drops what goes over the pod's limit (and over
//! each class cap), counting per class what really left the pod.
//!
//! Why there: a pod with `CAP_NET_RAW` (containerd's default) sends with
//! `PACKET_QDISC_BYPASS` straight to its veth, past every qdisc and tc hook
//! of its own interface. Every such packet arrives at the host veth, where
//! the pod cannot reach. The host veth's tc ingress hook belongs to the
//! VPC CNI's network policy agent (its filter at prio 1 ends classification
//! with OK, and one attached later runs first); netfilter's `netdev`
//! ingress hook runs right after it, on what the agent let through.
//!
//! Layout of one table (`nft list table netdev cni_bw_…`):
//! - named `limit` objects (`rate over … bytes/second`): `total` for the
//!   pod's limit, `cap_<class>` for each class cap;
//! - named `counter` objects per class: `sent_<class>` (what passed, as
//!   the host veth received it: IP packets, a GSO packet once) and
//!   `dropped_<class>`;
//! - chain `egress` (filter, hook ingress on the host veth, policy accept):
//!   the peer (destination) picks a class chain, in class order, the last
//!   class taking the rest;
//! - chain `class_<name>`: the cap, then the pod's limit, then the count.
//!
//! nf_tables' `limit` keeps a bucket of one second of its rate plus the
//! burst: a flood after a quiet second gets that much extra once, then is
//! held to the rate (docs/bandwidth.md, "The host-side backstop").

use std::net::IpAddr;

use crate::nft::{
    Answer, Attrs, Message, Nft, attr, be32, be64, comment_udata, msg, udata_comment,
};
use crate::{Result, raw_attrs};

/// Table names start with this; GC and the sweep of stale tables look at
/// no other table.
pub const TABLE_PREFIX: &str = "cni_bw_";
/// The base chain's name.
pub const BASE_CHAIN: &str = "egress";
/// The base chain's priority on the ingress hook (`filter`).
const PRIORITY: i32 = 0;
const NF_NETDEV_INGRESS: u32 = 0;
/// The base chain's (hook number, priority, policy): ingress, 0, accept.
pub const BASE_HOOK: (u32, i32, u32) = (NF_NETDEV_INGRESS, PRIORITY, NF_ACCEPT);
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_GOTO: i32 = -4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFT_OBJECT_LIMIT: u32 = 4;
const NFT_LIMIT_PKT_BYTES: u32 = 1;
const NFT_LIMIT_F_INV: u32 = 1;
const NFT_TABLE_F_DORMANT: u32 = 1;
const NFT_META_PROTOCOL: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// A token bucket: bytes per second and burst bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Bytes the bucket holds beyond one second of the rate.
    pub burst_bytes: u32,
}

impl Limit {
    /// The kernel computes `1e9 * (rate + burst) / rate` in a u64.
    pub fn fits_the_kernel(&self) -> bool {
        let sum = self
            .bytes_per_sec
            .saturating_add(u64::from(self.burst_bytes));
        self.bytes_per_sec > 0 && sum.checked_mul(1_000_000_000).is_some()
    }
}

/// A peer prefix (destination of the pod's traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Its address (host bits are masked off).
    pub addr: IpAddr,
    /// Its length in bits.
    pub len: u8,
}

/// One class of peers, in match order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// Names its chain, cap and counter.
    pub name: String,
    /// Peers in these prefixes (ignored for the last class: the rest).
    pub prefixes: Vec<Prefix>,
    /// The class's own cap.
    pub cap: Option<Limit>,
    /// Its traffic counts against the pod's total limit.
    pub in_total: bool,
}

/// Everything one attachment's table holds. With no classes, one implicit
/// class `all` takes every packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backstop {
    /// The table's name ([`TABLE_PREFIX`] and a digest of the attachment).
    pub table: String,
    /// The owner mark (the table's comment).
    pub owner: String,
    /// The host veth whose ingress the base chain hooks.
    pub device: String,
    /// The pod's own limit.
    pub total: Option<Limit>,
    /// The peer classes, in match order.
    pub classes: Vec<Class>,
}

impl Backstop {
    fn effective_classes(&self) -> Vec<Class> {
        if self.classes.is_empty() {
            return vec![Class {
                name: "all".into(),
                prefixes: Vec::new(),
                cap: None,
                in_total: true,
            }];
        }
        self.classes.clone()
    }

    /// The transaction that creates the table (after deleting the table
    /// `replacing`, by handle, in the same transaction). Pure.
    pub(crate) fn messages(&self, replacing: Option<u64>) -> Vec<Message> {
        let t = &self.table;
        let mut out = Vec::new();
        if let Some(handle) = replacing {
            out.push(Message::new(
                msg::DELTABLE,
                Attrs::default().be64(attr::TABLE_HANDLE, handle),
            ));
        }
        let owner = comment_udata(&self.owner);
        let mut table = Message::new(
            msg::NEWTABLE,
            Attrs::default()
                .str(attr::TABLE_NAME, t)
                .bytes(attr::TABLE_USERDATA, &owner),
        );
        if replacing.is_none() {
            // A table that exists after all (a dump that missed it) must
            // fail the batch, never merge into it and duplicate its rules.
            table.flags |= crate::nft::NLM_F_EXCL;
        }
        out.push(table);
        let classes = self.effective_classes();
        if let Some(l) = self.total {
            out.push(limit_object(t, "total", l));
        }
        for c in &classes {
            out.push(counter_object(t, &format!("dropped_{}", c.name)));
            if let Some(l) = c.cap {
                out.push(limit_object(t, &format!("cap_{}", c.name), l));
            }
            out.push(counter_object(t, &format!("sent_{}", c.name)));
            out.push(Message::new(
                msg::NEWCHAIN,
                Attrs::default()
                    .str(attr::CHAIN_TABLE, t)
                    .str(attr::CHAIN_NAME, &format!("class_{}", c.name)),
            ));
        }
        out.push(self.base_chain());
        for (chain, exprs) in self.rules() {
            out.push(Message::new(
                msg::NEWRULE,
                Attrs::default()
                    .str(attr::RULE_TABLE, t)
                    .str(attr::RULE_CHAIN, &chain)
                    .nested(attr::RULE_EXPRESSIONS, exprs.clone())
                    .bytes(
                        attr::RULE_USERDATA,
                        &comment_udata(&rule_mark(&chain, &exprs)),
                    ),
            ));
        }
        out
    }

    fn base_chain(&self) -> Message {
        let hook = Attrs::default()
            .be32(attr::HOOK_HOOKNUM, NF_NETDEV_INGRESS)
            .be32(attr::HOOK_PRIORITY, PRIORITY as u32)
            .str(attr::HOOK_DEV, &self.device);
        Message::new(
            msg::NEWCHAIN,
            Attrs::default()
                .str(attr::CHAIN_TABLE, &self.table)
                .str(attr::CHAIN_NAME, BASE_CHAIN)
                .nested(attr::CHAIN_HOOK, hook)
                .be32(attr::CHAIN_POLICY, NF_ACCEPT)
                .str(attr::CHAIN_TYPE, "filter"),
        )
    }

    /// Each rule as (chain, expressions), in order.
    fn rules(&self) -> Vec<(String, Attrs)> {
        let classes = self.effective_classes();
        let mut out = Vec::new();
        let goto = |c: &Class| immediate_goto(&format!("class_{}", c.name));
        for c in &classes[..classes.len() - 1] {
            for p in &c.prefixes {
                out.push((BASE_CHAIN.to_string(), prefix_match(p).extend(goto(c))));
            }
        }
        if let Some(last) = classes.last() {
            out.push((BASE_CHAIN.to_string(), goto(last)));
        }
        for c in &classes {
            let chain = format!("class_{}", c.name);
            let dropped = format!("dropped_{}", c.name);
            if c.cap.is_some() {
                out.push((
                    chain.clone(),
                    over_limit_drop(&format!("cap_{}", c.name), &dropped),
                ));
            }
            if c.in_total && self.total.is_some() {
                out.push((chain.clone(), over_limit_drop("total", &dropped)));
            }
            let count = expr(
                "objref",
                objref(NFT_OBJECT_COUNTER, &format!("sent_{}", c.name)),
            );
            out.push((chain, count));
        }
        out
    }

    /// What a dump of the table should show: (chain, rule comment) in
    /// order, the limit objects and the counter names. Pure.
    pub fn expected(&self) -> Expected {
        let classes = self.effective_classes();
        let mut limits = Vec::new();
        if let Some(l) = self.total {
            limits.push(("total".to_string(), l));
        }
        for c in &classes {
            if let Some(l) = c.cap {
                limits.push((format!("cap_{}", c.name), l));
            }
        }
        let mut counters = Vec::new();
        for c in &classes {
            counters.push(format!("sent_{}", c.name));
            counters.push(format!("dropped_{}", c.name));
        }
        Expected {
            rules: self
                .rules()
                .into_iter()
                .map(|(chain, e)| {
                    let mark = rule_mark(&chain, &e);
                    (chain, mark)
                })
                .collect(),
            limits,
            counters,
        }
    }
}

/// What a backstop table should hold, for comparison with [`Observed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// (chain, rule comment), in order.
    pub rules: Vec<(String, String)>,
    /// Limit objects by name.
    pub limits: Vec<(String, Limit)>,
    /// Counter object names.
    pub counters: Vec<String>,
}

impl Attrs {
    fn extend(mut self, other: Attrs) -> Attrs {
        self.0.extend_from_slice(&other.0);
        self
    }
}

/// A rule's comment: a digest of its chain and expressions, so CHECK sees
/// a rule replaced by hand (`nft replace rule`) without decoding it.
fn rule_mark(chain: &str, exprs: &Attrs) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in chain.as_bytes().iter().chain(exprs.0.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cni-rs {h:016x}")
}

fn expr(name: &str, data: Attrs) -> Attrs {
    Attrs::default().nested(
        attr::LIST_ELEM,
        Attrs::default()
            .str(attr::EXPR_NAME, name)
            .nested(attr::EXPR_DATA, data),
    )
}

fn objref(kind: u32, name: &str) -> Attrs {
    Attrs::default().be32(1, kind).str(2, name)
}

fn data_value(v: &[u8]) -> Attrs {
    Attrs::default().bytes(1, v)
}

fn verdict(code: i32, chain: Option<&str>) -> Attrs {
    let mut v = Attrs::default().be32(1, code as u32);
    if let Some(c) = chain {
        v = v.str(2, c);
    }
    expr(
        "immediate",
        Attrs::default()
            .be32(1, NFT_REG_VERDICT)
            .nested(2, Attrs::default().nested(2, v)),
    )
}

fn immediate_goto(chain: &str) -> Attrs {
    verdict(NFT_GOTO, Some(chain))
}

/// `limit name X` (an over-limit limit object) then `counter name
/// dropped_<class>`, then `drop`: under the limit, the limit breaks the rule.
fn over_limit_drop(limit: &str, counter: &str) -> Attrs {
    expr("objref", objref(NFT_OBJECT_LIMIT, limit))
        .extend(expr("objref", objref(NFT_OBJECT_COUNTER, counter)))
        .extend(verdict(NF_DROP as i32, None))
}

/// `meta protocol ip[6]; ip[6] daddr & mask == net`.
fn prefix_match(p: &Prefix) -> Attrs {
    let (proto, offset, bytes): (u16, u32, Vec<u8>) = match p.addr {
        IpAddr::V4(a) => (ETH_P_IP, 16, a.octets().to_vec()),
        IpAddr::V6(a) => (ETH_P_IPV6, 24, a.octets().to_vec()),
    };
    let len = bytes.len();
    let mut mask = vec![0u8; len];
    for (i, m) in mask.iter_mut().enumerate() {
        let bits = usize::from(p.len).saturating_sub(i * 8).min(8);
        *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    let net: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
    let reg = NFT_REG_1;
    expr(
        "meta",
        Attrs::default().be32(1, reg).be32(2, NFT_META_PROTOCOL),
    )
    .extend(expr(
        "cmp",
        Attrs::default()
            .be32(1, reg)
            .be32(2, 0)
            .nested(3, data_value(&proto.to_be_bytes())),
    ))
    .extend(expr(
        "payload",
        Attrs::default()
            .be32(1, reg)
            .be32(2, NFT_PAYLOAD_NETWORK_HEADER)
            .be32(3, offset)
            .be32(4, len as u32),
    ))
    .extend(expr(
        "bitwise",
        Attrs::default()
            .be32(1, reg)
            .be32(2, reg)
            .be32(3, len as u32)
            .nested(4, data_value(&mask))
            .nested(5, data_value(&vec![0u8; len])),
    ))
    .extend(expr(
        "cmp",
        Attrs::default()
            .be32(1, reg)
            .be32(2, 0)
            .nested(3, data_value(&net)),
    ))
}

fn limit_object(table: &str, name: &str, l: Limit) -> Message {
    let data = Attrs::default()
        .be64(attr::LIMIT_RATE, l.bytes_per_sec.max(1))
        .be64(attr::LIMIT_UNIT, 1)
        .be32(attr::LIMIT_BURST, l.burst_bytes)
        .be32(attr::LIMIT_TYPE, NFT_LIMIT_PKT_BYTES)
        .be32(attr::LIMIT_FLAGS, NFT_LIMIT_F_INV);
    object(table, name, NFT_OBJECT_LIMIT, data)
}

fn counter_object(table: &str, name: &str) -> Message {
    let data = Attrs::default()
        .be64(attr::COUNTER_BYTES, 0)
        .be64(attr::COUNTER_PACKETS, 0);
    object(table, name, NFT_OBJECT_COUNTER, data)
}

fn object(table: &str, name: &str, kind: u32, data: Attrs) -> Message {
    Message::new(
        msg::NEWOBJ,
        Attrs::default()
            .str(attr::OBJ_TABLE, table)
            .str(attr::OBJ_NAME, name)
            .be32(attr::OBJ_TYPE, kind)
            .nested(attr::OBJ_DATA, data),
    )
}

/// Counter objects by table: (name, bytes, packets).
pub type CountersByTable = std::collections::HashMap<String, Vec<(String, u64, u64)>>;

/// One of our tables as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// The kernel's handle: deletes go by handle, never by name alone.
    pub handle: u64,
    /// Its comment: the owner mark, for ours.
    pub owner: Option<String>,
}

/// What a backstop table holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The base chain's hooked device (none: the chain is gone, as 6.1
    /// removes a device's base chain with the device).
    pub hook_dev: Option<String>,
    /// (chain, rule comment), in order.
    pub rules: Vec<(String, String)>,
    /// Limit objects: name, bucket, and whether "over" (drop side) is set.
    pub limits: Vec<(String, Limit, bool)>,
    /// Counter objects: name, bytes, packets.
    pub counters: Vec<(String, u64, u64)>,
    /// The table is dormant (its hooks unregistered).
    pub dormant: bool,
    /// The base chain's hook number, priority and policy.
    pub hook: Option<(u32, i32, u32)>,
}

impl Observed {
    /// The first difference from `want`, if any (pure, for CHECK and ADD).
    pub fn difference(&self, want: &Backstop) -> Option<String> {
        let t = &want.table;
        if self.hook_dev.as_deref() != Some(want.device.as_str()) {
            return Some(format!(
                "nft table {t}: its chain {BASE_CHAIN} does not hook {} (found {:?})",
                want.device, self.hook_dev
            ));
        }
        if self.dormant {
            return Some(format!("nft table {t} is dormant: nothing it holds runs"));
        }
        let hook = BASE_HOOK;
        if self.hook != Some(hook) {
            return Some(format!(
                "nft table {t}: chain {BASE_CHAIN} hook/priority/policy is {:?}, expected {hook:?}",
                self.hook
            ));
        }
        let e = want.expected();
        // A dump lists the rules chain by chain, in each chain's order.
        let by_chain = |r: &[(String, String)]| {
            let mut r = r.to_vec();
            r.sort_by(|x, y| x.0.cmp(&y.0));
            r
        };
        if by_chain(&self.rules) != by_chain(&e.rules) {
            return Some(format!(
                "nft table {t}: {} rules differ from the {} expected",
                self.rules.len(),
                e.rules.len()
            ));
        }
        for (name, l) in &e.limits {
            match self.limits.iter().find(|(n, ..)| n == name) {
                Some((_, got, true)) if got == l => {}
                other => {
                    return Some(format!(
                        "nft table {t}: limit {name} is {other:?}, expected {l:?} (over)"
                    ));
                }
            }
        }
        for name in &e.counters {
            if !self.counters.iter().any(|(n, ..)| n == name) {
                return Some(format!("nft table {t}: counter {name} is missing"));
            }
        }
        None
    }
}

impl Nft {
    /// Our tables (name starting with [`TABLE_PREFIX`]) in the netdev family.
    pub fn backstop_tables(&mut self) -> Result<Vec<Table>> {
        let answers = self.dump("listing nf_tables tables", msg::GETTABLE, Attrs::default())?;
        Ok(answers
            .iter()
            .filter(|a| a.kind == msg::NEWTABLE)
            .filter_map(|a| {
                let name = a.string(attr::TABLE_NAME)?;
                name.starts_with(TABLE_PREFIX).then(|| Table {
                    handle: a.attr(attr::TABLE_HANDLE).and_then(be64).unwrap_or(0),
                    owner: a.attr(attr::TABLE_USERDATA).and_then(udata_comment),
                    name,
                })
            })
            .collect())
    }

    /// The table `name`, if it exists.
    pub fn backstop_table(&mut self, name: &str) -> Result<Option<Table>> {
        Ok(self.backstop_tables()?.into_iter().find(|t| t.name == name))
    }

    /// The base chains of our tables that hook `device`: (table, chain).
    pub fn tables_hooking(&mut self, device: &str) -> Result<Vec<String>> {
        let answers = self.dump("listing nf_tables chains", msg::GETCHAIN, Attrs::default())?;
        Ok(answers
            .iter()
            .filter(|a| hook_dev(a).as_deref() == Some(device))
            .filter_map(|a| a.string(attr::CHAIN_TABLE))
            .filter(|t| t.starts_with(TABLE_PREFIX))
            .collect())
    }

    /// What table `name` holds: its base chain's hook, rules, objects.
    pub fn observe(&mut self, name: &str) -> Result<Observed> {
        let mut o = Observed::default();
        let chains = self.dump(
            "listing nf_tables chains",
            msg::GETCHAIN,
            Attrs::default().str(attr::CHAIN_TABLE, name),
        )?;
        let base = chains
            .iter()
            .filter(|a| a.string(attr::CHAIN_TABLE).as_deref() == Some(name))
            .find(|a| a.string(attr::CHAIN_NAME).as_deref() == Some(BASE_CHAIN));
        o.hook_dev = base.and_then(hook_dev);
        o.hook = base.and_then(hook_of);
        o.dormant = self
            .dump("listing nf_tables tables", msg::GETTABLE, Attrs::default())?
            .iter()
            .find(|a| a.string(attr::TABLE_NAME).as_deref() == Some(name))
            .and_then(|a| a.attr(attr::TABLE_FLAGS).and_then(be32))
            .is_some_and(|f| f & NFT_TABLE_F_DORMANT != 0);
        let rules = self.dump(
            "listing nf_tables rules",
            msg::GETRULE,
            Attrs::default().str(attr::RULE_TABLE, name),
        )?;
        o.rules = rules
            .iter()
            .filter(|a| a.string(attr::RULE_TABLE).as_deref() == Some(name))
            .map(|a| {
                let chain = a.string(attr::RULE_CHAIN).unwrap_or_default();
                let mark = a
                    .attr(attr::RULE_USERDATA)
                    .and_then(udata_comment)
                    .unwrap_or_default();
                (chain, mark)
            })
            .collect();
        let objs = self.dump(
            "listing nf_tables objects",
            msg::GETOBJ,
            Attrs::default().str(attr::OBJ_TABLE, name),
        )?;
        for a in objs
            .iter()
            .filter(|a| a.string(attr::OBJ_TABLE).as_deref() == Some(name))
        {
            read_object(a, &mut o);
        }
        Ok(o)
    }

    /// The counter objects of all our tables at once (one dump, for
    /// `cni-rs` over a whole node): table → (name, bytes, packets).
    pub fn all_counters(&mut self) -> Result<CountersByTable> {
        let objs = self.dump("listing nf_tables objects", msg::GETOBJ, Attrs::default())?;
        let mut out = CountersByTable::new();
        for a in &objs {
            let Some(table) = a
                .string(attr::OBJ_TABLE)
                .filter(|t| t.starts_with(TABLE_PREFIX))
            else {
                continue;
            };
            let mut o = Observed::default();
            read_object(a, &mut o);
            out.entry(table).or_default().extend(o.counters);
        }
        Ok(out)
    }

    /// Creates `b`'s table, replacing `replacing` (by handle) in the same
    /// transaction: the pod is never without a backstop in between.
    pub fn install_backstop(&mut self, b: &Backstop, replacing: Option<u64>) -> Result<()> {
        self.commit(
            &format!("creating nf_tables table {}", b.table),
            &b.messages(replacing),
        )
    }

    /// Deletes a table by handle (the one just read and judged ours).
    /// Fine when it is already gone.
    pub fn delete_table(&mut self, t: &Table) -> Result<()> {
        let m = Message::new(
            msg::DELTABLE,
            Attrs::default().be64(attr::TABLE_HANDLE, t.handle),
        );
        match self.commit(&format!("deleting nf_tables table {}", t.name), &[m]) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

/// The base chain's (hook number, priority, policy).
fn hook_of(a: &Answer) -> Option<(u32, i32, u32)> {
    let hook = a.attr(attr::CHAIN_HOOK)?;
    let get = |k: u16| {
        raw_attrs(hook)
            .find(|(t, _)| *t == k)
            .and_then(|(_, v)| be32(v))
    };
    let policy = a.attr(attr::CHAIN_POLICY).and_then(be32)?;
    Some((
        get(attr::HOOK_HOOKNUM)?,
        get(attr::HOOK_PRIORITY)? as i32,
        policy,
    ))
}

fn hook_dev(a: &Answer) -> Option<String> {
    let hook = a.attr(attr::CHAIN_HOOK)?;
    raw_attrs(hook)
        .find(|(k, _)| *k == attr::HOOK_DEV)
        .map(|(_, v)| crate::c_string(v))
}

fn read_object(a: &Answer, o: &mut Observed) {
    let (Some(name), Some(kind), Some(data)) = (
        a.string(attr::OBJ_NAME),
        a.attr(attr::OBJ_TYPE).and_then(be32),
        a.attr(attr::OBJ_DATA),
    ) else {
        return;
    };
    let get = |k: u16| raw_attrs(data).find(|(t, _)| *t == k).map(|(_, v)| v);
    match kind {
        NFT_OBJECT_LIMIT => {
            let rate = get(attr::LIMIT_RATE).and_then(be64).unwrap_or(0);
            let unit = get(attr::LIMIT_UNIT).and_then(be64).unwrap_or(0);
            let burst = get(attr::LIMIT_BURST).and_then(be32).unwrap_or(0);
            let bytes = get(attr::LIMIT_TYPE).and_then(be32) == Some(NFT_LIMIT_PKT_BYTES);
            let inv = get(attr::LIMIT_FLAGS).and_then(be32).unwrap_or(0) & NFT_LIMIT_F_INV != 0;
            // Only a bytes-per-second limit can equal ours.
            let per_sec = if bytes && unit == 1 { rate } else { 0 };
            o.limits.push((
                name,
                Limit {
                    bytes_per_sec: per_sec,
                    burst_bytes: burst,
                },
                inv,
            ));
        }
        NFT_OBJECT_COUNTER => {
            let bytes = get(attr::COUNTER_BYTES).and_then(be64).unwrap_or(0);
            let packets = get(attr::COUNTER_PACKETS).and_then(be64).unwrap_or(0);
            o.counters.push((name, bytes, packets));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(classes: Vec<Class>) -> Backstop {
        Backstop {
            table: "cni_bw_0123".into(),
            owner: "cni-bandwidth net=n id=c if=eth0".into(),
            device: "eni0123".into(),
            total: Some(Limit {
                bytes_per_sec: 1_250_000,
                burst_bytes: 9015,
            }),
            classes,
        }
    }

    #[test]
    fn without_classes_one_chain_holds_the_limit_and_the_count() {
        let e = spec(Vec::new()).expected();
        let chains: Vec<_> = e.rules.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(chains, ["egress", "class_all", "class_all"]);
        assert_eq!(e.limits.len(), 1);
        assert_eq!(e.counters, ["sent_all", "dropped_all"]);
    }

    #[test]
    fn classes_match_in_order_and_caps_come_before_the_total() {
        let v4 = |a: [u8; 4], len| Prefix {
            addr: IpAddr::from(a),
            len,
        };
        let cap = Some(Limit {
            bytes_per_sec: 250_000,
            burst_bytes: 9015,
        });
        let b = spec(vec![
            Class {
                name: "sameZone".into(),
                prefixes: vec![v4([10, 1, 0, 0], 24)],
                cap: None,
                in_total: false,
            },
            Class {
                name: "crossZone".into(),
                prefixes: vec![v4([10, 0, 0, 0], 16)],
                cap,
                in_total: true,
            },
            Class {
                name: "outside".into(),
                prefixes: Vec::new(),
                cap: None,
                in_total: true,
            },
        ]);
        let e = b.expected();
        let chains: Vec<_> = e.rules.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            chains,
            [
                "egress",
                "egress",
                "egress",
                "class_sameZone",
                "class_crossZone",
                "class_crossZone",
                "class_crossZone",
                "class_outside",
                "class_outside"
            ]
        );
        assert_eq!(
            e.limits.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["total", "cap_crossZone"]
        );
        // Every rule's mark is distinct, so a swapped rule is seen.
        let mut marks: Vec<_> = e.rules.iter().map(|(_, m)| m.clone()).collect();
        marks.sort();
        marks.dedup();
        assert_eq!(marks.len(), e.rules.len());
    }

    #[test]
    fn prefix_masks_cover_partial_bytes() {
        let p = Prefix {
            addr: "10.1.255.7".parse().unwrap(),
            len: 20,
        };
        let e = prefix_match(&p);
        // The masked network 10.1.240.0 is in the last cmp's data.
        let needle = [10u8, 1, 240, 0];
        assert!(e.0.windows(4).any(|w| w == needle));
        let mask = [255u8, 255, 240, 0];
        assert!(e.0.windows(4).any(|w| w == mask));
    }

    #[test]
    fn an_observed_table_with_a_missing_rule_differs() {
        let b = spec(Vec::new());
        let e = b.expected();
        let mut o = Observed {
            dormant: false,
            hook: Some(BASE_HOOK),
            hook_dev: Some("eni0123".into()),
            rules: e.rules.clone(),
            limits: e
                .limits
                .iter()
                .map(|(n, l)| (n.clone(), *l, true))
                .collect(),
            counters: e.counters.iter().map(|n| (n.clone(), 0, 0)).collect(),
        };
        assert_eq!(o.difference(&b), None);
        o.rules.remove(1);
        assert!(o.difference(&b).is_some());
        o.rules = e.rules.clone();
        o.limits[0].2 = false;
        assert!(o.difference(&b).is_some());
        o.limits[0].2 = true;
        o.hook_dev = None;
        assert!(o.difference(&b).unwrap().contains("does not hook"));
    }

    #[test]
    fn replacing_deletes_the_old_table_first_in_the_same_batch() {
        let m = spec(Vec::new()).messages(Some(7));
        assert_eq!(m[0].kind, msg::DELTABLE);
        assert_eq!(m[1].kind, msg::NEWTABLE);
        assert!(m.iter().skip(2).all(|x| x.kind != msg::DELTABLE));
    }

    /// The whole round trip against this kernel, in a private netns.
    #[cfg(feature = "testing")]
    #[test]
    fn kernel_round_trip() {
        let Some(mut nl) = crate::testutil::private_netns() else {
            return;
        };
        nl.create_veth("bs0", "bs1").unwrap();
        let mut nft = Nft::new().unwrap();
        let mut b = spec(Vec::new());
        b.device = "bs0".into();
        nft.install_backstop(&b, None).unwrap();
        let t = nft.backstop_table(&b.table).unwrap().expect("table made");
        assert_eq!(t.owner.as_deref(), Some(b.owner.as_str()));
        let o = nft.observe(&b.table).unwrap();
        assert_eq!(o.difference(&b), None, "{o:?}");
        assert_eq!(nft.tables_hooking("bs0").unwrap(), vec![b.table.clone()]);
        // Replaced in one transaction: a new handle, a new limit.
        b.total = Some(Limit {
            bytes_per_sec: 2_500_000,
            burst_bytes: 9015,
        });
        assert!(nft.observe(&b.table).unwrap().difference(&b).is_some());
        nft.install_backstop(&b, Some(t.handle)).unwrap();
        let t2 = nft.backstop_table(&b.table).unwrap().unwrap();
        assert_ne!(t2.handle, t.handle);
        assert_eq!(nft.observe(&b.table).unwrap().difference(&b), None);
        nft.delete_table(&t2).unwrap();
        nft.delete_table(&t2).unwrap();
        assert_eq!(nft.backstop_table(&b.table).unwrap(), None);
        // Classes with v4 and v6 prefixes and a cap.
        b.classes = vec![
            Class {
                name: "sameZone".into(),
                prefixes: vec![
                    Prefix {
                        addr: "10.1.0.0".parse().unwrap(),
                        len: 24,
                    },
                    Prefix {
                        addr: "fd00::".parse().unwrap(),
                        len: 64,
                    },
                ],
                cap: None,
                in_total: false,
            },
            Class {
                name: "outside".into(),
                prefixes: Vec::new(),
                cap: b.total,
                in_total: true,
            },
        ];
        nft.install_backstop(&b, None).unwrap();
        assert_eq!(nft.observe(&b.table).unwrap().difference(&b), None);
    }
}
