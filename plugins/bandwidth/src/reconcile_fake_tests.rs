//! Reconcile, CHECK and teardown through the in-memory kernel
//! (`cni_netlink::fake`): a node with one pod (host veth `eni1`, the pod's
//! `eth0` in `/pod`).
use super::*;
use crate::classes::{ClassName, Origin, PeerClass, PeerClasses};
use crate::devices::{ifb_alias, ifb_candidates, ifb_name};
use crate::rates::Limit;
use crate::teardown::teardown;
use cni_netlink::backstop::{Backstop, TABLE_PREFIX};
use cni_netlink::fake::{FakeKernel, Space};
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{ETH_P_ALL, TCA_EGRESS_REDIR};

const POD: &str = "/pod";

fn node() -> (FakeKernel, Link) {
    let k = FakeKernel::new();
    let host = k.add_veth("eni1", Path::new(POD), "eth0", 9001);
    (k, host)
}

fn shape(rate: u64) -> Shape {
    crate::tbf::shape(
        &Limit {
            rate_bits: rate,
            burst_bits: None,
        },
        9001,
        25,
    )
}

fn zones() -> PeerClasses {
    let net = |s: &str| s.parse().unwrap();
    let cap = Some(Limit {
        rate_bits: 20_000_000,
        burst_bits: None,
    });
    PeerClasses {
        origin: Origin::Zones,
        classes: vec![
            PeerClass {
                name: ClassName::SameZone,
                cidrs: vec![net("10.1.0.0/16")],
                shaped: false,
                ingress: None,
                egress: None,
            },
            PeerClass {
                name: ClassName::CrossZone,
                cidrs: vec![net("10.0.0.0/8"), net("fd0b::/32")],
                shaped: true,
                ingress: cap,
                egress: cap,
            },
            PeerClass {
                name: ClassName::Outside,
                cidrs: Vec::new(),
                shaped: true,
                ingress: None,
                egress: None,
            },
        ],
    }
}

fn request<'a>(
    mode: EgressMode,
    rate: Option<u64>,
    classes: Option<&'a PeerClasses>,
) -> AddRequest<'a> {
    AddRequest {
        network: "net",
        container_id: "ctr1",
        ifname: "eth0",
        netns: Path::new(POD),
        netns_id: None,
        egress_mode: mode,
        ingress: rate.map(shape),
        egress: rate.map(shape),
        policy: None,
        pod: None,
        classes,
        latency_ms: 25,
        ifb_pool: None,
    }
}

fn add(
    k: &mut FakeKernel,
    host: &Link,
    req: &AddRequest<'_>,
    prev: Option<&Installed>,
) -> anyhow::Result<Installed> {
    let mut saved = None;
    let r = install(k, host, req, prev, &mut |i: &Installed| {
        saved = Some(i.clone());
        Ok(())
    });
    r.map(|(inst, _)| inst)
}

/// The first ADD of the attachment, in `mode` at `rate` with `classes`.
fn add_fresh(
    k: &mut FakeKernel,
    host: &Link,
    mode: EgressMode,
    rate: Option<u64>,
    classes: Option<&PeerClasses>,
) -> anyhow::Result<Installed> {
    add(k, host, &request(mode, rate, classes), None)
}

fn snapshot(k: &FakeKernel) -> (Space, Space) {
    (k.space(""), k.space(POD))
}

fn who<'a>() -> Attachment<'a> {
    Attachment {
        network: "net",
        container_id: "ctr1",
        ifname: "eth0",
    }
}

fn push_qdisc(k: &FakeKernel, ns: &str, q: Qdisc) {
    let mut n = k.node.borrow_mut();
    n.spaces.get_mut(Path::new(ns)).unwrap().qdiscs.push(q);
}

fn on(host: &Link, kind: &str, parent: u32, handle: u32) -> Qdisc {
    let mut q = qdisc(kind, parent, handle);
    q.ifindex = host.index;
    q
}

