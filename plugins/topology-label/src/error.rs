//! The one refusal of this plugin's own configuration (code 7), shared by
//! the modules that validate a part of it; a leaf, so that `config` can
//! use them and they never import `config`.

use cni_types::error::{CniError, Code};

/// Bad configuration: code 7, with what was wrong as the details.
pub(crate) fn invalid(msg: impl Into<String>) -> anyhow::Error {
    CniError::new(Code::InvalidConfig, "invalid topology-label configuration")
        .with_details(msg.into())
        .into()
}
