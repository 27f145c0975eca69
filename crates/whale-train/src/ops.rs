//! The operations of a llama block, each as a forward function and its
//! backward (vector-Jacobian product), on row-major `f32` buffers.
//!
//! Forward functions reuse the engine's own arithmetic where it has it
//! (RMSNorm, RoPE tables, SwiGLU's order of operations) so that the
//! trainer's log-probabilities and the engine's agree to rounding. Matrix
//! products go through whale's kernels (the f32 GEMM
//! `whale_kernels::gemm_f32`); the backward products are the same kernel
//! on transposed operands. Every backward is checked against finite
//! differences in the tests at the bottom of this file.

use whale_engine::models::ops::Rope;

/// `C[m, n] = A[m, k] · B[k, n]` through whale's f32 GEMM kernel.
pub fn matmul(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, threads: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    whale_kernels::gemm_f32(a, b, &mut c, m, k, n, threads);
    c
}

/// The transpose of a row-major `[rows, cols]` matrix.
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// `y = x · Wᵀ`: `x` is `[n, inp]`, `w` is `[out, inp]` (Hugging Face's
/// layout for `nn.Linear`).
pub fn linear_fwd(x: &[f32], n: usize, w: &[f32], out: usize, inp: usize, threads: usize) -> Vec<f32> {
    matmul(x, n, inp, &transpose(w, out, inp), out, threads)
}

/// Backward of [`linear_fwd`]: adds `dyᵀ · x` to `dw` and returns `dx = dy · W`.
#[allow(clippy::too_many_arguments)]
pub fn linear_bwd(
    x: &[f32],
    n: usize,
    w: &[f32],
    out: usize,
    inp: usize,
    dy: &[f32],
    dw: &mut [f32],
    threads: usize,
) -> Vec<f32> {
    let dx = matmul(dy, n, out, w, inp, threads);
    let g = matmul(&transpose(dy, n, out), out, n, x, inp, threads); // [out, inp]
    for (d, v) in dw.iter_mut().zip(&g) {
        *d += v;
    }
    dx
}

/// RMSNorm of each row of `x` (`[n, d]`); returns the output and each row's
/// `1 / rms`, which the backward needs.
pub fn rms_norm_fwd(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    let mut rinv = Vec::with_capacity(x.len() / d);
    for (src, dst) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        whale_engine::models::ops::rms_norm(src, w, eps, dst);
        let ss: f64 = src.iter().map(|&v| (v as f64) * (v as f64)).sum();
        rinv.push(1.0 / ((ss / d as f64) as f32 + eps).sqrt());
    }
    (y, rinv)
}

/// Backward of [`rms_norm_fwd`]: adds to `dw`, returns `dx`.
pub fn rms_norm_bwd(x: &[f32], w: &[f32], rinv: &[f32], dy: &[f32], dw: &mut [f32]) -> Vec<f32> {
    let d = w.len();
    let mut dx = vec![0f32; x.len()];
    for (((xr, dyr), dxr), &r) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).zip(rinv) {
        // y_i = x_i r w_i, r = (mean x² + eps)^-1/2, dr/dx_j = -r³ x_j / d.
        let mut dot = 0f32;
        for i in 0..d {
            dw[i] += dyr[i] * xr[i] * r;
            dot += dyr[i] * w[i] * xr[i];
        }
        let c = dot * r * r * r / d as f32;
        for i in 0..d {
            dxr[i] = dyr[i] * w[i] * r - xr[i] * c;
        }
    }
    dx
}

/// RoPE on `[n, n_head, head_dim]` rows whose positions are `pos`, in place.
pub fn rope_fwd(rope: &Rope, x: &mut [f32], n_head: usize, head_dim: usize, pos: &[usize]) {
    for (row, &p) in x.chunks_exact_mut(n_head * head_dim).zip(pos) {
        for head in row.chunks_exact_mut(head_dim) {
            rope.apply(head, p);
        }
    }
}

/// Backward of [`rope_fwd`]: a rotation's transpose is the rotation by the
/// opposite angle. Halves pairing (Hugging Face's `rotate_half`).
pub fn rope_bwd(rope: &Rope, dx: &mut [f32], n_head: usize, head_dim: usize, pos: &[usize]) {
    let half = rope.dim / 2;
    for (row, &p) in dx.chunks_exact_mut(n_head * head_dim).zip(pos) {
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let angle = p as f64 * rope.inv_freq[i] as f64;
                let (s, c) = angle.sin_cos();
                let (s, c) = (s as f32 * rope.mscale, c as f32 * rope.mscale);
                let (a, b) = (i, i + half);
                let (g0, g1) = (head[a], head[b]);
                head[a] = g0 * c + g1 * s;
                head[b] = -g0 * s + g1 * c;
            }
        }
    }
}

