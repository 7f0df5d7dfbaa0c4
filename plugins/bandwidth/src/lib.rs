//! `bandwidth`: a chained CNI plugin that shapes a pod's traffic with tbf,
//! drop-in compatible with the reference plugin's config.
//!
//! - [`verbs`]: what each CNI verb does, in order;
//! - [`config`]: keys, spellings, precedence and validation;
//! - [`policy`]: per-namespace default and maximum rates;
//! - [`tbf`]: tbf arithmetic (pure);
//! - [`classes`]: peer classes (subnets, zones) and their HTB trees (pure);
//! - [`layout`]: the desired root of one device (tbf or htb tree): install, compare;
//! - [`devices`]: finding the host veth, naming and recognising our ifbs;
//! - [`apply`]: the netlink work behind the verbs (install, verify, teardown);
//! - [`backstop`]: the host-side nf_tables backstop of egress shaped in the pod.

pub mod apply;
pub mod backstop;
pub mod classes;
pub mod config;
pub mod devices;
pub mod layout;
pub mod policy;
pub mod tbf;
pub mod verbs;

pub use verbs::Bandwidth;
