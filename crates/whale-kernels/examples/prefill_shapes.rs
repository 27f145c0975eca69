//! Prefill products at Qwen2.5-0.5B and DeepSeek-V2-Lite shapes (M tokens,
//! one thread; a third argument keeps the shapes whose name contains it):
//!
//!     cargo run --release -p whale-kernels --example prefill_shapes [m] [threads] [name]

mod common;

use std::time::Instant;
use whale_kernels::{matmul_q, GgmlType};

fn main() {
    let mut args = std::env::args().skip(1);
    let m: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let only = args.next();
    let shapes = [
        ("ffn_gate/up", GgmlType::Q5_0, 4864, 896),
        ("ffn_down", GgmlType::Q6_K, 896, 4864),
        ("attn_q/o", GgmlType::Q5_0, 896, 896),
        ("attn_v", GgmlType::Q8_0, 128, 896),
        ("768 cols", GgmlType::Q5_0, 4864, 768),
        ("1024 cols", GgmlType::Q5_0, 4864, 1024),
        ("ffn_down q4_K", GgmlType::Q4_K, 896, 4864),
        ("smollm2 gate q4_1", GgmlType::Q4_1, 1536, 576),
        // An IQ4_XS file's 896-column matrices (IQ4_NL, its fallback).
        ("ffn_gate/up iq4_nl", GgmlType::IQ4_NL, 4864, 896),
        ("v2l expert gate iq4_xs", GgmlType::IQ4_XS, 1408, 2048),
        // The K types without panels (Q2_K/Q3_K files).
        ("ffn_down q2_K", GgmlType::Q2_K, 896, 4864),
        ("ffn_down q3_K", GgmlType::Q3_K, 896, 4864),
        // DeepSeek-V2-Lite: an expert's gate/up and down (1408 columns are
        // not a multiple of 256, so llama-quantize stores downs as Q5_0 or
        // Q8_0), the shared experts' down, the query.
        ("v2l expert gate", GgmlType::Q4_K, 1408, 2048),
        ("v2l expert down", GgmlType::Q5_0, 2048, 1408),
        ("v2l shared down", GgmlType::Q6_K, 2048, 2816),
        ("v2l attn_q", GgmlType::Q4_K, 3072, 2048),
        // DeepSeek-V3: a slice of the dense gate/up and of the down.
        ("v3 ffn_gate", GgmlType::Q4_K, 1024, 7168),
        ("v3 ffn_down", GgmlType::Q6_K, 512, 18432),
        // Its experts in unsloth's 1.58-bit mix (a slice of 512 rows; an
        // expert sees about 16 of 512 prompt tokens, m = 16), and in Q4_K.
        ("v3 expert gate iq1_s", GgmlType::IQ1_S, 512, 7168),
        ("v3 expert down iq2_xxs", GgmlType::IQ2_XXS, 512, 2048),
        ("v3 expert gate q4_K", GgmlType::Q4_K, 512, 7168),
    ];
    for (name, ty, rows, cols) in shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let w = common::random_weights(ty, rows, cols);
        let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0f32; m * rows];
        matmul_q(ty, &w, rows, cols, &x, m, &mut y, threads);
        // Best of ten: the machines this runs on are shared, and a
        // neighbour only ever makes a run slower.
        let dt = (0..10)
            .map(|_| {
                let t0 = Instant::now();
                matmul_q(ty, &w, rows, cols, &x, m, &mut y, threads);
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "{name:16} {ty:5} {rows}x{cols} m={m}: {:.2} ms, {:.1} GMAC/s",
            dt * 1e3,
            (rows * cols * m) as f64 / dt / 1e9
        );
    }
}
