//! Dot products between weight rows and quantized activations
//! ([`crate::q8`]), ggml's arithmetic, and [`matmul_q`].
//!
//! # Arithmetic (what every level computes)
//!
//! Per weight block `b` the integer part is exact (i32, no overflow for any
//! input: the largest possible |sum| is below 2^28), and the float part
//! follows ggml-cpu's `ggml_vec_dot_*` formulas, with `dw`, `mw`, `dminw` the
//! weight block's f16 fields widened and `da`, `sa` the activation block's:
//!
//! | weights × acts   | block term                                                 |
//! |------------------|------------------------------------------------------------|
//! | Q4_0 × Q8_0      | `(dw*da) * Σ (q4-8)*q8`                                    |
//! | Q5_0 × Q8_0      | `(dw*da) * Σ (q5-16)*q8`                                   |
//! | Q8_0 × Q8_0      | `(dw*da) * Σ q8w*q8`                                       |
//! | Q4_1/Q5_1 × Q8_1 | `(dw*da) * Σ q*q8`, plus `mw * sa` (kept in its own sum)   |
//! | Q2_K/Q4_K/Q5_K × Q8_K | `(dw*da) * Σ_g sc_g Σ q*q8 - (dminw*da) * Σ_g m_g*bsum_g` |
//! | Q3_K/Q6_K × Q8_K | `(dw*da) * Σ_g sc_g Σ q*q8` (signed `q`, signed scales)    |
//! | IQ*, TQ* × Q8_K (IQ4_NL × Q8_0) | as Q6_K, the total times a power of two (see [`crate::iq`]) |
//!
//! Each `*` is one f32 operation, in the order written (no fused
//! multiply-add). Block terms are accumulated in eight f32 lanes, block `b`
//! into lane `b % 8`, and the lanes are summed in the fixed order
//! `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`; Q4_1/Q5_1 sum their `mw*sa`
//! terms the same way in a second set of lanes and add the two totals.
//!
//! F16 × F16 and BF16 × BF16: each product of two 16-bit floats is exact in
//! f32; element `j` of every full 32-element chunk goes to lane `j % 32`
//! (mul then add), the 32 lanes reduce as `(l[k]+l[k+16]) + (l[k+8]+l[k+24])`
//! to eight and then as above, and the `n % 32` tail is added in order.
//!
//! Because the order is fixed and integer sums are exact, **every SIMD level
//! returns bit-identical results to [`vec_dot_q_ref`]** (for finite inputs).
//! The SIMD kernels only compute the exact integers (and the same f32
//! operations lane-wise); the tests check equality bit for bit.
//!
//! ggml sums the same terms in other orders (its AVX2 kernels keep eight
//! lanes of partial block sums, its generic ones a running scalar), so
//! whale and llama.cpp agree to f32 rounding of the per-block sums, not bit
//! for bit; what matters for greedy parity, the quantization of the
//! activations and the exact integer dot, is identical.
//!
//! F32 weights (and the activation formats Q8_1 / Q8_K used as weights) keep
//! f32 activations and use [`crate::vec_dot`]; those results depend on the
//! level by f32 rounding only.

use crate::blocks::*;
use crate::dequant::{decode_ints, k_scale_min, q3_k_scales, q5_quants, IntBlock};
use crate::dispatch::{SimdLevel, Verified};
use crate::dot::{check_row, verify};
use crate::q8::{quantize_acts_verified, vec_dot_type, ActRow, QuantizedActs};
use crate::types::{GgmlType, QK32, QK_K};
use crate::x8::Layout;

/// Sums eight lanes in the fixed order all levels use (the same order as an
/// AVX 8-lane horizontal add: halves, then quarters, then pairs).
#[inline(always)]
pub(crate) fn reduce8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Sums 32 lanes: to eight as `(l[k]+l[k+16]) + (l[k+8]+l[k+24])`, then [`reduce8`].
#[inline(always)]
pub(crate) fn reduce32(a: &[f32; 32]) -> f32 {
    let mut v = [0f32; 8];
    for (k, o) in v.iter_mut().enumerate() {
        *o = (a[k] + a[k + 16]) + (a[k + 8] + a[k + 24]);
    }
    reduce8(v)
}

/// Block term of the legacy types: `(dw * da) * isum`.
#[inline(always)]
pub(crate) fn term(dw: f32, da: f32, isum: i32) -> f32 {
    (dw * da) * isum as f32
}

/// Block term of the K-quants with mins: `(dw*da)*isum - (dminw*da)*msum`.
#[inline(always)]
pub(crate) fn term_k(dw: f32, dminw: f32, da: f32, isum: i32, msum: i32) -> f32 {
    (dw * da) * isum as f32 - (dminw * da) * msum as f32
}

/// Which float formula a weight type's blocks use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Family {
    /// `(dw*da)*isum`, 32-element blocks.
    Legacy,
    /// `(dw*da)*isum` plus `mw*sa` in its own lanes, 32-element blocks.
    LegacyMin,
    /// `(dw*da)*isum - (dminw*da)*msum`, 256-element blocks.
    KMin,
    /// `(dw*da)*isum`, 256-element blocks.
    K,
}

pub(crate) fn family(wty: GgmlType) -> Family {
    use GgmlType as G;
    match wty {
        G::Q4_1 | G::Q5_1 => Family::LegacyMin,
        G::Q2_K | G::Q4_K | G::Q5_K => Family::KMin,
        G::Q3_K | G::Q6_K => Family::K,
        t if t.is_iquant() => Family::K,
        _ => Family::Legacy,
    }
}

// ----------------------------------------------------------------------------
// Public entry points
// ----------------------------------------------------------------------------

/// Scalar reference: dot of one weight row (`wty`-encoded, `acts.cols()`
/// elements) with activation row `i`.
///
/// Decodes every weight into its integer quant, scale and min, forms the
/// exact integer sums naively (i64, element by element), then applies the
/// float formula of the module docs. Slow and simple; the fast kernels
/// ([`vec_dot_q`] at every level) must return the same bits.
///
/// Panics if `acts` is not of type `vec_dot_type(wty)`, `i >= acts.m()`, or
/// `row` is not `wty.row_bytes(acts.cols())` bytes.
pub fn vec_dot_q_ref(wty: GgmlType, row: &[u8], acts: &QuantizedActs, i: usize) -> f32 {
    check_q(wty, row.len(), acts, i, "vec_dot_q_ref");
    let a = acts.row(i);
    match wty {
        GgmlType::F32 | GgmlType::Q8_1 | GgmlType::Q8_K => crate::dot::vec_dot_ref(wty, row, a.f32s),
        GgmlType::F16 | GgmlType::BF16 => half_ref(wty == GgmlType::BF16, row, a.halves),
        _ => quant_ref(wty, row, a),
    }
}

/// Fast dot of one weight row with activation row `i` (same contract and,
/// for every type but F32 / Q8_1 / Q8_K, the same bits as [`vec_dot_q_ref`]),
/// at the process-wide SIMD level.
pub fn vec_dot_q(wty: GgmlType, row: &[u8], acts: &QuantizedActs, i: usize) -> f32 {
    check_q(wty, row.len(), acts, i, "vec_dot_q");
    vec_dot_q_verified(Verified::active(), wty, row, acts.row(i))
}

/// [`vec_dot_q`] at an explicit level (tests, benchmarks). Panics if the
/// CPU lacks `level`.
pub fn vec_dot_q_with(level: SimdLevel, wty: GgmlType, row: &[u8], acts: &QuantizedActs, i: usize) -> f32 {
    check_q(wty, row.len(), acts, i, "vec_dot_q_with");
    vec_dot_q_verified(verify(level), wty, row, acts.row(i))
}

