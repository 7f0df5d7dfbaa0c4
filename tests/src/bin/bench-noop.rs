//! `bench-noop`: does nothing and exits 0. The benchmarks run it exactly as
//! they run a plugin (same wrapper, same stdin) to measure the cost of
//! starting a process: the floor under every plugin's wall time.

fn main() {}
