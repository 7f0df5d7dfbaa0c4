//! Crash consistency and concurrency.
//!
//! - SIGKILL lands at every point of ADD (delays swept across its whole
//!   run), and of a DEL that parks its ifb: afterwards DEL and a fresh ADD
//!   succeed, and after DEL nothing of ours remains (but a clean parked
//!   ifb, within the pool's bound).
//! - A soak: 50 pods doing ADD/CHECK/DEL in loops in parallel while GC runs,
//!   with a runtime-like lock (GC sees a consistent list of live
//!   attachments): zero failures, GC never removes a live attachment's
//!   state (CHECK after every ADD), zero leaks at the end.

use integration_tests::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

fn bw_conf(pod: &Pod, state: &TempDir) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "hostile-net", "type": "bandwidth", "stateDir": state.str(),
        "runtimeConfig": {"bandwidth": {"IngressRate": 50_000_000, "IngressBurst": 4_294_967_295u64, "EgressRate": 50_000_000, "EgressBurst": 4_294_967_295u64}},
        "prevResult": pod.prev_result("1.1.0"),
    })
}

fn tl_conf(pod: &Pod, state: &TempDir) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "hostile-net", "type": "topology-label", "stateDir": state.str(),
        "labels": {"topology.kubernetes.io/zone": "us-west-2a"},
        "profiles": [{"match": {"topology.kubernetes.io/zone": "us-west-2a"}, "mtu": 1400, "txqueuelen": 2000,
                      "sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "2"}}],
        "prevResult": pod.prev_result("1.1.0"),
    })
}

/// Starts ADD and kills it with SIGKILL after `delay`.
fn add_killed_after(plugin: &str, node: &Netns, pod: &Pod, conf: &Value, delay: Duration) {
    verb_killed_after("ADD", plugin, node, pod, conf, delay)
}

/// Starts `verb` and kills it with SIGKILL after `delay`.
fn verb_killed_after(
    verb: &str,
    plugin: &str,
    node: &Netns,
    pod: &Pod,
    conf: &Value,
    delay: Duration,
) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.name])
        .arg(plugin_bin(plugin))
        .env_clear();
    for (k, v) in pod.env(verb) {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(conf.to_string().as_bytes());
    }
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

fn no_leaks(node: &Netns, pod: &Pod, states: &[&TempDir]) -> Vec<String> {
    let mut leaks = Vec::new();
    let ifbs: Vec<String> = node
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("bwp"))
        .collect();
    if !ifbs.is_empty() {
        leaks.push(format!("ifbs {ifbs:?}"));
    }
    // Parked ifbs outlive pods by design, within bounds and clean; anything
    // else the pool names (a trim's `ifb-gc…`) is a leak.
    let parked = node.parked_ifbs();
    if parked.len() > MAX_PARKED_IFBS {
        leaks.push(format!("parked ifbs {parked:?}"));
    }
    for p in &parked {
        if node
            .qdiscs(p)
            .iter()
            .any(|q| q["kind"] == "tbf" || q["kind"] == "htb")
        {
            leaks.push(format!("a shaper on parked {p}"));
        }
    }
    let odd: Vec<String> = node
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("ifb-") && !parked.contains(n))
        .collect();
    if !odd.is_empty() {
        leaks.push(format!("pool ifbs not parked {odd:?}"));
    }
    for kind in ["tbf", "htb", "bfifo", "ingress"] {
        if node.qdisc(&pod.host_veth, kind).is_some() {
            leaks.push(format!("{kind} on {}", pod.host_veth));
        }
    }
    for kind in ["tbf", "htb", "clsact"] {
        if pod.ns.qdisc("eth0", kind).is_some() {
            leaks.push(format!("{kind} in pod"));
        }
    }
    let tables = node.backstop_tables();
    if !tables.is_empty() {
        leaks.push(format!("nft tables {tables:?}"));
    }
    for s in states {
        if !s.files().is_empty() {
            leaks.push(format!("state {:?}", s.files()));
        }
    }
    leaks
}

/// Runs `verb` for each (plugin, config) in order and requires success.
fn run_all(node: &Netns, pod: &Pod, verb: &str, chain: &[(&str, &Value)]) {
    for (plugin, conf) in chain {
        run_plugin(
            &plugin_bin(plugin),
            Some(node),
            &pod.env(verb),
            conf.to_string().as_bytes(),
        )
        .ok();
    }
}

