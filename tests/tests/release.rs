//! The release as it ships (`scripts/release.sh`): static executables of
//! the right architecture, tarballs laid out as the installer and the image
//! expect, checksums that verify, no machine paths inside, the same bytes
//! when built again from another checkout path and another target dir, and
//! `install.sh --from` a tarball (checked against SHA256SUMS) on a
//! simulated node.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const ARCHES: [(&str, &str); 2] = [("amd64", "x86-64"), ("arm64", "ARM aarch64")];
const SHIPPED: [&str; 3] = ["bandwidth", "topology-label", "cni-rs"];

fn version() -> String {
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let ws = &cargo[cargo
        .find("[workspace.package]")
        .expect("[workspace.package]")..];
    let line = ws.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.trim_start_matches("version = ")
        .trim_matches('"')
        .to_string()
}

fn commit_time() -> String {
    sh(&[
        "git",
        "-C",
        &repo_root().display().to_string(),
        "log",
        "-1",
        "--format=%ct",
    ])
    .expect("git log")
    .trim()
    .to_string()
}

fn run_release(root: &Path, out: &Path, target_dir: Option<&Path>) {
    let mut cmd = Command::new(root.join("scripts/release.sh"));
    cmd.arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", commit_time());
    match target_dir {
        Some(t) => cmd.env("CARGO_TARGET_DIR", t),
        None => cmd.env_remove("CARGO_TARGET_DIR"),
    };
    let status = cmd.stdin(Stdio::null()).status().expect("run release.sh");
    assert!(
        status.success(),
        "{} failed",
        root.join("scripts/release.sh").display()
    );
}

/// The repository's `dist/`, built once per test run (scripts/test.sh has
/// already built it, so this is a no-op build plus packing).
fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let _serial = serial();
        let out = repo_root().join("dist");
        run_release(&repo_root(), &out, None);
        out
    })
}

fn tarball(arch: &str) -> PathBuf {
    dist().join(format!("cni-rs-{}-linux-{arch}.tgz", version()))
}

#[test]
fn binaries_are_static_of_the_right_architecture_without_machine_paths() {
    let root = repo_root().display().to_string();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
    for (arch, elf) in ARCHES {
        for b in SHIPPED {
            let path = dist().join(format!("linux-{arch}/bin/{b}"));
            let desc = sh(&["file", "-b", &path.display().to_string()]).unwrap();
            assert!(desc.contains(elf), "{arch}/{b}: {desc}");
            assert!(
                desc.contains("statically linked") || desc.contains("static-pie linked"),
                "{arch}/{b}: {desc}"
            );
            let bytes = std::fs::read(&path).unwrap();
            for leak in [root.as_str(), cargo_home.as_str(), rustup_home.as_str()] {
                assert!(
                    !bytes.windows(leak.len()).any(|w| w == leak.as_bytes()),
                    "{arch}/{b} names {leak}"
                );
            }
        }
    }
}

#[test]
fn tarballs_hold_one_release_directory_with_fixed_metadata() {
    let epoch: i64 = commit_time().parse().unwrap();
    let sums = Command::new("sha256sum")
        .args(["--quiet", "-c", "SHA256SUMS"])
        .current_dir(dist())
        .status()
        .unwrap();
    assert!(sums.success(), "sha256sum -c SHA256SUMS failed in dist/");
    for (arch, _) in ARCHES {
        let top = format!("cni-rs-{}-linux-{arch}/", version());
        let listing = sh(&[
            "tar",
            "--utc",
            "--full-time",
            "-tvzf",
            &tarball(arch).display().to_string(),
        ])
        .unwrap();
        let mut names = Vec::new();
        for line in listing.lines() {
            // mode owner/group size date time name
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[1], "0/0", "{line}");
            let when = sh(&["date", "-u", "-d", &format!("{} {}", f[3], f[4]), "+%s"]).unwrap();
            assert_eq!(when.trim().parse::<i64>().unwrap(), epoch, "{line}");
            let name = f[5].to_string();
            assert!(name.starts_with(&top), "{name} outside {top}");
            let mode = f[0];
            let want = if name.ends_with('/') {
                "drwxr-xr-x"
            } else if name.contains("/bin/") || name.ends_with(".sh") {
                "-rwxr-xr-x"
            } else {
                "-rw-r--r--"
            };
            assert_eq!(mode, want, "{line}");
            names.push(name[top.len()..].to_string());
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries in name order");
        // What install.sh (bin/cni-rs next to itself) and the image need.
        for want in [
            "bin/bandwidth",
            "bin/topology-label",
            "bin/cni-rs",
            "install.sh",
            "uninstall.sh",
            "README.md",
            "docs/install.md",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{arch}: no {want} in {names:?}"
            );
            // dist/linux-<arch>/ (what deploy/Dockerfile copies) is the same.
            assert!(
                dist().join(format!("linux-{arch}/{want}")).is_file(),
                "dist/linux-{arch}/{want}"
            );
        }
    }
}

