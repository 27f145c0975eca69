//! MLA's per-head up-projections at decode: `heads` products of
//! `rows × cols` weights, each against its own activation row, as the
//! DeepSeek models run `attn_k_b` (V2-Lite: 16 heads of 512×128, Q5_0 in
//! its Q4_K_M GGUF) and `attn_v_b` (16 of 128×512, Q4_K), through
//! `matmul_q_each`, with each head's rows interleaved eight at a time as
//! the engine stores them (`x8`) and in the file's layout; beside them the
//! same bytes as one product of one activation row (`matmul_q_acts`), the
//! rate the weights could stream at.
//! Layers of 16 heads one after the other, 200 of them (over 100 MB, so
//! that each layer's weights come from memory as in a model).
//!
//!     cargo run --release -p whale-kernels --example per_head [type] [rows] [cols] [threads]
//!
//! `type` is `q5_0` (default) or `q4_k`; rows and cols of one head
//! (default 512 and 128).

mod common;

use std::time::Instant;
use whale_kernels::x8::Layout;
use whale_kernels::{matmul_q_acts, matmul_q_each, quantize_acts, GgmlType, QProductOwn};

fn main() {
    let mut args = std::env::args().skip(1);
    let ty = match args.next().as_deref() {
        Some("q4_k") => GgmlType::Q4_K,
        _ => GgmlType::Q5_0,
    };
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let cols: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(128);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let (heads, layers) = (16, 200);
    let rb = ty.row_bytes(cols).expect("cols must be a multiple of the type's block");
    let per_layer = heads * rows * rb;
    let w = common::random_weights(ty, layers * heads * rows, cols);
    let mut wx = common::random_weights(ty, layers * heads * rows, cols);
    for hw in wx.chunks_exact_mut(rows * rb) {
        whale_kernels::x8::interleave_in_place(ty, rows, cols, hw).expect("whole groups");
    }
    let x: Vec<f32> = (0..heads * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut ys = vec![vec![0f32; rows]; heads];
    let acts = quantize_acts(ty, &x[..cols], 1, cols);
    let mut y = vec![0f32; heads * rows];
    // The 16 heads of each layer as one `matmul_q_each`: seconds for all.
    let mut each = |w: &[u8], layout: Layout| {
        let t0 = Instant::now();
        for wl in w.chunks_exact(per_layer) {
            let mut products: Vec<QProductOwn<'_>> = ys
                .iter_mut()
                .enumerate()
                .map(|(h, y)| QProductOwn {
                    wty: ty,
                    layout,
                    w: &wl[h * rows * rb..(h + 1) * rows * rb],
                    rows,
                    cols,
                    m: 1,
                    x: &x[h * cols..(h + 1) * cols],
                    y,
                })
                .collect();
            matmul_q_each(&mut products, threads);
        }
        t0.elapsed().as_secs_f64()
    };
    for round in 0..3 {
        let inter = each(&wx, Layout::X8);
        let file = each(&w, Layout::File);
        let t1 = Instant::now();
        for l in 0..layers {
            matmul_q_acts(ty, &w[l * per_layer..(l + 1) * per_layer], heads * rows, cols, &acts, &mut y, threads);
        }
        let one = t1.elapsed().as_secs_f64();
        let us = |t: f64| t / layers as f64 * 1e6;
        let gbs = |t: f64| (per_layer * layers) as f64 / t / 1e9;
        println!(
            "round {round}: {heads} heads of {rows}x{cols} {ty}, {threads} threads: interleaved {:.1} µs a layer ({:.1} GB/s), file layout {:.1} µs ({:.1} GB/s); as one product {:.1} µs ({:.1} GB/s)",
            us(inter), gbs(inter), us(file), gbs(file), us(one), gbs(one)
        );
    }
}