/// `y[i][r] = dot(weight row r, x[i])` through quantized activations: `x` is
/// `[m, cols]` f32, row-major, quantized once with [`crate::quantize_acts`];
/// `y` is `[m, rows]`; `w` holds `rows` rows of `wty.row_bytes(cols)` bytes.
///
/// Every `y[i][r]` equals `vec_dot_q(wty, row r, &acts, i)` bit for bit,
/// whatever `m` and `threads` are (so a prompt processed in one batch gives
/// the same numbers as token by token). Weight rows are split into
/// contiguous ranges over up to `threads` scoped threads (the caller's thread
/// takes one) when `rows * cols * m > PARALLEL_MIN_WORK`; `threads == 0`
/// counts as 1.
///
/// Panics (programmer error) if `cols` is not a multiple of the weight or
/// activation block size, or a slice length does not match.
#[allow(clippy::too_many_arguments)]
pub fn matmul_q(wty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], m: usize, y: &mut [f32], threads: usize) {
    checked_shape(wty, w, rows, cols, "matmul_q");
    assert!(
        Some(x.len()) == m.checked_mul(cols),
        "matmul_q: x has {} elements, expected m * cols = {m} * {cols}",
        x.len()
    );
    let v = Verified::active();
    let mut acts = QuantizedActs::new();
    quantize_acts_verified(v, wty, x, m, cols, &mut acts);
    matmul_q_verified(v, wty, w, rows, cols, &acts, y, threads);
}

/// [`matmul_q`] with activations already quantized (e.g. once for several
/// weight matrices of the same type that read the same input, such as the
/// Q, K and V projections). `acts` must be of type `vec_dot_type(wty)` with
/// `acts.cols() == cols`; `y` is `[acts.m(), rows]`.
pub fn matmul_q_acts(
    wty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
    threads: usize,
) {
    checked_shape(wty, w, rows, cols, "matmul_q_acts");
    matmul_q_verified(Verified::active(), wty, w, rows, cols, acts, y, threads);
}

/// One weight matrix of [`matmul_q_many`] and its output (`[m, rows]`).
pub struct QProduct<'a> {
    pub wty: GgmlType,
    /// How `w`'s rows are stored.
    pub layout: Layout,
    pub w: &'a [u8],
    pub rows: usize,
    pub y: &'a mut [f32],
}

/// Several [`matmul_q`] products of the same input `x` (`[m, cols]`), e.g.
/// the Q, K and V projections, as one job for the worker pool: the
/// activations are quantized once per activation type and every matrix's
/// rows are split over the threads together, so the products cost one
/// synchronisation instead of one each. Every output is bit-identical to
/// [`matmul_q`] of its matrix alone.
///
/// Panics (programmer error) as [`matmul_q`] does, for any product.
pub fn matmul_q_many(products: &mut [QProduct<'_>], cols: usize, x: &[f32], m: usize, threads: usize) {
    assert!(
        Some(x.len()) == m.checked_mul(cols),
        "matmul_q_many: x has {} elements, expected m * cols = {m} * {cols}",
        x.len()
    );
    let v = Verified::active();
    let mut acts: Vec<(GgmlType, QuantizedActs)> = Vec::new();
    for p in products.iter() {
        checked_layout(p.wty, p.layout, p.w, p.rows, cols, "matmul_q_many");
        assert!(
            Some(p.y.len()) == m.checked_mul(p.rows),
            "matmul_q_many: y has {} elements, expected m * rows = {m} * {}",
            p.y.len(),
            p.rows
        );
        let at = vec_dot_type(p.wty);
        if !acts.iter().any(|(t, _)| *t == at) {
            let mut a = spare_acts();
            quantize_acts_verified(v, p.wty, x, m, cols, &mut a);
            acts.push((at, a));
        }
    }
    if m == 0 || cols == 0 {
        products.iter_mut().for_each(|p| p.y.fill(0.0));
        return keep_acts(acts.into_iter().map(|(_, a)| a));
    }
    let prepared: Vec<PreparedActs<'_>> = products
        .iter()
        .map(|p| {
            let a = &acts.iter().find(|(t, _)| *t == vec_dot_type(p.wty)).expect("quantized above").1;
            PreparedActs::new(v, p.wty, p.layout, a)
        })
        .collect();
    let items = products.iter_mut().zip(&prepared).map(|(p, a)| (p.wty, p.layout, p.w, p.rows, cols, m, a, &mut *p.y));
    run_products(v, items, threads);
    drop(prepared);
    keep_acts(acts.into_iter().map(|(_, a)| a));
}

/// One product of [`matmul_q_each`]: a matrix (`rows` × `cols`), its own
/// input `x` (`[m, cols]`) and its output `y` (`[m, rows]`).
pub struct QProductOwn<'a> {
    pub wty: GgmlType,
    /// How `w`'s rows are stored.
    pub layout: Layout,
    pub w: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    pub m: usize,
    pub x: &'a [f32],
    pub y: &'a mut [f32],
}

