//! `labelsFile`: the node's topology labels as node bootstrap wrote them,
//! and the binary's own architecture label.

use crate::{Labels, check_label};
use cni_types::ResultExt;
use cni_types::error::{CniError, Code};
use serde_json::Value;

const MAX_LABELS_FILE: u64 = 1 << 20;

/// `kubernetes.io/arch` of the binary's own target.
pub fn own_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        "arm" => Some("arm"),
        "s390x" => Some("s390x"),
        "powerpc64" => Some("ppc64le"),
        "riscv64" => Some("riscv64"),
        _ => None,
    }
}

/// Reads `labelsFile`: a JSON object of strings. A missing file is no labels.
pub fn read_labels_file(path: &std::path::Path) -> anyhow::Result<Labels> {
    // The operator's file, but never through a symlink at its last
    // component, and never blocking on a FIFO.
    let bytes = match cni_types::fsutil::read_bounded(path, MAX_LABELS_FILE) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Labels::new()),
        // Too large: the file's content is wrong, not the I/O.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("malformed labelsFile {}", path.display()),
            )
            .with_details(format!("larger than {MAX_LABELS_FILE} bytes"))
            .into());
        }
        Err(e) => {
            return Err(e).cni_with(Code::Io, || {
                format!("cannot read labelsFile {}", path.display())
            });
        }
    };
    let malformed = |why: String| -> anyhow::Error {
        CniError::new(
            Code::InvalidConfig,
            format!("malformed labelsFile {}", path.display()),
        )
        .with_details(why)
        .into()
    };
    // Content that is not UTF-8 text is a malformed file, not an I/O failure.
    let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8 text".into()))?;
    if text.len() as u64 > MAX_LABELS_FILE {
        return Err(malformed(format!("larger than {MAX_LABELS_FILE} bytes")));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("not a JSON object of label: value".into()))?;
    let mut labels = Labels::new();
    for (k, v) in obj {
        let s = v
            .as_str()
            .ok_or_else(|| malformed(format!("{k}: value is not a string")))?;
        check_label(k, s).map_err(|e| malformed(e.to_string()))?;
        labels.insert(k.clone(), s.to_string());
    }
    Ok(labels)
}
