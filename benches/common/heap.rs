//! A heap counter for the benchmarks that report memory: install
//! [`CountingAllocator`] as the bench's `#[global_allocator]`, read [`heap_mib`].

use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting the bytes held: resident memory also holds what the
/// allocator keeps after a free, so a leak shows in the heap figure, not only in RSS.
pub struct CountingAllocator;

static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HEAP_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// Bytes held on the heap, in MiB.
pub fn heap_mib() -> f64 {
    HEAP_BYTES.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}
