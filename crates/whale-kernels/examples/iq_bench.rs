//! Speed of the i-quant and ternary dot products against 8-bit activations,
//! single thread, at every SIMD level: ns per 256-weight block and GB/s of
//! weights read (a row of 1792 blocks, so the loop, not the call, is timed).
//!
//!     cargo run --release -p whale-kernels --example iq_bench

use std::hint::black_box;
use std::time::Instant;
use whale_kernels::{quantize_acts, vec_dot_q_with, GgmlType, SimdLevel};

fn main() {
    let n = 256 * 1792;
    let mut s = 7u64;
    let mut rnd = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    println!("{:>8} {:>10} ns/block, GB/s of weights, per level", "type", "");
    for ty in GgmlType::ALL.into_iter().filter(|t| t.is_iquant()) {
        let rb = ty.row_bytes(n).unwrap();
        let mut row: Vec<u8> = (0..rb).map(|_| rnd() as u8).collect();
        for b in row.chunks_exact_mut(ty.type_size()) {
            whale_kernels::iq::set_block_d(ty, b, 0.01);
        }
        let acts = quantize_acts(ty, &x, 1, n);
        let blocks = (n / ty.block_size()) as f64;
        let mut line = format!("{:>8}", ty.name());
        for level in SimdLevel::available() {
            // Best of five timings of 20 calls (the host is shared).
            let reps = 20;
            let mut secs = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    black_box(vec_dot_q_with(level, ty, black_box(&row), &acts, 0));
                }
                secs = secs.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            line += &format!("  {level}: {:6.1} ns {:5.2} GB/s", secs * 1e9 / blocks, rb as f64 / secs / 1e9);
        }
        println!("{line}");
    }
}
