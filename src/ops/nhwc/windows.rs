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