/// Several [`matmul_q`] products, each of its own input and row count
/// (MLA's per-head up-projections, each head its own query or latent; the
/// routed experts of a prefill, each its own tokens), as one job for the
/// worker pool: one synchronisation for all of them instead of one each.
/// Every output is bit-identical to [`matmul_q`] of its matrix and input
/// alone.
///
/// Panics (programmer error) as [`matmul_q`] does, for any product.
pub fn matmul_q_each(products: &mut [QProductOwn<'_>], threads: usize) {
    let v = Verified::active();
    let mut acts = Vec::with_capacity(products.len());
    for p in products.iter() {
        let m = p.m;
        checked_layout(p.wty, p.layout, p.w, p.rows, p.cols, "matmul_q_each");
        assert!(
            Some(p.x.len()) == m.checked_mul(p.cols),
            "matmul_q_each: x has {} elements, expected m * cols = {m} * {}",
            p.x.len(),
            p.cols
        );
        assert!(
            Some(p.y.len()) == m.checked_mul(p.rows),
            "matmul_q_each: y has {} elements, expected m * rows = {m} * {}",
            p.y.len(),
            p.rows
        );
        let mut a = spare_acts();
        quantize_acts_verified(v, p.wty, p.x, m, p.cols, &mut a);
        acts.push(a);
    }
    let prepared: Vec<PreparedActs<'_>> =
        products.iter().zip(&acts).map(|(p, a)| PreparedActs::new(v, p.wty, p.layout, a)).collect();
    let items =
        products.iter_mut().zip(&prepared).map(|(p, a)| (p.wty, p.layout, p.w, p.rows, p.cols, p.m, a, &mut *p.y));
    run_products(v, items, threads);
    drop(prepared);
    keep_acts(acts);
}

thread_local! {
    /// Quantized activations of finished products, for the next ones on
    /// this thread ([`spare_acts`], [`keep_acts`]).
    static SPARE_ACTS: std::cell::RefCell<Vec<QuantizedActs>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare activation buffers a thread: the products of
/// one job (MLA's 16 or 128 heads, a decode's experts).
const SPARE_ACTS_MAX: usize = 128;

/// Spare buffers larger than this are let go: a decode's activations
/// (V3: 7168 columns, 7.8 KB) are kept, a prefill's rows are not held
/// between products. So a thread keeps at most 8 MiB, and a decode's
/// products far less (MLA's per-head inputs are under 1 KB).
const SPARE_ACTS_MAX_BYTES: usize = 64 << 10;

/// An activation buffer for [`quantize_acts_verified`], one a finished
/// product left ([`keep_acts`]) where there is one. A decode quantizes the
/// inputs of about 50 product jobs a token on the engine thread while the
/// workers wait, and their allocation and freeing (2–8 KB each, glibc's
/// slower bins) was a quarter of that thread's time between jobs at
/// DeepSeek-V2-Lite's shapes (`docs/speed-log.md`, stop 49).
fn spare_acts() -> QuantizedActs {
    SPARE_ACTS.with(|s| s.borrow_mut().pop()).unwrap_or_default()
}

/// Keeps finished activation buffers for [`spare_acts`], up to
/// [`SPARE_ACTS_MAX`] of at most [`SPARE_ACTS_MAX_BYTES`] each.
fn keep_acts(acts: impl IntoIterator<Item = QuantizedActs>) {
    SPARE_ACTS.with(|s| {
        let mut s = s.borrow_mut();
        for a in acts {
            if s.len() < SPARE_ACTS_MAX && a.heap_bytes() <= SPARE_ACTS_MAX_BYTES {
                s.push(a);
            }
        }
    });
}

/// The products (weights, their layout, rows, cols, m, prepared
/// activations, output) of [`matmul_q_many`], [`matmul_q_each`] and
/// [`crate::x8::matmul_x8`], shapes checked, as one job of the pool. A
/// decode's (one activation row each) go in one run of about equal bytes
/// a thread, cut across the products ([`decode_runs`]), in pieces that a
/// thread done with its own takes from the back of another's
/// ([`crate::pool::run_stealing`]); other products
/// are each split into row chunks over the threads (whole groups of eight
/// for interleaved weights).
#[allow(clippy::type_complexity)]
pub(crate) fn run_products<'a>(
    v: Verified,
    items: impl Iterator<Item = (GgmlType, Layout, &'a [u8], usize, usize, usize, &'a PreparedActs<'a>, &'a mut [f32])>,
    threads: usize,
) {
    let mut items: Vec<_> = items.filter(|i| i.3 > 0 && i.5 > 0).collect();
    // No columns: every output is 0.
    for i in items.iter_mut().filter(|i| i.4 == 0) {
        i.7.fill(0.0);
    }
    items.retain(|i| i.4 > 0);
    let run = |run: Vec<(GgmlType, Layout, &[u8], usize, &PreparedActs<'_>, Vec<&mut [f32]>)>| {
        for (wty, layout, wp, rb, a, view) in run {
            matmul_q_rows(v, wty, layout, wp, rb, a, view);
        }
    };
    if items.iter().all(|i| i.5 == 1) {
        let shapes: Vec<DecodeShape> = items
            .iter()
            .map(|&(wty, layout, _, rows, cols, ..)| DecodeShape {
                rows,
                cols,
                row_bytes: wty.row_bytes(cols).expect("checked by the caller"),
                group: if layout == Layout::X8 { crate::x8::ROWS } else { 1 },
            })
            .collect();
        let cuts = decode_runs(&shapes, threads);
        // Each product's weights and output, cut front to back in the
        // order the runs take them.
        let mut rest: Vec<(&[u8], &mut [f32])> = items.iter_mut().map(|i| (i.2, std::mem::take(&mut i.7))).collect();
        // Each run in pieces of whole groups and about STEAL_PIECE bytes,
        // for another thread to take from its back once its own are done.
        let runs: Vec<Vec<_>> = cuts
            .into_iter()
            .map(|cut| {
                cut.into_iter()
                    .flat_map(|(p, n)| {
                        let (wty, layout, _, _, _, _, a, _) = items[p];
                        let DecodeShape { row_bytes: rb, group, .. } = shapes[p];
                        let (w, y) = std::mem::take(&mut rest[p]);
                        let (wp, w) = w.split_at(n * rb);
                        let (yp, y) = y.split_at_mut(n);
                        rest[p] = (w, y);
                        let rows = (STEAL_PIECE / rb.max(1)).next_multiple_of(group).max(group);
                        wp.chunks(rows * rb).zip(yp.chunks_mut(rows)).map(move |(w, y)| (wty, layout, w, rb, a, y))
                    })
                    .collect()
            })
            .collect();
        return crate::pool::run_stealing(threads, runs, |(wty, layout, w, rb, a, y)| {
            matmul_q_rows(v, wty, layout, w, rb, a, vec![y])
        });
    }
    let mut jobs = Vec::new();
    for (wty, layout, w, rows, cols, m, a, y) in items {
        let rb = wty.row_bytes(cols).expect("checked by the caller");
        let work = rows.saturating_mul(cols).saturating_mul(m);
        let mut chunk = crate::matmul::rows_per_thread(threads, rows, work);
        if layout == Layout::X8 {
            chunk = chunk.next_multiple_of(crate::x8::ROWS);
        }
        let views = crate::matmul::column_views(y, rows, chunk, m);
        for (view, wp) in views.into_iter().zip(w.chunks(chunk * rb)) {
            jobs.push(vec![(wty, layout, wp, rb, a, view)]);
        }
    }
    crate::pool::run_parts(threads, jobs, run);
}

/// The bytes of a piece of a decode run that a thread takes at a time
/// ([`crate::pool::run_stealing`]): 1 MiB, about 60 µs of one thread's
/// stream from memory. Smaller pieces cost on a quiet machine: the lines
/// a kernel asks for ahead of it stop at its piece's end (`prefetch`'s
/// bounds), so each piece begins cold. On the 2-core Xeon of stop 57, the
/// decode product jobs of the V2-Lite shapes against one run a thread
/// without pieces: 64 KiB 1.026–1.053, 256 KiB 0.999–1.014, 1 MiB
/// 0.990–1.010 quiet; beside a busy process 256 KiB 0.885–0.899, 1 MiB
/// 0.842–0.857.
const STEAL_PIECE: usize = 1 << 20;

/// A decode product as [`decode_runs`] sees it: its rows, their bytes, and
/// the rows that must stay together (eight for interleaved weights).
#[derive(Clone, Copy, Debug)]
struct DecodeShape {
    rows: usize,
    cols: usize,
    row_bytes: usize,
    group: usize,
}

/// A decode's products (one activation row each) as one run a thread:
/// the products' rows, in order, cut into `threads` runs of about equal
/// bytes (a run may end inside a product and the next one go on with it;
/// cuts at whole groups), or one run when all of them are less work than
/// [`crate::matmul::PARALLEL_MIN_WORK`]. Each run is a list of (product,
/// rows taken from the front of what is left of it).
///
/// One stream a thread, instead of each product's rows split over the
/// threads and the parts taken in turns (each part begins cold, before
/// the kernels' prefetch and the hardware's catch up). A DeepSeek-V2-Lite
/// layer's expert gate and up matrices (16 of 1408 × 2048, Q4_K) stream
/// as fast as one matrix of their bytes (`examples/moe_bw`: 29.9–30.5
/// against 30.0–31.5 GB/s; they were 27.1–28.7 against 28.0–30.0), and in
/// the model, the two ways alternating token by token, those products
/// streamed 27.5–29.2 against 25.8–27.6 GB/s and all of a token's took
/// 1.7–3.3 % less time (the 2-core Intel Xeon of stop 50). MLA's per-head
/// matrices (16 of 45 KB at V2-Lite's shapes, one after the other in the
/// file) are read as two streams as before, and a single product as its
/// row chunks were.
fn decode_runs(shapes: &[DecodeShape], threads: usize) -> Vec<Vec<(usize, usize)>> {
    let total: usize = shapes.iter().map(|s| s.rows * s.row_bytes).sum();
    let work: usize = shapes.iter().map(|s| s.rows.saturating_mul(s.cols)).fold(0, usize::saturating_add);
    let runs = if work <= crate::matmul::PARALLEL_MIN_WORK { 1 } else { threads.max(1) };
    let target = total.div_ceil(runs).max(1);
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    let mut filled = 0usize;
    for (p, s) in shapes.iter().enumerate() {
        let mut left = s.rows;
        while left > 0 {
            if filled >= target && out.len() < runs {
                out.push(Vec::new());
                filled = 0;
            }
            let room =
                (target.saturating_sub(filled)).div_ceil(s.row_bytes.max(1)).next_multiple_of(s.group).max(s.group);
            let n = room.min(left);
            out.last_mut().expect("a run").push((p, n));
            filled += n * s.row_bytes;
            left -= n;
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// Panics (programmer error) unless `acts` is of `wty`'s activation type
/// with `cols` columns and the output holds `acts.m() * rows` values.
#[track_caller]
pub(crate) fn check_acts(wty: GgmlType, rows: usize, cols: usize, acts: &QuantizedActs, y_len: usize, what: &str) {
    let want = vec_dot_type(wty);
    assert!(acts.ty() == want, "{what}: {wty} weights need {want} activations, got {}", acts.ty());
    assert!(acts.cols() == cols, "{what}: activations have {} columns, expected cols = {cols}", acts.cols());
    let m = acts.m();
    assert!(Some(y_len) == m.checked_mul(rows), "{what}: y has {y_len} elements, expected m * rows = {m} * {rows}");
}

#[track_caller]
fn check_q(wty: GgmlType, row_len: usize, acts: &QuantizedActs, i: usize, what: &str) {
    let want = vec_dot_type(wty);
    assert!(acts.ty() == want, "{what}: {wty} weights need {want} activations, got {}", acts.ty());
    assert!(i < acts.m(), "{what}: activation row {i} of {}", acts.m());
    check_row(wty, row_len, acts.cols(), what);
}

/// [`checked_shape`], and for interleaved weights that the layout holds them.
#[track_caller]
fn checked_layout(wty: GgmlType, layout: Layout, w: &[u8], rows: usize, cols: usize, what: &str) -> usize {
    match layout {
        Layout::File => checked_shape(wty, w, rows, cols, what),
        Layout::X8 => crate::x8::checked(wty, rows, cols, w, what),
    }
}

#[track_caller]
fn checked_shape(wty: GgmlType, w: &[u8], rows: usize, cols: usize, what: &str) -> usize {
    let Some(rb) = wty.row_bytes(cols) else {
        panic!("{what}: cols = {cols} is not a multiple of the {wty} block size {}", wty.block_size());
    };
    assert!(
        Some(w.len()) == rows.checked_mul(rb),
        "{what}: w has {} bytes, expected rows * row_bytes = {rows} * {rb} ({wty}, cols = {cols})",
        w.len()
    );
    rb
}

#[allow(clippy::too_many_arguments)]
fn matmul_q_verified(
    v: Verified,
    wty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
    threads: usize,
) {
    let rb = wty.row_bytes(cols).expect("checked by the caller");
    check_acts(wty, rows, cols, acts, y.len(), "matmul_q");
    let m = acts.m();
    if m == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let work = rows.saturating_mul(cols).saturating_mul(m);
    let chunk = crate::matmul::rows_per_thread(threads, rows, work);
    let mut views = crate::matmul::column_views(y, rows, chunk, m);
    let acts = PreparedActs::new(v, wty, Layout::File, acts);
    if views.len() == 1 {
        let view = views.pop().expect("one part");
        matmul_q_rows(v, wty, Layout::File, w, rb, &acts, view);
        return;
    }
    let jobs: Vec<_> = views.into_iter().zip(w.chunks(chunk * rb)).collect();
    crate::pool::run_parts(threads, jobs, |(view, wp)| matmul_q_rows(v, wty, Layout::File, wp, rb, &acts, view));
}

/// Bytes of weight rows that one pass over the activations reuses (L2).
pub(crate) const W_TILE_BYTES: usize = 256 * 1024;

/// `out[i][r] = dot(row r of w, acts row i)`. Weight rows go in tiles of
/// `W_TILE_BYTES`; each group of 8 (or 4, 2, 1) activation rows passes over
/// a tile in one kernel call per weight row, which unpacks each weight block
/// once for the group (and, for 32-element block types, transposes it once so
/// block sums need no horizontal adds). Every result is bit-identical to
/// [`vec_dot_q`] of its pair, whatever `m` and the grouping.
///
/// Rows stored interleaved (`layout`, whole groups of eight) go to the
/// panels and AMX tiles a panel at a time in the file's layout, and where
/// those do not take the activation rows, to `x8::matmul_rest`.
pub(crate) fn matmul_q_rows(
    v: Verified,
    wty: GgmlType,
    layout: Layout,
    w: &[u8],
    rb: usize,
    acts: &PreparedActs<'_>,
    mut out: Vec<&mut [f32]>,
) {
    let m = acts.rows.len();
    // The first `acts.tiled` rows go through the AMX tiles, 16 at a time.
    #[cfg(target_arch = "x86_64")]
    if acts.tiled > 0 {
        let cols = acts.rows[0].qs.len();
        // SAFETY: `tiled > 0` only at a verified AMX level (see `PreparedActs::new`).
        unsafe { crate::amx::matmul_tiles(wty, layout, w, rb, cols, &acts.tiles, &mut out[..acts.tiled]) };
    }
    // Or the panels (many rows of a type the level's panels take): all
    // the other rows, and done.
    #[cfg(target_arch = "x86_64")]
    match acts.panel {
        // SAFETY: `Vnni` only at a verified VNNI level, for the types
        // `panel::supports`, with rows of `vec_dot_type(wty)`.
        Panels::Vnni => {
            unsafe { crate::panel::matmul(wty, layout, w, rb, &acts.rows[acts.tiled..], &mut out[acts.tiled..]) };
            return;
        }
        // SAFETY: `Avx2` only at a verified AVX2 level, for the types
        // `panel_avx2::supports`, with rows of `vec_dot_type(wty)`.
        Panels::Avx2 => {
            unsafe { crate::panel_avx2::matmul(wty, layout, w, rb, &acts.rows[acts.tiled..], &mut out[acts.tiled..]) };
            return;
        }
        Panels::None => {}
    }
    if layout == Layout::X8 {
        return crate::x8::matmul_rest(v, wty, w, rb, acts, out);
    }
    let t_rows: Vec<&[i8]> = (0..m).map(|i| acts.transposed_row(i)).collect();
    let cols = rb / wty.type_size() * wty.block_size();
    let job = GroupJob {
        v,
        wty,
        w,
        rb,
        act_rows: &acts.rows,
        t_rows: &t_rows,
        transposed: acts.t_len > 0,
        grouped: row_groups_take(v, wty, cols),
        row_prefetch: !crate::matmul::kernel_prefetches(v, wty, rb),
    };
    // Blocking: a tile of weight rows (`W_TILE_BYTES`, kept in L2) meets
    // every group of activation rows in turn (a group stays in L1 while it
    // passes over the tile's rows). Groups are of 8 rows (8 measured faster
    // than 4 at Qwen2.5-0.5B shapes, see `examples/prefill_shapes.rs`), the
    // rest of 4, 2 and 1 (a batch of decoding sequences is often not a
    // multiple of 8).
    // A multiple of 8 rows, so that decode's eight-row kernels (`rows8`) see whole groups.
    let tile_rows = (W_TILE_BYTES / rb.max(1) / 8 * 8).max(8);
    let rows = w.len() / rb;
    for r0 in (0..rows).step_by(tile_rows) {
        let tile = r0..(r0 + tile_rows).min(rows);
        let mut i = acts.tiled;
        while i < m {
            i += match m - i {
                8.. => job.pass::<8>(i, tile.clone(), &mut out),
                4..=7 => job.pass::<4>(i, tile.clone(), &mut out),
                2..=3 => job.pass::<2>(i, tile.clone(), &mut out),
                _ => job.pass::<1>(i, tile.clone(), &mut out),
            };
        }
    }
}

/// Quantized activations as the kernels of one weight type read them,
/// prepared once per product (not once per thread): the row views and, for
/// the 32-element block types when several rows share a kernel call, the
/// rows group-transposed (see `transpose_groups`).
pub(crate) struct PreparedActs<'a> {
    rows: Vec<ActRow<'a>>,
    /// Rows `0..tiled` as AMX activation tiles.
    #[cfg(target_arch = "x86_64")]
    tiles: Vec<crate::amx::ActTile<'a>>,
    /// Rows `0..tiled` (a multiple of 16) go through the AMX tiles.
    tiled: usize,
    /// Rows `tiled..` transposed, `t_len` bytes each.
    tq: Vec<i8>,
    /// Bytes per transposed row; 0 when not transposed.
    t_len: usize,
    /// Rows `tiled..` go through `crate::panel` or `crate::panel_avx2`
    /// (not transposed then).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panel: Panels,
}

/// Which panel kernels take a product's many activation rows.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Panels {
    None,
    /// `crate::panel`, AVX-512 VNNI.
    Vnni,
    /// `crate::panel_avx2`.
    Avx2,
}

impl<'a> PreparedActs<'a> {
    pub(crate) fn new(v: Verified, wty: GgmlType, layout: Layout, acts: &'a QuantizedActs) -> PreparedActs<'a> {
        let rows: Vec<ActRow<'a>> = (0..acts.m()).map(|i| acts.row(i)).collect();
        #[cfg(target_arch = "x86_64")]
        let tiled = match crate::amx::min_act_rows(wty) {
            Some(min) if v.amx() && rows.len() >= min => rows.len() / crate::amx::TILE * crate::amx::TILE,
            _ => 0,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let tiled = 0;
        let rest = rows.len() - tiled;
        #[cfg(target_arch = "x86_64")]
        let panel = match v.level() {
            SimdLevel::Avx512Vnni | SimdLevel::Amx
                if crate::panel::supports(wty) && rest >= crate::panel::min_act_rows(wty, layout) =>
            {
                Panels::Vnni
            }
            SimdLevel::Avx2Fma
                if crate::panel_avx2::supports(wty) && rest >= crate::panel_avx2::min_act_rows(wty, layout) =>
            {
                Panels::Avx2
            }
            _ => Panels::None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let panel = Panels::None;
        // Only the file layout's row kernels read the transposed rows (the
        // interleaved layout's take the rows as they are).
        let transposed = panel == Panels::None
            && layout == Layout::File
            && rest >= 2
            && match wty {
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                    matches!(v.level(), SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx)
                }
                // The K types with 32- or 16-element scales (`kquant_t`):
                // only where the byte products sum straight into i32 (VNNI).
                GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                    matches!(v.level(), SimdLevel::Avx512Vnni | SimdLevel::Amx)
                }
                _ => false,
            };
        let t_len = if transposed { transposed_len(acts.cols()) } else { 0 };
        let mut tq = vec![0i8; rest * t_len];
        if transposed {
            let off = legacy_offset(v.level(), wty);
            for (a, out) in rows[tiled..].iter().zip(tq.chunks_exact_mut(t_len)) {
                transpose_groups(a.qs, a.sums, off, out);
            }
        }
        #[cfg(target_arch = "x86_64")]
        let tiles = if tiled > 0 {
            crate::amx::act_tiles(wty, acts.cols(), &rows[..tiled], &acts.all_qs()[..tiled * acts.cols()])
        } else {
            Vec::new()
        };
        PreparedActs {
            rows,
            #[cfg(target_arch = "x86_64")]
            tiles,
            tiled,
            tq,
            t_len,
            panel,
        }
    }

    /// Activation row `i` (for `x8`'s kernels, on x86-64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn row(&self, i: usize) -> ActRow<'a> {
        self.rows[i]
    }

    /// The rows `0..tiled()` go through the AMX tiles.
    pub(crate) fn tiled(&self) -> usize {
        self.tiled
    }

    /// Row `i`'s transposed quants (empty for tiled rows or when not transposed).
    fn transposed_row(&self, i: usize) -> &[i8] {
        match i.checked_sub(self.tiled) {
            Some(j) if self.t_len > 0 => &self.tq[j * self.t_len..(j + 1) * self.t_len],
            _ => &[],
        }
    }
}

/// What `matmul_q_rows` passes to each group of activation rows.
struct GroupJob<'a, 'b> {
    v: Verified,
    wty: GgmlType,
    w: &'a [u8],
    rb: usize,
    act_rows: &'a [ActRow<'b>],
    t_rows: &'a [&'a [i8]],
    transposed: bool,
    /// Whether one activation row meets the weight rows eight at a time
    /// (`rows8`), decided once per product.
    grouped: bool,
    /// Whether the row loop prefetches each row before it: not where the
    /// kernel prefetches as it goes (`matmul::kernel_prefetches`).
    row_prefetch: bool,
}

