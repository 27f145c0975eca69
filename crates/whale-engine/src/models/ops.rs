//! Element-wise and row-wise operations of the forward pass (f32).
//!
//! Plain scalar code written so the compiler vectorizes it; the quantized
//! matrix products live in `whale-kernels`.

/// `out = x / rms(x) * w`, with rms over the row. `x`, `out`: `[n]`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let scale = 1.0 / ((ss / n as f64) as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// Apply RMSNorm to each row of `x` (`[rows, n]`) in place.
pub fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    let mut tmp = vec![0f32; n];
    for row in x.chunks_exact_mut(n) {
        rms_norm(row, w, eps, &mut tmp);
        row.copy_from_slice(&tmp);
    }
}

/// In-place softmax over a row; returns nothing, the row sums to one.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate = silu(gate) * up`, element-wise (SwiGLU), with [`exp`].
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// e^x in single precision from adds, multiplies and bit operations only,
/// so that a loop over it vectorizes at the build's baseline (SSE2, NEON)
/// and gives the same bits at any width: the C library's `expf` is a call
/// a value, and SwiGLU's took 12 % of the engine thread's time between
/// pool jobs in a decode at DeepSeek-V2-Lite's shapes (11264 values a
/// layer; the workers wait meanwhile).
///
/// Cody and Waite's reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`, with ln 2
/// split so that `n * LN2_HI` is exact, then Cephes' degree-5 minimax
/// polynomial for `(e^r - 1 - r) / r^2` (`expf.c`, S. Moshier), scaled by
/// `2^n` built in the exponent bits. Within 1 ulp of e^x (every 97th f32
/// of the range checked against f64 in the tests); `x` is clamped to
/// [-87, 88], so the result is never 0, subnormal or infinite (silu's
/// `1 + e^-x` at the ends: `1 + 1.6e-38` and `1.6e38`). NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 0.693359375, 9 significant bits: n * LN2_HI is exact for |n| < 2^15.
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer (to nearest, ties to even),
    // which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    // n from t's low bits (|n| <= 127 here), then 2^n as an f32.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    e * f32::from_bits((n_int.wrapping_add(127) as u32) << 23)
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Add a bias to each row of `x` (`[rows, n]`).
pub fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// How the rotary embedding pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x0,x1), (x2,x3)…: llama.cpp's "normal" mode, which its
    /// converter arranges for llama by permuting Q/K; DeepSeek's MLA rope part.
    Interleaved,
    /// Halves (x_i, x_{i+d/2}): Hugging Face's `rotate_half` ("neox" in llama.cpp).
    Halves,
}

/// Rotary position embedding tables for one model.
#[derive(Clone, Debug)]
pub struct Rope {
    pub style: RopeStyle,
    /// Rotated dimensions (even); the rest of the head is left as is.
    pub dim: usize,
    /// `[dim / 2]` angular frequency of each pair.
    pub inv_freq: Vec<f32>,
    /// Multiplier of cos and sin (YaRN's attention factor; 1 otherwise).
    pub mscale: f32,
}

impl Rope {
    /// Plain RoPE with base `theta`; `freq_factors` (llama3 scaling) divide the
    /// frequencies one by one when given.
    pub fn new(style: RopeStyle, dim: usize, theta: f32, freq_factors: Option<&[f32]>) -> Rope {
        let inv_freq = (0..dim / 2)
            .map(|i| {
                let f = 1.0 / (theta as f64).powf(2.0 * i as f64 / dim as f64);
                let factor = freq_factors.map_or(1.0, |ff| ff[i] as f64);
                (f / factor) as f32
            })
            .collect();
        Rope { style, dim, inv_freq, mscale: 1.0 }
    }

    /// Rotate one head vector `x` (`[head_dim]`, the first `dim` entries) at `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        self.at(pos).apply(x);
    }

    /// The rotation at `pos`, for every head of a token at once: each pair's
    /// sine and cosine are computed once (in f64, then rounded and scaled)
    /// instead of once a head. DeepSeek-V3's 128 query heads and its shared
    /// key took 4128 `sin_cos` a layer and token.
    pub fn at(&self, pos: usize) -> RopeAt<'_> {
        let sc = self
            .inv_freq
            .iter()
            .map(|&f| {
                // Angles in f64 and then rounded: positions up to 1e6 keep full precision.
                let (s, c) = (pos as f64 * f as f64).sin_cos();
                (s as f32 * self.mscale, c as f32 * self.mscale)
            })
            .collect();
        RopeAt { rope: self, sc }
    }

    /// Rotate every head of every row: `x` is `[n_tok, n_head, head_dim]`,
    /// token `t` is at position `pos0 + t`.
    pub fn apply_rows(&self, x: &mut [f32], n_head: usize, head_dim: usize, pos0: usize) {
        for (t, row) in x.chunks_exact_mut(n_head * head_dim).enumerate() {
            let at = self.at(pos0 + t);
            for head in row.chunks_exact_mut(head_dim) {
                at.apply(head);
            }
        }
    }
}

/// [`Rope`] at one position ([`Rope::at`]): each pair's sine and cosine.
pub struct RopeAt<'a> {
    rope: &'a Rope,
    /// `[dim / 2]` (sin, cos), times `mscale`.
    sc: Vec<(f32, f32)>,
}

