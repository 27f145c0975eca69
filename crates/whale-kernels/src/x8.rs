//! Weights stored eight rows interleaved, for decode products.
//!
//! A decode product (one activation row) that takes eight weight rows at a
//! time (`rows8`) gives each row its own lane of every vector: one
//! `vpdpbusd` multiplies four quants of each of the eight rows by one
//! broadcast group of four activations, and a block's scales are unpacked
//! once for the eight rows. From the file's layout that needs an 8×8
//! transpose of 4-byte words in registers for every 32 bytes of each row,
//! and eight short streams to read. Stored interleaved, the same words are
//! plain loads from one stream. llama.cpp repacks Q4_K at load on x86 for
//! the same reason (its "CPU_REPACK" buffers of eight-row blocks, in a byte
//! order of its own).
//!
//! The layout, for a matrix of `rows` rows (a multiple of [`ROWS`]) of
//! `cols` columns: `rows / 8` groups one after the other, group g holding
//! rows `8g..8g + 8` block by block; block b of the group is the eight
//! rows' blocks b as a matrix of 4-byte words, transposed: word w of row r
//! at byte `32w + 4r` of the group's block (a block's bytes past its last
//! whole word, Q6_K's `d`, follow row by row). The bytes are the same in
//! number, so a model's weights can be rewritten in place
//! ([`interleave_in_place`], [`deinterleave_in_place`]).
//!
//! Measured with `examples/x8_bw` on the 2-core Intel Xeon of stop 43
//! (AVX-512 VNNI level, against `matmul_q_acts` on the same matrix in the
//! file's layout, alternating), at 2048 and 7168 columns: one core from
//! L2, Q4_K 29.6–30.9 against 18.2–18.9 GB/s and Q6_K 33.2–35.4 against
//! 27.0–27.8; two threads from memory, Q4_K 28.1–30.4 against 26.1–27.8
//! and Q6_K 29.3–30.1 against 26.2–27.8. The larger gain is where a
//! core's arithmetic, not memory, holds a decode (AMD Zen 4, whose two
//! threads read 55–65 GB/s).
//!
//! Any product takes a matrix in this layout ([`Layout::X8`] in
//! `QProduct`, `QProductOwn`, or [`matmul_x8`]), for any number of
//! activation rows, with the bits of the file's layout:
//! - fewer rows than the panels take (decode, a few sequences at once) meet
//!   each group in turn in this layout's kernels (`matmul_rest`);
//! - the panels (a prefill) put block b of each group of a panel back in
//!   the file's layout just before they unpack it, a few KiB in L1, so the
//!   memory stream stays under their arithmetic; the AMX tiles a tile of
//!   rows at a time;
//! - where the CPU has no kernels for this layout, the row kernels take a
//!   tile of rows put back at a time: correct, and slow for decode (Q4_K
//!   at the AVX2 level 4 GB/s from L2 against 20 in the file's layout), so
//!   a loader stores matrices this way only where [`chosen`] says so.
//!
//! Measured with `examples/x8_bw` at 2 threads on the Xeon of stop 44
//! (AVX-512 VNNI level), against the file's layout, alternating: at 7168
//! columns, 30 MB (from L3), 16 rows Q4_K 5.1 against 5.5 GB/s and Q6_K
//! 5.9 against 6.5; 128 rows 1-3 % slower, 512 rows 0-1 %. Q6_K with 4 to
//! 11 rows is the case this layout costs most: at 2048 columns from memory,
//! 4 rows 13.5 against 19.1 GB/s (2 rows 22.5 against 23.1, 3 rows 17.2
//! against 15.4), since the file's layout has row kernels that unpack a
//! weight row once for several activation rows and these kernels do not.
//!
//! The engine stores the Q4_K and Q6_K matrices of a GGUF read into memory
//! this way where [`chosen`] (`GgufFile::interleave_x8`, models::load).
//!
//! Types: Q4_K and Q6_K ([`supports`]). Results are the bits of the scalar
//! reference (`vec_dot_q_ref`) of each row, at every level: the kernels at
//! the AVX-512 VNNI level are `rows8::q4_k`'s and `q6_k`'s arithmetic.

