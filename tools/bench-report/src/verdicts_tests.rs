//! Verdicts against each target's limit, and what a missing figure does.

use super::*;
use crate::parse::{Facts, Raw};
use crate::stats::Summary;

fn hf(raw: &mut Raw, key: &str, ms: f64) {
    raw.hf.insert(key.into(), Summary::of(&[ms]).unwrap());
}

#[test]
fn limits_are_inclusive() {
    let f = Figures {
        add_r: Some(0.25),
        pod_add_r: Some(0.1501),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::Add), Verdict::Met);
    assert_eq!(verdict(&f, Target::PodAdd), Verdict::Missed);
}

#[test]
fn missing_figure_is_not_measured() {
    let f = Figures::default();
    for t in [
        Target::Add,
        Target::Del,
        Target::Churn,
        Target::ChurnPod,
        Target::Latency,
        Target::LatencyVsRef,
    ] {
        assert_eq!(verdict(&f, t), Verdict::NotMeasured, "{t:?}");
    }
    // one part of a two-part target missing: not judged on the other
    let f = Figures {
        tl_add_r: Some(0.1),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::TopologyLabel), Verdict::NotMeasured);
}

#[test]
fn every_part_must_be_met() {
    let f = Figures {
        cnirs_r: Some(2.0),
        cnirs_ms: Some(63.8),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::CniRs), Verdict::Missed);
    let f = Figures {
        bs_1g_r: Some(1.0),
        bs_line_r: Some(0.976),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::Backstop), Verdict::Met);
    let f = Figures {
        bs_1g_r: Some(1.0),
        bs_line_r: Some(0.94),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::Backstop), Verdict::Missed);
}

#[test]
fn failures_count_against_leaks() {
    let f = Figures {
        leaks: Some(0.0),
        fails: Some(1),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::Leaks), Verdict::Missed);
    let f = Figures {
        leaks: Some(0.0),
        fails: Some(0),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::Leaks), Verdict::Met);
}

#[test]
fn run_time_only_for_a_full_run() {
    let f = Figures {
        total_secs: Some(100.0),
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::RunTime), Verdict::NotMeasured);
    let f = Figures {
        total_secs: Some(901.0),
        full_run: true,
        ..Default::default()
    };
    assert_eq!(verdict(&f, Target::RunTime), Verdict::Missed);
}

#[test]
fn above_floor_ratios() {
    let mut raw = Raw {
        facts: Facts::parse("pods 1000\n"),
        ..Default::default()
    };
    hf(&mut raw, "floor", 1.0);
    hf(&mut raw, "bw-add", 2.0);
    hf(&mut raw, "ref-bw-add", 5.0);
    hf(&mut raw, "bw-del", 21.0);
    hf(&mut raw, "ref-bw-del", 16.8);
    let f = Figures::compute(&raw);
    // (2 - 1) / (5 - 1): the plugin's own work, not the process start
    assert_eq!(f.add_r, Some(0.25));
    assert_eq!(verdict(&f, Target::Add), Verdict::Met);
    assert!((f.del_r.unwrap() - 1.25).abs() < 1e-12);
    assert_eq!(verdict(&f, Target::Del), Verdict::Missed);
}

#[test]
fn latency_worse_needs_five_percent() {
    let ping = |ms: f64| crate::parse::tools::Ping {
        times_ms: vec![ms],
        transmitted: Some(1),
    };
    let mut raw = Raw::default();
    for (cfg, ours, theirs) in [
        ("sentinel", 56.2, 106.0),
        ("explicit", 56.2, 42.0),
        ("sentinel100", 11.5, 11.0),
    ] {
        for (imp, ms) in [("ours", ours), ("ref", theirs)] {
            let l = crate::parse::helpers::Latency {
                idle: ping(0.07),
                loaded: ping(ms),
            };
            raw.latency.insert(format!("{imp}-{cfg}"), l);
        }
    }
    let f = Figures::compute(&raw);
    // 11.5 is 4.5% above 11.0: noise, not worse
    assert_eq!(f.lat_worse, Some(vec!["explicit".to_string()]));
    assert_eq!(verdict(&f, Target::LatencyVsRef), Verdict::Missed);
    assert_eq!(verdict(&f, Target::Latency), Verdict::Met);
}

#[test]
fn worst_keeps_the_first_of_equals() {
    let w = worst(
        [
            (0.01, "a".to_string()),
            (0.03, "b".into()),
            (0.03, "c".into()),
        ]
        .into_iter(),
    );
    assert_eq!(w, Some((0.03, "b".to_string())));
    assert_eq!(worst(std::iter::empty()), None);
}
