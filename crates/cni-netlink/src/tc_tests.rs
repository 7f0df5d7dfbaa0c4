//! Tests of tc: tbf option encoding and decoding without root, and the
//! qdisc and filter requests against a kernel in a private namespace.

use super::*;

fn spec(rate: u64, burst: u32, limit: u32) -> TbfSpec {
    TbfSpec {
        rate_bytes_per_sec: rate,
        burst_bytes: burst,
        limit_bytes: limit,
    }
}

#[test]
fn tbf_encode_layout() {
    let s = spec(125_000, 10_000, 50_000);
    let b = encode_tbf_options(&s);
    // PARMS (4 + 36) + BURST (4 + 4); no RATE64 below 2^32
    assert_eq!(b.len(), 40 + 8);
    assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 40);
    assert_eq!(u16::from_ne_bytes([b[2], b[3]]), TCA_TBF_PARMS);
    let q = &b[4..40];
    assert_eq!(q[1], TC_LINKLAYER_ETHERNET);
    assert_eq!(i16::from_ne_bytes([q[4], q[5]]), -1);
    assert_eq!(crate::read_u32(q, 8), Some(125_000));
    assert_eq!(&q[12..24], &[0u8; 12]);
    assert_eq!(crate::read_u32(q, 24), Some(50_000));
    // 10 kB at 125 kB/s = 80 ms = 1_250_000 ticks
    assert_eq!(crate::read_u32(q, 28), Some(1_250_000));
    assert_eq!(crate::read_u32(q, 32), Some(0));
    assert_eq!(u16::from_ne_bytes([b[42], b[43]]), TCA_TBF_BURST);
    assert_eq!(crate::read_u32(&b, 44), Some(10_000));
}

#[test]
fn tbf_roundtrip_small_and_rate64() {
    let s = spec(125_000, 10_000, 50_000);
    let p = decode_tbf_options(&encode_tbf_options(&s)).unwrap();
    assert_eq!(p.rate_bytes_per_sec, 125_000);
    assert_eq!(p.limit_bytes, 50_000);
    assert_eq!(p.buffer_ticks, burst_to_ticks(125_000, 10_000));
    assert!(p.matches(&s));

    let big = spec(10_000_000_000, u32::MAX - 1, 1 << 20);
    let b = encode_tbf_options(&big);
    assert_eq!(b.len(), 40 + 12 + 8);
    let q = &b[4..40];
    assert_eq!(crate::read_u32(q, 8), Some(u32::MAX));
    let p = decode_tbf_options(&b).unwrap();
    assert_eq!(p.rate_bytes_per_sec, 10_000_000_000);
    assert!(p.matches(&big));
    assert!(!p.matches(&spec(10_000_000_001, u32::MAX - 1, 1 << 20)));
    assert!(!p.matches(&spec(10_000_000_000, 1000, 1 << 20)));
}

#[test]
fn ticks_saturate_and_invert() {
    // 4 GB at 1 B/s would be far beyond u32 ticks
    assert_eq!(burst_to_ticks(1, u32::MAX - 1), u32::MAX);
    assert_eq!(burst_to_ticks(0, 1), u32::MAX);
    let t = burst_to_ticks(1_000_000_000, u32::MAX - 1);
    assert_eq!(
        t,
        ((u128::from(u32::MAX - 1) * 1_000_000_000 / 1_000_000_000) >> 6) as u32
    );
    let back = ticks_to_burst(1_000_000_000, t);
    assert!((u64::from(u32::MAX - 1) - back) < 64 * 2);
    assert_eq!(ticks_to_burst(u64::MAX, u32::MAX), u64::MAX);
}

#[test]
fn decode_rejects_garbage() {
    assert_eq!(decode_tbf_options(&[]), None);
    assert_eq!(decode_tbf_options(&[8, 0, 1, 0, 0, 0, 0, 0]), None);
    assert_eq!(decode_tbf_options(&[200, 0, 1, 0]), None);
}