#[test]
fn ifb_mode_makes_the_reference_layout_marked_as_ours() {
    let (mut k, host) = node();
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap();
    let h = k.space("");
    let ifb = h
        .links
        .iter()
        .find(|l| l.kind.as_deref() == Some("ifb"))
        .unwrap();
    assert_eq!(
        ifb.alias.as_deref(),
        Some(ifb_alias("net", "ctr1", "eth0").as_str())
    );
    assert_eq!(Some(ifb.name.clone()), inst.ifb);
    assert!(
        h.qdiscs
            .iter()
            .any(|q| q.ifindex == host.index && q.is_root_tbf())
    );
    assert!(
        h.qdiscs
            .iter()
            .any(|q| q.ifindex == host.index && q.is_ingress())
    );
    assert!(
        h.qdiscs
            .iter()
            .any(|q| q.ifindex == ifb.index && q.is_root_tbf())
    );
    let f = h.filters.iter().find(|f| f.ifindex == host.index).unwrap();
    assert_eq!(f.mirred[0].ifindex, ifb.index);
    assert!(h.tables.is_empty(), "no backstop in ifb mode");
    assert_eq!(inst.egress_mode, Some(EgressMode::Ifb));
    assert!(ifb.up);
    // Made without IPv6, shaped while down, up, and only then sent traffic.
    let log = k.node.borrow().log.clone();
    let at = |what: &str| {
        log.iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in {log:#?}"))
    };
    let i = ifb.index;
    let steps = [
        at(&format!("create ifb {}", ifb.name)),
        at(&format!("disable ipv6 on {}", ifb.name)),
        at(&format!("replace root tbf on #{i}")),
        at(&format!("set #{i} up")),
        at(&format!("add redirect on #{} to #{i}", host.index)),
    ];
    assert!(steps.is_sorted(), "{steps:?} in {log:#?}");
}

#[test]
fn pod_mode_shapes_inside_and_holds_on_the_host() {
    let (mut k, host) = node();
    let inst = add_fresh(&mut k, &host, EgressMode::Pod, Some(10_000_000), None).unwrap();
    assert!(k.space(POD).qdiscs.iter().any(|q| q.is_root_tbf()));
    let t = &k.space("").tables;
    assert_eq!(t.len(), 1);
    assert!(t[0].0.name.starts_with(TABLE_PREFIX));
    assert_eq!(t[0].1.device, "eni1");
    assert_eq!(t[0].1.total.unwrap().bytes_per_sec, 1_250_000);
    assert_eq!(inst.backstop.as_deref(), Some(t[0].0.name.as_str()));
    assert!(
        !k.space("")
            .links
            .iter()
            .any(|l| l.kind.as_deref() == Some("ifb"))
    );
}

#[test]
fn pod_mode_with_classes_guards_the_htb_and_caps_each_class_on_the_host() {
    let (mut k, host) = node();
    let z = zones();
    add_fresh(&mut k, &host, EgressMode::Pod, Some(200_000_000), Some(&z)).unwrap();
    let pod = k.space(POD);
    assert!(pod.qdiscs.iter().any(|q| q.kind == "htb" && q.is_root()));
    assert!(pod.qdiscs.iter().any(Qdisc::is_clsact));
    assert!(pod.filters.iter().any(|f| f.kind == "bpf"));
    assert_eq!(pod.classes.len(), 4, "pod class and three leaves");
    let b = &k.space("").tables[0].1;
    let cross = b.classes.iter().find(|c| c.name == "crossZone").unwrap();
    assert_eq!(cross.cap.unwrap().bytes_per_sec, 2_500_000);
    assert!(cross.in_total);
    let same = b.classes.iter().find(|c| c.name == "sameZone").unwrap();
    assert!(
        !same.in_total && same.cap.is_none(),
        "unshaped: outside the pod's limit"
    );
    assert_eq!(cross.prefixes.len(), 2, "v4 and v6 peers");
}

#[test]
fn a_pod_without_a_limit_is_still_capped_per_class() {
    let (mut k, host) = node();
    let z = zones();
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, None, Some(&z)).unwrap();
    assert_eq!(
        inst.egress_mode,
        Some(EgressMode::Ifb),
        "a binding cap keeps the configured mode"
    );
    let (mut k2, host2) = node();
    add_fresh(&mut k2, &host2, EgressMode::Pod, None, Some(&z)).unwrap();
    let b = &k2.space("").tables[0].1;
    assert_eq!(b.total, None, "no limit of its own");
    assert!(b.classes.iter().any(|c| c.cap.is_some()));
}