use crate::dispatch::Verified;
use crate::error::KernelError;
use crate::q8::QuantizedActs;
use crate::types::GgmlType;

/// Rows a group interleaves.
pub const ROWS: usize = 8;

/// Whether `ty` has an interleaved layout and kernel here.
pub fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K)
}

/// The checks every entry point makes: a supported type, whole blocks,
/// whole groups of rows, and `bytes` the matrix's encoded size. Returns the
/// bytes of one row.
fn check(ty: GgmlType, rows: usize, cols: usize, bytes: usize) -> Result<usize, KernelError> {
    if !supports(ty) {
        return Err(KernelError::NotInterleaved { ty });
    }
    let rb = ty.row_bytes(cols).ok_or(KernelError::NotBlockMultiple { ty, elements: cols })?;
    if !rows.is_multiple_of(ROWS) {
        return Err(KernelError::RowsNotGrouped { rows });
    }
    if rows.checked_mul(rb) != Some(bytes) {
        return Err(KernelError::BadLength { ty, elements: rows.saturating_mul(cols), bytes });
    }
    Ok(rb)
}

/// Rewrites `data` (a `rows` × `cols` matrix of `ty` in the file's layout)
/// into the interleaved layout, a group at a time through a scratch buffer
/// of eight rows.
pub fn interleave_in_place(ty: GgmlType, rows: usize, cols: usize, data: &mut [u8]) -> Result<(), KernelError> {
    let rb = check(ty, rows, cols, data.len())?;
    let v = Verified::active();
    let mut scratch = vec![0u8; ROWS * rb];
    for group in data.chunks_exact_mut(ROWS * rb) {
        scratch.copy_from_slice(group);
        interleave_group(v, ty, rb, &scratch, group);
    }
    Ok(())
}

/// Eight rows in the file's layout (`rows`, row r at `r * rb`) into one
/// interleaved group (`out`), the inverse of [`deinterleave_group`] and
/// the same transposes (an 8×8 transpose of words is its own inverse): a
/// model's weights are rewritten this way at load.
fn interleave_group(v: Verified, ty: GgmlType, rb: usize, rows: &[u8], out: &mut [u8]) {
    let bs = ty.type_size();
    assert!(rows.len() >= ROWS * rb && out.len() >= ROWS * rb && rb.is_multiple_of(bs), "x8: a whole group");
    #[cfg(target_arch = "x86_64")]
    if has_avx2(v) {
        // SAFETY: AVX2 is verified; the lengths are checked above.
        return unsafe { interleave_group_avx2(bs, rb, rows, out) };
    }
    let _ = v;
    let (words, tail) = (bs / 4, bs % 4);
    for b in 0..rb / bs {
        let dst = &mut out[b * ROWS * bs..(b + 1) * ROWS * bs];
        for r in 0..ROWS {
            let blk = &rows[r * rb + b * bs..r * rb + (b + 1) * bs];
            for w in 0..words {
                let word: [u8; 4] = blk[4 * w..4 * w + 4].try_into().expect("four bytes");
                dst[32 * w + 4 * r..32 * w + 4 * r + 4].copy_from_slice(&word);
            }
            for t in 0..tail {
                dst[32 * words + tail * r + t] = blk[4 * words + t];
            }
        }
    }
}

