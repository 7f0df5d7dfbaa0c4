//! A global allocator for processes that live a few milliseconds, as a CNI
//! plugin does: allocations are carved from a fixed arena in `.bss` by
//! bumping an offset, and frees are no-ops (except for the newest block,
//! which is given back, so a temporary that is freed at once costs
//! nothing). When the arena is full, the system allocator takes over.
//!
//! Why: musl's allocator maps and unmaps pages for small growing buffers;
//! one plugin ADD made 77 mmap/munmap calls of its ~230 syscalls. The arena
//! makes none: its pages are part of the executable's zero-filled segment,
//! touched (and counted in RSS) only as they are used. Never use it in a
//! long-running process: nothing freed in the arena is reused.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A bump arena of `N` bytes over a fallback allocator `F`.
pub struct BumpArena<const N: usize, F> {
    arena: UnsafeCell<Arena<N>>,
    /// Offset of the first free byte.
    next: AtomicUsize,
    /// Offset of the newest block plus one (0: none; every field starts
    /// at zero so the whole static lands in `.bss`, not in the file): a
    /// hint for `dealloc` and `realloc`,
    /// which roll back or extend a block only by a compare-and-swap of
    /// `next` from that block's end, so only the topmost block ever moves
    /// `next` back.
    last: AtomicUsize,
    /// How far the arena has ever been handed out: bytes past it are still
    /// the zeros the kernel mapped, and never touched.
    high_water: AtomicUsize,
    fallback: F,
}

#[repr(C, align(4096))]
struct Arena<const N: usize>([u8; N]);

// SAFETY: the arena's bytes are handed out in disjoint ranges, claimed by
// compare-and-swap on `next`, so threads never share a range.
unsafe impl<const N: usize, F: Sync> Sync for BumpArena<N, F> {}

impl<const N: usize, F> BumpArena<N, F> {
    pub const fn new(fallback: F) -> Self {
        BumpArena {
            arena: UnsafeCell::new(Arena([0; N])),
            next: AtomicUsize::new(0),
            last: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            fallback,
        }
    }

    fn base(&self) -> *mut u8 {
        self.arena.get().cast::<u8>()
    }

    /// The arena offset of `ptr`, if it lies in the arena.
    fn offset_of(&self, ptr: *mut u8) -> Option<usize> {
        let off = (ptr as usize).wrapping_sub(self.base() as usize);
        (off < N).then_some(off)
    }

    /// Hands out nothing more from the arena: every later allocation goes
    /// to the fallback, which reuses what is freed. For a program with one
    /// long-running mode (`cni-rs metrics --interval`), called as that mode
    /// starts: what the arena holds then stays, bounded by `N`.
    pub fn retire(&self) {
        self.next.store(N, Ordering::Release);
        self.last.store(0, Ordering::Release);
    }

    /// The arena's first byte and its length: for a program that asks the
    /// kernel for its pages in a particular way (huge pages).
    pub fn region(&self) -> (*mut u8, usize) {
        (self.base(), N)
    }

    /// Bytes of the arena handed out so far (for tests and diagnostics).
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// Claims a block; returns it and how many of its leading bytes may
    /// hold old data (the rest is untouched zeros).
    fn bump(&self, layout: Layout) -> Option<(*mut u8, usize)> {
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let base = self.base() as usize;
            let start = (base + cur).checked_add(layout.align() - 1)? & !(layout.align() - 1);
            let off = start - base;
            let end = off.checked_add(layout.size())?;
            if end > N {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.last.store(off + 1, Ordering::Release);
                    let before = self.high_water.fetch_max(end, Ordering::AcqRel);
                    return Some((
                        start as *mut u8,
                        before.saturating_sub(off).min(layout.size()),
                    ));
                }
                Err(now) => cur = now,
            }
        }
    }
}

