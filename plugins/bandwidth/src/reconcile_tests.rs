//! Unit tests of the plan and the reconcile's pure decisions, and of
//! reconcile, CHECK and teardown through the in-memory kernel.
use super::*;
use crate::config::EgressMode;
use crate::layout::{RootLayout, tbf_difference};
use crate::plan::{AddRequest, Object, desired};
use crate::record::{Installed, RootKinds, root_is_ours};
use crate::tbf::Shape;
use cni_netlink::Link;
use cni_netlink::tc::{INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
use cni_netlink::tc::{Qdisc, TbfParams};
use cni_types::error::{CniError, Code};
use std::path::Path;

fn qdisc(kind: &str, parent: u32, handle: u32) -> Qdisc {
    Qdisc {
        ifindex: 7,
        handle,
        parent,
        kind: kind.into(),
        tbf: None,
        htb_default: None,
    }
}

fn req(mode: EgressMode, egress: bool) -> AddRequest<'static> {
    let s = Shape {
        rate_bytes_per_sec: 1_000_000,
        burst_bytes: 10_000,
        limit_bytes: 70_000,
        burst_raised_to_mtu: false,
    };
    AddRequest {
        network: "n",
        container_id: "c",
        ifname: "eth0",
        netns: Path::new("/nonexistent"),
        netns_id: None,
        egress_mode: mode,
        ingress: None,
        egress: egress.then_some(s),
        policy: None,
        pod: None,
        classes: None,
        latency_ms: 25,
        ifb_pool: None,
    }
}

#[test]
fn desired_objects_follow_mode_and_directions() {
    let s = req(EgressMode::Ifb, true).egress.unwrap();
    let t = || RootLayout::Tbf(s);
    assert_eq!(
        desired(Some(t()), Some(t()), EgressMode::Ifb, Some("bwp1"), None),
        vec![
            Object::HostRoot(t()),
            Object::Ifb("bwp1".into()),
            Object::IfbRoot("bwp1".into(), t()),
            Object::IngressQdisc,
            Object::Redirect("bwp1".into()),
        ],
        "the reference's layout; the ifb shaped before anything is redirected to it"
    );
    assert_eq!(
        desired(None, Some(t()), EgressMode::Pod, None, None),
        vec![Object::PodRoot(t())]
    );
    assert_eq!(
        desired(Some(t()), None, EgressMode::Ifb, None, None),
        vec![Object::HostRoot(t())]
    );
    let mut inst = Installed {
        ifb: Some("old".into()),
        filter_prio: Some(7),
        ingress_qdisc: true,
        ..Default::default()
    };
    inst.set_to(&desired(None, Some(t()), EgressMode::Pod, None, None));
    assert_eq!(
        (
            inst.ifb,
            inst.filter_prio,
            inst.ingress_qdisc,
            inst.pod_tbf,
            inst.egress_mode
        ),
        (None, None, false, true, Some(EgressMode::Pod)),
        "after ADD the record is exactly what is wanted"
    );
}

#[test]
fn only_the_default_root_or_our_own_tbf_is_free() {
    let default = qdisc("noqueue", TC_H_ROOT, 0);
    let pfifo = qdisc("pfifo", TC_H_ROOT, 0x5_0000);
    let tbf = qdisc("tbf", TC_H_ROOT, TBF_HANDLE);
    assert!(refuse_foreign_root(None, false, None, "d").is_ok());
    assert!(refuse_foreign_root(Some(&default), false, None, "d").is_ok());
    assert!(refuse_foreign_root(Some(&pfifo), true, None, "d").is_err());
    assert!(
        refuse_foreign_root(Some(&tbf), false, None, "d").is_err(),
        "a tbf 1: we have no record of is someone's"
    );
    assert!(refuse_foreign_root(Some(&tbf), true, None, "d").is_ok());
    let htb = qdisc("htb", TC_H_ROOT, TBF_HANDLE);
    assert!(
        refuse_foreign_root(Some(&htb), true, None, "d").is_err(),
        "an earlier version only made tbfs: an htb 1: is someone's"
    );
    let both = Some(RootKinds {
        tbf: true,
        htb: true,
    });
    assert!(refuse_foreign_root(Some(&htb), true, both, "d").is_ok());
    assert!(root_is_ours(both, &tbf) && !root_is_ours(None, &htb));
}

#[test]
fn egress_mode_follows_the_ingress_hook() {
    let host = Link::default();
    let clsact = [qdisc("clsact", TC_H_INGRESS, INGRESS_HANDLE)];
    let ingress = [qdisc("ingress", TC_H_INGRESS, INGRESS_HANDLE)];
    let mode = |m, e, qs: &[Qdisc], ours| resolve_egress_mode(&req(m, e), &host, qs, ours);
    assert_eq!(
        mode(EgressMode::Auto, true, &[], false).unwrap(),
        EgressMode::Ifb
    );
    assert_eq!(
        mode(EgressMode::Auto, true, &clsact, false).unwrap(),
        EgressMode::Pod
    );
    assert_eq!(
        mode(EgressMode::Auto, true, &ingress, true).unwrap(),
        EgressMode::Ifb,
        "our own ingress qdisc is no reason to move"
    );
    let err = mode(EgressMode::Ifb, true, &clsact, false).unwrap_err();
    assert_eq!(CniError::from_anyhow(&err).code, Code::InvalidConfig);
    assert_eq!(
        mode(EgressMode::Ifb, false, &clsact, false).unwrap(),
        EgressMode::Ifb,
        "no egress limit, nothing to refuse"
    );
    assert_eq!(
        mode(EgressMode::Pod, true, &[], false).unwrap(),
        EgressMode::Pod
    );
}

#[test]
fn tbf_differences_are_named() {
    let s = req(EgressMode::Ifb, true).egress.unwrap();
    assert!(tbf_difference("d", None, &s).unwrap().contains("missing"));
    let mut q = qdisc("tbf", TC_H_ROOT, TBF_HANDLE);
    q.tbf = Some(TbfParams {
        rate_bytes_per_sec: 2_000_000,
        limit_bytes: 70_000,
        buffer_ticks: 0,
    });
    assert!(tbf_difference("d", Some(&q), &s).unwrap().contains("rate"));
    q.tbf = Some(TbfParams {
        rate_bytes_per_sec: 1_000_000,
        limit_bytes: 1,
        buffer_ticks: 0,
    });
    assert!(tbf_difference("d", Some(&q), &s).unwrap().contains("limit"));
}

/// Through the in-memory kernel.
#[path = "reconcile_fake_tests.rs"]
mod on_a_fake_node;