/// The same sweep over an ADD that builds htb trees (traffic classes): the
/// root, each class, each leaf queue and each filter is a step a kill can
/// land between, on the host veth, the ifb and (pod mode) inside the pod.
#[test]
fn sigkill_at_every_point_of_add_with_classes() {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    let bws = TempDir::new("crcl");
    for mode in ["ifb", "pod"] {
        let mut bw = bw_conf(&pod, &bws);
        bw["egressMode"] = json!(mode);
        bw["trafficClasses"] = json!({
            "zone": "a", "zoneCidrs": {"a": ["10.1.0.0/16", "fd0a::/32"], "b": ["10.2.0.0/16", "fd0b::/32"]},
            "sameZone": {"shaped": false}, "crossZone": {"ingressRate": 20_000_000, "egressRate": 20_000_000}
        });
        let chain = [("bandwidth", &bw)];
        let t0 = Instant::now();
        run_all(&node, &pod, "ADD", &chain);
        let span = t0.elapsed();
        run_all(&node, &pod, "DEL", &chain);
        const TRIALS: u32 = 30;
        for i in 0..TRIALS {
            let delay = span * i / TRIALS;
            add_killed_after("bandwidth", &node, &pod, &bw, delay);
            if i % 2 == 1 {
                run_all(&node, &pod, "ADD", &chain);
                run_all(&node, &pod, "CHECK", &chain);
            }
            run_all(&node, &pod, "DEL", &chain);
            let leaks = no_leaks(&node, &pod, &[&bws]);
            assert!(
                leaks.is_empty(),
                "{mode} trial {i} (kill after {delay:?}): {leaks:?}"
            );
        }
    }
}

#[test]
fn sigkill_at_every_point_of_add() {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    let (bws, tls) = (TempDir::new("crbw"), TempDir::new("crtl"));
    let (bw, tl) = (bw_conf(&pod, &bws), tl_conf(&pod, &tls));
    let chain = [("bandwidth", &bw), ("topology-label", &tl)];
    let reverse = [("topology-label", &tl), ("bandwidth", &bw)];
    let original_mtu = pod.ns.link("eth0").unwrap()["mtu"].clone();
    // Measure one ADD to sweep kill points across its whole run.
    let t0 = Instant::now();
    run_all(&node, &pod, "ADD", &chain);
    let span = t0.elapsed();
    run_all(&node, &pod, "DEL", &reverse);
    const TRIALS: u32 = 60;
    for i in 0..TRIALS {
        let delay = span * i / TRIALS;
        add_killed_after("bandwidth", &node, &pod, &bw, delay);
        add_killed_after("topology-label", &node, &pod, &tl, delay / 2);
        if i % 2 == 1 {
            // A runtime may retry ADD after a crash instead of DEL first.
            run_all(&node, &pod, "ADD", &chain);
        }
        run_all(&node, &pod, "DEL", &reverse);
        let leaks = no_leaks(&node, &pod, &[&bws, &tls]);
        assert!(
            leaks.is_empty(),
            "trial {i} (kill after {delay:?}): {leaks:?}"
        );
        assert_eq!(
            pod.ns.link("eth0").unwrap()["mtu"],
            original_mtu,
            "trial {i}: MTU not restored"
        );
        // A fresh ADD works and CHECK agrees, then DEL leaves nothing.
        run_all(&node, &pod, "ADD", &chain);
        run_all(&node, &pod, "CHECK", &chain);
        run_all(&node, &pod, "DEL", &reverse);
        let leaks = no_leaks(&node, &pod, &[&bws, &tls]);
        assert!(leaks.is_empty(), "trial {i} after fresh ADD/DEL: {leaks:?}");
    }
}

