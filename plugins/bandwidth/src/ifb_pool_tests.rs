//! The ifb pool through the in-memory kernel: DEL parks, ADD takes, the
//! pool's bounds and ownership, and that no ifb is ever parked while a
//! redirect to it is left.
use super::*;
use crate::config::EgressMode;
use crate::plan::AddRequest;
use crate::reconcile::install;
use crate::record::{Attachment, Installed};
use crate::tbf::Shape;
use crate::teardown::teardown;
use cni_netlink::fake::FakeKernel;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A state dir of its own (the pool's lock file lives there), removed
/// when dropped.
struct Dir(PathBuf);
impl Dir {
    fn new() -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("ifb-pool-{}-{n}", std::process::id()));
        Dir(d)
    }
    fn store(&self) -> StateStore {
        StateStore::new(&self.0, "bandwidth", "net")
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shape() -> Shape {
    let limit = crate::rates::Limit {
        rate_bits: 10_000_000,
        burst_bits: None,
    };
    crate::tbf::shape(&limit, 9001, 25)
}

fn request<'a>(cid: &'a str, pod: &'a Path, pool: &'a IfbPool<'a>) -> AddRequest<'a> {
    AddRequest {
        network: "net",
        container_id: cid,
        ifname: "eth0",
        netns: pod,
        netns_id: None,
        egress_mode: EgressMode::Ifb,
        ingress: Some(shape()),
        egress: Some(shape()),
        policy: None,
        pod: None,
        classes: None,
        latency_ms: 25,
        ifb_pool: Some(pool),
    }
}

fn add(k: &mut FakeKernel, host: &Link, req: &AddRequest<'_>) -> anyhow::Result<Installed> {
    install(k, host, req, None, &mut |_| Ok(())).map(|(inst, _)| inst)
}

fn who(cid: &str) -> Attachment<'_> {
    Attachment {
        network: "net",
        container_id: cid,
        ifname: "eth0",
    }
}

fn ifbs(k: &FakeKernel) -> Vec<Link> {
    let mut l: Vec<Link> = k
        .space("")
        .links
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("ifb"))
        .collect();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

#[test]
fn del_parks_its_ifb_and_the_next_add_takes_it() {
    let dir = Dir::new();
    let store = dir.store();
    let pool = IfbPool::new(&store, 4);
    let k = &mut FakeKernel::new();
    let eni1 = k.add_veth("eni1", Path::new("/pod1"), "eth0", 9001);
    let eni2 = k.add_veth("eni2", Path::new("/pod2"), "eth0", 1500);
    let inst = add(k, &eni1, &request("ctr1", Path::new("/pod1"), &pool)).unwrap();
    let made = ifbs(k).remove(0);
    teardown(k, &inst, &who("ctr1"), None, Some(&pool)).unwrap();

    let parked = ifbs(k);
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].index, made.index);
    assert_eq!(parked[0].name, "ifb-parked0");
    assert!(!parked[0].up && pool.holds(&parked[0]));
    let h = k.space("");
    assert!(h.qdiscs.iter().all(|q| q.ifindex != made.index), "no root");
    assert!(h.filters.is_empty() && h.qdiscs.is_empty(), "host clean");
    let log = k.node.borrow().log.join("\n");
    let filter_gone = log.find("delete filter").expect("filter deleted");
    let renamed = log.find("ifb-parked0").expect("renamed");
    assert!(filter_gone < renamed, "the redirect goes first:\n{log}");

    let inst2 = add(k, &eni2, &request("ctr2", Path::new("/pod2"), &pool)).unwrap();
    let taken = ifbs(k).remove(0);
    assert_eq!(taken.index, made.index, "the parked ifb is reused");
    assert_eq!(Some(taken.name.clone()), inst2.ifb);
    assert_eq!(taken.alias, Some(who("ctr2").alias()));
    assert!(taken.up);
    assert_eq!(taken.mtu, 1500, "the new pod's MTU");
    let h = k.space("");
    assert!(
        h.qdiscs
            .iter()
            .any(|q| q.ifindex == taken.index && q.is_root_tbf())
    );
    assert_eq!(h.filters[0].mirred[0].ifindex, taken.index);
}

