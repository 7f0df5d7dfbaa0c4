//! `topology-label`: a chained CNI plugin that names a pod's interfaces after
//! the pod and the node's zone, and applies the zone's profile.
//!
//! - [`verbs`]: what each CNI verb does, in order;
//! - [`config`]: the plugin's keys, parsed and validated (code 7);
//! - [`alias`]: the alias template; [`profiles`]: zone profiles merged by label;
//! - [`sysctl`]: the sysctl key model, allowlist globs, and /proc/sys access;
//! - [`labels`]: label sources and their precedence; [`imds`]: IMDSv2 with a cache;
//! - [`state`]: values saved so DEL can restore them;
//! - [`apply`]: the interface work behind the verbs (inspect, plan, apply, restore, compare).

pub mod alias;
pub mod apply;
pub mod config;
mod error;
/// IMDSv2 with its cache lives in the shared `node-topology` crate.
pub use node_topology::imds;
pub mod labels;
pub mod profiles;
pub mod state;
pub mod sysctl;
pub mod verbs;

pub use verbs::TopologyLabel;