#[test]
fn counting_only_without_caps_needs_no_ifb_and_counts_on_the_host() {
    let (mut k, host) = node();
    let mut z = zones();
    z.classes[1].ingress = None;
    z.classes[1].egress = None;
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, None, Some(&z)).unwrap();
    assert_eq!(inst.egress_mode, Some(EgressMode::Pod));
    assert!(
        !k.space("")
            .links
            .iter()
            .any(|l| l.kind.as_deref() == Some("ifb"))
    );
    // The pod's own counters miss what it sends past its qdiscs; the
    // host's table counts it (and limits nothing).
    let b = &k.space("").tables[0].1;
    assert_eq!(b.total, None);
    assert!(b.classes.iter().all(|c| c.cap.is_none()));
}

#[test]
fn a_stale_table_on_the_device_goes_whatever_this_add_installs() {
    let (mut k, host) = node();
    let req = request(EgressMode::Pod, Some(10_000_000), None);
    let mut stale = crate::backstop::spec(&req, &host);
    stale.table = format!("{TABLE_PREFIX}00000000000000dd");
    stale.owner = ifb_alias("net", "gone-pod", "eth0");
    k.add_table(&stale, Some(&stale.owner.clone()));
    add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap();
    assert!(
        k.space("").tables.is_empty(),
        "an ifb-mode pod does not inherit another's drops"
    );
}

#[test]
fn limits_the_kernel_cannot_hold_are_left_out() {
    let (mut k, host) = node();
    let huge = request(EgressMode::Pod, Some(1_000_000_000_000), None);
    add(&mut k, &host, &huge, None).unwrap();
    assert_eq!(
        k.space("").tables[0].1.total,
        None,
        "1 Tbit/s: no bucket, only counting"
    );
}

/// Counts the changes one ADD makes on a fresh node, then fails each of
/// them in turn: every failed ADD leaves the node exactly as it was.
fn rolls_back_at_every_step(mode: EgressMode, classes: Option<&PeerClasses>) {
    let (mut k, host) = node();
    let before = snapshot(&k);
    add(
        &mut k,
        &host,
        &request(mode, Some(50_000_000), classes),
        None,
    )
    .unwrap();
    let steps = k.node.borrow().changes;
    assert!(steps >= 3, "{steps} changes");
    for n in 1..=steps {
        let (mut k, host) = node();
        k.node.borrow_mut().fail_at = Some(n);
        let r = add(
            &mut k,
            &host,
            &request(mode, Some(50_000_000), classes),
            None,
        );
        assert!(r.is_err(), "step {n} of {steps} was injected to fail");
        assert_eq!(
            snapshot(&k),
            before,
            "failing step {n} of {steps}: {:?}",
            k.node.borrow().log
        );
    }
}

#[test]
fn rollback_at_every_step_ifb_mode() {
    rolls_back_at_every_step(EgressMode::Ifb, None);
}

#[test]
fn rollback_at_every_step_ifb_mode_with_classes() {
    rolls_back_at_every_step(EgressMode::Ifb, Some(&zones()));
}

#[test]
fn rollback_at_every_step_pod_mode() {
    rolls_back_at_every_step(EgressMode::Pod, None);
}

#[test]
fn rollback_at_every_step_pod_mode_with_classes() {
    rolls_back_at_every_step(EgressMode::Pod, Some(&zones()));
}

