//! Float-weight GEMMs (F32 and BF16 weights, f32 activations) at the shapes
//! of Janus-Pro-1B: the SigLIP encoder (576 patches, width 1024, MLP 4096)
//! and the language model's prefill of an understood image (599 tokens,
//! width 2048, MLP 5632). Prints the best of 7 runs in GFLOPS:
//!
//!     cargo run --release -p whale-kernels --example float_gemm [threads]

use std::time::Instant;
use whale_kernels::GgmlType;

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let shapes = [
        ("encoder q/k/v/o", 576usize, 1024usize, 1024usize),
        ("encoder fc1", 576, 1024, 4096),
        ("encoder fc2", 576, 4096, 1024),
        ("lm q/k/v/o", 599, 2048, 2048),
        ("lm gate/up", 599, 2048, 5632),
        ("lm down", 599, 5632, 2048),
    ];
    for (name, m, k, n) in shapes {
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
        for ty in [GgmlType::F32, GgmlType::BF16] {
            let wb: Vec<u8> = match ty {
                GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                _ => w.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
            };
            let mut y = vec![0f32; m * n];
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                whale_kernels::matmul(ty, &wb, n, k, &x, m, &mut y, threads);
                best = best.min(t.elapsed().as_secs_f64());
            }
            let gflops = 2.0 * (m * n * k) as f64 / best / 1e9;
            println!("{name:16} {ty:>4} [{m}, {k}] x [{n}, {k}]: {:7.1} ms, {gflops:6.1} GFLOPS", best * 1e3);
        }
    }
}
