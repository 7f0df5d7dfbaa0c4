//! The conflist aws-node renders, read and patched.
//!
//! Our entries are recognised by type, `bandwidth-rs` and `topology-label`:
//! nothing else in a conflist has these types (aws-node ships aws-cni,
//! egress-cni (egress-v6-cni before), loopback, portmap, bandwidth,
//! host-local and tuning). Our bandwidth-rs entry takes the place of an
//! existing one, else of the first reference `bandwidth` entry (kept
//! inside ours under [`REPLACED_KEY`] for uninstall), else goes at the
//! end; topology-label always goes right before it: interface settings
//! (MTU) must settle before shaping, or a tbf sized for the old MTU drops
//! every full-size frame. Every other reference `bandwidth` and duplicate
//! of ours is dropped; every other key and plugin stays as and where it was.

use crate::node_files::{self, ReadError};
use crate::ordered_json::Json;
use std::path::Path;

/// Key inside our bandwidth-rs entry that keeps the reference `bandwidth`
/// entry it replaced (ENABLE_BANDWIDTH_PLUGIN=true), so uninstall can put
/// it back. Plugins ignore keys they do not know.
pub const REPLACED_KEY: &str = "x-cni-rs-replaced";
/// A conflist is a few KB; anything past this is not one.
const MAX_CONFLIST_BYTES: u64 = 1 << 20;

/// A conflist as read: its bytes and its parsed value.
pub struct Loaded {
    pub bytes: Vec<u8>,
    pub json: Json,
}

/// Reads `path` and checks that it is a conflist we can edit: a regular
/// file holding exactly one JSON object with a "plugins" array of objects.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let f = path.display();
    let bytes = node_files::read_regular(path, MAX_CONFLIST_BYTES).map_err(|e| match e {
        ReadError::Missing => {
            format!("{f} does not exist (is the AWS VPC CNI running on this node? pass --conflist)")
        }
        other => format!("{f} {other}; it was left untouched"),
    })?;
    let json = Json::parse(&bytes)
        .map_err(|e| format!("{f} is not valid JSON ({e}); it was left untouched"))?;
    let Json::Object(_) = &json else {
        return Err(format!("{f} is not a JSON object; it was left untouched"));
    };
    let Some(Json::Array(plugins)) = json.get("plugins") else {
        return Err(format!(
            "{f} has no \"plugins\" array (not a conflist); it was left untouched"
        ));
    };
    if plugins.iter().any(|p| !matches!(p, Json::Object(_))) {
        return Err(format!(
            "{f} has a \"plugins\" entry that is not a JSON object; it was left untouched"
        ));
    }
    Ok(Loaded { bytes, json })
}

fn plugins(conf: &Json) -> &[Json] {
    match conf.get("plugins") {
        Some(Json::Array(p)) => p,
        _ => &[],
    }
}

fn is_type(p: &Json, t: &str) -> bool {
    p.plugin_type() == Some(t)
}

/// The conflist with our entries in place: `bw` (our bandwidth-rs entry)
/// and `tl` (topology-label, `None` without it).
pub fn patch(conf: &Json, bw: &Json, tl: Option<&Json>) -> Json {
    let p = plugins(conf);
    let own_bw = p.iter().position(|e| is_type(e, "bandwidth-rs"));
    let ref_bw = p.iter().position(|e| is_type(e, "bandwidth"));
    let at = own_bw.or(ref_bw);
    // The entry we replaced before (kept in ours), else the reference one
    // we replace now.
    let replaced = p
        .iter()
        .filter(|e| is_type(e, "bandwidth-rs"))
        .find_map(|e| e.get(REPLACED_KEY).filter(|v| **v != Json::Null))
        .or_else(|| p.iter().find(|e| is_type(e, "bandwidth")))
        .cloned();
    let mut bw = bw.clone();
    if let Some(r) = replaced {
        bw.set(REPLACED_KEY, r);
    }
    let ours: Vec<Json> = tl.cloned().into_iter().chain([bw]).collect();
    let mut out = Vec::with_capacity(p.len() + 2);
    for (i, e) in p.iter().enumerate() {
        if Some(i) == at {
            out.extend(ours.iter().cloned());
        } else if !(is_type(e, "bandwidth")
            || is_type(e, "bandwidth-rs")
            || is_type(e, "topology-label"))
        {
            out.push(e.clone());
        }
    }
    if at.is_none() {
        out.extend(ours);
    }
    let mut conf = conf.clone();
    conf.set("plugins", Json::Array(out));
    conf
}

/// The conflist without our entries: the reference `bandwidth` entry ours
/// replaced goes back at its place. Computed from the file as it is now,
/// not restored from the backup: aws-node may have re-rendered the file
/// (new MTU, new settings) since the backup was taken.
pub fn unpatch(conf: &Json) -> Json {
    let out: Vec<Json> = plugins(conf)
        .iter()
        .filter_map(|e| {
            if is_type(e, "bandwidth-rs") {
                e.get(REPLACED_KEY)
                    .filter(|v| !matches!(v, Json::Null | Json::Bool(false)))
                    .cloned()
            } else if is_type(e, "topology-label") {
                None
            } else {
                Some(e.clone())
            }
        })
        .collect();
    let mut conf = conf.clone();
    conf.set("plugins", Json::Array(out));
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Json {
        Json::parse(s.as_bytes()).unwrap()
    }

    fn types(c: &Json) -> Vec<&str> {
        plugins(c).iter().filter_map(Json::plugin_type).collect()
    }

    #[test]
    fn patch_places_ours_and_is_idempotent() {
        let bw = j(r#"{"type":"bandwidth-rs","latencyMs":25}"#);
        let tl = j(r#"{"type":"topology-label"}"#);
        let base = j(
            r#"{"z":1,"plugins":[{"type":"aws-cni"},{"type":"bandwidth","x":1},{"type":"portmap"}],"a":2}"#,
        );
        let once = patch(&base, &bw, Some(&tl));
        assert_eq!(
            types(&once),
            ["aws-cni", "topology-label", "bandwidth-rs", "portmap"]
        );
        assert_eq!(
            plugins(&once)[2].get(REPLACED_KEY),
            Some(&j(r#"{"type":"bandwidth","x":1}"#))
        );
        assert_eq!(patch(&once, &bw, Some(&tl)), once);
        let keys: Vec<&str> = match &once {
            Json::Object(p) => p.iter().map(|(k, _)| k.as_str()).collect(),
            _ => vec![],
        };
        assert_eq!(keys, ["z", "plugins", "a"]);
        assert!(unpatch(&once).same_as(&base));
        let without = patch(&once, &bw, None);
        assert_eq!(types(&without), ["aws-cni", "bandwidth-rs", "portmap"]);
        let plain = j(r#"{"plugins":[{"type":"aws-cni"}]}"#);
        assert_eq!(
            types(&patch(&plain, &bw, Some(&tl))),
            ["aws-cni", "topology-label", "bandwidth-rs"]
        );
        assert_eq!(unpatch(&patch(&plain, &bw, Some(&tl))), plain);
    }
}