/// [`interleave_group`] where the CPU has AVX2.
///
/// # Safety
/// The CPU must have AVX2; `rows` and `out` hold eight rows of `rb` bytes,
/// whole blocks of `bs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn interleave_group_avx2(bs: usize, rb: usize, rows: &[u8], out: &mut [u8]) {
    use core::arch::x86_64::*;
    let (words, tail) = (bs / 4, bs % 4);
    let wide = words / 8 * 8;
    for b in 0..rb / bs {
        let dst = &mut out[b * ROWS * bs..(b + 1) * ROWS * bs];
        let at = |r: usize, w: usize| r * rb + b * bs + 4 * w;
        for w in (0..wide).step_by(8) {
            // SAFETY: 32 bytes of row r's block (4w + 32 <= bs), inside `rows`.
            let x: [__m256i; ROWS] =
                core::array::from_fn(|r| unsafe { _mm256_loadu_si256(rows[at(r, w)..at(r, w) + 32].as_ptr().cast()) });
            for (k, t) in crate::avx2_q8::transpose_8x8_i32(x).into_iter().enumerate() {
                // SAFETY: 32 bytes inside `dst`: word w + k of the eight rows.
                unsafe { _mm256_storeu_si256(dst[32 * (w + k)..32 * (w + k) + 32].as_mut_ptr().cast(), t) };
            }
        }
        let mut from = wide;
        if words - wide == 4 {
            // Rows r and r + 4's last four words in one vector each, then
            // transposed within the 128-bit halves: result t is word
            // wide + t of rows 0..4 then 4..8.
            // SAFETY: 16 bytes of rows r and r + 4's blocks, inside `rows`.
            let x: [__m256i; 4] = core::array::from_fn(|r| unsafe {
                _mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(_mm_loadu_si128(rows[at(r, wide)..at(r, wide) + 16].as_ptr().cast())),
                    _mm_loadu_si128(rows[at(r + 4, wide)..at(r + 4, wide) + 16].as_ptr().cast()),
                )
            });
            let t0 = _mm256_unpacklo_epi32(x[0], x[1]);
            let t1 = _mm256_unpackhi_epi32(x[0], x[1]);
            let t2 = _mm256_unpacklo_epi32(x[2], x[3]);
            let t3 = _mm256_unpackhi_epi32(x[2], x[3]);
            let ws = [
                _mm256_unpacklo_epi64(t0, t2),
                _mm256_unpackhi_epi64(t0, t2),
                _mm256_unpacklo_epi64(t1, t3),
                _mm256_unpackhi_epi64(t1, t3),
            ];
            for (k, t) in ws.into_iter().enumerate() {
                // SAFETY: 32 bytes inside `dst`: word wide + k of the eight rows.
                unsafe { _mm256_storeu_si256(dst[32 * (wide + k)..32 * (wide + k) + 32].as_mut_ptr().cast(), t) };
            }
            from = words;
        }
        for r in 0..ROWS {
            for w in from..words {
                let word: [u8; 4] = rows[at(r, w)..at(r, w) + 4].try_into().expect("four bytes");
                dst[32 * w + 4 * r..32 * w + 4 * r + 4].copy_from_slice(&word);
            }
            for t in 0..tail {
                dst[32 * words + tail * r + t] = rows[at(r, words) + t];
            }
        }
    }
}

/// Whether `v`'s level has AVX2 (for the transposes).
#[cfg(target_arch = "x86_64")]
fn has_avx2(v: Verified) -> bool {
    matches!(
        v.level(),
        crate::dispatch::SimdLevel::Avx2Fma | crate::dispatch::SimdLevel::Avx512Vnni | crate::dispatch::SimdLevel::Amx
    )
}

/// The inverse of [`interleave_in_place`]: `data` back in the file's layout.
pub fn deinterleave_in_place(ty: GgmlType, rows: usize, cols: usize, data: &mut [u8]) -> Result<(), KernelError> {
    let rb = check(ty, rows, cols, data.len())?;
    let v = Verified::active();
    let mut scratch = vec![0u8; ROWS * rb];
    for group in data.chunks_exact_mut(ROWS * rb) {
        deinterleave_group(v, ty, rb, group, &mut scratch);
        group.copy_from_slice(&scratch);
    }
    Ok(())
}

/// One interleaved group of eight rows (`group`) into `out` in the file's
/// layout (row r at `r * rb`): word w of row r's block b from byte `32w +
/// 4r` of the group's block b, the tail row by row. Where the CPU has
/// AVX2 (`v`: this CPU's level), eight whole words of the eight rows at a
/// time (an 8×8 transpose in registers), the four left a 4×8 transpose
/// (both types leave four), and the tail (Q6_K's `d`) two bytes a row: a
/// prefill puts every panel of rows back this way, so it must cost little
/// beside the panel's unpacking.
fn deinterleave_group(v: Verified, ty: GgmlType, rb: usize, group: &[u8], out: &mut [u8]) {
    let bs = ty.type_size();
    assert!(group.len() >= ROWS * rb && out.len() >= ROWS * rb && rb.is_multiple_of(bs), "x8: a whole group");
    #[cfg(target_arch = "x86_64")]
    if has_avx2(v) {
        // SAFETY: AVX2 is verified; the lengths are checked above.
        return unsafe { deinterleave_group_avx2(bs, rb, group, out) };
    }
    let _ = v;
    for b in 0..rb / bs {
        let src = &group[b * ROWS * bs..(b + 1) * ROWS * bs];
        for r in 0..ROWS {
            let blk = &mut out[r * rb + b * bs..r * rb + (b + 1) * bs];
            words_and_tail(src, blk, r, 0);
        }
    }
}

