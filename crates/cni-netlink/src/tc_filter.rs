//! u32 and mirred filters: the ingress redirect to an ifb, and the
//! dumps that show where a device's traffic is sent. Split from `tc` (the
//! qdiscs) for size; its items are re-exported there, so their paths stay
//! `cni_netlink::tc::Filter` and so on.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{
        TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType,
        TcAttribute, TcFilterMatchAllOption, TcFilterU32Option, TcMessage, TcMirror,
        TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
    },
};

#[cfg(any(test, feature = "testing"))]
use super::ETH_P_IP;
use super::{ETH_P_ALL, filter_info, kind_of, tc_header, tc_message};
use crate::{Netlink, NlError, Result};

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

fn mirred_of(actions: &[TcAction], out: &mut Vec<Mirred>) {
    for act in actions {
        for attr in &act.attributes {
            if let TcActionAttribute::Options(opts) = attr {
                for opt in opts {
                    if let TcActionOption::Mirror(TcActionMirrorOption::Parms(m)) = opt {
                        out.push(Mirred {
                            action: m.eaction.into(),
                            ifindex: m.ifindex,
                        });
                    }
                }
            }
        }
    }
}

fn parse_filter(msg: TcMessage) -> Filter {
    let (header, attrs) = msg.into_parts();
    let kind = kind_of(&attrs);
    let mut mirred = Vec::new();
    let mut classid = None;
    let mut keys = Vec::new();
    for attr in &attrs {
        if let TcAttribute::Options(opts) = attr {
            for opt in opts {
                match opt {
                    TcOption::U32(TcFilterU32Option::Action(acts)) => mirred_of(acts, &mut mirred),
                    TcOption::U32(TcFilterU32Option::ClassId(h)) => classid = Some(u32::from(*h)),
                    TcOption::U32(TcFilterU32Option::Selector(sel)) => {
                        keys = sel
                            .keys
                            .iter()
                            .map(|k| crate::htb::U32Match {
                                mask: k.mask,
                                val: k.val,
                                off: k.off,
                            })
                            .collect();
                    }
                    TcOption::MatchAll(TcFilterMatchAllOption::Action(acts)) => {
                        mirred_of(acts, &mut mirred)
                    }
                    _ => {}
                }
            }
        }
    }
    Filter {
        ifindex: header.index as u32,
        parent: header.parent.into(),
        prio: (header.info >> 16) as u16,
        protocol: u16::from_be((header.info & 0xFFFF) as u16),
        kind,
        handle: header.handle.into(),
        mirred,
        classid,
        keys,
    }
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
        let msgs = self.dump(
            &format!("dump filters of link #{index} parent {parent:#x}"),
            RouteNetlinkMessage::GetTrafficFilter(tc_message(header, vec![])),
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(parse_filter(f)),
                _ => None,
            })
            .collect())
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