#[test]
fn a_full_pool_deletes_and_gc_trims_to_what_it_keeps() {
    let dir = Dir::new();
    let store = dir.store();
    let pool = IfbPool::new(&store, 2);
    let k = &mut FakeKernel::new();
    let mut all = Vec::new();
    for i in 0..3 {
        let (cid, ns) = (format!("ctr{i}"), PathBuf::from(format!("/pod{i}")));
        let host = k.add_veth(&format!("eni{i}"), &ns, "eth0", 9001);
        let inst = add(k, &host, &request(&cid, &ns, &pool)).unwrap();
        all.push((cid, inst));
    }
    for (cid, inst) in &all {
        teardown(k, inst, &who(cid), None, Some(&pool)).unwrap();
    }
    let names: Vec<String> = ifbs(k).into_iter().map(|l| l.name).collect();
    assert_eq!(
        names,
        ["ifb-parked0", "ifb-parked1"],
        "two parked, the third deleted"
    );

    let mut failures = Failures::default();
    pool.trim(k, 1, &mut failures);
    assert!(failures.is_empty());
    let names: Vec<String> = ifbs(k).into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["ifb-parked0"], "the lowest slot stays");
    pool.trim(k, 0, &mut failures);
    assert!(ifbs(k).is_empty() && failures.is_empty());
}

#[test]
fn slots_held_by_others_are_skipped_and_never_taken() {
    let dir = Dir::new();
    let store = dir.store();
    let other_dir = Dir::new();
    let other_store = other_dir.store();
    let pool = IfbPool::new(&store, 4);
    let other = IfbPool::new(&other_store, 4);
    let k = &mut FakeKernel::new();
    // Slot 0: another pool's parked ifb; slot 1: an unmarked ifb.
    k.create_ifb("ifb-parked0", 1500, Some(&other.alias))
        .unwrap();
    k.create_ifb("ifb-parked1", 1500, None).unwrap();
    let host = k.add_veth("eni1", Path::new("/pod1"), "eth0", 9001);
    let inst = add(k, &host, &request("ctr1", Path::new("/pod1"), &pool)).unwrap();
    let mine = inst.ifb.clone().unwrap();
    assert!(
        mine.starts_with("bwp") && mine.len() == 15,
        "created: {mine}"
    );
    teardown(k, &inst, &who("ctr1"), None, Some(&pool)).unwrap();
    let l = k
        .link_by_name("ifb-parked2")
        .unwrap()
        .expect("parked in slot 2");
    assert!(pool.holds(&l));

    let taken = pool.take(k, "bwpnew", "mark", 1500).unwrap();
    assert!(
        matches!(&taken, Taken::Ifb(l) if l.name == "bwpnew"),
        "{taken:?}"
    );
    assert!(matches!(
        pool.take(k, "bwpnew2", "m", 1500).unwrap(),
        Taken::Empty
    ));
    let b0 = k.link_by_name("ifb-parked0").unwrap().unwrap();
    assert_eq!(b0.alias.as_deref(), Some(other.alias.as_str()), "not ours");
    assert!(k.link_by_name("ifb-parked1").unwrap().is_some());
    let mut failures = Failures::default();
    pool.trim(k, 0, &mut failures);
    assert!(
        k.link_by_name("ifb-parked0").unwrap().is_some(),
        "trim keeps others'"
    );
}

