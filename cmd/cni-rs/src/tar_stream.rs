//! A gzip-compressed tar archive read as a stream from memory: gzip's
//! framing and CRC here, deflate by `miniz_oxide` (pure Rust, no C, a few
//! tens of KB), tar headers (ustar, GNU and pax names) here. Only what a
//! release tarball needs: every member is reported with its kind and
//! size, so the caller can refuse before reading a byte of its data.
//! Output is bounded: the stream stops with an error past
//! [`crate::release::MAX_UNPACKED_BYTES`] plus slack, whatever the headers
//! claim.

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// What the inflated stream may grow to, headers and padding included.
const MAX_STREAM_BYTES: u64 = (256 << 20) + (8 << 20);
/// A pax or GNU long-name record is a path, not data.
const MAX_META_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    File,
    Dir,
    /// Links, devices, FIFOs, sparse files: never part of a release.
    Other,
}

#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// What the member unpacks to (a sparse member's full size).
    pub size: u64,
}

/// The inflated bytes of a gzip member, read on demand.
struct Gunzip<'a> {
    input: &'a [u8],
    state: Box<InflateState>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    crc: u32,
    total: u64,
    done: bool,
}

impl<'a> Gunzip<'a> {
    fn new(gz: &'a [u8]) -> Result<Gunzip<'a>, String> {
        let body = gzip_body(gz)?;
        Ok(Gunzip {
            input: body,
            state: InflateState::new_boxed(DataFormat::Raw),
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            crc: !0,
            total: 0,
            done: false,
        })
    }

    /// Inflates the next chunk into `buf`; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        let r = inflate(&mut self.state, self.input, &mut self.buf, MZFlush::None);
        self.input = &self.input[r.bytes_consumed..];
        (self.start, self.end) = (0, r.bytes_written);
        self.crc = crc32_update(self.crc, &self.buf[..r.bytes_written]);
        self.total += r.bytes_written as u64;
        if self.total > MAX_STREAM_BYTES {
            return Err(format!("it inflates to over {MAX_STREAM_BYTES} bytes"));
        }
        match r.status {
            Ok(MZStatus::StreamEnd) => self.done = true,
            // No progress with input left: the stream stops short.
            Ok(_) | Err(MZError::Buf) if r.bytes_written == 0 && r.bytes_consumed == 0 => {
                return Err("the gzip stream is truncated".into());
            }
            Ok(_) | Err(MZError::Buf) => {}
            Err(e) => return Err(format!("corrupt deflate data ({e:?})")),
        }
        Ok(r.bytes_written > 0 || !self.done)
    }

    /// Makes at least one inflated byte available, or fails at the end.
    fn refill(&mut self) -> Result<(), String> {
        while self.start == self.end {
            let more = self.fill()?;
            if !more && self.start == self.end {
                return Err("the archive ends in the middle of a member".into());
            }
        }
        Ok(())
    }

