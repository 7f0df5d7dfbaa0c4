//! Unit tests of class parsing, zone facts and the HTB plan.
use crate::classes::*;
use crate::htb_plan::*;
use crate::tbf::{Shape, shape};
use crate::zones::*;
use cni_types::error::{CniError, Code};
use serde_json::{Value, json};
use std::path::Path;

fn zones(extra: Value) -> Value {
    let mut v = json!({
        "trafficClasses": {
            "zone": "us-west-2a",
            "zoneCidrs": {"us-west-2a": ["10.1.0.0/16", "2600:1f14:1::/56"], "us-west-2b": ["10.2.0.0/16"]},
            "sameZone": {"shaped": false},
            "crossZone": {"ingressRate": 20_000_000, "egressRate": 20_000_000},
            "outside": {}
        }
    });
    if let (Some(t), Some(e)) = (v["trafficClasses"].as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            t.insert(k.clone(), x.clone());
        }
    }
    v
}

fn code(r: Result<Option<ClassSpec>, CniError>) -> Code {
    match r {
        Err(e) => e.code,
        Ok(spec) => spec.expect("classes").resolve().unwrap_err().code,
    }
}

fn resolved(raw: &Value, runtime: Option<&Value>) -> PeerClasses {
    parse(raw, runtime).unwrap().unwrap().resolve().unwrap()
}

fn pod(rate_bits: u64) -> Shape {
    shape(
        &Limit {
            rate_bits,
            burst_bits: None,
        },
        9001,
        25,
    )
}

#[test]
fn zone_classes_parse_in_match_order() {
    let c = resolved(&zones(json!({})), None);
    let names: Vec<_> = c.classes.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            ClassName::SameZone,
            ClassName::CrossZone,
            ClassName::Outside
        ]
    );
    assert_eq!(c.classes[0].cidrs.len(), 2);
    assert!(!c.classes[0].shaped);
    assert_eq!(c.classes[1].ingress.unwrap().rate_bits, 20_000_000);
    assert!(c.classes[2].cidrs.is_empty() && c.classes[2].shaped);
}

#[test]
fn empty_subnet_lists_are_unset() {
    assert_eq!(parse(&json!({"shapedSubnets": []}), None).unwrap(), None);
    let c = resolved(
        &json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": []}),
        None,
    );
    assert_eq!(c.classes[0].name, ClassName::Unshaped);
}

#[test]
fn subnets_any_case_runtime_over_top_level() {
    let raw = json!({"UnshapedSubnets": ["10.0.0.0/8"]});
    let c = resolved(&raw, None);
    assert_eq!(c.classes[0].name, ClassName::Unshaped);
    assert!(!c.classes[0].shaped && c.classes[1].shaped);
    let rt = json!({"shapedSubnets": ["192.168.0.0/16", "fd00::/8"]});
    let c = resolved(&raw, Some(&rt));
    assert_eq!(c.classes[0].name, ClassName::Shaped);
    assert_eq!(c.classes[0].cidrs.len(), 2);
}

#[test]
fn bad_input_is_code_7() {
    let both = json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": ["10.1.0.0/16"]});
    assert_eq!(code(parse(&both, None)), Code::InvalidConfig);
    for bad in ["10.0.0.0/33", "2600::/129", "nonsense", "10.0.0/8"] {
        let v = json!({"unshapedSubnets": [bad]});
        assert_eq!(code(parse(&v, None)), Code::InvalidConfig, "{bad}");
    }
    let burst_only = zones(json!({"crossZone": {"egressBurst": 1000}}));
    assert_eq!(code(parse(&burst_only, None)), Code::InvalidConfig);
    for class in ["sameZone", "crossZone", "outside"] {
        for dir in ["ingress", "egress"] {
            for burst in [json!(null), json!(0), json!(80_000)] {
                let zero = zones(json!({class: {
                    format!("{dir}Rate"): 0, format!("{dir}Burst"): burst
                }}));
                assert!(
                    matches!(parse(&zero, None), Err(e) if e.code == Code::InvalidConfig),
                    "{class}.{dir}Rate = 0, burst {burst}: refused when parsed"
                );
            }
        }
    }
    let no_zone = json!({"trafficClasses": {"zoneCidrs": {"a": ["10.0.0.0/8"]}}});
    assert_eq!(code(parse(&no_zone, None)), Code::InvalidConfig);
    let unknown_zone = zones(json!({"zone": "eu-west-1a"}));
    assert_eq!(code(parse(&unknown_zone, None)), Code::InvalidConfig);
    let many: Vec<String> = (0..=MAX_PEER_CIDRS)
        .map(|i| format!("10.{i}.0.0/16"))
        .collect();
    assert_eq!(
        code(parse(&json!({"shapedSubnets": many}), None)),
        Code::InvalidConfig
    );
    let unshaped_rate = zones(json!({"sameZone": {"shaped": false, "ingressRate": 1000}}));
    assert_eq!(code(parse(&unshaped_rate, None)), Code::InvalidConfig);
    let typo = zones(json!({"crossZone": {"egresRate": 1000}}));
    assert_eq!(code(parse(&typo, None)), Code::InvalidConfig);
    let mixed = zones(json!({}));
    let mut mixed = mixed;
    mixed["unshapedSubnets"] = json!(["10.0.0.0/8"]);
    assert_eq!(code(parse(&mixed, None)), Code::InvalidConfig);
}

