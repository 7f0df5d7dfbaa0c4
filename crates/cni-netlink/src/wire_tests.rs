//! The hand parsers against answers captured from a kernel (6.18, x86_64)
//! once, byte for byte: each whole netlink message, header included, as
//! hex. Every cut of a message and random damage to it must give an error
//! (`None`, or a protocol error for the framing), never a panic.
//!
//! Captured in a private netns: a veth pair with one end moved to another
//! netns, an ifb, a tbf on the ifb, an htb with a u32 classifier on the
//! veth, the ingress redirect (and a tcp-dport one) from the veth to the
//! ifb, the priority-reset bpf filter on the ifb's clsact, and refusals.

#![cfg(target_endian = "little")]

use crate::exchange::Exchange;
use crate::htb::U32Match;
use crate::link::nsid_from_raw;
use crate::tc::filter::filter_from_raw;
use crate::tc::{
    ETH_P_ALL, ETH_P_IP, Filter, INGRESS_HANDLE, Mirred, Qdisc, TC_H_ROOT, TCA_EGRESS_REDIR,
    TbfParams, burst_to_ticks, qdisc_from_raw,
};
use crate::{Link, NlError};

/// RTM_NEWLINK of a veth (`vcap0`) whose peer was moved to another netns: answer to `RTM_GETLINK` by index.
const VETH: &str = concat!(
    "e0050000100000000700000071eab883000001000300000002100000000000000a0003007663617030000000",
    "08000d00e803000005001000020000000500110000000000050043000000000008000400dc05000008003200",
    "4400000008003300ffff000008001b000000000008001e000000000008003d000000000008001f0002000000",
    "08002800ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00",
    "f8ff070008003c00ffff00000800420000000000080020000200000005002100000000000800230001000000",
    "08002f000000000008003000010000000600440000000000060045000000000005002700000000000a000100",
    "f25332d179ea00000a000200ffffffffffff0000cc0017000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000064000700000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000c002b00050002000000000010001200090001007665746800000000",
    "08002500000000000800050002000000090006006e6f6f700000000030031a008c0002008800010000000000",
    "0000000000000000010000000100000001000000010000000000000001000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000010270000e80300000000000000000000000000000000000001000000a0020a00",
    "080001000000000014000500ffff00000e4a16002ca40000e8030000f40002000000000040000000dc050000",
    "01000000010000000100000001000000ffffffffa00f0000e803000000000000803a09008051010003000000",
    "58020000100000000000000001000000010000000100000060ea000000000000000000000000000000000000",
    "000000000000000001000000000000000000000010270000e803000001000000000000000000000001000000",
    "0000000000000000010000000000000000000000000000000000000080ee3600000000000000000001000000",
    "00000000000000000000000000000000000000000004000000000000ffff0000ffffffff0100000000000000",
    "0000000000000000340103002600000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000003c0006000700000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000001400070000000000000000000000000000000000",
    "050008000000000024000e000000000000000000000000000000000000000000000000000000000000000000",
    "04003e8004004180",
);
/// RTM_NEWLINK of an ifb (`ifbcap`, mtu 1400, alias `owned-by-capture`, up).
const IFB: &str = concat!(
    "e80500001000000007000000928745a80000010004000000c3000100000000000b0003006966626361700000",
    "08000d00e8030000050010000000000005001100000000000500430000000000080004007805000008003200",
    "00000000080033000000000008001b000000000008001e000000000008003d000000000008001f0001000000",
    "08002800ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00",
    "f8ff070008003c00ffff0000080042000000000008002000010000000500210001000000150014006f776e65",
    "642d62792d6361707475726500000000080023000000000008002f0000000000080030000000000006004400",
    "00000000060045000000000005002700000000000a0001002a3d339fb84f00000a000200ffffffffffff0000",
    "cc00170001000000000000000000000000000000460000000000000000000000000000000000000000000000",
    "0000000000000000010000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000064000700010000000000000046000000",
    "0000000000000000000000000100000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000c002b00",
    "05000200000000000c00120008000100696662000f000600706669666f5f66617374000030031a008c000200",
    "8800010000000000000000000000000001000000010000000100000001000000000000000100000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000010270000e803000000000000000000000000000000000000",
    "01000000a0020a00080001001000008014000500ffff00000e4a160084440000e8030000f400020000000000",
    "400000007805000001000000010000000100000001000000ffffffffa00f0000e803000000000000803a0900",
    "805101000300000058020000100000000000000001000000010000000100000060ea00000000000000000000",
    "00000000000000000000000000000000ffffffff000000000000000010270000e80300000100000000000000",
    "00000000010000000000000000000000010000000000000000000000000000000000000080ee360000000000",
    "000000000100000000000000000000000000000000000000000000000004000000000000ffff0000ffffffff",
    "0100000000000000000000000000000034010300260000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000001000000",
    "0000000001000000000000003800000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000010000000000000000000000",
    "0000000000000000000000000000000000000000380000000000000000000000000000000000000000000000",
    "000000000000000000000000000000003c000600070000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000140007000000000000000000",
    "0000000000000000050008000000000024000e00000000000000000000000000000000000000000000000000",
    "000000000000000004003e8004004180",
);
/// RTM_NEWNSID: the id (0) the netns gives the veth peer's.
const NSID: &str = "1c0000005800000007000000b982f8b1000000000800010000000000";
/// RTM_NEWQDISC of a root tbf `1:` (1.25 MB/s, burst 62.5 kB, limit 125 kB).
const TBF: &str = concat!(
    "bc00000024000000070000004e8b43b9000000000400000000000100ffffffff020000000800010074626600",
    "2c000200280001000001000000000000d012130000000000000000000000000048e80100c2eb0b0000000000",
    "05000c0000000000300007001400010000000000000000000000000000000000180003000000000000000000",
    "0000000000000000000000002c00030000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000",
);
/// RTM_NEWQDISC of a root htb `1:` with default class `1:10`.
const HTB: &str = concat!(
    "b40000002400000007000000f14e09b7000000000300000000000100ffffffff030000000800010068746200",
    "2400020018000200110003000a00000010000000000000000000000008000500e803000005000c0000000000",
    "3000070014000100000000000000000000000000000000001800030000000000000000000000000000000000",
    "000000002c000300000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000",
);
/// RTM_NEWTFILTER: `u32 match u32 0 0 action mirred egress redirect dev ifbcap` under ingress, prio 1.
const U32_ALL: &str = concat!(
    "140100002c0002000700000050210ed20000000003000000000800800000ffff000301000800010075333200",
    "08000b0000000000e00002002400050001000100000000000000000000000000000000000000000000000000",
    "00000000080002000000008008000b0008000000a8000700a40001000b0001006d6972726564000044000400",
    "1400010000000000000000000000000000000000140007000000000000000000000000000000000018000300",
    "000000000000000000000000000000000000000008000a000000000048000200200002000100000000000000",
    "0400000001000000010000000100000004000000240001000000000000000000000000000000000000000000",
    "000000000000000000000000",
);
/// RTM_NEWTFILTER: the hash table entry (`fh 801:`) the kernel lists before a u32 rule.
const U32_HT: &str = concat!(
    "400000002c0002000700000050210ed20000000003000000000010800000ffff080002000800010075333200",
    "08000b00000000000c0002000800040001000000",
);
/// RTM_NEWTFILTER: u32 ip tcp dport 8080 with a mirred redirect, prio 2, protocol ip.
const U32_DPORT: &str = concat!(
    "240100002c0002000700000050210ed20000000003000000000810800000ffff080002000800010075333200",
    "08000b0000000000f0000200340005000100020000000000000000000000000000ff00000006000008000000",
    "000000000000ffff00001f901400000000000000080002000000108008000b0008000000a8000700a4000100",
    "0b0001006d697272656400004400040014000100000000000000000000000000000000001400070000000000",
    "00000000000000000000000018000300000000000000000000000000000000000000000008000a0000000000",
    "4800020020000200020000000000000004000000010000000100000001000000040000002400010000000000",
    "00000000000000000000000000000000000000000000000000000000",
);
/// RTM_NEWTFILTER: u32 10.1.0.0/16 (dst) to class `1:10`, prio 3, under htb `1:`.
const CLASSIFIER: &str = concat!(
    "740000002c00020007000000023cf4f200000000030000000008008000000100080003000800010075333200",
    "08000b0000000000400002002400050001000100000000000000000000000000ffff00000a01000010000000",
    "000000000800020000000080080001001000010008000b0008000000",
);
/// RTM_NEWTFILTER: the priority-reset bpf filter on the clsact egress hook.
const BPF: &str = concat!(
    "700000002c00020007000000a9ae25ea000000000400000001000000f3ffffff000301000800010062706600",
    "08000b00000000003c00020011000700636e695f72735f7072696f300000000008000b007a0100000c000a00",
    "73874420e112dc7e08000800010000000800090008000000",
);
/// NLMSG_ERROR with code 0 (the ACK), capped: the request's header only.
const ACK: &str = "24000000020000010700000071eab8830000000020000000120005000700000000000000";
/// NLMSG_DONE ending a dump.
const DONE: &str = "14000000030002000700000050210ed200000000";
/// NLMSG_ERROR ERANGE for a 300-byte alias, capped, with extended-ack TLVs.
const ERR_CAPPED: &str = concat!(
    "680000000200000307000000c017098adeffffff500100001300050007000000000000002700010041747472",
    "6962757465206661696c656420706f6c6963792076616c69646174696f6e0000080002002000000014000480",
    "08000700ff000000080001000a000000",
);
/// The same refusal on a socket without capped acks: the whole request is echoed before the TLVs.
const ERR_FULL: &str = concat!(
    "a801000002000002070000002e0641afdeffffff500100001300050007000000000000000000000004000000",
    "0000000000000000300114007878787878787878787878787878787878787878787878787878787878787878",
    "7878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "7878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "7878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "7878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "7878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "7878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "7878787827000100417474726962757465206661696c656420706f6c6963792076616c69646174696f6e0000",
    "08000200200000001400048008000700ff000000080001000a000000",
);
/// NLMSG_ERROR ENODEV for a missing ifindex, no TLVs.
const ENODEV: &str = "240000000200000107000000b02bac8dedffffff20000000120005000700000000000000";

