//! Spec versions: which ones we accept and which verbs each allows.

use std::fmt;

/// A CNI spec version this workspace speaks. Older ones (0.1.0, 0.2.0) are
/// not sent by any runtime still in support, so they are refused (code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const ALL: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    pub const NEWEST: Version = Version::V1_1_0;

    pub fn parse(s: &str) -> Option<Version> {
        Some(match s {
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK was introduced in 0.4.0.
    pub fn allows_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// STATUS and GC were introduced in 1.1.0.
    pub fn allows_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }

    /// 0.x results carry a `"version"` on every IP config.
    pub fn is_legacy(self) -> bool {
        self < Version::V1_0_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_version() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("0.2.0"), None);
        assert_eq!(Version::parse("1.1"), None);
        assert_eq!(Version::parse(""), None);
    }

    #[test]
    fn verb_gates() {
        assert!(!Version::V0_3_1.allows_check());
        assert!(Version::V0_4_0.allows_check());
        assert!(!Version::V1_0_0.allows_status_and_gc());
        assert!(Version::V1_1_0.allows_status_and_gc());
    }
}
