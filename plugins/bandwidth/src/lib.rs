//! `bandwidth`: a chained CNI plugin that shapes a pod's traffic with tbf,
//! drop-in compatible with the reference plugin's config.
//!
//! - [`verbs`]: what each CNI verb does, in order;
//! - [`config`]: keys, spellings, precedence and validation;
//! - [`rates`]: `Limit`, `Bits` and the one rate/burst range check;
//! - [`policy`]: per-namespace default and maximum rates;
//! - [`tbf`]: tbf arithmetic (pure);
//! - [`classes`]: peer classes (subnets, zones): types and parsing (pure);
//! - [`zones`]: zone facts (inline, file, IMDS), resolved before planning;
//! - [`htb_plan`]: the HTB tree of one direction from resolved classes (pure);
//! - [`layout`]: the desired root of one device (tbf or htb tree): install, compare;
//! - [`devices`]: finding the host veth, naming and recognising our ifbs;
//! - [`ifb_choice`]: which ifb name an ADD uses;
//! - [`ifb_pool`]: parked ifbs, which DEL leaves and ADD takes;
//! - [`record`]: the state record (what is ours);
//! - [`plan`]: config + attachment -> the desired kernel objects (pure);
//! - [`reconcile`]: ADD, from what is there to the plan, with undo;
//! - [`check`]: CHECK, the plan against the kernel;
//! - [`teardown`]: DEL and GC, what the record owns;
//! - [`pod`]: acting on the container interface inside the pod;
//! - [`backstop`]: the host-side nf_tables backstop of egress shaped in the pod.
//!
//! All kernel work goes through [`cni_netlink::kernel::Kernel`]: the real
//! sockets in the plugin, an in-memory node in the unit tests.
//! Imports go one way: verbs -> reconcile/check/teardown -> plan/pod/
//! backstop/layout -> record/htb_plan/devices -> config -> zones/policy ->
//! classes/tbf -> rates (docs/design.md).

pub mod backstop;
pub mod check;
pub mod classes;
pub mod config;
pub mod devices;
pub mod htb_plan;
pub mod ifb_choice;
pub mod ifb_pool;
pub mod layout;
pub mod plan;
pub mod pod;
pub mod policy;
pub mod rates;
pub mod reconcile;
pub mod record;
pub mod tbf;
pub mod teardown;
pub mod verbs;
pub mod zones;

pub use verbs::Bandwidth;