/// Whether `rows8` takes rows of `wty` with `cols` elements at `v`'s level
/// (`rows8::chosen`).
fn row_groups_take(v: Verified, wty: GgmlType, cols: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::rows8::chosen(v, wty, cols);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (v, wty, cols);
        false
    }
}

impl GroupJob<'_, '_> {
    /// Activation rows `i..i + N` against weight rows `tile`; returns `N`.
    fn pass<const N: usize>(&self, i: usize, tile: std::ops::Range<usize>, out: &mut [&mut [f32]]) -> usize {
        let group: &[ActRow<'_>; N] = self.act_rows[i..i + N].try_into().unwrap();
        let tgroup: &[&[i8]; N] = self.t_rows[i..i + N].try_into().unwrap();
        // One activation row (decode): eight weight rows a call where a
        // kernel takes them (`rows8`), the rest one by one.
        let first = if N == 1 && self.grouped { self.row_groups(group[0], i, tile.clone(), out) } else { tile.start };
        let rest = first..tile.end;
        let prefetch = i == 0 && self.row_prefetch;
        let at = self.transposed.then_some(tgroup);
        let mut put = |r: usize, dots: [f32; N]| {
            for (k, d) in dots.into_iter().enumerate() {
                out[i + k][r] = d;
            }
        };
        if !int8_rows(self.v, self.wty, self.w, self.rb, rest.clone(), prefetch, group, at, &mut put) {
            for r in rest {
                let row = &self.w[r * self.rb..(r + 1) * self.rb];
                if prefetch {
                    crate::matmul::prefetch(self.w, r * self.rb, self.rb);
                }
                put(r, vec_dot_group_verified(self.v, self.wty, row, group, at));
            }
        }
        N
    }

    /// Weight rows `tile` against activation row `i` (`a`), in groups of
    /// `rows8::ROWS` (where `self.grouped`), each group prefetching
    /// the next into L2 (eight rows read at once are eight short streams,
    /// which the hardware prefetcher of Zen 4 did not follow: 10.5 GB/s
    /// from memory at one thread without it, 20.5 with). Returns the first
    /// row left to the one-row kernels.
    #[cfg(target_arch = "x86_64")]
    fn row_groups(&self, a: ActRow<'_>, i: usize, tile: std::ops::Range<usize>, out: &mut [&mut [f32]]) -> usize {
        use crate::rows8::ROWS;
        let mut r = tile.start;
        let rb = self.rb;
        // The group `ahead` groups on: at least the next, and at least
        // `PREFETCH_DISTANCE` bytes on, so that short rows still ask early
        // enough (MLA's `attn_k_b`: eight rows of 128 Q5_0 columns are 704
        // bytes).
        let ahead = (crate::matmul::PREFETCH_DISTANCE / (ROWS * rb).max(1)).max(1);
        while r + ROWS <= tile.end {
            let at = |k: usize| ((r + k * ROWS) * rb).min(self.w.len());
            let next = &self.w[at(ahead)..at(ahead + 1)];
            // SAFETY: `rows8::supports` at this verified level (`grouped`);
            // the rows are whole rows of `wty` and `a` is a row of its
            // activation type with as many columns (checked by the public
            // entry points).
            let dots = unsafe { crate::rows8::dot(self.v, self.wty, &self.w[r * rb..(r + ROWS) * rb], rb, a, next) };
            out[i][r..r + ROWS].copy_from_slice(&dots);
            r += ROWS;
        }
        r
    }

    /// No row groups off x86-64 (`row_groups_take` is false there).
    #[cfg(not(target_arch = "x86_64"))]
    fn row_groups(&self, _a: ActRow<'_>, _i: usize, tile: std::ops::Range<usize>, _out: &mut [&mut [f32]]) -> usize {
        tile.start
    }
}

/// One activation row of a 32-element block type regrouped for the
/// transposed kernels, into `out` (`transposed_len(cols)` bytes): per group
/// of eight blocks, 256 bytes where bytes `32t + 4k .. 32t + 4k + 4` are
/// bytes `4t .. 4t + 4` of block `k` (an 8×8 transpose of 4-byte words),
/// then eight little-endian i32 `-off · Σy` of the blocks (`sums`; the
/// kernels start their integer sums from it). A last partial group is
/// zero-padded. A Q8_K row (for Q4_K, Q5_K, Q6_K weights) is laid out the
/// same way with its 32-element sub-blocks as the blocks, so a group is
/// one 256-element block; its offset is 0 and the K kernels do not read
/// the trailing words.
fn transpose_groups(qs: &[i8], sums: &[i32], off: i32, out: &mut [i8]) {
    out.fill(0);
    for (b, blk) in qs.chunks_exact(QK32).enumerate() {
        let group = &mut out[(b / 8) * T_GROUP_BYTES..];
        let k = b % 8;
        for t in 0..8 {
            for e in 0..4 {
                group[32 * t + 4 * k + e] = blk[4 * t + e];
            }
        }
        let corr = -off * sums.get(b).copied().unwrap_or(0);
        for (e, byte) in corr.to_le_bytes().into_iter().enumerate() {
            group[8 * QK32 + 4 * k + e] = byte as i8;
        }
    }
}

/// Bytes per group in [`transpose_groups`]' layout.
pub(crate) const T_GROUP_BYTES: usize = 8 * QK32 + 32;

/// Offsets that make Q4_0 / Q5_0 quants unsigned for the integer kernels.
pub(crate) const Q4_0_OFF: i32 = 8;
pub(crate) const Q5_0_OFF: i32 = 16;

/// Bytes of a row after [`transpose_groups`].
fn transposed_len(cols: usize) -> usize {
    cols.div_ceil(8 * QK32) * T_GROUP_BYTES
}

/// What the kernels of `level` add to each `wty` weight quant before the
/// integer dot (and subtract as `off · Σy` per block).
fn legacy_offset(level: SimdLevel, wty: GgmlType) -> i32 {
    match (wty, level) {
        (GgmlType::Q4_0, _) => Q4_0_OFF,
        (GgmlType::Q5_0, _) => Q5_0_OFF,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_0, SimdLevel::Avx2Fma) => crate::avx2_q8::Q8_0_OFF,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_0, SimdLevel::Avx512Vnni | SimdLevel::Amx) => crate::avx512_q8::Q8_0_OFF,
        _ => 0,
    }
}

