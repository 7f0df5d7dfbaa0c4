//! `cni-rs install` / `uninstall`: flags, parsed and checked before
//! anything is read or written (a bad value is exit status 2). The flags
//! are those `scripts/install.sh` had, so a DaemonSet or a runbook written
//! for it keeps working.

use std::path::PathBuf;
use std::time::Duration;

pub const INSTALL_USAGE: &str = "\
usage: cni-rs install [options]
Installs the Rust CNI plugins after the AWS VPC CNI on this node.

Where:
  --conflist FILE        conflist to patch (default /etc/cni/net.d/10-aws.conflist)
  --cni-bin-dir DIR      CNI plugin directory (default /opt/cni/bin)
  --from DIR|TARBALL     the plugins to install: a directory holding
                         `bandwidth` and `topology-label` (or their bin/), or
                         a release tarball cni-rs-<version>-linux-<arch>.tgz,
                         checked against the SHA256SUMS next to it when
                         there is one (default: the directory of this
                         cni-rs executable, or its bin/)
  --backup-dir DIR       where <conflist name>.bak-rs goes (default: the
                         conflist's directory; runtimes never load *.bak-rs)
Node settings (written into the plugin entries):
  --latency-ms N         bandwidth: tbf queue bound, 1..60000 (default 25)
  --runtime-burst MODE   bandwidth: cap|honor (default cap)
  --egress-mode MODE     bandwidth: auto|ifb|pod (default auto; pod next to
                         the VPC CNI network policy agent)
  --namespace-policy FILE
                         bandwidth: per-namespace default and max rates (a
                         JSON file the admin owns, embedded as namespacePolicy;
                         read at install time: re-run after changing it)
  --traffic-classes      bandwidth: count (and with the flags below, shape)
                         every pod's traffic per peer zone: sameZone,
                         crossZone, outside. Without --zone-cidrs-file the
                         zone, ENI subnets and VPC CIDRs come from IMDSv2
                         (EKS zero-config). Each flag below implies it.
  --zone NAME            bandwidth: this node's zone (with --zone-cidrs-file
                         when the file does not name it)
  --zone-cidrs-file PATH bandwidth: JSON {\"zone\": .., \"zoneCidrs\": {zone:
                         [CIDR..]}} written by node bootstrap
  --cross-zone-rate BITS bandwidth: cap cross-zone traffic (both directions)
                         inside each pod's limit
  --outside-rate BITS    bandwidth: cap traffic leaving the VPC likewise
  --same-zone-unshaped   bandwidth: same-zone traffic bypasses the pod limit
  --labels-file PATH     topology-label: JSON label map written at node
                         bootstrap (default /etc/cni/topology-labels.json;
                         \"\" for none)
  --imds                 topology-label: read zone/region/instance type from IMDSv2
  --alias TEMPLATE       topology-label: alias template (default: the
                         plugin's \"{namespace}/{pod} {zone}\"; \"\" disables)
  --no-topology-label    install only bandwidth-rs (removes our
                         topology-label entry if present)
Modes:
  --dry-run              print the conflist diff and what would be copied;
                         change nothing
  --watch                stay running; re-apply within seconds whenever the
                         conflist is rewritten or a binary replaced (inotify);
                         SIGTERM stops it
  --interval SECONDS     watch: the period of the safety re-check (default 5)
  --poll                 watch: poll every --interval instead of inotify
  -h, --help

Exit status: 0 done (or nothing to do), 1 refused (nothing was changed),
2 bad usage.
";

pub const UNINSTALL_USAGE: &str = "\
usage: cni-rs uninstall [options]
Removes the Rust CNI plugins from this node and restores the AWS VPC CNI chain.
  --conflist FILE     (default /etc/cni/net.d/10-aws.conflist)
  --cni-bin-dir DIR   (default /opt/cni/bin)
  --backup-dir DIR    where install kept <conflist name>.bak-rs, removed
                      here (default: the conflist's directory)
  --dry-run           print the conflist diff and what would be removed
  -h, --help
Stop the DaemonSet first, or its watcher puts everything back.
";

/// Where the node's files are.
#[derive(Debug, Clone, PartialEq)]
pub struct Paths {
    pub conflist: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub backup: PathBuf,
}

/// The trafficClasses flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassFlags {
    pub zone: Option<String>,
    pub zone_cidrs_file: Option<String>,
    pub cross_zone_rate: Option<u64>,
    pub outside_rate: Option<u64>,
    pub same_zone_unshaped: bool,
}

/// What goes into our two entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub latency_ms: u32,
    pub runtime_burst: String,
    pub egress_mode: String,
    pub namespace_policy: Option<PathBuf>,
    pub classes: Option<ClassFlags>,
    /// Empty: no labelsFile key.
    pub labels_file: String,
    pub imds: bool,
    pub alias: Option<String>,
    pub topology: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Once,
    DryRun,
    Watch { interval: Duration, poll: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstallOpts {
    pub paths: Paths,
    pub from: Option<PathBuf>,
    pub settings: Settings,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UninstallOpts {
    pub paths: Paths,
    pub dry_run: bool,
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Parsed<T> {
    Help,
    Run(T),
}

/// The flags both commands share; `Ok(false)` when `flag` is not one.
struct Common {
    conflist: PathBuf,
    cni_bin_dir: PathBuf,
    backup_dir: Option<PathBuf>,
}

impl Common {
    fn new() -> Common {
        Common {
            conflist: "/etc/cni/net.d/10-aws.conflist".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            backup_dir: None,
        }
    }

    fn take(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--conflist" => self.conflist = value()?.into(),
            "--cni-bin-dir" => self.cni_bin_dir = value()?.into(),
            "--backup-dir" => self.backup_dir = Some(value()?.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn paths(self) -> Paths {
        let dir = self
            .backup_dir
            .unwrap_or_else(|| match self.conflist.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            });
        let name = self
            .conflist
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Paths {
            backup: dir.join(format!("{name}.bak-rs")),
            conflist: self.conflist,
            cni_bin_dir: self.cni_bin_dir,
        }
    }
}

/// A value-taking flag's value, or the usage error.
fn next_value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
    it.next()
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}

pub fn parse_uninstall(args: &[String]) -> Result<Parsed<UninstallOpts>, String> {
    let mut common = Common::new();
    let mut dry_run = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.as_str();
        if common.take(flag, &mut || next_value(&mut it, flag))? {
            continue;
        }
        match flag {
            "--dry-run" => dry_run = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Parsed::Run(UninstallOpts {
        paths: common.paths(),
        dry_run,
    }))
}

/// The install flags as given, before their values are judged.
#[derive(Default)]
struct Raw {
    from: Option<PathBuf>,
    latency: Option<String>,
    runtime_burst: Option<String>,
    egress_mode: Option<String>,
    namespace_policy: Option<PathBuf>,
    traffic_classes: bool,
    zone: Option<String>,
    zone_cidrs_file: Option<String>,
    cross: Option<String>,
    outside: Option<String>,
    same_zone_unshaped: bool,
    labels_file: Option<String>,
    imds: bool,
    alias: Option<String>,
    no_topology: bool,
    dry_run: bool,
    watch: bool,
    poll: bool,
    interval: Option<String>,
}

impl Raw {
    /// One flag; `Ok(false)` when it is not an install flag.
    fn take(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        // Each class flag implies --traffic-classes.
        if matches!(
            flag,
            "--traffic-classes"
                | "--zone"
                | "--zone-cidrs-file"
                | "--cross-zone-rate"
                | "--outside-rate"
                | "--same-zone-unshaped"
        ) {
            self.traffic_classes = true;
        }
        match flag {
            "--from" => self.from = Some(value()?.into()),
            "--latency-ms" => self.latency = Some(value()?),
            "--runtime-burst" => self.runtime_burst = Some(value()?),
            "--egress-mode" => self.egress_mode = Some(value()?),
            "--namespace-policy" => self.namespace_policy = Some(value()?.into()),
            "--traffic-classes" => {}
            "--zone" => self.zone = Some(value()?),
            "--zone-cidrs-file" => self.zone_cidrs_file = Some(value()?),
            "--cross-zone-rate" => self.cross = Some(value()?),
            "--outside-rate" => self.outside = Some(value()?),
            "--same-zone-unshaped" => self.same_zone_unshaped = true,
            "--labels-file" => self.labels_file = Some(value()?),
            "--imds" => self.imds = true,
            "--alias" => self.alias = Some(value()?),
            "--no-topology-label" => self.no_topology = true,
            "--dry-run" => self.dry_run = true,
            "--watch" => self.watch = true,
            "--poll" => self.poll = true,
            "--interval" => self.interval = Some(value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

pub fn parse_install(args: &[String]) -> Result<Parsed<InstallOpts>, String> {
    let mut common = Common::new();
    let mut raw = Raw::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.as_str();
        if common.take(flag, &mut || next_value(&mut it, flag))? {
            continue;
        }
        if raw.take(flag, &mut || next_value(&mut it, flag))? {
            continue;
        }
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let mode = mode(&raw)?;
    let settings = settings(&raw)?;
    Ok(Parsed::Run(InstallOpts {
        paths: common.paths(),
        from: raw.from,
        settings,
        mode,
    }))
}

fn mode(raw: &Raw) -> Result<Mode, String> {
    let interval = match &raw.interval {
        None => Duration::from_secs(5),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("--interval must be a positive number of seconds, got '{v}'"))?,
    };
    match (raw.dry_run, raw.watch) {
        (true, true) => Err("--dry-run and --watch exclude each other".into()),
        (true, false) => Ok(Mode::DryRun),
        (false, true) => Ok(Mode::Watch {
            interval,
            poll: raw.poll,
        }),
        (false, false) => Ok(Mode::Once),
    }
}

/// Digits only, as the conflist holds integers: `1..=60000` and so on.
fn digits(v: &str, max_len: usize) -> Option<u64> {
    let ok = !v.is_empty() && v.len() <= max_len && !v.starts_with('0');
    if ok && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    }
}

fn one_of(
    flag: &str,
    v: Option<&String>,
    default: &str,
    allowed: &[&str],
) -> Result<String, String> {
    let v = v.map(String::as_str).unwrap_or(default);
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{flag} must be {}, got '{v}'",
            allowed.join(" or ")
        ))
    }
}

fn settings(raw: &Raw) -> Result<Settings, String> {
    let latency_ms = match &raw.latency {
        None => 25,
        Some(v) => digits(v, 5)
            .filter(|n| *n <= 60_000)
            .map(|n| n as u32)
            .ok_or_else(|| format!("--latency-ms must be an integer 1..60000, got '{v}'"))?,
    };
    Ok(Settings {
        latency_ms,
        runtime_burst: one_of(
            "--runtime-burst",
            raw.runtime_burst.as_ref(),
            "cap",
            &["cap", "honor"],
        )?,
        egress_mode: one_of(
            "--egress-mode",
            raw.egress_mode.as_ref(),
            "auto",
            &["auto", "ifb", "pod"],
        )?,
        namespace_policy: raw.namespace_policy.clone(),
        classes: if raw.traffic_classes {
            Some(classes(raw)?)
        } else {
            None
        },
        labels_file: raw
            .labels_file
            .clone()
            .unwrap_or_else(|| "/etc/cni/topology-labels.json".into()),
        imds: raw.imds,
        alias: raw.alias.clone(),
        topology: !raw.no_topology,
    })
}

fn classes(raw: &Raw) -> Result<ClassFlags, String> {
    let rate = |v: &Option<String>| -> Result<Option<u64>, String> {
        v.as_ref()
            .map(|r| {
                digits(r, 18).ok_or_else(|| {
                    format!("a zone rate must be bits per second (digits), got '{r}'")
                })
            })
            .transpose()
    };
    if let Some(f) = &raw.zone_cidrs_file
        && !f.starts_with('/')
    {
        return Err("--zone-cidrs-file must be an absolute path".into());
    }
    if raw.zone.is_some() && raw.zone_cidrs_file.is_none() {
        return Err("--zone needs --zone-cidrs-file (without both, IMDS answers)".into());
    }
    Ok(ClassFlags {
        zone: raw.zone.clone(),
        zone_cidrs_file: raw.zone_cidrs_file.clone(),
        cross_zone_rate: rate(&raw.cross)?,
        outside_rate: rate(&raw.outside)?,
        same_zone_unshaped: raw.same_zone_unshaped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn install(s: &str) -> InstallOpts {
        match parse_install(&args(s)).unwrap() {
            Parsed::Run(o) => o,
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let o = install("");
        assert_eq!(
            o.paths.conflist,
            PathBuf::from("/etc/cni/net.d/10-aws.conflist")
        );
        assert_eq!(
            o.paths.backup,
            PathBuf::from("/etc/cni/net.d/10-aws.conflist.bak-rs")
        );
        assert_eq!(o.settings.latency_ms, 25);
        assert_eq!(o.mode, Mode::Once);
        assert!(o.settings.topology && o.settings.classes.is_none());
        let o = install(
            "--conflist /x/c.conflist --backup-dir /b --watch --interval 0.5 --poll --zone a --zone-cidrs-file /z.json",
        );
        assert_eq!(o.paths.backup, PathBuf::from("/b/c.conflist.bak-rs"));
        assert_eq!(
            o.mode,
            Mode::Watch {
                interval: Duration::from_millis(500),
                poll: true
            }
        );
        assert_eq!(o.settings.classes.unwrap().zone.as_deref(), Some("a"));
        assert_eq!(
            parse_install(&args("x --help")).err(),
            Some("unknown option x".into())
        );
        assert_eq!(parse_install(&args("--help")).unwrap(), Parsed::Help);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            "--latency-ms 0",
            "--latency-ms 60001",
            "--latency-ms 025",
            "--latency-ms x",
            "--runtime-burst sometimes",
            "--egress-mode host",
            "--interval 0",
            "--interval nan",
            "--dry-run --watch",
            "--cross-zone-rate 20M",
            "--zone-cidrs-file rel.json",
            "--zone a",
            "--conflist",
            "--bogus",
        ] {
            assert!(parse_install(&args(bad)).is_err(), "{bad}");
        }
        assert!(parse_uninstall(&args("--from x")).is_err());
        assert!(parse_uninstall(&args("--dry-run --cni-bin-dir /b")).is_ok());
    }
}