/// Row `r`'s words `from..` of one interleaved block `src` and its tail
/// into its block `blk`, in copies of a length the compiler knows (a range
/// of a length it did not know was a `memcpy` call a word, which held a
/// prefill's tiles to 5-7 GB/s).
#[inline(always)]
fn words_and_tail(src: &[u8], blk: &mut [u8], r: usize, from: usize) {
    let (words, tail) = (blk.len() / 4, blk.len() % 4);
    for w in from..words {
        let word: [u8; 4] = src[32 * w + 4 * r..32 * w + 4 * r + 4].try_into().expect("four bytes");
        blk[4 * w..4 * w + 4].copy_from_slice(&word);
    }
    for t in 0..tail {
        blk[4 * words + t] = src[32 * words + tail * r + t];
    }
}

/// [`deinterleave_group`] where the CPU has AVX2.
///
/// # Safety
/// The CPU must have AVX2; `group` and `out` hold eight rows of `rb` bytes,
/// whole blocks of `bs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn deinterleave_group_avx2(bs: usize, rb: usize, group: &[u8], out: &mut [u8]) {
    use core::arch::x86_64::*;
    let words = bs / 4;
    let wide = words / 8 * 8;
    for b in 0..rb / bs {
        let src = &group[b * ROWS * bs..(b + 1) * ROWS * bs];
        for w in (0..wide).step_by(8) {
            // SAFETY: 256 bytes are read inside `src`, and row r's 32 bytes
            // are written at `r * rb + b * bs + 4w`, inside its block (4w +
            // 32 <= 4 * words <= bs) and so inside `out` (the caller's).
            unsafe { transpose_words(&src[32 * w..32 * w + 256], out.as_mut_ptr().add(b * bs + 4 * w), rb) };
        }
        let mut from = wide;
        if words - wide == 4 {
            // Words wide..wide + 4 of the eight rows: four vectors, lane r =
            // row r; transposed within each 128-bit half, row r's 16 bytes
            // in the low half of result r % 4 (r < 4) or the high half.
            // SAFETY: each load reads 32 bytes inside `src`.
            let x: [__m256i; 4] = core::array::from_fn(|k| unsafe {
                _mm256_loadu_si256(src[32 * (wide + k)..32 * (wide + k) + 32].as_ptr().cast())
            });
            let t0 = _mm256_unpacklo_epi32(x[0], x[1]);
            let t1 = _mm256_unpackhi_epi32(x[0], x[1]);
            let t2 = _mm256_unpacklo_epi32(x[2], x[3]);
            let t3 = _mm256_unpackhi_epi32(x[2], x[3]);
            let rows = [
                _mm256_unpacklo_epi64(t0, t2),
                _mm256_unpackhi_epi64(t0, t2),
                _mm256_unpacklo_epi64(t1, t3),
                _mm256_unpackhi_epi64(t1, t3),
            ];
            for (r, v) in rows.into_iter().enumerate() {
                for (row, half) in [(r, _mm256_castsi256_si128(v)), (r + 4, _mm256_extracti128_si256::<1>(v))] {
                    let at = &mut out[row * rb + b * bs + 4 * wide..row * rb + b * bs + 4 * wide + 16];
                    // SAFETY: the store writes the 16 bytes of `at`.
                    unsafe { _mm_storeu_si128(at.as_mut_ptr().cast(), half) };
                }
            }
            from = words;
        }
        for r in 0..ROWS {
            words_and_tail(src, &mut out[r * rb + b * bs..r * rb + (b + 1) * bs], r, from);
        }
    }
}

