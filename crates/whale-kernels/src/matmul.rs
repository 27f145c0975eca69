//! Matrix-vector and matrix-matrix products against a quantized weight
//! matrix, split across OS threads by weight rows.

use crate::dequant::{dequantize_blocks, with_block_type};
use crate::dispatch::{SimdLevel, Verified};
use crate::dot::{dot4_verified, vec_dot_verified};
use crate::types::GgmlType;

/// Below this many multiply-adds a product runs on the calling thread only:
/// waking the pool costs more than it saves.
pub const PARALLEL_MIN_WORK: usize = 1 << 16;

/// How far ahead of the row being multiplied the weight stream is
/// prefetched into L2, in bytes; it is prefetched into L1 a quarter of that
/// ahead. Decode streams every weight once from DRAM, and the hardware
/// prefetcher alone left a core waiting on loads (SmolLM2 decode, 1 thread:
/// 50 tok/s without, 91 with an L1 prefetch 2 KiB ahead). Prefetching far
/// into L2 and near into L1 beat L1 alone by 20-28 % on Qwen2.5-0.5B decode,
/// 2 threads (34-35 tok/s against 41-46, alternating runs on the
/// development machine): an L1 prefetch occupies a line-fill buffer until
/// the line arrives from DRAM, and the core stalled on `prefetcht0` with
/// the buffers full; an L2 prefetch does not hold one. L2 distances of
/// 2-4 KiB measured alike, 8 KiB worse, and non-temporal hints much worse.
///
/// Those figures are from an Intel Xeon (Sapphire Rapids). On AMD Zen 4 the
/// same prefetches made decode slower, alternating runs with and without,
/// 2 threads: Qwen2.5-0.5B Q4_K_M 52 against 54-56 tok/s, SmolLM2 Q4_1
/// 159-164 against 163-183, a V3-shaped 2-layer Q4_K_M GGUF 15.8 against
/// 18.4-19.5, a V2-Lite-shaped one 45-49 against 50-54: its own prefetchers
/// keep up with the weight stream, and the extra requests only take load
/// slots. So AMD CPUs run without them ([`software_prefetch`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const PREFETCH_DISTANCE: usize = 3072;

/// Whether [`prefetch`] issues its requests on this CPU: not on AMD's (see
/// [`PREFETCH_DISTANCE`]), unless `WHALE_PREFETCH` says otherwise
/// ([`prefetch_setting`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn software_prefetch() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let r = core::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx].iter().flat_map(|w| w.to_le_bytes()).collect();
        prefetch_setting(std::env::var("WHALE_PREFETCH").ok().as_deref(), vendor != b"AuthenticAMD")
    })
}

/// `WHALE_PREFETCH`: `0`/`off` runs decode without software prefetch (as
/// on AMD), `1`/`on` with it (as on Intel); unset or anything else keeps
/// the CPU's `default`. For measuring: on the 2-core Intel Xeon of stop 39
/// the prefetch made products from memory faster (`decode_bw 2 400 2048
/// q4_k` 19.4-20.0 -> 25.0-25.6 GB/s) and the same kernel slower from L2
/// (`decode_bw 1 1 7168 q8_0` 33.2 -> 25.1), so the kernels' own speed
/// is read with it off.
/// (`WHALE_X8` reads the same words, [`on_off`].)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn prefetch_setting(var: Option<&str>, default: bool) -> bool {
    on_off(var).unwrap_or(default)
}

/// An on/off setting's value: `0`/`off`/`false` or `1`/`on`/`true`, else
/// none (unset, or anything else).
pub(crate) fn on_off(var: Option<&str>) -> Option<bool> {
    match var.map(str::trim) {
        Some("0" | "off" | "false") => Some(false),
        Some("1" | "on" | "true") => Some(true),
        _ => None,
    }
}

