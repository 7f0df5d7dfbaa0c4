//! Logging that never touches stdout (stdout carries the protocol).
//!
//! Warnings and errors go to stderr, which runtimes capture and show on
//! failure. A config may add a log file, like aws-cni's `pluginLogFile`:
//! `logFile`/`logLevel` (or `pluginLogFile`/`pluginLogLevel`). The file is
//! opened append-only, 0600, without following a symlink at its last
//! component, and a failure to open it never fails the plugin.

use serde_json::Value;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

struct Logger {
    plugin: &'static str,
    tag: String,
    stderr_level: Level,
    file: Option<(Mutex<File>, Level)>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up logging from the config. `tag` identifies the invocation
/// (verb and container id) in every line. Only the first call counts.
pub fn init(plugin: &'static str, tag: String, config: Option<&Value>) {
    let get = |keys: &[&str]| -> Option<String> {
        let c = config?;
        keys.iter()
            .find_map(|k| c.get(*k).and_then(Value::as_str))
            .map(str::to_string)
    };
    let level = get(&["logLevel", "pluginLogLevel"]).and_then(|l| Level::parse(&l));
    // Non-blocking and regular files only: a FIFO at the log path must not
    // hang the plugin (and writing to one would block each line).
    let file = get(&["logFile", "pluginLogFile"])
        .filter(|p| !p.is_empty())
        .and_then(|path| {
            crate::fsutil::open_regular_nofollow(
                std::path::Path::new(&path),
                OpenOptions::new().create(true).append(true).mode(0o600),
            )
            .ok()
        })
        .map(|f| (Mutex::new(f), level.unwrap_or(Level::Info)));
    let _ = LOGGER.set(Logger {
        plugin,
        tag,
        stderr_level: Level::Warn,
        file,
    });
}

/// Logging never fails a verb: a closed or full stderr (a runtime that died
/// mid-call, `2>/dev/full`) is ignored rather than panicking as `eprintln!`
/// would (with `panic = "abort"` that is a SIGABRT and no JSON on stdout).
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr();
    let Some(l) = LOGGER.get() else {
        if level <= Level::Warn {
            let _ = writeln!(stderr, "{}: {args}", level.as_str());
        }
        return;
    };
    if level <= l.stderr_level {
        let _ = writeln!(stderr, "{} {}: {} {args}", l.plugin, level.as_str(), l.tag);
    }
    if let Some((file, file_level)) = &l.file
        && level <= *file_level
        && let Ok(mut f) = file.lock()
    {
        let _ = writeln!(
            f,
            "{} {}[{}] {} {} {args}",
            utc_now(),
            l.plugin,
            std::process::id(),
            level.as_str(),
            l.tag
        );
    }
}

/// RFC 3339 UTC time without pulling in a date crate.
fn utc_now() -> String {
    rfc3339(SystemTime::now(), true)
}

/// `t` as RFC 3339 UTC (`2024-05-01T12:00:00Z`, with milliseconds
/// `…:00.123Z`): for the plugins' log and the installer's messages.
pub fn rfc3339(t: SystemTime, millis: bool) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let fraction = if millis {
        format!(".{:03}", since.subsec_millis())
    } else {
        String::new()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) } }

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::utc_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
