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

/// Spins of candle's elementwise worker before it sleeps, unless `CANDLE_BARRIER_POOL_SPIN_LIMIT`
/// says otherwise.
const CANDLE_SPIN_LIMIT: &str = "1000";

/// Makes the worker thread behind candle's own elementwise ops sleep soon after each op.
///
/// Candle runs large elementwise ops on a pool of its own, whose worker spins 25,000 times
/// (about half a millisecond) after each op before it sleeps; on a machine with as many rayon
/// workers as cores that spinning takes a core from the kernels, about 15 % of a 32² training
/// step. Call once at start-up, before any tensor op and before other threads exist; an explicit
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` is left as it is.
pub fn shorten_candle_spinning() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
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
}
