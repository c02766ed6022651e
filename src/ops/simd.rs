//! Runtime CPU-feature dispatch. The release build targets baseline x86-64 (SSE2), so loops the
//! compiler vectorizes use 128-bit registers; [`multiversion!`] compiles a kernel body again
//! with AVX2 + FMA and with AVX-512 enabled and picks, on each call, the widest that this CPU
//! has ([`level`], detected once).
//!
//! A body that names a type parameter (`fn name<F>(…)`) gets a [`MulAdd`] there: fused
//! multiply-add in the AVX variants, a multiply and an add in the baseline. Results of such a
//! kernel can differ in the last bits between a CPU with FMA and one without; on one machine
//! they are the same from run to run.

use std::sync::OnceLock;

/// The widest instruction set a kernel may use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// AVX-512 F + BW with AVX2 and FMA (x86-64-v4).
    Avx512,
    /// AVX2 + FMA (x86-64-v3).
    Avx2,
    /// The build's baseline.
    Base,
}

/// This CPU's [`Level`]; `MNV4_SIMD=base|avx2` caps it (for comparisons and tests).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    let found = *LEVEL.get_or_init(|| cap(detect(), std::env::var("MNV4_SIMD").ok().as_deref()));
    #[cfg(test)]
    if let Some(forced) = FORCED.get() {
        return lower(found, forced);
    }
    found
}

#[cfg(test)]
thread_local! {
    static FORCED: std::cell::Cell<Option<Level>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with kernels called on this thread capped at `limit` (never above the CPU's level).
#[cfg(test)]
pub(crate) fn capped<R>(limit: Level, f: impl FnOnce() -> R) -> R {
    FORCED.set(Some(limit));
    let r = f();
    FORCED.set(None);
    r
}

/// Every level a test can run on this CPU.
#[cfg(test)]
pub(crate) const ALL: [Level; 3] = [Level::Base, Level::Avx2, Level::Avx512];

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Base
}

/// Whether this CPU runs a 512-bit FMA at the rate of a 256-bit one, so that 16-lane kernels do
/// twice the work per cycle of 8-lane ones. True of the AVX-512 CPUs but AMD's family 25
/// (Zen 4), which splits each 512-bit operation into two 256-bit halves.
pub(crate) fn full_width_512() -> bool {
    static FULL: OnceLock<bool> = OnceLock::new();
    *FULL.get_or_init(|| !is_amd_family(0x19))
}

/// Whether `cpuid` names an AMD CPU of display family `family`.
fn is_amd_family(family: u32) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let vendor = __cpuid(0);
        // "AuthenticAMD" in EBX, EDX, ECX.
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let signature = __cpuid(1).eax;
        let base = (signature >> 8) & 0xf;
        let display = if base == 0xf {
            base + ((signature >> 20) & 0xff)
        } else {
            base
        };
        amd && display == family
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = family;
        false
    }
}

/// `found`, lowered to the level that `limit` names.
fn cap(found: Level, limit: Option<&str>) -> Level {
    match limit.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("base") => lower(found, Level::Base),
        Some("avx2") => lower(found, Level::Avx2),
        _ => found,
    }
}

/// The lower of two levels.
fn lower(a: Level, b: Level) -> Level {
    let rank = |l: Level| match l {
        Level::Base => 0,
        Level::Avx2 => 1,
        Level::Avx512 => 2,
    };
    if rank(b) < rank(a) {
        b
    } else {
        a
    }
}

/// `a · b + c`, as a kernel variant computes it.
pub(crate) trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// One rounding: compiled to an FMA instruction where the variant enables FMA.
pub(crate) struct Fused;
/// A multiply and an add, for CPUs without FMA (where `f32::mul_add` is a slow library call).
pub(crate) struct Separate;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines `fn $name($args) [-> $ret]` whose `$body` is compiled three times: for AVX-512, for
/// AVX2 + FMA and for the baseline; each call runs the widest variant that [`level`] allows.
/// Helpers the body calls must be `#[inline(always)]` to be compiled with it. Written
/// `fn $name<F>(…)`, the body may call `F::mul_add` ([`MulAdd`]); without it, every variant
/// computes the same operations in the same order, so the results are bit-identical.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::ops::simd::multiversion! {
            $(#[$meta])* $vis fn $name<_F>($($arg: $ty),*) $(-> $ret)? $body
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$f:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::extra_unused_type_parameters)]
            fn body<$f: $crate::ops::simd::MulAdd>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body::<$crate::ops::simd::Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body::<$crate::ops::simd::Fused>($($arg),*)
                }
                match $crate::ops::simd::level() {
                    // SAFETY: `level` reports AVX-512 F/BW, AVX2 and FMA present on this CPU.
                    $crate::ops::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `level` reports AVX2 and FMA present on this CPU.
                    $crate::ops::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::ops::simd::Level::Base => {}
                }
            }
            body::<$crate::ops::simd::Separate>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_only_lowers_the_level() {
        assert_eq!(cap(Level::Avx512, Some("avx2")), Level::Avx2);
        assert_eq!(cap(Level::Avx512, Some(" BASE ")), Level::Base);
        assert_eq!(cap(Level::Avx2, None), Level::Avx2);
        assert_eq!(cap(Level::Base, Some("avx2")), Level::Base);
        assert_eq!(cap(Level::Avx2, Some("other")), Level::Avx2);
    }

    multiversion! {
        fn scaled_sum(x: &[f32], y: &mut [f32]) {
            for (y, x) in y.iter_mut().zip(x) {
                *y += 0.5 * x;
            }
        }
    }

    #[test]
    fn every_level_computes_what_the_body_says() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: Vec<f32> = x.iter().map(|x| 1.0 + 0.5 * x).collect();
        for limit in ALL {
            let mut y = vec![1.0f32; 37];
            capped(limit, || scaled_sum(&x, &mut y));
            assert_eq!(y, want, "{limit:?}");
        }
    }
}
