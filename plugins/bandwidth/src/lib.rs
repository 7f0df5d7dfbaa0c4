//! `bandwidth`: a chained CNI plugin that shapes a pod's traffic with tbf,
//! drop-in compatible with the reference plugin's config.
//!
//! - [`verbs`]: what each CNI verb does;
//! - [`config`]: keys, spellings, precedence and validation;
//! - [`shaping`]: tbf arithmetic (pure);
//! - [`devices`]: finding the host veth, naming and recognising our ifbs;
//! - [`shaper`]: the netlink work (install, verify, teardown).

pub mod config;
pub mod devices;
pub mod shaper;
pub mod shaping;
pub mod verbs;

pub use verbs::Bandwidth;
