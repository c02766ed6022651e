//! Geometry of a strided, zero-padded convolution window over one image plane.
//!
//! The kernels never test for padding inside their inner loops. Instead, for each kernel
//! column `j` a [`Tap`] records the range of output columns whose input column lies inside the
//! image; outside that range the padded input is zero and contributes nothing. Strided reads
//! are made contiguous by the *phased* layout: input row `ih` is split into `stride` phase rows,
//! phase `r` holding columns `r, r + stride, r + 2 * stride, ...`. Output column `ow` of tap `j`
//! then reads element `ow - lo + src` of one phase row, so every inner loop walks two
//! contiguous slices. With stride 1 the phased layout is the plane itself.

use std::mem::MaybeUninit;

use candle_core::{bail, Result};

use super::uninit::filled;
use super::vecmath::{deinterleave, interleave_uninit};

/// One strided, zero-padded window: input size, kernel width, stride, padding and output size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub h: usize,
    pub w: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
    /// Length of a phase row: `ceil(w / stride)`.
    phase_len: usize,
}

/// The output columns `lo..hi` that one kernel column reaches inside the image, the phase row
/// they read, and the position `src` in that phase row read by output column `lo`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tap {
    pub lo: usize,
    pub hi: usize,
    pub phase: usize,
    pub src: usize,
}

impl Tap {
    /// The slice of a phase row read by output columns `lo..hi`.
    #[inline(always)]
    pub fn input<'a>(&self, phase_row: &'a [f32]) -> &'a [f32] {
        &phase_row[self.src..self.src + (self.hi - self.lo)]
    }

    /// Mutable form of [`Tap::input`].
    #[inline(always)]
    pub fn input_mut<'a>(&self, phase_row: &'a mut [f32]) -> &'a mut [f32] {
        &mut phase_row[self.src..self.src + (self.hi - self.lo)]
    }
}

impl Window {
    /// Window of a `kh x kw` kernel over an `h x w` plane; output size is
    /// `floor((h + 2 * pad - kh) / stride) + 1` (and likewise for the width).
    pub fn new(
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        if stride == 0 || h == 0 || w == 0 || kh == 0 || kw == 0 {
            bail!("conv window: zero size (input {h}x{w}, kernel {kh}x{kw}, stride {stride})")
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            bail!("conv window: kernel {kh}x{kw} larger than padded input {h}x{w} (padding {pad})")
        }
        Ok(Self {
            h,
            w,
            kw,
            stride,
            pad,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
            phase_len: w.div_ceil(stride),
        })
    }

    /// Input row read by output row `oh` at kernel row `i`, or `None` where it is padding.
    #[inline(always)]
    pub fn in_row(&self, oh: usize, i: usize) -> Option<usize> {
        (oh * self.stride + i)
            .checked_sub(self.pad)
            .filter(|&ih| ih < self.h)
    }

    /// One [`Tap`] per kernel column.
    pub fn taps(&self) -> Vec<Tap> {
        let (s, w, ow) = (self.stride as isize, self.w as isize, self.ow as isize);
        (0..self.kw)
            .map(|j| {
                // Output column `o` reads input column `o * s + off`, valid when inside 0..w.
                let off = j as isize - self.pad as isize;
                let lo = if off < 0 { (-off + s - 1) / s } else { 0 };
                let hi = ((w - 1 - off).div_euclid(s) + 1).clamp(0, ow);
                let lo = lo.min(hi);
                let src = if lo < hi { lo + off.div_euclid(s) } else { 0 };
                Tap {
                    lo: lo as usize,
                    hi: hi as usize,
                    phase: off.rem_euclid(s) as usize,
                    src: src as usize,
                }
            })
            .collect()
    }

    /// Number of elements of a plane in phased layout.
    pub fn phased_len(&self) -> usize {
        self.h * self.stride * self.phase_len
    }

