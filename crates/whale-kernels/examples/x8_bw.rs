//! Decode products over weights stored eight rows interleaved
//! (`whale_kernels::x8`) beside the same matrix in the file's layout
//! (`matmul_q_acts`, which on this CPU may take rows eight at a time too,
//! transposing in registers): weight bytes read per second, best of five,
//! the two alternating.
//!
//!     cargo run --release -p whale-kernels --example x8_bw [threads] [MB] [cols] [type] [m]
//!
//! `m` activation rows (default 1, decode; 512 for a prefill, where the
//! interleaved matrix goes back to the file's layout a tile at a time).
//!
//! With a small `MB` (1 or 2) the matrix stays in L2 and the figure is the
//! kernels' arithmetic; with a large one (400) their stream from memory.

mod common;

use std::time::Instant;
use whale_kernels::{matmul_q_acts, quantize_acts, x8, GgmlType};

fn best_of_five(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let cols: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let ty = match args.next() {
        Some(n) => {
            GgmlType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(&n)).expect("a type name such as q4_k")
        }
        None => GgmlType::Q4_K,
    };
    let m: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rb = ty.row_bytes(cols).expect("cols must be whole blocks");
    let rows = (mb * 1_000_000 / rb / x8::ROWS).max(1) * x8::ROWS;
    let w = common::random_weights(ty, rows, cols);
    let mut wx: Vec<u8> = Vec::with_capacity(w.len());
    common::huge_pages(&mut wx);
    wx.extend_from_slice(&w);
    x8::interleave_in_place(ty, rows, cols, &mut wx).expect("a matrix of whole groups");
    let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let acts = quantize_acts(ty, &x, m, cols);
    let (mut y, mut yx) = (vec![0f32; m * rows], vec![0f32; m * rows]);
    matmul_q_acts(ty, &w, rows, cols, &acts, &mut y, threads);
    x8::matmul_x8(ty, &wx, rows, cols, &acts, &mut yx, threads).expect("checked above");
    assert!(y.iter().zip(&yx).all(|(a, b)| a.to_bits() == b.to_bits()), "x8 and the file layout disagree");
    let reps = (4000 / mb.max(1) / m).clamp(3, 1000);
    let gbs = |t: f64| (rows * rb) as f64 / t / 1e9;
    for round in 0..3 {
        let file = best_of_five(reps, || matmul_q_acts(ty, &w, rows, cols, &acts, &mut y, threads));
        let inter = best_of_five(reps, || x8::matmul_x8(ty, &wx, rows, cols, &acts, &mut yx, threads).unwrap());
        println!(
            "round {round}: {ty} {rows}x{cols}, {m} activation rows, {threads} threads: \
             file layout {:.1} GB/s ({:.2} ms), interleaved {:.1} GB/s ({:.2} ms)",
            gbs(file),
            file * 1e3,
            gbs(inter),
            inter * 1e3
        );
    }
}
