//! The two inner loops of attention over a KV cache, for the query heads
//! that share one KV head (all of them for MLA, a GQA group otherwise):
//! scores against every cached key, and the score-weighted sums of the
//! cached values. Each cached row is read once for all those heads. Rows
//! sit `stride` floats apart (the KV heads of a position are side by side
//! in the cache).
//!
//! Each has a scalar reference, an AVX2/FMA version and an AVX-512 one,
//! chosen once per call. A score is [`crate::dot_f32`] at the level (the
//! AVX-512 levels take AVX2's, in 512-bit registers; levels differ by f32
//! rounding); a weighted sum adds
//! `w[p] * v[p]` in position order with separate multiplies and adds at
//! every level (bit-identical). Neither depends on how many heads share
//! the call.
//!
//! A fused multiply-add would make the weighted sums about 10 % faster at
//! decode over a long cache (`attn_decode`, V2-Lite's MLA at depth 4096 on
//! the Xeon of stop 41: 1.66-1.83 against 1.87-1.91 ms a layer), but it
//! changes every model's bits, and one log-probability of the test of MTP
//! in the server (`mtp_in_the_server_batches_and_keeps_the_greedy_outputs`)
//! moved from 5e-6 to 2.4e-5 away from the server without speculation,
//! past the test's 1e-5. The gap itself predates the change: the test's
//! model has f32 weights, and a sequence's two-token checking pass takes
//! the float kernel for several rows where single steps take the one-row
//! kernel (`Linear::forward_spans`), which sum in other orders (its logits
//! differ from single steps' by up to 7e-7; block-quantized weights give
//! the same bits either way). The arithmetic stays as it was until that
//! test compares a block-quantized model or allows for the float kernels.
//!
//! The cached rows are f32 or f16 ([`KvSlice`]; f16 halves the cache, as
//! llama.cpp's default `f16` cache type does). f16 rows are widened to f32
//! (exactly) as they are read, so a result from f16 rows is bit-identical
//! to the result from the same rows widened to f32.

use crate::dispatch::{SimdLevel, Verified};
use crate::dot::verify;

/// Cached rows, as f32 or as f16 bit patterns.
#[derive(Clone, Copy, Debug)]
pub enum KvSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl<'a> KvSlice<'a> {
    /// Number of values.
    pub fn len(self) -> usize {
        match self {
            KvSlice::F32(x) => x.len(),
            KvSlice::F16(x) => x.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The values from `at` on. Panics if `at > len`.
    pub fn tail(self, at: usize) -> KvSlice<'a> {
        match self {
            KvSlice::F32(x) => KvSlice::F32(&x[at..]),
            KvSlice::F16(x) => KvSlice::F16(&x[at..]),
        }
    }

    /// `out[j] = self[at + j]` widened to f32 (exact). Panics if the values
    /// run past the end.
    pub fn read(self, at: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            KvSlice::F32(x) => out.copy_from_slice(&x[at..at + n]),
            KvSlice::F16(x) => {
                for (o, &h) in out.iter_mut().zip(&x[at..at + n]) {
                    *o = half::f16::from_bits(h).to_f32();
                }
            }
        }
    }
}

impl<'a> From<&'a [f32]> for KvSlice<'a> {
    fn from(x: &'a [f32]) -> Self {
        KvSlice::F32(x)
    }
}

impl<'a> From<&'a Vec<f32>> for KvSlice<'a> {
    fn from(x: &'a Vec<f32>) -> Self {
        KvSlice::F32(x)
    }
}

impl<'a> From<&'a [u16]> for KvSlice<'a> {
    fn from(x: &'a [u16]) -> Self {
        KvSlice::F16(x)
    }
}