    /// Phase row `phase` of input row `ih` in a phased plane.
    #[inline(always)]
    pub fn phase_row<'a>(&self, phased: &'a [f32], ih: usize, phase: usize) -> &'a [f32] {
        let start = (ih * self.stride + phase) * self.phase_len;
        &phased[start..start + self.phase_len]
    }

    /// Mutable form of [`Window::phase_row`].
    #[inline(always)]
    pub fn phase_row_mut<'a>(
        &self,
        phased: &'a mut [f32],
        ih: usize,
        phase: usize,
    ) -> &'a mut [f32] {
        let start = (ih * self.stride + phase) * self.phase_len;
        &mut phased[start..start + self.phase_len]
    }

    /// The `h x w` plane in phased layout: the plane itself for stride 1, otherwise a
    /// de-interleaved copy written into `buf`.
    pub fn phased<'a>(&self, plane: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
        if self.stride == 1 {
            return plane;
        }
        // Every slot is written below (the phases' tails past the row with zeros), so a buffer
        // reused plane after plane is not zeroed first.
        buf.resize(self.phased_len(), 0.0);
        for (row, phases) in plane
            .chunks_exact(self.w)
            .zip(buf.chunks_exact_mut(self.stride * self.phase_len))
        {
            if self.stride == 2 {
                let (even, odd) = phases.split_at_mut(self.phase_len);
                let (odd, tail) = odd.split_at_mut(self.w / 2);
                deinterleave(row, even, odd);
                tail.fill(0.0);
                continue;
            }
            for (r, dst) in phases.chunks_exact_mut(self.phase_len).enumerate() {
                let mut values = row.get(r..).unwrap_or(&[]).iter().step_by(self.stride);
                dst.fill_with(|| values.next().copied().unwrap_or(0.0));
            }
        }
        buf
    }

    /// Runs `fill` on a zeroed plane in phased layout and writes the result, re-interleaved,
    /// into every slot of `out`. For stride 1, `fill` runs on `out` itself, zeroed first.
    pub fn fill_phased(
        &self,
        out: &mut [MaybeUninit<f32>],
        buf: &mut Vec<f32>,
        fill: impl FnOnce(&mut [f32]),
    ) {
        if self.stride == 1 {
            return fill(filled(out, std::iter::repeat(0.0)));
        }
        buf.clear();
        buf.resize(self.phased_len(), 0.0);
        fill(buf);
        for (row, phases) in out
            .chunks_exact_mut(self.w)
            .zip(buf.chunks_exact(self.stride * self.phase_len))
        {
            if self.stride == 2 {
                let (even, odd) = phases.split_at(self.phase_len);
                interleave_uninit(even, &odd[..self.w / 2], row);
                continue;
            }
            // Phases `0 .. min(stride, w)` together cover every column of the row.
            for (r, src) in phases.chunks_exact(self.phase_len).enumerate().take(self.w) {
                for (d, &v) in row[r..].iter_mut().step_by(self.stride).zip(src) {
                    d.write(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads output column `o` of every tap through the phased layout and checks it against
    /// direct indexing of the padded row.
    #[test]
    fn taps_read_the_padded_row() -> Result<()> {
        for (w, k, stride, pad) in [
            (7, 3, 1, 1),
            (8, 5, 2, 2),
            (6, 3, 2, 1),
            (1, 5, 1, 2),
            (2, 5, 3, 2),
            (9, 1, 2, 0),
        ] {
            let g = Window::new(1, w, 1, k, stride, pad)?;
            let row: Vec<f32> = (0..w).map(|c| c as f32 + 1.0).collect();
            let mut buf = Vec::new();
            let phased = g.phased(&row, &mut buf).to_vec();
            for (j, tap) in g.taps().iter().enumerate() {
                let read = tap.input(g.phase_row(&phased, 0, tap.phase));
                for o in 0..g.ow {
                    let col = (o * stride + j).checked_sub(pad).filter(|&c| c < w);
                    let expected = col.map_or(0.0, |c| row[c]);
                    let got = if (tap.lo..tap.hi).contains(&o) {
                        read[o - tap.lo]
                    } else {
                        0.0
                    };
                    assert_eq!(got, expected, "w={w} k={k} s={stride} p={pad} j={j} o={o}");
                }
            }
            let mut back = Vec::with_capacity(w);
            g.fill_phased(&mut back.spare_capacity_mut()[..w], &mut buf, |dst| {
                dst.copy_from_slice(&phased)
            });
            // SAFETY: `fill_phased` writes every one of the `w` slots.
            unsafe { back.set_len(w) };
            assert_eq!(back, row);
        }
        Ok(())
    }

    #[test]
    fn output_size_and_padding_rows() -> Result<()> {
        let g = Window::new(9, 6, 5, 5, 2, 2)?;
        assert_eq!((g.oh, g.ow), (5, 3));
        assert_eq!(g.in_row(0, 0), None);
        assert_eq!(g.in_row(0, 2), Some(0));
        assert_eq!(g.in_row(4, 4), None);
        assert_eq!(g.in_row(4, 2), Some(8));
        assert!(Window::new(2, 2, 7, 7, 1, 2).is_err());
        Ok(())
    }

    /// A buffer that held other values (another plane's phases, a folded gradient) gives the
    /// same phased plane as a fresh one: every slot is written, the tails past a row with zeros
    /// (odd widths, and a stride wider than the row).
    #[test]
    fn phased_overwrites_a_reused_buffer() -> Result<()> {
        for (h, w, stride) in [(5, 7, 2), (4, 6, 2), (5, 7, 3), (3, 2, 3)] {
            let g = Window::new(h, w, 3, 3, stride, 1)?;
            let plane: Vec<f32> = (0..h * w).map(|i| i as f32 + 1.0).collect();
            let fresh = g.phased(&plane, &mut Vec::new()).to_vec();
            let mut dirty = vec![-7.0; g.phased_len() + 5];
            assert_eq!(
                g.phased(&plane, &mut dirty),
                fresh,
                "{h}x{w} stride {stride}"
            );
        }
        Ok(())
    }
}
