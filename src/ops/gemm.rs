//! Bounds-checked f32 matrix products on strided slices, through the `gemm` crate.
//!
//! A matrix is a slice plus a row stride and a column stride, so transposes are free:
//! [`Mat::t`] swaps the strides.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use gemm::Parallelism;

use super::simd::{self, Level};
use super::uninit::written;

/// A read-only `rows x cols` matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows x cols` matrix at the start of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// Matrix with explicit strides.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        let m = Self {
            data,
            rows,
            cols,
            rs,
            cs,
        };
        assert!(m.fits(data.len()), "matrix exceeds its slice");
        m
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// A writable `rows x cols` matrix, row-major with row stride `cols`: initialized
/// ([`MatMut::new`]) or write-only over uninitialized slots ([`MatMut::uninit`]).
pub(crate) struct MatMut<'a> {
    data: *mut f32,
    rows: usize,
    cols: usize,
    /// Whether the elements may be read (needed to accumulate).
    readable: bool,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// Row-major `rows x cols` matrix at the start of `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(rows * cols <= data.len(), "matrix exceeds its slice");
        Self {
            data: data.as_mut_ptr(),
            rows,
            cols,
            readable: true,
            _borrow: PhantomData,
        }
    }

    /// Row-major `rows x cols` matrix over uninitialized slots, which a product without
    /// accumulation overwrites in full.
    pub fn uninit(data: &'a mut [MaybeUninit<f32>], rows: usize, cols: usize) -> Self {
        assert!(rows * cols <= data.len(), "matrix exceeds its slice");
        Self {
            data: data.as_mut_ptr().cast(),
            rows,
            cols,
            readable: false,
            _borrow: PhantomData,
        }
    }
}

/// `lhs · rhs` as a new row-major matrix.
pub(crate) fn product(lhs: Mat, rhs: Mat, threads: Threads) -> Vec<f32> {
    let (m, n) = (lhs.rows, rhs.cols);
    // SAFETY: the product without accumulation overwrites all `m * n` slots.
    unsafe {
        written(m * n, |dst| {
            matmul(MatMut::uninit(dst, m, n), lhs, rhs, false, threads)
        })
    }
}