/// SIGKILL at every point of a DEL that parks its ifb (the default
/// `ifbPool`): after a retried DEL nothing of the attachment stays, at
/// most one ifb is parked (this node's only pod's), clean and down, and
/// the next ADD takes it.
#[test]
fn sigkill_at_every_point_of_del_that_parks() {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    let bws = TempDir::new("crbd");
    let bw = bw_conf(&pod, &bws);
    let chain = [("bandwidth", &bw)];
    run_all(&node, &pod, "ADD", &chain);
    let t0 = Instant::now();
    run_all(&node, &pod, "DEL", &chain);
    let span = t0.elapsed();
    const TRIALS: u32 = 40;
    for i in 0..TRIALS {
        run_all(&node, &pod, "ADD", &chain);
        let delay = span * i / TRIALS;
        verb_killed_after("DEL", "bandwidth", &node, &pod, &bw, delay);
        let parked = node.parked_ifbs();
        assert!(parked.len() <= 1, "trial {i}: {parked:?}");
        if i % 2 == 1 {
            // A runtime may retry ADD (the pod's sandbox is kept) before DEL.
            run_all(&node, &pod, "ADD", &chain);
            run_all(&node, &pod, "CHECK", &chain);
        }
        run_all(&node, &pod, "DEL", &chain);
        let leaks = no_leaks(&node, &pod, &[&bws]);
        assert!(
            leaks.is_empty(),
            "trial {i} (kill after {delay:?}): {leaks:?}"
        );
        assert!(
            node.parked_ifbs().len() <= 1,
            "trial {i}: {:?}",
            node.parked_ifbs()
        );
    }
}

