//! Allocator setting for the large, short-lived buffers of a training step.

/// Makes glibc's `malloc` serve every allocation from one heap and keep freed memory for reuse.
///
/// By default glibc maps each buffer above its mmap threshold afresh and unmaps it when freed,
/// so every activation, gradient and column buffer of every step pays a page fault per 4 KiB and
/// a TLB shootdown on release; at 224×224 that was about a third of a training step. Worker
/// threads also get arenas of their own, whose heaps glibc unmaps as soon as they fall empty
/// whatever the trim threshold; buffers freed there were faulted in again at every step (a
/// quarter of a hybrid-medium step at 224², and a resident size that grew by half). With one
/// arena, no mapped buffers and no trimming, the memory of one step is reused by the next: peak
/// RSS stays that of one step and no longer shrinks between steps. Call once at start-up,
/// before other threads exist. A no-op outside Linux with glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called with valid options.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
