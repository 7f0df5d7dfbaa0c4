//! EC2 instance metadata (IMDSv2): token PUT, then the placement values
//! (and, when a caller needs them, the node's network: its ENIs' subnet
//! CIDRs and the VPC's CIDR blocks), with an on-disk cache so only the
//! first pod on a node pays, whichever plugin it runs first.
//!
//! Order: a fresh cache (younger than the TTL) answers without a request;
//! otherwise IMDS is asked within one overall deadline; when that fails, a
//! stale cache still answers (with a warning), and only then is it an error.
//! A failure is remembered next to the cache (`<cacheFile>.failed`) for
//! `failureBackoffSeconds`, so on a node where IMDS is unreachable only one
//! pod waits out the timeout, not every pod.

use crate::{INSTANCE_TYPE, ImdsConf, Labels, REGION, ZONE, ZONE_ID, check_label};
use anyhow::{Context as _, anyhow, bail};
use cni_types::fsutil::{Durability, write_atomic};
use cni_types::{log_debug, log_warn};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// The token is used for a handful of requests right away.
const TOKEN_TTL_SECONDS: &str = "60";
const MAX_BODY: u64 = 4096;
const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// (metadata path, label, must be present). Zone-id is missing in some
/// partitions, so a 404 there is tolerated.
const ITEMS: &[(&str, &str, bool)] = &[
    ("placement/availability-zone", ZONE, true),
    ("placement/availability-zone-id", ZONE_ID, false),
    ("placement/region", REGION, false),
    ("instance-type", INSTANCE_TYPE, false),
];

/// Most ENIs read from IMDS: the largest instances have 15 network cards'
/// worth; anything beyond is not a real answer.
const MAX_ENIS: usize = 32;

/// The node's network as IMDS describes it, for zone classes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFacts {
    /// Unix seconds.
    pub fetched_at: u64,
    /// The subnets of the node's ENIs (IPv4 and IPv6): in this zone.
    pub subnet_cidrs: Vec<String>,
    /// The VPC's CIDR blocks (IPv4 and IPv6): the whole VPC, other zones too.
    pub vpc_cidrs: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cache {
    /// Unix seconds.
    fetched_at: u64,
    labels: Labels,
    /// Present once a caller asked for the network (older caches lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<NetworkFacts>,
}

/// What the caller needs from IMDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Labels,
    LabelsAndNetwork,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads one of our small files (the cache, the failure record), at most
