//! What a node knows about its place in the cloud, shared by the plugins
//! that need it (`topology-label` labels pods' veths with it, `bandwidth`
//! classifies peers by zone with it):
//!
//! - the topology label keys and what a valid label is;
//! - the node's label file (`labelsFile`) and the binary's architecture;
//! - [`imds`]: EC2's instance metadata (IMDSv2): zone, region, instance
//!   type, and (for zone classes) the node's ENI subnets and the VPC's CIDR
//!   blocks, behind one on-disk cache with a failure backoff, so a node
//!   asks IMDS once whichever plugin asks first;
//! - [`Cidr`] and the rules a zone fact meets (not too wide, not too
//!   many), checked on IMDS's answer before it is cached and on the
//!   operator's zone CIDRs alike.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod http;
pub mod imds;
mod labels_file;
mod zone_cidr;

pub use labels_file::{own_arch, read_labels_file};
pub use zone_cidr::{
    Cidr, MAX_PEER_CIDRS, MIN_ZONE_PREFIX_V4, MIN_ZONE_PREFIX_V6, check_zone_prefix,
};

/// Labels by Kubernetes key.
pub type Labels = BTreeMap<String, String>;

pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const REGION: &str = "topology.kubernetes.io/region";
pub const ZONE_ID: &str = "topology.k8s.aws/zone-id";
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const ARCH: &str = "kubernetes.io/arch";

pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
const DEFAULT_IMDS_TIMEOUT_MS: u64 = 500;
const DEFAULT_CACHE_TTL_SECONDS: u64 = 3600;
const DEFAULT_FAILURE_BACKOFF_SECONDS: u64 = 30;
/// The cache both plugins use unless configured otherwise: topology-label's
/// default (its state dir), so a node running both asks IMDS once.
pub const DEFAULT_IMDS_CACHE: &str = "/run/cni/topology-label/imds-cache.json";

/// A value that breaks a rule, with the rule it breaks; callers add where
/// it came from and turn it into a code-7 error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A label key and value as Kubernetes allows them (loosely for keys:
/// printable ASCII, no whitespace; values: `[A-Za-z0-9._-]`, at most 63).
pub fn check_label(key: &str, value: &str) -> Result<(), Invalid> {
    if key.is_empty() || key.len() > 317 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid(format!(
            "{} is not a valid label key",
            cni_types::error::excerpt(key)
        )));
    }
    if value.len() > 63
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Invalid(format!(
            "{key}: {} is not a valid label value (at most 63 of [A-Za-z0-9._-])",
            cni_types::error::excerpt(value)
        )));
    }
    Ok(())
}

/// The `imds` block of a plugin config, as written (a misspelt key is an
/// error, not a silent default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawImds {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub cache_file: Option<PathBuf>,
    #[serde(default)]
    pub cache_ttl_seconds: Option<u64>,
    #[serde(default)]
    pub failure_backoff_seconds: Option<u64>,
    #[serde(default)]
    pub required: bool,
}

/// IMDS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsConf {
    /// `http://host[:port]` without a trailing slash.
    pub endpoint: String,
    pub timeout: Duration,
    pub cache_file: PathBuf,
    pub cache_ttl: Duration,
    /// After a failed fetch, pods skip IMDS this long instead of each
    /// waiting out the timeout (0 disables).
    pub failure_backoff: Duration,
}

impl ImdsConf {
    /// Validates the block; `default_cache` is the cache file when none is
    /// configured.
    pub fn parse(i: &RawImds, default_cache: &Path) -> Result<ImdsConf, Invalid> {
        let endpoint = i
            .endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint.strip_prefix("http://").ok_or_else(|| {
            Invalid(format!(
                "imds.endpoint {endpoint:?} must be a plain http:// URL (IMDS has no TLS)"
            ))
        })?;
        if host.is_empty()
            || host.contains(['/', '?', '#', '@'])
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Invalid(format!(
                "imds.endpoint {endpoint:?} must be http://host[:port] with no path"
            )));
        }
        let timeout_ms = i.timeout_ms.unwrap_or(DEFAULT_IMDS_TIMEOUT_MS);
        if !(1..=30_000).contains(&timeout_ms) {
            return Err(Invalid(format!(
                "imds.timeoutMs {timeout_ms} must be 1..30000"
            )));
        }
        let cache_file = i
            .cache_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| default_cache.to_path_buf());
        if !cache_file.is_absolute() {
            return Err(Invalid(format!(
                "imds.cacheFile {} must be an absolute path",
                cache_file.display()
            )));
        }
        Ok(ImdsConf {
            endpoint,
            timeout: Duration::from_millis(timeout_ms),
            cache_file,
            cache_ttl: Duration::from_secs(
                i.cache_ttl_seconds.unwrap_or(DEFAULT_CACHE_TTL_SECONDS),
            ),
            failure_backoff: Duration::from_secs(
                i.failure_backoff_seconds
                    .unwrap_or(DEFAULT_FAILURE_BACKOFF_SECONDS),
            ),
        })
    }
}