/// Scores of `nh = q.len() / dim` query rows against `n = out.len() / nh`
/// keys: `out[i * n + p] = dot(q_i, keys[p * stride ..][..dim]) * scale` for
/// `p < lens[i]` (row `i` sees the first `lens[i]` keys: causal masking when
/// rows of several tokens share a call); `out[i * n + p]` for `p >=
/// lens[i]` is left as it was. Each key row is read once for all rows.
/// Panics if the shapes disagree, `lens` is not one per row, a length
/// exceeds `n`, or `keys` is too short.
pub fn attn_scores<'a>(
    q: &[f32],
    dim: usize,
    keys: impl Into<KvSlice<'a>>,
    stride: usize,
    scale: f32,
    lens: &[usize],
    out: &mut [f32],
) {
    attn_scores_verified(Verified::active(), q, dim, keys.into(), stride, scale, lens, out)
}

/// [`attn_scores`] at an explicit level (tests). Panics if the CPU lacks it.
#[allow(clippy::too_many_arguments)]
pub fn attn_scores_with<'a>(
    level: SimdLevel,
    q: &[f32],
    dim: usize,
    keys: impl Into<KvSlice<'a>>,
    stride: usize,
    scale: f32,
    lens: &[usize],
    out: &mut [f32],
) {
    attn_scores_verified(verify(level), q, dim, keys.into(), stride, scale, lens, out)
}

/// Weighted sums for `nh = out.len() / dim` rows: `out[i * dim + j] =
/// Σ_{p < lens[i]} w[i * n + p] · values[p * stride + j]`, `w` laid out
/// `[nh, n]`. Panics if the shapes disagree, `lens` is not one per row, a
/// length exceeds `n`, or `values` is too short.
pub fn attn_weighted_sum<'a>(
    w: &[f32],
    n: usize,
    values: impl Into<KvSlice<'a>>,
    stride: usize,
    dim: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    attn_weighted_sum_verified(Verified::active(), w, n, values.into(), stride, dim, lens, out)
}

/// [`attn_weighted_sum`] at an explicit level (tests).
#[allow(clippy::too_many_arguments)]
pub fn attn_weighted_sum_with<'a>(
    level: SimdLevel,
    w: &[f32],
    n: usize,
    values: impl Into<KvSlice<'a>>,
    stride: usize,
    dim: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    attn_weighted_sum_verified(verify(level), w, n, values.into(), stride, dim, lens, out)
}

#[track_caller]
fn check_rows(what: &str, n: usize, dim: usize, stride: usize, len: usize) {
    if n > 0 {
        let need = (n - 1).checked_mul(stride).and_then(|x| x.checked_add(dim));
        assert!(
            need.is_some_and(|need| need <= len),
            "{what}: {n} rows of {dim} at stride {stride} need more than {len} floats"
        );
    }
}

/// `a.len() / per`, checking that it divides exactly.
#[track_caller]
fn count(what: &str, a: usize, per: usize) -> usize {
    assert!(per > 0 && a.is_multiple_of(per), "{what}: {a} values are not whole rows of {per}");
    a / per
}

#[track_caller]
fn check_lens(what: &str, lens: &[usize], nh: usize, n: usize) {
    assert!(lens.len() == nh, "{what}: {} lengths for {nh} rows", lens.len());
    assert!(lens.iter().all(|&l| l <= n), "{what}: a row length exceeds the {n} positions");
}