/// Prefetches the bytes `PREFETCH_DISTANCE` and twice that ahead of
/// `w[at..at + len]` (a row, or an interleaved group's block, about to be
/// multiplied) into L2 and those a quarter of it ahead into L1, one request
/// per 64-byte line for each, clamped to `w`. A hint only: no effect on
/// results.
///
/// The second request into L2 (from stop 51): each line is asked for twice
/// on its way, at 6 KiB and at 3 KiB. On the 2-core Intel Xeon of stop 51,
/// interleaved weights from memory at two threads, 2048 columns unless
/// said, GB/s, alternating with the single request: Q4_K 32.8–34.9 →
/// 34.5–36.7 (31.0–34.1 in one run of four), Q6_K 32.2–32.9 → 35.5–37.2,
/// Q6_K at 7168 columns 32.2–33.3 → 36.2–37.9, Q5_0 at 1408 32.6–34.2 →
/// 35.7–37.4, Q8_0 at 1408 35.0–36.1 → 35.9–38.0, Q4_0 at 896 33.2–33.9 →
/// 34.7–37.1; at `WHALE_SIMD=avx2` Q4_K 31.2–31.5 → 32.6–33.3 but Q6_K
/// 30.3–30.6 → 28.9–29.5. Decode of the V2-Lite-shaped file (`whale bench
/// -t 2 -p 0 -n 128 -r 3`, three alternations) 54.4–55.0 → 57.6–57.9 tok/s;
/// Qwen2.5-0.5B +5–10 % at both levels, the 1.58-bit V3 slice +3–5 %,
/// V2-Lite at AVX2 and SmolLM2 level. It costs where the weights are
/// already in L2 (one core, a 1 MB matrix again and again: Q4_K 37.9 →
/// 35.1, Q6_K 34.2 → 26.9), which decode of a model larger than the caches
/// never is. A second request at three times the distance instead was no
/// better than one (Q6_K 30.9–33.7), and requests at both two and four
/// times it fell between (Q6_K 32.3–34.8). Fewer requests lose: the far one
/// every other line (the adjacent-line prefetcher fetching the other)
/// 29.4–30.8 and 25.1–26.7 against 31.1–34.9 and 30.2–32.9, and the L1 one
/// or the L2 one alone, 22–24 against 33 with both and 28 with none (Q4_K).
/// The near and far distances themselves (512 to 2048, 2048 to 12288 bytes)
/// moved nothing or lost, and so did issuing the requests without the
/// bounds test a line (all inside `w`, one test a block: Q4_K 34.4 → 32.5,
/// Q6_K 31.7 → 30.5: the requests in a tighter burst) and half of them
/// after the block's arithmetic.
#[inline(always)]
pub(crate) fn prefetch(w: &[u8], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if software_prefetch() {
            prefetch_lines(w, at, len);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, at, len);
}

/// [`prefetch`]'s requests whether or not [`software_prefetch`] is on: for
/// a caller that has asked once for many calls.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn prefetch_lines(w: &[u8], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        let near = at + PREFETCH_DISTANCE / 4;
        let far = at + PREFETCH_DISTANCE;
        let farther = at + 2 * PREFETCH_DISTANCE;
        let mut p = 0;
        while p < len {
            // SAFETY: each address is checked to be inside `w`; a prefetch
            // reads nothing architecturally and never faults.
            unsafe {
                if far + p < w.len() {
                    _mm_prefetch::<_MM_HINT_T1>(w.as_ptr().add(far + p).cast());
                }
                if near + p < w.len() {
                    _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().add(near + p).cast());
                }
                if farther + p < w.len() {
                    _mm_prefetch::<_MM_HINT_T1>(w.as_ptr().add(farther + p).cast());
                }
            }
            p += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, at, len);
}

/// [`prefetch_lines`] without the test that each address lies inside `w`:
/// for requests spread through a kernel's arithmetic a few lines at a
/// time (`crate::rows8::BlockAhead`), where the tests were a cost of their
/// own. The addresses past the end of `w` are computed with wrapping
/// arithmetic and never dereferenced; a prefetch reads nothing
/// architecturally and never faults.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn prefetch_spread(w: &[u8], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        let base = w.as_ptr().wrapping_add(at);
        let mut p = 0;
        while p < len {
            let q = base.wrapping_add(p);
            // SAFETY: a prefetch hint of any address is sound.
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(q.wrapping_add(PREFETCH_DISTANCE).cast());
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH_DISTANCE / 4).cast());
                _mm_prefetch::<_MM_HINT_T1>(q.wrapping_add(2 * PREFETCH_DISTANCE).cast());
            }
            p += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, at, len);
}