#[test]
fn a_retried_add_keeps_what_already_matches() {
    let (mut k, host) = node();
    let z = zones();
    let req = request(EgressMode::Pod, Some(50_000_000), Some(&z));
    let inst = add(&mut k, &host, &req, None).unwrap();
    let log_len = k.node.borrow().log.len();
    let again = add(&mut k, &host, &req, Some(&inst)).unwrap();
    assert_eq!(again, inst);
    let log = k.node.borrow().log[log_len..].to_vec();
    assert!(log.is_empty(), "a retry changed {log:?}");
}

#[test]
fn moving_egress_from_the_ifb_into_the_pod_removes_the_ifb_layout() {
    let (mut k, host) = node();
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap();
    let moved = add(
        &mut k,
        &host,
        &request(EgressMode::Pod, Some(10_000_000), None),
        Some(&inst),
    )
    .unwrap();
    let h = k.space("");
    assert!(!h.links.iter().any(|l| l.kind.as_deref() == Some("ifb")));
    assert!(!h.qdiscs.iter().any(|q| q.on_ingress_hook()));
    assert!(h.filters.is_empty());
    assert_eq!(
        (moved.ifb.clone(), moved.ingress_qdisc, moved.filter_prio),
        (None, false, None)
    );
    assert_eq!(h.tables.len(), 1);
    let back = add(
        &mut k,
        &host,
        &request(EgressMode::Ifb, Some(10_000_000), None),
        Some(&moved),
    )
    .unwrap();
    assert!(
        k.space("").tables.is_empty(),
        "back in ifb mode the backstop goes"
    );
    assert!(!k.space(POD).qdiscs.iter().any(|q| q.is_root_tbf()));
    assert!(back.backstop.is_none());
}

#[test]
fn the_reference_plugins_layout_is_adopted_after_an_upgrade() {
    let (mut k, host) = node();
    let name = ifb_name("net", "ctr1");
    let ifb = k.create_ifb(&name, 9001, None).unwrap();
    k.add_ingress_qdisc(host.index).unwrap();
    k.add_u32_redirect_all(host.index, INGRESS_HANDLE, 1, ifb.index)
        .unwrap();
    let inst = add_fresh(&mut k, &host, EgressMode::Auto, Some(10_000_000), None).unwrap();
    assert_eq!(inst.ifb.as_deref(), Some(name.as_str()));
    assert!(
        inst.ingress_qdisc,
        "the ingress qdisc is adopted, not taken for a policy agent's"
    );
    let h = k.space("");
    assert_eq!(
        h.links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("ifb"))
            .count(),
        1
    );
    let l = h.links.iter().find(|l| l.name == name).unwrap();
    assert_eq!(
        l.alias.as_deref(),
        Some(ifb_alias("net", "ctr1", "eth0").as_str()),
        "marked as ours now"
    );
}

#[test]
fn choose_ifb_skips_a_name_another_attachment_holds() {
    let (mut k, host) = node();
    let first = ifb_name("net", "ctr1");
    let other = ifb_alias("net", "ctr1", "net1");
    k.create_ifb(&first, 9001, Some(&other)).unwrap();
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap();
    let chosen = inst.ifb.unwrap();
    assert_ne!(chosen, first);
    assert!(ifb_candidates("net", "ctr1", "eth0").contains(&chosen));
    let h = k.space("");
    let theirs = h.links.iter().find(|l| l.name == first).unwrap();
    assert_eq!(
        theirs.alias.as_deref(),
        Some(other.as_str()),
        "never adopted"
    );
    assert!(!h.qdiscs.iter().any(|q| q.ifindex == theirs.index));
}

