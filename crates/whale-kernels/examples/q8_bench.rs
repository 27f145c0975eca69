//! Rough timing of the f32-activation path (`matvec`) against the
//! quantized-activation path (`matmul_q`, m = 1, activation quantization
//! included) on a 896 x 4864 matrix (a 0.5B model's ffn_down is 896 rows of
//! 4864), at every SIMD level, single-threaded by default.
//!
//!     cargo run --release -p whale-kernels --example q8_bench [threads] [reps] [rows]
//!
//! (`rows` defaults to 896; a small value such as 64 keeps the matrix in
//! L2 and shows compute cost rather than memory bandwidth.)
//!
//! Prints ns per weight (lower is better) and the weight bytes streamed per
//! second. Numbers on a shared machine are noisy: each figure is the best of
//! `reps` timed calls after a warm-up call.

use std::hint::black_box;
use std::time::Instant;

use whale_kernels::dispatch::SimdLevel;
use whale_kernels::{matmul_q, matvec, quantize_acts_with, vec_dot_q_with, GgmlType};

fn pseudo_random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Random quant bits; scale fields are random f16 bits too (NaN/inf there
/// change values, not speed).
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    pseudo_random_bytes(rows * ty.row_bytes(cols).unwrap(), 7)
}

/// Best-of-`reps` seconds for `f` (after one warm-up call).
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(896);
    let cols = 4864;
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let levels = SimdLevel::available();
    println!("{rows} x {cols}, {threads} thread(s), best of {reps}; ns per weight (GB/s of weights)");
    println!("matvec = f32 activations (existing path, process-wide level); others = matmul_q per level");
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        let w = weights(ty, rows, cols);
        let per = |secs: f64| {
            let ns = secs * 1e9 / (rows * cols) as f64;
            let gbs = w.len() as f64 / secs / 1e9;
            format!("{ns:.4} ({gbs:5.1})")
        };
        let mut y = vec![0f32; rows];
        let t_mv = best(reps, || matvec(ty, &w, rows, cols, &x, &mut y, threads));
        let mut line = format!("{:>5}  matvec {}", ty.name(), per(t_mv));
        for &level in &levels {
            // matmul_q uses the process-wide level, so time its two halves
            // at an explicit level: quantization + one dot per row (the
            // single-thread work matmul_q does).
            let rb = ty.row_bytes(cols).unwrap();
            let t = best(reps, || {
                let acts = quantize_acts_with(level, ty, &x, 1, cols);
                let mut acc = 0f32;
                for row in w.chunks_exact(rb) {
                    acc += vec_dot_q_with(level, ty, row, &acts, 0);
                }
                black_box(acc);
            });
            line += &format!("  q8/{level} {}", per(t));
        }
        let t_q = best(reps, || matmul_q(ty, &w, rows, cols, &x, 1, &mut y, threads));
        line += &format!("  matmul_q {}", per(t_q));
        println!("{line}");
    }
    // Prefill-sized batch.
    let m = 32;
    let xs: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.11).cos()).collect();
    println!("batch m = {m}: ms per call (matmul_q, process-wide level)");
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        let w = weights(ty, rows, cols);
        let mut ys = vec![0f32; m * rows];
        let t = best(reps.min(5), || matmul_q(ty, &w, rows, cols, &xs, m, &mut ys, threads));
        println!(
            "{:>5}  {:.2} ms  ({:.4} ns per weight-activation product)",
            ty.name(),
            t * 1e3,
            t * 1e9 / (rows * cols * m) as f64
        );
    }
}