impl RopeAt<'_> {
    /// Rotate one head vector `x` (`[head_dim]`, the first `dim` entries).
    pub fn apply(&self, x: &mut [f32]) {
        let half = self.rope.dim / 2;
        for (i, &(s, c)) in self.sc.iter().enumerate() {
            let (a, b) = match self.rope.style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Halves => (i, i + half),
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

/// YaRN parameters as DeepSeek's `rope_scaling` spells them.
#[derive(Clone, Debug, PartialEq)]
pub struct Yarn {
    pub factor: f32,
    pub original_max_position_embeddings: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub mscale: f32,
    pub mscale_all_dim: f32,
}

/// `0.1 · m · ln(f) + 1` for f > 1, else 1 (DeepSeek's `yarn_get_mscale`).
pub fn yarn_get_mscale(factor: f32, m: f32) -> f32 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

impl Rope {
    /// YaRN RoPE (transformers' `_compute_yarn_parameters`, DeepSeek flavour):
    /// per pair, blend the interpolated frequency (÷ factor) and the original
    /// one with a linear ramp between the floor/ceil of the correction range,
    /// clamped to [0, dim-1]; cos and sin are scaled by
    /// mscale(f, mscale) / mscale(f, mscale_all_dim).
    pub fn yarn(style: RopeStyle, dim: usize, theta: f32, y: &Yarn) -> Rope {
        let d = dim as f64;
        let base = theta as f64;
        let orig = y.original_max_position_embeddings as f64;
        let correction_dim = |rot: f64| (d * (orig / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln());
        let low = correction_dim(y.beta_fast as f64).floor().max(0.0);
        let high = correction_dim(y.beta_slow as f64).ceil().min(d - 1.0);
        // transformers nudges an empty range to avoid dividing by zero.
        let high = if low == high { high + 0.001 } else { high };
        let inv_freq = (0..dim / 2)
            .map(|i| {
                let extra = 1.0 / base.powf(2.0 * i as f64 / d);
                let inter = extra / y.factor as f64;
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let extrapolate = 1.0 - ramp;
                (inter * (1.0 - extrapolate) + extra * extrapolate) as f32
            })
            .collect();
        let mscale = yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim);
        Rope { style, dim, inv_freq, mscale }
    }
}

/// llama3 RoPE scaling: per-pair divisors of the frequencies (as in the
/// reference `_compute_llama3_parameters`).
pub fn llama3_freq_factors(
    dim: usize,
    theta: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_max_pos: f32,
) -> Vec<f32> {
    let low_wavelen = original_max_pos / low_freq_factor;
    let high_wavelen = original_max_pos / high_freq_factor;
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf(2.0 * i as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_max_pos / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                // new_freq = (1 - smooth) * freq / factor + smooth * freq
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_by_hand() {
        // x = [3, 4]: mean square 12.5, rms = 3.5355; x/rms = [0.8485, 1.1314].
        let mut out = [0f32; 2];
        rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
        assert!((out[0] - 0.848_528).abs() < 1e-5 && (out[1] - 2.262_742).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn softmax_by_hand() {
        // softmax([0, ln 3]) = [1/4, 3/4]
        let mut x = [0.0, 3f32.ln()];
        softmax(&mut x);
        assert!((x[0] - 0.25).abs() < 1e-6 && (x[1] - 0.75).abs() < 1e-6);
    }

    /// Distance in units in the last place between two finite f32 of the
    /// same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_one_ulp_of_the_exact_value() {
        // Every 97th f32 in [-87, 88] (about 20 million values) and the ends.
        let (lo, hi) = ((-87f32).to_bits(), 88f32.to_bits());
        let negatives = (0x8000_0000..=lo).step_by(97).map(f32::from_bits);
        let positives = (0..=hi).step_by(97).map(f32::from_bits);
        let mut worst = (0, 0f32);
        for x in negatives.chain(positives).chain([-87.0, 88.0, 0.0, -0.0]) {
            let want = (x as f64).exp() as f32;
            let d = ulps(exp(x), want);
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(worst.0 <= 1, "exp({}) is {} ulp off", worst.1, worst.0);
        // Clamped outside: never 0 or infinite; NaN stays NaN.
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert_eq!(exp(f32::INFINITY), exp(88.0));
        assert!(exp(f32::NEG_INFINITY) > 0.0 && exp(88.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn swiglu_gives_every_value_the_bits_of_its_own_exp() {
        // The loop vectorizes; each value must still be the scalar formula's.
        let gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.37).chain([-1e4, 1e4, 0.0, -0.0]).collect();
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut y = gate.clone();
        swiglu(&mut y, &up);
        for ((&g, &u), &v) in gate.iter().zip(&up).zip(&y) {
            let g1 = std::hint::black_box(g);
            let want = g1 / (1.0 + exp(-g1)) * u;
            assert_eq!(v.to_bits(), want.to_bits(), "silu({g}) * {u}");
            // And close to silu with the C library's expf: a few ulp, or
            // below 1e-30 where the clamp keeps e^-g finite (silu(-185) is
            // -1.1e-36 for -0).
            let libm = g / (1.0 + (-g).exp()) * u;
            assert!((v - libm).abs() <= 4.0 * f32::EPSILON * libm.abs() + 1e-30, "silu({g}): {v} vs {libm}");
        }
    }

    #[test]
    fn rope_rotates_pairs() {
        // dim 2, theta irrelevant for pair 0 (freq 1): pos 1 rotates by 1 radian.
        let r = Rope::new(RopeStyle::Interleaved, 2, 10000.0, None);
        let mut x = [1.0, 0.0];
        r.apply(&mut x, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        // Halves style with dim 4 pairs (0,2) and (1,3).
        let r = Rope::new(RopeStyle::Halves, 4, 10000.0, None);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        r.apply(&mut x, 1);
        assert!((x[2] - 1f32.sin()).abs() < 1e-6 && x[1] == 0.0);
    }

    #[test]
    fn llama3_factors_limits() {
        // Short wavelengths are untouched, long ones divided by `factor`.
        let f = llama3_freq_factors(128, 500000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.iter().all(|&v| (1.0..=8.0).contains(&v)));
    }
}
