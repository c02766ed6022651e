//! One epoch of batches, shared by every loader: the sample order (seeded shuffle, whole batches
//! only when the ragged last one is dropped) and the producer thread that prepares batches ahead
//! of the consumer, behind a bounded channel.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use candle_core::Device;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::DataError;
use super::seed::derive_seed;

/// Batches per epoch of `n` samples.
pub(super) fn batch_count(n: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        n / batch_size
    } else {
        n.div_ceil(batch_size)
    }
}

/// Sample order of `epoch`: `0..n`, shuffled with `derive_seed(&[seed, epoch])` when `shuffle`,
/// truncated to whole batches when `drop_last`.
pub(super) fn epoch_order(
    n: usize,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    (seed, epoch): (u64, u64),
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut StdRng::seed_from_u64(derive_seed(&[seed, epoch])));
    }
    order.truncate(
        batch_count(n, batch_size, drop_last)
            .saturating_mul(batch_size)
            .min(n),
    );
    order
}

/// A batch whose tensors can move to a device.
pub trait DeviceBatch: Sized + Send + 'static {
    /// The same batch with its tensors on `device`.
    fn to_device(self, device: &Device) -> Result<Self, DataError>;
}

/// Builds `make(chunk)` for each `batch_size` chunk of `order` on a thread named `name`,
/// `prefetch` (clamped to 1..=8) batches ahead of the consumer.
pub(super) fn spawn_epoch<B: DeviceBatch>(
    name: String,
    order: Vec<usize>,
    (batch_size, prefetch): (usize, usize),
    device: Device,
    make: impl Fn(&[usize]) -> Result<B, DataError> + Send + 'static,
) -> EpochBatches<B> {
    let expected = order.len().div_ceil(batch_size);
    let (tx, rx) = sync_channel(prefetch.clamp(1, 8));
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        for chunk in order.chunks(batch_size) {
            if tx.send(make(chunk)).is_err() {
                break; // consumer dropped the iterator
            }
        }
    });
    let (handle, pending) = match spawned {
        Ok(h) => (Some(h), None),
        Err(e) => (
            None,
            Some(DataError::Invalid(format!(
                "cannot start data loader thread: {e}"
            ))),
        ),
    };
    EpochBatches {
        rx: Some(rx),
        handle,
        pending,
        device,
        received: 0,
        expected,
    }
}

/// Iterator over one epoch's batches. Dropping it stops the producer thread.
///
/// Yields `Err` if a batch cannot be built or moved to the device, or if the producer
/// thread dies before delivering every batch (never a silently short epoch).
pub struct EpochBatches<B> {
    rx: Option<Receiver<Result<B, DataError>>>,
    handle: Option<JoinHandle<()>>,
    pending: Option<DataError>,
    device: Device,
    received: usize,
    expected: usize,
}

impl<B: DeviceBatch> Iterator for EpochBatches<B> {
    type Item = Result<B, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.rx = None;
            return Some(Err(e));
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(Ok(batch)) => {
                self.received += 1;
                Some(if self.device.is_cpu() {
                    Ok(batch)
                } else {
                    batch.to_device(&self.device)
                })
            }
            Ok(Err(e)) => {
                self.received += 1;
                Some(Err(e))
            }
            Err(_) => self.finish(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.rx.is_none() && self.pending.is_none() {
            return (0, Some(0));
        }
        let left = self.expected.saturating_sub(self.received);
        (left, Some(left + 1))
    }
}

impl<B> EpochBatches<B> {
    /// The producer finished (or died): an error unless it delivered every batch.
    fn finish(&mut self) -> Option<Result<B, DataError>> {
        self.rx = None;
        let panicked = self
            .handle
            .take()
            .map(|h| h.join().is_err())
            .unwrap_or(false);
        if panicked || self.received < self.expected {
            Some(Err(DataError::Invalid(format!(
                "data loader thread stopped after {} of {} batches{}",
                self.received,
                self.expected,
                if panicked { " (it panicked)" } else { "" }
            ))))
        } else {
            None
        }
    }
}

impl<B> Drop for EpochBatches<B> {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, so it exits.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
