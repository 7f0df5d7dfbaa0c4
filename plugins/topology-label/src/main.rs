//! `topology-label`: labels a pod's interfaces with its identity and zone.

use cni_types::error::{Code, fail};
use cni_types::{CniResult, Context, Plugin};

struct TopologyLabel;

impl Plugin for TopologyLabel {
    const NAME: &'static str = "topology-label";

    fn add(&self, _ctx: &Context) -> anyhow::Result<CniResult> {
        fail(Code::UnsupportedField, "topology-label ADD is not implemented yet")
    }

    fn del(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }

    fn check(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
}

fn main() {
    cni_types::skel::run(TopologyLabel)
}
