//! End-to-end tests through the reference runtime library: a small Go
//! driver (`tests/libcni-driver`) built against Debian's libcni 1.1.x calls
//! `AddNetworkList` / `CheckNetworkList` / `DelNetworkList` the way
//! containerd does (capability args with PascalCase bandwidth keys and
//! u32::MAX bursts, pod annotations, port mappings; containerd's CNI_ARGS;
//! a second DEL with no netns). The chain is
//! conflist-examples/single-node-sim-portmap.conflist:
//! `vpc-cni-sim` -> reference `portmap` -> `topology-label` -> `bandwidth`,
//! run inside a private "node" netns with two simulated pods.
//!
//! Also: every conflist example loads with libcni, the README's jq commands
//! still produce them byte for byte, the runnable ones ADD/DEL, and a
//! failing plugin anywhere fails the chain.
//!
//! Needs root, `go` + libcni sources, `iptables`, Debian's
//! containernetworking-plugins, iperf3 and jq (scripts/test.sh installs them).

use integration_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// Tests that create namespaces run one at a time: the traffic test needs
/// both cores to itself, the others are quick.
const RATE: u64 = 50_000_000;
const RATE_Q: &str = "50M";
/// containerd's "unlimited" burst (bits).
const U32_MAX: u64 = 4_294_967_295;
const NODE_IP: &str = "10.99.255.254";
const NETWORK: &str = "aws-cni";
const POD_NAMESPACE: &str = "e2e";
const GOPATH: &str = "/usr/share/gocode";
const REFERENCE_DIR: &str = "/usr/lib/cni";
/// Plugins that keep state: each gets a temp `stateDir`.
const STATEFUL: [&str; 3] = ["vpc-cni-sim", "bandwidth", "topology-label"];
const CHAIN: &str = "single-node-sim-portmap.conflist";
const SECONDS: u32 = 5;

fn repo() -> PathBuf {
    repo_root()
}

fn examples() -> PathBuf {
    repo().join("conflist-examples")
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The driver, built once per run into target/libcni-driver (skipped when
/// the binary is newer than every source file).
fn driver() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_driver)
}

fn build_driver() -> PathBuf {
    let src = repo().join("tests/libcni-driver");
    let out = target_dir().join("libcni-driver");
    let libcni = Path::new(GOPATH).join("src/github.com/containernetworking/cni/libcni");
    assert!(
        libcni.is_dir(),
        "{} missing: apt-get install golang-github-appc-cni-dev (scripts/test.sh installs it)",
        libcni.display()
    );
    let newest_src = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "go"))
        .filter_map(|p| mtime(&p))
        .max()
        .expect("no .go file in tests/libcni-driver");
    if mtime(&out).is_some_and(|t| t >= newest_src) {
        return out;
    }
    std::fs::create_dir_all(target_dir()).expect("create target dir");
    let tmp = target_dir().join(format!("libcni-driver.tmp{}", std::process::id()));
    // GOPATH mode against Debian's packaged sources: no module proxy, no network.
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "")
        .env("GOCACHE", target_dir().join("go-build-cache"))
        .output();
    let built = match built {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`go` not found: apt-get install golang-go golang-github-appc-cni-dev (scripts/test.sh installs them)"
        ),
        Err(e) => panic!("running go build: {e}"),
    };
    assert!(
        built.status.success(),
        "go build of tests/libcni-driver failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&tmp, &out).expect("install libcni-driver");
    out
}

/// A simulated pod: just a network namespace; vpc-cni-sim wires it.
struct SimPod {
    ns: Netns,
    name: String,
    id: String,
}

impl SimPod {
    fn new(name: &str) -> SimPod {
        SimPod {
            ns: Netns::new("cnip").unwrap(),
            name: name.to_string(),
            id: format!("sandbox{}", unique("")),
        }
    }

    /// containerd's CNI_ARGS (its order is random; this is one of them).
    fn args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
            self.name, self.id, self.id
        )
    }
}

