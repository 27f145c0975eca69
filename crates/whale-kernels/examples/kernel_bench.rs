//! Rough timing of the row-dot kernels at every SIMD level, and of matvec /
//! matmul on a 0.5B-model-sized matrix.
//!
//!     cargo run --release -p whale-kernels --example kernel_bench [threads]

use std::hint::black_box;
use std::time::Instant;
use whale_kernels::{matmul, matvec, vec_dot_with, GgmlType, SimdLevel};

fn pseudo_random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Random quant bits with every f16/bf16 field replaced by a small value,
/// so no NaN/inf slows anything down.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let mut w = pseudo_random_bytes(rows * ty.row_bytes(cols).unwrap(), 7);
    if ty == GgmlType::F16 {
        for c in w.chunks_exact_mut(2) {
            c[1] = (c[1] & 0x83) | 0x38; // |v| in [0.5, 2): normal, finite
        }
    } else if ty == GgmlType::BF16 {
        for c in w.chunks_exact_mut(2) {
            c[1] = (c[1] & 0x80) | 0x3f; // |v| in [0.5, 2): normal, finite
        }
    } else if ty == GgmlType::F32 {
        for c in w.chunks_exact_mut(4) {
            c[3] = (c[3] & 0x80) | 0x3f; // |v| in [0.5, 2): normal, finite
        }
    }
    // Quantized types: scale fields are random f16 bits; NaN/inf there only
    // changes values, not speed, for these kernels.
    w
}

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let (rows, cols) = (896, 4864); // a 0.5B model's ffn_down
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    println!("row dot, {rows} rows x {cols} cols, ns per weight (single thread)");
    for ty in GgmlType::ALL {
        let w = weights(ty, rows, cols);
        let rb = ty.row_bytes(cols).unwrap();
        let mut line = format!("{:>5}", ty.name());
        for level in SimdLevel::available() {
            let reps = 3;
            let t = Instant::now();
            let mut acc = 0f32;
            for _ in 0..reps {
                for row in w.chunks_exact(rb) {
                    acc += vec_dot_with(level, ty, row, &x);
                }
            }
            black_box(acc);
            let ns = t.elapsed().as_nanos() as f64 / (reps * rows * cols) as f64;
            let gbs = (reps * w.len()) as f64 / t.elapsed().as_nanos() as f64;
            line += &format!("  {level}: {ns:.3} ({gbs:.1} GB/s)");
        }
        println!("{line}");
    }
    println!("matvec / matmul(m=32), {threads} threads, ms per call");
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        let w = weights(ty, rows, cols);
        let mut y = vec![0f32; rows];
        let t = Instant::now();
        for _ in 0..10 {
            matvec(ty, &w, rows, cols, &x, &mut y, threads);
        }
        let mv = t.elapsed().as_secs_f64() * 100.0;
        let m = 32;
        let xs: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut ys = vec![0f32; m * rows];
        let t = Instant::now();
        matmul(ty, &w, rows, cols, &xs, m, &mut ys, threads);
        let mm = t.elapsed().as_secs_f64() * 1000.0;
        println!("{:>5}  matvec {mv:.2} ms  matmul {mm:.2} ms", ty.name());
    }
}
