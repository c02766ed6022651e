//! Global average pooling of a channels-last map.

use super::Nhwc;

/// The mean over each image's pixels: `[batch, C]`.
pub(crate) fn global_average(x: &[f32], shape: Nhwc) -> Vec<f32> {
    assert_eq!(x.len(), shape.len(), "pool: input shape");
    let (c, hw) = (shape.c, shape.h * shape.w);
    let mut y = vec![0.0f32; shape.batch * c];
    for (b, sums) in y.chunks_exact_mut(c).enumerate() {
        for px in x[b * hw * c..][..hw * c].chunks_exact(c) {
            for (s, &v) in sums.iter_mut().zip(px) {
                *s += v;
            }
        }
        let inv = 1.0 / hw as f32;
        sums.iter_mut().for_each(|s| *s *= inv);
    }
    y
}
