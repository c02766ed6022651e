//! Allocator settings for the large, short-lived buffers of a training step.

/// How many malloc arenas glibc may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arenas {
    /// One arena for every thread: for processes that train.
    One,
    /// glibc's default, an arena per thread up to a limit: for processes that only run
    /// inference.
    PerThread,
}

/// Makes glibc's `malloc` serve every allocation from its heaps and keep freed memory for reuse.
///
/// By default glibc maps each buffer above its mmap threshold afresh and unmaps it when freed,
/// so every activation, gradient and column buffer of every step pays a page fault per 4 KiB and
/// a TLB shootdown on release; at 224×224 that was about a third of a training step. Retained,
/// the memory of one step is reused by the next; RSS no longer shrinks between steps.
///
/// A training step runs on a worker thread, and a worker's own arena still returns memory:
/// glibc unmaps its heaps as soon as they fall empty, whatever the trim threshold, and maps
/// requests over 64 MiB directly. That faulted about 400 MB in again at every conv-small 224²
/// step and grew the peak RSS by half; [`Arenas::One`] keeps all of it in the main heap. It made
/// batch-1 inference a few per cent slower, so processes that do not train keep
/// [`Arenas::PerThread`]. Call once at start-up, before other threads exist. A no-op outside
/// Linux with glibc.
pub fn retain_freed_memory(arenas: Arenas) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called with valid options.
    unsafe {
        if arenas == Arenas::One {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