/// Prefetching from inside a kernel: each call asks for the bytes
/// [`PREFETCH_DISTANCE`] past the weights it is about to read into L2, so
/// that the requests are spread through a row, a block (or a group of
/// small blocks) at a time, instead of a row's worth in a burst before the
/// row ([`prefetch`]). Made once per row, where the kernel starts; does
/// nothing where [`software_prefetch`] is off.
///
/// Why spread: a burst of 60 to 90 requests before a row fills the queue
/// of misses a core may have outstanding, and the kernel then waits on the
/// lines at its end while the queue sits idle through the row's arithmetic.
/// On the 2-core Intel Xeon with AMX of stop 36, weights in 2 MiB pages of
/// anonymous memory (as whale reads them by default), `decode_bw` at two
/// threads, three runs each alternating with the burst, GB/s: Q4_K
/// (7168 columns) 21.6-22.7 → 22.0-24.3, Q6_K 23.2-24.0 → 24.3-25.7, Q5_K
/// (4096) 22.0-22.2 → 24.7-25.7. Decode of a V3-shaped 2-layer Q4_K_M
/// GGUF (`whale bench -t 2 -n 32 -r 2`, alternating with the build
/// without): 12.6-12.7 → 13.6-14.3 tok/s. (The same machine's mapped file
/// pages, which
/// stream at about half the rate there, did better with the burst: −5 %
/// and −12 % spread, with `--mmap`.) At one thread a distance of 2 KiB
/// measured like 3 KiB and 4 KiB a little worse; L1 prefetches
/// (`prefetcht0`) spread the same way were slower than none at 512 bytes
/// and than L2's at 1 KiB.
///
/// The K-quant kernels (`kgroups`) do it on rows of every length, a
/// block at a time; the 32-element types' kernel (`legacy`) a group of
/// eight blocks at a time, on rows of at least [`LEGACY_SPREAD_MIN_ROW`]
/// (shorter rows run a copy of its loop without the request code, and are
/// prefetched whole before each row). Until stop 40 only K-quant rows of
/// at least 2 KiB spread, because the legacy kernel had lost with the
/// requests in its one loop (Qwen2.5-0.5B's 896-column rows: Q5_0
/// 20.4-21.8 → 17.8-18.8 GB/s, Q8_0 28.4-30.9 → 25.6-27.7, even where the
/// requests were switched off for short rows). On the same Xeon at stop
/// 40 (`decode_bw 2 400 COLS`, four alternations with the burst, GB/s):
/// K rows shorter than 2 KiB, Q4_K 2048 columns 25.3-25.9 → 27.1-27.9,
/// Q6_K 2048 25.9-26.8 → 27.0-28.2, Q5_K 2048 20.7-21.2 → 27.1-27.8, Q6_K
/// and Q3_K at 256 and 512 columns level or better; legacy rows, Q5_0 2048
/// columns 20.1-20.5 → 24.8-25.4, Q4_0 2048 19.5-19.6 → 24.2-24.5, Q5_0
/// 4096 20.0-22.1 → 25.3-26.0, Q8_0 1408 26.4-28.5 → 27.9-29.4, but Q8_0
/// 896 (952-byte rows) 30.8-31.5 → 27.6-29.0.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Ahead(bool);

/// The shortest row of a 32-element block type, in bytes, whose kernel
/// prefetches as it goes ([`Ahead`]); shorter rows are prefetched whole
/// before each ([`prefetch`]).
pub(crate) const LEGACY_SPREAD_MIN_ROW: usize = 1024;

#[cfg(target_arch = "x86_64")]
impl Ahead {
    /// For a row of `row_bytes`: on where [`software_prefetch`] is and the
    /// row is at least `min_row` bytes long.
    #[inline(always)]
    pub(crate) fn new(row_bytes: usize, min_row: usize) -> Ahead {
        Ahead(row_bytes >= min_row && software_prefetch())
    }

    /// Whether [`Ahead::fetch`] asks for anything.
    #[inline(always)]
    pub(crate) fn on(self) -> bool {
        self.0
    }

    /// Asks for `len` bytes from [`PREFETCH_DISTANCE`] past `p` (the start
    /// of the bytes about to be read), one request per 64 bytes. The
    /// addresses may lie past the matrix: a prefetch reads nothing
    /// architecturally and never faults, and the pointer arithmetic wraps
    /// (no dereference, no bounds to keep).
    #[inline(always)]
    pub(crate) fn fetch<T>(self, p: *const T, len: usize) {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        if self.0 {
            let far = p.cast::<u8>().wrapping_add(PREFETCH_DISTANCE);
            let mut o = 0;
            while o < len {
                // SAFETY: a prefetch hint of any address is sound.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(far.wrapping_add(o).cast()) };
                o += 64;
            }
        }
    }
}

