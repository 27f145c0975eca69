//! Causal attention over the KV cache: scores, softmax and the weighted sum
//! of values, split into work items over the worker pool. MLA runs through
//! the same function as multi-query attention with one KV head.

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
    let group = n_head / n_kv_head;
    let threads = if n_tok * n_head * (pos0 + n_tok) * k_dim < 1 << 15 { 1 } else { threads.max(1) };
    // A work item is a set of query rows that share KV heads, so each cached
    // row is read once for all of them:
    // * prefill (enough tokens for every thread): a tile of up to
    //   `ATTN_TOKEN_TILE` consecutive tokens with all their heads; the
    //   tile's tokens see the shared prefix of the cache together, each
    //   masked to its own causal length;
    // * decode: one token's heads of one KV head, the group split into
    //   `chunks` runs when there are too few items to keep every thread
    //   busy (MLA has one KV head for all heads).
    // Either way an item's outputs are contiguous in `[n_tok, n_head, v_dim]`.
    let tiled = n_tok >= 2 * threads;
    let tile = if tiled { (n_tok / (2 * threads)).clamp(1, ATTN_TOKEN_TILE) } else { 1 };
    let chunks = if tiled { 1 } else { (2 * threads).div_ceil(n_tok * n_kv_head).clamp(1, group) };
    let per = group.div_ceil(chunks);
    let chunks = group.div_ceil(per);
    let item = |i: usize| -> AttnItem {
        if tiled {
            let t0 = i * tile;
            AttnItem { t0, t1: (t0 + tile).min(n_tok), g0: 0, g1: n_kv_head, h0: 0, h1: group }
        } else {
            let (t, rest) = (i / (n_kv_head * chunks), i % (n_kv_head * chunks));
            let (g, c) = (rest / chunks, rest % chunks);
            AttnItem { t0: t, t1: t + 1, g0: g, g1: g + 1, h0: c * per, h1: ((c + 1) * per).min(group) }
        }
    };
    let items = if tiled { n_tok.div_ceil(tile) } else { n_tok * n_kv_head * chunks };
    let work = |range: std::ops::Range<usize>, out: &mut [f32]| {
        let (mut qs, mut scores, mut lens, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        for i in range {
            let it = item(i);
            let nh = it.h1 - it.h0;
            let rows = (it.t1 - it.t0) * nh;
            // Causal: token t sees positions 0..=pos0+t.
            let n_max = pos0 + it.t1;
            // Every head of one KV head (MLA's prefill tiles): the item's
            // query rows are consecutive in `q` and its output rows in
            // `out`, read and written in place (copying them cost MLA a
            // 2.4 MB query block per tile).
            let whole = nh == n_head;
            for g in it.g0..it.g1 {
                // Query rows of this KV head, token-major.
                qs.clear();
                lens.clear();
                for t in it.t0..it.t1 {
                    let first = t * n_head + g * group + it.h0;
                    if !whole {
                        qs.extend_from_slice(&q[first * k_dim..(first + nh) * k_dim]);
                    }
                    lens.extend(std::iter::repeat_n(pos0 + t + 1, nh));
                }
                let q_rows = if whole { &q[it.t0 * n_head * k_dim..it.t1 * n_head * k_dim] } else { &qs[..] };
                scores.resize(rows * n_max, 0.0);
                whale_kernels::attn_scores(q_rows, k_dim, k_cache.tail(g * k_dim), k_stride, scale, &lens, &mut scores);
                for (row, &len) in scores.chunks_exact_mut(n_max).zip(&lens) {
                    ops::softmax(&mut row[..len]);
                }
                let values = v_cache.tail(g * v_dim);
                if whole {
                    let dst = &mut out[at..at + rows * v_dim];
                    whale_kernels::attn_weighted_sum(&scores, n_max, values, v_stride, v_dim, &lens, dst);
                    continue;
                }
                o.resize(rows * v_dim, 0.0);
                whale_kernels::attn_weighted_sum(&scores, n_max, values, v_stride, v_dim, &lens, &mut o);
                // Row (t, h) goes to output row t * heads + (g - g0) * nh + h
                // of this item (`heads` per token).
                let heads = (it.g1 - it.g0) * nh;
                for (r, src) in o.chunks_exact(nh * v_dim).enumerate() {
                    let dst = at + (r * heads + (g - it.g0) * nh) * v_dim;
                    out[dst..dst + nh * v_dim].copy_from_slice(src);
                }
            }
            at += rows * (it.g1 - it.g0) * v_dim;
        }
    };
    let threads = threads.min(items);
    if threads == 1 {
        work(0..items, out);
    } else {
        // Causal: token t costs pos0 + t + 1 per head, so equal item counts
        // would give the last thread most of the work. Cut where the running
        // cost reaches each thread's share.
        let cost = |i: usize| {
            let it = item(i);
            let heads = ((it.g1 - it.g0) * (it.h1 - it.h0)) as u64;
            (it.t0..it.t1).map(|t| (pos0 + t + 1) as u64).sum::<u64>() * heads
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
        let size = |r: std::ops::Range<usize>| r.map(|i| item(i).rows()).sum::<usize>() * v_dim;
        let mut parts = Vec::with_capacity(bounds.len() - 1);
        let mut rest = out;
        for w in bounds.windows(2) {
            let (chunk, tail) = rest.split_at_mut(size(w[0]..w[1]));
            parts.push((w[0]..w[1], chunk));
            rest = tail;
        }
        whale_kernels::pool::run_parts(threads, parts, |(range, chunk)| work(range, chunk));
    }
}

/// Consecutive prefill tokens whose queries meet each cached row together
/// in [`attention`] (the rows are read once per tile instead of once per
/// token; 8 tokens of SmolLM2's 3-head groups make 24 query rows).
const ATTN_TOKEN_TILE: usize = 8;

/// One work item of [`attention`]: tokens `t0..t1`, KV heads `g0..g1`, and
/// heads `h0..h1` of each group.
#[derive(Clone, Copy)]
struct AttnItem {
    t0: usize,
    t1: usize,
    g0: usize,
    g1: usize,
    h0: usize,
    h1: usize,
}

impl AttnItem {
    /// Query rows (token, head) of the item.
    fn rows(self) -> usize {
        (self.t1 - self.t0) * (self.g1 - self.g0) * (self.h1 - self.h0)
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

    /// The causal split of (token, head) items over threads (cut by cost)
    /// gives the same bits for any thread count, and matches an f64
    /// reference within f32 rounding of sums over at most 201 positions
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
        for (lay, n_tok, pos0) in [(lay, 50, 30), (lay, 1, 120), (mla, 1, 200), (mla, 9, 40)] {
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
