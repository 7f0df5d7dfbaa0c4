//! topology-label against the kernel: aliases on both veth ends, profiles
//! applied and restored, annotation overrides, refused sysctls, IMDS (token
//! flow, 401, timeout, cache), every cniVersion, DEL twice, GC and STATUS.
//! Each test has its own node + pod namespaces and state directory; IMDS
//! is a small HTTP server on 127.0.0.1 inside the node netns.

use integration_tests::imds::{Imds, Mode, REDIRECT_BODY};
use integration_tests::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const NET: &str = "tl-test-net";
const ZONE: &str = "topology.kubernetes.io/zone";
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

struct Setup {
    node: Netns,
    pod: Pod,
    state: TempDir,
}

fn setup() -> Setup {
    let node = Netns::new("tln").unwrap();
    let pod = Pod::new(&node).unwrap();
    // Snapshots compare `ip link` output: let the carrier settle first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && [node.link(&pod.host_veth), pod.ns.link(&pod.ifname)]
            .iter()
            .any(|l| l.as_ref().is_none_or(|l| l["operstate"] != "UP"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    Setup {
        node,
        pod,
        state: TempDir::new("tlst"),
    }
}

fn bin() -> std::path::PathBuf {
    plugin_bin("topology-label")
}

impl Setup {
    fn conf(&self, version: &str, extra: Value) -> Value {
        conf_for(&self.pod, &self.state, version, extra)
    }

    fn run(&self, command: &str, conf: &Value) -> Outcome {
        self.run_pod(&self.pod, command, conf)
    }

    fn run_pod(&self, pod: &Pod, command: &str, conf: &Value) -> Outcome {
        run_plugin(
            &bin(),
            Some(&self.node),
            &pod.env(command),
            conf.to_string().as_bytes(),
        )
    }

    fn host_link(&self) -> Value {
        self.node.link(&self.pod.host_veth).expect("host veth")
    }

    fn pod_link(&self) -> Value {
        self.pod.ns.link(&self.pod.ifname).expect("pod eth0")
    }

    fn sysctl(&self, path: &str) -> String {
        self.pod
            .ns
            .exec(&["cat", &format!("/proc/sys/{path}")])
            .unwrap()
            .trim()
            .to_string()
    }

    fn state_files(&self) -> Vec<String> {
        self.state
            .files()
            .into_iter()
            .filter(|f| !f.starts_with("imds-cache"))
            .collect()
    }
}

fn conf_for(pod: &Pod, state: &TempDir, version: &str, extra: Value) -> Value {
    merged(
        json!({
            "cniVersion": version,
            "name": NET,
            "type": "topology-label",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "stateDir": state.str(),
            "prevResult": pod.prev_result(version),
        }),
        extra,
    )
}

fn alias(link: &Value) -> Option<String> {
    link["ifalias"].as_str().map(str::to_string)
}

fn u(link: &Value, key: &str) -> u64 {
    link[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {link}"))
}

#[test]
fn alias_on_both_ends_in_every_version_and_del_twice() {
    for version in VERSIONS {
        let s = setup();
        let conf = s.conf(version, json!({"labels": {ZONE: "us-test-1a"}}));
        let out = s.run("ADD", &conf).ok();
        // prevResult passed through unchanged, in the config's version.
        assert_eq!(out.json(), s.pod.prev_result(version), "{version}");
        let want = format!("default/{} us-test-1a", s.pod.ns.name);
        assert_eq!(
            alias(&s.host_link()).as_deref(),
            Some(want.as_str()),
            "{version}"
        );
        assert_eq!(
            alias(&s.pod_link()).as_deref(),
            Some(want.as_str()),
            "{version}"
        );
        assert_eq!(s.state_files().len(), 1);
        if version >= "0.4.0" {
            s.run("CHECK", &conf).ok();
        }
        s.run("DEL", &conf).ok();
        assert_eq!(
            alias(&s.host_link()),
            None,
            "{version}: alias restored (none)"
        );
        assert_eq!(alias(&s.pod_link()), None, "{version}");
        assert!(s.state_files().is_empty());
        // containerd's second DEL: no netns, no prevResult.
        let mut bare = conf.clone();
        bare.as_object_mut().unwrap().remove("prevResult");
        let env = with_env(s.pod.env("DEL"), "CNI_NETNS", "");
        run_plugin(&bin(), Some(&s.node), &env, bare.to_string().as_bytes()).ok();
        s.run("DEL", &conf).ok();
    }
}

#[test]
fn alias_is_cut_to_the_kernel_limit_on_a_char_boundary() {
    let s = setup();
    let long = "é".repeat(200); // 400 bytes
    let conf = s.conf(
        "1.0.0",
        json!({"alias": format!("{{pod}} {long}"), "labels": {ZONE: "z"}}),
    );
    s.run("ADD", &conf).ok();
    let a = alias(&s.host_link()).unwrap();
    assert!(a.len() <= 255 && a.len() > 240, "{} bytes", a.len());
    assert!(a.starts_with(&s.pod.ns.name));
    assert_eq!(alias(&s.pod_link()).unwrap(), a);
    s.run("CHECK", &conf).ok();
    s.run("DEL", &conf).ok();
}

fn profile_conf(extra: Value) -> Value {
    merged(
        json!({
            "labels": {ZONE: "us-test-1a"},
            "profiles": [
                {"match": {}, "txqueuelen": 2000},
                {"match": {ZONE: "us-test-1a"}, "mtu": 1400,
                 "sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "2",
                             "net.ipv4.tcp_keepalive_time": "600"}},
                {"match": {ZONE: "us-test-1b"}, "mtu": 1300}
            ]
        }),
        extra,
    )
}

#[test]
fn profile_by_zone_applied_checked_and_restored() {
    let s = setup();
    let rp0 = s.sysctl("net/ipv4/conf/eth0/rp_filter");
    let ka0 = s.sysctl("net/ipv4/tcp_keepalive_time");
    assert_ne!(rp0, "2");
    let (pod_mtu0, host_mtu0) = (u(&s.pod_link(), "mtu"), u(&s.host_link(), "mtu"));
    let (pod_q0, host_q0) = (u(&s.pod_link(), "txqlen"), u(&s.host_link(), "txqlen"));
    let conf = s.conf("1.1.0", profile_conf(json!({})));
    s.run("ADD", &conf).ok();
    assert_eq!(u(&s.pod_link(), "mtu"), 1400);
    assert_eq!(u(&s.host_link(), "mtu"), 1400, "host side follows the MTU");
    assert_eq!(
        u(&s.pod_link(), "txqlen"),
        2000,
        "first (match-all) profile kept"
    );
    assert_eq!(
        u(&s.host_link(), "txqlen"),
        host_q0,
        "txqueuelen only on the pod side"
    );
    assert_eq!(s.sysctl("net/ipv4/conf/eth0/rp_filter"), "2");
    assert_eq!(s.sysctl("net/ipv4/tcp_keepalive_time"), "600");
    s.run("CHECK", &conf).ok();

    // A retried ADD keeps the original previous values.
    s.run("ADD", &conf).ok();

    // Drift is reported by CHECK.
    s.pod
        .ns
        .ip(&["link", "set", "eth0", "mtu", "1450"])
        .unwrap();
    let e = s.run("CHECK", &conf).err(101);
    assert!(e["details"].as_str().unwrap().contains("mtu"), "{e}");
    s.pod
        .ns
        .ip(&["link", "set", "eth0", "mtu", "1400"])
        .unwrap();
    s.pod
        .ns
        .exec(&[
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv4/conf/eth0/rp_filter",
        ])
        .unwrap();
    let e = s.run("CHECK", &conf).err(101);
    assert!(e["details"].as_str().unwrap().contains("rp_filter"), "{e}");
    s.pod
        .ns
        .exec(&[
            "sh",
            "-c",
            "echo 2 > /proc/sys/net/ipv4/conf/eth0/rp_filter",
        ])
        .unwrap();
    s.run("CHECK", &conf).ok();

    s.run("DEL", &conf).ok();
    assert_eq!(u(&s.pod_link(), "mtu"), pod_mtu0);
    assert_eq!(u(&s.host_link(), "mtu"), host_mtu0);
    assert_eq!(u(&s.pod_link(), "txqlen"), pod_q0);
    assert_eq!(s.sysctl("net/ipv4/conf/eth0/rp_filter"), rp0);
    assert_eq!(s.sysctl("net/ipv4/tcp_keepalive_time"), ka0);
    assert_eq!(alias(&s.pod_link()), None);
    assert!(s.state_files().is_empty());
    s.run("DEL", &conf).ok();
    // CHECK after DEL: nothing of ours is there.
    s.run("CHECK", &conf).err(101);
}

#[test]
fn annotation_override_only_when_allowlisted() {
    let annotations = json!({"io.kubernetes.cri.pod-annotations": {
        ZONE: "us-test-1b",
        "kubernetes.io/arch": "s390x",
        "unrelated/annotation": "not a label value!"
    }});
    // Not allowlisted: the annotation is ignored.
    let s = setup();
    let conf = s.conf(
        "1.0.0",
        profile_conf(json!({"runtimeConfig": annotations.clone()})),
    );
    s.run("ADD", &conf).ok();
    assert!(alias(&s.pod_link()).unwrap().ends_with(" us-test-1a"));
    assert_eq!(u(&s.pod_link(), "mtu"), 1400);
    s.run("DEL", &conf).ok();

    // Allowlisted: the pod's zone wins, and so does its profile.
    let conf = s.conf(
        "1.0.0",
        profile_conf(json!({
            "runtimeConfig": annotations,
            "annotationOverrides": [ZONE],
            "alias": "{pod} {zone} {arch}"
        })),
    );
    s.run("ADD", &conf).ok();
    let a = alias(&s.pod_link()).unwrap();
    assert!(a.contains(" us-test-1b "), "{a}");
    assert!(!a.contains("s390x"), "arch is not allowlisted: {a}");
    assert_eq!(u(&s.pod_link(), "mtu"), 1300);
    assert_eq!(alias(&s.host_link()).unwrap(), a);
    s.run("CHECK", &conf).ok();
    s.run("DEL", &conf).ok();
    assert_eq!(u(&s.pod_link(), "mtu"), 1500);

    // An allowlisted annotation with a bad value is refused, nothing changed.
    let before = (s.node.snapshot(), s.pod.ns.snapshot());
    let conf = s.conf(
        "1.0.0",
        profile_conf(json!({
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {ZONE: "x y\nz"}},
            "annotationOverrides": [ZONE]
        })),
    );
    s.run("ADD", &conf).err(7);
    assert_eq!(before, (s.node.snapshot(), s.pod.ns.snapshot()));
}

#[test]
fn bad_sysctls_and_mtus_are_refused_with_nothing_changed() {
    let s = setup();
    let watched = [
        "net/ipv4/conf/eth0/rp_filter",
        "net/ipv4/ip_forward",
        "net/ipv4/tcp_keepalive_time",
    ];
    let sysctls = |s: &Setup| watched.map(|p| s.sysctl(p));
    let before = (s.node.snapshot(), s.pod.ns.snapshot(), sysctls(&s));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let cases = [
        json!({"sysctls": {"kernel.hostname": "pwned"}}),
        json!({"sysctls": {"net/ipv4/ip_forward": "1"}}),
        json!({"sysctls": {"net.ipv4.conf.{ifname}.rp_filter/../../../../kernel/hostname": "x"}}),
        json!({"sysctls": {"net.ipv4.conf...rp_filter": "1"}}),
        json!({"sysctls": {"net.ipv4.conf.{ifname}..": "1"}}),
        json!({"sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "1\n2"}}),
        json!({"sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "1\u{0}"}}),
        json!({"sysctls": {"net.ipv4.no_such_key": "1"}}),
        json!({"sysctls": {"net.ipv4.ip_forward": "1"}, "__allow": ["net.ipv4.conf.*.rp_filter"]}),
        json!({"mtu": 67}),
        json!({"mtu": 65536}),
        json!({"mtu": 70000}),
    ];
    for case in cases {
        let mut profile = case.clone();
        let allow = profile.as_object_mut().unwrap().remove("__allow");
        // Valid settings next to the bad one must not be applied either.
        let mut p = json!({"match": {}, "txqueuelen": 3000});
        for (k, v) in profile.as_object().unwrap() {
            p[k] = v.clone();
        }
        let mut extra = json!({
            "labels": {ZONE: "a"},
            "profiles": [{"match": {}, "mtu": 1400, "sysctls": {"net.ipv4.conf.{ifname}.rp_filter": "2"}}, p]
        });
        if let Some(a) = allow {
            extra["sysctlAllowlist"] = a;
        }
        let conf = s.conf("1.0.0", extra);
        s.run("ADD", &conf).err(7);
        assert_eq!(
            before,
            (s.node.snapshot(), s.pod.ns.snapshot(), sysctls(&s)),
            "{case} changed something"
        );
        assert!(s.state_files().is_empty(), "{case}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
}

#[test]
fn labels_file_missing_malformed_and_precedence() {
    let s = setup();
    let file = s.state.path.join("node-labels.json");
    let conf = s.conf(
        "1.0.0",
        json!({"labelsFile": file.display().to_string(), "alias": "{zone} {region}"}),
    );
    // Missing file: fine, no zone.
    s.run("ADD", &conf).ok();
    assert_eq!(alias(&s.pod_link()), None, "empty alias is not set");
    s.run("DEL", &conf).ok();

    std::fs::write(&file, "{\"topology.kubernetes.io/zone\": ").unwrap();
    let before = (s.node.snapshot(), s.pod.ns.snapshot());
    let e = s.run("ADD", &conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains("labelsFile"), "{e}");
    assert_eq!(before, (s.node.snapshot(), s.pod.ns.snapshot()));

    std::fs::write(
        &file,
        r#"{"topology.kubernetes.io/zone":"file-zone","topology.kubernetes.io/region":"file-region"}"#,
    )
    .unwrap();
    s.run("ADD", &conf).ok();
    assert_eq!(alias(&s.pod_link()).unwrap(), "file-zone file-region");
    s.run("DEL", &conf).ok();
    // Static labels win over the file.
    let mut conf2 = conf.clone();
    conf2["labels"] = json!({ZONE: "static-zone"});
    s.run("ADD", &conf2).ok();
    assert_eq!(alias(&s.pod_link()).unwrap(), "static-zone file-region");
    s.run("DEL", &conf2).ok();
}

#[test]
fn non_veth_container_interface_is_labelled_alone() {
    let s = setup();
    // No dummy driver on this kernel; an ifb is just as much "not a veth".
    s.pod
        .ns
        .ip(&["link", "add", "net1", "type", "ifb"])
        .unwrap();
    let conf = s.conf(
        "1.0.0",
        json!({"labels": {ZONE: "z1"}, "profiles": [{"mtu": 1280}]}),
    );
    let env = with_env(s.pod.env("ADD"), "CNI_IFNAME", "net1");
    let out = run_plugin(&bin(), Some(&s.node), &env, conf.to_string().as_bytes()).ok();
    assert!(out.stderr.contains("not a veth"), "{}", out.stderr);
    let l = s.pod.ns.link("net1").unwrap();
    assert!(alias(&l).unwrap().ends_with(" z1"));
    assert_eq!(u(&l, "mtu"), 1280);
    assert_eq!(alias(&s.host_link()), None);
    let env = with_env(s.pod.env("DEL"), "CNI_IFNAME", "net1");
    run_plugin(&bin(), Some(&s.node), &env, conf.to_string().as_bytes()).ok();
    let l = s.pod.ns.link("net1").unwrap();
    assert_eq!(alias(&l), None);
    assert_eq!(u(&l, "mtu"), 1500);
}

#[test]
fn missing_container_interface_is_102() {
    let s = setup();
    let conf = s.conf("1.0.0", json!({"labels": {ZONE: "z1"}}));
    let env = with_env(s.pod.env("ADD"), "CNI_IFNAME", "nope0");
    run_plugin(&bin(), Some(&s.node), &env, conf.to_string().as_bytes()).err(102);
    assert!(s.state_files().is_empty());
}

#[test]
fn gc_removes_only_stale_state_and_status() {
    let s = setup();
    let pod2 = Pod::new(&s.node).unwrap();
    let conf1 = s.conf("1.1.0", json!({"labels": {ZONE: "z"}}));
    let conf2 = conf_for(&pod2, &s.state, "1.1.0", json!({"labels": {ZONE: "z"}}));
    s.run("ADD", &conf1).ok();
    s.run_pod(&pod2, "ADD", &conf2).ok();
    assert_eq!(s.state_files().len(), 2);

    let mut gc = json!({"cniVersion": "1.1.0", "name": NET, "type": "topology-label",
        "stateDir": s.state.str(),
        "cni.dev/valid-attachments": [{"containerID": s.pod.container_id, "ifname": "eth0"}]});
    let env = env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
    run_plugin(&bin(), Some(&s.node), &env, gc.to_string().as_bytes()).ok();
    let left = s.state_files();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains(&s.pod.container_id), "{left:?}");
    // Another network's GC leaves our state alone.
    gc["name"] = json!("other-net");
    gc["cni.dev/valid-attachments"] = json!([]);
    run_plugin(&bin(), Some(&s.node), &env, gc.to_string().as_bytes()).ok();
    assert_eq!(s.state_files().len(), 1);
    s.run("DEL", &conf1).ok();
    s.run_pod(&pod2, "DEL", &conf2).ok();

    let env = env_of(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")]);
    let status = |c: Value| run_plugin(&bin(), Some(&s.node), &env, c.to_string().as_bytes());
    let base = json!({"cniVersion": "1.1.0", "name": NET, "type": "topology-label", "stateDir": s.state.str()});
    let out = status(base.clone()).ok();
    assert!(out.stdout.trim().is_empty());
    let mut req = base.clone();
    req["required"] = json!(true);
    status(req.clone()).err(50);
    req["labels"] = json!({ZONE: "z"});
    status(req).ok();
}

// ---------------------------------------------------------------- IMDS

fn imds_conf(endpoint: &str, cache: &std::path::Path, extra: Value) -> Value {
    let imds = merged(
        json!({
            "enabled": true,
            "endpoint": endpoint,
            "timeoutMs": 1000,
            "cacheFile": cache.display().to_string(),
        }),
        extra,
    );
    json!({"imds": imds, "alias": "{zone} {zoneId} {region} {instanceType}"})
}

#[test]
fn imds_token_flow_then_cache_hit_with_server_stopped() {
    let s = setup();
    let mut server = Imds::start(&s.node, Mode::Normal);
    let cache = s.state.path.join("imds-cache.json");
    let conf = s.conf("1.0.0", imds_conf(&server.endpoint(), &cache, json!({})));
    s.run("ADD", &conf).ok();
    let want = "us-test-1a uste1-az9 us-test-1 m7g.large";
    assert_eq!(alias(&s.pod_link()).as_deref(), Some(want));
    assert_eq!(alias(&s.host_link()).as_deref(), Some(want));
    let log = server.log();
    assert_eq!(log[0], "PUT /latest/api/token token=false", "{log:?}");
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(
        log[1..]
            .iter()
            .all(|l| l.starts_with("GET ") && l.ends_with("token=true")),
        "{log:?}"
    );
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(cached["labels"][ZONE], "us-test-1a");
    assert!(cached["fetchedAt"].as_u64().unwrap() > 0);

    // Second pod: server gone, the cache answers.
    server.stop();
    let pod2 = Pod::new(&s.node).unwrap();
    let conf2 = conf_for(
        &pod2,
        &s.state,
        "1.0.0",
        imds_conf(&server.endpoint(), &cache, json!({})),
    );
    s.run_pod(&pod2, "ADD", &conf2).ok();
    assert_eq!(alias(&pod2.ns.link("eth0").unwrap()).as_deref(), Some(want));
    assert_eq!(server.log().len(), 5, "no request reached the server");

    // An expired cache is still served when IMDS is down (with a warning).
    let pod3 = Pod::new(&s.node).unwrap();
    let conf3 = conf_for(
        &pod3,
        &s.state,
        "1.0.0",
        imds_conf(
            &server.endpoint(),
            &cache,
            json!({"cacheTtlSeconds": 0, "required": true}),
        ),
    );
    let out = s.run_pod(&pod3, "ADD", &conf3).ok();
    assert!(out.stderr.contains("stale"), "{}", out.stderr);
    assert_eq!(alias(&pod3.ns.link("eth0").unwrap()).as_deref(), Some(want));
    for (p, c) in [(&s.pod, &conf), (&pod2, &conf2), (&pod3, &conf3)] {
        s.run_pod(p, "DEL", c).ok();
    }
}

#[test]
fn imds_401_is_no_labels_unless_required() {
    let s = setup();
    let server = Imds::start(&s.node, Mode::RejectToken);
    let cache = s.state.path.join("imds-cache.json");
    let conf = s.conf("1.1.0", imds_conf(&server.endpoint(), &cache, json!({})));
    let out = s.run("ADD", &conf).ok();
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert_eq!(alias(&s.pod_link()), None);
    assert!(!cache.exists(), "a failure is not cached");
    s.run("DEL", &conf).ok();

    let conf = s.conf(
        "1.1.0",
        imds_conf(&server.endpoint(), &cache, json!({"required": true})),
    );
    let before = (s.node.snapshot(), s.pod.ns.snapshot());
    s.run("ADD", &conf).err(11);
    assert_eq!(before, (s.node.snapshot(), s.pod.ns.snapshot()));
    assert!(s.state_files().is_empty());
    let env = env_of(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")]);
    run_plugin(&bin(), Some(&s.node), &env, conf.to_string().as_bytes()).err(50);
}

#[test]
fn imds_slow_answer_hits_the_timeout() {
    let s = setup();
    let server = Imds::start(&s.node, Mode::Slow(Duration::from_secs(5)));
    let cache = s.state.path.join("imds-cache.json");
    let conf = s.conf(
        "1.0.0",
        imds_conf(&server.endpoint(), &cache, json!({"timeoutMs": 300})),
    );
    let t = Instant::now();
    let out = s.run("ADD", &conf).ok();
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2500), "ADD took {took:?}");
    assert!(out.stderr.contains("IMDS"), "{}", out.stderr);
    assert_eq!(alias(&s.pod_link()), None);
    assert_eq!(server.log().len(), 1, "{:?}", server.log());
    s.run("DEL", &conf).ok();

    let conf = s.conf(
        "1.0.0",
        imds_conf(
            &server.endpoint(),
            &cache,
            json!({"timeoutMs": 300, "required": true}),
        ),
    );
    let t = Instant::now();
    let out = s.run("ADD", &conf);
    assert!(t.elapsed() < Duration::from_millis(2500));
    // The failure was remembered: this pod did not wait out the timeout again.
    assert!(out.stderr.contains("not asking again"), "{}", out.stderr);
    out.err(11);
    // With the backoff disabled, every ADD asks (and waits) again.
    let conf = s.conf(
        "1.0.0",
        imds_conf(
            &server.endpoint(),
            &cache,
            json!({"timeoutMs": 300, "failureBackoffSeconds": 0}),
        ),
    );
    let t = Instant::now();
    let out = s.run("ADD", &conf).ok();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "did not ask IMDS"
    );
    assert!(!out.stderr.contains("not asking again"), "{}", out.stderr);
    s.run("DEL", &conf).ok();
}

/// Runs the plugin like `Setup::run`, but gives up after `limit` (the
/// harness's bounded runner): a hung plugin fails the test instead of
/// hanging it.
fn run_bounded(s: &Setup, command: &str, conf: &Value, limit: Duration) -> Option<Outcome> {
    run_plugin_within(
        &bin(),
        Some(&s.node),
        &s.pod.env(command),
        conf.to_string().as_bytes(),
        limit,
        Stderr::Captured,
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const IMDS_ALIAS: &str = "us-test-1a uste1-az9 us-test-1 m7g.large";

#[test]
fn imds_redirect_body_is_never_a_label() {
    for mode in [Mode::Redirect, Mode::RedirectMetadata] {
        let s = setup();
        let server = Imds::start(&s.node, mode);
        let cache = s.state.path.join("imds-cache.json");
        let nothing_holds_the_body = |s: &Setup| {
            for f in s.state.files() {
                let text = std::fs::read_to_string(s.state.path.join(&f)).unwrap_or_default();
                assert!(!text.contains(REDIRECT_BODY), "{f}: {text}");
            }
        };
        // Not required: ADD goes on without IMDS labels.
        let conf = s.conf("1.1.0", imds_conf(&server.endpoint(), &cache, json!({})));
        let out = s.run("ADD", &conf).ok();
        assert_eq!(alias(&s.pod_link()), None, "{}", out.stderr);
        assert_eq!(alias(&s.host_link()), None);
        assert!(!cache.exists(), "a redirect was cached");
        nothing_holds_the_body(&s);
        assert!(out.stderr.contains("302"), "{}", out.stderr);
        s.run("DEL", &conf).ok();

        // Required: ADD fails and changes nothing.
        let conf = s.conf(
            "1.1.0",
            imds_conf(
                &server.endpoint(),
                &cache,
                json!({"required": true, "failureBackoffSeconds": 0}),
            ),
        );
        let before = (s.node.snapshot(), s.pod.ns.snapshot());
        s.run("ADD", &conf).err(11);
        assert_eq!(before, (s.node.snapshot(), s.pod.ns.snapshot()));
        assert!(!cache.exists());
        nothing_holds_the_body(&s);
        assert!(
            s.state_files()
                .iter()
                .all(|f| !f.contains(&s.pod.container_id))
        );
        assert!(server.log().len() >= 2, "{:?}", server.log());
    }
}

#[test]
fn imds_fifo_at_the_cache_or_failure_file_does_not_hang() {
    let s = setup();
    let server = Imds::start(&s.node, Mode::Normal);
    let cache = s.state.path.join("imds-cache.json");
    let failed = s.state.path.join("imds-cache.json.failed");
    let conf = s.conf("1.0.0", imds_conf(&server.endpoint(), &cache, json!({})));
    let cases: [&[&std::path::Path]; 3] = [&[&cache], &[&failed], &[&cache, &failed]];
    for fifos in cases {
        for p in [&cache, &failed] {
            let _ = std::fs::remove_file(p);
        }
        for p in fifos {
            nix::unistd::mkfifo(*p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let out = run_bounded(&s, "ADD", &conf, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("ADD hung on a FIFO at {fifos:?}"))
            .ok();
        assert_eq!(
            alias(&s.pod_link()).as_deref(),
            Some(IMDS_ALIAS),
            "{fifos:?}: {}",
            out.stderr
        );
        assert!(
            std::fs::symlink_metadata(&cache)
                .unwrap()
                .file_type()
                .is_file(),
            "{fifos:?}: the fresh answer replaced the FIFO"
        );
        s.run("DEL", &conf).ok();
    }
}

#[test]
fn imds_symlinked_cache_or_failure_file_is_not_used() {
    let s = setup();
    let server = Imds::start(&s.node, Mode::Normal);
    let cache = s.state.path.join("imds-cache.json");
    let conf = s.conf("1.0.0", imds_conf(&server.endpoint(), &cache, json!({})));

    // A fresh, valid-looking cache behind a symlink.
    let decoy = s.state.path.join("decoy-cache.json");
    let fake = json!({"fetchedAt": unix_now(), "labels": {ZONE: "us-fake-9z"}}).to_string();
    std::fs::write(&decoy, &fake).unwrap();
    std::os::unix::fs::symlink(&decoy, &cache).unwrap();
    let out = s.run("ADD", &conf).ok();
    assert_eq!(
        alias(&s.pod_link()).as_deref(),
        Some(IMDS_ALIAS),
        "{}",
        out.stderr
    );
    assert_eq!(server.log().len(), 5, "IMDS was asked: {:?}", server.log());
    assert_eq!(std::fs::read_to_string(&decoy).unwrap(), fake, "decoy kept");
    assert!(
        !std::fs::symlink_metadata(&cache)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    s.run("DEL", &conf).ok();

    // A recent failure record behind a symlink does not stop the request.
    std::fs::remove_file(&cache).unwrap();
    let decoy_failure = s.state.path.join("decoy-failure.json");
    let failure = json!({"failedAt": unix_now(), "error": "decoy failure"}).to_string();
    std::fs::write(&decoy_failure, &failure).unwrap();
    std::os::unix::fs::symlink(&decoy_failure, s.state.path.join("imds-cache.json.failed"))
        .unwrap();
    let out = s.run("ADD", &conf).ok();
    assert!(!out.stderr.contains("decoy"), "{}", out.stderr);
    assert_eq!(
        alias(&s.pod_link()).as_deref(),
        Some(IMDS_ALIAS),
        "{}",
        out.stderr
    );
    assert_eq!(server.log().len(), 10, "{:?}", server.log());
    assert_eq!(std::fs::read_to_string(&decoy_failure).unwrap(), failure);
    s.run("DEL", &conf).ok();
}

#[test]
fn retried_add_without_the_settings_still_restores_them_on_del() {
    let s = setup();
    let rp0 = s.sysctl("net/ipv4/conf/eth0/rp_filter");
    let ka0 = s.sysctl("net/ipv4/tcp_keepalive_time");
    assert_ne!(rp0, "2");
    assert_ne!(ka0, "600");
    let (pod_mtu0, host_mtu0) = (u(&s.pod_link(), "mtu"), u(&s.host_link(), "mtu"));
    let pod_q0 = u(&s.pod_link(), "txqlen");
    assert_ne!(pod_mtu0, 1400);
    assert_ne!(pod_q0, 2000);

    let full = s.conf("1.1.0", profile_conf(json!({})));
    s.run("ADD", &full).ok();
    assert_eq!(u(&s.pod_link(), "mtu"), 1400);
    assert_eq!(u(&s.host_link(), "mtu"), 1400);
    assert_eq!(u(&s.pod_link(), "txqlen"), 2000);
    assert_eq!(s.sysctl("net/ipv4/conf/eth0/rp_filter"), "2");
    assert_eq!(s.sysctl("net/ipv4/tcp_keepalive_time"), "600");

    // Retried with only the MTU, then with nothing but the zone: neither
    // changes what is there, and neither forgets what was there before.
    let mtu_only = s.conf(
        "1.1.0",
        json!({"labels": {ZONE: "us-test-1a"}, "profiles": [{"match": {}, "mtu": 1400}]}),
    );
    let bare = s.conf("1.1.0", json!({"labels": {ZONE: "us-test-1a"}}));
    for conf in [&mtu_only, &bare] {
        s.run("ADD", conf).ok();
        assert_eq!(u(&s.pod_link(), "mtu"), 1400);
        assert_eq!(u(&s.pod_link(), "txqlen"), 2000);
        assert_eq!(s.sysctl("net/ipv4/conf/eth0/rp_filter"), "2");
    }

    s.run("DEL", &bare).ok();
    assert_eq!(u(&s.pod_link(), "mtu"), pod_mtu0, "pod mtu restored");
    assert_eq!(u(&s.host_link(), "mtu"), host_mtu0, "host mtu restored");
    assert_eq!(u(&s.pod_link(), "txqlen"), pod_q0, "txqueuelen restored");
    assert_eq!(s.sysctl("net/ipv4/conf/eth0/rp_filter"), rp0);
    assert_eq!(s.sysctl("net/ipv4/tcp_keepalive_time"), ka0);
    assert_eq!(alias(&s.pod_link()), None);
    assert!(s.state_files().is_empty());
}