/// The sequence number every fixture carries.
const SEQ: u32 = 7;
/// The veth's, the ifb's and the veth peer's ifindex in the capture.
const VETH_INDEX: u32 = 3;
const IFB_INDEX: u32 = 4;

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("fixture is hex"))
        .collect()
}

/// A fixture's payload (after the 16-byte netlink header).
fn payload(hex: &str) -> Vec<u8> {
    bytes(hex)[crate::NLMSG_HDR_LEN..].to_vec()
}

#[test]
fn a_veth() {
    let link = Link::from_raw(&payload(VETH)).expect("parses");
    assert_eq!(link.index, VETH_INDEX);
    assert_eq!(link.name, "vcap0");
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert_eq!(link.mtu, 1500);
    assert_eq!(link.min_mtu, Some(68));
    assert_eq!(link.max_mtu, Some(65535));
    assert_eq!(link.txqlen, 1000);
    assert_eq!(link.alias, None);
    assert_eq!(link.peer_index, Some(2));
    assert_eq!(link.link_netnsid, Some(0));
    assert!(!link.up);
    assert!(link.mac.is_some());
}

#[test]
fn an_ifb() {
    let link = Link::from_raw(&payload(IFB)).expect("parses");
    assert_eq!(link.index, IFB_INDEX);
    assert_eq!(link.name, "ifbcap");
    assert_eq!(link.kind.as_deref(), Some("ifb"));
    assert_eq!(link.mtu, 1400);
    assert_eq!(link.max_mtu, None, "0 is the kernel's no limit");
    assert_eq!(link.txqlen, 1000);
    assert_eq!(link.alias.as_deref(), Some("owned-by-capture"));
    assert_eq!(link.peer_index, None);
    assert_eq!(link.link_netnsid, None);
    assert!(link.up);
    assert!(link.mac.is_some());
}

