//! The CNI protocol core shared by every plugin in this workspace.
//!
//! - [`version`]: the spec versions we speak and what each allows.
//! - [`config`]: the network configuration on stdin.
//! - [`result`]: results in every supported version, and conversion between them.
//! - [`error`]: the one place where failures become spec error codes.
//! - [`env`]: `CNI_*` environment parsing and validation.
//! - [`skel`]: the verb dispatch a plugin's `main` hands control to.
//! - [`log`]: logging that never touches stdout.
//! - [`state`]: per-attachment state files.
//! - [`fsutil`]: opening files without being hung (FIFOs) or redirected (symlinks).

pub mod config;
pub mod env;
pub mod error;
pub mod fsutil;
pub mod log;
pub mod netns;
pub mod result;
pub mod skel;
pub mod state;
pub mod version;

pub use config::NetConf;
pub use env::{CniArgs, Command, Env};
pub use error::{CniError, Code, ResultExt};
pub use result::CniResult;
pub use skel::{Context, GcContext, Plugin};
pub use version::Version;