#[test]
fn filter_info_layout() {
    let info = filter_info(49152, ETH_P_ALL);
    assert_eq!(info >> 16, 49152);
    assert_eq!((info & 0xFFFF) as u16, ETH_P_ALL.to_be());
    #[cfg(target_endian = "little")]
    assert_eq!(info & 0xFFFF, 0x0300);
}

mod kernel {
    use super::super::*;
    use super::spec;
    use crate::testutil::private_netns;

    fn root_tbf(nl: &mut Netlink, index: u32) -> TbfParams {
        let qs = nl.qdiscs(index).unwrap();
        let q = qs
            .iter()
            .find(|q| q.parent == TC_H_ROOT)
            .unwrap_or_else(|| panic!("no root qdisc in {qs:?}"));
        assert_eq!(q.kind, "tbf");
        assert_eq!(q.handle, TBF_HANDLE);
        assert_eq!(q.ifindex, index);
        q.tbf.unwrap()
    }

    /// top_qdiscs answers what the dump answers for the root and the
    /// ingress hook, in every state a plugin meets: default root, our
    /// layout, a clsact, and an ingress queue whose qdisc was deleted.
    #[test]
    fn top_qdiscs_match_the_dump() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        let ifb = nl.create_ifb("top0", 1500, None).unwrap();
        let other = nl.create_ifb("top1", 1500, None).unwrap();
        // A device that was never up reports no root to a GET, and a
        // default one (handle 0:, replaceable by anyone) in a dump: the
        // same thing to every caller, so default roots are left out.
        let check = |nl: &mut Netlink, what: &str| {
            let mut dumped: Vec<Qdisc> = nl
                .qdiscs(ifb.index)
                .unwrap()
                .into_iter()
                .filter(|q| q.parent == TC_H_ROOT || q.parent == TC_H_INGRESS)
                .filter(|q| !q.is_default_root())
                .collect();
            let mut asked: Vec<Qdisc> = nl
                .top_qdiscs(ifb.index)
                .unwrap()
                .into_iter()
                .filter(|q| !q.is_default_root())
                .collect();
            dumped.sort_by_key(|q| q.parent);
            asked.sort_by_key(|q| q.parent);
            assert_eq!(asked, dumped, "{what}");
            asked
        };
        assert!(check(&mut nl, "fresh, down").is_empty());
        nl.set_up(other.index).unwrap();
        let up = nl.top_qdiscs(other.index).unwrap();
        assert!(up.iter().all(|q| q.is_default_root()), "fresh, up: {up:?}");
        nl.replace_root_tbf(ifb.index, &spec(125_000, 10_000, 50_000))
            .unwrap();
        nl.add_ingress_qdisc(ifb.index).unwrap();
        nl.replace_root_tbf(other.index, &spec(125_000, 10_000, 50_000))
            .unwrap();
        // Both devices down (top0) and up (top1) report their tbf.
        assert_eq!(check(&mut nl, "tbf + ingress, down").len(), 2);
        assert!(
            nl.top_qdiscs(other.index)
                .unwrap()
                .iter()
                .any(Qdisc::is_root_tbf)
        );
        nl.delete_qdisc(ifb.index, TC_H_INGRESS, INGRESS_HANDLE)
            .unwrap();
        assert_eq!(check(&mut nl, "ingress deleted").len(), 1);
        nl.add_clsact_qdisc(ifb.index).unwrap();
        let with_clsact = check(&mut nl, "clsact");
        assert!(with_clsact.iter().any(|q| q.kind == "clsact"));
        assert!(nl.top_qdiscs(999_999).unwrap().is_empty(), "no such link");
    }

    /// The raw counter dumps see what the typed ones see, and count.
    #[test]
    fn counter_dumps_agree_with_the_typed_dumps() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        let ifb = nl.create_ifb("cnt0", 1500, None).unwrap();
        nl.replace_root_tbf(ifb.index, &spec(125_000, 10_000, 50_000))
            .unwrap();
        nl.add_ingress_qdisc(ifb.index).unwrap();
        let typed = nl.qdiscs(ifb.index).unwrap();
        let raw: Vec<QdiscCounters> = nl
            .qdisc_counters()
            .unwrap()
            .into_iter()
            .filter(|q| q.ifindex == ifb.index)
            .collect();
        assert_eq!(raw.len(), typed.len(), "{raw:?} vs {typed:?}");
        for t in &typed {
            assert!(
                raw.iter()
                    .any(|r| (r.handle, r.parent, &r.kind) == (t.handle, t.parent, &t.kind)),
                "{t:?} in {raw:?}"
            );
        }
        let links = nl.link_counters().unwrap();
        let mine = links
            .iter()
            .find(|l| l.index == ifb.index)
            .expect("the ifb");
        assert_eq!(mine.name, "cnt0");
        assert!(links.iter().any(|l| l.name == "lo"));
    }

    #[test]
    fn root_tbf_replace_and_dump() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        let ifb = nl.create_ifb("tbf0", 1500, None).unwrap();

        let s1 = spec(125_000, 10_000, 50_000);
        nl.replace_root_tbf(ifb.index, &s1).unwrap();
        let p1 = root_tbf(&mut nl, ifb.index);
        assert_eq!(p1.rate_bytes_per_sec, 125_000);
        assert_eq!(p1.limit_bytes, 50_000);
        assert!(p1.matches(&s1), "{p1:?} vs {s1:?}");
        let burst = ticks_to_burst(p1.rate_bytes_per_sec, p1.buffer_ticks);
        assert!(burst.abs_diff(10_000) <= 10, "{burst}");

        // retry with new values: replaces in place
        let s2 = spec(10_000_000_000, u32::MAX - 1, 1 << 24);
        nl.replace_root_tbf(ifb.index, &s2).unwrap();
        let p2 = root_tbf(&mut nl, ifb.index);
        assert_eq!(p2.rate_bytes_per_sec, 10_000_000_000);
        assert_eq!(p2.limit_bytes, 1 << 24);
        assert!(p2.matches(&s2), "{p2:?} vs {s2:?}");
        assert!(!p2.matches(&s1));
        let burst = ticks_to_burst(p2.rate_bytes_per_sec, p2.buffer_ticks);
        assert!(
            burst.abs_diff(u64::from(u32::MAX - 1)) < 1_000_000,
            "{burst}"
        );
        assert_eq!(
            nl.qdiscs(ifb.index)
                .unwrap()
                .iter()
                .filter(|q| q.kind == "tbf")
                .count(),
            1
        );

        // exactly u32::MAX bytes/s still fits the 32-bit field
        let s3 = spec(u64::from(u32::MAX), 1 << 20, 1 << 20);
        nl.replace_root_tbf(ifb.index, &s3).unwrap();
        assert!(root_tbf(&mut nl, ifb.index).matches(&s3));

        assert!(nl.replace_root_tbf(ifb.index, &spec(0, 1, 1)).is_err());

        assert!(nl.delete_qdisc(ifb.index, TC_H_ROOT, TBF_HANDLE).unwrap());
        assert!(!nl.delete_qdisc(ifb.index, TC_H_ROOT, TBF_HANDLE).unwrap());
        assert!(
            nl.qdiscs(ifb.index)
                .unwrap()
                .iter()
                .all(|q| q.kind != "tbf")
        );
    }

    #[test]
    fn ingress_redirect_filters() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        nl.create_veth("fv0", "fv1").unwrap();
        let v = nl.link_by_name("fv0").unwrap().unwrap();
        let ifb = nl.create_ifb("fifb0", 1500, None).unwrap();
        let sink = nl.create_ifb("fsink0", 1500, None).unwrap();

        nl.add_ingress_qdisc(v.index).unwrap();
        let again = nl.add_ingress_qdisc(v.index).unwrap_err();
        assert!(again.is_exists(), "{again}");
        let qs = nl.qdiscs(v.index).unwrap();
        assert!(
            qs.iter().any(|q| q.kind == "ingress"
                && q.parent == TC_H_INGRESS
                && q.handle == INGRESS_HANDLE),
            "{qs:?}"
        );

        assert!(nl.filters(v.index, INGRESS_HANDLE).unwrap().is_empty());
        nl.add_u32_redirect_all(v.index, INGRESS_HANDLE, 49152, ifb.index)
            .unwrap();
        nl.add_u32_redirect_tcp_dport(v.index, INGRESS_HANDLE, 100, 8080, sink.index)
            .unwrap();
        let fs = nl.filters(v.index, INGRESS_HANDLE).unwrap();
        let all: Vec<_> = fs.iter().filter(|f| f.prio == 49152).collect();
        assert!(!all.is_empty(), "{fs:?}");
        assert!(
            all.iter()
                .all(|f| f.protocol == ETH_P_ALL && f.kind == "u32")
        );
        let redirects: Vec<_> = all.iter().flat_map(|f| f.mirred.clone()).collect();
        assert_eq!(
            redirects,
            vec![Mirred {
                action: TCA_EGRESS_REDIR,
                ifindex: ifb.index
            }]
        );
        let tcp: Vec<_> = fs.iter().filter(|f| f.prio == 100).collect();
        assert!(tcp.iter().all(|f| f.protocol == ETH_P_IP));
        let redirects: Vec<_> = tcp.iter().flat_map(|f| f.mirred.clone()).collect();
        assert_eq!(
            redirects,
            vec![Mirred {
                action: TCA_EGRESS_REDIR,
                ifindex: sink.index
            }]
        );

        assert!(
            nl.delete_filter(v.index, INGRESS_HANDLE, 49152, ETH_P_ALL)
                .unwrap()
        );
        assert!(
            !nl.delete_filter(v.index, INGRESS_HANDLE, 49152, ETH_P_ALL)
                .unwrap()
        );
        let fs = nl.filters(v.index, INGRESS_HANDLE).unwrap();
        assert!(fs.iter().all(|f| f.prio == 100), "{fs:?}");

        assert!(
            nl.delete_qdisc(v.index, TC_H_INGRESS, INGRESS_HANDLE)
                .unwrap()
        );
        assert!(
            !nl.delete_qdisc(v.index, TC_H_INGRESS, INGRESS_HANDLE)
                .unwrap()
        );
        // filters of a parent that no longer exists: nothing to delete
        assert!(
            !nl.delete_filter(v.index, INGRESS_HANDLE, 100, ETH_P_IP)
                .unwrap()
        );
    }

    #[test]
    fn clsact_blocks_ingress() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        nl.create_veth("cv0", "cv1").unwrap();
        let v = nl.link_by_name("cv0").unwrap().unwrap();
        nl.add_clsact_qdisc(v.index).unwrap();
        let err = nl.add_ingress_qdisc(v.index).unwrap_err();
        assert!(err.is_exists(), "{err}");
        assert!(!err.is_not_found());
        let qs = nl.qdiscs(v.index).unwrap();
        assert!(qs.iter().any(|q| q.kind == "clsact"), "{qs:?}");
    }

    #[test]
    fn delete_missing_qdiscs() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        let ifb = nl.create_ifb("dq0", 1500, None).unwrap();
        assert!(!nl.delete_qdisc(ifb.index, TC_H_ROOT, TBF_HANDLE).unwrap());
        assert!(
            !nl.delete_qdisc(ifb.index, TC_H_INGRESS, INGRESS_HANDLE)
                .unwrap()
        );
        assert!(
            !nl.delete_filter(ifb.index, INGRESS_HANDLE, 1, ETH_P_ALL)
                .unwrap()
        );
        nl.delete_link(ifb.index).unwrap();
        assert!(!nl.delete_qdisc(ifb.index, TC_H_ROOT, TBF_HANDLE).unwrap());
        let err = nl
            .replace_root_tbf(ifb.index, &spec(1000, 1000, 1000))
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(nl.qdiscs(ifb.index).unwrap().is_empty());
    }
}
