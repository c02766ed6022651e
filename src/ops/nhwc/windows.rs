//! The windows of a k×k convolution on a channels-last map as the left operand of a tile
//! product ([`Segments`]): each output pixel's window read in place, in pieces.

use std::ops::Range;

use super::tile::{Segments, MR};
use super::{Nhwc, Window};

/// The windows of a k×k convolution (padding k / 2), read in place from the input map.
pub(crate) struct Windows<'a> {
    pub x: &'a [f32],
    pub shape: Nhwc,
    pub win: Window,
    pub out: Nhwc,
    /// `k·C` zeros: the part of a window outside the map.
    pub zeros: Vec<f32>,
}

impl Windows<'_> {
    /// The output pixels of a tile, `(image, oy, ox)`; a tile shorter than [`MR`] repeats its
    /// last pixel. One division per tile: the rest step along the map.
    fn pixels(&self, rows: Range<usize>) -> [(usize, usize, usize); MR] {
        let out = self.out;
        let r = rows.start;
        let mut at = (r / (out.h * out.w), r / out.w % out.h, r % out.w);
        std::array::from_fn(|i| {
            let here = at;
            if rows.start + i + 1 < rows.end {
                at.2 += 1;
                if at.2 == out.w {
                    at = (at.0, at.1 + 1, 0);
                    if at.1 == out.h {
                        at = (at.0 + 1, 0, 0);
                    }
                }
            }
            here
        })
    }

    /// The first input column of output column `ox`'s window, if the whole window row is inside.
    fn inside(&self, ox: usize) -> Option<usize> {
        let k = self.win.kernel;
        (ox * self.win.stride)
            .checked_sub(k / 2)
            .filter(|&ix| ix + k <= self.shape.w)
    }

    /// Input row `iy` of image `b`: `W·C` values.
    fn line(&self, b: usize, iy: usize) -> &[f32] {
        let (w, c) = (self.shape.w, self.shape.c);
        &self.x[(b * self.shape.h + iy) * w * c..][..w * c]
    }

    /// The windows of output pixels `rows`, row after row (`k·k·C` values each, tap-major).
    pub fn patches(&self, rows: Range<usize>) -> Vec<f32> {
        let width = self.win.kernel * self.win.kernel * self.shape.c;
        let mut buf = vec![0.0; rows.len() * width];
        for (m0, block) in rows.clone().step_by(MR).zip(buf.chunks_mut(MR * width)) {
            let px = self.pixels(m0..(m0 + MR).min(rows.end));
            for (dst, &at) in block.chunks_exact_mut(width).zip(&px) {
                self.patch(at, dst);
            }
        }
        buf
    }

    /// Writes the window of output pixel `(b, oy, ox)` into `dst`: `k·k·C` values, tap-major.
    /// A window row that lies inside the map is `k·C` contiguous input values, copied at once.
    fn patch(&self, (b, oy, ox): (usize, usize, usize), dst: &mut [f32]) {
        let (c, k) = (self.shape.c, self.win.kernel);
        for (ky, row) in dst.chunks_exact_mut(k * c).enumerate() {
            let Some(iy) = self.win.source(oy, ky, self.shape.h) else {
                row.fill(0.0);
                continue;
            };
            let line = self.line(b, iy);
            match self.inside(ox) {
                Some(ix) => copy(row, &line[ix * c..(ix + k) * c]),
                None => {
                    for (kx, tap) in row.chunks_exact_mut(c).enumerate() {
                        match self.win.source(ox, kx, self.shape.w) {
                            Some(ix) => copy(tap, &line[ix * c..(ix + 1) * c]),
                            None => tap.fill(0.0),
                        }
                    }
                }
            }
        }
    }
}

/// A tile's segments: one per window row (`k·C` values) when every window of the tile lies inside
/// the map horizontally, else one per tap (`C` values).
impl Segments for Windows<'_> {
    fn tile<'a>(&'a self, rows: Range<usize>, out: &mut Vec<[&'a [f32]; MR]>) -> usize {
        let (k, c) = (self.win.kernel, self.shape.c);
        let px = self.pixels(rows);
        let whole_rows = px.iter().all(|p| self.inside(p.2).is_some());
        let (h, w) = (self.shape.h, self.shape.w);
        for ky in 0..k {
            if whole_rows {
                out.push(std::array::from_fn(|r| {
                    let (b, oy, ox) = px[r];
                    match (self.win.source(oy, ky, h), self.inside(ox)) {
                        (Some(iy), Some(ix)) => &self.line(b, iy)[ix * c..(ix + k) * c],
                        _ => &self.zeros[..k * c],
                    }
                }));
                continue;
            }
            for kx in 0..k {
                out.push(std::array::from_fn(|r| {
                    let (b, oy, ox) = px[r];
                    match (self.win.source(oy, ky, h), self.win.source(ox, kx, w)) {
                        (Some(iy), Some(ix)) => &self.line(b, iy)[ix * c..(ix + 1) * c],
                        _ => &self.zeros[..c],
                    }
                }));
            }
        }
        if whole_rows {
            k * c
        } else {
            c
        }
    }
}

/// An element loop: a `memcpy` call costs more than the copy for the few values of a tap.
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
}
