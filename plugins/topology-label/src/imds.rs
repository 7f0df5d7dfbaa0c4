//! EC2 instance metadata (IMDSv2): token PUT, then the placement values,
//! with an on-disk cache so only the first pod on a node pays.
//!
//! Order: a fresh cache (younger than the TTL) answers without a request;
//! otherwise IMDS is asked within one overall deadline; when that fails, a
//! stale cache still answers (with a warning), and only then is it an error.
//! A failure is remembered next to the cache (`<cacheFile>.failed`) for
//! `failureBackoffSeconds`, so on a node where IMDS is unreachable only one
//! pod waits out the timeout, not every pod.

use crate::config::{INSTANCE_TYPE, ImdsConf, Labels, REGION, ZONE, ZONE_ID, check_label};
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cache {
    /// Unix seconds.
    fetched_at: u64,
    labels: Labels,
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
    let cached = read_cache(&conf.cache_file);
    let now = now_secs();
    if let Some(c) = &cached {
        let age = now.saturating_sub(c.fetched_at);
        // A timestamp from the future (clock stepped back) is not trusted as fresh.
        if c.fetched_at <= now + 60 && age < conf.cache_ttl.as_secs() {
            log_debug!("IMDS cache hit ({age}s old)");
            return Ok(c.labels.clone());
        }
    }
    let fetched = match recent_failure(conf, now) {
        Some(f) => Err(anyhow!(
            "IMDS failed {}s ago ({}); not asking again for {}s",
            now.saturating_sub(f.failed_at),
            f.error,
            conf.failure_backoff.as_secs()
        )),
        None => fetch(conf).inspect_err(|e| {
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
        Ok(labels) => {
            let _ = std::fs::remove_file(failure_file(conf));
            let cache = Cache {
                fetched_at: now,
                labels: labels.clone(),
            };
            let bytes = serde_json::to_vec(&cache).unwrap_or_default();
            if let Err(e) = write_atomic(&conf.cache_file, &bytes, Durability::PowerLoss) {
                log_warn!(
                    "cannot write IMDS cache {}: {e:#}",
                    conf.cache_file.display()
                );
            }
            Ok(labels)
        }
        Err(e) => match cached {
            Some(c) => {
                log_warn!("IMDS failed ({e:#}); using a stale cache");
                Ok(c.labels)
            }
            None => Err(e),
        },
    }
}

/// Asks IMDS, within one overall deadline.
pub fn fetch(conf: &ImdsConf) -> anyhow::Result<Labels> {
    let deadline = Instant::now() + conf.timeout;
    let remaining = || -> anyhow::Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("IMDS timeout of {} ms exceeded", conf.timeout.as_millis());
        }
        Ok(left)
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // IMDS is link-local: a proxy from the environment must not be used.
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(true)
        .timeout_global(Some(conf.timeout))
        .build()
        .into();

    let url = format!("{}{TOKEN_PATH}", conf.endpoint);
    let mut resp = agent
        .put(&url)
        .config()
        .timeout_global(Some(remaining()?))
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

    let mut labels = Labels::new();
    for (path, label, must) in ITEMS {
        let url = format!("{}/latest/meta-data/{path}", conf.endpoint);
        let res = agent
            .get(&url)
            .config()
            .timeout_global(Some(remaining()?))
            .build()
            .header(TOKEN_HEADER, &token)
            .call();
        let mut resp = match res {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => bail!("IMDS GET {url}: unexpected status {}", r.status().as_u16()),
            Err(ureq::Error::StatusCode(404)) if !must => continue,
            Err(e) => return Err(anyhow!(e)).with_context(|| format!("IMDS GET {url}")),
        };
        let value = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .with_context(|| format!("reading IMDS {path}"))?;
        let value = value.trim();
        check_label(label, value).with_context(|| format!("IMDS {path}"))?;
        labels.insert(label.to_string(), value.to_string());
    }
    Ok(labels)
}
