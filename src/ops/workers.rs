//! Where compute runs: on the worker pool that the kernels split their work across.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f` on a thread of rayon's global pool and returns its result; from a thread of that
/// pool it runs `f` in place.
///
/// The kernels hand their work to the pool. A caller outside the pool then competes for cores
/// with workers that spin between jobs before they sleep: with as many workers as cores, that
/// cost about 40 % of a batch-1 forward pass of conv-small at 224² and 5 % of a training step.
/// Running the whole pass on a worker leaves no such competitor.
///
/// While `f` runs, the other workers stay awake: each waits for work in a loop that takes any
/// job the pool has ([`keep_warm`]) instead of sleeping between the kernels' parallel loops.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let _end = SetOnDrop(&done);
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| keep_warm(owner, done));
        }
        f()
    })
}

/// Sets its flag when dropped: the end of a pass, returned or unwound, as the waiting workers
/// see it.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the pool's jobs as they come until `done`, on any worker but `owner` (the thread that
/// runs the pass, which must not be held here while the pass waits on it).
///
/// A rayon worker with nothing to do spins only briefly before it sleeps, and waking it costs
/// tens of microseconds; a training step has hundreds of parallel loops with serial work in
/// between, so without this the second worker of a two-core machine sleeps and wakes about
/// 350 times a step.
fn keep_warm(owner: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == owner {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            for _ in 0..8 {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs candle's own elementwise ops on the thread that calls them: sets `CANDLE_NUM_THREADS=1`
/// unless it is set.
///
/// Candle splits large elementwise ops across a pool of its own, beside rayon's. While a pass
/// runs, every rayon worker but the pass's own waits for work awake ([`on_workers`]), so a
/// thread of candle's pool would have to take a core from one of them. Call once at start-up,
/// before any tensor op and before other threads exist.
pub fn run_candle_ops_inline() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_thread_and_nests() {
        let outer = on_workers(|| {
            let inner = on_workers(rayon::current_thread_index);
            (rayon::current_thread_index(), inner)
        });
        assert!(outer.0.is_some());
        assert_eq!(outer.0, outer.1, "a nested call stays on its thread");
    }

    #[test]
    fn a_pass_that_panics_releases_the_waiting_workers() {
        let caught = std::panic::catch_unwind(|| on_workers(|| panic!("pass failed")));
        assert!(caught.is_err(), "the panic reaches the caller");
        let sum: u64 = on_workers(|| {
            use rayon::prelude::*;
            (0..10_000u64).into_par_iter().sum()
        });
        assert_eq!(sum, 49_995_000, "the pool still runs parallel work");
    }
}