#[test]
fn an_nsid() {
    assert_eq!(nsid_from_raw(&payload(NSID)), Some(Some(0)));
    // A header and no attributes: no id, not an error.
    assert_eq!(nsid_from_raw(&[0, 0, 0, 0]), Some(None));
}

#[test]
fn a_tbf() {
    let q = qdisc_from_raw(&payload(TBF)).expect("parses");
    let want = Qdisc {
        ifindex: IFB_INDEX,
        handle: 0x1_0000,
        parent: TC_H_ROOT,
        kind: "tbf".to_string(),
        tbf: Some(TbfParams {
            rate_bytes_per_sec: 1_250_000,
            limit_bytes: 125_000,
            buffer_ticks: burst_to_ticks(1_250_000, 62_500),
        }),
        htb_default: None,
    };
    assert_eq!(q, want);
    assert!(q.is_root_tbf());
}

#[test]
fn an_htb() {
    let q = qdisc_from_raw(&payload(HTB)).expect("parses");
    assert_eq!(q.ifindex, VETH_INDEX);
    assert_eq!(q.kind, "htb");
    assert_eq!(q.htb_default, Some(0x10));
    assert_eq!(q.tbf, None);
    assert!(q.is_root_shaper());
}

fn u32_filter(prio: u16, protocol: u16, handle: u32) -> Filter {
    Filter {
        ifindex: VETH_INDEX,
        parent: INGRESS_HANDLE,
        prio,
        protocol,
        kind: "u32".to_string(),
        handle,
        mirred: Vec::new(),
        classid: None,
        keys: Vec::new(),
    }
}

