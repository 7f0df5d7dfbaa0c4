//! The plan: from the config and the attachment, the kernel objects it
//! should have ([`desired`], [`Object`]), each with its parameters. Pure:
//! nothing here asks the kernel. ADD records the plan as claims before it
//! acts ([`Installed::claim`]); CHECK compares it; DEL removes the record.

use crate::classes::{Origin, PeerClasses};
use crate::config::{BandwidthConf, EgressMode};
use crate::htb_plan::Direction;
use crate::layout::RootLayout;
use crate::record::{Attachment, Installed, RootKinds};
use crate::tbf::{Shape, shape};
use cni_netlink::Link;
use cni_netlink::backstop::Backstop;
use cni_types::env::NetnsId;
use cni_types::log_warn;
use std::path::Path;

/// Priority of our redirect filter under `ffff:` (the reference's).
pub const FILTER_PRIO: u16 = 1;

/// The shapes for both directions on this host veth.
pub fn shapes(conf: &BandwidthConf, host: &Link) -> (Option<Shape>, Option<Shape>) {
    let mk = |l: &crate::rates::Limit| {
        let s = shape(l, host.mtu, conf.latency_ms);
        if s.burst_raised_to_mtu {
            log_warn!(
                "burst raised to {} bytes to fit a full-size frame on {}",
                s.burst_bytes,
                host.name
            );
        }
        s
    };
    (conf.ingress.as_ref().map(mk), conf.egress.as_ref().map(mk))
}

/// One kernel object of an attachment, with what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// Root `1:` on the host veth: traffic into the pod.
    HostRoot(RootLayout),
    /// The ifb egress is redirected to (created, marked, up, host MTU).
    Ifb(String),
    /// The `ingress` qdisc on the host veth.
    IngressQdisc,
    /// The u32 match-all redirect at [`FILTER_PRIO`] under `ffff:` to the ifb.
    Redirect(String),
    /// Root `1:` on the ifb: traffic out of the pod.
    IfbRoot(String, RootLayout),
    /// A clsact on the container interface whose egress filter sets
    /// `skb->priority` to 0 before the htb there can classify by it
    /// ([`cni_netlink::bpf`]): only under an htb.
    PodHook,
    /// Root `1:` on the container interface inside the pod.
    PodRoot(RootLayout),
    /// The host-side backstop of egress shaped inside the pod: an
    /// nf_tables table on the host veth's ingress that a pod sending past
    /// its own qdiscs (`PACKET_QDISC_BYPASS`) cannot reach.
    Backstop(Backstop),
}

/// The objects an attachment should have, in the order they are made
/// (parents and targets first). Pure.
pub fn desired(
    ingress: Option<RootLayout>,
    egress: Option<RootLayout>,
    mode: EgressMode,
    ifb: Option<&str>,
    backstop: Option<Backstop>,
) -> Vec<Object> {
    let mut out = Vec::with_capacity(5);
    if let Some(l) = ingress {
        out.push(Object::HostRoot(l));
    }
    match (egress, mode, ifb) {
        (None, _, _) => {}
        (Some(l), EgressMode::Pod, _) | (Some(l), _, None) => {
            // The backstop first: the pod is held before its shaper exists.
            if let Some(b) = backstop {
                out.push(Object::Backstop(b));
            }
            if matches!(l, RootLayout::Htb(_)) {
                out.push(Object::PodHook);
            }
            out.push(Object::PodRoot(l));
        }
        (Some(l), _, Some(name)) => {
            // The ifb's shaper before the redirect: no packet leaves the
            // pod unshaped, and the ifb gets its root while still down.
            out.push(Object::Ifb(name.to_string()));
            out.push(Object::IfbRoot(name.to_string(), l));
            out.push(Object::IngressQdisc);
            out.push(Object::Redirect(name.to_string()));
        }
    }
    out
}

impl Installed {
    /// Marks `objects` as ours (the claims before ADD touches the kernel).
    pub(crate) fn claim(&mut self, objects: &[Object]) {
        for o in objects {
            match o {
                Object::HostRoot(l) => {
                    self.ingress_tbf = true;
                    self.ingress_root_kinds =
                        Some(RootKinds::union(self.ingress_root_kinds, RootKinds::of(l)));
                }
                Object::Ifb(name) => self.ifb = Some(name.clone()),
                Object::IngressQdisc => self.ingress_qdisc = true,
                Object::Redirect(_) => self.filter_prio = Some(FILTER_PRIO),
                Object::IfbRoot(..) => {}
                Object::PodHook => self.pod_clsact = true,
                Object::PodRoot(l) => {
                    self.pod_tbf = true;
                    self.pod_root_kinds =
                        Some(RootKinds::union(self.pod_root_kinds, RootKinds::of(l)));
                }
                Object::Backstop(b) => self.backstop = Some(b.table.clone()),
            }
        }
    }

    /// Exactly `objects` as ours (after a successful ADD).
    pub(crate) fn set_to(&mut self, objects: &[Object]) {
        self.ingress_tbf = false;
        self.ifb = None;
        self.ingress_qdisc = false;
        self.filter_prio = None;
        self.pod_tbf = false;
        self.pod_clsact = false;
        self.ingress_root_kinds = None;
        self.pod_root_kinds = None;
        self.backstop = None;
        self.claim(objects);
        self.egress_mode = objects.iter().find_map(|o| match o {
            Object::IfbRoot(..) => Some(EgressMode::Ifb),
            Object::PodRoot(_) => Some(EgressMode::Pod),
            _ => None,
        });
    }
}

pub struct AddRequest<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a Path,
    pub netns_id: Option<NetnsId>,
    pub egress_mode: EgressMode,
    pub ingress: Option<Shape>,
    pub egress: Option<Shape>,
    pub policy: Option<crate::policy::PolicyRecord>,
    pub pod: Option<cni_types::env::PodRef>,
    /// Peer classes, when configured.
    pub classes: Option<&'a PeerClasses>,
    pub latency_ms: u32,
    /// Where the ifb comes from when there is none yet: a parked one
    /// ([`crate::ifb_pool`]) before a new one. None: always a new one.
    pub ifb_pool: Option<&'a crate::ifb_pool::IfbPool<'a>>,
}

impl AddRequest<'_> {
    /// What goes at the root of the device shaping `dir`: a tbf for the
    /// pod's limit; an htb tree when classes are configured and there is a
    /// limit to split, or (zone classes) always, to count. None: nothing.
    pub fn layout(&self, dir: Direction, mtu: u32) -> Option<RootLayout> {
        let shape = match dir {
            Direction::IntoPod => self.ingress.as_ref(),
            Direction::OutOfPod => self.egress.as_ref(),
        };
        match self.classes {
            Some(c) if shape.is_some() || c.origin == Origin::Zones => Some(RootLayout::Htb(
                crate::htb_plan::plan(c, shape, dir, mtu, self.latency_ms),
            )),
            _ => shape.map(|s| RootLayout::Tbf(*s)),
        }
    }

    /// A node class cap binds this pod in `dir` though it has no limit.
    pub fn caps_bind(&self, dir: Direction) -> bool {
        self.classes
            .is_some_and(|c| crate::htb_plan::caps_bind_unlimited(c, dir))
    }

    pub fn attachment(&self) -> Attachment<'_> {
        Attachment {
            network: self.network,
            container_id: self.container_id,
            ifname: self.ifname,
        }
    }
}
