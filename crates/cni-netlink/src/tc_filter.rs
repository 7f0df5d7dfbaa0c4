//! u32 and mirred filters: the ingress redirect to an ifb, and the
//! dumps that show where a device's traffic is sent. Split from `tc` (the
//! qdiscs) for size; its items are re-exported there, so their paths stay
//! `cni_netlink::tc::Filter` and so on.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{
        TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType,
        TcAttribute, TcFilterU32Option, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
        TcU32Selector, TcU32SelectorFlags,
    },
};

#[cfg(any(test, feature = "testing"))]
use super::ETH_P_IP;
use super::{ETH_P_ALL, TcMsg, filter_info, kind_and_options, tc_header, tc_message};
use crate::{Netlink, NlError, Result};

/// `RTM_NEWTFILTER`: a filter's description, in dumps.
const RTM_NEWTFILTER: u16 = 44;
const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TCA_MATCHALL_ACT: u16 = 2;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
/// `sizeof(struct tc_u32_sel)` before its keys.
const U32_SEL_LEN: usize = 16;
/// `sizeof(struct tc_u32_key)`: mask and val (network order), off, offmask.
const U32_KEY_LEN: usize = 16;
/// Offsets in `struct tc_mirred`, after its `tc_gen` (index, capab,
/// action, refcnt, bindcnt).
const MIRRED_EACTION: usize = 20;
const MIRRED_IFINDEX: usize = 24;

/// `IPPROTO_TCP`.
#[cfg(any(test, feature = "testing"))]
const IPPROTO_TCP: u32 = 6;

/// One filter from a dump (u32 dumps also list their hash tables, which have
/// no actions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Interface the filter is attached to.
    pub ifindex: u32,
    /// Parent qdisc/class handle.
    pub parent: u32,
    /// Priority, the key used to delete the filter.
    pub prio: u16,
    /// Protocol in host order (`ETH_P_*`).
    pub protocol: u16,
    /// Classifier kind ("u32", "matchall", ..).
    pub kind: String,
    /// Filter handle (for u32, `htid:hash:node`).
    pub handle: u32,
    /// mirred actions attached to the filter, to see where traffic is sent.
    pub mirred: Vec<Mirred>,
    /// The class a u32 filter sends matches to (`classid`/`flowid`).
    pub classid: Option<u32>,
    /// A u32 filter's keys, in order.
    pub keys: Vec<crate::htb::U32Match>,
}

/// A mirred action: where and how a filter sends matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirred {
    /// `TCA_EGRESS_REDIR` (1), `TCA_EGRESS_MIRROR` (2), ..
    pub action: i32,
    /// Target interface index.
    pub ifindex: u32,
}

/// The mirred actions in a filter's action list (`TCA_U32_ACT`,
/// `TCA_MATCHALL_ACT`): one nested attribute per action, typed by its
/// order, holding its kind and options. Other kinds are skipped; `None`
/// when the list is malformed.
fn mirred_of(actions: &[u8], out: &mut Vec<Mirred>) -> Option<()> {
    for (_, action) in crate::attrs(actions)? {
        let mut kind = String::new();
        let mut options: &[u8] = &[];
        for (ty, p) in crate::attrs(action)? {
            match ty {
                TCA_ACT_KIND => kind = crate::c_string(p),
                TCA_ACT_OPTIONS => options = p,
                _ => {}
            }
        }
        if kind != "mirred" {
            continue;
        }
        for (ty, p) in crate::attrs(options)? {
            if ty == TCA_MIRRED_PARMS {
                out.push(Mirred {
                    action: crate::read_i32(p, MIRRED_EACTION)?,
                    ifindex: crate::read_u32(p, MIRRED_IFINDEX)?,
                });
            }
        }
    }
    Some(())
}

/// A u32 selector's keys, in order (`nkeys` of them after the selector);
/// `None` when it is shorter than it says.
fn u32_keys(sel: &[u8]) -> Option<Vec<crate::htb::U32Match>> {
    let nkeys = usize::from(*sel.get(2)?);
    (0..nkeys)
        .map(|i| {
            let start = U32_SEL_LEN + i * U32_KEY_LEN;
            let key = sel.get(start..start + U32_KEY_LEN)?;
            Some(crate::htb::U32Match {
                mask: crate::read_be_u32(key, 0)?,
                val: crate::read_be_u32(key, 4)?,
                off: crate::read_i32(key, 8)?,
            })
        })
        .collect()
}

/// Reads what a [`Filter`] holds from a u32's or matchall's options (its
/// mirred actions; a u32's class and keys). Other kinds' options are not
/// read (a bpf filter's program, a flower's matches): the plugins judge
/// those by kind and prio alone.
fn read_filter_options(filter: &mut Filter, opts: &[u8]) -> Option<()> {
    let u32_filter = filter.kind == "u32";
    if !u32_filter && filter.kind != "matchall" {
        return Some(());
    }
    for (ty, p) in crate::attrs(opts)? {
        match (u32_filter, ty) {
            (true, TCA_U32_ACT) | (false, TCA_MATCHALL_ACT) => mirred_of(p, &mut filter.mirred)?,
            (true, TCA_U32_CLASSID) => filter.classid = Some(crate::read_u32(p, 0)?),
            (true, TCA_U32_SEL) => filter.keys = u32_keys(p)?,
            _ => {}
        }
    }
    Some(())
}