/// One weight row against `N` activation rows; result `k` is bit-identical
/// to `vec_dot_q_verified(v, wty, row, a[k])`. `at`: the rows' quants from
/// `transpose_groups` (32-element block types at an x86 level, Q4_K, Q5_K
/// and Q6_K at the VNNI levels).
#[inline]
fn vec_dot_group_verified<const N: usize>(
    v: Verified,
    wty: GgmlType,
    row: &[u8],
    a: &[ActRow<'_>; N],
    at: Option<&[&[i8]; N]>,
) -> [f32; N] {
    if iq_kernels(v, wty) {
        return crate::iq::vec_dot_group::<N>(v, wty, row, a);
    }
    let mut dots = [0f32; N];
    if int8_rows(v, wty, row, row.len(), 0..1, false, a, at, &mut |_, d| dots = d) {
        return dots;
    }
    a.map(|ai| vec_dot_q_verified(v, wty, row, ai))
}

/// Rows `rows` of `w` (`rb` bytes each) against `N` activation rows
/// through the int8 kernels of the x86 levels, in one call (`dot_rows`: the
/// type dispatched once for the run, not once a row), `put(r, dots)` for
/// each; `prefetch` as in `dot_rows`. `at`: as in
/// [`vec_dot_group_verified`]. False, with nothing done, where those
/// kernels do not take `wty` at `v` (the i-quants, f32 activations, the
/// other levels).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn int8_rows<const N: usize>(
    v: Verified,
    wty: GgmlType,
    w: &[u8],
    rb: usize,
    rows: std::ops::Range<usize>,
    prefetch: bool,
    a: &[ActRow<'_>; N],
    at: Option<&[&[i8]; N]>,
    put: &mut impl FnMut(usize, [f32; N]),
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if iq_kernels(v, wty) {
            return false;
        }
        let f32_acts = matches!(wty, GgmlType::F32 | GgmlType::Q8_1 | GgmlType::Q8_K);
        let none: [&[i8]; N] = [&[]; N];
        // SAFETY (every arm): the level is verified; `w` holds whole rows
        // of `rb` bytes of `wty` with as many elements as each activation
        // row has columns, of `vec_dot_type(wty)` (checked by the public
        // entry points); the callers pass `at` only for the types
        // `PreparedActs` transposes.
        unsafe {
            match (v.level(), at) {
                (SimdLevel::Avx2Fma, Some(at)) => {
                    crate::avx2_q8::dot_rows::<N, true>(wty, w, rb, rows, prefetch, a, at, put)
                }
                (SimdLevel::Avx512Vnni | SimdLevel::Amx, Some(at)) => {
                    crate::avx512_q8::dot_rows::<N, true>(wty, w, rb, rows, prefetch, a, at, put)
                }
                (SimdLevel::Avx2Fma, None) if !f32_acts => {
                    crate::avx2_q8::dot_rows::<N, false>(wty, w, rb, rows, prefetch, a, &none, put)
                }
                (SimdLevel::Avx512Vnni | SimdLevel::Amx, None) if !f32_acts => {
                    crate::avx512_q8::dot_rows::<N, false>(wty, w, rb, rows, prefetch, a, &none, put)
                }
                _ => return false,
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether `wty` is dotted by [`crate::iq`]'s kernels at `v`: every i-quant
/// but IQ4_NL at the x86 levels, where it is a 32-element block type of the
/// int8 kernels (Q4_0's nibbles through IQ4's table, Q8_0's signed products).
#[inline]
fn iq_kernels(v: Verified, wty: GgmlType) -> bool {
    wty.is_iquant()
        && !(wty == GgmlType::IQ4_NL
            && matches!(v.level(), SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx))
}

/// Row dot at a verified level; shapes already checked.
#[inline]
pub(crate) fn vec_dot_q_verified(v: Verified, wty: GgmlType, row: &[u8], a: ActRow<'_>) -> f32 {
    if matches!(wty, GgmlType::F32 | GgmlType::Q8_1 | GgmlType::Q8_K) {
        return crate::dot::vec_dot_verified(v, wty, row, a.f32s);
    }
    if iq_kernels(v, wty) {
        return crate::iq::vec_dot(v, wty, row, a);
    }
    match v.level() {
        SimdLevel::Scalar => scalar::vec_dot(wty, row, a),
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a `Verified` at `Neon` means the CPU has NEON; shapes as above.
        SimdLevel::Neon => unsafe { crate::neon::vec_dot(wty, row, a) },
        #[cfg(not(target_arch = "aarch64"))]
        SimdLevel::Neon => unreachable!("NEON is never verified off AArch64"),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Verified` at `Avx2Fma` means the CPU has AVX2, FMA and
        // F16C; `row` holds exactly as many `wty` elements as `a` has
        // columns, and `a` is of type `vec_dot_type(wty)` (checked by callers).
        SimdLevel::Avx2Fma => unsafe { crate::avx2_q8::vec_dot_n::<1>(wty, row, &[a])[0] },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Verified` at `Avx512Vnni` means the CPU has AVX-512
        // F/BW/VL/VNNI as well as AVX2, FMA and F16C; shapes as above.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { crate::avx512_q8::vec_dot_n::<1>(wty, row, &[a])[0] },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

// ----------------------------------------------------------------------------
// Reference
// ----------------------------------------------------------------------------

fn quant_ref(wty: GgmlType, row: &[u8], a: ActRow<'_>) -> f32 {
    let n = wty.block_size();
    let ts = wty.type_size();
    let fam = family(wty);
    let mut acc = [0f32; 8];
    let mut accm = [0f32; 8];
    let mut blk = IntBlock::default();
    for (b, bytes) in row.chunks_exact(ts).enumerate() {
        decode_ints(wty, bytes, &mut blk);
        let ys = &a.qs[b * n..(b + 1) * n];
        let mut isum = 0i64;
        let mut msum = 0i64;
        for (j, &y) in ys.iter().enumerate() {
            isum += blk.sc[j / 16] as i64 * blk.q[j] as i64 * y as i64;
            msum += blk.mn[j / 16] as i64 * y as i64;
        }
        let (isum, msum) = (i32::try_from(isum).unwrap(), i32::try_from(msum).unwrap());
        let da = a.d[b];
        let lane = b % 8;
        match fam {
            Family::Legacy | Family::K => acc[lane] += term(blk.d, da, isum),
            Family::LegacyMin => {
                acc[lane] += term(blk.d, da, isum);
                accm[lane] += blk.dmin * a.s[b];
            }
            Family::KMin => acc[lane] += term_k(blk.d, blk.dmin, da, isum, msum),
        }
    }
    match fam {
        Family::LegacyMin => reduce8(acc) + reduce8(accm),
        _ if wty.is_iquant() => reduce8(acc) * crate::iq::post_scale(wty),
        _ => reduce8(acc),
    }
}

/// F16 / BF16 weights × activations of the same type (module docs order).
fn half_ref(bf16: bool, row: &[u8], a: &[u16]) -> f32 {
    let widen = |h: u16| -> f32 {
        if bf16 {
            f32::from_bits((h as u32) << 16)
        } else {
            half::f16::from_bits(h).to_f32()
        }
    };
    let w: Vec<f32> = row.chunks_exact(2).map(|c| widen(u16::from_le_bytes([c[0], c[1]]))).collect();
    let x: Vec<f32> = a.iter().map(|&h| widen(h)).collect();
    let full = w.len() - w.len() % 32;
    let mut lanes = [0f32; 32];
    for j in 0..full {
        lanes[j % 32] += w[j] * x[j];
    }
    let mut sum = reduce32(&lanes);
    for j in full..w.len() {
        sum += w[j] * x[j];
    }
    sum
}

// ----------------------------------------------------------------------------
// Portable kernels (the `Scalar` level)
// ----------------------------------------------------------------------------

pub(crate) mod scalar {
    use super::*;

    pub(crate) fn vec_dot(wty: GgmlType, row: &[u8], a: ActRow<'_>) -> f32 {
        use bytemuck::cast_slice;
        use GgmlType as G;
        match wty {
            G::Q4_0 => legacy(cast_slice::<u8, BlockQ4_0>(row), a, |b, y, ys| {
                let mut s = 0i32;
                for j in 0..16 {
                    s += (b.qs[j] & 0x0F) as i32 * y[j] as i32 + (b.qs[j] >> 4) as i32 * y[j + 16] as i32;
                }
                (b.d.to_f32(), s - 8 * ys)
            }),
            G::Q4_1 => legacy_min(cast_slice::<u8, BlockQ4_1>(row), a, |b, y| {
                let mut s = 0i32;
                for j in 0..16 {
                    s += (b.qs[j] & 0x0F) as i32 * y[j] as i32 + (b.qs[j] >> 4) as i32 * y[j + 16] as i32;
                }
                (b.d.to_f32(), b.m.to_f32(), s)
            }),
            G::Q5_0 => legacy(cast_slice::<u8, BlockQ5_0>(row), a, |b, y, ys| {
                let q = q5_quants(b.qh, &b.qs);
                let s: i32 = q.iter().zip(y).map(|(&q, &y)| q as i32 * y as i32).sum();
                (b.d.to_f32(), s - 16 * ys)
            }),
            G::Q5_1 => legacy_min(cast_slice::<u8, BlockQ5_1>(row), a, |b, y| {
                let q = q5_quants(b.qh, &b.qs);
                let s: i32 = q.iter().zip(y).map(|(&q, &y)| q as i32 * y as i32).sum();
                (b.d.to_f32(), b.m.to_f32(), s)
            }),
            G::Q8_0 => legacy(cast_slice::<u8, BlockQ8_0>(row), a, |b, y, _| {
                let s: i32 = b.qs.iter().zip(y).map(|(&q, &y)| q as i32 * y as i32).sum();
                (b.d.to_f32(), s)
            }),
            G::Q2_K => k_quant::<_, true>(cast_slice::<u8, BlockQ2_K>(row), a, |b, y, bsums| {
                let mut isum = 0i32;
                let mut msum = 0i32;
                for g in 0..16 {
                    let (h, s, half) = (g / 8, (g % 8) / 2, g % 2);
                    let qs = &b.qs[32 * h + 16 * half..][..16];
                    let yg = &y[16 * g..16 * g + 16];
                    let dot: i32 = qs.iter().zip(yg).map(|(&q, &y)| ((q >> (2 * s)) & 3) as i32 * y as i32).sum();
                    isum += (b.scales[g] & 0x0F) as i32 * dot;
                    msum += (b.scales[g] >> 4) as i32 * bsums[g] as i32;
                }
                (b.d.to_f32(), b.dmin.to_f32(), isum, msum)
            }),
            G::Q3_K => k_quant::<_, false>(cast_slice::<u8, BlockQ3_K>(row), a, |b, y, _| {
                let scales = q3_k_scales(&b.scales);
                let mut isum = 0i32;
                for g in 0..16 {
                    let (h, s, half) = (g / 8, (g % 8) / 2, g % 2);
                    let qs = &b.qs[32 * h + 16 * half..][..16];
                    let hm = &b.hmask[16 * half..][..16];
                    let bit = 4 * h + s;
                    let yg = &y[16 * g..16 * g + 16];
                    let mut dot = 0i32;
                    for ((&q, &m), &y) in qs.iter().zip(hm).zip(yg) {
                        let v = ((q >> (2 * s)) & 3) as i32 - (((!(m >> bit)) & 1) as i32) * 4;
                        dot += v * y as i32;
                    }
                    isum += scales[g] as i32 * dot;
                }
                (b.d.to_f32(), 0.0, isum, 0)
            }),
            G::Q4_K => k_quant::<_, true>(cast_slice::<u8, BlockQ4_K>(row), a, |b, y, bsums| {
                let mut isum = 0i32;
                let mut msum = 0i32;
                for j in 0..8 {
                    let (c, s) = (j / 2, j % 2);
                    let qs = &b.qs[32 * c..32 * c + 32];
                    let yj = &y[32 * j..32 * j + 32];
                    let dot: i32 = qs.iter().zip(yj).map(|(&q, &y)| ((q >> (4 * s)) & 0x0F) as i32 * y as i32).sum();
                    let (sc, m) = k_scale_min(&b.scales, j);
                    isum += sc as i32 * dot;
                    msum += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
                }
                (b.d.to_f32(), b.dmin.to_f32(), isum, msum)
            }),
            G::Q5_K => k_quant::<_, true>(cast_slice::<u8, BlockQ5_K>(row), a, |b, y, bsums| {
                let mut isum = 0i32;
                let mut msum = 0i32;
                for j in 0..8 {
                    let (c, s) = (j / 2, j % 2);
                    let qs = &b.qs[32 * c..32 * c + 32];
                    let yj = &y[32 * j..32 * j + 32];
                    let mut dot = 0i32;
                    for ((&q, &h), &y) in qs.iter().zip(&b.qh).zip(yj) {
                        let v = ((q >> (4 * s)) & 0x0F) | (((h >> j) & 1) << 4);
                        dot += v as i32 * y as i32;
                    }
                    let (sc, m) = k_scale_min(&b.scales, j);
                    isum += sc as i32 * dot;
                    msum += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
                }
                (b.d.to_f32(), b.dmin.to_f32(), isum, msum)
            }),
            G::Q6_K => k_quant::<_, false>(cast_slice::<u8, BlockQ6_K>(row), a, |b, y, _| {
                let mut isum = 0i32;
                for g in 0..16 {
                    let (h, s, half) = (g / 8, (g % 8) / 2, g % 2);
                    let ql = &b.ql[64 * h + 32 * (s % 2) + 16 * half..][..16];
                    let qh = &b.qh[32 * h + 16 * half..][..16];
                    let yg = &y[16 * g..16 * g + 16];
                    let mut dot = 0i32;
                    for ((&lo, &hi), &y) in ql.iter().zip(qh).zip(yg) {
                        let v = (((lo >> (4 * (s / 2))) & 0x0F) | (((hi >> (2 * s)) & 3) << 4)) as i32 - 32;
                        dot += v * y as i32;
                    }
                    isum += b.scales[g] as i32 * dot;
                }
                (b.d.to_f32(), 0.0, isum, 0)
            }),
            G::F16 => half_row::<false>(row, a.halves),
            G::BF16 => half_row::<true>(row, a.halves),
            G::F32 | G::Q8_1 | G::Q8_K => unreachable!("f32 activations are handled by the caller"),
            t => crate::iq::vec_dot(Verified::new(SimdLevel::Scalar).expect("scalar"), t, row, a),
        }
    }

    /// Legacy types without min: `f(block, quants, sum of quants)` returns
    /// `(dw, isum)`.
    #[inline(always)]
    pub(crate) fn legacy<B>(blocks: &[B], a: ActRow<'_>, f: impl Fn(&B, &[i8], i32) -> (f32, i32)) -> f32 {
        let mut acc = [0f32; 8];
        for (b, blk) in blocks.iter().enumerate() {
            let (dw, isum) = f(blk, &a.qs[QK32 * b..QK32 * b + QK32], a.sums[b]);
            acc[b % 8] += term(dw, a.d[b], isum);
        }
        reduce8(acc)
    }

    /// Q4_1 / Q5_1: `f(block, quants)` returns `(dw, mw, isum)`.
    #[inline(always)]
    pub(crate) fn legacy_min<B>(blocks: &[B], a: ActRow<'_>, f: impl Fn(&B, &[i8]) -> (f32, f32, i32)) -> f32 {
        let mut acc = [0f32; 8];
        let mut accm = [0f32; 8];
        for (b, blk) in blocks.iter().enumerate() {
            let (dw, mw, isum) = f(blk, &a.qs[QK32 * b..QK32 * b + QK32]);
            acc[b % 8] += term(dw, a.d[b], isum);
            accm[b % 8] += mw * a.s[b];
        }
        reduce8(acc) + reduce8(accm)
    }

    /// K-quants: `f(block, quants, bsums)` returns `(dw, dminw, isum, msum)`;
    /// `MIN` selects [`term_k`] (Q2_K, Q4_K, Q5_K) over [`term`].
    #[inline(always)]
    pub(crate) fn k_quant<B, const MIN: bool>(
        blocks: &[B],
        a: ActRow<'_>,
        f: impl Fn(&B, &[i8], &[i16]) -> (f32, f32, i32, i32),
    ) -> f32 {
        let mut acc = [0f32; 8];
        for (b, blk) in blocks.iter().enumerate() {
            let y = &a.qs[QK_K * b..QK_K * b + QK_K];
            let (dw, dminw, isum, msum) = f(blk, y, &a.bsums[16 * b..16 * b + 16]);
            acc[b % 8] += if MIN { term_k(dw, dminw, a.d[b], isum, msum) } else { term(dw, a.d[b], isum) };
        }
        reduce8(acc)
    }

    fn half_row<const BF16: bool>(row: &[u8], x: &[u16]) -> f32 {
        let widen = |h: u16| -> f32 {
            if BF16 {
                f32::from_bits((h as u32) << 16)
            } else {
                half::f16::from_bits(h).to_f32()
            }
        };
        let n = x.len();
        let full = n - n % 32;
        let mut lanes = [0f32; 32];
        for (wc, xc) in row[..2 * full].chunks_exact(64).zip(x[..full].chunks_exact(32)) {
            for (l, (w, &xv)) in lanes.iter_mut().zip(wc.chunks_exact(2).zip(xc)) {
                *l += widen(u16::from_le_bytes([w[0], w[1]])) * widen(xv);
            }
        }
        let mut sum = reduce32(&lanes);
        for (w, &xv) in row[2 * full..].chunks_exact(2).zip(&x[full..]) {
            sum += widen(u16::from_le_bytes([w[0], w[1]])) * widen(xv);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `decode_runs` takes every row of every product once, in order, in
    /// at most `threads` runs of about equal bytes, cuts at whole groups,
    /// and leaves small work to one run.
    #[test]
    fn decode_runs_cut_the_rows_in_order_into_a_run_a_thread() {
        let shape = |rows, cols, row_bytes, group| DecodeShape { rows, cols, row_bytes, group };
        let check = |shapes: &[DecodeShape], threads: usize, want_runs: usize| {
            let runs = decode_runs(shapes, threads);
            assert_eq!(runs.len(), want_runs, "{shapes:?} over {threads} threads: {runs:?}");
            let mut taken = vec![0usize; shapes.len()];
            let mut last = 0;
            let total: usize = shapes.iter().map(|s| s.rows * s.row_bytes).sum();
            let biggest_group = shapes.iter().map(|s| s.group * s.row_bytes).max().unwrap_or(0);
            for run in &runs {
                let mut bytes = 0;
                for &(p, n) in run {
                    assert!(p >= last, "products in order: {runs:?}");
                    assert!(n > 0 && n % shapes[p].group == 0, "whole groups: {runs:?}");
                    last = p;
                    taken[p] += n;
                    bytes += n * shapes[p].row_bytes;
                }
                assert!(
                    bytes <= total.div_ceil(want_runs) + biggest_group,
                    "run of {bytes} of {total} bytes: {runs:?}"
                );
            }
            assert_eq!(taken, shapes.iter().map(|s| s.rows).collect::<Vec<_>>(), "every row once: {runs:?}");
            runs
        };
        // 16 expert matrices of 1408 Q4_K rows of 2048, interleaved, 2
        // threads: the first eight to one run, the rest to the other.
        let experts = vec![shape(1408, 2048, 1152, 8); 16];
        let runs = check(&experts, 2, 2);
        assert_eq!(runs[0], (0..8).map(|p| (p, 1408)).collect::<Vec<_>>());
        // Three threads: runs end inside products and the next goes on.
        let runs = check(&experts, 3, 3);
        assert!(runs[1][0].0 == runs[0].last().unwrap().0, "{runs:?}");
        // One product: its rows in halves (as one product's row chunks were).
        assert_eq!(check(&[shape(2048, 2048, 1152, 8)], 2, 2), vec![vec![(0, 1024)], vec![(0, 1024)]]);
        // Rows not a whole number of runs: the last run is shorter.
        assert_eq!(check(&[shape(24, 4096, 2304, 8)], 2, 2), vec![vec![(0, 16)], vec![(0, 8)]]);
        // Uneven products, the file layout.
        let uneven: Vec<DecodeShape> = (0..40).map(|i| shape(64 + 8 * (i % 5), 512, 288, 1)).collect();
        check(&uneven, 4, 4);
        // Less work than PARALLEL_MIN_WORK: one run, whatever the threads.
        check(&[shape(16, 256, 144, 8), shape(8, 256, 144, 8)], 8, 1);
        // More threads than groups: no empty runs.
        check(&[shape(16, 8192, 4608, 8)], 8, 2);
    }

    /// `N` bytes from the linear congruential generator state `s`.
    #[cfg(target_arch = "x86_64")]
    fn random_bytes<const N: usize>(s: &mut u64) -> [u8; N] {
        core::array::from_fn(|_| {
            *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*s >> 56) as u8
        })
    }

    /// The vector unpack of a Q4_K / Q5_K block's packed 6-bit scales and
    /// mins (`avx2_q8::k4_scales_mins_v`, the row kernels' and panels')
    /// agrees with the per-index decoder (which the dequantization fixtures
    /// check against gguf-py) on random bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn k4_scales_mins_v_matches_k_scale_min() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        let mut s = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let head: [u8; 16] = random_bytes(&mut s);
            // SAFETY: AVX2 (with FMA and F16C, present wherever AVX2 is on
            // the CPUs whale's x86 levels run on) detected above.
            let (sc, mn) = unsafe { crate::avx2_q8::k4_scales_mins_v(&head) };
            let (mut scales, mut mins) = ([0u16; 8], [0u16; 8]);
            // SAFETY: 16 bytes into each array.
            unsafe {
                core::arch::x86_64::_mm_storeu_si128(scales.as_mut_ptr().cast(), sc);
                core::arch::x86_64::_mm_storeu_si128(mins.as_mut_ptr().cast(), mn);
            }
            let packed: &[u8; 12] = head[4..].try_into().unwrap();
            for j in 0..8 {
                let (want_sc, want_mn) = k_scale_min(packed, j);
                assert_eq!((scales[j], mins[j]), (u16::from(want_sc), u16::from(want_mn)), "{packed:?} j={j}");
            }
        }
    }

    /// The vector unpacking of Q3_K's scales against the scalar
    /// `dequant::q3_k_scales` (which the dequantization tests check
    /// against gguf-py) on random bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn q3_k_scales_v_matches_q3_k_scales() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        let mut s = 0x0fed_cba9_8765_4321u64;
        for _ in 0..2000 {
            let packed: [u8; 12] = random_bytes(&mut s);
            // SAFETY: AVX2 (with FMA and F16C, present wherever AVX2 is on
            // the CPUs whale's x86 levels run on) detected above.
            let v = unsafe { crate::avx2_q8::q3_k_scales_v(&packed) };
            let mut got = [0i8; 16];
            // SAFETY: 16 bytes into `got`.
            unsafe { core::arch::x86_64::_mm_storeu_si128(got.as_mut_ptr().cast(), v) };
            assert_eq!(got, q3_k_scales(&packed), "{packed:?}");
        }
    }
}