unsafe impl<const N: usize, F: GlobalAlloc> GlobalAlloc for BumpArena<N, F> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some((p, _)) => p,
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { self.fallback.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Arena bytes start as zeros; only the part of a block that was
        // handed out before (and rolled back) is zeroed again, so a large
        // zeroed buffer costs no page until it is written.
        match self.bump(layout) {
            Some((p, dirty)) => {
                // SAFETY: `p` has room for `layout.size()` >= `dirty` bytes.
                unsafe { core::ptr::write_bytes(p, 0, dirty) };
                p
            }
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { self.fallback.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(off) = self.offset_of(ptr) else {
            // SAFETY: not ours, so the fallback allocated it with `layout`.
            return unsafe { self.fallback.dealloc(ptr, layout) };
        };
        // The newest block goes back to the arena; older ones stay used.
        if self.last.load(Ordering::Acquire) == off + 1 {
            let end = off + layout.size();
            if self
                .next
                .compare_exchange(end, off, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.last.store(0, Ordering::Release);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(off) = self.offset_of(ptr) {
            // The newest block grows or shrinks in place when it fits.
            if self.last.load(Ordering::Acquire) == off + 1 {
                let end = off + layout.size();
                if let Some(new_end) = off.checked_add(new_size).filter(|e| *e <= N)
                    && self
                        .next
                        .compare_exchange(end, new_end, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.high_water.fetch_max(new_end, Ordering::AcqRel);
                    return ptr;
                }
            }
        } else {
            // A fallback block stays with the fallback (its realloc may grow
            // it in place); the arena is for the small and early.
            // SAFETY: not ours, so the fallback allocated it with `layout`.
            return unsafe { self.fallback.realloc(ptr, layout, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: a fresh block of `new_size`; the old one holds at least
        // `min(old, new)` valid bytes.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_retired_arena_hands_everything_to_the_fallback() {
        let a: BumpArena<4096, System> = BumpArena::new(System);
        unsafe {
            let early = a.alloc(layout(16, 8));
            assert!(a.offset_of(early).is_some());
            a.retire();
            let late = a.alloc(layout(16, 8));
            assert!(a.offset_of(late).is_none(), "from the fallback");
            // The arena's own block is still freed (a no-op) and regrown
            // (into the fallback) without harm.
            let grown = a.realloc(early, layout(16, 8), 64);
            assert!(a.offset_of(grown).is_none());
            a.dealloc(grown, layout(64, 8));
            a.dealloc(late, layout(16, 8));
        }
    }

    #[test]
    fn bumps_aligned_and_rolls_back_the_newest() {
        let a: BumpArena<4096, System> = BumpArena::new(System);
        unsafe {
            let p1 = a.alloc(layout(3, 1));
            let p2 = a.alloc(layout(8, 8));
            assert_eq!(p2 as usize % 8, 0);
            assert!(p2 as usize >= p1 as usize + 3);
            let used = a.used();
            a.dealloc(p2, layout(8, 8));
            assert!(a.used() < used, "the newest block is given back");
            let p3 = a.alloc(layout(8, 8));
            assert_eq!(p3, p2, "and reused");
            a.dealloc(p1, layout(3, 1));
            assert_eq!(a.used(), used, "an older block is not");
        }
    }

    #[test]
    fn realloc_grows_the_newest_in_place_and_keeps_bytes() {
        let a: BumpArena<4096, System> = BumpArena::new(System);
        unsafe {
            let p = a.alloc(layout(4, 1));
            p.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            let q = a.realloc(p, layout(4, 1), 100);
            assert_eq!(q, p, "grown in place");
            let r = a.alloc(layout(1, 1));
            let q2 = a.realloc(q, layout(100, 1), 200);
            assert_ne!(q2, q, "not the newest any more: moved");
            assert_eq!(core::slice::from_raw_parts(q2, 4), b"abcd");
            a.dealloc(r, layout(1, 1));
        }
    }

    #[test]
    fn full_arena_falls_back_and_frees_there() {
        let a: BumpArena<4096, System> = BumpArena::new(System);
        unsafe {
            let big = a.alloc(layout(8192, 8));
            assert!(a.offset_of(big).is_none(), "too big: the system's");
            big.write_bytes(7, 8192);
            let bigger = a.realloc(big, layout(8192, 8), 16384);
            assert!(a.offset_of(bigger).is_none());
            assert_eq!(*bigger.add(8191), 7);
            a.dealloc(bigger, layout(16384, 8));
            let p = a.alloc(layout(4000, 8));
            assert!(a.offset_of(p).is_some());
            let spill = a.realloc(p, layout(4000, 8), 5000);
            assert!(
                a.offset_of(spill).is_none(),
                "grown past the arena: moved out"
            );
            a.dealloc(spill, layout(5000, 8));
        }
    }

    #[test]
    fn zeroed_after_reuse() {
        let a: BumpArena<4096, System> = BumpArena::new(System);
        unsafe {
            let p = a.alloc(layout(16, 1));
            p.write_bytes(0xff, 16);
            a.dealloc(p, layout(16, 1));
            let z = a.alloc_zeroed(layout(16, 1));
            assert_eq!(z, p);
            assert!(core::slice::from_raw_parts(z, 16).iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn zeroed_after_an_in_place_grow_and_rollback() {
        let a: BumpArena<4096, System> = BumpArena::new(System);
        unsafe {
            let p = a.alloc(layout(16, 1));
            let q = a.realloc(p, layout(16, 1), 64);
            assert_eq!(q, p);
            q.write_bytes(0xff, 64);
            a.dealloc(q, layout(64, 1));
            let z = a.alloc_zeroed(layout(64, 1));
            assert_eq!(z, p);
            assert!(core::slice::from_raw_parts(z, 64).iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn threads_get_disjoint_blocks() {
        static A: BumpArena<{ 1 << 20 }, System> = BumpArena::new(System);
        let handles: std::vec::Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || unsafe {
                    let mut ps = std::vec::Vec::new();
                    for _ in 0..200 {
                        let p = A.alloc(layout(64, 8));
                        p.write_bytes(t, 64);
                        ps.push(p as usize);
                    }
                    for p in &ps {
                        let s = core::slice::from_raw_parts(*p as *const u8, 64);
                        assert!(s.iter().all(|b| *b == t));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
