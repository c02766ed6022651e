//! Where compute runs: on the worker pool that the kernels split their work across.

/// Runs `f` on a thread of rayon's global pool and returns its result; from a thread of that
/// pool it runs `f` in place.
///
/// The kernels hand their work to the pool. A caller outside the pool then competes for cores
/// with workers that spin between jobs before they sleep: with as many workers as cores, that
/// cost about 40 % of a batch-1 forward pass of conv-small at 224² and 5 % of a training step.
/// Running the whole pass on a worker leaves no such competitor.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
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
}
