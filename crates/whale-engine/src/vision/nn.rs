//! Layers of the image models that language models lack.
//!
//! Feature maps are channel-last, `[height, width, channels]` row-major, so
//! that a pixel's channels are one row of a matrix: a 1×1 convolution is a
//! plain linear layer, and a k×k convolution is one after gathering each
//! output pixel's k×k×C neighbourhood into a row (im2col). The GEMMs are
//! whale's f32 kernels ([`Linear`]), run over bands of output rows so the
//! gathered matrix stays a few MiB whatever the image size.

use crate::formats::names::TensorName;
use crate::formats::weights::WeightStore;
use crate::models::Linear;
use crate::vision::VisionError;

/// The Hugging Face name `prefix.suffix` (vision tensors exist only in
/// safetensors folders).
pub fn hf(prefix: &str, suffix: &str) -> TensorName {
    TensorName { gguf: "-".into(), hf: format!("{prefix}.{suffix}") }
}

/// A linear layer `prefix.weight` `[rows, cols]` with its bias `prefix.bias`.
pub fn linear(store: &WeightStore, prefix: &str, rows: usize, cols: usize) -> Result<Linear, VisionError> {
    let w = store.get(&hf(prefix, "weight"), &[rows, cols])?;
    let b = store.vector(&hf(prefix, "bias"), rows)?;
    Ok(Linear::from_view(w, Some(b)))
}

/// LayerNorm weights: `prefix.weight` and `prefix.bias`, `[n]` each.
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(store: &WeightStore, prefix: &str, n: usize, eps: f32) -> Result<LayerNorm, VisionError> {
        Ok(LayerNorm {
            weight: store.vector(&hf(prefix, "weight"), n)?,
            bias: store.vector(&hf(prefix, "bias"), n)?,
            eps,
        })
    }

    /// Normalise each row of `x` (`[rows, n]`) in place: `(x − mean) / √(var + eps) · w + b`.
    pub fn forward(&self, x: &mut [f32]) {
        let n = self.weight.len();
        for row in x.chunks_exact_mut(n) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + self.eps as f64).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = ((*v as f64 - mean) * inv) as f32 * w + b;
            }
        }
    }
}

/// GroupNorm over a channel-last map `[pixels, channels]`: statistics per
/// group of `channels / groups` consecutive channels over all pixels, then a
/// per-channel scale and shift (PyTorch's `nn.GroupNorm`).
pub struct GroupNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(store: &WeightStore, prefix: &str, channels: usize) -> Result<GroupNorm, VisionError> {
        // Janus's VQ model uses 32 groups and eps 1e-6 everywhere.
        if !channels.is_multiple_of(32) {
            return Err(VisionError::Config(format!("{prefix}: {channels} channels cannot form 32 groups")));
        }
        Ok(GroupNorm {
            weight: store.vector(&hf(prefix, "weight"), channels)?,
            bias: store.vector(&hf(prefix, "bias"), channels)?,
            groups: 32,
            eps: 1e-6,
        })
    }

    pub fn forward(&self, x: &mut [f32]) {
        let c = self.weight.len();
        let per = c / self.groups;
        let pixels = x.len() / c;
        let count = (pixels * per) as f64;
        // One pass for every group's sums (each still in pixel order, then
        // channel order, as group by group), one to normalise.
        let (mut sum, mut sq) = (vec![0f64; self.groups], vec![0f64; self.groups]);
        for px in x.chunks_exact(c) {
            for ((s, q), ch) in sum.iter_mut().zip(&mut sq).zip(px.chunks_exact(per)) {
                for &v in ch {
                    *s += v as f64;
                    *q += (v as f64) * (v as f64);
                }
            }
        }
        let stats: Vec<(f64, f64)> = sum
            .iter()
            .zip(&sq)
            .map(|(&s, &q)| {
                let mean = s / count;
                let var = (q / count - mean * mean).max(0.0);
                (mean, 1.0 / (var + self.eps as f64).sqrt())
            })
            .collect();
        for px in x.chunks_exact_mut(c) {
            for (j, v) in px.iter_mut().enumerate() {
                let (mean, inv) = stats[j / per];
                *v = ((*v as f64 - mean) * inv) as f32 * self.weight[j] + self.bias[j];
            }
        }
    }
}

/// `x · sigmoid(x)`, in place.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v /= 1.0 + (-*v).exp();
    }
}

