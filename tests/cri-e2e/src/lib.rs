//! End-to-end tests of the plugin chain under a real containerd: see
//! `tests/containerd.rs`. This crate has no code of its own; it exists so
//! that the CRI client's tonic/tokio dependency tree stays out of the
//! plugin crates and the main test harness.