/// SwiGLU: `silu(g) · u`, elementwise.
pub fn swiglu_fwd(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut h = g.to_vec();
    whale_engine::models::ops::swiglu(&mut h, u);
    h
}

/// Backward of [`swiglu_fwd`]: `(dg, du)`.
pub fn swiglu_bwd(g: &[f32], u: &[f32], dh: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0f32; g.len()];
    let mut du = vec![0f32; g.len()];
    for i in 0..g.len() {
        // The forward's own exp, so that this is the derivative of what it computed.
        let s = 1.0 / (1.0 + whale_engine::models::ops::exp(-g[i]));
        let silu = g[i] * s;
        du[i] = dh[i] * silu;
        dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
    }
    (dg, du)
}

/// Causal softmax attention of one sequence: `q` is `[t, n_head, hd]`, `k`
/// and `v` are `[t, n_kv_head, hd]`. Returns the output `[t, n_head, hd]` and
/// the probabilities `[n_head, t, t]` (zero above the diagonal).
pub fn attention_fwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
) -> (Vec<f32>, Vec<f32>) {
    let scale = 1.0 / (hd as f32).sqrt();
    let group = n_head / n_kv;
    let (qs, ks) = (n_head * hd, n_kv * hd);
    let mut o = vec![0f32; t * qs];
    let mut p = vec![0f32; n_head * t * t];
    for h in 0..n_head {
        let kh = h / group;
        for i in 0..t {
            let qi = &q[i * qs + h * hd..][..hd];
            let row = &mut p[(h * t + i) * t..][..t];
            let mut max = f32::NEG_INFINITY;
            for (j, r) in row.iter_mut().enumerate().take(i + 1) {
                let kj = &k[j * ks + kh * hd..][..hd];
                *r = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(*r);
            }
            let mut sum = 0f32;
            for r in row.iter_mut().take(i + 1) {
                *r = (*r - max).exp();
                sum += *r;
            }
            let oi = &mut o[i * qs + h * hd..][..hd];
            for (j, r) in row.iter_mut().enumerate().take(i + 1) {
                *r /= sum;
                let vj = &v[j * ks + kh * hd..][..hd];
                for (a, b) in oi.iter_mut().zip(vj) {
                    *a += *r * b;
                }
            }
        }
    }
    (o, p)
}