/// The exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`, in place (transformers'
/// `"gelu"`; not the tanh approximation), on `threads` threads for large
/// inputs (each value on its own, so the bits do not depend on them: the
/// encoder's 24 × 576 × 4096 values took 0.35 s of one thread).
pub fn gelu(x: &mut [f32], threads: usize) {
    const PART: usize = 1 << 16;
    let one = |x: &mut [f32]| {
        for v in x {
            let z = *v as f64;
            *v = (0.5 * z * (1.0 + erf(z * std::f64::consts::FRAC_1_SQRT_2))) as f32;
        }
    };
    if threads <= 1 || x.len() <= PART {
        return one(x);
    }
    let part = x.len().div_ceil(threads).max(PART);
    whale_kernels::pool::run_parts(threads, x.chunks_mut(part).collect(), one);
}

/// The error function within 1.2e-7 (Abramowitz and Stegun 7.1.26, the
/// error bound is theirs): a fifth-degree polynomial in `1/(1 + p·|x|)`
/// times `e^(−x²)`, cheap enough for every activation of an image model. The
/// GELU it gives differs from the exact one by at most 6e-8 · |x|, below
/// the 1e-4 to which the encoder is compared with transformers.
pub fn erf(x: f64) -> f64 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [0.254_829_592, -0.284_496_736, 1.421_413_741, -1.453_152_027, 1.061_405_429];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * (-a * a).exp()).copysign(x)
}

/// A 2-D convolution with `[out, in, kh, kw]` weights (PyTorch's layout),
/// stored reordered as a `[out, kh·kw·in]` matrix to match channel-last
/// patches.
pub struct Conv2d {
    w: Linear,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    /// Zero padding: (top/left, bottom/right).
    pub pad: (usize, usize),
}

impl Conv2d {
    /// `prefix.weight` `[c_out, c_in, k, k]` and `prefix.bias` `[c_out]`.
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: (usize, usize),
    ) -> Result<Conv2d, VisionError> {
        let w = store.get(&hf(prefix, "weight"), &[c_out, c_in, k, k])?.to_f32()?;
        let bias = store.vector(&hf(prefix, "bias"), c_out)?;
        Ok(Conv2d::from_oihw(&w, bias, c_in, c_out, k, stride, pad))
    }

    /// From PyTorch-layout weights `[c_out, c_in, k, k]`, reordered to
    /// `[c_out, k, k, c_in]` rows.
    pub fn from_oihw(
        w: &[f32],
        bias: Vec<f32>,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: (usize, usize),
    ) -> Conv2d {
        let cols = k * k * c_in;
        let mut m = vec![0f32; c_out * cols];
        for o in 0..c_out {
            for c in 0..c_in {
                for ky in 0..k {
                    for kx in 0..k {
                        m[o * cols + (ky * k + kx) * c_in + c] = w[((o * c_in + c) * k + ky) * k + kx];
                    }
                }
            }
        }
        let mut lin = Linear::from_f32(c_out, cols, &m);
        lin.bias = Some(bias);
        Conv2d { w: lin, c_in, c_out, k, stride, pad }
    }

    /// The patch of output pixel (`oy`, `ox`) (`k·k·c_in` values, tap-major)
    /// from `x` (`[h, w, c_in]`); taps in the padding are zeros.
    fn gather(&self, x: &[f32], h: usize, w: usize, oy: usize, ox: usize, out: &mut [f32]) {
        let (k, c) = (self.k, self.c_in);
        for ky in 0..k {
            let iy = (oy * self.stride + ky) as isize - self.pad.0 as isize;
            for kx in 0..k {
                let ix = (ox * self.stride + kx) as isize - self.pad.0 as isize;
                let tap = &mut out[(ky * k + kx) * c..][..c];
                if iy < 0 || iy >= h as isize || ix < 0 || ix >= w as isize {
                    tap.fill(0.0);
                } else {
                    let src = (iy as usize * w + ix as usize) * c;
                    tap.copy_from_slice(&x[src..src + c]);
                }
            }
        }
    }

    /// Output size along one axis of `n` input pixels.
    pub fn out_len(&self, n: usize) -> usize {
        (n + self.pad.0 + self.pad.1 - self.k) / self.stride + 1
    }

    /// `x`: `[h, w, c_in]` → `[h', w', c_out]`.
    pub fn forward(&self, x: &[f32], h: usize, w: usize, threads: usize) -> (Vec<f32>, usize, usize) {
        let (ho, wo) = (self.out_len(h), self.out_len(w));
        let mut y = vec![0f32; ho * wo * self.c_out];
        if self.k == 1 && self.stride == 1 && self.pad == (0, 0) {
            return (self.w.forward(x, h * w, threads), h, w);
        }
        // The patches are gathered as the product needs them (a few rows at
        // a time), never as the whole [ho·wo, k·k·c_in] matrix.
        let x_row = |i: usize, out: &mut [f32]| self.gather(x, h, w, i / wo, i % wo, out);
        let l = &self.w;
        whale_kernels::matmul_gather(l.ty, &l.data, l.rows, l.cols, ho * wo, &x_row, &mut y, threads);
        l.add_bias(&mut y);
        (y, ho, wo)
    }
}

