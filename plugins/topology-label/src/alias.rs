//! The interface alias: a template of literal text and `{variable}`
//! references (pod identity, labels), rendered per attachment and cut to
//! the kernel's limit.

use node_topology::{ARCH, INSTANCE_TYPE, REGION, ZONE, ZONE_ID};

/// A parsed alias template: literal text and `{variable}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// Template variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Namespace,
    Pod,
    Uid,
    ContainerId,
    Ifname,
    Network,
    /// A label, by Kubernetes key (`zone`, `region`, ... are shorthands).
    Label(String),
}

impl Template {
    pub fn parse(s: &str) -> anyhow::Result<Template> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| crate::error::invalid(format!("alias {s:?}: unclosed '{{'")))?;
            let name = &after[..close];
            let var = match name {
                "namespace" => Var::Namespace,
                "pod" => Var::Pod,
                "uid" => Var::Uid,
                "containerId" | "containerID" => Var::ContainerId,
                "ifname" => Var::Ifname,
                "network" => Var::Network,
                "zone" => Var::Label(ZONE.into()),
                "region" => Var::Label(REGION.into()),
                "zoneId" => Var::Label(ZONE_ID.into()),
                "instanceType" => Var::Label(INSTANCE_TYPE.into()),
                "arch" => Var::Label(ARCH.into()),
                other => match other.strip_prefix("label:") {
                    Some(k) if !k.is_empty() => Var::Label(k.to_string()),
                    _ => {
                        return Err(crate::error::invalid(format!(
                            "alias {s:?}: unknown variable {{{other}}} (known: namespace, pod, uid, \
                             containerId, ifname, network, zone, region, zoneId, instanceType, arch, \
                             label:<key>)"
                        )));
                    }
                },
            };
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(crate::error::invalid(format!("alias {s:?}: stray '}}'")));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders with `lookup`; unknown values render empty. Control
    /// characters are replaced and surrounding whitespace trimmed.
    pub fn render(&self, lookup: impl Fn(&Var) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v).unwrap_or_default()),
            }
        }
        let cleaned: String = out
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cleaned.trim().to_string()
    }
}

/// Kernel limit for `IFLA_IFALIAS`: IFALIASZ (256) including the NUL.
pub const MAX_ALIAS_BYTES: usize = 255;

/// Cuts `s` to at most [`MAX_ALIAS_BYTES`] on a UTF-8 character boundary.
pub fn cut_alias(s: &str) -> &str {
    cni_types::error::utf8_prefix(s, MAX_ALIAS_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_and_cut() {
        let t = Template::parse("{namespace}/{pod} {zone} {label:x}").unwrap();
        let s = t.render(|v| match v {
            Var::Namespace => Some("ns".into()),
            Var::Pod => Some("p".into()),
            Var::Label(k) if k == ZONE => Some("us-east-1a".into()),
            _ => None,
        });
        assert_eq!(s, "ns/p us-east-1a");
        let long = "é".repeat(200);
        let cut = cut_alias(&long);
        assert!(cut.len() <= 255 && cut.len() == 254);
        assert_eq!(cut_alias("abc"), "abc");
    }
}
