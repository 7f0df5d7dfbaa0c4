//! Verb dispatch of `topology-label`, a chained CNI plugin that names a pod's interfaces after
//! the pod and the node's zone, and applies the zone's profile (MTU,
//! txqueuelen, `net.*` sysctls). See the README section "topology-label".

use crate::apply;
use cni_types::{CniResult, Context, Env, GcContext, NetConf, Plugin};

/// The plugin, for `cni_types::skel::run`.
pub struct TopologyLabel;

impl Plugin for TopologyLabel {
    const NAME: &'static str = "topology-label";

    fn add(&self, ctx: &Context) -> anyhow::Result<CniResult> {
        apply::add(ctx)
    }

    fn del(&self, ctx: &Context) -> anyhow::Result<()> {
        apply::del(ctx)
    }

    fn check(&self, ctx: &Context) -> anyhow::Result<()> {
        apply::check(ctx)
    }

    fn status(&self, conf: &NetConf) -> anyhow::Result<()> {
        apply::status(conf)
    }

    fn gc(&self, ctx: &GcContext) -> anyhow::Result<()> {
        apply::gc(ctx)
    }

    fn del_best_effort(&self, env: &Env, raw: Option<&serde_json::Value>) -> anyhow::Result<()> {
        apply::del_best_effort(env, raw)
    }
}
