//! Values a convolution kernel reads image by image or channel row by channel row (its input,
//! its output's gradient): a whole tensor's elements, or a per-channel op's result computed one
//! image (or row) at a time into a scratch buffer just before the kernel's products or sums on
//! it, while the kernel's own reads find it in cache.

use std::mem::MaybeUninit;

use super::uninit::assume_written;

/// Values of an `[N, …]` tensor that can be computed one image at a time.
pub(crate) trait ImageSource: Sync {
    /// Elements per image.
    fn image_len(&self) -> usize;

    /// Image `i` into `dst` (its first `image_len()` slots), on the calling thread.
    fn image(&self, i: usize, dst: &mut [MaybeUninit<f32>]);

    /// Every image, computed in parallel, with the same bits as [`ImageSource::image`].
    fn all(&self) -> Vec<f32>;

    /// Elements per channel row, `S` of `[N, C, S]`.
    fn row_len(&self) -> usize;

    /// Row `r` (channel `r % C` of image `r / C`) into `dst` (its first `row_len()` slots), on
    /// the calling thread, with the same bits as [`ImageSource::image`].
    fn row(&self, r: usize, dst: &mut [MaybeUninit<f32>]);
}

/// A batch of values as a kernel reads them: the elements of a whole tensor, or an
/// [`ImageSource`] whose images the kernel writes into scratch as it needs them.
#[derive(Clone, Copy)]
pub(super) enum Batch<'a> {
    Whole(&'a [f32]),
    Images(&'a dyn ImageSource),
}

impl Batch<'_> {
    /// The whole batch: the slice itself, or written into `owned`.
    pub fn whole<'s>(&'s self, owned: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            Batch::Whole(v) => v,
            Batch::Images(source) => {
                *owned = source.all();
                owned
            }
        }
    }

    /// Whether the batch holds `n` images of `len` elements.
    pub fn holds(&self, n: usize, len: usize) -> bool {
        match self {
            Batch::Whole(v) => v.len() == n * len,
            Batch::Images(source) => source.image_len() == len,
        }
    }

    /// Image `i`'s `len` elements: a slice of the whole batch, or written into `scratch`.
    pub fn image<'s>(&'s self, i: usize, len: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            Batch::Whole(v) => &v[i * len..(i + 1) * len],
            Batch::Images(source) => {
                assert_eq!(len, source.image_len(), "image source: image length");
                let slots = spare(scratch, len);
                source.image(i, slots);
                // SAFETY: `ImageSource::image` writes all of an image's slots, `len` of them.
                unsafe { assume_written(slots) }
            }
        }
    }

    /// Channel row `r`'s `len` elements: a slice of the whole batch, or written into `scratch`.
    pub fn row<'s>(&'s self, r: usize, len: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            Batch::Whole(v) => &v[r * len..(r + 1) * len],
            Batch::Images(source) => {
                assert_eq!(len, source.row_len(), "image source: row length");
                let slots = spare(scratch, len);
                source.row(r, slots);
                // SAFETY: `ImageSource::row` writes all of a row's slots, `len` of them.
                unsafe { assume_written(slots) }
            }
        }
    }
}

/// `len` uninitialized slots of `scratch`, emptied first.
fn spare(scratch: &mut Vec<f32>, len: usize) -> &mut [MaybeUninit<f32>] {
    scratch.clear();
    scratch.reserve(len);
    &mut scratch.spare_capacity_mut()[..len]
}
