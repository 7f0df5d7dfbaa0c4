//! Bounded fuzzing on stable Rust: a small mutation engine (byte-level and
//! JSON-structure-aware) drives the parsers the plugins feed with runtime,
//! operator and pod-author input. Each target runs for `FUZZ_SECONDS`
//! (default 3) from the seed corpus in `tests/fuzz-corpus/`; any panic is a
//! failure, and its input is saved under `target/fuzz-crashes/` to replay.
//!
//! Invariants beyond "no panic": results converted to any version parse
//! back and convert again identically; resolved sysctl paths stay under
//! /proc/sys/net; tbf parameters never wrap.

use bandwidth_plugin::config::BandwidthConf;
use bandwidth_plugin::tbf::shape;
use cni_types::result::CniResult;
use cni_types::{CniArgs, NetConf, Version};
use serde_json::{Value, json};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path};
use std::time::{Duration, Instant};
use topology_label_plugin::config::{Config as TlConfig, SysctlKey};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("fuzz corpus")
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty());
    seeds
}

const INTERESTING: &[&str] = &[
    "0",
    "-1",
    "1",
    "4294967295",
    "4294967296",
    "34359738359",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-0",
    "1.5",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
    "\"../../etc\"",
    "\"net.ipv4.conf.{ifname}.rp_filter\"",
    "\"\\u0000\"",
    "\"0.4.0\"",
    "\"1.1.0\"",
    "\"9.9.9\"",
    "\"eth0\"",
    "\"{zone}\"",
];

fn mutate_value(v: &mut Value, rng: &mut Rng, depth: u32) {
    let pick = rng.below(8);
    match v {
        Value::Object(m) if !m.is_empty() && depth < 6 && pick < 5 => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = keys[rng.below(keys.len())].clone();
            match pick {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    let lit = INTERESTING[rng.below(INTERESTING.len())];
                    m.insert(k, serde_json::from_str(lit).unwrap_or(Value::Null));
                }
                2 => {
                    let alt = if rng.below(2) == 0 {
                        k.to_uppercase()
                    } else {
                        format!("{k}x")
                    };
                    if let Some(x) = m.remove(&k) {
                        m.insert(alt, x);
                    }
                }
                _ => {
                    if let Some(x) = m.get_mut(&k) {
                        mutate_value(x, rng, depth + 1);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() && depth < 6 && pick < 5 => {
            let i = rng.below(a.len());
            match pick {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let x = a[i].clone();
                    a.push(x);
                }
                _ => mutate_value(&mut a[i], rng, depth + 1),
            }
        }
        _ => {
            let lit = INTERESTING[rng.below(INTERESTING.len())];
            *v = serde_json::from_str(lit).unwrap_or(Value::Null);
        }
    }
}

fn mutate(input: &[u8], seeds: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    if rng.below(3) > 0
        && let Ok(mut v) = serde_json::from_slice::<Value>(input)
    {
        for _ in 0..=rng.below(4) {
            mutate_value(&mut v, rng, 0);
        }
        return v.to_string().into_bytes();
    }
    let mut out = input.to_vec();
    for _ in 0..=rng.below(6) {
        let len = out.len();
        match rng.below(5) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            2 if len > 1 => {
                let a = rng.below(len);
                let b = (a + rng.below(16)).min(len);
                out.drain(a..b);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(other.len());
                let b = (a + rng.below(64)).min(other.len());
                let at = rng.below(len + 1);
                out.splice(at..at, other[a..b].iter().copied());
            }
            _ => {
                let lit = INTERESTING[rng.below(INTERESTING.len())].as_bytes();
                let at = rng.below(len + 1);
                out.splice(at..at, lit.iter().copied());
            }
        }
    }
    out
}

