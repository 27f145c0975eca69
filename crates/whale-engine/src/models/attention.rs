//! Causal attention over the KV cache: scores, softmax and the weighted sum
//! of values, split into work items over the worker pool. MLA runs through
//! the same function as multi-query attention with one KV head.

use std::ops::Range;

use crate::models::ops;

/// Where each head's keys and values sit in the cache rows.
#[derive(Clone, Copy, Debug)]
pub struct AttnLayout {
    pub n_head: usize,
    /// Heads share K/V in groups of `n_head / n_kv_head` (1: multi-query).
    pub n_kv_head: usize,
    /// Length of a query/key head vector.
    pub k_dim: usize,
    /// Length of a value head vector.
    pub v_dim: usize,
    /// Values between consecutive positions in the K and V caches.
    pub k_stride: usize,
    pub v_stride: usize,
}

/// Causal attention over the cache: scores, softmax, weighted values.
///
/// `q`: `[n_tok, n_head, k_dim]` for tokens at positions `pos0..`; the caches
/// already hold positions `0 .. pos0 + n_tok`, kv head `g` of position `p` at
/// `p * stride + g * dim`. Returns `[n_tok, n_head, v_dim]`. MLA uses it with
/// one KV head whose value is the first `v_dim` entries of the key row.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k_cache: whale_kernels::KvSlice<'_>,
    v_cache: whale_kernels::KvSlice<'_>,
    lay: AttnLayout,
    n_tok: usize,
    pos0: usize,
    scale: f32,
    threads: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; n_tok * lay.n_head * lay.v_dim];
    attention_into(q, k_cache, v_cache, lay, n_tok, pos0, scale, threads, &mut out);
    out
}