/// Eight interleaved words of eight rows (`src`, 256 bytes: word k of row r
/// at `32k + 4r`) to each row's 32 bytes at `dst + r * stride`.
///
/// # Safety
/// The CPU must have AVX2; `dst + r * stride .. + 32` must be writable for
/// r in 0..8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn transpose_words(src: &[u8], dst: *mut u8, stride: usize) {
    use core::arch::x86_64::*;
    // SAFETY: each load reads 32 bytes inside `src` (256 bytes).
    let v: [__m256i; 8] =
        core::array::from_fn(|k| unsafe { _mm256_loadu_si256(src[32 * k..32 * k + 32].as_ptr().cast()) });
    for (r, row) in crate::avx2_q8::transpose_8x8_i32(v).into_iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_si256(dst.add(r * stride).cast(), row) };
    }
}

/// How a matrix's rows are stored: as in the file, or interleaved eight
/// at a time ([`X8`](Layout::X8), see the module docs). The products that
/// take several matrices (`QProduct`, `QProductOwn`) say it per matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Row after row, as in a GGUF file.
    #[default]
    File,
    /// Eight rows interleaved ([`interleave_in_place`]).
    X8,
}

/// Whether a loader should store the matrices that fit ([`fits`]) in this
/// layout: where this CPU has the kernels that make it pay for decode (the
/// AVX-512 VNNI level, or AMX, as `WHALE_SIMD` leaves it; elsewhere a
/// matrix in this layout is only correct, not fast), unless `WHALE_X8`
/// says `0`/`off` (or `1`/`on`: at any level, to test the other levels'
/// path). Read once.
pub fn chosen() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let has_kernels = cfg!(target_arch = "x86_64")
            && matches!(
                Verified::active().level(),
                crate::dispatch::SimdLevel::Avx512Vnni | crate::dispatch::SimdLevel::Amx
            );
        crate::matmul::prefetch_setting(std::env::var("WHALE_X8").ok().as_deref(), has_kernels)
    })
}

/// Whether matrices of `ty` with `rows` rows (each matrix of a stack, such
/// as one expert's) of `cols` columns can be stored interleaved.
pub fn fits(ty: GgmlType, rows: usize, cols: usize) -> bool {
    supports(ty) && rows.is_multiple_of(ROWS) && ty.row_bytes(cols).is_some()
}

/// Row `r` of the interleaved matrix `w` (`ty`, `cols` columns) in the
/// file's layout, into `out` (`row_bytes(cols)` bytes): its group put back
/// through a scratch buffer. For the odd row read (an embedding lookup).
pub fn row_in_file_layout(ty: GgmlType, cols: usize, w: &[u8], r: usize, out: &mut [u8]) -> Result<(), KernelError> {
    let rows = w.len() / ty.row_bytes(cols).unwrap_or(usize::MAX).max(1);
    let rb = check(ty, rows, cols, w.len())?;
    if r >= rows || out.len() != rb {
        return Err(KernelError::BadLength { ty, elements: cols, bytes: out.len() });
    }
    let g = r / ROWS;
    let mut scratch = vec![0u8; ROWS * rb];
    deinterleave_group(Verified::active(), ty, rb, &w[g * ROWS * rb..(g + 1) * ROWS * rb], &mut scratch);
    out.copy_from_slice(&scratch[(r % ROWS) * rb..(r % ROWS + 1) * rb]);
    Ok(())
}

/// Panics (programmer error) unless `w` holds a `rows` × `cols` matrix of
/// `ty` that the interleaved layout can hold: the check of the products
/// that take a [`Layout`] per matrix. Returns the bytes of a row.
#[track_caller]
pub(crate) fn checked(ty: GgmlType, rows: usize, cols: usize, w: &[u8], what: &str) -> usize {
    check(ty, rows, cols, w.len()).unwrap_or_else(|e| panic!("{what}: an interleaved matrix: {e}"))
}

