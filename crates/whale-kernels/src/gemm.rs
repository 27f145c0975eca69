//! Dense f32 GEMM, `C = A · B` with both operands row-major: the products
//! of training (forward and backward), where every operand is an f32
//! activation or weight and the inner dimension is short (a tiny model's
//! width), so the dot-per-output form of [`crate::matmul`] spends its time
//! in horizontal sums.
//!
//! Blocks of 4 rows × 32 columns of `C` are accumulated in registers over the
//! whole inner dimension as `C[i, j..j+32] += A[i, p] · B[p, j..j+32]`
//! (a broadcast times a contiguous piece of a row of `B`, loaded once for
//! four rows), a straight run of FMAs that the compiler vectorises. The same body is compiled for the scalar
//! reference and, with AVX2+FMA or AVX-512 enabled, for the SIMD levels;
//! the levels differ from the reference only by fused rounding (checked to
//! 1e-5 relative below).

use crate::dispatch::Verified;
// The levels with bodies of their own are x86 ones; on AArch64 NEON is the
// baseline, so the plain body is already vectorised with it.
#[cfg(target_arch = "x86_64")]
use crate::dispatch::SimdLevel;

/// Rows of `C` computed together.
const ROWS: usize = 4;
/// Columns of `C` a block keeps in registers (two AVX-512 vectors a row).
const COLS: usize = 32;

#[inline(always)]
fn body(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    let m = c.len() / n.max(1);
    let mut i = 0;
    while i + ROWS <= m {
        // Blocks of ROWS × COLS accumulate over all of k in registers.
        let mut j0 = 0;
        while j0 + COLS <= n {
            let mut acc = [[0f32; COLS]; ROWS];
            for p in 0..k {
                let br: &[f32; COLS] = b[p * n + j0..p * n + j0 + COLS].try_into().expect("COLS values");
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = a[(i + r) * k + p];
                    for j in 0..COLS {
                        row[j] += x * br[j];
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                c[(i + r) * n + j0..(i + r) * n + j0 + COLS].copy_from_slice(row);
            }
            j0 += COLS;
        }
        if j0 < n {
            // The last columns: a row of B at a time, four rows of C.
            let w = n - j0;
            for p in 0..k {
                let br = &b[p * n + j0..(p + 1) * n];
                for r in 0..ROWS {
                    let x = a[(i + r) * k + p];
                    let cr = &mut c[(i + r) * n + j0..(i + r) * n + n];
                    for j in 0..w {
                        cr[j] += x * br[j];
                    }
                }
            }
        }
        i += ROWS;
    }
    for i in i..m {
        let ci = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let x = a[i * k + p];
            for (cv, bv) in ci.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *cv += x * bv;
            }
        }
    }
}

/// The scalar reference: `c[i, j] = Σ_p a[i, p] · b[p, j]` (overwrites `c`).
pub fn gemm_f32_ref(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    check(a, b, c, m, k, n);
    c.fill(0.0);
    body(a, b, c, k, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    body(a, b, c, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn body_avx512(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    body(a, b, c, k, n)
}

fn body_with(v: Verified, a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Verified` is only made after the CPU was checked for the level.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { body_avx512(a, b, c, k, n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2Fma => unsafe { body_avx2(a, b, c, k, n) },
        _ => body(a, b, c, k, n),
    }
}

fn check(a: &[f32], b: &[f32], c: &[f32], m: usize, k: usize, n: usize) {
    assert!(
        Some(a.len()) == m.checked_mul(k) && Some(b.len()) == k.checked_mul(n) && Some(c.len()) == m.checked_mul(n),
        "gemm_f32: a {} (m·k = {m}·{k}), b {} (k·n = {k}·{n}), c {} (m·n)",
        a.len(),
        b.len(),
        c.len()
    );
}

/// `c = a · b` (`[m, k] · [k, n]`, row-major), at the active SIMD level,
/// rows split over up to `threads` threads when the product is large
/// enough to pay for it. The result does not depend on `threads`.
pub fn gemm_f32(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, threads: usize) {
    check(a, b, c, m, k, n);
    c.fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let v = Verified::active();
    let work = m.saturating_mul(k).saturating_mul(n);
    let parts = if work < 1 << 20 { 1 } else { threads.clamp(1, m.div_ceil(ROWS)) };
    if parts <= 1 {
        body_with(v, a, b, c, k, n);
        return;
    }
    // Whole blocks of ROWS rows per part, so the split does not change results.
    let rows = m.div_ceil(parts).div_ceil(ROWS) * ROWS;
    let jobs: Vec<_> = c.chunks_mut(rows * n).zip(a.chunks(rows * k)).collect();
    crate::pool::run_parts(threads, jobs, |(cp, ap)| body_with(v, ap, b, cp, k, n));
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(not(target_arch = "x86_64"))]
    use crate::dispatch::SimdLevel;

    #[test]
    fn gemm_matches_f64_and_the_reference_at_every_level_and_split() {
        let mut s = 12345u64;
        let mut r = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (9, 64, 33), (130, 70, 129), (257, 64, 192)] {
            let a: Vec<f32> = (0..m * k).map(|_| r()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r()).collect();
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                }
            }
            let mut reference = vec![0f32; m * n];
            gemm_f32_ref(&a, &b, &mut reference, m, k, n);
            for level in SimdLevel::ALL.iter().copied().filter(|l| l.is_available()) {
                let v = Verified::new(level).expect("available");
                let mut c = vec![0f32; m * n];
                body_with(v, &a, &b, &mut c, k, n);
                for (x, y) in c.iter().zip(&want) {
                    assert!(
                        (*x as f64 - y).abs() <= 1e-5 * (k as f64).sqrt() * y.abs().max(1.0),
                        "{level:?} {m}x{k}x{n}"
                    );
                }
            }
            for threads in [1, 2, 3] {
                let mut c = vec![0f32; m * n];
                gemm_f32(&a, &b, &mut c, m, k, n, threads);
                let mut one = vec![0f32; m * n];
                gemm_f32(&a, &b, &mut one, m, k, n, 1);
                assert_eq!(c, one, "threads must not change results");
            }
            for (x, y) in reference.iter().zip(&want) {
                assert!((*x as f64 - y).abs() <= 1e-5 * (k as f64).sqrt() * y.abs().max(1.0));
            }
        }
    }
}