#[test]
fn soak_fifty_pods_with_gc() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let node = Arc::new(Netns::new("cnin").unwrap());
    let (bws, tls) = (
        Arc::new(TempDir::new("skbw")),
        Arc::new(TempDir::new("sktl")),
    );
    let pods: Vec<Arc<Pod>> = (0..50)
        .map(|_| Arc::new(Pod::new(&node).unwrap()))
        .collect();
    // One multi-interface pod: a second attachment (net1) on the same
    // network with the same container id, as Multus-style pods have.
    let net1_host = unique("vn");
    node.ip(&[
        "link",
        "add",
        &net1_host,
        "type",
        "veth",
        "peer",
        "name",
        "net1",
        "netns",
        &pods[0].ns.name,
    ])
    .unwrap();
    node.ip(&["link", "set", &net1_host, "up"]).unwrap();
    pods[0]
        .ns
        .ip(&["addr", "add", "10.251.1.2/24", "dev", "net1"])
        .unwrap();
    pods[0].ns.ip(&["link", "set", "net1", "up"]).unwrap();
    let net1_prev = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": net1_host}, {"name": "net1", "sandbox": pods[0].ns.path_str()}],
        "ips": [{"interface": 1, "address": "10.251.1.2/24"}]});
    // The runtime: ADD/DEL run under a shared lock, GC under an exclusive
    // one, and GC's valid list is the set of attachments ADDed and not DELed.
    let runtime = Arc::new(RwLock::new(()));
    let live: Arc<Mutex<HashSet<(String, String)>>> = Arc::new(Mutex::new(HashSet::new()));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cycles = Arc::new(Mutex::new(0u64));
    let mut threads = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let (node, pod, bws, tls) = (node.clone(), pod.clone(), bws.clone(), tls.clone());
        let net1_prev = (i == 0).then(|| net1_prev.clone());
        let (runtime, live, failures, cycles) = (
            runtime.clone(),
            live.clone(),
            failures.clone(),
            cycles.clone(),
        );
        threads.push(std::thread::spawn(move || {
            // (ifname, bandwidth config, topology-label config) per attachment.
            let mut atts = vec![("eth0", bw_conf(&pod, &bws), tl_conf(&pod, &tls))];
            if let Some(prev) = &net1_prev {
                let (mut bw, mut tl) = (bw_conf(&pod, &bws), tl_conf(&pod, &tls));
                bw["prevResult"] = prev.clone();
                tl["prevResult"] = prev.clone();
                atts.push(("net1", bw, tl));
            }
            let run = |p: &str, verb: &str, ifname: &str, c: &Value| {
                run_plugin(
                    &plugin_bin(p),
                    Some(&node),
                    &with_env(pod.env(verb), "CNI_IFNAME", ifname),
                    c.to_string().as_bytes(),
                )
            };
            let fail = |what: String| failures.lock().unwrap().push(what);
            let id = |ifname: &str| (pod.container_id.clone(), ifname.to_string());
            while Instant::now() < deadline {
                {
                    let _g = runtime.read().unwrap();
                    for (ifname, bw, tl) in &atts {
                        live.lock().unwrap().insert(id(ifname));
                        for (p, c) in [("bandwidth", bw), ("topology-label", tl)] {
                            let o = run(p, "ADD", ifname, c);
                            if o.status != 0 {
                                fail(format!(
                                    "{p} ADD {} {ifname}: {}",
                                    pod.container_id, o.stdout
                                ));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
                for (ifname, bw, tl) in &atts {
                    for (p, c) in [("bandwidth", bw), ("topology-label", tl)] {
                        let _g = runtime.read().unwrap();
                        let o = run(p, "CHECK", ifname, c);
                        if o.status != 0 {
                            fail(format!(
                                "{p} CHECK {} {ifname}: {}",
                                pod.container_id, o.stdout
                            ));
                        }
                    }
                }
                {
                    let _g = runtime.read().unwrap();
                    for (ifname, bw, tl) in atts.iter().rev() {
                        for (p, c) in [("topology-label", tl), ("bandwidth", bw)] {
                            let o = run(p, "DEL", ifname, c);
                            if o.status != 0 {
                                fail(format!(
                                    "{p} DEL {} {ifname}: {}",
                                    pod.container_id, o.stdout
                                ));
                            }
                        }
                        live.lock().unwrap().remove(&id(ifname));
                    }
                }
                *cycles.lock().unwrap() += 1;
            }
        }));
    }
    let gc = {
        let (node, bws, tls, runtime, live, failures) = (
            node.clone(),
            bws.clone(),
            tls.clone(),
            runtime.clone(),
            live.clone(),
            failures.clone(),
        );
        std::thread::spawn(move || {
            let mut runs = 0;
            while Instant::now() < deadline {
                {
                    let _g = runtime.write().unwrap();
                    let valid: Vec<Value> = live
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
                        .collect();
                    for (p, dir) in [("bandwidth", &bws), ("topology-label", &tls)] {
                        let c = json!({"cniVersion": "1.1.0", "name": "hostile-net", "type": p, "stateDir": dir.str(), "cni.dev/valid-attachments": valid});
                        let o = run_plugin(
                            &plugin_bin(p),
                            Some(&node),
                            &env_of(&[("CNI_COMMAND", "GC")]),
                            c.to_string().as_bytes(),
                        );
                        if o.status != 0 {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{p} GC: {}", o.stdout));
                        }
                    }
                }
                runs += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            runs
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    let gc_runs = gc.join().unwrap();
    let cycles = *cycles.lock().unwrap();
    eprintln!("soak: {cycles} ADD/CHECK/DEL cycles over 50 pods, {gc_runs} GC runs, {seconds}s");
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        cycles >= 50 && gc_runs >= 2,
        "soak did too little: {cycles} cycles, {gc_runs} GC runs"
    );
    let mut leaks = Vec::new();
    for pod in &pods {
        leaks.extend(no_leaks(&node, pod, &[&bws, &tls]));
    }
    for kind in ["tbf", "ingress"] {
        if node.qdisc(&net1_host, kind).is_some() {
            leaks.push(format!("{kind} on {net1_host} (net1)"));
        }
    }
    assert!(leaks.is_empty(), "leaks: {leaks:?}");
}

/// The narrowest crash window, made deterministic: ADD killed after creating
/// its first state temp file and before renaming it. DEL finds no state,
/// and must still sweep the temp file away.
#[test]
fn del_sweeps_the_temp_file_of_a_killed_first_write() {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    for (plugin, conf_of) in [
        ("bandwidth", bw_conf as fn(&Pod, &TempDir) -> Value),
        ("topology-label", tl_conf),
    ] {
        let state = TempDir::new("crtmp");
        let conf = conf_of(&pod, &state);
        let tmp = state.path.join(format!(
            "{plugin}+hostile-net+{}+eth0.json.tmp.999999999",
            pod.container_id
        ));
        std::fs::write(&tmp, b"{\"half\":").unwrap();
        run_plugin(
            &plugin_bin(plugin),
            Some(&node),
            &pod.env("DEL"),
            conf.to_string().as_bytes(),
        )
        .ok();
        assert!(!tmp.exists(), "{plugin}: temp state file left after DEL");
        assert!(state.files().is_empty(), "{plugin}: {:?}", state.files());
    }
}
