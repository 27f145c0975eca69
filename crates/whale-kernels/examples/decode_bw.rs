//! Decode-shaped products (one activation row) streaming a large quantized
//! matrix, per weight type: the weight bytes read per second, best of five
//! timings, to compare with the bandwidth `whale bench` measures.
//!
//!     cargo run --release -p whale-kernels --example decode_bw [threads] [MB] [cols] [types]
//!
//! `types` is a comma-separated list (default `q4_k,q6_k,q5_0,q8_0`).
//!
//! With a small `MB` (2) the matrix stays in L2 and the figure is the
//! kernel's compute rate instead.
//!
//! The first line is the plain read of as many bytes (`sum_words`, what
//! `whale bench` measures the decode bound with) at the same thread count,
//! and each type's line says what fraction of it the kernel reaches: the
//! ceiling that a kernel's own arithmetic leaves it. On the 2-core Intel
//! Xeon with AMX of stop 35, 800 MB at one thread: plain read 16.1 GB/s,
//! Q6_K 11.3 (70 %), Q4_K 9.7 (60 %), though from L2 (`MB` 1) the same
//! kernels ran 22.0 and 26.8 GB/s: one core keeps too few lines in flight
//! to hide the memory latency behind its arithmetic.
//!
//! Both the plain read and the matrices sit in 2 MiB pages
//! (`common::huge_pages`), as the weights do once whale reads them into
//! memory (`LoadMode::Read`, its default for models that fit).

mod common;

use std::time::Instant;
use whale_kernels::matmul::sum_words;
use whale_kernels::{matmul_q_acts, quantize_acts, GgmlType};

/// Best of five plain reads of `words`, split in `threads` contiguous
/// parts on scoped threads, in GB/s.
fn plain_read(words: &[u64], threads: usize) -> f64 {
    let per = words.len().div_ceil(threads.max(1));
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let total = std::thread::scope(|s| {
            let hs: Vec<_> = words.chunks(per).map(|c| s.spawn(move || sum_words(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (words.len() * 8) as f64 / best / 1e9
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let cols: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let types: Vec<GgmlType> = match args.next() {
        Some(list) => list
            .split(',')
            .map(|n| {
                GgmlType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(n)).expect("a type name such as q4_k")
            })
            .collect(),
        None => vec![GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_0, GgmlType::Q8_0],
    };
    let n = (mb * 1_000_000 / 8).max(1);
    let mut words: Vec<u64> = Vec::with_capacity(n);
    common::huge_pages(&mut words);
    words.extend(0..n as u64);
    let read = plain_read(&words, threads);
    drop(words);
    println!("plain read of {mb} MB, {threads} threads: {read:.1} GB/s");
    for ty in types {
        let rb = ty.row_bytes(cols).expect("cols must be a multiple of 256");
        let rows = (mb * 1_000_000 / rb).max(1);
        let w = common::random_weights(ty, rows, cols);
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let acts = quantize_acts(ty, &x, 1, cols);
        let mut y = vec![0f32; rows];
        matmul_q_acts(ty, &w, rows, cols, &acts, &mut y, threads);
        let reps = (4000 / mb.max(1)).clamp(3, 1000);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..reps {
                matmul_q_acts(ty, &w, rows, cols, &acts, &mut y, threads);
            }
            best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
        }
        let gbs = (rows * rb) as f64 / best / 1e9;
        println!(
            "{ty:5} {rows}x{cols}, {threads} threads: {gbs:.1} GB/s ({:.0} % of the plain read)",
            100.0 * gbs / read
        );
    }
}