/// [`attention`] into `out` (`[n_tok, n_head, v_dim]`, every element
/// written): MLA's prefill writes a whole layer's latent outputs, 134 MB
/// at V3's shapes and 512 tokens, into the buffer that goes on instead of
/// a new one copied there.
#[allow(clippy::too_many_arguments)]
pub fn attention_into(
    q: &[f32],
    k_cache: whale_kernels::KvSlice<'_>,
    v_cache: whale_kernels::KvSlice<'_>,
    lay: AttnLayout,
    n_tok: usize,
    pos0: usize,
    scale: f32,
    threads: usize,
    out: &mut [f32],
) {
    let AttnLayout { n_head, n_kv_head, k_dim, v_dim, k_stride, v_stride } = lay;
    assert_eq!(out.len(), n_tok * n_head * v_dim, "attention: output of the wrong size");
    if n_tok == 0 {
        return;
    }
    let group = n_head / n_kv_head;
    let threads = if n_tok * n_head * (pos0 + n_tok) * k_dim < 1 << 15 { 1 } else { threads.max(1) };
    // A work item is a set of query rows that share KV heads, so each
    // cached row is read once for all of them:
    // * prefill (enough tokens for every thread): a tile of up to
    //   `ATTN_TOKEN_TILE` consecutive tokens with all their KV heads; the
    //   tile's tokens see the shared prefix of the cache together, each
    //   masked to its own causal length;
    // * fewer tokens but at least one (token, KV head) a thread (GQA
    //   decode): one token's heads of one KV head;
    // * fewer (MLA decode, one KV head for all heads): no items; the
    //   threads split the cache instead ([`attention_split`]).
    // Either way an item's outputs are contiguous in `[n_tok, n_head, v_dim]`.
    let tiled = n_tok >= 2 * threads;
    if !tiled && n_tok * n_kv_head < threads {
        attention_split(q, k_cache, v_cache, lay, n_tok, pos0, scale, threads, out);
        return;
    }
    let tile = if tiled { (n_tok / (2 * threads)).clamp(1, ATTN_TOKEN_TILE) } else { 1 };
    let item = |i: usize| -> AttnItem {
        if tiled {
            let t0 = i * tile;
            AttnItem { t0, t1: (t0 + tile).min(n_tok), g0: 0, g1: n_kv_head }
        } else {
            let (t, g) = (i / n_kv_head, i % n_kv_head);
            AttnItem { t0: t, t1: t + 1, g0: g, g1: g + 1 }
        }
    };
    let items = if tiled { n_tok.div_ceil(tile) } else { n_tok * n_kv_head };
    let work = |range: Range<usize>, out: &mut [f32]| {
        let (mut qs, mut scores, mut lens, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        for i in range {
            let it = item(i);
            let rows = (it.t1 - it.t0) * group;
            // Causal: token t sees positions 0..=pos0+t.
            let n_max = pos0 + it.t1;
            // One token, or every head of one KV head (MLA): the query rows
            // of a KV head are consecutive in `q` and its output rows in
            // `out`, read and written in place (copying them cost MLA a
            // 2.4 MB query block per tile).
            let in_place = it.t1 - it.t0 == 1 || n_kv_head == 1;
            for g in it.g0..it.g1 {
                let first = it.t0 * n_head + g * group;
                lens.clear();
                for t in it.t0..it.t1 {
                    lens.extend(std::iter::repeat_n(pos0 + t + 1, group));
                }
                let q_rows = if in_place {
                    &q[first * k_dim..][..rows * k_dim]
                } else {
                    // Query rows of this KV head, token-major.
                    qs.clear();
                    for t in it.t0..it.t1 {
                        let first = t * n_head + g * group;
                        qs.extend_from_slice(&q[first * k_dim..(first + group) * k_dim]);
                    }
                    &qs[..]
                };
                scores.resize(rows * n_max, 0.0);
                whale_kernels::attn_scores(q_rows, k_dim, k_cache.tail(g * k_dim), k_stride, scale, &lens, &mut scores);
                for (row, &len) in scores.chunks_exact_mut(n_max).zip(&lens) {
                    ops::softmax(&mut row[..len]);
                }
                let values = v_cache.tail(g * v_dim);
                if in_place {
                    let dst = &mut out[at + (g - it.g0) * group * v_dim..][..rows * v_dim];
                    whale_kernels::attn_weighted_sum(&scores, n_max, values, v_stride, v_dim, &lens, dst);
                    continue;
                }
                o.resize(rows * v_dim, 0.0);
                whale_kernels::attn_weighted_sum(&scores, n_max, values, v_stride, v_dim, &lens, &mut o);
                // Row (t, h) goes to output row t * n_head + g * group + h
                // of this tile.
                for (r, src) in o.chunks_exact(group * v_dim).enumerate() {
                    let dst = at + (r * n_head + g * group) * v_dim;
                    out[dst..dst + group * v_dim].copy_from_slice(src);
                }
            }
            at += it.rows(group) * v_dim;
        }
    };
    let threads = threads.min(items);
    if threads == 1 {
        work(0..items, out);
        return;
    }
    // Causal: token t costs pos0 + t + 1 per KV head, so equal item counts
    // would give the last thread most of the work. Cut where the running
    // cost reaches each thread's share.
    let cost = |i: usize| {
        let it = item(i);
        (it.t0..it.t1).map(|t| (pos0 + t + 1) as u64).sum::<u64>() * (it.g1 - it.g0) as u64
    };
    let total: u64 = (0..items).map(cost).sum();
    let mut bounds = vec![0usize];
    let mut acc = 0u64;
    for i in 0..items {
        acc += cost(i);
        if bounds.len() < threads && acc * threads as u64 >= total * bounds.len() as u64 {
            bounds.push(i + 1);
        }
    }
    if *bounds.last().expect("starts at 0") != items {
        bounds.push(items);
    }
    let mut parts = Vec::with_capacity(bounds.len() - 1);
    let mut rest = out;
    for w in bounds.windows(2) {
        let rows: usize = (w[0]..w[1]).map(|i| item(i).rows(group)).sum();
        let (chunk, tail) = rest.split_at_mut(rows * v_dim);
        parts.push((w[0]..w[1], chunk));
        rest = tail;
    }
    whale_kernels::pool::run_parts(threads, parts, |(range, chunk)| work(range, chunk));
}

/// One work item of [`attention_into`]: tokens `t0..t1` with KV heads
/// `g0..g1` (all the heads of each).
#[derive(Clone, Copy)]
struct AttnItem {
    t0: usize,
    t1: usize,
    g0: usize,
    g1: usize,
}

impl AttnItem {
    /// Query rows (token, head) of the item, with `group` heads a KV head.
    fn rows(self, group: usize) -> usize {
        (self.t1 - self.t0) * (self.g1 - self.g0) * group
    }
}

/// Consecutive prefill tokens whose queries meet each cached row together
/// in [`attention`] (the rows are read once per tile instead of once per
/// token; 8 tokens of SmolLM2's 3-head groups make 24 query rows).
const ATTN_TOKEN_TILE: usize = 8;

/// Cached positions below which [`attention_split`] gives a thread no
/// share of the scores (a share costs a pool wake-up; 64 positions of
/// V2-Lite's MLA are 0.6 M multiply-adds).
const SPLIT_MIN_POSITIONS: usize = 64;

/// Attention for fewer (token, KV head) pairs than threads (MLA's decode:
/// one KV head for all the heads): every thread
/// works on every query row, over its own part of the cache, so each
/// cached row is read once for all the heads that share it. Until stop 41
/// such a call split the heads instead, and every thread's group of heads
/// read the whole cache again: V2-Lite's MLA (16 heads over one latent
/// row of 576) read its cache four times with two threads, and the
/// attention of a token at depth 4096 took 2.2 ms a layer.
///
/// Three passes over the pool, each with the same arithmetic as the items
/// of [`attention_into`], so a token's result has the same bits whichever
/// path and thread count computes it:
/// 1. the scores of every row, the positions in one contiguous range a
///    thread (each score is one dot, whatever range holds it);
/// 2. each row's softmax over all its positions, rows split between the
///    threads;
/// 3. the weighted sums, the value columns split between the threads
///    (each output element still adds its positions in order).
#[allow(clippy::too_many_arguments)]
fn attention_split(
    q: &[f32],
    k_cache: whale_kernels::KvSlice<'_>,
    v_cache: whale_kernels::KvSlice<'_>,
    lay: AttnLayout,
    n_tok: usize,
    pos0: usize,
    scale: f32,
    threads: usize,
    out: &mut [f32],
) {
    use whale_kernels::pool::run_parts;
    let AttnLayout { n_head, n_kv_head, k_dim, v_dim, k_stride, v_stride } = lay;
    let group = n_head / n_kv_head;
    let n_max = pos0 + n_tok;
    let rows = n_tok * n_head; // row t * n_head + h, as in `q` and `out`
    let len = |r: usize| pos0 + r / n_head + 1;

    // 1. Scores, a range of positions a part: [rows, range] each.
    let parts = threads.min(n_max.div_ceil(SPLIT_MIN_POSITIONS)).max(1);
    let ranges: Vec<Range<usize>> = (0..parts).map(|i| i * n_max / parts..(i + 1) * n_max / parts).collect();
    let mut part_scores: Vec<Vec<f32>> = ranges.iter().map(|r| vec![0f32; rows * r.len()]).collect();
    let jobs: Vec<_> = ranges.iter().cloned().zip(part_scores.iter_mut()).collect();
    run_parts(threads, jobs, |(range, buf)| {
        let w = range.len();
        for t in 0..n_tok {
            // Positions of this range that token t sees.
            let seen = len(t * n_head).saturating_sub(range.start).min(w);
            if seen == 0 {
                continue;
            }
            let lens = vec![seen; group];
            for g in 0..n_kv_head {
                let first = t * n_head + g * group;
                let keys = k_cache.tail(range.start * k_stride + g * k_dim);
                let (qs, dst) = (&q[first * k_dim..(first + group) * k_dim], &mut buf[first * w..(first + group) * w]);
                whale_kernels::attn_scores(qs, k_dim, keys, k_stride, scale, &lens, dst);
            }
        }
    });

    // 2. Each row's scores gathered and turned into weights: [rows, n_max].
    let mut weights = vec![0f32; rows * n_max];
    let per = rows.div_ceil(threads);
    let jobs: Vec<_> = weights.chunks_mut(per * n_max).enumerate().collect();
    run_parts(threads, jobs, |(c, chunk)| {
        for (i, row) in chunk.chunks_exact_mut(n_max).enumerate() {
            let r = c * per + i;
            for (range, part) in ranges.iter().zip(&part_scores) {
                let w = range.len();
                row[range.clone()].copy_from_slice(&part[r * w..(r + 1) * w]);
            }
            ops::softmax(&mut row[..len(r)]);
        }
    });
    drop(part_scores);

    // 3. Weighted sums: (token, KV head, columns) a job, the columns in
    // runs of a multiple of 16 (the AVX-512 kernel's width).
    let heads_jobs = n_tok * n_kv_head;
    let splits = threads.div_ceil(heads_jobs).clamp(1, v_dim.div_ceil(16));
    let width = v_dim.div_ceil(splits).next_multiple_of(16).min(v_dim);
    let cols: Vec<Range<usize>> = (0..v_dim).step_by(width).map(|c| c..(c + width).min(v_dim)).collect();
    let mut sums: Vec<(usize, usize, Range<usize>, Vec<f32>)> = (0..heads_jobs)
        .flat_map(|j| cols.iter().map(move |c| (j / n_kv_head, j % n_kv_head, c.clone(), vec![0f32; group * c.len()])))
        .collect();
    run_parts(threads, sums.iter_mut().collect(), |(t, g, c, o)| {
        let first = *t * n_head + *g * group;
        let lens = vec![len(first); group];
        let w = &weights[first * n_max..(first + group) * n_max];
        let values = v_cache.tail(*g * v_dim + c.start);
        whale_kernels::attn_weighted_sum(w, n_max, values, v_stride, c.len(), &lens, o);
    });
    for (t, g, c, o) in &sums {
        for (h, src) in o.chunks_exact(c.len()).enumerate() {
            let row = t * n_head + g * group + h;
            out[row * v_dim + c.start..row * v_dim + c.end].copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive causal attention in f64, for one (token, head) at a time.
    fn reference(q: &[f32], k: &[f32], v: &[f32], lay: AttnLayout, n_tok: usize, pos0: usize, scale: f32) -> Vec<f64> {
        let group = lay.n_head / lay.n_kv_head;
        let mut out = Vec::new();
        for t in 0..n_tok {
            for h in 0..lay.n_head {
                let g = h / group;
                let qv = &q[(t * lay.n_head + h) * lay.k_dim..][..lay.k_dim];
                let n_ctx = pos0 + t + 1;
                let s: Vec<f64> = (0..n_ctx)
                    .map(|p| {
                        let kv = &k[p * lay.k_stride + g * lay.k_dim..][..lay.k_dim];
                        qv.iter().zip(kv).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..lay.v_dim {
                    out.push((0..n_ctx).map(|p| e[p] / z * v[p * lay.v_stride + g * lay.v_dim + d] as f64).sum());
                }
            }
        }
        out
    }

    /// The causal split of token tiles over threads (cut by cost) and the
    /// split of the cache for few tokens give the same bits for any thread
    /// count, and match an f64 reference within f32 rounding of sums over
    /// at most 502 positions
    /// (|values| <= 1 and softmax weights sum to one, so 1e-5 absolute is
    /// ~100 ulps of slack).
    #[test]
    fn attention_is_thread_independent_and_correct() {
        let lay = AttnLayout { n_head: 6, n_kv_head: 2, k_dim: 32, v_dim: 32, k_stride: 64, v_stride: 64 };
        let mut seed = 12345u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        // Prefill and decode (one token), GQA and one KV head for all (MLA).
        let mla = AttnLayout { n_head: 8, n_kv_head: 1, k_dim: 48, v_dim: 32, k_stride: 48, v_stride: 48 };
        // One thread tiles any n_tok >= 2; more threads take one (token,
        // KV head) an item for fewer than two tokens a thread, or split the
        // cache where those are fewer than the threads (`attention_split`,
        // MLA's decode at 2, 3 and 7 threads): each case meets two or
        // three of the paths.
        let small = AttnLayout { n_head: 4, n_kv_head: 1, k_dim: 40, v_dim: 32, k_stride: 40, v_stride: 40 };
        let cases = [
            (lay, 50, 30),
            (lay, 1, 120),
            (lay, 3, 300),
            (mla, 1, 200),
            (mla, 9, 40),
            (mla, 2, 500),
            (small, 2, 12),
            (small, 11, 0),
        ];
        for (lay, n_tok, pos0) in cases {
            let q = rnd(n_tok * lay.n_head * lay.k_dim);
            let k = rnd((pos0 + n_tok) * lay.k_stride);
            let v = rnd((pos0 + n_tok) * lay.v_stride);
            let one = attention(&q, (&k).into(), (&v).into(), lay, n_tok, pos0, 0.2, 1);
            for threads in [2, 3, 7] {
                let many = attention(&q, (&k).into(), (&v).into(), lay, n_tok, pos0, 0.2, threads);
                assert!(one.iter().zip(&many).all(|(a, b)| a.to_bits() == b.to_bits()), "threads = {threads}");
            }
            // Each token of a prefill gives the bits of decoding it alone at
            // its position (the tiled items mask each token to its length).
            let row = lay.n_head * lay.k_dim;
            let orow = lay.n_head * lay.v_dim;
            for t in 0..n_tok {
                let alone = attention(&q[t * row..(t + 1) * row], (&k).into(), (&v).into(), lay, 1, pos0 + t, 0.2, 2);
                let same = alone.iter().zip(&one[t * orow..(t + 1) * orow]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "token {t} of {n_tok} differs from decoding it alone");
            }
            let want = reference(&q, &k, &v, lay, n_tok, pos0, 0.2);
            let worst = one.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-5, "n_tok {n_tok}, {} KV heads: max |Δ| = {worst:e}", lay.n_kv_head);
        }
    }
}
