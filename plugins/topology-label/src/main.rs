/// A plugin process lives for milliseconds: its allocations come from a
/// bump arena (no mmap/munmap per buffer, as musl's allocator does), and
/// past 4 MiB from the system allocator. See crates/bump-arena.
#[global_allocator]
static ALLOC: bump_arena::BumpArena<{ 4 << 20 }, std::alloc::System> =
    bump_arena::BumpArena::new(std::alloc::System);

fn main() {
    cni_types::skel::run(topology_label_plugin::TopologyLabel)
}
