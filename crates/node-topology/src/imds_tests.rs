//! IMDS against an in-process IMDSv2 on 127.0.0.1 (no root needed): what
//! is cached, what is refused, and when IMDS is asked again.

use super::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Answers by the last component of the metadata path; the token PUT
/// always succeeds; anything unknown is a 404.
struct FakeImds {
    port: u16,
    answers: Arc<Mutex<BTreeMap<String, String>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn normal_answers() -> BTreeMap<String, String> {
    [
        ("availability-zone", "us-test-1a"),
        ("region", "us-test-1"),
        ("macs", "0e:00:00:00:00:01/"),
        ("subnet-ipv4-cidr-block", "10.1.0.0/16"),
        ("subnet-ipv6-cidr-blocks", "fd0a::/64"),
        ("vpc-ipv4-cidr-blocks", "10.0.0.0/16"),
        ("vpc-ipv6-cidr-blocks", "fd0a::/56"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl FakeImds {
    fn start() -> FakeImds {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let answers = Arc::new(Mutex::new(normal_answers()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, r, s) = (answers.clone(), requests.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        serve(conn, &a);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeImds {
            port,
            answers,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    fn set(&self, item: &str, body: &str) {
        if let Ok(mut a) = self.answers.lock() {
            a.insert(item.to_string(), body.to_string());
        }
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
        _ => answers.lock().ok().and_then(|a| a.get(item).cloned()),
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

/// A private directory for one test's cache, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("nt-imds-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn conf(server: &FakeImds, dir: &Dir, backoff_secs: u64) -> ImdsConf {
    ImdsConf {
        endpoint: format!("http://127.0.0.1:{}", server.port),
        timeout: Duration::from_secs(5),
        cache_file: dir.0.join("cache.json"),
        cache_ttl: Duration::from_secs(3600),
        failure_backoff: Duration::from_secs(backoff_secs),
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().expect("test CIDR")).collect()
}

fn cached_text(conf: &ImdsConf) -> String {
    std::fs::read_to_string(&conf.cache_file).unwrap_or_default()
}

#[test]
fn validate_refuses_wide_many_and_empty() {
    let ok = NetworkFacts {
        fetched_at: 1,
        subnet_cidrs: cidrs(&["10.1.0.0/16", "fd0a::/64"]),
        vpc_cidrs: cidrs(&["10.0.0.0/8", "fd00::/8"]),
    };
    assert_eq!(ok.validate(), Ok(()));
    for (field, wide) in [(0, "0.0.0.0/0"), (1, "::/0"), (0, "10.0.0.0/7")] {
        let mut n = ok.clone();
        let list = if field == 0 {
            &mut n.subnet_cidrs
        } else {
            &mut n.vpc_cidrs
        };
        list.push(wide.parse().expect("CIDR"));
        assert!(n.validate().is_err(), "{wide} accepted");
    }
    let mut many = ok.clone();
    many.subnet_cidrs = (0..MAX_PEER_CIDRS)
        .map(|i| format!("10.1.{i}.0/24").parse().expect("CIDR"))
        .collect();
    assert!(many.validate().is_err(), "{MAX_PEER_CIDRS} + 2 accepted");
    many.subnet_cidrs.truncate(MAX_PEER_CIDRS - 2);
    assert_eq!(many.validate(), Ok(()), "exactly the bound");
    let empty = NetworkFacts {
        vpc_cidrs: Vec::new(),
        ..ok
    };
    assert!(empty.validate().is_err());
}

#[test]
fn a_cached_network_that_no_longer_validates_is_absent() {
    let dir = Dir::new("oldcache");
    let path = dir.0.join("cache.json");
    for bad in [
        json_network(&["10.1.0.0/33"], &["10.0.0.0/8"]),
        json_network(&["0.0.0.0/0"], &["10.0.0.0/8"]),
        json_network(&["10.1.0.0/16"], &[]),
        serde_json::json!({"fetchedAt": 1, "subnetCidrs": "10.1.0.0/16"}),
    ] {
        let text = serde_json::json!({
            "fetchedAt": now_secs(), "labels": {ZONE: "us-test-1a"}, "network": bad
        });
        std::fs::write(&path, text.to_string()).expect("write");
        let c = read_cache(&path).expect("the labels still read");
        assert_eq!(c.labels.get(ZONE).map(String::as_str), Some("us-test-1a"));
        assert!(c.network.is_none(), "{bad} kept");
    }
    let good = json_network(&["10.1.0.0/16"], &["10.0.0.0/8"]);
    let text = serde_json::json!({"fetchedAt": 1, "labels": {}, "network": good});
    std::fs::write(&path, text.to_string()).expect("write");
    let c = read_cache(&path).expect("readable");
    assert_eq!(
        c.network.map(|n| n.subnet_cidrs),
        Some(cidrs(&["10.1.0.0/16"]))
    );
}

fn json_network(subnets: &[&str], vpc: &[&str]) -> serde_json::Value {
    serde_json::json!({"fetchedAt": now_secs(), "subnetCidrs": subnets, "vpcCidrs": vpc})
}

/// Issue 24: one bad answer cached used to fail every pod for the TTL.
#[test]
fn a_bad_answer_is_a_failure_never_cached() {
    for (name, item, body) in [
        (
            "prefix33",
            "subnet-ipv4-cidr-block",
            "10.1.0.0/33".to_string(),
        ),
        ("v4all", "subnet-ipv4-cidr-block", "0.0.0.0/0".to_string()),
        ("v6all", "vpc-ipv6-cidr-blocks", "::/0".to_string()),
        (
            "many",
            "subnet-ipv6-cidr-blocks",
            (0..200).map(|i| format!("fd0a:{i:x}::/64\n")).collect(),
        ),
        (
            "garbage",
            "vpc-ipv4-cidr-blocks",
            "10.0.0.0/8 x".to_string(),
        ),
    ] {
        let server = FakeImds::start();
        let dir = Dir::new(name);
        let conf = conf(&server, &dir, 0);
        server.set(item, &body);
        let e = labels_and_network(&conf).expect_err(name);
        eprintln!("{name}: {e:#}");
        assert!(!cached_text(&conf).contains("network"), "{name} cached");
        // Labels alone still work and cache no network.
        assert!(labels(&conf).is_ok());
        assert!(!cached_text(&conf).contains("network"), "{name} cached");
        // Fixed: the next call asks again and succeeds.
        server.set(item, &normal_answers()[item]);
        let (_, net) = labels_and_network(&conf).expect("IMDS fixed");
        assert_eq!(net.subnet_cidrs[0], cidrs(&["10.1.0.0/16"])[0]);
    }
}

#[test]
fn a_bad_answer_is_backed_off_then_asked_again() {
    let server = FakeImds::start();
    let dir = Dir::new("backoff");
    let conf = conf(&server, &dir, 2);
    server.set("subnet-ipv4-cidr-block", "10.1.0.0/33");
    assert!(labels_and_network(&conf).is_err());
    server.set("subnet-ipv4-cidr-block", "10.1.0.0/16");
    let asked = server.requests();
    let e = labels_and_network(&conf).expect_err("within the backoff");
    assert!(format!("{e:#}").contains("not asking again"), "{e:#}");
    assert_eq!(server.requests(), asked, "asked IMDS within the backoff");
    std::thread::sleep(Duration::from_millis(2100));
    assert!(labels_and_network(&conf).is_ok());
    assert!(cached_text(&conf).contains("10.1.0.0/16"));
}

#[test]
fn an_old_invalid_cache_is_fetched_again() {
    let server = FakeImds::start();
    let dir = Dir::new("refetch");
    let conf = conf(&server, &dir, 30);
    let text = serde_json::json!({
        "fetchedAt": now_secs(), "labels": {ZONE: "us-test-1a"},
        "network": json_network(&["10.1.0.0/33"], &["10.0.0.0/8"]),
    });
    std::fs::write(&conf.cache_file, text.to_string()).expect("write");
    // A label-only caller is answered by the cache without a request.
    assert!(labels(&conf).is_ok());
    assert_eq!(server.requests(), 0);
    let (_, net) = labels_and_network(&conf).expect("fetched again");
    assert!(server.requests() > 0);
    assert_eq!(net.vpc_cidrs, cidrs(&["10.0.0.0/16", "fd0a::/56"]));
    assert!(!cached_text(&conf).contains("/33"));
}