/// containerd's capability args for a pod annotated
/// `kubernetes.io/{ingress,egress}-bandwidth: <rate>`, optionally with a
/// hostPort 8080 -> containerPort 80 mapping.
fn caps(rate: u64, quantity: &str, port_mapping: bool) -> Value {
    let mut c = json!({
        "bandwidth": {"IngressRate": rate, "IngressBurst": U32_MAX, "EgressRate": rate, "EgressBurst": U32_MAX},
        "io.kubernetes.cri.pod-annotations": {
            "kubernetes.io/ingress-bandwidth": quantity,
            "kubernetes.io/egress-bandwidth": quantity,
            "kubernetes.io/config.source": "api"
        }
    });
    if port_mapping {
        c["portMappings"] = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    }
    c
}

/// The simulated node: its netns (ip_forward on, an address on lo like
/// demo.sh), a CNI bin dir, per-plugin state dirs, libcni's cache dir.
struct Node {
    ns: Netns,
    bin: TempDir,
    state: TempDir,
    cache: TempDir,
    confs: TempDir,
}

impl Node {
    fn new() -> Node {
        let ns = Netns::new("cnin").unwrap();
        ns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])
            .unwrap();
        ns.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .unwrap();
        let bin = TempDir::new("cnibin");
        for p in STATEFUL {
            std::os::unix::fs::symlink(plugin_bin(p), bin.path.join(p)).unwrap();
        }
        for p in ["portmap", "loopback"] {
            let target = Path::new(REFERENCE_DIR).join(p);
            assert!(
                target.exists(),
                "{} missing: apt-get install containernetworking-plugins (scripts/test.sh installs it)",
                target.display()
            );
            std::os::unix::fs::symlink(&target, bin.path.join(p)).unwrap();
        }
        Node {
            ns,
            bin,
            state: TempDir::new("cnist"),
            cache: TempDir::new("cnica"),
            confs: TempDir::new("cnicf"),
        }
    }

    /// An example with every stateful plugin's `stateDir` in a temp dir,
    /// then `edit` applied (jq-like edits with serde_json).
    fn render(&self, example: &str, out: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let path = examples().join(example);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        for p in v["plugins"].as_array_mut().unwrap() {
            let t = p["type"].as_str().unwrap_or_default().to_string();
            if STATEFUL.contains(&t.as_str()) {
                p["stateDir"] = self.state.path.join(&t).display().to_string().into();
            }
        }
        edit(&mut v);
        let dest = self.confs.path.join(out);
        std::fs::write(&dest, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        dest
    }

    /// One libcni call for `pod`, run inside the node netns as a runtime
    /// on the host would. `netns: None` is containerd's second DEL.
    fn cni(
        &self,
        verb: &str,
        conflist: &Path,
        pod: &SimPod,
        netns: Option<&str>,
        caps: &Value,
    ) -> Outcome {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(driver())
            .arg(verb)
            .arg("--conflist")
            .arg(conflist)
            .args(["--container-id", &pod.id])
            .args(["--netns", netns.unwrap_or("")])
            .args(["--ifname", "eth0"])
            .args(["--args", &pod.args()])
            .args(["--cap-args", &caps.to_string()])
            .args(["--cni-path", &self.bin.str()])
            .args(["--cache-dir", &self.cache.str()])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("run libcni-driver");
        Outcome::from(out)
    }

    fn add(&self, conflist: &Path, pod: &SimPod, caps: &Value) -> Value {
        let o = self.cni("add", conflist, pod, Some(&pod.ns.path_str()), caps);
        assert_eq!(o.status, 0, "ADD {}: {o:?}", pod.name);
        o.json()
    }

    /// containerd's two DELs: StopPodSandbox (netns, cached prevResult),
    /// then RemovePodSandbox (no netns, no cache left); both must succeed.
    fn del_twice(&self, conflist: &Path, pod: &SimPod, caps: &Value) {
        let o = self.cni("del", conflist, pod, Some(&pod.ns.path_str()), caps);
        assert_eq!(o.status, 0, "DEL {}: {o:?}", pod.name);
        let o = self.cni("del", conflist, pod, None, caps);
        assert_eq!(o.status, 0, "second DEL {}: {o:?}", pod.name);
    }

    fn nat_rules(&self) -> String {
        self.ns
            .exec(&["iptables-save", "-t", "nat"])
            .unwrap_or_default()
    }

    /// Everything an attachment could leave behind, as readable lines.
    fn leftovers(&self, pods: &[&SimPod]) -> Vec<String> {
        let mut left = self.ns.node_leftovers();
        for line in self.nat_rules().lines() {
            if line.contains("CNI-DN-") || pods.iter().any(|p| line.contains(&p.id)) {
                left.push(format!("iptables {line}"));
            }
        }
        let routes = self.ns.ip(&["-4", "route", "show"]).unwrap_or_default();
        for r in routes.lines().filter(|r| r.starts_with("10.99.")) {
            left.push(format!("route {r}"));
        }
        for p in pods {
            for l in p.ns.link_names() {
                if l != "lo" {
                    left.push(format!("pod {} link {l}", p.name));
                }
            }
        }
        for (what, dir) in [
            ("state", &self.state.path),
            ("libcni cache", &self.cache.path),
        ] {
            for f in files_under(dir) {
                left.push(format!("{what} file {}", f.display()));
            }
        }
        left
    }

    fn assert_clean(&self, pods: &[&SimPod]) {
        let left = self.leftovers(pods);
        assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The pieces of an aws-like result: host veth, container side, ifb.
struct Wired {
    eni: String,
    ifb: Option<String>,
    ip: String,
}

fn check_result(res: &Value, pod: &SimPod) -> Wired {
    assert_eq!(res["cniVersion"], "0.4.0", "{res}");
    let ifs = res["interfaces"].as_array().expect("interfaces");
    let eni = ifs
        .iter()
        .find(|i| i["name"].as_str().is_some_and(|n| n.starts_with("eni")))
        .unwrap_or_else(|| panic!("no eni host veth in {res}"));
    assert!(eni.get("sandbox").is_none(), "{eni}");
    let eni = eni["name"].as_str().unwrap().to_string();
    assert_eq!(eni.len(), 14, "eni + 11 hex: {eni}");
    let eth0 = ifs
        .iter()
        .position(|i| i["name"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in {res}"));
    assert_eq!(ifs[eth0]["sandbox"], pod.ns.path_str().as_str(), "{res}");
    assert_eq!(ifs[eth0]["mac"], "254", "aws-cni's route table id: {res}");
    assert!(
        ifs.iter().any(
            |i| i["name"].as_str().is_some_and(|n| n.starts_with("dummy"))
                && i["mac"] == "0"
                && i["sandbox"] == "0"
        ),
        "aws-cni's dummy interface: {res}"
    );
    let ifb = ifs
        .iter()
        .filter_map(|i| i["name"].as_str())
        .find(|n| n.starts_with("bwp"))
        .map(str::to_string);
    let ip = &res["ips"][0];
    assert_eq!(ip["version"], "4", "{res}");
    assert_eq!(u(&ip["interface"]), eth0 as u64, "{res}");
    let addr = ip["address"].as_str().expect("address");
    assert!(addr.ends_with("/32"), "{res}");
    Wired {
        eni,
        ifb,
        ip: addr.trim_end_matches("/32").to_string(),
    }
}

/// The node side of a shaped pod: tbf on the eni veth and its ifb, the
/// ingress redirect, MTU 9001 and topology-label's alias.
fn check_shaped(node: &Node, pod: &SimPod, w: &Wired) {
    let tbf = node
        .ns
        .qdisc(&w.eni, "tbf")
        .unwrap_or_else(|| panic!("no tbf on {}", w.eni));
    assert_eq!(u(&tbf["options"]["rate"]), RATE / 8, "{tbf}");
    assert!(
        node.ns.qdisc(&w.eni, "ingress").is_some(),
        "no ingress qdisc on {}",
        w.eni
    );
    let ifb = w.ifb.as_deref().expect("egress shaped: ifb in the result");
    let tbf = node
        .ns
        .qdisc(ifb, "tbf")
        .unwrap_or_else(|| panic!("no tbf on {ifb}"));
    assert_eq!(u(&tbf["options"]["rate"]), RATE / 8, "{tbf}");
    let link = node.ns.link(&w.eni).expect("eni link");
    assert_eq!(u(&link["mtu"]), 9001, "{link}");
    let alias = link["ifalias"].as_str().unwrap_or_default();
    assert!(
        alias.contains(&format!("{POD_NAMESPACE}/{}", pod.name)) && alias.contains("us-west-2a"),
        "topology-label alias on {}: {alias:?}",
        w.eni
    );
    assert_eq!(u(&node.ns.link(ifb).expect("ifb link")["mtu"]), 9001);
}

/// Receiver-side iperf3; steady state within 3% of RATE after second 1,
/// first second within 1.1x (the capped burst).
fn assert_shaped_traffic(what: &str, receiver: &Netns, ip: &str, sender: &Netns) {
    iperf(receiver, ip, sender, SECONDS)
        .unwrap()
        .assert_shaped(RATE, what);
}

/// A TCP connection to the node's hostPort 8080 reaches port 80 in `target`
/// (portmap's DNAT), from `client`'s netns. iperf3 moves a little data.
fn hostport_reaches(target: &SimPod, client: &SimPod) {
    let mut server: Child = Command::new("ip")
        .args(["netns", "exec", &target.ns.name])
        .args(["iperf3", "-s", "-1", "-p", "80"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !target
            .ns
            .exec(&["ss", "-ltn"])
            .unwrap_or_default()
            .contains(":80 ")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let client_run = client.ns.exec(&[
        "timeout", "20", "iperf3", "-c", NODE_IP, "-p", "8080", "-t", "1",
    ]);
    if client_run.is_err() {
        let _ = server.kill();
    }
    let _ = server.wait();
    client_run.expect("hostPort 8080 on the node did not reach the pod's port 80");
}

#[test]
fn lifecycle_two_pods_through_libcni() {
    let _serial = serial();
    let node = Node::new();
    let conf = node.render(CHAIN, "chain.conflist", |_| {});
    // disableCheck makes libcni skip CHECK: a copy without it for that step.
    let check_conf = node.render(CHAIN, "chain-check.conflist", |v| {
        v.as_object_mut().unwrap().remove("disableCheck");
    });
    let web = SimPod::new("web");
    let client = SimPod::new("client");
    let web_caps = caps(RATE, RATE_Q, true);
    let client_caps = caps(RATE, RATE_Q, false);

    // ADD
    let web_res = node.add(&conf, &web, &web_caps);
    let client_res = node.add(&conf, &client, &client_caps);
    let web_w = check_result(&web_res, &web);
    let client_w = check_result(&client_res, &client);
    assert_ne!(web_w.ip, client_w.ip);
    check_shaped(&node, &web, &web_w);
    check_shaped(&node, &client, &client_w);
    for p in [&web, &client] {
        let eth0 = p.ns.link("eth0").expect("eth0 in the pod");
        assert_eq!(u(&eth0["mtu"]), 9001);
    }
    // portmap: a DNAT chain for web only, and it forwards.
    let nat = node.nat_rules();
    assert!(
        nat.contains(&format!("--to-destination {}:80", web_w.ip)),
        "portmap DNAT for web:\n{nat}"
    );
    assert!(nat.contains(&web.id), "portmap's comment names web:\n{nat}");
    assert!(!nat.contains(&client.id), "no DNAT for client:\n{nat}");
    hostport_reaches(&web, &client);

    // libcni cached both results.
    let cached = files_under(&node.cache.path);
    assert_eq!(cached.len(), 2, "libcni cache: {cached:?}");

    // CHECK: skipped with disableCheck (even with caps that do not match),
    // run without it (and then a mismatch fails).
    let wrong = caps(10_000_000, "10M", false);
    let o = node.cni("check", &conf, &client, Some(&client.ns.path_str()), &wrong);
    assert_eq!(o.status, 0, "disableCheck must skip CHECK: {o:?}");
    let o = node.cni(
        "check",
        &check_conf,
        &client,
        Some(&client.ns.path_str()),
        &wrong,
    );
    assert_ne!(o.status, 0, "CHECK must see the rate mismatch: {o:?}");
    assert!(
        o.stdout
            .contains("tbf rate is 6250000 B/s, expected 1250000"),
        "{o:?}"
    );
    let o = node.cni(
        "check",
        &check_conf,
        &client,
        Some(&client.ns.path_str()),
        &client_caps,
    );
    assert_eq!(o.status, 0, "CHECK client: {o:?}");
    // With port mappings, reference portmap 1.1.1 looks for its chain in
    // ip6tables too and fails on an IPv4-only pod (upstream
    // containernetworking/plugins#819): accept exactly that failure.
    let o = node.cni(
        "check",
        &check_conf,
        &web,
        Some(&web.ns.path_str()),
        &web_caps,
    );
    assert!(
        o.status == 0
            || o.json()["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("could not check ipv6 dnat: chain CNI-DN-")),
        "CHECK web: {o:?}"
    );
    if o.status != 0 {
        eprintln!(
            "CHECK web: reference portmap's IPv6 CHECK bug: {}",
            o.stdout.trim()
        );
    }
    // ... so our plugins are checked for web without the mapping.
    let o = node.cni(
        "check",
        &check_conf,
        &web,
        Some(&web.ns.path_str()),
        &caps(RATE, RATE_Q, false),
    );
    assert_eq!(o.status, 0, "CHECK web without portMappings: {o:?}");

    // Traffic: pod -> pod, pod -> host, host -> pod, all at 50 Mbit/s.
    assert_shaped_traffic("client -> web (pod to pod)", &web.ns, &web_w.ip, &client.ns);
    assert_shaped_traffic("web -> node (pod to host)", &node.ns, NODE_IP, &web.ns);
    assert_shaped_traffic(
        "node -> client (host to pod)",
        &client.ns,
        &client_w.ip,
        &node.ns,
    );

    // DEL, DEL again; nothing left.
    node.del_twice(&conf, &web, &web_caps);
    node.del_twice(&conf, &client, &client_caps);
    node.assert_clean(&[&web, &client]);
}

/// A plugin in the middle or at the end of the chain fails ADD: libcni
/// fails AddNetworkList with the plugin's code, caches nothing, and the
/// runtime's DelNetworkList then removes what the earlier plugins did.
fn failure_fails_the_chain(plugin: &str, edit: impl Fn(&mut Value)) {
    let _serial = serial();
    let node = Node::new();
    let conf = node.render(CHAIN, "broken.conflist", |v| {
        let p = v["plugins"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["type"] == plugin)
            .expect("plugin in chain");
        edit(p);
    });
    let pod = SimPod::new("web");
    let c = caps(RATE, RATE_Q, true);
    let o = node.cni("add", &conf, &pod, Some(&pod.ns.path_str()), &c);
    assert_ne!(o.status, 0, "ADD must fail: {o:?}");
    let report = o.json();
    assert_eq!(report["code"], 7, "the plugin's code: {o:?}");
    let err = report["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!("type=\"{plugin}\"")) && err.contains("failed (add)"),
        "libcni names the failing plugin: {err}"
    );
    assert!(
        files_under(&node.cache.path).is_empty(),
        "no cached result after a failed ADD"
    );
    // The main plugin ran: the pod is half wired until the runtime's DEL.
    assert!(
        node.ns.link_names().iter().any(|l| l.starts_with("eni")),
        "vpc-cni-sim ran before {plugin}"
    );
    node.del_twice(&conf, &pod, &c);
    node.assert_clean(&[&pod]);
}

#[test]
fn failure_in_bandwidth_fails_the_chain() {
    // A static rate without its burst: invalid config (7), as in the reference.
    failure_fails_the_chain("bandwidth", |p| p["ingressRate"] = json!(RATE));
}

#[test]
fn failure_in_topology_label_fails_the_chain() {
    failure_fails_the_chain("topology-label", |p| {
        p["annotationOverrides"] = json!([""]);
    });
}

fn example_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_loads_with_libcni() {
    let files = example_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "10-aws.conflist",
        "10-aws-enable-bandwidth-plugin.conflist",
        "10-aws-with-our-plugins.conflist",
        "single-node-sim.conflist",
        "single-node-sim-portmap.conflist",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let out = Command::new(driver())
            .args(["load", "--conflist"])
            .arg(f)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "libcni cannot load {}: {stdout} {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let loaded: Value = serde_json::from_str(&stdout).unwrap();
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let types: Vec<Value> = raw["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].clone())
            .collect();
        assert_eq!(loaded["name"], NETWORK, "{}", f.display());
        assert_eq!(loaded["cniVersion"], "0.4.0", "{}", f.display());
        assert_eq!(loaded["disableCheck"], true, "{}", f.display());
        assert_eq!(loaded["plugins"], Value::Array(types), "{}", f.display());
    }
}

/// The README documents every example, and its jq commands (run from
/// conflist-examples/) produce the committed files byte for byte.
#[test]
fn readme_jq_commands_reproduce_examples() {
    let readme = std::fs::read_to_string(examples().join("README.md")).unwrap();
    let mut produced = Vec::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line) {
            (None, "```sh") => block = Some(String::new()),
            (Some(b), "```") => {
                let b = std::mem::take(b);
                block = None;
                let (cmd, target) = b.trim_end().rsplit_once('>').expect("`> FILE` in block");
                let target = target.trim();
                let out = Command::new("sh")
                    .args(["-c", cmd])
                    .current_dir(examples())
                    .output()
                    .expect("run jq (scripts/test.sh installs it)");
                assert!(
                    out.status.success(),
                    "{cmd}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let committed = std::fs::read(examples().join(target)).unwrap();
                assert!(
                    out.stdout == committed,
                    "README's command does not reproduce {target}:\n{cmd}\n---\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
                produced.push(target.to_string());
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    for f in example_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            readme.contains(&format!("## {name}")),
            "README has no section for {name}"
        );
        if name != "10-aws.conflist" {
            assert!(
                produced.contains(&name),
                "README has no jq command for {name}"
            );
        }
    }
}

/// Reference portmap acts on DEL only when `runtimeConfig.portMappings` is
/// there: a runtime that does not resend the capability args on DEL
/// (libcni does not take them from its cache) leaves the pod's DNAT chain.
#[test]
fn portmap_del_needs_the_capability_args() {
    let _serial = serial();
    let node = Node::new();
    let conf = node.render(CHAIN, "chain.conflist", |_| {});
    let pod = SimPod::new("web");
    let c = caps(RATE, RATE_Q, true);
    node.add(&conf, &pod, &c);
    node.del_twice(&conf, &pod, &json!({}));
    let left = node.leftovers(&[&pod]);
    assert!(
        !left.is_empty() && left.iter().all(|l| l.starts_with("iptables ")),
        "only portmap's chain is left: {left:?}"
    );
    node.del_twice(&conf, &pod, &c);
    node.assert_clean(&[&pod]);
}

/// The runnable examples, as committed (state dirs moved to temp dirs):
/// ADD, DEL, DEL again through libcni; nothing left.
#[test]
fn runnable_examples_add_del() {
    let _serial = serial();
    let runnable: Vec<PathBuf> = example_files()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("single-node-sim"))
        })
        .collect();
    assert!(runnable.len() >= 2, "{runnable:?}");
    for f in runnable {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let node = Node::new();
        let conf = node.render(&name, &name, |_| {});
        let pod = SimPod::new("web");
        let c = caps(RATE, RATE_Q, true);
        let res = node.add(&conf, &pod, &c);
        let w = check_result(&res, &pod);
        check_shaped(&node, &pod, &w);
        let mapped = node
            .nat_rules()
            .contains(&format!("--to-destination {}:80", w.ip));
        assert_eq!(mapped, name.contains("portmap"), "{name}: portmap DNAT");
        node.del_twice(&conf, &pod, &c);
        node.assert_clean(&[&pod]);
    }
}