#[test]
fn u32_filters_with_mirred() {
    let redirect = vec![Mirred {
        action: TCA_EGRESS_REDIR,
        ifindex: IFB_INDEX,
    }];
    let all = filter_from_raw(&payload(U32_ALL)).expect("parses");
    assert_eq!(
        all,
        Filter {
            mirred: redirect.clone(),
            keys: vec![U32Match {
                mask: 0,
                val: 0,
                off: 0
            }],
            ..u32_filter(1, ETH_P_ALL, 0x8000_0800)
        }
    );
    let ht = filter_from_raw(&payload(U32_HT)).expect("parses");
    assert_eq!(ht, u32_filter(2, ETH_P_IP, 0x8010_0000));
    let dport = filter_from_raw(&payload(U32_DPORT)).expect("parses");
    // Keys come back in host order, as they were given.
    let keys = vec![
        U32Match {
            mask: 0x00FF_0000,
            val: 6 << 16,
            off: 8,
        },
        U32Match {
            mask: 0xFFFF,
            val: 8080,
            off: 20,
        },
    ];
    assert_eq!(
        dport,
        Filter {
            mirred: redirect,
            keys,
            ..u32_filter(2, ETH_P_IP, 0x8010_0800)
        }
    );
}

#[test]
fn a_u32_classifier() {
    let f = filter_from_raw(&payload(CLASSIFIER)).expect("parses");
    assert_eq!(f.parent, 0x1_0000);
    assert_eq!(f.prio, 3);
    assert_eq!(f.classid, Some(0x1_0010));
    assert_eq!(
        f.keys,
        vec![U32Match {
            mask: 0xFFFF_0000,
            val: 0x0A01_0000,
            off: 16
        }]
    );
    assert!(f.mirred.is_empty());
}

#[test]
fn a_bpf_filter() {
    let f = filter_from_raw(&payload(BPF)).expect("parses");
    assert_eq!(f.ifindex, IFB_INDEX);
    assert_eq!(f.parent, crate::bpf::CLSACT_EGRESS);
    assert_eq!(f.kind, "bpf");
    assert_eq!((f.prio, f.protocol, f.handle), (1, ETH_P_ALL, 1));
    assert!(f.mirred.is_empty() && f.keys.is_empty() && f.classid.is_none());
}