/// Whether the row kernels of `wty` at `v` prefetch their own weights in
/// rows of `rb` bytes ([`Ahead`]: the int8 kernels at the AVX2 and
/// AVX-512 levels, K-quant rows of any length and 32-element types' rows
/// of at least [`LEGACY_SPREAD_MIN_ROW`]), so that the row loop leaves
/// [`prefetch`] out.
pub(crate) fn kernel_prefetches(v: Verified, wty: GgmlType, rb: usize) -> bool {
    use GgmlType as G;
    matches!(v.level(), SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx)
        && match wty {
            G::Q2_K | G::Q3_K | G::Q4_K | G::Q5_K | G::Q6_K => true,
            G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::IQ4_NL => rb >= LEGACY_SPREAD_MIN_ROW,
            _ => false,
        }
}

/// Wrapping sum of `words`, read as the kernels read weights (256-bit loads
/// at the AVX2 level and above): what `whale bench` streams to measure the
/// read bandwidth that bounds decode. A plain iterator sum is compiled for
/// the baseline target (128-bit SSE2) and read about 20 % slower on the
/// development machine than these loads.
pub fn sum_words(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if matches!(Verified::active().level(), SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx) {
        // SAFETY: every level above scalar has AVX2.
        return unsafe { crate::avx2::sum_words(words) };
    }
    words.iter().fold(0u64, |s, &w| s.wrapping_add(w))
}

/// `y[r] = dot(row r of w, x)` for `r in 0..rows`.
///
/// `w` holds `rows` contiguous rows of `cols` elements each, `ty`-encoded
/// (`rows * ty.row_bytes(cols)` bytes); `x.len() == cols`, `y.len() == rows`.
/// Each row uses [`crate::vec_dot`], so `y[r]` is bit-identical whatever
/// `threads` is. Rows are split into contiguous ranges over up to `threads`
/// scoped threads (the caller's thread takes one range) when
/// `rows * cols > PARALLEL_MIN_WORK`; `threads == 0` counts as 1.
///
/// Panics (programmer error) if `cols` is not a multiple of the block size or
/// a slice length does not match.
#[allow(clippy::too_many_arguments)]
pub fn matvec(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], y: &mut [f32], threads: usize) {
    let rb = checked_weight_shape(ty, w, rows, cols, "matvec");
    assert!(x.len() == cols, "matvec: x has {} elements, expected cols = {cols}", x.len());
    assert!(y.len() == rows, "matvec: y has {} elements, expected rows = {rows}", y.len());
    if rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let v = Verified::active();
    let chunk = rows_per_thread(threads, rows, rows.saturating_mul(cols));
    if chunk >= rows {
        matvec_rows(v, ty, w, rb, x, y);
        return;
    }
    let parts: Vec<_> = y.chunks_mut(chunk).zip(w.chunks(chunk * rb)).collect();
    crate::pool::run_parts(threads, parts, |(yp, wp)| matvec_rows(v, ty, wp, rb, x, yp));
}

fn matvec_rows(v: Verified, ty: GgmlType, w: &[u8], rb: usize, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(ty, GgmlType::BF16 | GgmlType::F16)
        && matches!(v.level(), SimdLevel::Avx512Vnni | SimdLevel::Amx)
        && x.len().is_multiple_of(16)
    {
        return half_matvec_rows(ty, w, rb, x, y);
    }
    for (r, (out, row)) in y.iter_mut().zip(w.chunks_exact(rb)).enumerate() {
        prefetch(w, r * rb, rb);
        *out = vec_dot_verified(v, ty, row, x);
    }
}

