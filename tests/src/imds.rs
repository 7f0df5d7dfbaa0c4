//! A tiny IMDSv2 for tests, on 127.0.0.1 inside a test's node netns:
//! token PUT, placement values, and the network paths bandwidth's zone
//! classes read. Shared by topology_label.rs and traffic_classes.rs.

use crate::Netns;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the fake answers.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Normal,
    /// Accepts the token PUT, then answers 401 to every GET.
    RejectToken,
    /// Waits this long before answering anything.
    Slow(Duration),
    /// Answers everything (token PUT included) with a 302 whose body looks
    /// like a zone.
    Redirect,
    /// Hands out the token, then answers every GET with such a 302.
    RedirectMetadata,
}

/// The body of the test server's redirects: it must never become a label.
pub const REDIRECT_BODY: &str = "us-east-1z";

/// A tiny IMDSv2 on 127.0.0.1 inside the node netns: GETs without the
/// token PUT hands out get 401.
pub struct Imds {
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    handle: Option<JoinHandle<()>>,
}

const TOKEN: &str = "test-token-123";

impl Imds {
    /// Starts the server in `node`'s netns.
    pub fn start(node: &Netns, mode: Mode) -> Imds {
        let path = node.path();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (stop2, log2) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            // This thread only: the listener lives in the node's netns.
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((conn, _)) => serve(conn, mode, &log2, &stop2),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Imds {
            port,
            stop,
            log,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:PORT`, valid inside the node netns.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request seen: `METHOD PATH token=BOOL`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops answering (further requests are refused).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(conn: TcpStream, mode: Mode, log: &Mutex<Vec<String>>, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(&conn);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => headers.push(line.trim().to_ascii_lowercase()),
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            h.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let token_ok = header("x-aws-ec2-metadata-token").as_deref() == Some(TOKEN);
    log.lock()
        .unwrap()
        .push(format!("{method} {path} token={token_ok}"));
    if let Mode::Slow(d) = mode {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (status, body) = match (method, path) {
        _ if mode == Mode::Redirect => ("302 Found", REDIRECT_BODY),
        ("GET", _) if mode == Mode::RedirectMetadata => ("302 Found", REDIRECT_BODY),
        ("PUT", "/latest/api/token") => {
            if header("x-aws-ec2-metadata-token-ttl-seconds").is_some() {
                ("200 OK", TOKEN)
            } else {
                ("400 Bad Request", "")
            }
        }
        ("GET", _) if !token_ok || mode == Mode::RejectToken => ("401 Unauthorized", ""),
        ("GET", "/latest/meta-data/placement/availability-zone") => ("200 OK", "us-test-1a"),
        ("GET", "/latest/meta-data/placement/availability-zone-id") => ("200 OK", "uste1-az9"),
        ("GET", "/latest/meta-data/placement/region") => ("200 OK", "us-test-1"),
        ("GET", "/latest/meta-data/instance-type") => ("200 OK", "m7g.large"),
        // The node's network, for bandwidth's zone classes: two ENIs in
        // one subnet of the zone, in a VPC of 10.0.0.0/8 and fd00::/8.
        ("GET", "/latest/meta-data/network/interfaces/macs/") => {
            ("200 OK", "0e:00:00:00:00:01/\n0e:00:00:00:00:02/")
        }
        ("GET", p) if p.ends_with("/subnet-ipv4-cidr-block") => ("200 OK", "10.1.0.0/16"),
        ("GET", p) if p.ends_with("/subnet-ipv6-cidr-blocks") => ("200 OK", "fd0a::/32"),
        ("GET", p) if p.ends_with("/vpc-ipv4-cidr-blocks") => ("200 OK", "10.0.0.0/8"),
        ("GET", p) if p.ends_with("/vpc-ipv6-cidr-blocks") => ("200 OK", "fd00::/8"),
        _ => ("404 Not Found", ""),
    };
    let location = if status.starts_with("302") {
        "Location: http://127.0.0.1:1/elsewhere\r\n"
    } else {
        ""
    };
    let mut w = &conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\n{location}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
