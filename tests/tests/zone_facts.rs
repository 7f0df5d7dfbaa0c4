//! Zone facts that must never be cached or believed (issue 24, item 4):
//! a bad IMDS answer (a /33, 200 subnets, the whole internet) is a failed
//! fetch, "try again later" (11), never written to the shared cache, so the
//! next ADD after IMDS is fixed works; a cache an older version filled with
//! such an answer is fetched again; and the operator's `zoneCidrsFile` (or
//! inline `zoneCidrs`) with a prefix as wide as the internet is bad config (7).

use integration_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An IMDSv2 on 127.0.0.1 inside the node netns whose answers a test can
/// change: by the last component of the metadata path; the token PUT
/// always succeeds; anything unknown is a 404.
struct FakeImds {
    port: u16,
    answers: Arc<Mutex<BTreeMap<String, String>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

const GOOD: [(&str, &str); 7] = [
    ("availability-zone", "us-test-1a"),
    ("region", "us-test-1"),
    ("macs", "0e:00:00:00:00:01/"),
    ("subnet-ipv4-cidr-block", "10.1.0.0/16"),
    ("subnet-ipv6-cidr-blocks", "fd0a::/64"),
    ("vpc-ipv4-cidr-blocks", "10.0.0.0/16"),
    ("vpc-ipv6-cidr-blocks", "fd0a::/56"),
];

fn good(item: &str) -> &'static str {
    GOOD.iter().find(|(k, _)| *k == item).unwrap().1
}

impl FakeImds {
    fn start(node: &Netns) -> FakeImds {
        let path = node.path();
        let answers: BTreeMap<String, String> = GOOD
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let answers = Arc::new(Mutex::new(answers));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, r, s) = (answers.clone(), requests.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // This thread only: the listener lives in the node's netns.
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        serve(conn, &a);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        FakeImds {
            port,
            answers,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, item: &str, body: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(item.to_string(), body.to_string());
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, answers: &Mutex<BTreeMap<String, String>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(&conn);
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let item = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let body = match method {
        "PUT" => Some("token".to_string()),
        _ => answers.lock().unwrap().get(item).cloned(),
    };
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", String::new()),
    };
    let mut w = &conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

struct Site {
    node: Netns,
    pod: Pod,
    state: TempDir,
    cache: TempDir,
}

fn site() -> Site {
    let node = Netns::new("cnin").unwrap();
    let pod = Pod::new(&node).unwrap();
    Site {
        node,
        pod,
        state: TempDir::new("zfst"),
        cache: TempDir::new("zfc"),
    }
}

impl Site {
    fn cache_file(&self) -> String {
        format!("{}/imds-cache.json", self.cache.str())
    }

    fn cached(&self) -> String {
        std::fs::read_to_string(self.cache_file()).unwrap_or_default()
    }

    fn conf(&self, traffic_classes: Value) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "zone-facts", "type": "bandwidth",
            "stateDir": self.state.str(),
            "runtimeConfig": {"bandwidth": {"ingressRate": 100_000_000, "ingressBurst": 4_294_967_295u64,
                                             "egressRate": 100_000_000, "egressBurst": 4_294_967_295u64}},
            "trafficClasses": merged(json!({"crossZone": {"egressRate": 20_000_000}}), traffic_classes),
            "prevResult": self.pod.prev_result("1.0.0"),
        })
    }

    fn imds_conf(&self, server: &FakeImds, backoff_secs: u64) -> Value {
        self.conf(json!({"imds": {
            "endpoint": server.endpoint(), "timeoutMs": 2000,
            "cacheFile": self.cache_file(), "failureBackoffSeconds": backoff_secs,
        }}))
    }

    fn run(&self, verb: &str, conf: &Value) -> Outcome {
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(&self.node),
            &self.pod.env(verb),
            conf.to_string().as_bytes(),
        )
    }

    /// ADD fails with `code`, and neither the node nor our state changed.
    fn add_fails(&self, conf: &Value, code: u64, what: &str) -> Value {
        let before = self.node.snapshot();
        let err = self.run("ADD", conf).err(code);
        eprintln!("{what}: {} ({})", err["msg"], err["details"]);
        assert_eq!(self.node.snapshot(), before, "{what} changed the node");
        assert!(self.state.files().is_empty(), "{what} left state");
        err
    }

    fn add_then_del(&self, conf: &Value) {
        self.run("ADD", conf).ok();
        self.run("DEL", conf).ok();
    }
}

/// IMDS answers a /33: code 11, nothing cached, the failure backed off
/// (no request within `failureBackoffSeconds`), and once IMDS is fixed the
/// next ADD after the backoff works. It used to cache the /33 and fail
/// every ADD for the cache's TTL without asking IMDS again.
#[test]
fn a_bad_imds_answer_is_code_11_and_never_cached() {
    let _serial = serial();
    let site = site();
    let server = FakeImds::start(&site.node);
    let c = site.imds_conf(&server, 2);
    server.set("subnet-ipv4-cidr-block", "10.1.0.0/33");
    site.add_fails(&c, 11, "a /33 from IMDS");
    assert!(!site.cached().contains("/33"), "cached: {}", site.cached());
    server.set("subnet-ipv4-cidr-block", good("subnet-ipv4-cidr-block"));
    let asked = server.requests();
    site.add_fails(&c, 11, "within the failure backoff");
    assert_eq!(server.requests(), asked, "IMDS asked within the backoff");
    std::thread::sleep(Duration::from_millis(2100));
    site.add_then_del(&c);
    assert!(
        site.cached().contains("10.1.0.0/16"),
        "not cached: {}",
        site.cached()
    );
}