/// Rows of 16-bit float weights at the AVX-512 level, [`HALF_ROWS`] at a
/// time through `avx2::half_rows` (the bits of `vec_dot` per row).
#[cfg(target_arch = "x86_64")]
fn half_matvec_rows(ty: GgmlType, w: &[u8], rb: usize, x: &[f32], y: &mut [f32]) {
    let mut groups = w.chunks_exact(HALF_ROWS * rb);
    let mut outs = y.chunks_exact_mut(HALF_ROWS);
    for (g, out) in (&mut groups).zip(&mut outs) {
        let rows: [&[u8]; HALF_ROWS] = std::array::from_fn(|k| &g[k * rb..(k + 1) * rb]);
        // SAFETY: the caller checked the AVX-512 level (AVX2, FMA, F16C,
        // AVX-512 F and VL), that `x.len()` is a multiple of 16 and each
        // row holds `x.len()` 16-bit values.
        out.copy_from_slice(&unsafe {
            if ty == GgmlType::BF16 {
                crate::avx2::half_rows::<true, HALF_ROWS>(rows, x)
            } else {
                crate::avx2::half_rows::<false, HALF_ROWS>(rows, x)
            }
        });
    }
    let v = Verified::new(SimdLevel::Avx2Fma).expect("the AVX-512 level includes AVX2");
    for (out, row) in outs.into_remainder().iter_mut().zip(groups.remainder().chunks_exact(rb)) {
        *out = vec_dot_verified(v, ty, row, x);
    }
}

/// [`matvec`] of `m` activation vectors at once: `x` is `[m, cols]`, `y` is
/// `[m, rows]`, and row `i` of `y` is the bits of `matvec` of row `i` of `x`
/// (which [`matmul`] does not promise). For 16-bit float weights at the
/// AVX-512 level each weight is read once for all `m` vectors; otherwise
/// this is one [`matvec`] per vector. Used where several sequences decode
/// one token each and must give the bits of decoding alone.
///
/// Panics (programmer error) as [`matmul`] does.
#[allow(clippy::too_many_arguments)]
pub fn matvec_many(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    threads: usize,
) {
    let rb = checked_batch_shape(ty, w, rows, cols, (x.len(), m, y.len()), "matvec_many");
    if m == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m > 1
        && matches!(ty, GgmlType::BF16 | GgmlType::F16)
        && matches!(Verified::active().level(), SimdLevel::Avx512Vnni | SimdLevel::Amx)
        && cols.is_multiple_of(16)
    {
        split_rows(w, rb, cols, m, y, threads, |wp, view| half_matvec_many(ty, wp, rb, x, cols, view));
        return;
    }
    let _ = rb; // used above on x86-64 only
    for (xi, yi) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
        matvec(ty, w, rows, cols, xi, yi, threads);
    }
}

/// [`matvec_many`]'s share of weight rows at the AVX-512 level.
#[cfg(target_arch = "x86_64")]
fn half_matvec_many(ty: GgmlType, w: &[u8], rb: usize, x: &[f32], cols: usize, mut out: Vec<&mut [f32]>) {
    let xs: Vec<&[f32]> = x.chunks_exact(cols).collect();
    // SAFETY: the caller checked the AVX-512 level (AVX-512F, AVX2, FMA,
    // F16C), the type and that `cols` is a multiple of 16; `w` holds whole
    // rows of `rb` bytes and each `out` part one value a row.
    unsafe { crate::avx512::matvec_many_half(ty, w, rb, &xs, &mut out) }
}

/// Rows the 16-bit float matvec dots together at the AVX-512 level, as the
/// FP8 kernels do (see `fp8::ROWS`): a bf16 [18432, 7168] matvec, 2 threads,
/// read 12.4-13.5 GB/s one row at a time on the development machine.
#[cfg(target_arch = "x86_64")]
const HALF_ROWS: usize = 8;

/// Batched product: `x` is `[m, cols]` row-major, `y` is `[m, rows]`
/// row-major, and `y[i][r] = dot(row r of w, x[i])`.
///
/// Each weight row is decoded once into a per-thread f32 scratch row and
/// dotted with all `m` vectors, so the weights are read once per call
/// (prefill). Threads split the weight rows as in [`matvec`], above
/// `rows * cols * m > PARALLEL_MIN_WORK`; results do not depend on `threads`.
/// With `m == 1` this is exactly [`matvec`] (which decodes in registers);
/// for `m > 1` results may differ from [`matvec`] by f32 rounding, since the
/// sum runs over the whole row instead of block by block.
///
/// Panics (programmer error) if `cols` is not a multiple of the block size or
/// a slice length does not match.
#[allow(clippy::too_many_arguments)]
pub fn matmul(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], m: usize, y: &mut [f32], threads: usize) {
    let rb = checked_batch_shape(ty, w, rows, cols, (x.len(), m, y.len()), "matmul");
    if m == 1 {
        matvec(ty, w, rows, cols, x, y, threads);
        return;
    }
    if m == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let v = Verified::active();
    split_rows(w, rb, cols, m, y, threads, |wp, view| matmul_rows(v, ty, wp, rb, cols, x, view));
}