#[test]
fn plan_caps_inside_the_pod_limit() {
    let c = resolved(&zones(json!({})), None);
    let p = pod(200_000_000);
    let plan = plan(&c, Some(&p), Direction::OutOfPod, 9001, 25);
    let by = |id: u32| plan.classes.iter().find(|k| k.classid == id).unwrap();
    assert_eq!(by(POD_CLASS).ceil, 25_000_000);
    let same = by(ROOT_HANDLE | 0x10);
    assert_eq!(same.parent, ROOT_HANDLE, "unshaped: outside the pod class");
    assert_eq!(same.ceil, UNLIMITED_BYTES_PER_SEC);
    let cross = by(ROOT_HANDLE | 0x11);
    assert_eq!((cross.rate, cross.ceil), (2_500_000, 2_500_000));
    let outside = by(ROOT_HANDLE | 0x12);
    assert_eq!((outside.rate, outside.ceil), (22_500_000, 25_000_000));
    assert_eq!(plan.default_minor, 0x12);
    // sameZone's v4 and v6 CIDR plus crossZone's v4, v4 first; egress
    // matches the destination.
    let prios: Vec<_> = plan.filters.iter().map(|f| f.prio).collect();
    assert_eq!(prios, [PRIO_V4, PRIO_V4, PRIO_V6]);
    assert_eq!(plan.filters[0].keys[0].off, 16);
    assert_eq!(plan.filters[0].classid, ROOT_HANDLE | 0x10);
    assert_eq!(plan.filters[1].classid, ROOT_HANDLE | 0x11);
    assert_eq!(plan.filters[2].keys[0].off, 24);
    for k in &plan.classes {
        assert!((9015..=200_000).contains(&k.quantum), "{k:?}");
    }
    let ingress = crate::htb_plan::plan(&c, Some(&p), Direction::IntoPod, 9001, 25);
    assert_eq!(ingress.filters[0].keys[0].off, 12, "into the pod: source");
}

#[test]
fn leaf_queues_hold_two_gso_packets_at_least() {
    let c = resolved(&zones(json!({})), None);
    let p = pod(200_000_000);
    let plan = plan(&c, Some(&p), Direction::OutOfPod, 9001, 25);
    let limit = |minor: u32| {
        plan.leaves
            .iter()
            .find(|(class, _, _)| *class == ROOT_HANDLE | minor)
            .map(|l| l.2)
            .unwrap()
    };
    assert_eq!(limit(0x11), 2 * (65_536 + 9015), "20 Mbit/s cap: the floor");
    assert_eq!(
        limit(0x12),
        p.limit_bytes,
        "200 Mbit/s: latencyMs at the rate"
    );
}

#[test]
fn counting_only_limits_nothing_without_caps() {
    let c = resolved(&zones(json!({"crossZone": {}})), None);
    let plan = plan(&c, None, Direction::IntoPod, 1500, 25);
    assert_eq!(plan.classes.len(), 3, "no pod class");
    assert!(
        plan.classes
            .iter()
            .all(|k| k.parent == ROOT_HANDLE && k.ceil == UNLIMITED_BYTES_PER_SEC)
    );
    assert!(!caps_bind_unlimited(&c, Direction::IntoPod));
}

