//! A MoE layer's decode products: `n` matrices of `rows × cols` (a layer's
//! expert gate and up matrices; DeepSeek-V2-Lite: 16 of 1408 × 2048, Q4_K)
//! against one activation row as one `matmul_q_many` job, beside one
//! product of the same bytes: weight bytes read per second, the mean of a
//! pass over 400 MB of such layers (so that each comes from memory, as in
//! a model), the two alternating for six rounds.
//!
//!     cargo run --release -p whale-kernels --example moe_bw [threads] [n] [rows] [cols] [type]
//!
//! Defaults: 2 threads, 16 matrices of 1408 × 2048, Q4_K, stored eight
//! rows interleaved (`whale_kernels::x8`) as whale loads them.

mod common;

use std::time::Instant;
use whale_kernels::{matmul_q_many, x8, x8::Layout, GgmlType, QProduct};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1408);
    let cols: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let ty = match args.next() {
        Some(t) => GgmlType::ALL.into_iter().find(|g| g.name().eq_ignore_ascii_case(&t)).expect("a type such as q4_k"),
        None => GgmlType::Q4_K,
    };
    assert!(rows.is_multiple_of(x8::ROWS), "rows must be whole groups of {}", x8::ROWS);
    let rb = ty.row_bytes(cols).expect("cols must be whole blocks");
    let mb = rows * rb;
    let layers = (400_000_000 / (n * mb)).max(2);
    let mut w = common::random_weights(ty, layers * n * rows, cols); // in 2 MiB pages
    for m in w.chunks_exact_mut(mb) {
        x8::interleave_in_place(ty, rows, cols, m).expect("whole groups");
    }
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let (mut ys, mut y_one) = (vec![vec![0f32; rows]; n], vec![0f32; n * rows]);
    let layer = |l: usize| &w[l * n * mb..(l + 1) * n * mb];
    let gbs = |t: f64| (layers * n * mb) as f64 / t / 1e9;
    for round in 0..6 {
        let t0 = Instant::now();
        for l in 0..layers {
            let mut ps: Vec<QProduct> = layer(l)
                .chunks_exact(mb)
                .zip(ys.iter_mut())
                .map(|(w, y)| QProduct { wty: ty, layout: Layout::X8, w, rows, y })
                .collect();
            matmul_q_many(&mut ps, cols, &x, 1, threads);
        }
        let many = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for l in 0..layers {
            let mut p = [QProduct { wty: ty, layout: Layout::X8, w: layer(l), rows: n * rows, y: &mut y_one }];
            matmul_q_many(&mut p, cols, &x, 1, threads);
        }
        let one = t0.elapsed().as_secs_f64();
        assert!(ys.concat().iter().zip(&y_one).all(|(a, b)| a.to_bits() == b.to_bits()), "the same products");
        println!(
            "round {round}: {n} x {rows}x{cols} {ty}, {threads} threads: {n} products {:.1} GB/s ({:.0} µs a layer), \
             one product {:.1} GB/s ({:.0} µs)",
            gbs(many),
            many / layers as f64 * 1e6,
            gbs(one),
            one / layers as f64 * 1e6
        );
    }
}