#[allow(clippy::too_many_arguments)]
fn attn_scores_verified(
    v: Verified,
    q: &[f32],
    dim: usize,
    keys: KvSlice<'_>,
    stride: usize,
    scale: f32,
    lens: &[usize],
    out: &mut [f32],
) {
    let nh = count("attn_scores", q.len(), dim);
    let n = if nh == 0 { 0 } else { count("attn_scores", out.len(), nh) };
    check_lens("attn_scores", lens, nh, n);
    check_rows("attn_scores", n, dim, stride, keys.len());
    // Query rows in chunks of about `ATTN_Q_CHUNK_BYTES`, each meeting every
    // key it needs: the chunk stays in L2 while the keys pass (a key row is
    // read, and widened from f16, once per chunk). Without it a prefill tile
    // of MLA (8 tokens of 128 heads, rows of 576 floats: 2.4 MB) came from
    // L3 again for every key, and the scores took a fifth of a pp512 of the
    // 1.58-bit V3 slice. Each score is the same dot whatever the chunk.
    let chunk = (ATTN_Q_CHUNK_BYTES / (4 * dim.max(1))).max(2);
    for c0 in (0..nh).step_by(chunk) {
        let c1 = (c0 + chunk).min(nh);
        let (q, lens, out) = (&q[c0 * dim..c1 * dim], &lens[c0..c1], &mut out[c0 * n..c1 * n]);
        // Keys past every row's length are not read.
        let n_seen = lens.iter().copied().max().unwrap_or(0);
        match v.level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a verified x86 level implies AVX2 and FMA; the shapes
            // were checked above.
            SimdLevel::Avx2Fma => unsafe {
                crate::avx2::attn_scores(q, dim, n, n_seen, keys, stride, scale, lens, out)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above; the AVX-512 levels imply AVX-512F/VL.
            SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe {
                crate::avx512::attn_scores(q, dim, n, n_seen, keys, stride, scale, lens, out)
            },
            _ => {
                let mut k = vec![0f32; dim];
                for p in 0..n_seen {
                    keys.read(p * stride, &mut k);
                    for (i, qi) in q.chunks_exact(dim).enumerate().filter(|&(i, _)| p < lens[i]) {
                        out[i * n + p] = crate::dot::dot_f32_verified(v, qi, &k) * scale;
                    }
                }
            }
        }
    }
}

/// Query bytes [`attn_scores`] takes against each key row at a time.
const ATTN_Q_CHUNK_BYTES: usize = 128 << 10;

#[allow(clippy::too_many_arguments)]
fn attn_weighted_sum_verified(
    v: Verified,
    w: &[f32],
    n: usize,
    values: KvSlice<'_>,
    stride: usize,
    dim: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    let nh = count("attn_weighted_sum", out.len(), dim);
    assert!(w.len() == nh * n, "attn_weighted_sum: {} weights for {nh} heads of {n} positions", w.len());
    check_lens("attn_weighted_sum", lens, nh, n);
    check_rows("attn_weighted_sum", n, dim, stride, values.len());
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for `values`.
        SimdLevel::Avx2Fma => unsafe { crate::avx2::attn_weighted_sum_cols(w, n, values, stride, dim, 0, lens, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the AVX-512 levels imply AVX-512F.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe {
            crate::avx512::attn_weighted_sum(w, n, values, stride, dim, lens, out)
        },
        _ => {
            out.fill(0.0);
            let mut vr = vec![0f32; dim];
            for p in 0..n {
                values.read(p * stride, &mut vr);
                for (i, o) in out.chunks_exact_mut(dim).enumerate().filter(|&(i, _)| p < lens[i]) {
                    let wp = w[i * n + p];
                    for (o, &x) in o.iter_mut().zip(&vr) {
                        *o += wp * x;
                    }
                }
            }
        }
    }
}

/// For the blocked weighted-sum kernels (`avx2`, `avx512`): the weights of
/// rows `h0..h0 + HB` over positions `ps`, copied position-major into `wt`
/// (`wt[(p - ps.start) * HB + i] = w[(h0 + i) * n + p]` for the positions
/// row `i` sees, 0 past them), so that a position's weights of the block
/// lie side by side. Returns each row's length clamped to `ps`, and the
/// shortest of them (every row sees `ps.start..shortest`); `None` where no
/// row sees any position of `ps`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn position_major<const HB: usize>(
    w: &[f32],
    n: usize,
    lens: &[usize],
    h0: usize,
    ps: &std::ops::Range<usize>,
    wt: &mut Vec<f32>,
) -> Option<([usize; HB], usize)> {
    let lens: [usize; HB] = core::array::from_fn(|i| lens[h0 + i].clamp(ps.start, ps.end));
    let (p0, p1) = (ps.start, lens.iter().copied().max().unwrap_or(0));
    if p1 == p0 {
        return None;
    }
    wt.clear();
    wt.resize((p1 - p0) * HB, 0.0);
    for (i, &len) in lens.iter().enumerate() {
        let row = &w[(h0 + i) * n..];
        for p in p0..len {
            wt[(p - p0) * HB + i] = row[p];
        }
    }
    Some((lens, lens.iter().copied().min().unwrap_or(0)))
}