#[test]
fn no_free_ifb_name_refuses_with_nothing_changed() {
    let (mut k, host) = node();
    for name in ifb_candidates("net", "ctr1", "eth0") {
        k.create_ifb(&name, 9001, Some("someone else")).unwrap();
    }
    let before = snapshot(&k);
    let e = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap_err();
    assert!(format!("{e:#}").contains("no free ifb name"));
    assert_eq!(snapshot(&k), before);
}

#[test]
fn a_recorded_ifb_that_is_still_ours_is_reused() {
    let (mut k, host) = node();
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap();
    let again = add(
        &mut k,
        &host,
        &request(EgressMode::Ifb, Some(20_000_000), None),
        Some(&inst),
    )
    .unwrap();
    assert_eq!(again.ifb, inst.ifb);
    let h = k.space("");
    assert_eq!(
        h.links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("ifb"))
            .count(),
        1
    );
    let ifb = h
        .links
        .iter()
        .find(|l| Some(&l.name) == inst.ifb.as_ref())
        .unwrap();
    let tbf = h.qdiscs.iter().find(|q| q.ifindex == ifb.index).unwrap();
    assert_eq!(
        tbf.tbf.unwrap().rate_bytes_per_sec,
        2_500_000,
        "the new rate"
    );
}

#[test]
fn a_foreign_root_qdisc_is_refused_with_nothing_changed() {
    let (mut k, host) = node();
    push_qdisc(&k, "", on(&host, "pfifo", TC_H_ROOT, 0x5_0000));
    let before = snapshot(&k);
    assert!(add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).is_err());
    assert_eq!(snapshot(&k), before);
}

#[test]
fn ifb_mode_next_to_a_foreign_clsact_is_code_7_and_auto_moves_into_the_pod() {
    let (mut k, host) = node();
    k.add_clsact_qdisc(host.index).unwrap();
    let before = snapshot(&k);
    let e = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap_err();
    assert_eq!(CniError::from_anyhow(&e).code, Code::InvalidConfig);
    assert_eq!(snapshot(&k), before);
    let inst = add_fresh(&mut k, &host, EgressMode::Auto, Some(10_000_000), None).unwrap();
    assert_eq!(inst.egress_mode, Some(EgressMode::Pod));
    assert!(
        k.space("").qdiscs.iter().any(Qdisc::is_clsact),
        "the agent's clsact stays"
    );
}

#[test]
fn teardown_removes_everything_ours_and_is_idempotent() {
    for mode in [EgressMode::Ifb, EgressMode::Pod] {
        let (mut k, host) = node();
        let before = snapshot(&k);
        let z = zones();
        let inst = add(
            &mut k,
            &host,
            &request(mode, Some(10_000_000), Some(&z)),
            None,
        )
        .unwrap();
        let pod = Some((Path::new(POD), "eth0"));
        teardown(&mut k, &inst, &who(), pod, None).unwrap();
        assert_eq!(snapshot(&k), before, "{mode:?}");
        teardown(&mut k, &inst, &who(), pod, None).unwrap();
    }
}

#[test]
fn teardown_goes_on_past_a_failed_step_and_reports_it() {
    let (mut k, host) = node();
    let inst = add_fresh(&mut k, &host, EgressMode::Ifb, Some(10_000_000), None).unwrap();
    let done = k.node.borrow().changes;
    // The first change of a DEL is the ifb's deletion (it goes first).
    k.node.borrow_mut().fail_at = Some(done + 1);
    let e = teardown(&mut k, &inst, &who(), None, None).unwrap_err();
    let e = CniError::from_anyhow(&e);
    assert_eq!(e.code, Code::Kernel);
    assert!(
        e.details.starts_with("ifb "),
        "names the failed step: {e:?}"
    );
    let h = k.space("");
    assert!(
        h.links.iter().any(|l| l.kind.as_deref() == Some("ifb")),
        "the failed step's ifb stays"
    );
    assert!(
        !h.qdiscs
            .iter()
            .any(|q| q.ifindex == host.index && (q.is_root_tbf() || q.is_ingress())),
        "the host veth's root and ingress went anyway"
    );
    assert!(h.filters.is_empty(), "and the redirect");
}