/// `y[i * rows + r]` = row r of the interleaved matrix `w` (`rows` × `cols`
/// of `ty`, see the module docs) dotted with activation row i of `acts`
/// (quantized for `ty`, as for [`crate::matmul_q_acts`]), bit for bit what
/// `matmul_q_acts` gives for the same matrix in the file's layout. The
/// groups are split over `threads`. A matrix this layout cannot hold is an
/// error; activations of another type or width, or a `y` of another size,
/// panic (programmer error) as in `matmul_q_acts`.
pub fn matmul_x8(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    check(ty, rows, cols, w.len())?;
    crate::qdot::check_acts(ty, rows, cols, acts, y.len(), "matmul_x8");
    let v = Verified::active();
    let prepared = crate::qdot::PreparedActs::new(v, ty, acts);
    let item = (ty, Layout::X8, w, rows, cols, acts.m(), &prepared, y);
    crate::qdot::run_products(v, std::iter::once(item), threads);
    Ok(())
}

/// Interleaved rows `w` (whole groups, `rb` bytes a row) into `out` in
/// the file's layout: how the panels and AMX tiles read this layout, a
/// panel of rows at a time into a buffer that stays in L2, just before
/// they unpack it (so the memory stream stays under their arithmetic, as
/// it is when they read the file's layout).
pub(crate) fn to_file_layout(v: Verified, ty: GgmlType, rb: usize, w: &[u8], out: &mut [u8]) {
    for (group, dst) in w.chunks_exact(ROWS * rb).zip(out.chunks_exact_mut(ROWS * rb)) {
        deinterleave_group(v, ty, rb, group, dst);
    }
}

/// The rows of `acts` from `acts.tiled()` on against the interleaved rows
/// `w` (whole groups, `rb` bytes a row), into `out` (one slice a row of
/// `acts`, one value a weight row): what `qdot::matmul_q_rows` leaves
/// where neither panels nor AMX tiles take a product's rows (decode, and
/// a few rows at once).
///
/// At the AVX-512 VNNI level each activation row meets each group in turn,
/// in this layout's kernels. Elsewhere (a layout `WHALE_X8` forced) the
/// rows go a tile at a time back in the file's layout, for the ordinary
/// row kernels: correct, and slow (the tile is read before its arithmetic
/// starts).
pub(crate) fn matmul_rest(
    v: Verified,
    ty: GgmlType,
    w: &[u8],
    rb: usize,
    acts: &crate::qdot::PreparedActs<'_>,
    mut out: Vec<&mut [f32]>,
) {
    let groups = w.len() / (ROWS * rb);
    let first = acts.tiled();
    if out.len() <= first || groups == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(v.level(), crate::dispatch::SimdLevel::Avx512Vnni | crate::dispatch::SimdLevel::Amx) {
        let nb = rb / ty.type_size();
        for g in 0..groups {
            // The group, and the rest of the share after it to prefetch from.
            let stream = &w[g * ROWS * rb..];
            for (i, o) in out.iter_mut().enumerate().skip(first) {
                // SAFETY: the level is verified; `stream` starts with
                // eight whole rows of `ty` blocks (`check`) and the
                // activation row has as many columns (`check_acts`).
                let dots = unsafe {
                    match ty {
                        GgmlType::Q4_K => crate::rows8::q4_k_x8(stream, nb, acts.row(i)),
                        GgmlType::Q6_K => crate::rows8::q6_k_x8(stream, nb, acts.row(i)),
                        t => unreachable!("x8: {t} passed `check` without a kernel"),
                    }
                };
                o[g * ROWS..(g + 1) * ROWS].copy_from_slice(&dots);
            }
        }
        return;
    }
    // Only the AMX level tiles rows, and it has the kernels above.
    debug_assert_eq!(first, 0);
    let tile = (crate::qdot::W_TILE_BYTES / (ROWS * rb)).clamp(1, groups);
    let mut scratch = vec![0u8; tile * ROWS * rb];
    let mut g = 0;
    while g < groups {
        let n = tile.min(groups - g);
        let flat = &mut scratch[..n * ROWS * rb];
        to_file_layout(v, ty, rb, &w[g * ROWS * rb..(g + n) * ROWS * rb], flat);
        let (now, later): (Vec<&mut [f32]>, Vec<&mut [f32]>) =
            out.into_iter().map(|o| o.split_at_mut(n * ROWS)).unzip();
        crate::qdot::matmul_q_rows(v, ty, Layout::File, flat, rb, acts, now);
        out = later;
        g += n;
    }
}