#[test]
fn rebuilt_from_another_path_is_byte_identical() {
    let first = dist();
    // Two cold builds of both architectures: alone, not next to the other
    // tests of this file.
    let _serial = serial();
    // The checkout's files (tracked and new, as they are now) at another
    // path, built in another target dir.
    let copy = TempDir::new("cnirsrc");
    let files = sh(&[
        "git",
        "-C",
        &repo_root().display().to_string(),
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ])
    .unwrap();
    for f in files.split('\0').filter(|f| !f.is_empty()) {
        let src = repo_root().join(f);
        if !src.is_file() {
            continue; // deleted in the working tree
        }
        let dst = copy.path.join(f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
    }
    let target = TempDir::new("cnirtgt");
    let out = copy.path.join("dist");
    run_release(&copy.path, &out, Some(&target.path));
    for (arch, _) in ARCHES {
        let name = format!("cni-rs-{}-linux-{arch}.tgz", version());
        let a = std::fs::read(first.join(&name)).unwrap();
        let b = std::fs::read(out.join(&name)).unwrap();
        if a != b {
            let diff = Command::new("diff")
                .args(["-r", "-q"])
                .arg(first.join(format!("linux-{arch}")))
                .arg(out.join(format!("linux-{arch}")))
                .output()
                .unwrap();
            panic!(
                "{name} differs between two builds:\n{}",
                String::from_utf8_lossy(&diff.stdout)
            );
        }
    }
    assert_eq!(
        std::fs::read(first.join("SHA256SUMS")).unwrap(),
        std::fs::read(out.join("SHA256SUMS")).unwrap()
    );
}

/// A node's CNI dirs in a temp dir, and the installer run against them.
struct Node {
    _dir: TempDir,
    conf: PathBuf,
    bin: PathBuf,
}

impl Node {
    fn new() -> Node {
        require_root();
        let dir = TempDir::new("cnirn");
        let net = dir.path.join("net.d");
        let bin = dir.path.join("bin");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let conf = net.join("10-aws.conflist");
        std::fs::copy(repo_root().join("conflist-examples/10-aws.conflist"), &conf).unwrap();
        Node {
            _dir: dir,
            conf,
            bin,
        }
    }

    /// `cni_rs install --from FROM` (a release's own cni-rs).
    fn install(&self, cni_rs: &Path, from: &Path) -> Outcome {
        let out = Command::new(cni_rs)
            .arg("install")
            .arg("--from")
            .arg(from)
            .arg("--cni-bin-dir")
            .arg(&self.bin)
            .arg("--conflist")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Outcome::from(out)
    }

    fn installed(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// docs/install.md's "Install from a release": the downloaded tarball, checked
/// against SHA256SUMS, installed by the release's `cni-rs install` (which
/// takes the tarball or its unpacked dir) and by the tarball's install.sh.
#[test]
fn install_from_a_release_tarball() {
    let host_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let downloads = TempDir::new("cnirdl");
    let tgz = downloads.path.join(tarball(host_arch).file_name().unwrap());
    std::fs::copy(tarball(host_arch), &tgz).unwrap();
    std::fs::copy(dist().join("SHA256SUMS"), downloads.path.join("SHA256SUMS")).unwrap();
    let shipped = dist().join(format!("linux-{host_arch}/bin/bandwidth"));

    let installer = dist().join(format!("linux-{host_arch}/bin/cni-rs"));
    let node = Node::new();
    let out = node.install(&installer, &tgz);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("matches"),
        "checksum verified: {}",
        out.stderr
    );
    assert_eq!(node.installed(), ["bandwidth-rs", "topology-label"]);
    assert_eq!(
        std::fs::read(node.bin.join("bandwidth-rs")).unwrap(),
        std::fs::read(&shipped).unwrap()
    );
    let conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&node.conf).unwrap()).unwrap();
    assert!(conf.to_string().contains("bandwidth-rs"));

    // The installer inside the unpacked tarball finds bin/ next to itself.
    let unpacked = TempDir::new("cnirunp");
    sh(&[
        "tar",
        "-xzf",
        &tgz.display().to_string(),
        "-C",
        &unpacked.str(),
    ])
    .unwrap();
    let top = unpacked
        .path
        .join(format!("cni-rs-{}-linux-{host_arch}", version()));
    let node2 = Node::new();
    let out = Command::new(top.join("install.sh"))
        .arg("--cni-bin-dir")
        .arg(&node2.bin)
        .arg("--conflist")
        .arg(&node2.conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node2.installed(), ["bandwidth-rs", "topology-label"]);

    // An unpacked dist directory works as --from too.
    let node3 = Node::new();
    let out = node3.install(&installer, &dist().join(format!("linux-{host_arch}")));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(node3.installed(), ["bandwidth-rs", "topology-label"]);
}