/// Backward of [`attention_fwd`]: `(dq, dk, dv)`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    d_o: &[f32],
    t: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let scale = 1.0 / (hd as f32).sqrt();
    let group = n_head / n_kv;
    let (qs, ks) = (n_head * hd, n_kv * hd);
    let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
    let mut dp = vec![0f32; t];
    for h in 0..n_head {
        let kh = h / group;
        for i in 0..t {
            let row = &p[(h * t + i) * t..][..t];
            let doi = &d_o[i * qs + h * hd..][..hd];
            // dP_ij = dO_i · V_j ; dV_j += P_ij dO_i
            let mut dot = 0f32;
            for j in 0..=i {
                let vj = &v[j * ks + kh * hd..][..hd];
                dp[j] = doi.iter().zip(vj).map(|(a, b)| a * b).sum();
                dot += dp[j] * row[j];
                let dvj = &mut dv[j * ks + kh * hd..][..hd];
                for (a, b) in dvj.iter_mut().zip(doi) {
                    *a += row[j] * b;
                }
            }
            // dS_ij = P_ij (dP_ij - Σ_j P_ij dP_ij); S = q·k·scale.
            for j in 0..=i {
                let ds = row[j] * (dp[j] - dot) * scale;
                if ds == 0.0 {
                    continue;
                }
                let (qi, kj) = (&q[i * qs + h * hd..][..hd], &k[j * ks + kh * hd..][..hd]);
                let dqi = &mut dq[i * qs + h * hd..][..hd];
                for (a, b) in dqi.iter_mut().zip(kj) {
                    *a += ds * b;
                }
                let dkj = &mut dk[j * ks + kh * hd..][..hd];
                for (a, b) in dkj.iter_mut().zip(qi) {
                    *a += ds * b;
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Log-softmax of each row of `logits` (`[n, vocab]`), in f32 with the max
/// subtracted first.
pub fn log_softmax_rows(logits: &[f32], vocab: usize) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    for (src, dst) in logits.chunks_exact(vocab).zip(out.chunks_exact_mut(vocab)) {
        let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = src.iter().map(|&v| (v - max).exp()).sum::<f32>().ln() + max;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s - lse;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use whale_engine::models::ops::RopeStyle;

    pub(crate) fn randn(rng: &mut impl Rng, n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * s).collect()
    }

    /// Central differences in f64 of `f` at `x` along every coordinate,
    /// compared with `grad`. f32 forward passes with h = 1e-2 leave errors
    /// near 1e-3 relative (rounding of ~1e-7 over h, plus O(h²) curvature),
    /// so the check is `|fd - g| ≤ 2e-2 · max(1, |fd|)` — a wrong sign, a
    /// missing term or a transposed index fails it by far more.
    pub(crate) fn check_grad(name: &str, x: &[f32], grad: &[f32], f: impl Fn(&[f32]) -> f64) {
        let h = 1e-2f32;
        let mut worst = 0f64;
        for i in 0..x.len() {
            let mut xp = x.to_vec();
            xp[i] += h;
            let mut xm = x.to_vec();
            xm[i] -= h;
            let fd = (f(&xp) - f(&xm)) / (2.0 * h as f64);
            let err = (fd - grad[i] as f64).abs() / fd.abs().max(1.0);
            worst = worst.max(err);
            assert!(err < 2e-2, "{name}[{i}]: finite difference {fd}, backward {}", grad[i]);
        }
        assert!(worst.is_finite(), "{name}");
    }

    /// A fixed random cotangent `c` turns an op's output into a scalar
    /// `Σ c·y` whose gradient is the op's backward of `c`.
    fn dotc(y: &[f32], c: &[f32]) -> f64 {
        y.iter().zip(c).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    #[test]
    fn linear_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (n, inp, out) = (3, 5, 4);
        let (x, w, c) = (randn(&mut rng, n * inp, 1.0), randn(&mut rng, out * inp, 1.0), randn(&mut rng, n * out, 1.0));
        let mut dw = vec![0f32; w.len()];
        let dx = linear_bwd(&x, n, &w, out, inp, &c, &mut dw, 1);
        check_grad("dx", &x, &dx, |x| dotc(&linear_fwd(x, n, &w, out, inp, 1), &c));
        check_grad("dw", &w, &dw, |w| dotc(&linear_fwd(&x, n, w, out, inp, 1), &c));
    }

    #[test]
    fn rms_norm_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let (n, d) = (3, 6);
        let (x, w, c) = (randn(&mut rng, n * d, 1.0), randn(&mut rng, d, 1.0), randn(&mut rng, n * d, 1.0));
        let (_, rinv) = rms_norm_fwd(&x, &w, 1e-5);
        let mut dw = vec![0f32; d];
        let dx = rms_norm_bwd(&x, &w, &rinv, &c, &mut dw);
        check_grad("dx", &x, &dx, |x| dotc(&rms_norm_fwd(x, &w, 1e-5).0, &c));
        check_grad("dw", &w, &dw, |w| dotc(&rms_norm_fwd(&x, w, 1e-5).0, &c));
    }

    #[test]
    fn rope_backward_is_the_transpose() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (n_head, hd) = (2, 8);
        let pos = [0usize, 3, 17];
        let rope = Rope::new(RopeStyle::Halves, hd, 10000.0, None);
        let (x, c) = (randn(&mut rng, 3 * n_head * hd, 1.0), randn(&mut rng, 3 * n_head * hd, 1.0));
        let mut dx = c.clone();
        rope_bwd(&rope, &mut dx, n_head, hd, &pos);
        check_grad("dx", &x, &dx, |x| {
            let mut y = x.to_vec();
            rope_fwd(&rope, &mut y, n_head, hd, &pos);
            dotc(&y, &c)
        });
    }

    #[test]
    fn swiglu_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (g, u, c) = (randn(&mut rng, 7, 3.0), randn(&mut rng, 7, 2.0), randn(&mut rng, 7, 1.0));
        let (dg, du) = swiglu_bwd(&g, &u, &c);
        check_grad("dg", &g, &dg, |g| dotc(&swiglu_fwd(g, &u), &c));
        check_grad("du", &u, &du, |u| dotc(&swiglu_fwd(&g, u), &c));
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (t, nh, nkv, hd) = (4, 4, 2, 3);
        let q = randn(&mut rng, t * nh * hd, 1.0);
        let k = randn(&mut rng, t * nkv * hd, 1.0);
        let v = randn(&mut rng, t * nkv * hd, 1.0);
        let c = randn(&mut rng, t * nh * hd, 1.0);
        let (_, p) = attention_fwd(&q, &k, &v, t, nh, nkv, hd);
        let (dq, dk, dv) = attention_bwd(&q, &k, &v, &p, &c, t, nh, nkv, hd);
        check_grad("dq", &q, &dq, |q| dotc(&attention_fwd(q, &k, &v, t, nh, nkv, hd).0, &c));
        check_grad("dk", &k, &dk, |k| dotc(&attention_fwd(&q, k, &v, t, nh, nkv, hd).0, &c));
        check_grad("dv", &v, &dv, |v| dotc(&attention_fwd(&q, &k, v, t, nh, nkv, hd).0, &c));
        // Causality: the first row attends to itself only.
        assert_eq!(p[0], 1.0);
        assert!(p[1..t].iter().all(|&x| x == 0.0));
    }
}