/// Runs every hand parser on `p`; none may panic, whatever `p` holds.
fn parse_all(p: &[u8]) -> [bool; 4] {
    [
        Link::from_raw(p).is_some(),
        nsid_from_raw(p).is_some(),
        qdisc_from_raw(p).is_some(),
        filter_from_raw(p).is_some(),
    ]
}

/// Every cut of every data fixture: a cut inside the fixed header, or one
/// that leaves the attributes unframed, is refused by the message's own
/// parser.
#[test]
fn cut_messages_are_refused() {
    // (fixture, length of its fixed header, whether its parser takes it)
    type Case = (&'static str, usize, fn(&[u8]) -> bool);
    let cases: [Case; 9] = [
        (VETH, 16, |p| Link::from_raw(p).is_some()),
        (IFB, 16, |p| Link::from_raw(p).is_some()),
        (NSID, 4, |p| nsid_from_raw(p).is_some()),
        (TBF, 20, |p| qdisc_from_raw(p).is_some()),
        (HTB, 20, |p| qdisc_from_raw(p).is_some()),
        (U32_ALL, 20, |p| filter_from_raw(p).is_some()),
        (U32_DPORT, 20, |p| filter_from_raw(p).is_some()),
        (CLASSIFIER, 20, |p| filter_from_raw(p).is_some()),
        (BPF, 20, |p| filter_from_raw(p).is_some()),
    ];
    for (hex, header, parses) in cases {
        let p = payload(hex);
        assert!(parses(&p));
        for cut in 0..p.len() {
            let short = &p[..cut];
            parse_all(short);
            let framed = cut >= header && crate::attrs(&short[header..]).is_some();
            if !framed {
                assert!(!parses(short), "a cut at {cut} of {} parsed", p.len());
            }
        }
    }
}

/// Random damage (a small xorshift, so failures repeat): bytes flipped,
/// lengths broken. Only "no panic" is asserted; what parses is luck.
#[test]
fn damaged_messages_never_panic() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for hex in [
        VETH, IFB, NSID, TBF, HTB, U32_ALL, U32_DPORT, CLASSIFIER, BPF,
    ] {
        let clean = payload(hex);
        for _ in 0..2000 {
            let mut p = clean.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % p.len() as u64) as usize;
                p[at] = next() as u8;
            }
            parse_all(&p);
        }
    }
    for len in 0..64 {
        let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        parse_all(&garbage);
    }
}

/// Reads `datagram` as the answer to a request (`dump` or not) and returns
/// the exchange's end and the data messages' types.
fn read(datagram: &[u8], dump: bool, cap_ack: bool) -> (Option<crate::Result<()>>, bool, Vec<u16>) {
    let mut exchange = Exchange::new("op", SEQ, dump, cap_ack);
    let mut types = Vec::new();
    let framed = exchange.read_datagram(datagram, &mut |m| {
        if let Some((ty, _)) = m {
            types.push(ty);
        }
    });
    let finished = match framed {
        Ok(()) => exchange.finished,
        Err(e) => Some(Err(e)),
    };
    (finished, exchange.interrupted, types)
}

fn kernel_errno(r: &Option<crate::Result<()>>) -> Option<i32> {
    match r {
        Some(Err(e @ NlError::Kernel { .. })) => e.errno(),
        _ => None,
    }
}

#[test]
fn an_answer_then_its_ack() {
    let datagram = [bytes(VETH), bytes(ACK)].concat();
    let (end, interrupted, types) = read(&datagram, false, true);
    assert!(matches!(end, Some(Ok(()))), "{end:?}");
    assert!(!interrupted);
    assert_eq!(types, vec![16]);
}

