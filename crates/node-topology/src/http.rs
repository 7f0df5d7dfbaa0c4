//! The HTTP/1.1 that IMDSv2 needs, and nothing more: one request per
//! connection (`Connection: close`), no proxy, no redirects, no TLS (IMDS
//! is plain HTTP on a link-local address), a deadline over connect, write
//! and every read, and bounded headers and body.
//!
//! Why not a general client: IMDS is a handful of small GETs and a PUT to
//! one endpoint, and the HTTP stack of a general client was ~130 KB of each
//! static plugin (BENCHMARKS.md, binary size).

use anyhow::{Context as _, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Status line and headers: IMDS sends a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// A response: its status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What to send.
pub struct Request<'a> {
    pub method: &'a str,
    /// `host[:port]`, as in the endpoint URL.
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

/// Time left before `deadline`; an error once it has passed.
fn left(deadline: Instant) -> anyhow::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        bail!("timed out");
    }
    Ok(d)
}

/// `host[:port]` as socket addresses (port 80 when none is given; an IPv6
/// literal comes in brackets).
fn addresses(host: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let has_port = match host.rsplit_once(']') {
        Some((_, rest)) => rest.starts_with(':'),
        None => host.contains(':'),
    };
    let with_port = if has_port {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok(with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect())
}

fn connect(host: &str, deadline: Instant) -> anyhow::Result<TcpStream> {
    let mut last = None;
    for addr in addresses(host)? {
        match TcpStream::connect_timeout(&addr, left(deadline)?) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("connecting to {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{host} has no address")))
}

/// Sends `req` and reads the whole response, all within `deadline`; a
/// body above `max_body` bytes is an error.
pub fn send(req: &Request<'_>, deadline: Instant, max_body: usize) -> anyhow::Result<Response> {
    let mut conn = connect(req.host, deadline)?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        req.method, req.path, req.host
    );
    for (name, value) in req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if req.method != "GET" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    conn.set_write_timeout(Some(left(deadline)?))?;
    conn.write_all(head.as_bytes())
        .context("sending the request")?;
    let raw = read_all(&mut conn, deadline, MAX_HEAD + max_body)?;
    parse(&raw, max_body)
}

/// Reads until the server closes the connection, within `deadline` and
/// `limit` bytes.
fn read_all(conn: &mut TcpStream, deadline: Instant, limit: usize) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        conn.set_read_timeout(Some(left(deadline)?))?;
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("timed out reading the response")
            }
            Err(e) => return Err(e).context("reading the response"),
        };
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > limit {
            bail!("response larger than {limit} bytes");
        }
    }
}

/// Status and body of a whole response (`Content-Length`, chunked, or up
/// to the end of the connection).
fn parse(raw: &[u8], max_body: usize) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = std::str::from_utf8(&raw[..end]).context("response headers are not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        rest.get(..len)
            .context("the connection closed before the whole body")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > max_body {
        bail!("response body larger than {max_body} bytes");
    }
    Ok(Response { status, body })
}

/// A chunked body, decoded (trailers ignored).
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_field = std::str::from_utf8(&rest[..eol]).context("bad chunk size")?;
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).context("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).context("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths_chunks_and_close() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello+extra",
            100,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse(b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\nnope", 100).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
    }

    #[test]
    fn refuses_what_is_not_a_response() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ] {
            assert!(
                parse(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 4).is_err(),
            "body bound"
        );
    }

    #[test]
    fn addresses_default_to_port_80() {
        assert_eq!(addresses("127.0.0.1").unwrap()[0].port(), 80);
        assert_eq!(addresses("127.0.0.1:8080").unwrap()[0].port(), 8080);
        assert_eq!(addresses("[::1]").unwrap()[0].port(), 80);
        assert_eq!(addresses("[::1]:81").unwrap()[0].port(), 81);
    }
}