/// `MAX_CACHE_BYTES`: never through a symlink, and only a regular file, so a
/// FIFO or a device there cannot block or feed the plugin. `None` when
/// missing, refused or unreadable.
fn read_small_file(path: &Path) -> Option<String> {
    match cni_types::fsutil::read_bounded(path, MAX_CACHE_BYTES) {
        Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
        Ok(None) => None,
        Err(e) => {
            log_warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

fn read_cache(path: &Path) -> Option<Cache> {
    let text = read_small_file(path)?;
    match serde_json::from_str::<Cache>(&text) {
        Ok(c) if c.labels.iter().all(|(k, v)| check_label(k, v).is_ok()) => Some(c),
        Ok(_) | Err(_) => {
            log_warn!("ignoring unreadable IMDS cache {}", path.display());
            None
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    /// Unix seconds.
    failed_at: u64,
    error: String,
}

fn failure_file(conf: &ImdsConf) -> std::path::PathBuf {
    let mut name = conf.cache_file.clone().into_os_string();
    name.push(".failed");
    name.into()
}

/// A failure recent enough that asking again would only wait out the timeout.
fn recent_failure(conf: &ImdsConf, now: u64) -> Option<Failure> {
    if conf.failure_backoff.is_zero() {
        return None;
    }
    let text = read_small_file(&failure_file(conf))?;
    let failure: Failure = serde_json::from_str(&text).ok()?;
    let age = now.checked_sub(failure.failed_at)?;
    (age < conf.failure_backoff.as_secs()).then_some(failure)
}

/// The IMDS labels: cache when fresh, IMDS otherwise, stale cache on failure.
pub fn labels(conf: &ImdsConf) -> anyhow::Result<Labels> {
    cached(conf, Need::Labels).map(|(l, _)| l)
}

/// The labels and the node's network (ENI subnets, VPC CIDR blocks), by
/// the same rules: what `bandwidth`'s zone classes use when the operator
/// gave no zone CIDRs.
pub fn labels_and_network(conf: &ImdsConf) -> anyhow::Result<(Labels, NetworkFacts)> {
    let (labels, network) = cached(conf, Need::LabelsAndNetwork)?;
    let network = network.ok_or_else(|| anyhow!("IMDS gave no network facts"))?;
    Ok((labels, network))
}

fn fresh(fetched_at: u64, now: u64, ttl: Duration) -> bool {
    // A timestamp from the future (clock stepped back) is not trusted as fresh.
    fetched_at <= now + 60 && now.saturating_sub(fetched_at) < ttl.as_secs()
}

fn cached(conf: &ImdsConf, need: Need) -> anyhow::Result<(Labels, Option<NetworkFacts>)> {
    let cached = read_cache(&conf.cache_file);
    let now = now_secs();
    if let Some(c) = &cached {
        let network_ok = need == Need::Labels
            || c.network
                .as_ref()
                .is_some_and(|n| fresh(n.fetched_at, now, conf.cache_ttl));
        if fresh(c.fetched_at, now, conf.cache_ttl) && network_ok {
            log_debug!("IMDS cache hit ({}s old)", now.saturating_sub(c.fetched_at));
            return Ok((c.labels.clone(), c.network.clone()));
        }
    }
    let fetched = match recent_failure(conf, now) {
        Some(f) => Err(anyhow!(
            "IMDS failed {}s ago ({}); not asking again for {}s",
            now.saturating_sub(f.failed_at),
            f.error,
            conf.failure_backoff.as_secs()
        )),
        None => fetch_what(conf, need, now).inspect_err(|e| {
            let failure = Failure {
                failed_at: now,
                error: format!("{e:#}"),
            };
            let bytes = serde_json::to_vec(&failure).unwrap_or_default();
            if let Err(we) = write_atomic(&failure_file(conf), &bytes, Durability::PowerLoss) {
                log_warn!("cannot record the IMDS failure: {we:#}");
            }
        }),
    };
    match fetched {
        Ok((labels, network)) => {
            let _ = std::fs::remove_file(failure_file(conf));
            // Keep what the other kind of caller fetched (a label-only
            // refresh must not drop the network facts).
            let network = network.or_else(|| cached.and_then(|c| c.network));
            let cache = Cache {
                fetched_at: now,
                labels: labels.clone(),
                network: network.clone(),
            };
            let bytes = serde_json::to_vec(&cache).unwrap_or_default();
            if let Err(e) = write_atomic(&conf.cache_file, &bytes, Durability::PowerLoss) {
                log_warn!(
                    "cannot write IMDS cache {}: {e:#}",
                    conf.cache_file.display()
                );
            }
            Ok((labels, network))
        }
        Err(e) => match cached {
            Some(c) if need == Need::Labels || c.network.is_some() => {
                log_warn!("IMDS failed ({e:#}); using a stale cache");
                Ok((c.labels, c.network))
            }
            _ => Err(e),
        },
    }
}

fn fetch_what(
    conf: &ImdsConf,
    need: Need,
    now: u64,
) -> anyhow::Result<(Labels, Option<NetworkFacts>)> {
    let mut session = Session::open(conf)?;
    let labels = session.labels()?;
    let network = match need {
        Need::Labels => None,
        Need::LabelsAndNetwork => Some(session.network(now)?),
    };
    Ok((labels, network))
}

/// Asks IMDS for the labels, within one overall deadline.
pub fn fetch(conf: &ImdsConf) -> anyhow::Result<Labels> {
    Session::open(conf)?.labels()
}

/// One token and one overall deadline for a handful of GETs.
struct Session<'a> {
    conf: &'a ImdsConf,
    agent: ureq::Agent,
    token: String,
    deadline: Instant,
}

impl<'a> Session<'a> {
    fn open(conf: &'a ImdsConf) -> anyhow::Result<Session<'a>> {
        let deadline = Instant::now() + conf.timeout;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // IMDS is link-local: a proxy from the environment must not be used.
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(true)
            .timeout_global(Some(conf.timeout))
            .build()
            .into();
        let mut s = Session {
            conf,
            agent,
            token: String::new(),
            deadline,
        };
        let url = format!("{}{TOKEN_PATH}", conf.endpoint);
        let mut resp = s
            .agent
            .put(&url)
            .config()
            .timeout_global(Some(s.remaining()?))
            .build()
            .header(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)
            .send_empty()
            .with_context(|| format!("IMDS token request PUT {url}"))?;
        // Redirects are not followed and come back as `Ok`: only a 200 answers.
        if resp.status() != 200 {
            bail!(
                "IMDS token request PUT {url}: unexpected status {}",
                resp.status().as_u16()
            );
        }
        let token = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .context("reading the IMDS token")?;
        let token = token.trim().to_string();
        if token.is_empty() || token.chars().any(|c| c.is_control()) {
            bail!("IMDS returned an unusable token");
        }
        s.token = token;
        Ok(s)
    }

    fn remaining(&self) -> anyhow::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "IMDS timeout of {} ms exceeded",
                self.conf.timeout.as_millis()
            );
        }
        Ok(left)
    }

    /// One metadata value; `None` on a 404 when it is optional.
    fn get(&mut self, path: &str, must: bool) -> anyhow::Result<Option<String>> {
        let url = format!("{}/latest/meta-data/{path}", self.conf.endpoint);
        let res = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(self.remaining()?))
            .build()
            .header(TOKEN_HEADER, &self.token)
            .call();
        let mut resp = match res {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => bail!("IMDS GET {url}: unexpected status {}", r.status().as_u16()),
            Err(ureq::Error::StatusCode(404)) if !must => return Ok(None),
            Err(e) => return Err(anyhow!(e)).with_context(|| format!("IMDS GET {url}")),
        };
        let value = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .with_context(|| format!("reading IMDS {path}"))?;
        Ok(Some(value.trim().to_string()))
    }

    fn labels(&mut self) -> anyhow::Result<Labels> {
        let mut labels = Labels::new();
        for (path, label, must) in ITEMS {
            let Some(value) = self.get(path, *must)? else {
                continue;
            };
            check_label(label, &value).with_context(|| format!("IMDS {path}"))?;
            labels.insert(label.to_string(), value);
        }
        Ok(labels)
    }

    /// The ENIs' subnets (this zone) and the VPC's CIDR blocks.
    fn network(&mut self, now: u64) -> anyhow::Result<NetworkFacts> {
        let macs = self
            .get("network/interfaces/macs/", true)?
            .unwrap_or_default();
        let macs: Vec<String> = macs
            .lines()
            .map(|l| l.trim().trim_end_matches('/').to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if macs.is_empty() || macs.len() > MAX_ENIS {
            bail!("IMDS listed {} network interfaces", macs.len());
        }
        let mut facts = NetworkFacts {
            fetched_at: now,
            ..Default::default()
        };
        for mac in &macs {
            if !mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                bail!("IMDS listed a malformed interface {mac:?}");
            }
            let base = format!("network/interfaces/macs/{mac}");
            for (item, must, into_subnets) in [
                ("subnet-ipv4-cidr-block", true, true),
                ("subnet-ipv6-cidr-blocks", false, true),
                ("vpc-ipv4-cidr-blocks", true, false),
                ("vpc-ipv6-cidr-blocks", false, false),
            ] {
                let Some(v) = self.get(&format!("{base}/{item}"), must)? else {
                    continue;
                };
                for cidr in v.lines().map(str::trim).filter(|c| !c.is_empty()) {
                    if !cidr
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/'))
                    {
                        bail!("IMDS {base}/{item}: {cidr:?} is not a CIDR");
                    }
                    let list = if into_subnets {
                        &mut facts.subnet_cidrs
                    } else {
                        &mut facts.vpc_cidrs
                    };
                    if !list.iter().any(|c| c == cidr) {
                        list.push(cidr.to_string());
                    }
                }
            }
        }
        Ok(facts)
    }
}
