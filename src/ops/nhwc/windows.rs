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
        let mut px = [at; MR];
        for (i, p) in px.iter_mut().enumerate() {
            *p = at;
            if rows.start + i + 1 < rows.end {
                at.2 += 1;
                if at.2 == out.w {
                    at = (at.0, at.1 + 1, 0);
                    if at.1 == out.h {
                        at = (at.0 + 1, 0, 0);
                    }
                }
            }
        }
        px
    }

    /// The first input column of output column `ox`'s window, if the whole window row is inside.
    fn inside(&self, ox: usize) -> Option<usize> {
        let k = self.win.kernel;
        (ox * self.win.stride)
            .checked_sub(k / 2)
            .filter(|&ix| ix + k <= self.shape.w)
    }

    /// The segments of a tile whose pixels lie on one output row with every window row inside
    /// the map horizontally (most tiles of a wide map): one window row per `ky`, the pixels'
    /// pieces `stride·C` apart. `None` for any other tile.
    fn one_row<'s>(
        &'s self,
        px: &[(usize, usize, usize); MR],
        out: &mut Vec<[&'s [f32]; MR]>,
    ) -> Option<usize> {
        let (first, last) = (px[0], px[MR - 1]);
        if (first.0, first.1) != (last.0, last.1) {
            return None;
        }
        let ix0 = self.inside(first.2)?;
        self.inside(last.2)?;
        let (k, c, step) = (
            self.win.kernel,
            self.shape.c,
            self.win.stride * self.shape.c,
        );
        let len = k * c;
        for ky in 0..k {
            let mut seg = [&self.zeros[..len]; MR];
            if let Some(iy) = self.win.source(first.1, ky, self.shape.h) {
                let line = &self.line(first.0, iy)[ix0 * c..];
                for (s, &(.., ox)) in seg.iter_mut().zip(px) {
                    *s = &line[(ox - first.2) * step..][..len];
                }
            }
            out.push(seg);
        }
        Some(len)
    }

    /// Input row `iy` of image `b`: `W·C` values.
    fn line(&self, b: usize, iy: usize) -> &[f32] {
        let (w, c) = (self.shape.w, self.shape.c);
        &self.x[(b * self.shape.h + iy) * w * c..][..w * c]
    }
}

/// A tile's segments: one per window row (`k·C` values) when every window of the tile lies inside
/// the map horizontally, else one per tap (`C` values). Built with plain loops: this runs once per
/// tile and panel, and for a stem with three input channels it costed more than the products.
impl Segments for Windows<'_> {
    fn tile<'a>(&'a self, rows: Range<usize>, out: &mut Vec<[&'a [f32]; MR]>) -> usize {
        let (k, c) = (self.win.kernel, self.shape.c);
        let px = self.pixels(rows);
        if let Some(len) = self.one_row(&px, out) {
            return len;
        }
        let whole_rows = px.iter().all(|p| self.inside(p.2).is_some());
        let (len, taps) = if whole_rows { (k * c, 1) } else { (c, k) };
        for ky in 0..k {
            for kx in 0..taps {
                let mut seg = [&self.zeros[..len]; MR];
                for (s, &(b, oy, ox)) in seg.iter_mut().zip(&px) {
                    let Some(iy) = self.win.source(oy, ky, self.shape.h) else {
                        continue;
                    };
                    let ix = match whole_rows {
                        true => self.inside(ox),
                        false => self.win.source(ox, kx, self.shape.w),
                    };
                    if let Some(ix) = ix {
                        *s = &self.line(b, iy)[ix * c..][..len];
                    }
                }
                out.push(seg);
            }
        }
        len
    }
}