/// [`matmul`] of float weights (F32, F16, BF16) whose activation rows are
/// made on demand: `x_row(i, out)` writes row `i` (`cols` values), as a
/// convolution gathers its patches, so the `[m, cols]` matrix is never held
/// whole. The same bits as [`matmul`] over the rows `x_row` writes. At the
/// AVX-512 level each thread makes the rows it needs a block at a time
/// (every thread makes every row: the threads split the weight rows); elsewhere the
/// rows are made once and [`matmul`] runs on them.
///
/// Panics (programmer error) on a quantized type or mismatched lengths.
#[allow(clippy::too_many_arguments)]
pub fn matmul_gather(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    m: usize,
    x_row: &(dyn Fn(usize, &mut [f32]) + Sync),
    y: &mut [f32],
    threads: usize,
) {
    assert!(matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16), "matmul_gather: {ty} is not a float type");
    let rb = checked_weight_shape(ty, w, rows, cols, "matmul_gather");
    assert!(Some(y.len()) == m.checked_mul(rows), "matmul_gather: y has {} elements, expected {m} * {rows}", y.len());
    let v = Verified::active();
    #[cfg(target_arch = "x86_64")]
    if matches!(v.level(), SimdLevel::Avx512Vnni | SimdLevel::Amx) && m > 1 && rows > 0 && cols > 0 {
        // SAFETY: a verified AVX-512 level has AVX-512F, AVX2, FMA and F16C;
        // each part of `w` holds whole rows of `rb` bytes.
        split_rows(w, rb, cols, m, y, threads, |wp, view| unsafe {
            crate::avx512::matmul_rows_float_gather(ty, wp, rb, cols, x_row, view)
        });
        return;
    }
    let _ = (v, rb); // used above on x86-64 only
    let mut x = vec![0f32; m * cols];
    for (i, row) in x.chunks_exact_mut(cols.max(1)).enumerate().take(m) {
        x_row(i, row);
    }
    matmul(ty, w, rows, cols, &x, m, y, threads);
}

/// Decodes each row of `w` once into a scratch row and dots it with every
/// vector of `x`; `out[i][r]` receives row `r` times `x[i]`. Rows go four at
/// a time through `dot4_verified`, which loads each `x[i]` once for four rows
/// (a short last group repeats a row whose extra results are dropped), so
/// every row is computed the same way whatever the thread split.
fn matmul_rows(v: Verified, ty: GgmlType, w: &[u8], rb: usize, cols: usize, x: &[f32], mut out: Vec<&mut [f32]>) {
    #[cfg(target_arch = "x86_64")]
    if matches!(v.level(), SimdLevel::Avx512Vnni | SimdLevel::Amx)
        && matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    {
        // SAFETY: a verified AVX-512 level has AVX-512F, AVX2, FMA and F16C;
        // `w` holds whole rows of `rb` bytes (checked by `matmul`).
        return unsafe { crate::avx512::matmul_rows_float(ty, w, rb, cols, x, out) };
    }
    let mut scratch = vec![0f32; 4 * cols];
    for (g, rows) in w.chunks(4 * rb).enumerate() {
        let k = rows.len() / rb;
        for (row, dst) in rows.chunks_exact(rb).zip(scratch.chunks_exact_mut(cols)) {
            decode_row(v, ty, row, dst);
        }
        let slot = |t: usize| &scratch[(t % k) * cols..][..cols];
        let group = [slot(0), slot(1), slot(2), slot(3)];
        for (yi, xi) in out.iter_mut().zip(x.chunks_exact(cols)) {
            let dots = dot4_verified(v, group, xi);
            yi[4 * g..4 * g + k].copy_from_slice(&dots[..k]);
        }
    }
}

