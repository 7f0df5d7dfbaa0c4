//! `--from` a release tarball (`cni-rs-<version>-linux-<arch>.tgz`).
//!
//! The tarball is read once into memory, so the bytes checked against
//! SHA256SUMS are the bytes unpacked. It is unpacked in memory too: only
//! the two plugins ever reach the disk, under fixed names in the CNI bin
//! dir, so no member can land outside its target whatever its name says;
//! names that try (absolute, `..`) are refused all the same, as are links,
//! devices and anything else that is not a file or directory. What it may
//! unpack to is bounded: a release is a few static binaries, scripts and a
//! README (tens of MB), so a gzip bomb, a huge or sparse member or a flood
//! of members is refused before it costs memory or time.

use crate::node_files::{self, ReadError};
use crate::tar_stream::{Entry, Kind, TarStream};
use sha2::{Digest as _, Sha256};
use std::path::Path;

pub const MAX_UNPACKED_BYTES: u64 = 256 << 20;
const MAX_MEMBERS: usize = 1000;
const MAX_SUMS_BYTES: u64 = 1 << 20;
/// A release tarball is a few MB; a bigger download is not one.
const MAX_TARBALL_BYTES: u64 = 128 << 20;

/// Whether `--from` names a tarball rather than a directory.
pub fn is_tarball(from: &Path) -> bool {
    let s = from.to_string_lossy();
    s.ends_with(".tgz") || s.ends_with(".tar.gz")
}

/// The files in the release's `bin/`, by name, after every check.
pub fn unpack(tgz: &Path, log: &mut dyn FnMut(String)) -> Result<Vec<(String, Vec<u8>)>, String> {
    let t = tgz.display();
    let name = tgz
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sums = tgz.with_file_name("SHA256SUMS");
    let want = checksum(&name, &sums)?;
    let bytes = node_files::read_regular(tgz, MAX_TARBALL_BYTES).map_err(|e| match e {
        ReadError::NotRegular => format!("--from {t} is not a regular file"),
        other => format!("--from {t} {other}"),
    })?;
    if let Some(want) = want {
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(&want) {
            return Err(format!(
                "{name} does not match its checksum in {} (corrupt or replaced download)",
                sums.display()
            ));
        }
        log(format!("{name} matches {}", sums.display()));
    }
    let stream = TarStream::new(&bytes).map_err(|e| format!("cannot unpack {t}: {e}"))?;
    bin_files(stream).map_err(|e| match e {
        Bad::Release(why) => format!("{t} {why}"),
        Bad::Unpack(why) => format!("cannot unpack {t}: {why}"),
    })
}

/// The checksum SHA256SUMS beside the tarball lists for it, or `None` when
/// there is no SHA256SUMS there. A SHA256SUMS there in any form that is
/// not a readable regular file (a FIFO, a directory, a dangling link,
/// unreadable) is a refusal, never "no checksums": that would install the
/// tarball unverified. So is a SHA256SUMS that does not list it.
fn checksum(name: &str, sums: &Path) -> Result<Option<String>, String> {
    let s = sums.display();
    let unverified = format!("{name} would install unverified");
    let text = match node_files::read_regular(sums, MAX_SUMS_BYTES) {
        Err(ReadError::Missing) => return Ok(None),
        Err(ReadError::NotRegular) => {
            return Err(format!(
                "{s} exists but is not a regular file (a FIFO, a directory or a dangling link?); {unverified}"
            ));
        }
        Err(ReadError::TooBig(max)) => {
            return Err(format!(
                "{s} is over {max} bytes: not a release's checksum file"
            ));
        }
        Err(ReadError::Io(e)) => {
            return Err(format!("{s} exists but cannot be read ({e}); {unverified}"));
        }
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
    };
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(_, file)| {
            let file = file.trim_start();
            file == name || file.strip_prefix('*') == Some(name)
        })
        .map(|(hash, _)| Some(hash.to_string()))
        .ok_or_else(|| format!("{s} does not list {name}"))
}

enum Bad {
    /// Not a cni-rs release: said after the tarball's name.
    Release(String),
    /// Not a readable tar.gz.
    Unpack(String),
}

fn not_release(why: impl std::fmt::Display) -> Bad {
    Bad::Release(format!("unpacks to {why}: not a cni-rs release"))
}

/// Walks every member, checking the bounds and names, and keeps the
/// regular files directly under `<top>/bin/`.
fn bin_files(mut stream: TarStream) -> Result<Vec<(String, Vec<u8>)>, Bad> {
    let mut total: u64 = 0;
    let mut members = 0usize;
    let mut top: Option<String> = None;
    let mut has_bin = false;
    let mut bins = Vec::new();
    while let Some(Entry { name, kind, size }) = stream.next_entry().map_err(Bad::Unpack)? {
        members += 1;
        total = total.saturating_add(size);
        if total > MAX_UNPACKED_BYTES {
            return Err(not_release(format!("over {MAX_UNPACKED_BYTES} bytes")));
        }
        if members > MAX_MEMBERS {
            return Err(not_release(format!("over {MAX_MEMBERS} members")));
        }
        if kind == Kind::Other {
            return Err(not_release("a member that is not a file or directory"));
        }
        let parts = confined(&name)
            .ok_or_else(|| not_release(format!("a member outside its directory ({name:?})")))?;
        if top.get_or_insert_with(|| parts[0].clone()) != &parts[0] {
            return Err(one_directory());
        }
        // The top and its bin/ are directories; bin/ holds only files.
        let in_bin = parts.len() >= 2 && parts[1] == "bin";
        has_bin |= in_bin;
        match (parts.len(), in_bin, kind) {
            (1, _, Kind::Dir) | (2, true, Kind::Dir) => {}
            (1, _, _) | (2, true, _) => return Err(one_directory()),
            (3, true, Kind::File) => {
                bins.push((parts[2].clone(), stream.data(size).map_err(Bad::Unpack)?))
            }
            (_, true, _) => {
                return Err(Bad::Release(
                    "holds something other than regular files in bin/".into(),
                ));
            }
            _ => {}
        }
    }
    stream.finish().map_err(Bad::Unpack)?;
    if !has_bin {
        return Err(one_directory());
    }
    Ok(bins)
}

fn one_directory() -> Bad {
    Bad::Release("is not a cni-rs release (one directory holding bin/)".into())
}

/// A member name's components when it stays inside the tarball's
/// directory: relative, no `..`.
fn confined(name: &str) -> Option<Vec<String>> {
    if name.starts_with('/') {
        return None;
    }
    let parts: Vec<String> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    if parts.is_empty() || parts.iter().any(|p| p == "..") {
        return None;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_stay_inside() {
        assert_eq!(confined("./r/bin/x").unwrap(), ["r", "bin", "x"]);
        assert!(confined("/etc/passwd").is_none());
        assert!(confined("r/../../etc").is_none());
        assert!(confined("./").is_none());
    }

    #[test]
    fn checksum_lines() {
        let d = std::env::temp_dir().join(format!("cni-rs-sums-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let sums = d.join("SHA256SUMS");
        assert_eq!(checksum("a.tgz", &sums).unwrap(), None);
        std::fs::write(&sums, "abc  b.tgz\ndef *a.tgz\n").unwrap();
        assert_eq!(checksum("a.tgz", &sums).unwrap().as_deref(), Some("def"));
        assert!(
            checksum("c.tgz", &sums)
                .unwrap_err()
                .contains("does not list")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