/// Nearest-neighbour upsampling by 2: `[h, w, c]` → `[2h, 2w, c]`.
pub fn upsample2(x: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0f32; 4 * h * w * c];
    for oy in 0..2 * h {
        for ox in 0..2 * w {
            let src = ((oy / 2) * w + ox / 2) * c;
            y[(oy * 2 * w + ox) * c..][..c].copy_from_slice(&x[src..src + c]);
        }
    }
    y
}

/// Full (non-causal) multi-head attention: every row attends to every row,
/// scores scaled by `1/√d`. `q`, `k`, `v`: `[n, heads · d]`; returns
/// `[n, heads · d]`. Scores and
/// the weighted sum are GEMMs over whale's kernels, one head at a time.
pub fn full_attention(q: &[f32], k: &[f32], v: &[f32], n: usize, heads: usize, d: usize, threads: usize) -> Vec<f32> {
    let width = heads * d;
    let scale = (d as f32).powf(-0.5);
    // Heads are independent: the pool runs them side by side, each with one
    // thread (a product's bits do not depend on its thread count).
    let mut per_head: Vec<Vec<f32>> = vec![Vec::new(); heads];
    let parts: Vec<(usize, &mut Vec<f32>)> = per_head.iter_mut().enumerate().collect();
    whale_kernels::pool::run_parts(threads, parts, |(hd, o)| {
        let (mut qh, mut kh, mut vt) = (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; d * n]);
        for t in 0..n {
            qh[t * d..(t + 1) * d].copy_from_slice(&q[t * width + hd * d..][..d]);
            kh[t * d..(t + 1) * d].copy_from_slice(&k[t * width + hd * d..][..d]);
            for j in 0..d {
                vt[j * n + t] = v[t * width + hd * d + j];
            }
        }
        let mut s = Linear::from_f32(n, d, &kh).forward(&qh, n, 1); // [n, n]
        for row in s.chunks_exact_mut(n) {
            for x in row.iter_mut() {
                *x *= scale;
            }
            crate::models::ops::softmax(row);
        }
        *o = Linear::from_f32(d, n, &vt).forward(&s, n, 1); // [n, d]
    });
    let mut out = vec![0f32; n * width];
    for (hd, o) in per_head.iter().enumerate() {
        for t in 0..n {
            out[t * width + hd * d..][..d].copy_from_slice(&o[t * d..(t + 1) * d]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from tables of erf (Abramowitz and Stegun, table 7.1) and erf(∞) = 1.
        for (x, want) in
            [(0.0, 0.0), (0.5, 0.520_499_877_8), (1.0, 0.842_700_792_9), (2.0, 0.995_322_265_0), (3.0, 0.999_977_909_5)]
        {
            assert!((erf(x) - want).abs() < 1.5e-7, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1.5e-7);
        }
    }

    #[test]
    fn conv_matches_a_direct_sum() {
        // A 3×3, stride-2 convolution with asymmetric padding against the definition.
        let (c_in, c_out, k, h, w) = (3, 2, 3, 5, 6);
        let wt: Vec<f32> = (0..c_out * c_in * k * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let bias = [0.5f32, -1.0];
        let x: Vec<f32> = (0..h * w * c_in).map(|i| ((i * 5 % 13) as f32 - 6.0) / 3.0).collect();
        let conv = Conv2d::from_oihw(&wt, bias.to_vec(), c_in, c_out, k, 2, (0, 1));
        let (y, ho, wo) = conv.forward(&x, h, w, 1);
        assert_eq!((ho, wo), (2, 3)); // (5 + 1 − 3) / 2 + 1, (6 + 1 − 3) / 2 + 1
        for oy in 0..ho {
            for ox in 0..wo {
                for o in 0..c_out {
                    let mut s = bias[o] as f64;
                    for c in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy * 2 + ky, ox * 2 + kx);
                                if iy < h && ix < w {
                                    s += (wt[((o * c_in + c) * k + ky) * k + kx] * x[(iy * w + ix) * c_in + c]) as f64;
                                }
                            }
                        }
                    }
                    let got = y[(oy * wo + ox) * c_out + o];
                    assert!((got as f64 - s).abs() < 1e-4, "({oy},{ox},{o}): {got} vs {s}");
                }
            }
        }
    }
}
