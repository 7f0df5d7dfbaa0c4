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
//!
//! An answer is checked whole before it is cached ([`NetworkFacts::validate`]):
//! one that fails is a failed fetch (backoff, then the caller's "try again
//! later"), never a cached fact; a cache whose network no longer passes
//! (written by an older version) counts as absent and is fetched again.

use crate::http::{Request, Response};
use crate::{
    Cidr, INSTANCE_TYPE, ImdsConf, Invalid, Labels, MAX_PEER_CIDRS, REGION, ZONE, ZONE_ID,
    check_label, check_zone_prefix,
};
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
const MAX_BODY: usize = 4096;
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
    pub subnet_cidrs: Vec<Cidr>,
    /// The VPC's CIDR blocks (IPv4 and IPv6): the whole VPC, other zones too.
    pub vpc_cidrs: Vec<Cidr>,
}

impl NetworkFacts {
    /// The whole answer as zone facts: at least one subnet and one VPC
    /// block, none too wide, and no more CIDRs in all than one attachment
    /// may classify by ([`MAX_PEER_CIDRS`]), so a cached answer is one the
    /// plugins can always use.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.subnet_cidrs.is_empty() || self.vpc_cidrs.is_empty() {
            return Err(Invalid(format!(
                "{} subnet and {} VPC CIDRs; at least one of each",
                self.subnet_cidrs.len(),
                self.vpc_cidrs.len()
            )));
        }
        let n = self.subnet_cidrs.len() + self.vpc_cidrs.len();
        if n > MAX_PEER_CIDRS {
            return Err(Invalid(format!(
                "{n} subnet and VPC CIDRs; at most {MAX_PEER_CIDRS}"
            )));
        }
        self.subnet_cidrs
            .iter()
            .chain(&self.vpc_cidrs)
            .try_for_each(|c| check_zone_prefix(c.addr, c.prefix))
    }
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

/// The cache as read: its network is checked apart from the labels.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCache {
    fetched_at: u64,
    labels: Labels,
    #[serde(default)]
    network: Option<serde_json::Value>,
}

/// The cache, when readable. Network facts that do not validate (an older
/// version cached them unchecked) are dropped, so they are fetched again
/// rather than failing every pod until the TTL runs out; the labels stay.
fn read_cache(path: &Path) -> Option<Cache> {
    let text = read_small_file(path)?;
    let stored = match serde_json::from_str::<StoredCache>(&text) {
        Ok(c) if c.labels.iter().all(|(k, v)| check_label(k, v).is_ok()) => c,
        Ok(_) | Err(_) => {
            log_warn!("ignoring unreadable IMDS cache {}", path.display());
            return None;
        }
    };
    let network = stored.network.filter(|v| !v.is_null()).and_then(|v| {
        let checked = serde_json::from_value::<NetworkFacts>(v)
            .map_err(|e| e.to_string())
            .and_then(|n| n.validate().map(|()| n).map_err(|e| e.0));
        checked
            .inspect_err(|e| {
                log_warn!(
                    "ignoring the network facts in IMDS cache {} ({e}); asking IMDS again",
                    path.display()
                )
            })
            .ok()
    });
    Some(Cache {
        fetched_at: stored.fetched_at,
        labels: stored.labels,
        network,
    })
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
    /// `host[:port]` of the endpoint (validated by [`ImdsConf::parse`]).
    host: &'a str,
    token: String,
    deadline: Instant,
}

impl<'a> Session<'a> {
    fn open(conf: &'a ImdsConf) -> anyhow::Result<Session<'a>> {
        let host = conf
            .endpoint
            .strip_prefix("http://")
            .context("the IMDS endpoint is not an http:// URL")?;
        let mut s = Session {
            conf,
            host,
            token: String::new(),
            deadline: Instant::now() + conf.timeout,
        };
        let what = || format!("IMDS token request PUT {}{TOKEN_PATH}", conf.endpoint);
        let resp = s
            .send("PUT", TOKEN_PATH, (TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS))
            .with_context(what)?;
        // Redirects are not followed: only a 200 answers.
        if resp.status != 200 {
            bail!("{}: unexpected status {}", what(), resp.status);
        }
        let token = String::from_utf8(resp.body).context("the IMDS token is not UTF-8")?;
        let token = token.trim().to_string();
        if token.is_empty() || token.chars().any(|c| c.is_control()) {
            bail!("IMDS returned an unusable token");
        }
        s.token = token;
        Ok(s)
    }

    /// One request with one header, within the session's deadline.
    fn send(&self, method: &str, path: &str, header: (&str, &str)) -> anyhow::Result<Response> {
        if self.deadline <= Instant::now() {
            bail!(
                "IMDS timeout of {} ms exceeded",
                self.conf.timeout.as_millis()
            );
        }
        let req = Request {
            method,
            host: self.host,
            path,
            headers: &[header],
        };
        crate::http::send(&req, self.deadline, MAX_BODY).map_err(|e| {
            e.context(format!(
                "within the IMDS timeout of {} ms",
                self.conf.timeout.as_millis()
            ))
        })
    }

    /// One metadata value; `None` on a 404 when it is optional.
    fn get(&mut self, path: &str, must: bool) -> anyhow::Result<Option<String>> {
        let full = format!("/latest/meta-data/{path}");
        let url = format!("{}{full}", self.conf.endpoint);
        let resp = self
            .send("GET", &full, (TOKEN_HEADER, &self.token))
            .with_context(|| format!("IMDS GET {url}"))?;
        match resp.status {
            200 => {}
            404 if !must => return Ok(None),
            status => bail!("IMDS GET {url}: unexpected status {status}"),
        }
        let value = String::from_utf8(resp.body)
            .map_err(|_| anyhow!("IMDS {path}: the answer is not UTF-8"))?;
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

    /// The ENIs' subnets (this zone) and the VPC's CIDR blocks, checked
    /// whole ([`NetworkFacts::validate`]): an answer that fails is an error,
    /// so it is never cached.
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
                let path = format!("{base}/{item}");
                let list = if into_subnets {
                    &mut facts.subnet_cidrs
                } else {
                    &mut facts.vpc_cidrs
                };
                for cidr in cidrs_in(self.get(&path, must)?.as_deref(), &path)? {
                    if !list.contains(&cidr) {
                        list.push(cidr);
                    }
                }
                // Bounded as we go: a huge answer stops here, not at the end.
                let n = facts.subnet_cidrs.len() + facts.vpc_cidrs.len();
                if n > MAX_PEER_CIDRS {
                    bail!(
                        "IMDS described over {MAX_PEER_CIDRS} subnet and VPC CIDRs (the most a pod's traffic classes may use); not caching that answer"
                    );
                }
            }
        }
        facts
            .validate()
            .map_err(|e| anyhow!("IMDS's network answer is not usable ({e}); not caching it"))?;
        Ok(facts)
    }
}

/// The CIDRs of one IMDS value (one per line), each parsed and checked as
/// a zone fact.
fn cidrs_in(value: Option<&str>, path: &str) -> anyhow::Result<Vec<Cidr>> {
    value
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let cidr: Cidr = c
                .parse()
                .map_err(|e: Invalid| anyhow!("IMDS {path}: {e}"))?;
            check_zone_prefix(cidr.addr, cidr.prefix).map_err(|e| anyhow!("IMDS {path}: {e}"))?;
            Ok(cidr)
        })
        .collect()
}

#[cfg(test)]
#[path = "imds_tests.rs"]
mod tests;
