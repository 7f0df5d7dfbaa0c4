//! `bandwidth`: tbf shaping of a pod's ingress and egress.

mod config;
mod shaping;

use cni_types::error::{Code, fail};
use cni_types::{CniResult, Context, Plugin};

struct Bandwidth;

impl Plugin for Bandwidth {
    const NAME: &'static str = "bandwidth";

    fn add(&self, _ctx: &Context) -> anyhow::Result<CniResult> {
        fail(Code::UnsupportedField, "bandwidth ADD is not implemented yet")
    }

    fn del(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }

    fn check(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
}

fn main() {
    cni_types::skel::run(Bandwidth)
}
