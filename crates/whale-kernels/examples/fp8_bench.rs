//! FP8 decode throughput: `fp8::matmul` with one activation row over a
//! matrix larger than the caches, against a bf16 `matvec` of the same
//! shape, in GB/s of weights read. `cargo run --release -p whale-kernels
//! --example fp8_bench [THREADS] [ROWS]`: with few rows (64: 0.46 MB) the
//! matrix stays in L2 and the figure is the kernels' compute rate.

use std::time::Instant;

use whale_kernels::fp8::{self, Fp8Matrix};
use whale_kernels::GgmlType;

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let rows: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(18432);
    let cols = 7168;
    let mut s = 0x1234_5678_u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    // Codes of realistic magnitude (exponents 4..11: |v| from 2^-3 to 2^4·1.9).
    let w: Vec<u8> = (0..rows * cols)
        .map(|_| {
            let r = next();
            (r as u8 & 0x87) | (((4 + (r >> 8) % 8) as u8) << 3)
        })
        .collect();
    let scales: Vec<f32> = (0..rows.div_ceil(128) * cols.div_ceil(128)).map(|i| 1e-3 + i as f32 * 1e-7).collect();
    let bf: Vec<u8> = (0..rows * cols)
        .flat_map(|_| half::bf16::from_f32(((next() % 2001) as f32 - 1000.0) * 1e-5).to_le_bytes())
        .collect();
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; rows];
    let wm = Fp8Matrix { w: &w, scales: &scales, rows, cols, row0: 0 };
    for round in 0..3 {
        let t = Instant::now();
        let reps: usize = (20 * 18432 / rows).max(2);
        for _ in 0..reps {
            fp8::matmul(wm, &x, 1, &mut y, threads);
        }
        let fp8_gbs = (reps * rows * cols) as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        for _ in 0..reps / 2 {
            whale_kernels::matvec(GgmlType::BF16, &bf, rows, cols, &x, &mut y, threads);
        }
        let bf_gbs = (reps / 2 * rows * cols * 2) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("round {round}: fp8 {fp8_gbs:.1} GB/s, bf16 {bf_gbs:.1} GB/s ({threads} threads, [{rows}, {cols}])");
    }
}