#[test]
fn a_dump_ends_at_done() {
    let datagram = [bytes(U32_ALL), bytes(U32_DPORT), bytes(DONE)].concat();
    let (end, _, types) = read(&datagram, true, true);
    assert!(matches!(end, Some(Ok(()))), "{end:?}");
    assert_eq!(types, vec![44, 44]);
    // On a plain request a DONE does not end the exchange: its ACK does.
    let (end, _, _) = read(&bytes(DONE), false, true);
    assert!(end.is_none(), "{end:?}");
}

#[test]
fn refusals_carry_errno_and_extended_ack() {
    for (hex, cap_ack) in [(ERR_CAPPED, true), (ERR_FULL, false)] {
        let (end, _, types) = read(&bytes(hex), false, cap_ack);
        assert!(types.is_empty());
        assert_eq!(kernel_errno(&end), Some(nix::libc::ERANGE), "{end:?}");
        let text = end.expect("ended").expect_err("refused").to_string();
        assert!(
            text.contains("(Attribute failed policy validation)"),
            "{text}"
        );
    }
    let (end, _, _) = read(&bytes(ENODEV), false, true);
    assert_eq!(kernel_errno(&end), Some(nix::libc::ENODEV), "{end:?}");
    let e = end.expect("ended").expect_err("refused");
    assert!(e.is_not_found());
    assert_eq!(
        e.to_string(),
        format!("op: {}", std::io::Error::from_raw_os_error(19))
    );
}

/// Sets a fixture's `nlmsg_flags`, `nlmsg_seq` or length.
fn with_header(hex: &str, len: Option<u32>, flags: Option<u16>, seq: Option<u32>) -> Vec<u8> {
    let mut b = bytes(hex);
    if let Some(len) = len {
        b[0..4].copy_from_slice(&len.to_ne_bytes());
    }
    if let Some(flags) = flags {
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
    }
    if let Some(seq) = seq {
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
    }
    b
}

#[test]
fn framing_and_control_flags() {
    // Another exchange's messages are skipped, whatever they say.
    let stale = [with_header(ENODEV, None, None, Some(SEQ + 1)), bytes(ACK)].concat();
    assert!(matches!(read(&stale, false, true).0, Some(Ok(()))));
    // NLM_F_DUMP_INTR on any message of the dump flags it for a retry.
    let intr = netlink_packet_core::NLM_F_DUMP_INTR | netlink_packet_core::NLM_F_MULTIPART;
    let datagram = [with_header(U32_ALL, None, Some(intr), None), bytes(DONE)].concat();
    let (end, interrupted, _) = read(&datagram, true, true);
    assert!(matches!(end, Some(Ok(()))) && interrupted);
    // A length past the datagram, or below the header: nothing after it
    // can be framed.
    for len in [u32::MAX, 4000, 15, 0] {
        let (end, _, _) = read(&with_header(VETH, Some(len), None, None), false, true);
        assert!(
            matches!(end, Some(Err(NlError::Protocol { .. }))),
            "length {len}: {end:?}"
        );
    }
    // An error or DONE too short to hold its code ends the exchange.
    for hex in [ACK, DONE] {
        let short = with_header(&hex[..2 * 18], Some(18), None, None);
        let (end, _, _) = read(&short, true, true);
        assert!(
            matches!(end, Some(Err(NlError::Protocol { .. }))),
            "{end:?}"
        );
    }
    // Trailing bytes shorter than a header are not a message.
    let (end, _, _) = read(&[bytes(ACK), vec![0; 8]].concat(), false, true);
    assert!(matches!(end, Some(Ok(()))));
}

#[test]
fn damaged_datagrams_never_panic() {
    let clean = [bytes(U32_ALL), bytes(ERR_CAPPED), bytes(DONE)].concat();
    let mut state: u32 = 0x1234_5678;
    for _ in 0..5000 {
        let mut d = clean.clone();
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let at = state as usize % d.len();
        d[at] = (state >> 8) as u8;
        d.truncate(d.len() - (state >> 20) as usize % 16);
        for (dump, cap) in [(true, true), (false, false)] {
            read(&d, dump, cap);
        }
    }
}