    /// Exactly `out.len()` bytes, or an error at the end of the stream.
    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), String> {
        let mut at = 0;
        while at < out.len() {
            self.refill()?;
            let n = (self.end - self.start).min(out.len() - at);
            out[at..at + n].copy_from_slice(&self.buf[self.start..self.start + n]);
            (self.start, at) = (self.start + n, at + n);
        }
        Ok(())
    }

    /// Skips `n` bytes without keeping them.
    fn skip(&mut self, mut n: u64) -> Result<(), String> {
        while n > 0 {
            self.refill()?;
            let k = ((self.end - self.start) as u64).min(n) as usize;
            self.start += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads to the end and checks the gzip trailer (CRC-32 and length).
    fn finish(&mut self) -> Result<(), String> {
        while self.fill()? {}
        let crc = !self.crc;
        let t = self.input;
        if t.len() < 8 {
            return Err("the gzip trailer is missing".into());
        }
        let want_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let want_len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if want_crc != crc || want_len != self.total as u32 {
            return Err("the gzip checksum does not match (corrupt download)".into());
        }
        Ok(())
    }
}

/// The deflate data of a gzip member (RFC 1952 header skipped).
fn gzip_body(gz: &[u8]) -> Result<&[u8], String> {
    if gz.len() < 18 || gz[0] != 0x1f || gz[1] != 0x8b || gz[2] != 8 {
        return Err("not gzip data".into());
    }
    let flags = gz[3];
    let mut at = 10usize;
    let short = || "the gzip header is truncated".to_string();
    if flags & 4 != 0 {
        let xlen = u16::from_le_bytes([gz[at], *gz.get(at + 1).ok_or_else(short)?]) as usize;
        at += 2 + xlen;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let nul = gz
                .get(at..)
                .ok_or_else(short)?
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(short)?;
            at += nul + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    gz.get(at..).ok_or_else(short)
}

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// A tar archive's members, one header at a time.
pub struct TarStream<'a> {
    gz: Gunzip<'a>,
    /// The data of the member last returned, still to read or skip.
    pending: u64,
    long_name: Option<String>,
}

impl<'a> TarStream<'a> {
    pub fn new(tgz: &'a [u8]) -> Result<TarStream<'a>, String> {
        Ok(TarStream {
            gz: Gunzip::new(tgz)?,
            pending: 0,
            long_name: None,
        })
    }

    /// The next member, `None` at the end-of-archive block.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, String> {
        self.drop_pending()?;
        loop {
            let mut h = [0u8; 512];
            self.gz.read_exact(&mut h)?;
            if h.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            check_header(&h)?;
            let size = octal(&h[124..136]).ok_or("a member header without a size")?;
            match h[156] {
                b'L' | b'x' => {
                    let meta = self.meta(size)?;
                    self.long_name = if h[156] == b'L' {
                        Some(cstr(&meta))
                    } else {
                        pax_path(&meta)
                    };
                }
                b'g' | b'K' => drop(self.meta(size)?),
                t => {
                    let name = self.long_name.take().unwrap_or_else(|| header_name(&h));
                    let (kind, real) = match t {
                        b'0' | 0 | b'7' => (Kind::File, size),
                        b'5' => (Kind::Dir, size),
                        b'S' => (Kind::Other, octal(&h[483..495]).unwrap_or(size).max(size)),
                        _ => (Kind::Other, size),
                    };
                    self.pending = padded(size);
                    return Ok(Some(Entry {
                        name,
                        kind,
                        size: real,
                    }));
                }
            }
        }
    }

    /// The data of the member just returned (`size` as its entry said).
    pub fn data(&mut self, size: u64) -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; usize::try_from(size).map_err(|_| "a member too big")?];
        self.gz.read_exact(&mut v)?;
        self.pending = self.pending.saturating_sub(size);
        Ok(v)
    }

    fn drop_pending(&mut self) -> Result<(), String> {
        let n = std::mem::take(&mut self.pending);
        self.gz.skip(n)
    }

    fn meta(&mut self, size: u64) -> Result<Vec<u8>, String> {
        if size > MAX_META_BYTES {
            return Err(format!("a name record of {size} bytes"));
        }
        self.pending = padded(size);
        let v = self.data(size)?;
        self.drop_pending()?;
        Ok(v)
    }

    /// Reads what follows the end block and checks gzip's trailer.
    pub fn finish(mut self) -> Result<(), String> {
        self.gz.finish()
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A numeric header field: octal digits (or GNU's base-256 for big ones).
fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |acc, b| {
                acc.checked_mul(256).map(|v| v + u64::from(*b))
            });
    }
    let s = cstr(field);
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn check_header(h: &[u8; 512]) -> Result<(), String> {
    let want = octal(&h[148..156]).ok_or("a member header without a checksum")?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if sum != want {
        return Err("a corrupt member header (not a tar archive?)".into());
    }
    Ok(())
}

/// The name in a header: ustar's prefix joined to its name.
fn header_name(h: &[u8; 512]) -> String {
    let name = cstr(&h[..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// `path` of a pax extended header ("<len> path=<value>\n" records).
fn pax_path(meta: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(meta);
    text.lines()
        .filter_map(|rec| rec.split_once(' ').map(|(_, kv)| kv))
        .find_map(|kv| kv.strip_prefix("path=").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_a_known_string() {
        assert_eq!(!crc32_update(!0, b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn numbers_in_headers() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"        "), Some(0));
        assert_eq!(octal(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(octal(b"9"), None);
    }

    #[test]
    fn not_gzip_is_an_error() {
        assert!(TarStream::new(b"plain text, not a tarball").is_err());
    }
}
