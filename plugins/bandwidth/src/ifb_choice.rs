//! Which ifb an ADD uses: the one the attachment already owns while it
//! is still its own, else the first of its candidate names that is free or
//! marked for it; and the race with a parallel ADD of another attachment
//! that makes the chosen name first.

use crate::devices::{IfbOwner, MAX_ALIAS_BYTES, ifb_candidates};
use crate::plan::AddRequest;
use crate::record::Installed;
use cni_netlink::kernel::Kernel;
use cni_types::error::{CniError, Code, ResultExt};
use cni_types::{log_info, log_warn};

/// The ifb name this ADD chose was created by a concurrent ADD of another
/// attachment (ADDs of different attachments run in parallel). The ADD
/// undid its own steps; run again, it chooses another name.
#[derive(Debug)]
pub struct IfbTaken(pub String);

impl std::fmt::Display for IfbTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ifb {} was created by a concurrent ADD", self.0)
    }
}

impl std::error::Error for IfbTaken {}

/// The ifb this attachment uses: the one it already owns when it still
/// is its own, else the first candidate name that is free or marked as
/// this attachment's. A name held by another attachment (or anything
/// else) is never adopted: two attachments sharing an ifb would rewrite
/// each other's rate, and one's DEL would blackhole the other.
pub fn choose_ifb(
    nl: &mut dyn Kernel,
    req: &AddRequest<'_>,
    owned: &Installed,
) -> anyhow::Result<String> {
    let who = req.attachment();
    if who.alias().len() > MAX_ALIAS_BYTES {
        return Err(CniError::new(
            Code::InvalidConfig,
            "network name and container id are too long to mark an ifb as ours",
        )
        .with_details(format!(
            "the ifb's alias would be {} bytes; the kernel keeps {MAX_ALIAS_BYTES}",
            who.alias().len()
        ))
        .into());
    }
    if let Some(name) = &owned.ifb {
        match nl
            .link_by_name(name)
            .cni_with(Code::Kernel, || format!("looking up {name}"))?
        {
            None => return Ok(name.clone()),
            Some(l) if who.owner_of(&l) != IfbOwner::Foreign => return Ok(name.clone()),
            Some(l) => log_warn!(
                "{name} recorded for this attachment now belongs to someone else ({:?}); choosing another name",
                l.alias
            ),
        }
    }
    let candidates = ifb_candidates(req.network, req.container_id, req.ifname);
    for name in &candidates {
        match nl
            .link_by_name(name)
            .cni_with(Code::Kernel, || format!("looking up {name}"))?
        {
            None => return Ok(name.clone()),
            Some(l) if who.owner_of(&l) == IfbOwner::ThisAttachment => return Ok(name.clone()),
            Some(l) => log_info!(
                "{name} is taken ({} {:?}); trying the next name",
                l.kind.as_deref().unwrap_or("link"),
                l.alias
            ),
        }
    }
    Err(
        CniError::new(Code::Kernel, "no free ifb name for this attachment")
            .with_details(format!(
                "every candidate ({}) exists and belongs to someone else",
                candidates.join(", ")
            ))
            .into(),
    )
}