/// Decodes one weight row at a verified level.
fn decode_row(v: Verified, ty: GgmlType, row: &[u8], out: &mut [f32]) {
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => with_block_type!(ty, B => dequantize_blocks::<B>(row, out)),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Verified` at `Avx2Fma` or `Avx512Vnni` means the CPU has
        // AVX2, FMA and F16C; `row` holds `out.len()` elements (checked by the caller).
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe {
            crate::avx2::dequantize_row(ty, row, out)
        },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

/// Checks `cols` against the block size and `w` against `rows` rows;
/// returns the bytes per row.
#[track_caller]
fn checked_weight_shape(ty: GgmlType, w: &[u8], rows: usize, cols: usize, what: &str) -> usize {
    let Some(rb) = ty.row_bytes(cols) else {
        panic!("{what}: cols = {cols} is not a multiple of the {ty} block size {}", ty.block_size());
    };
    assert!(
        Some(w.len()) == rows.checked_mul(rb),
        "{what}: w has {} bytes, expected rows * row_bytes = {rows} * {rb} ({ty}, cols = {cols})",
        w.len()
    );
    rb
}

/// Rows per thread: all of them when the work is small or one thread is
/// asked for, else an even split over at most `threads` threads.
/// Split `y` (`[m, rows]`) by weight rows: part t holds columns
/// `[t*chunk, (t+1)*chunk)` of every output row, so threads that own
/// different weight rows write disjoint slices.
pub(crate) fn column_views(y: &mut [f32], rows: usize, chunk: usize, m: usize) -> Vec<Vec<&mut [f32]>> {
    let mut views: Vec<Vec<&mut [f32]>> = (0..rows.div_ceil(chunk)).map(|_| Vec::with_capacity(m)).collect();
    for yi in y.chunks_exact_mut(rows) {
        for (view, part) in views.iter_mut().zip(yi.chunks_mut(chunk)) {
            view.push(part);
        }
    }
    views
}

/// A product of `m` activation rows with the weight rows `w` (`rb` bytes
/// each) split across up to `threads` threads of the pool (above
/// [`PARALLEL_MIN_WORK`]): `f(part, view)` gets each share of the rows and
/// the matching columns of every row of `y` (`[m, rows]`).
fn split_rows(
    w: &[u8],
    rb: usize,
    cols: usize,
    m: usize,
    y: &mut [f32],
    threads: usize,
    f: impl Fn(&[u8], Vec<&mut [f32]>) + Sync,
) {
    let rows = w.len() / rb;
    let chunk = rows_per_thread(threads, rows, rows.saturating_mul(cols).saturating_mul(m));
    let jobs: Vec<_> = column_views(y, rows, chunk, m).into_iter().zip(w.chunks(chunk * rb)).collect();
    crate::pool::run_parts(threads, jobs, |(view, wp)| f(wp, view));
}

/// [`checked_weight_shape`] plus the activations' and results' lengths
/// (`x_y`: `x.len()`, `m`, `y.len()`) of a product of `m` rows; the row bytes.
fn checked_batch_shape(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    (x, m, y): (usize, usize, usize),
    what: &str,
) -> usize {
    let rb = checked_weight_shape(ty, w, rows, cols, what);
    assert!(Some(x) == m.checked_mul(cols), "{what}: x has {x} elements, expected m * cols = {m} * {cols}");
    assert!(Some(y) == m.checked_mul(rows), "{what}: y has {y} elements, expected m * rows = {m} * {rows}");
    rb
}

pub(crate) fn rows_per_thread(threads: usize, rows: usize, work: usize) -> usize {
    let threads = threads.clamp(1, rows.max(1));
    if threads == 1 || work <= PARALLEL_MIN_WORK {
        rows.max(1)
    } else {
        rows.div_ceil(threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `WHALE_PREFETCH` turns the software prefetch off or on whatever the
    /// CPU's default, and leaves the default for anything else.
    #[test]
    fn prefetch_setting_reads_on_off_and_keeps_the_default_otherwise() {
        for default in [false, true] {
            for off in ["0", "off", "false", " off "] {
                assert!(!prefetch_setting(Some(off), default), "{off:?}");
            }
            for on in ["1", "on", "true"] {
                assert!(prefetch_setting(Some(on), default), "{on:?}");
            }
            for other in [None, Some(""), Some("2"), Some("yes please")] {
                assert_eq!(prefetch_setting(other, default), default, "{other:?}");
            }
        }
    }

    /// Values in [-1, 1] in steps of 1e-3 from a xorshift seeded with `seed`.
    fn values(mut s: u64) -> impl FnMut() -> f32 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s % 2001) as f32 - 1000.0) * 1e-3
        }
    }

    /// `v` as the bytes of a float weight row of type `ty` (F32, F16, BF16).
    fn float_bytes(ty: GgmlType, v: &[f32]) -> Vec<u8> {
        match ty {
            GgmlType::F32 => v.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => v.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            _ => v.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        }
    }

    /// Every row of [`matvec_many`] is the bits of [`matvec`] of its vector,
    /// for every weight type of the fast path and one outside it, lengths
    /// with and without a 16-element remainder, short last groups of rows,
    /// odd and even counts of vectors, and 1 or 2 threads.
    #[test]
    fn matvec_many_keeps_the_bits_of_matvec() {
        let mut next = values(0x2545_f491);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for &(rows, cols, m) in &[(1, 16, 2), (5, 48, 3), (9, 40, 2), (4, 1024, 5), (37, 4096, 2), (13, 2048, 4)] {
                let wf: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
                let w = float_bytes(ty, &wf);
                let x: Vec<f32> = (0..m * cols).map(|_| next()).collect();
                let mut want = vec![0f32; m * rows];
                for (xi, yi) in x.chunks_exact(cols).zip(want.chunks_exact_mut(rows)) {
                    matvec(ty, &w, rows, cols, xi, yi, 1);
                }
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; m * rows];
                    matvec_many(ty, &w, rows, cols, &x, m, &mut y, threads);
                    let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} rows {rows} cols {cols} m {m} threads {threads}: {y:?} != {want:?}");
                }
            }
        }
    }

    /// The float product with several activation rows is, at the process's
    /// level, the bits of `dot4` on the decoded weight rows at the AVX2
    /// level (the AVX-512 kernel blocks four activation rows per call and
    /// tiles them, and must not change a bit), for lengths with and without
    /// 16- and 8-element remainders, short last groups of rows, and 1 or 2
    /// threads; [`matmul_gather`] gives the same bits with the rows made on
    /// demand.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn float_matmul_keeps_the_bits_of_dot4() {
        let reference = if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            crate::dot::verify(SimdLevel::Avx2Fma)
        } else {
            crate::dot::verify(SimdLevel::Scalar)
        };
        let mut next = values(0x9e37_79b9);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for &(rows, cols, m) in &[
                (1, 7, 2),
                (5, 8, 7),
                (9, 24, 13),
                (4, 40, 6),
                (7, 1000, 17),
                (13, 33, 12),
                (3, 1024, 25),
                (5, 4096, 50),
            ] {
                let wf: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
                let w = float_bytes(ty, &wf);
                let x: Vec<f32> = (0..m * cols).map(|_| next()).collect();
                let rb = ty.row_bytes(cols).unwrap();
                let mut want = vec![0f32; m * rows];
                let mut dec = vec![0f32; rows * cols];
                for (r, d) in dec.chunks_exact_mut(cols).enumerate() {
                    decode_row(reference, ty, &w[r * rb..(r + 1) * rb], d);
                }
                for g in 0..rows.div_ceil(4) {
                    let k = (rows - 4 * g).min(4);
                    let slot = |t: usize| &dec[(4 * g + t % k) * cols..][..cols];
                    for i in 0..m {
                        let d = crate::dot::dot4_verified(
                            reference,
                            [slot(0), slot(1), slot(2), slot(3)],
                            &x[i * cols..][..cols],
                        );
                        want[i * rows + 4 * g..i * rows + 4 * g + k].copy_from_slice(&d[..k]);
                    }
                }
                for threads in [1, 2] {
                    let mut y = vec![0f32; m * rows];
                    matmul(ty, &w, rows, cols, &x, m, &mut y, threads);
                    // The same product with rows made on demand.
                    let mut g = vec![0f32; m * rows];
                    let x_row = |i: usize, out: &mut [f32]| out.copy_from_slice(&x[i * cols..][..cols]);
                    matmul_gather(ty, &w, rows, cols, m, &x_row, &mut g, threads);
                    for (i, ((a, b), c)) in y.iter().zip(&want).zip(&g).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{ty} [{rows}, {cols}] m {m}, {threads} threads, at {i}: {a} vs {b}"
                        );
                        assert_eq!(
                            c.to_bits(),
                            b.to_bits(),
                            "gathered: {ty} [{rows}, {cols}] m {m}, at {i}: {c} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
