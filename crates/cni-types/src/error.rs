//! The one place where failures become CNI error codes.
//!
//! Plugin code works with `anyhow` and attaches a [`Code`] to a failure with
//! [`ResultExt::cni`] (or by returning a [`CniError`]). The skeleton turns
//! any error into the spec's JSON with [`CniError::from_anyhow`]: the
//! outermost code in the chain wins, its message is `msg`, and the whole
//! cause chain becomes `details`.

use serde::Serialize;
use std::fmt;

/// Error codes from the CNI spec, plus our plugin-specific ones (100+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the config's cniVersion is not supported, or it does not allow the verb.
    IncompatibleVersion,
    /// 2: a field in the config is not supported.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a `CNI_*` environment variable is missing or invalid.
    InvalidEnv,
    /// 5: an I/O failure (reading stdin, state files).
    Io,
    /// 6: stdin could not be decoded.
    Decode,
    /// 7: the network configuration is invalid.
    InvalidConfig,
    /// 11: a transient failure: try again later.
    TryAgainLater,
    /// 50: STATUS: the plugin is not available.
    NotAvailable,
    /// 51: STATUS: the plugin is not available and existing containers may be affected.
    NotAvailableExisting,
    /// 100: a kernel/netlink operation failed.
    Kernel,
    /// 101: CHECK found the container's state differs from what ADD set up.
    CheckMismatch,
    /// 102: the interfaces needed (veth peer, host veth) could not be found.
    InterfaceNotFound,
}

impl Code {
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::NotAvailableExisting => 51,
            Code::Kernel => 100,
            Code::CheckMismatch => 101,
            Code::InterfaceNotFound => 102,
        }
    }
}

/// A value from the input, cut for an error message: an error must say
/// what was wrong without echoing a hostile 10 kB annotation whole (into
/// the runtime's event, the kubelet's log, and ours).
pub fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    if s.chars().count() <= MAX_CHARS {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(MAX_CHARS).collect();
    format!("{head:?}… ({} bytes)", s.len())
}

/// Error text beyond this is cut: stdout is parsed by the runtime, stored
/// in events and logs.
const MAX_DETAILS_BYTES: usize = 2048;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary (kernel and message limits are in bytes).
pub fn utf8_prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn cut_details(s: String) -> String {
    if s.len() <= MAX_DETAILS_BYTES {
        return s;
    }
    format!("{}… (cut)", utf8_prefix(&s, MAX_DETAILS_BYTES))
}

/// For verbs that must try everything (GC, teardown of many objects):
/// each step's failure is recorded and the work goes on; the failures are
/// reported together at the end, under one code.
#[derive(Debug, Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Records `r`'s error (with `what` it was about); true when it succeeded.
    pub fn record<T>(&mut self, what: impl fmt::Display, r: anyhow::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                crate::log_warn!("{what}: {e:#}");
                self.0.push(format!("{what}: {e:#}"));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing failed, else one error listing every failure.
    pub fn finish(self, code: Code, msg: &str) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let n = self.0.len();
        Err(CniError::new(code, format!("{msg} ({n} failed)"))
            .with_details(self.0.join("; "))
            .into())
    }
}

/// A CNI error as it is printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Maps any error to a CNI error. The outermost [`CniError`] in the chain
    /// gives the code and message; everything in the chain except that
    /// message becomes `details`. Errors nobody classified are kernel or
    /// plugin failures (code 100): the spec reserves 1..99 for specific causes.
    pub fn from_anyhow(err: &anyhow::Error) -> CniError {
        // anyhow's downcast sees through context layers, outermost first.
        let (code, msg) = match err.downcast_ref::<CniError>() {
            Some(c) => (c.code, c.msg.clone()),
            None => (Code::Kernel, err.to_string()),
        };
        let mut parts: Vec<String> = Vec::new();
        let mut skipped_msg = false;
        for cause in err.chain() {
            let text = cause.to_string();
            if !skipped_msg && text == msg {
                skipped_msg = true;
                continue;
            }
            if !parts.contains(&text) {
                parts.push(text);
            }
        }
        // A coded error at the root keeps its own details (Display shows only msg).
        if let Some(root) = err.root_cause().downcast_ref::<CniError>()
            && !root.details.is_empty()
        {
            parts.push(root.details.clone());
        }
        CniError {
            code,
            msg,
            details: cut_details(parts.join(": ")),
        }
    }

    /// The JSON the spec wants on stdout, in the config's version.
    pub fn to_json(&self, version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version: version,
            code: self.code.number(),
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{version}","code":{},"msg":"unprintable error"}}"#,
                self.code.number()
            )
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CniError {}

/// Attaches a CNI code and a short message to a failure, keeping its cause
/// chain for `details`.
pub trait ResultExt<T> {
    fn cni(self, code: Code, msg: impl Into<String>) -> anyhow::Result<T>;
    fn cni_with<M: Into<String>>(self, code: Code, msg: impl FnOnce() -> M) -> anyhow::Result<T>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn cni(self, code: Code, msg: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(CniError::new(code, msg)))
    }

    fn cni_with<M: Into<String>>(self, code: Code, msg: impl FnOnce() -> M) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(CniError::new(code, msg())))
    }
}

/// Shorthand for failing with a code and message.
pub fn fail<T>(code: Code, msg: impl Into<String>) -> anyhow::Result<T> {
    Err(CniError::new(code, msg).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn outermost_code_wins_and_chain_is_details() {
        let inner: anyhow::Result<()> = Err(anyhow::anyhow!("No such device (os error 19)"));
        let err = inner
            .context("looking up eth0")
            .cni(Code::InterfaceNotFound, "container interface not found")
            .unwrap_err();
        let cni = CniError::from_anyhow(&err);
        assert_eq!(cni.code.number(), 102);
        assert_eq!(cni.msg, "container interface not found");
        assert_eq!(cni.details, "looking up eth0: No such device (os error 19)");
    }

    #[test]
    fn unclassified_is_plugin_failure() {
        let err = anyhow::anyhow!("boom");
        let cni = CniError::from_anyhow(&err);
        assert_eq!(cni.code.number(), 100);
        assert_eq!(cni.msg, "boom");
        assert_eq!(cni.details, "");
    }

    #[test]
    fn failures_are_collected_and_reported_together() {
        let mut f = Failures::default();
        assert_eq!(f.record("one", Ok::<_, anyhow::Error>(1)), Some(1));
        assert!(
            f.record("two", Err::<(), _>(anyhow::anyhow!("boom")))
                .is_none()
        );
        assert!(
            f.record("three", Err::<(), _>(anyhow::anyhow!("bang")))
                .is_none()
        );
        let e = CniError::from_anyhow(&f.finish(Code::Kernel, "gc").unwrap_err());
        assert_eq!(e.msg, "gc (2 failed)");
        assert!(e.details.contains("two: boom") && e.details.contains("three: bang"));
        assert!(Failures::default().finish(Code::Kernel, "gc").is_ok());
    }

    #[test]
    fn json_shape() {
        let e = CniError::new(Code::Decode, "bad json").with_details("line 1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"0.4.0","code":6,"msg":"bad json","details":"line 1"})
        );
    }
}