/// From an RTM_NEWTFILTER payload, by hand; `None` when it is cut short
/// or what it reads is malformed.
pub(crate) fn filter_from_raw(payload: &[u8]) -> Option<Filter> {
    let header = TcMsg::read(payload)?;
    let (kind, options) = kind_and_options(payload)?;
    let mut filter = Filter {
        ifindex: header.ifindex,
        parent: header.parent,
        prio: (header.info >> 16) as u16,
        protocol: u16::from_be((header.info & 0xFFFF) as u16),
        kind,
        handle: header.handle,
        mirred: Vec::new(),
        classid: None,
        keys: Vec::new(),
    };
    if let Some(opts) = options {
        read_filter_options(&mut filter, opts)?;
    }
    Some(filter)
}

fn mirred_redirect_action(target_ifindex: u32) -> TcAction {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = target_ifindex;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    action
}

fn u32_key(mask: u32, val: u32, off: i32) -> TcU32Key {
    let mut key = TcU32Key::default();
    key.mask = mask;
    key.val = val;
    key.off = off;
    key
}

impl Netlink {
    /// Lists the filters attached under `parent` (e.g. [`INGRESS_HANDLE`](super::INGRESS_HANDLE)).
    pub fn filters(&mut self, index: u32, parent: u32) -> Result<Vec<Filter>> {
        let header = tc_header(index, parent, 0, 0)?;
        self.dump_parsed(
            &format!("dump filters of link #{index} parent {parent:#x}"),
            RouteNetlinkMessage::GetTrafficFilter(tc_message(header, vec![])),
            RTM_NEWTFILTER,
            filter_from_raw,
        )
    }

    /// Redirects every frame arriving under `parent` to `target_ifindex`'s
    /// egress (`u32 match u32 0 0 action mirred egress redirect`), the
    /// classic way to shape ingress traffic on an ifb.
    pub fn add_u32_redirect_all(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        target_ifindex: u32,
    ) -> Result<()> {
        self.add_u32_redirect(
            &format!("add u32 redirect-all filter prio {prio} on link #{index}"),
            index,
            parent,
            prio,
            ETH_P_ALL,
            vec![u32_key(0, 0, 0)],
            target_ifindex,
        )
    }

    /// Redirects IPv4 TCP packets to `dport` (assuming a 20-byte IP header,
    /// like `tc ... match ip dport`) to `target_ifindex`; tests use it as a
    /// foreign "policy" filter.
    #[cfg(any(test, feature = "testing"))]
    pub fn add_u32_redirect_tcp_dport(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        dport: u16,
        target_ifindex: u32,
    ) -> Result<()> {
        self.add_u32_redirect(
            &format!("add u32 tcp dport {dport} filter prio {prio} on link #{index}"),
            index,
            parent,
            prio,
            ETH_P_IP,
            vec![
                // IP protocol byte (offset 9) == TCP
                u32_key(0x00FF_0000, IPPROTO_TCP << 16, 8),
                // low half of the word at offset 20 == destination port
                u32_key(0x0000_FFFF, u32::from(dport), 20),
            ],
            target_ifindex,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn add_u32_redirect(
        &mut self,
        op: &str,
        index: u32,
        parent: u32,
        prio: u16,
        protocol: u16,
        keys: Vec<TcU32Key>,
        target_ifindex: u32,
    ) -> Result<()> {
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys =
            u8::try_from(keys.len()).map_err(|_| NlError::invalid_input("too many u32 keys"))?;
        sel.keys = keys;
        let header = tc_header(index, parent, 0, filter_info(prio, protocol))?;
        let attrs = vec![
            TcAttribute::Kind("u32".to_string()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(sel)),
                TcOption::U32(TcFilterU32Option::Action(vec![mirred_redirect_action(
                    target_ifindex,
                )])),
            ]),
        ];
        self.request(
            op,
            RouteNetlinkMessage::NewTrafficFilter(tc_message(header, attrs)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Deletes all filters with this prio/protocol under `parent`;
    /// `Ok(false)` when there were none (or the parent qdisc is gone).
    pub fn delete_filter(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        protocol: u16,
    ) -> Result<bool> {
        let header = tc_header(index, parent, 0, filter_info(prio, protocol))?;
        self.request_delete(
            &format!("delete filter prio {prio} protocol {protocol:#06x} on link #{index}"),
            RouteNetlinkMessage::DelTrafficFilter(tc_message(header, vec![])),
            0,
        )
    }
}
