//! Decode attention over a long cache: one token's queries against
//! `depth` cached rows, as `models::attention` runs it, in microseconds a
//! layer (best of several rounds). The default shapes are DeepSeek-V2-Lite's
//! MLA with the absorbed queries (16 heads of 576 against one latent KV head
//! whose first 512 values are the value), on an f16 cache, llama.cpp's
//! default cache type.
//!
//!     cargo run --release -p whale-engine --example attn_decode [depth] [heads] [threads] [kv_heads k_dim v_dim]
//!
//! For V3's 128 heads: `attn_decode 4096 128`; for a GQA model such as
//! Qwen2.5-0.5B (14 heads, 2 KV heads of 64): `attn_decode 4096 14 2 2 64 64`.
//! Before each layer's call (and outside its timing) the benchmark reads
//! 256 MB of other memory, as a model's decode streams its weights between
//! two layers' attention, so that the cache comes from memory as it does
//! in a model and not from L3.

use std::time::Instant;
use whale_engine::models::{attention_into, AttnLayout, CacheType, KvRows};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("numbers only"));
    let depth = args.next().unwrap_or(4096);
    let n_head = args.next().unwrap_or(16);
    let threads = args.next().unwrap_or(2);
    let n_kv_head = args.next().unwrap_or(1);
    let k_dim = args.next().unwrap_or(576);
    let v_dim = args.next().unwrap_or(512);
    // MLA: the value is the first v_dim entries of the key row; otherwise
    // K and V are separate caches of kv_heads × dim.
    let mla = n_kv_head == 1 && v_dim < k_dim;
    let stride = n_kv_head * k_dim;
    let v_stride = if mla { stride } else { n_kv_head * v_dim };
    let lay = AttnLayout { n_head, n_kv_head, k_dim, v_dim, k_stride: stride, v_stride };
    let layers = 6;
    let n = depth + 1;
    let fill = |len: usize, seed: f32| -> Vec<f32> { (0..len).map(|i| ((i as f32) * seed).sin()).collect() };
    let caches: Vec<(KvRows, KvRows)> = (0..layers)
        .map(|l| {
            let mut k = KvRows::zeros(CacheType::F16, n * stride);
            k.write(0, &fill(n * stride, 0.013 + l as f32 * 1e-3));
            let mut v = KvRows::zeros(CacheType::F16, if mla { 0 } else { n * v_stride });
            if !mla {
                v.write(0, &fill(n * v_stride, 0.017 + l as f32 * 1e-3));
            }
            (k, v)
        })
        .collect();
    let q = fill(n_head * k_dim, 0.029);
    let mut out = vec![0f32; n_head * v_dim];
    let scale = 1.0 / (k_dim as f32).sqrt();
    let other: Vec<u64> = (0..32 << 20).map(|i| i as u64).collect();
    let mut best = f64::MAX;
    for _ in 0..10 {
        let mut t = 0.0;
        for (k, v) in &caches {
            std::hint::black_box(other.iter().fold(0u64, |a, &x| a.wrapping_add(x)));
            let t0 = Instant::now();
            let vv = if mla { k.view() } else { v.view() };
            attention_into(&q, k.view(), vv, lay, 1, depth, scale, threads, &mut out);
            t += t0.elapsed().as_secs_f64();
        }
        best = best.min(t / layers as f64);
    }
    std::hint::black_box(&out);
    let cache_mb = (n * (stride + if mla { 0 } else { v_stride }) * 2) as f64 / 1e6;
    let flops = 2.0 * (n_head * n * (k_dim + v_dim)) as f64;
    println!(
        "depth {depth}, {n_head} heads, {n_kv_head} KV heads of {k_dim}/{v_dim}, {threads} threads: {:.0} us a layer \
         ({cache_mb:.1} MB of f16 cache, {:.1} GFLOP/s)",
        best * 1e6,
        flops / best / 1e9
    );
}
