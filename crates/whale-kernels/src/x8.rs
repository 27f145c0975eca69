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
//! [`matmul_x8`] takes any number of activation rows: up to
//! `GROUP_ROWS_MAX` meet each group in turn; more (a prefill) go through
//! tiles of rows put back in the file's layout in a scratch buffer, for
//! the panels and AMX tiles, which reuse each weight byte for every row. At
//! 512 rows that costs Q4_K 0–2 % and Q6_K 4–7 % against the file's layout
//! (`x8_bw 2 20 2048 TYPE 512`). The engine does not store its weights this
//! way yet (see `docs/speed-log.md`).
//!
//! Types: Q4_K and Q6_K ([`supports`]). Results are the bits of the scalar
//! reference (`vec_dot_q_ref`) of each row, at every level: the kernel at
//! the AVX-512 VNNI level is `rows8::q4_k`'s or `q6_k`'s arithmetic;
//! elsewhere the rows are put back in the file's layout a tile at a time,
//! as for a prefill, and the ordinary kernels run: correct but slow for
//! decode (Q4_K at the AVX2 level 4 GB/s from L2 against 20 in the file's
//! layout), so a matrix belongs in this layout only where the kernels are.

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

/// Where the bytes of row `r`'s block go in the group's block of
/// `bs`-byte blocks: word w (bytes `4w..4w + 4`) at `32w + 4r` for the
/// whole 4-byte words, then the bytes past the last whole word (Q6_K's
/// 210-byte blocks end in the two bytes of `d`) row by row. Returns the
/// byte ranges of row r's block and of the group block that hold each
/// other, words first, then the tail.
fn places(bs: usize, r: usize) -> impl Iterator<Item = (core::ops::Range<usize>, core::ops::Range<usize>)> {
    let (words, tail) = (bs / 4, bs % 4);
    let word = move |w: usize| (4 * w..4 * w + 4, 32 * w + 4 * r..32 * w + 4 * r + 4);
    (0..words).map(word).chain(core::iter::once((4 * words..bs, 32 * words + tail * r..32 * words + tail * (r + 1))))
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
    let bs = ty.type_size();
    let mut scratch = vec![0u8; ROWS * rb];
    for group in data.chunks_exact_mut(ROWS * rb) {
        scratch.copy_from_slice(group);
        for b in 0..rb / bs {
            let out = &mut group[b * ROWS * bs..(b + 1) * ROWS * bs];
            for r in 0..ROWS {
                let blk = &scratch[r * rb + b * bs..r * rb + (b + 1) * bs];
                for (from, to) in places(bs, r) {
                    out[to].copy_from_slice(&blk[from]);
                }
            }
        }
    }
    Ok(())
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
/// layout (row r at `r * rb`): the `places` of each row, eight whole words of
/// the eight rows at a time where the CPU has AVX2 (an 8×8 transpose in
/// registers: a prefill puts every tile back this way), the rest a word or
/// a byte at a time (`v`: this CPU's level).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn deinterleave_group(v: Verified, ty: GgmlType, rb: usize, group: &[u8], out: &mut [u8]) {
    let bs = ty.type_size();
    let words = bs / 4;
    assert!(group.len() >= ROWS * rb && out.len() >= ROWS * rb, "x8: a whole group");
    #[cfg(target_arch = "x86_64")]
    let simd = matches!(
        v.level(),
        crate::dispatch::SimdLevel::Avx2Fma | crate::dispatch::SimdLevel::Avx512Vnni | crate::dispatch::SimdLevel::Amx
    );
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    let wide = if simd { words / 8 * 8 } else { 0 };
    for b in 0..rb / bs {
        let src = &group[b * ROWS * bs..(b + 1) * ROWS * bs];
        #[cfg(target_arch = "x86_64")]
        for w in (0..wide).step_by(8) {
            // SAFETY: AVX2 is verified (`simd`); 256 bytes are read inside
            // `src`, and row r's 32 bytes are written at `r * rb + b * bs +
            // 4w`, inside its block (4w + 32 <= 4 * words <= bs) and so
            // inside `out` (checked above).
            unsafe { transpose_words(&src[32 * w..32 * w + 256], out.as_mut_ptr().add(b * bs + 4 * w), rb) };
        }
        for r in 0..ROWS {
            let blk = &mut out[r * rb + b * bs..r * rb + (b + 1) * bs];
            for (to, from) in places(bs, r).skip(wide) {
                blk[to].copy_from_slice(&src[from]);
            }
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
    let rb = check(ty, rows, cols, w.len())?;
    crate::qdot::check_acts(ty, rows, cols, acts, y.len(), "matmul_x8");
    let m = acts.m();
    if m == 0 || rows == 0 {
        return Ok(());
    }
    let v = Verified::active();
    let groups = rows / ROWS;
    let per = groups.div_ceil(threads.max(1)).max(1);
    // Each part: a run of groups and, for every activation row, its outputs.
    let mut outs: Vec<Vec<&mut [f32]>> = (0..groups.div_ceil(per)).map(|_| Vec::with_capacity(m)).collect();
    for yi in y.chunks_exact_mut(rows) {
        for (p, chunk) in yi.chunks_mut(per * ROWS).enumerate() {
            outs[p].push(chunk);
        }
    }
    let parts: Vec<(usize, Vec<&mut [f32]>)> = outs.into_iter().enumerate().map(|(p, o)| (p * per, o)).collect();
    #[cfg(target_arch = "x86_64")]
    if m <= GROUP_ROWS_MAX
        && matches!(v.level(), crate::dispatch::SimdLevel::Avx512Vnni | crate::dispatch::SimdLevel::Amx)
    {
        // Decode: each group meets each activation row in turn, in this
        // layout's kernels.
        let nb = rb / ty.type_size();
        crate::pool::run_parts(threads, parts, |(g0, mut out)| {
            for g in g0..g0 + out[0].len() / ROWS {
                // The group, and the rest of the matrix after it to prefetch from.
                let stream = &w[g * ROWS * rb..];
                for (i, o) in out.iter_mut().enumerate() {
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
                    o[(g - g0) * ROWS..(g - g0 + 1) * ROWS].copy_from_slice(&dots);
                }
            }
        });
        return Ok(());
    }
    // A prefill, or a CPU without this layout's kernels: a tile of rows at
    // a time back in the file's layout, for the ordinary kernels (panels
    // and AMX tiles reuse each weight byte for every activation row).
    let prepared = crate::qdot::PreparedActs::new(v, ty, acts);
    let tile = (crate::qdot::W_TILE_BYTES / (ROWS * rb)).max(1);
    crate::pool::run_parts(threads, parts, |(g0, mut out)| {
        let groups = out[0].len() / ROWS;
        let mut scratch = vec![0u8; tile.min(groups) * ROWS * rb];
        let mut g = g0;
        while g < g0 + groups {
            let n = tile.min(g0 + groups - g);
            let flat = &mut scratch[..n * ROWS * rb];
            for (k, dst) in flat.chunks_exact_mut(ROWS * rb).enumerate() {
                deinterleave_group(v, ty, rb, &w[(g + k) * ROWS * rb..(g + k + 1) * ROWS * rb], dst);
            }
            let (now, later): (Vec<&mut [f32]>, Vec<&mut [f32]>) =
                out.into_iter().map(|o| o.split_at_mut(n * ROWS)).unzip();
            crate::qdot::matmul_q_rows(v, ty, flat, rb, &prepared, now);
            out = later;
            g += n;
        }
    });
    Ok(())
}

/// The most activation rows that meet each interleaved group in turn
/// (decode, a few sequences at once); more go through [`matmul_x8`]'s
/// tiles in the file's layout.
#[cfg(target_arch = "x86_64")]
const GROUP_ROWS_MAX: usize = 4;