/// 200 subnets (under IMDS's 4 KiB) are more than a pod's classes may use:
/// a failed fetch (11: IMDS's fault, worth a retry), not bad config (7),
/// and not cached, so a fixed IMDS is asked again.
#[test]
fn too_many_imds_subnets_are_code_11_not_7_and_not_cached() {
    let _serial = serial();
    let site = site();
    let server = FakeImds::start(&site.node);
    let c = site.imds_conf(&server, 0);
    let many: String = (0..200).map(|i| format!("fd0a:{i:x}::/64\n")).collect();
    assert!(many.len() < 4096);
    server.set("subnet-ipv6-cidr-blocks", &many);
    site.add_fails(&c, 11, "200 subnets from IMDS");
    assert!(!site.cached().contains("fd0a:1::"), "{}", site.cached());
    site.add_fails(&c, 11, "200 subnets, again: IMDS asked again");
    server.set("subnet-ipv6-cidr-blocks", good("subnet-ipv6-cidr-blocks"));
    site.add_then_del(&c);
}

/// 0.0.0.0/0 or ::/0 as a zone fact from IMDS would make every peer "same
/// zone": refused (11) and not cached.
#[test]
fn the_whole_internet_from_imds_is_refused() {
    let _serial = serial();
    let site = site();
    let server = FakeImds::start(&site.node);
    let c = site.imds_conf(&server, 0);
    for (item, wide) in [
        ("subnet-ipv4-cidr-block", "0.0.0.0/0"),
        ("subnet-ipv6-cidr-blocks", "::/0"),
        ("vpc-ipv4-cidr-blocks", "10.0.0.0/16\n0.0.0.0/1"),
    ] {
        server.set(item, wide);
        site.add_fails(&c, 11, &format!("{item}: {wide:?} from IMDS"));
        assert!(!site.cached().contains("network"), "{}", site.cached());
        server.set(item, good(item));
    }
    site.add_then_del(&c);
}

/// A fresh cache an older version filled with an answer that does not
/// validate counts as absent: IMDS is asked again and ADD works.
#[test]
fn an_old_cache_that_no_longer_validates_is_fetched_again() {
    let _serial = serial();
    let site = site();
    let server = FakeImds::start(&site.node);
    let c = site.imds_conf(&server, 30);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = json!({
        "fetchedAt": now, "labels": {"topology.kubernetes.io/zone": "us-test-1a"},
        "network": {"fetchedAt": now, "subnetCidrs": ["10.1.0.0/33"], "vpcCidrs": ["10.0.0.0/16"]},
    });
    std::fs::write(site.cache_file(), old.to_string()).unwrap();
    site.add_then_del(&c);
    assert!(server.requests() > 0, "IMDS was not asked");
    assert!(!site.cached().contains("/33"), "{}", site.cached());
}

/// The operator's zone CIDRs, from `zoneCidrsFile` or inline: a prefix as
/// wide as the internet is bad config (7), said so, and changes nothing.
#[test]
fn the_whole_internet_in_zone_cidrs_is_code_7() {
    let _serial = serial();
    let site = site();
    let file = format!("{}/zones.json", site.cache.str());
    for (same, cross) in [
        ("0.0.0.0/0", "10.2.0.0/16"),
        ("10.1.0.0/16", "::/0"),
        ("10.1.0.0/16", "0.0.0.0/4"),
    ] {
        let zones = json!({"us-west-2a": ["fd0a::/32", same], "us-west-2b": [cross]});
        let body = json!({"zone": "us-west-2a", "zoneCidrs": zones});
        std::fs::write(&file, body.to_string()).unwrap();
        let c = site.conf(json!({"zoneCidrsFile": file}));
        let err = site.add_fails(&c, 7, &format!("zoneCidrsFile with {same} / {cross}"));
        let said = format!("{} {}", err["msg"], err["details"]);
        assert!(said.contains("too wide"), "{said}");
        let inline = site.conf(json!({"zone": "us-west-2a", "zoneCidrs": zones}));
        site.add_fails(
            &inline,
            7,
            &format!("inline zoneCidrs with {same} / {cross}"),
        );
    }
    // The same file with real zones works.
    let zones = json!({"us-west-2a": ["10.1.0.0/16"], "us-west-2b": ["10.2.0.0/16"]});
    std::fs::write(
        &file,
        json!({"zone": "us-west-2a", "zoneCidrs": zones}).to_string(),
    )
    .unwrap();
    site.add_then_del(&site.conf(json!({"zoneCidrsFile": file})));
}