/// How one product uses the worker threads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Threads {
    /// On the calling thread (the caller parallelizes over independent products).
    One,
    /// Split across the rayon pool.
    All,
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` with `accumulate`.
///
/// Panics if the shapes do not chain, or if `accumulate` is asked of a write-only `dst`.
pub(crate) fn matmul(dst: MatMut, lhs: Mat, rhs: Mat, accumulate: bool, threads: Threads) {
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "matmul: {}x{} · {}x{} into {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        dst.rows,
        dst.cols
    );
    assert!(
        dst.readable || !accumulate,
        "matmul: cannot accumulate into uninitialized memory"
    );
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: `dst` covers `m * n` slots of its borrow (checked by its constructor).
            unsafe { std::ptr::write_bytes(dst.data, 0, m * n) };
        }
        return;
    }
    if pack_through_transpose(lhs, rhs) {
        let t = product(rhs.t(), lhs.t(), threads);
        // SAFETY: `dst` covers `m * n` slots of its borrow, readable with `accumulate`.
        unsafe { add_transposed(&t, dst.data, m, n, accumulate) };
        return;
    }
    let parallelism = match threads {
        Threads::One => Parallelism::None,
        Threads::All => Parallelism::Rayon(rayon::current_num_threads()),
    };
    // SAFETY: every matrix was checked to lie inside its slice (`Mat::strided`, `MatMut`'s
    // constructors), `dst` is borrowed mutably so it aliases neither operand, the shapes chain,
    // and without `accumulate` gemm only writes `dst`.
    unsafe { tile().kernel()(dst.data, m, n, lhs, rhs, accumulate, parallelism) }
}

/// Whether `lhs · rhs` costs less computed as `(rhsᵀ · lhsᵀ)ᵀ` through a buffer. Where both
/// operands run along the inner dimension k (a weight gradient: output gradient times input),
/// gemm's driver copies one of them into panels that run along the rows: `rhsᵀ`, n × k values,
/// for a row-major output. Through the transpose it copies `lhs`, m × k, and the buffer adds
/// about 2 m n; worth it where the copy saved is twice that.
fn pack_through_transpose(lhs: Mat, rhs: Mat) -> bool {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    lhs.cs == 1 && rhs.rs == 1 && m < n && (n - m) * k > 4 * m * n
}

/// `dst (m × n, row-major) = tᵀ`, or `+= tᵀ` with `accumulate`, for `t` n × m row-major.
///
/// # Safety
/// `dst` holds `m * n` writable slots, readable with `accumulate`.
unsafe fn add_transposed(t: &[f32], dst: *mut f32, m: usize, n: usize, accumulate: bool) {
    assert_eq!(
        t.len(),
        m * n,
        "add_transposed: {m}x{n} from {} values",
        t.len()
    );
    for i in 0..m {
        for (j, &v) in t[i..].iter().step_by(m).enumerate() {
            // SAFETY: `i * n + j < m * n`, a slot of `dst` (the caller's promise), read only
            // with `accumulate`.
            unsafe {
                let d = dst.add(i * n + j);
                if accumulate {
                    *d += v;
                } else {
                    d.write(v);
                }
            }
        }
    }
}

/// The set of gemm's microkernels that runs a product.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tile {
    /// 16-lane AVX-512 FMAs, a 64 × 6 block of the output in registers.
    Avx512,
    /// 8-lane AVX2 FMAs, a 16 × 6 block.
    Avx2,
    /// Whatever gemm picks (below AVX2 + FMA, or off x86-64).
    Auto,
}

/// The tile for this CPU and [`simd::level`]. gemm's own choice would be the AVX-512 tile on
/// every AVX-512 CPU, Zen 4 included, where it made a 32² training step 1.19× slower.
pub(crate) fn tile() -> Tile {
    match simd::level() {
        Level::Avx512 if simd::full_width_512() => Tile::Avx512,
        Level::Avx512 | Level::Avx2 => Tile::Avx2,
        Level::Base => Tile::Auto,
    }
}

/// `dst (m × n, row-major) = lhs · rhs`, or `+=` with `accumulate`, on raw parts.
type Kernel = unsafe fn(*mut f32, usize, usize, Mat, Mat, bool, Parallelism);

impl Tile {
    fn kernel(self) -> Kernel {
        match self {
            #[cfg(target_arch = "x86_64")]
            Tile::Avx512 => tiles::avx512,
            #[cfg(target_arch = "x86_64")]
            Tile::Avx2 => tiles::avx2,
            _ => auto,
        }
    }
}

/// gemm's own dispatch.
///
/// # Safety
/// `dst` holds `m * n` writable slots, readable with `accumulate`, aliasing neither operand.
unsafe fn auto(dst: *mut f32, m: usize, n: usize, lhs: Mat, rhs: Mat, add: bool, p: Parallelism) {
    // SAFETY: the operands lie in their slices (their constructors); `dst` as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            lhs.cols,
            dst,
            1,
            n as isize,
            add,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            p,
        )
    }
}

/// gemm's driver instantiated with one microkernel set, as its own dispatch instantiates it.
#[cfg(target_arch = "x86_64")]
mod tiles {
    use gemm::Parallelism;
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::{V3, V4};
    use gemm_f32::microkernel::{avx512f::f32 as wide, fma::f32 as narrow};

    use super::{auto, Mat};

    /// Defines `unsafe fn $name`, a [`super::Kernel`] that calls gemm's driver with `$simd` and
    /// the microkernels of `$set` (`$lanes` per vector), or gemm's own dispatch where this CPU
    /// lacks `$simd`'s features. Its callers promise what [`auto`]'s do.
    macro_rules! tile_kernel {
        ($(#[$doc:meta])* $name:ident, $simd:ident, $set:ident, $lanes:literal) => {
            $(#[$doc])*
            pub(super) unsafe fn $name(
                dst: *mut f32,
                m: usize,
                n: usize,
                lhs: Mat,
                rhs: Mat,
                add: bool,
                p: Parallelism,
            ) {
                let Some(simd) = $simd::try_new() else {
                    // SAFETY: the caller's promises are `auto`'s.
                    return unsafe { auto(dst, m, n, lhs, rhs, add, p) };
                };
                // As gemm's entry point does: a row-major `dst` is computed as its transpose,
                // `rhsᵀ · lhsᵀ` into a column-major matrix, the layout its microkernels write.
                let (rows, cols, dst_cs, dst_rs, lhs, rhs) = if 1 < n {
                    (n, m, n as isize, 1, rhs.t(), lhs.t())
                } else {
                    (m, n, 1, n as isize, lhs, rhs)
                };
                // SAFETY: the features the kernels need were detected (`try_new`); the operands
                // lie in their slices and `dst` is as the caller promises.
                unsafe {
                    gemm_basic_generic::<
                        _,
                        f32,
                        $lanes,
                        { $set::MR_DIV_N * $lanes },
                        { $set::NR },
                        { $set::MR_DIV_N },
                        { $set::H_M },
                        { $set::H_N },
                    >(
                        simd,
                        rows,
                        cols,
                        lhs.cols,
                        dst,
                        dst_cs,
                        dst_rs,
                        add,
                        lhs.data.as_ptr(),
                        lhs.cs as isize,
                        lhs.rs as isize,
                        rhs.data.as_ptr(),
                        rhs.cs as isize,
                        rhs.rs as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        |a, b, c| a * b + c,
                        &$set::UKR,
                        &$set::H_UKR,
                        false,
                        p,
                    )
                }
            }
        };
    }

    tile_kernel!(
        /// The AVX-512 tile.
        avx512, V4, wide, 16
    );
    tile_kernel!(
        /// The AVX2 + FMA tile.
        avx2, V3, narrow, 8
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a(i, l) * b(l, j)).sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_and_accumulation() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v % 5) as f32 - 2.0).collect();
        // a as row-major m x k, b stored transposed (n x k) and read through `t`.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let want = naive(m, n, k, |i, l| a[i * k + l], |l, j| b[l * n + j]);
        for threads in [Threads::One, Threads::All] {
            let mut out = vec![1.0; m * n];
            let (lhs, rhs) = (Mat::new(&a, m, k), Mat::new(&bt, n, k).t());
            matmul(MatMut::new(&mut out, m, n), lhs, rhs, false, threads);
            assert_eq!(out, want);
            matmul(MatMut::new(&mut out, m, n), lhs, rhs, true, threads);
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_eq!(out, twice);
        }
        let mut out = vec![1.0; 4];
        matmul(
            MatMut::new(&mut out, 2, 2),
            Mat::new(&[], 2, 0),
            Mat::new(&[], 0, 2),
            false,
            Threads::One,
        );
        assert_eq!(out, [0.0; 4]);
    }

    /// An m × k left operand and an n × k one to be read transposed, of small exact values.
    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..m * k).map(|v| ((v * 7) % 13) as f32 * 0.25 - 1.5);
        let bt = (0..n * k).map(|v| ((v * 5) % 11) as f32 * 0.5 - 2.0);
        (a.collect(), bt.collect())
    }

    /// `lhs · rhs` summed in f64, row-major.
    fn reference(lhs: Mat, rhs: Mat) -> Vec<f64> {
        let at = |m: Mat, i: usize, j: usize| m.data[i * m.rs + j * m.cs] as f64;
        let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
        (0..m * n)
            .map(|i| (0..k).map(|l| at(lhs, i / n, l) * at(rhs, l, i % n)).sum())
            .collect()
    }

    /// Each tile this CPU has, on shapes that take each of gemm's paths (outer products for
    /// k ≤ 2, matrix-vector for n = 1, the small-output kernel, the blocked driver with
    /// partial tiles), with transposed operands and accumulation, against f64 sums.
    #[test]
    fn every_tile_matches_the_reference() {
        let shapes = [
            (3, 5, 2),
            (37, 1, 19),
            (9, 11, 7),
            (70, 13, 40),
            (131, 67, 29),
        ];
        let mut tiles = vec![Tile::Auto];
        match simd::level() {
            Level::Avx512 => tiles.extend([Tile::Avx2, Tile::Avx512]),
            Level::Avx2 => tiles.push(Tile::Avx2),
            Level::Base => {}
        }
        for &(m, n, k) in &shapes {
            let (a, bt) = operands(m, n, k);
            let (lhs, rhs) = (Mat::new(&a, m, k), Mat::new(&bt, n, k).t());
            let want = reference(lhs, rhs);
            for &tile in &tiles {
                let mut out = vec![1.0f32; m * n];
                // SAFETY: `out` holds m * n initialized slots and aliases neither operand.
                unsafe { tile.kernel()(out.as_mut_ptr(), m, n, lhs, rhs, true, Parallelism::None) };
                for (i, (&got, &w)) in out.iter().zip(&want).enumerate() {
                    let err = (got as f64 - (w + 1.0)).abs();
                    assert!(
                        err <= 1e-4 * (1.0 + w.abs()),
                        "{tile:?} {m}x{n}x{k} [{i}]: {got} vs {w}"
                    );
                }
            }
        }
    }

    /// A weight-gradient shape (both operands along k, m well below n) goes through the
    /// transposed product; the result is the product's, written and accumulated.
    #[test]
    fn products_through_the_transpose_match_the_reference() {
        let (m, n, k) = (5, 40, 300);
        let (a, bt) = operands(m, n, k);
        let (lhs, rhs) = (Mat::new(&a, m, k), Mat::new(&bt, n, k).t());
        assert!(pack_through_transpose(lhs, rhs));
        assert!(!pack_through_transpose(rhs.t(), lhs.t()));
        let want = reference(lhs, rhs);
        for threads in [Threads::One, Threads::All] {
            let mut out = vec![1.0f32; m * n];
            matmul(MatMut::new(&mut out, m, n), lhs, rhs, true, threads);
            let fresh = product(lhs, rhs, threads);
            for i in 0..m * n {
                let tol = 1e-4 * (1.0 + want[i].abs());
                assert!(
                    (out[i] as f64 - (want[i] + 1.0)).abs() <= tol,
                    "[{i}] {}",
                    out[i]
                );
                assert!(
                    (fresh[i] as f64 - want[i]).abs() <= tol,
                    "[{i}] {}",
                    fresh[i]
                );
            }
        }
    }

    #[test]
    fn the_tile_follows_the_simd_level() {
        assert_eq!(simd::capped(Level::Base, tile), Tile::Auto);
        assert_ne!(simd::capped(Level::Avx2, tile), Tile::Avx512);
        if simd::level() == Level::Avx512 {
            assert_eq!(tile() == Tile::Avx512, simd::full_width_512());
        }
    }

    #[test]
    fn write_only_destination_is_overwritten() {
        let (a, b) = ([1.0f32, 2.0, 3.0, 4.0], [5.0f32, 6.0, 7.0, 8.0]);
        let mut out: Vec<std::mem::MaybeUninit<f32>> = vec![std::mem::MaybeUninit::uninit(); 4];
        let (lhs, rhs) = (Mat::new(&a, 2, 2), Mat::new(&b, 2, 2));
        matmul(
            MatMut::uninit(&mut out, 2, 2),
            lhs,
            rhs,
            false,
            Threads::One,
        );
        // SAFETY: the product wrote all four slots.
        let out: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(out, [19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    #[should_panic(expected = "uninitialized")]
    fn refuses_to_accumulate_into_uninitialized_memory() {
        let mut out = vec![std::mem::MaybeUninit::uninit(); 1];
        let one = [1.0f32];
        let m = Mat::new(&one, 1, 1);
        matmul(MatMut::uninit(&mut out, 1, 1), m, m, true, Threads::One);
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn rejects_out_of_bounds_matrices() {
        Mat::strided(&[0.0; 5], 2, 3, 3, 1);
    }
}