fn budget() -> Duration {
    let secs: f64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Runs `target` on mutated inputs until the budget is spent.
fn fuzz(name: &str, seed: u64, target: impl Fn(&[u8])) {
    let seeds = corpus();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + budget();
    let mut pool = seeds.clone();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let base = pool[rng.below(pool.len())].clone();
        let input = mutate(&base, &seeds, &mut rng);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{runs}.bin"));
            let _ = std::fs::write(&file, &input);
            panic!("{name}: panic on input saved to {}", file.display());
        }
        // Keep a few mutants to explore further from them.
        if pool.len() < 256 && rng.below(8) == 0 {
            pool.push(input);
        }
        runs += 1;
    }
    eprintln!("{name}: {runs} inputs, no panic");
    assert!(runs > 100, "{name}: too few runs ({runs})");
}

#[test]
fn fuzz_network_config() {
    fuzz("netconf", 0x9e37_79b9_7f4a_7c15, |input| {
        let Ok(raw) = NetConf::decode(input) else {
            return;
        };
        let Ok(conf) = NetConf::from_value(raw) else {
            return;
        };
        let _ = conf.prev_result();
        let _ = conf.valid_attachments();
        let _ = conf.runtime_config_entry("bandwidth");
    });
}

#[test]
fn fuzz_bandwidth_config_and_tbf_math() {
    fuzz("bandwidth", 0x1234_5678_9abc_def1, |input| {
        let Ok(raw) = NetConf::decode(input) else {
            return;
        };
        let Ok(conf) = NetConf::from_value(raw) else {
            return;
        };
        let Ok(bw) = BandwidthConf::parse(&conf) else {
            return;
        };
        for limit in [bw.ingress, bw.egress].into_iter().flatten() {
            for mtu in [68, 1500, 9001, 65535] {
                let s = shape(&limit, mtu, bw.latency_ms);
                assert!(s.rate_bytes_per_sec >= 1);
                assert!(u64::from(s.burst_bytes) >= u64::from(mtu) + 14);
                assert!(
                    u64::from(s.limit_bytes) >= u64::from(mtu) + 14,
                    "limit below a frame: {s:?}"
                );
            }
        }
    });
}

#[test]
fn fuzz_prev_result_and_version_conversion() {
    fuzz("result", 0x0bad_cafe_dead_beef, |input| {
        let Ok(v) = serde_json::from_slice::<Value>(input) else {
            return;
        };
        let Ok(r) = CniResult::from_value(&v) else {
            return;
        };
        for version in Version::ALL {
            let out = r.to_value(version);
            let back = CniResult::from_value(&out).expect("our own output parses");
            assert_eq!(
                back.to_value(version),
                out,
                "conversion to {version} is not stable"
            );
            assert_eq!(out["cniVersion"], json!(version.as_str()));
        }
    });
}

#[test]
fn fuzz_topology_label_config_and_sysctl_keys() {
    fuzz("topology-label", 0x5eed_5eed_5eed_5eed, |input| {
        if let Ok(raw) = NetConf::decode(input)
            && let Ok(conf) = NetConf::from_value(raw)
        {
            let _ = TlConfig::from_netconf(&conf);
        }
        let text = String::from_utf8_lossy(input);
        for key in text.split('"').filter(|s| s.len() < 200) {
            for ifname in ["eth0", "net1.100", "a-b_c"] {
                if let Ok(k) = SysctlKey::resolve(key, ifname, None) {
                    let p = k.path();
                    assert!(
                        p.starts_with("/proc/sys/net/"),
                        "{key:?} -> {}",
                        p.display()
                    );
                    assert!(
                        p.components()
                            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
                        "{key:?} -> {}",
                        p.display()
                    );
                }
            }
        }
    });
}

#[test]
fn fuzz_cni_args() {
    fuzz("cni-args", 0x0ddb_a11c_0ffe_e000, |input| {
        let s = String::from_utf8_lossy(input);
        if let Ok(a) = CniArgs::parse(&s) {
            let _ = (a.pod_namespace(), a.pod_name(), a.pod_uid());
        }
    });
}