#[test]
fn install_refuses_a_bad_release_and_changes_nothing() {
    let host_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let other_arch = if host_arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let script = dist().join(format!("linux-{host_arch}/bin/cni-rs"));
    let downloads = TempDir::new("cnirbad");
    let tgz = downloads.path.join(tarball(host_arch).file_name().unwrap());
    std::fs::copy(tarball(host_arch), &tgz).unwrap();
    let sums = downloads.path.join("SHA256SUMS");
    let refused = |from: &Path, why: &str| {
        let node = Node::new();
        let conf_before = std::fs::read(&node.conf).unwrap();
        let out = node.install(&script, from);
        assert_eq!(out.status, 1, "{why}: {}", out.stderr);
        assert!(out.stderr.contains("refusing"), "{why}: {}", out.stderr);
        assert!(
            node.installed().is_empty(),
            "{why}: installed {:?}",
            node.installed()
        );
        assert_eq!(
            std::fs::read(&node.conf).unwrap(),
            conf_before,
            "{why}: conflist changed"
        );
        out.stderr
    };
    // A checksum that does not match (a corrupt or replaced download).
    std::fs::write(
        &sums,
        format!(
            "{}  {}\n",
            "0".repeat(64),
            tgz.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    let err = refused(&tgz, "wrong checksum");
    assert!(err.contains("does not match its checksum"), "{err}");
    // SHA256SUMS present but silent about this tarball.
    std::fs::write(&sums, "").unwrap();
    let err = refused(&tgz, "unlisted");
    assert!(err.contains("does not list"), "{err}");
    std::fs::remove_file(&sums).unwrap();
    // Not a tarball at all.
    let junk = downloads.path.join("junk.tgz");
    std::fs::write(&junk, b"not gzip").unwrap();
    let err = refused(&junk, "junk");
    assert!(err.contains("cannot unpack"), "{err}");
    // An empty tarball is not a release.
    let empty = downloads.path.join("empty.tgz");
    sh(&[
        "tar",
        "-czf",
        &empty.display().to_string(),
        "-T",
        "/dev/null",
    ])
    .unwrap();
    let err = refused(&empty, "empty");
    assert!(err.contains("not a cni-rs release"), "{err}");
    // The other architecture's release is refused by its ELF headers
    // (the installer never runs a plugin, so binfmt_misc changes nothing).
    let err = refused(&tarball(other_arch), "other architecture");
    assert!(err.contains("does not run on this machine"), "{err}");
}