#[test]
fn teardown_without_the_pod_namespace_still_clears_the_host() {
    let (mut k, host) = node();
    let inst = add_fresh(&mut k, &host, EgressMode::Pod, Some(10_000_000), None).unwrap();
    teardown(&mut k, &inst, &who(), None, None).unwrap();
    assert!(
        k.space("").tables.is_empty(),
        "the backstop goes without the pod"
    );
    assert!(
        k.space(POD).qdiscs.iter().any(|q| q.is_root_tbf()),
        "the pod side is left to its namespace"
    );
}

#[test]
fn teardown_leaves_another_attachments_ifb_and_table() {
    let (mut k, host) = node();
    let mut inst = add_fresh(&mut k, &host, EgressMode::Pod, Some(10_000_000), None).unwrap();
    let theirs = ifb_alias("net", "ctr2", "eth0");
    k.create_ifb("bwpforeign", 9001, Some(&theirs)).unwrap();
    inst.ifb = Some("bwpforeign".into());
    // The table under our name now carries another's mark.
    let table = inst.backstop.clone().unwrap();
    k.node
        .borrow_mut()
        .spaces
        .get_mut(Path::new(""))
        .unwrap()
        .tables[0]
        .0
        .owner = Some(theirs.clone());
    teardown(&mut k, &inst, &who(), None, None).unwrap();
    let h = k.space("");
    assert!(h.links.iter().any(|l| l.name == "bwpforeign"));
    assert!(h.tables.iter().any(|(t, _)| t.name == table));
}

#[test]
fn check_passes_after_add_and_names_each_tamper() {
    let (mut k, host) = node();
    let z = zones();
    for mode in [EgressMode::Ifb, EgressMode::Pod] {
        let req = request(mode, Some(50_000_000), Some(&z));
        let inst = add(&mut k, &host, &req, None).unwrap();
        crate::check::verify(&mut k, &host, &req, Some(&inst)).unwrap();
        teardown(&mut k, &inst, &who(), Some((Path::new(POD), "eth0")), None).unwrap();
    }
    let req = request(EgressMode::Pod, Some(50_000_000), Some(&z));
    let inst = add(&mut k, &host, &req, None).unwrap();
    let mismatch = |k: &mut FakeKernel| {
        let e = crate::check::verify(k, &host, &req, Some(&inst)).unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, Code::CheckMismatch);
        format!("{e:#}")
    };
    // A class rate changed inside the pod.
    k.node
        .borrow_mut()
        .spaces
        .get_mut(Path::new(POD))
        .unwrap()
        .classes[1]
        .rate += 1;
    assert!(mismatch(&mut k).contains("rate"));
    add(&mut k, &host, &req, Some(&inst)).unwrap();
    // The backstop flushed away.
    k.node
        .borrow_mut()
        .spaces
        .get_mut(Path::new(""))
        .unwrap()
        .tables
        .clear();
    assert!(mismatch(&mut k).contains("backstop"));
    add(&mut k, &host, &req, Some(&inst)).unwrap();
    crate::check::verify(&mut k, &host, &req, Some(&inst)).unwrap();
    // The priority-reset filter removed.
    k.node
        .borrow_mut()
        .spaces
        .get_mut(Path::new(POD))
        .unwrap()
        .filters
        .retain(|f| f.kind != "bpf");
    assert!(mismatch(&mut k).contains("priority-reset"));
}

#[test]
fn check_sees_a_redirect_to_the_wrong_ifb() {
    let (mut k, host) = node();
    let req = request(EgressMode::Ifb, Some(10_000_000), None);
    let inst = add(&mut k, &host, &req, None).unwrap();
    k.delete_filter(host.index, INGRESS_HANDLE, 1, ETH_P_ALL)
        .unwrap();
    k.add_u32_redirect_all(host.index, INGRESS_HANDLE, 1, 9999)
        .unwrap();
    let e = crate::check::verify(&mut k, &host, &req, Some(&inst)).unwrap_err();
    assert!(format!("{e:#}").contains("redirects to ifindex"));
    let f = &k.space("").filters[0];
    assert_eq!(f.mirred[0].action, TCA_EGRESS_REDIR);
}

