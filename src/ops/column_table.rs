//! im2col and its adjoint for small planes, through index tables.
//!
//! On a plane a few pixels wide, [`super::window`]'s row-by-row copies move four to eight
//! values per call, and the calls cost more than the values. Here a table lists, for every
//! (kernel tap, output pixel) entry of the column matrix, the input pixel it reads or none
//! (padding); unfolding a plane is one gather over the table. Folding back (col2im) gathers
//! too: a second table lists, for every input pixel, the entries that read it in increasing tap
//! order, the order in which the row-by-row adjoint adds them, so the sums are the same bits.

use std::mem::MaybeUninit;

use super::window::Window;

/// The column entries of one window: `kh · kw` rows of `L = OH · OW` outputs each, row `t`
/// stored `stride` apart in the column matrix.
pub(crate) struct ColumnTable {
    /// Entry `t · L + o` reads input pixel `read[t · L + o]`; `H · W` (one past the plane)
    /// where it reads padding.
    read: Vec<u32>,
    /// Input pixels grouped by how many entries read them: `(count, pixels)`.
    groups: Vec<(usize, Vec<u32>)>,
    /// The entries reading each pixel of each group, group after group, pixel after pixel:
    /// positions `t · stride + o` in the column matrix, by increasing tap.
    at: Vec<u32>,
    l: usize,
    stride: usize,
    plane: usize,
}

impl ColumnTable {
    /// The table of window `g` with `kh` kernel rows, for column rows `stride` apart
    /// (`stride ≥ OH · OW`). Panics where a position does not fit 32 bits.
    pub fn new(g: &Window, kh: usize, stride: usize) -> Self {
        let (l, plane) = (g.oh * g.ow, g.h * g.w);
        assert!(stride >= l, "column table: rows overlap");
        let index = |v: usize| u32::try_from(v).expect("column table: a position over 32 bits");
        let mut read = Vec::with_capacity(kh * g.kw * l);
        let mut readers = vec![Vec::new(); plane];
        for i in 0..kh {
            for j in 0..g.kw {
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        let col = (ow * g.stride + j).checked_sub(g.pad).filter(|&c| c < g.w);
                        let p = g.in_row(oh, i).zip(col).map(|(r, c)| r * g.w + c);
                        if let Some(p) = p {
                            readers[p].push(index((i * g.kw + j) * stride + oh * g.ow + ow));
                        }
                        read.push(index(p.unwrap_or(plane)));
                    }
                }
            }
        }
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        for (p, r) in readers.iter().enumerate() {
            match groups.iter_mut().find(|(count, _)| *count == r.len()) {
                Some((_, pixels)) => pixels.push(index(p)),
                None => groups.push((r.len(), vec![index(p)])),
            }
        }
        let at = groups
            .iter()
            .flat_map(|(_, pixels)| {
                pixels
                    .iter()
                    .flat_map(|&p| readers[p as usize].iter().copied())
            })
            .collect();
        Self {
            read,
            groups,
            at,
            l,
            stride,
            plane,
        }
    }

    /// Writes plane `x`'s column rows into `rows`: entry `(t, o)` at `rows[t · stride + o]`,
    /// zero where it reads padding. Slots between rows are left as they are. `padded` is
    /// scratch for a copy of the plane with a zero after it.
    pub fn unfold(&self, x: &[f32], rows: &mut [MaybeUninit<f32>], padded: &mut Vec<f32>) {
        padded.clear();
        padded.extend_from_slice(&x[..self.plane]);
        padded.push(0.0);
        for (t, reads) in self.read.chunks_exact(self.l).enumerate() {
            let row = &mut rows[t * self.stride..t * self.stride + self.l];
            for (slot, &p) in row.iter_mut().zip(reads) {
                slot.write(padded[p as usize]);
            }
        }
    }

    /// The adjoint of [`ColumnTable::unfold`]: each input pixel of `dx` set to the sum of the
    /// entries of `rows` that read it, added in increasing tap order from zero. Pixels with as
    /// many entries go together, so the inner loop runs the same number of times.
    pub fn fold(&self, rows: &[f32], dx: &mut [MaybeUninit<f32>]) {
        let mut at = self.at.as_slice();
        for (count, pixels) in &self.groups {
            let (group, rest) = at.split_at(count * pixels.len());
            at = rest;
            if *count == 0 {
                pixels.iter().for_each(|&p| {
                    dx[p as usize].write(0.0);
                });
                continue;
            }
            for (&p, entries) in pixels.iter().zip(group.chunks_exact(*count)) {
                let mut sum = 0f32;
                for &e in entries {
                    sum += rows[e as usize];
                }
                dx[p as usize].write(sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unfolding matches a direct evaluation of each entry, and folding is its adjoint:
    /// `⟨unfold(x), r⟩ = ⟨x, fold(r)⟩`, on windows with padding, strides 1 and 2 and gaps
    /// between rows.
    #[test]
    fn unfolds_entries_and_folds_as_the_adjoint() {
        for (h, w, k, stride, pad) in [
            (5, 4, 3, 1, 1),
            (8, 8, 3, 2, 1),
            (7, 6, 5, 2, 2),
            (3, 3, 1, 1, 0),
        ] {
            let g = Window::new(h, w, k, k, stride, pad).expect("a window");
            let l = g.oh * g.ow;
            let gap = l + 3;
            let table = ColumnTable::new(&g, k, gap);
            let x: Vec<f32> = (0..h * w).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut rows = vec![MaybeUninit::new(9.0f32); k * k * gap];
            table.unfold(&x, &mut rows, &mut Vec::new());
            // SAFETY: every slot was initialized when the vector was made.
            let rows: Vec<f32> = rows.iter().map(|v| unsafe { v.assume_init() }).collect();
            for t in 0..k * k {
                let (i, j) = (t / k, t % k);
                for o in 0..l {
                    let (r, c) = (
                        (o / g.ow * stride + i) as isize,
                        (o % g.ow * stride + j) as isize,
                    );
                    let (r, c) = (r - pad as isize, c - pad as isize);
                    let inside = (0..h as isize).contains(&r) && (0..w as isize).contains(&c);
                    let want = if inside {
                        x[r as usize * w + c as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(
                        rows[t * gap + o],
                        want,
                        "{h}x{w} k {k} s {stride}: ({t}, {o})"
                    );
                }
                assert!(rows[t * gap + l..(t + 1) * gap].iter().all(|&v| v == 9.0));
            }
            let r: Vec<f32> = (0..rows.len()).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut dx = vec![MaybeUninit::new(0f32); h * w];
            table.fold(&r, &mut dx);
            // SAFETY: every slot was initialized when the vector was made.
            let dx: Vec<f32> = dx.iter().map(|v| unsafe { v.assume_init() }).collect();
            let entries: f64 = (0..k * k)
                .flat_map(|t| (0..l).map(move |o| t * gap + o))
                .map(|e| f64::from(rows[e]) * f64::from(r[e]))
                .sum();
            let pixels: f64 = x
                .iter()
                .zip(&dx)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!((entries - pixels).abs() < 1e-4, "{entries} vs {pixels}");
        }
    }
}
