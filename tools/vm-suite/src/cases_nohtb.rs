//! The boot without `sch_htb` (the module withheld from the initramfs, so
//! the kernel's `request_module` finds nothing): ADD with traffic classes
//! fails with code 100 naming the missing feature and leaves nothing
//! behind; plain tbf still works.

use anyhow::{Result, ensure};
use cni_netlink::Netlink;
use serde_json::json;
use std::path::Path;

use crate::Report;
use crate::conf::{self, BW_STATE, POD_LIMIT, RATE};
use crate::inspect;
use crate::plugin;
use crate::world::Pod;

fn classes_refused(pod: &Pod) -> Result<String> {
    let c = conf::bandwidth(
        pod,
        "0.4.0",
        json!({"egressMode": "ifb", "trafficClasses": conf::classes(conf::cross_cap()),
               "runtimeConfig": conf::annotations(Some(POD_LIMIT), Some(POD_LIMIT))}),
    );
    let e = plugin::run("bandwidth", "ADD", pod, &c)?.err(100)?;
    let msg = e["msg"].as_str().unwrap_or_default();
    // The kernel says only "Specified qdisc kind is unknown" (ENOENT):
    // the plugin's message must name what the node lacks.
    ensure!(
        msg.contains("sch_htb"),
        "msg does not name the missing feature: {e}"
    );
    inspect::assert_clean(&[Path::new(BW_STATE)], Some(&pod.w.ns))?;
    // The runtime's DEL after a failed ADD.
    plugin::run("bandwidth", "DEL", pod, &c)?.ok()?;
    Ok(format!(
        "ADD 100 {msg:?} (details {}); nothing left; DEL 0",
        e["details"]
    ))
}

fn tbf_works(pod: &Pod) -> Result<String> {
    let c = conf::bandwidth(
        pod,
        "0.4.0",
        json!({"egressMode": "ifb", "runtimeConfig": conf::annotations(Some(RATE), Some(RATE))}),
    );
    plugin::run("bandwidth", "ADD", pod, &c)?.ok()?;
    let mut nl = Netlink::new()?;
    ensure!(
        inspect::root_tbf_rate(&mut nl, pod.w.host_index()?)? == RATE,
        "host veth tbf"
    );
    ensure!(inspect::ifbs(&mut nl)?.len() == 1, "ifb");
    plugin::run("bandwidth", "CHECK", pod, &c)?.ok()?;
    plugin::run("bandwidth", "DEL", pod, &c)?.ok()?;
    inspect::assert_clean(&[Path::new(BW_STATE)], Some(&pod.w.ns))?;
    Ok("tbf + ifb ADD/CHECK/DEL 0 without sch_htb; nothing left".into())
}

pub fn run(r: &mut Report) {
    let pod = match Pod::new(11, "default") {
        Ok(p) => p,
        Err(e) => return r.setup_failed("nohtb", e),
    };
    r.case("nohtb-classes-refused", || classes_refused(&pod));
    r.case("nohtb-tbf-works", || tbf_works(&pod));
}