#[test]
fn taking_a_name_made_meanwhile_leaves_the_ifb_parked() {
    let dir = Dir::new();
    let store = dir.store();
    let pool = IfbPool::new(&store, 4);
    let k = &mut FakeKernel::new();
    let l = k.create_ifb("bwpx", 1500, Some("x")).unwrap();
    assert!(pool.park(k, &l).unwrap());
    k.create_ifb("bwptaken", 1500, Some("theirs")).unwrap();
    let t = pool.take(k, "bwptaken", "mine", 1500).unwrap();
    assert!(matches!(t, Taken::NameTaken), "{t:?}");
    let still = k.link_by_name("ifb-parked0").unwrap().unwrap();
    assert!(pool.holds(&still) && !still.up);
}

#[test]
fn a_pool_of_zero_or_a_dir_too_long_to_mark_parks_nothing() {
    let dir = Dir::new();
    let store = dir.store();
    let long = StateStore::new(format!("/{}", "d".repeat(300)), "bandwidth", "net");
    for pool in [IfbPool::new(&store, 0), IfbPool::new(&long, 16)] {
        let k = &mut FakeKernel::new();
        let l = k.create_ifb("bwpx", 1500, Some("x")).unwrap();
        assert!(!pool.is_on());
        assert!(!pool.park(k, &l).unwrap());
        assert!(matches!(
            pool.take(k, "n", "a", 1500).unwrap(),
            Taken::Empty
        ));
        assert!(k.link_by_name("bwpx").unwrap().is_some(), "untouched");
    }
}

/// Whatever step of a DEL fails, an ifb is never parked while a redirect
/// to it stays on the host veth (another pod taking it would get this
/// pod's traffic), and a retried DEL leaves nothing of the attachment.
#[test]
fn no_ifb_is_parked_with_a_redirect_left_whatever_step_fails() {
    let dir = Dir::new();
    let store = dir.store();
    let pool = IfbPool::new(&store, 4);
    for n in 1..=8 {
        let k = &mut FakeKernel::new();
        let host = k.add_veth("eni1", Path::new("/pod1"), "eth0", 9001);
        let inst = add(k, &host, &request("ctr1", Path::new("/pod1"), &pool)).unwrap();
        let done = k.node.borrow().changes;
        k.node.borrow_mut().fail_at = Some(done + n);
        let _ = teardown(k, &inst, &who("ctr1"), None, Some(&pool));
        let h = k.space("");
        for l in ifbs(k).iter().filter(|l| pool.holds(l)) {
            let redirected = h
                .filters
                .iter()
                .any(|f| f.mirred.iter().any(|m| m.ifindex == l.index));
            assert!(!redirected, "step {n}: {} parked with a redirect", l.name);
        }
        k.node.borrow_mut().fail_at = None;
        teardown(k, &inst, &who("ctr1"), None, Some(&pool)).unwrap();
        let h = k.space("");
        assert!(
            h.filters.is_empty() && h.qdiscs.is_empty(),
            "step {n}: {h:?}"
        );
        assert!(
            ifbs(k).iter().all(|l| pool.holds(l)),
            "step {n}: only parked ifbs stay"
        );
        for l in ifbs(k) {
            k.delete_link(l.index).unwrap();
        }
    }
}

#[test]
fn a_failed_add_deletes_the_ifb_it_took() {
    let dir = Dir::new();
    let store = dir.store();
    let pool = IfbPool::new(&store, 4);
    let k = &mut FakeKernel::new();
    let l = k.create_ifb("bwpx", 1500, Some("x")).unwrap();
    assert!(pool.park(k, &l).unwrap());
    let host = k.add_veth("eni1", Path::new("/pod1"), "eth0", 9001);
    let done = k.node.borrow().changes;
    // Root tbf on the host, take, tbf on the ifb: bringing it up fails.
    k.node.borrow_mut().fail_at = Some(done + 4);
    add(k, &host, &request("ctr1", Path::new("/pod1"), &pool)).unwrap_err();
    assert!(ifbs(k).is_empty(), "{:?}", ifbs(k));
    assert!(k.space("").qdiscs.is_empty());
}