/// Asking for nothing must not get more than asking for 1G: a node's
/// class cap holds for a pod without a limit, in both directions.
#[test]
fn node_caps_bind_a_pod_without_a_limit() {
    let c = resolved(&zones(json!({})), None);
    for dir in [Direction::IntoPod, Direction::OutOfPod] {
        assert!(caps_bind_unlimited(&c, dir));
        let plan = plan(&c, None, dir, 1500, 25);
        assert_eq!(plan.classes.len(), 3, "no pod class");
        let cross = plan
            .classes
            .iter()
            .find(|k| k.classid == ROOT_HANDLE | 0x11)
            .unwrap();
        assert_eq!((cross.rate, cross.ceil), (2_500_000, 2_500_000));
        assert_eq!(cross.parent, ROOT_HANDLE, "shares with nothing");
        let others = plan.classes.iter().filter(|k| k.classid != cross.classid);
        assert!(others.clone().all(|k| k.ceil == UNLIMITED_BYTES_PER_SEC));
    }
    let big = pod(1_000_000_000);
    let with_limit = plan(&c, Some(&big), Direction::OutOfPod, 1500, 25);
    let cross = with_limit
        .classes
        .iter()
        .find(|k| k.classid == ROOT_HANDLE | 0x11)
        .unwrap();
    assert_eq!(cross.ceil, 2_500_000, "the same cap with a 1G limit");
}

#[test]
fn caps_above_the_pod_limit_are_scaled() {
    let v = zones(
        json!({"sameZone": {"egressRate": 150_000_000}, "crossZone": {"egressRate": 150_000_000}}),
    );
    let c = resolved(&v, None);
    let p = pod(200_000_000);
    let plan = plan(&c, Some(&p), Direction::OutOfPod, 9001, 25);
    let guaranteed: u64 = plan
        .classes
        .iter()
        .filter(|k| k.parent == POD_CLASS)
        .map(|k| k.rate)
        .sum();
    assert!(guaranteed <= 25_000_000 + 2, "{guaranteed}");
}

#[test]
fn zone_sources() {
    // Nothing given: IMDS, with the shared cache by default.
    let spec = parse(
        &json!({"trafficClasses": {"crossZone": {"egressRate": 1_000_000}}}),
        None,
    )
    .unwrap()
    .unwrap();
    let ClassSpec::Zones(z) = &spec else { panic!() };
    let ZoneSource::Imds(conf) = &z.source else {
        panic!("{:?}", z.source)
    };
    assert_eq!(
        conf.cache_file,
        Path::new(node_topology::DEFAULT_IMDS_CACHE)
    );
    // A file: read at resolve time, not at parse (DEL parses too).
    let dir = std::env::temp_dir().join(format!("zones-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("zones.json");
    let v = json!({"trafficClasses": {"zoneCidrsFile": f.to_str().unwrap()}});
    let spec = parse(&v, None).unwrap().unwrap();
    assert_eq!(
        spec.resolve().unwrap_err().code,
        Code::TryAgainLater,
        "missing file"
    );
    std::fs::write(
        &f,
        r#"{"zone": "b", "zoneCidrs": {"a": ["10.1.0.0/16"], "b": ["10.2.0.0/16"]}}"#,
    )
    .unwrap();
    let c = spec.resolve().unwrap();
    assert_eq!(c.classes[0].cidrs[0].to_string(), "10.2.0.0/16");
    assert_eq!(c.classes[1].cidrs[0].to_string(), "10.1.0.0/16");
    std::fs::write(&f, "not json").unwrap();
    assert_eq!(spec.resolve().unwrap_err().code, Code::InvalidConfig);
    let _ = std::fs::remove_dir_all(&dir);
    // A zone alone, or both sources, is bad input.
    for bad in [
        json!({"trafficClasses": {"zone": "a"}}),
        json!({"trafficClasses": {"zone": "a", "zoneCidrs": {"a": []}, "zoneCidrsFile": "/x"}}),
        json!({"trafficClasses": {"zoneCidrsFile": "relative.json"}}),
        json!({"trafficClasses": {"imds": {"endpoint": "https://x"}}}),
    ] {
        assert_eq!(
            parse(&bad, None).unwrap_err().code,
            Code::InvalidConfig,
            "{bad}"
        );
    }
}
