//! `topology-label`: a chained CNI plugin that names a pod's interfaces after
//! the pod and the node's zone, and applies the zone's profile.
//!
//! - [`verbs`]: the CNI verbs, delegating to [`apply`];
//! - [`config`]: keys, templates, sysctl and MTU validation;
//! - [`labels`]: label sources and their precedence;
//! - [`imds`]: EC2 instance metadata (IMDSv2) with an on-disk cache;
//! - [`state`]: values saved so DEL can restore them;
//! - [`apply`]: the netlink and sysctl work.

pub mod apply;
pub mod config;
pub mod imds;
pub mod labels;
pub mod state;
pub mod verbs;

pub use verbs::TopologyLabel;