#[test]
fn a_foreign_table_under_our_name_is_refused() {
    let (mut k, host) = node();
    let req = request(EgressMode::Pod, Some(10_000_000), None);
    let b = crate::backstop::spec(&req, &host);
    k.add_table(&b, Some("another tool"));
    let before = snapshot(&k);
    let e = add(&mut k, &host, &req, None).unwrap_err();
    assert!(format!("{e:#}").contains("belongs to someone else"));
    assert_eq!(snapshot(&k), before);
}

#[test]
fn a_stale_table_hooking_our_device_is_swept_and_others_are_not() {
    let (mut k, host) = node();
    let req = request(EgressMode::Pod, Some(10_000_000), None);
    let mut stale = crate::backstop::spec(&req, &host);
    stale.table = format!("{TABLE_PREFIX}00000000000000aa");
    stale.owner = ifb_alias("net", "gone-pod", "eth0");
    k.add_table(&stale, Some(&stale.owner.clone()));
    let mut operators = Backstop {
        table: format!("{TABLE_PREFIX}00000000000000bb"),
        ..stale.clone()
    };
    operators.owner = "an operator's table".into();
    k.add_table(&operators, Some("an operator's table"));
    add(&mut k, &host, &req, None).unwrap();
    let names: Vec<_> = k
        .space("")
        .tables
        .iter()
        .map(|(t, _)| t.name.clone())
        .collect();
    assert!(!names.contains(&stale.table), "the gone pod's table went");
    assert!(
        names.contains(&operators.table),
        "a table not marked as an attachment's stays"
    );
    assert_eq!(names.len(), 2);
}

#[test]
fn gc_lists_only_this_networks_stale_tables() {
    let (mut k, host) = node();
    let req = request(EgressMode::Pod, Some(10_000_000), None);
    add(&mut k, &host, &req, None).unwrap();
    let mut other = crate::backstop::spec(&req, &host);
    other.table = format!("{TABLE_PREFIX}00000000000000cc");
    k.add_table(&other, Some(&ifb_alias("other-net", "ctr9", "eth0")));
    let all_valid = |_: &str, _: &str| true;
    assert!(
        crate::backstop::stale_tables(&mut k, "net", &all_valid)
            .unwrap()
            .is_empty()
    );
    let none_valid = |_: &str, _: &str| false;
    let stale = crate::backstop::stale_tables(&mut k, "net", &none_valid).unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!((stale[0].1.as_str(), stale[0].2.as_str()), ("ctr1", "eth0"));
    crate::backstop::remove_stale(&mut k, &stale[0].0, &who()).unwrap();
    assert_eq!(k.space("").tables.len(), 1, "the other network's stays");
}

#[test]
fn a_vanished_pod_namespace_fails_add_cleanly() {
    let (mut k, host) = node();
    k.node.borrow_mut().spaces.remove(Path::new(POD));
    let before = snapshot(&k);
    assert!(add_fresh(&mut k, &host, EgressMode::Pod, Some(10_000_000), None).is_err());
    assert_eq!(snapshot(&k), before);
}

#[test]
fn a_failed_ingress_only_add_undoes_its_root() {
    let (mut k, host) = node();
    let before = snapshot(&k);
    let mut req = request(EgressMode::Ifb, Some(10_000_000), None);
    req.egress = None;
    k.node.borrow_mut().fail_at = Some(1);
    assert!(add(&mut k, &host, &req, None).is_err());
    assert_eq!(snapshot(&k), before);
    let inst = add(&mut k, &host, &req, None).unwrap();
    assert!(inst.ingress_tbf && inst.ifb.is_none());
}