/// 64 bytes of floats: [`score_tiles`]' scratch rows start on cache lines.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([f32; 16]);

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// [`score_tiles`]' scratch: a tile of keys and the query rows, as f32
    /// (one thread's, reused: allocating it each call cost page faults).
    static SCORE_SCRATCH: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The loop of the x86 score kernels (`crate::avx2::attn_scores` from 128
/// floats a row, `crate::avx512::attn_scores`), the arguments theirs: `KK`
/// keys at a time are widened to f32 into a 64-byte aligned scratch that
/// stays in L1 while every query row meets them, the query rows are
/// copied once into aligned rows (a vector load that crosses a line costs
/// two), and `dots` scores `RR` rows against the `KK` keys (a partial
/// block repeats its last row or key, whose results are dropped). The
/// next keys' L2 requests go a key row a block of rows (sent all at once
/// they stood out in a profile of the scores, 8 % of it; with none at all
/// V2-Lite's decode attention at depth 4096 took 1.80 against 1.72 ms).
///
/// # Safety
/// The CPU must support AVX2 and F16C; the shapes are checked as
/// [`attn_scores`] checks them.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn score_tiles<const RR: usize, const KK: usize>(
    q: &[f32],
    dim: usize,
    n: usize,
    n_seen: usize,
    keys: KvSlice<'_>,
    stride: usize,
    scale: f32,
    lens: &[usize],
    out: &mut [f32],
    dots: impl Fn([&[f32]; RR], [&[f32]; KK]) -> [[f32; KK]; RR],
) {
    use crate::avx2::Rows;
    let rows = lens.len();
    let row = dim.next_multiple_of(16);
    SCORE_SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        let lines = (KK + rows) * row / 16;
        if buf.len() < lines {
            buf.resize(lines, Line([0.0; 16]));
        }
        let all: &mut [f32] = bytemuck::cast_slice_mut(&mut buf[..lines]);
        let (tile, qa) = all.split_at_mut(KK * row);
        for (d, s) in qa.chunks_exact_mut(row).zip(q.chunks_exact(dim)) {
            d[..dim].copy_from_slice(s);
        }
        let blocks = rows.div_ceil(RR);
        let mut p = 0;
        while p < n_seen {
            let np = (n_seen - p).min(KK);
            for (j, t) in tile.chunks_exact_mut(row).take(np).enumerate() {
                let at = (p + j) * stride;
                match keys {
                    KvSlice::F32(k) => t[..dim].copy_from_slice(&k[at..at + dim]),
                    // SAFETY: (caller) AVX2 and F16C.
                    KvSlice::F16(k) => unsafe { crate::avx2::widen_row(&k[at..at + dim], &mut t[..dim]) },
                }
            }
            let mut i = 0;
            while i < rows {
                for j in (i / RR..KK).step_by(blocks) {
                    let at = (p + 2 * KK + j) * stride;
                    match keys {
                        KvSlice::F32(k) => k.prefetch(at, dim),
                        KvSlice::F16(k) => k.prefetch(at, dim),
                    }
                }
                let nr = (rows - i).min(RR);
                if lens[i..i + nr].iter().any(|&l| l > p) {
                    let qs: [&[f32]; RR] = core::array::from_fn(|r| &qa[(i + r.min(nr - 1)) * row..][..dim]);
                    let ks: [&[f32]; KK] = core::array::from_fn(|j| &tile[j.min(np - 1) * row..][..dim]);
                    let d = dots(qs, ks);
                    for (r, dr) in d.iter().enumerate().take(nr) {
                        for (j, &x) in dr.iter().enumerate().take(np) {
                            if p + j < lens[i + r] {
                                out[(i + r) * n + p + j] = x * scale;
                            }
                        }
                    }
                }
                i += nr;
            }
            p += np;
        }
    });
}
