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
//! at byte `32w + 4r` of the group's words. Bytes that are no whole word
//! of quants go row by row: the 32-element types' `d` (and Q4_1's `m`)
//! before the words, so that a block's eight `d` are one 16-byte load, and
//! Q6_K's `d` after them. Q8_0's quants are stored as `q + 128` (each byte
//! xored with 0x80), the unsigned operand `vpdpbusd` takes, and Q5_0's
//! `qh` words (its fifth bits, the group's first word) nibble-transposed:
//! word m holds nibble m of each row's `qh`, the byte mask of the vector
//! of elements 4m..4m + 4 of the eight rows. The bytes are the same in
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
//!   each group in turn in this layout's kernels, up to four at a time
//!   with each block unpacked once for them (`matmul_rest`);
//! - the panels (a prefill) unpack a group block straight into their
//!   vectors (this layout's words are their vectors): the 32-element types
//!   at both x86 levels, the K types too (`rows8::avx2::k_x8_unpacked`);
//!   where a level could not, the panels would put block b of each group
//!   back in the file's layout just before they unpack it, a few KiB in
//!   L1, so that the memory stream stays under their arithmetic; the AMX
//!   tiles put back a tile of rows at a time but for the 32-element types;
//! - where the CPU has no kernels for this layout (NEON, scalar), the row
//!   kernels take a tile of rows put back at a time: correct, and slow for
//!   decode (Q4_K 4 GB/s from L2 against 20 in the file's layout, at the
//!   AVX2 level before it had kernels here), so a loader stores matrices
//!   this way only where [`chosen`] says so.
//!
//! Measured with `examples/x8_bw` at 2 threads on the Xeon of stop 44
//! (AVX-512 VNNI level), against the file's layout, alternating: at 7168
//! columns, 30 MB (from L3), 16 rows Q4_K 5.1 against 5.5 GB/s and Q6_K
//! 5.9 against 6.5; 128 rows 1-3 % slower, 512 rows 0-1 %. At 2048
//! columns from memory, 2 to 6 rows 7-27 % faster than the file's layout
//! (2 rows Q4_K 25.6 against 22.2 GB/s, Q6_K 27.2 against 23.5); Q6_K with
//! 8 to 11 rows is where this layout costs: 8 rows 10.6 against 13.4 GB/s,
//! 11 rows 7.5 against 8.1 (the file layout's row kernels take eight
//! activation rows a pass). Since stop 48 the panels take Q6_K in this
//! layout from 8 rows at both levels, where they are ahead
//! (`panel::min_act_rows`, `panel_avx2::min_act_rows`).
//!
//! The engine stores the matrices of these types of a GGUF read into memory
//! this way where [`chosen`] (`GgufFile::interleave_x8`, models::load).
//!
//! Types ([`supports`]): Q2_K, Q4_K, Q5_K, Q6_K and IQ4_XS, and the 32-element
//! Q4_0, Q4_1, Q5_0, Q8_0 and IQ4_NL. Qwen2.5-0.5B's 896-column matrices,
//! whose rows are no multiple of 256, and DeepSeek-V2's expert downs of
//! 1408 columns are Q5_0 and Q8_0 in a Q4_K_M file (IQ4_NL in the IQ
//! mixes). `examples/x8_bw THREADS MB 896 TYPE`
//! on the Xeon of stop 45, the file's layout (`matmul_q_acts`) against
//! this one, GB/s: one core from L2 Q4_0 14.3 against 29.0, Q4_1 18.2
//! against 28.4, Q5_0 14.7 against 27.8, Q8_0 25.2 against 52.6 (without
//! the software prefetch, as on AMD: 32.3, 30.6, 30.7 and 63.3); two
//! threads from memory 23.6 against 32.3, 21.5 against 31.9, 24.4 against
//! 31.3, 32.9 against 36.5. The panels and the AMX tiles take these types
//! straight from this layout (its words are their vectors and tile rows),
//! without putting them back.
//! IQ4_XS is all words (each row's `d` and `scales_h` are word 0, its
//! `scales_l` word 1), and `rows8::iq4_xs_x8` multiplies its nibbles
//! through IQ4's table as below: from L2, one core, 7168 columns, without
//! prefetch, 12.4 against 27.6 GB/s (llama.cpp's `vec_dot`: 14.7); two
//! threads from memory, 2048 columns, 20.8 against 31.5. Q2_K is all words
//! too (the scales, the quants, then `d` and `dmin` as word 20), and
//! `rows8::q2_k_x8` reads each quant word once for its four groups: 12.2
//! against 20.6 GB/s from L2 at 7168 columns (llama.cpp's repacked
//! `gemv_q2_K_8x8`: 13.8), 19.7 against 26.9 from memory at two threads.
//! Q5_K is Q4_K's words with its 32 `qh` bytes (8 words) between the
//! scales and the quants; `rows8::q5_k_x8` is Q4_K's kernel with each
//! nibble's fifth bit shifted in from the `qh` word of the same bytes:
//! 19.8 against 34.5 GB/s from L2 at 7168 columns (llama.cpp's `vec_dot`:
//! 18.1), 28.0 against 30.5 from memory at two threads.
//! IQ4_NL (an IQ4_XS file's fallback where rows are no multiple of 256:
//! four fifths of Qwen2.5-0.5B's, V2-Lite's expert downs) is stored as
//! Q4_0 is, and its kernels look each nibble up in IQ4's table plus 128
//! (`iq::KVALUES_IQ4_U`), then multiply as Q8_0's: from L2, one core,
//! 2048 columns, without prefetch, 14.0 against 30.8 GB/s; llama.cpp's own
//! repacked kernel for it (`ggml_gemv_iq4_nl_8x8_q8_0`,
//! `scripts/llamacpp-vec-dot.c 1 2048 iq4_nl/8x8`) reads 21.5 on that core.
//! At the AVX2 level every type has kernels of its own too
//! (`rows8::avx2`): Q4_0, Q4_1 and Q5_0 (`legacy_x8`; one core from L2 at
//! 896 columns 12.4 against 25.9, 11.2 against 22.2 and 10.4 against 19.8
//! GB/s) and, from stop 47, the others, `vpmaddubsw` pairs added as i16 as
//! far as each type's range allows and widened by `vpmaddwd` against the
//! scale, the signed types (Q8_0, IQ4_NL, IQ4_XS) through `vpsignb`. One
//! core from L2, 7168 columns, without prefetch, file layout against this
//! one (llama.cpp's AVX2 build, the kernel it runs): Q4_K 18.5 against
//! 32.0 GB/s (20.3, its repacked gemv), Q6_K 24.3 against 30.1 (24.6), Q5_K
//! 18.4 against 27.8 (16.3), Q8_0 29.6 against 39.5 (29.5), IQ4_NL 12.3
//! against 20.7 (16.6, repacked gemv), IQ4_XS 12.1 against 20.1 (12.3-13.0),
//! Q2_K 11.7 against 17.5 (13.7). Q6_K against 4 to 11 activation rows was
//! where the layout cost there (8 rows from memory 9.2 against 7.5 GB/s:
//! its pairs are widened every two steps, for each row); since stop 48 the
//! AVX2 panels take it from 8 rows (`panel_avx2::min_act_rows`).
//! Results are the bits of the scalar reference (`vec_dot_q_ref`) of each
//! row, at every level: the kernels at the AVX-512 VNNI level are
//! `rows8::q4_k`'s, `q6_k`'s and `q5_0`'s arithmetic
//! (`rows8::legacy_x8`) and, for Q2_K and IQ4_XS, the reference's own
//! integers (`rows8::q2_k_x8`, `iq4_xs_x8`), at AVX2 the same integers
//! (`rows8::avx2`).

use crate::dispatch::Verified;
use crate::error::KernelError;
use crate::q8::QuantizedActs;
use crate::types::GgmlType;

/// Rows a group interleaves.
pub const ROWS: usize = 8;

/// Whether `ty` has an interleaved layout and kernel here.
pub fn supports(ty: GgmlType) -> bool {
    anatomy(ty).is_some()
}

/// How this layout moves a block of a type: `head` bytes stored row by row
/// before the words (the 32-element types' `d`, and Q4_1's `m`), `words`
/// 4-byte words stored transposed (the quants, and Q5_0's `qh` as its
/// first), `tail` bytes row by row after them (Q6_K's `d`), and `flip`
/// xored into every byte of the words (Q8_0's quants stored as `q + 128`,
/// the unsigned operand of `vpdpbusd`, so its VNNI kernel multiplies them as
/// they come). `qh_masks`: the first word of the eight rows (Q5_0's `qh`,
/// the fifth bits) is stored as eight byte masks, word m holding nibble m
/// of each row's `qh` (elements 4m..4m + 4) as its nibble r
/// ([`transpose_nibbles`]): the mask of a vector of four elements of each
/// row, loaded as it is.
#[derive(Clone, Copy)]
struct Anatomy {
    head: usize,
    words: usize,
    tail: usize,
    flip: u8,
    qh_masks: bool,
}

fn anatomy(ty: GgmlType) -> Option<Anatomy> {
    let (head, flip) = match ty {
        GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::IQ4_XS => (0, 0),
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL => (2, 0),
        GgmlType::Q4_1 => (4, 0),
        GgmlType::Q8_0 => (2, 0x80),
        _ => return None,
    };
    let bs = ty.type_size();
    let qh_masks = ty == GgmlType::Q5_0;
    Some(Anatomy { head, words: (bs - head) / 4, tail: (bs - head) % 4, flip, qh_masks })
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
    in_place(ty, rows, cols, data, Way::ToX8)
}

/// The inverse of [`interleave_in_place`]: `data` back in the file's layout.
pub fn deinterleave_in_place(ty: GgmlType, rows: usize, cols: usize, data: &mut [u8]) -> Result<(), KernelError> {
    in_place(ty, rows, cols, data, Way::ToFile)
}

fn in_place(ty: GgmlType, rows: usize, cols: usize, data: &mut [u8], way: Way) -> Result<(), KernelError> {
    let rb = check(ty, rows, cols, data.len())?;
    let v = Verified::active();
    let mut scratch = vec![0u8; ROWS * rb];
    for group in data.chunks_exact_mut(ROWS * rb) {
        scratch.copy_from_slice(group);
        move_group(v, ty, rb, &scratch, group, way);
    }
    Ok(())
}

/// Which way [`move_group`] moves eight rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the file's layout (row r at `r * rb`) into one interleaved group.
    ToX8,
    /// From one interleaved group back into the file's layout.
    ToFile,
}

/// Eight rows of `rb` bytes from `src` into `dst`, `way` round: word w of
/// row r's block b (bytes `r * rb + b * bs + 4w..`) is word w of the
/// group's block b at byte `32w + 4r` (`b * 8 * bs` on), and the bytes past
/// a block's last whole word (Q6_K's `d`) follow row by row. Where the CPU
/// has AVX2 (`v`: this CPU's level) eight whole words of the eight rows go
/// at a time through an 8×8 transpose in registers (its own inverse, so
/// both ways are the same code), four of the words left through a 4×8 one
/// (Q4_K and Q6_K leave four, Q2_K five) and the rest word by word (IQ4_XS
/// leaves two): a prefill puts every panel of rows back this way, so
/// it must cost little beside the panel's unpacking, and a load rewrites
/// every matrix this way.
fn move_group(v: Verified, ty: GgmlType, rb: usize, src: &[u8], dst: &mut [u8], way: Way) {
    let bs = ty.type_size();
    let an = anatomy(ty).expect("x8: a type of this layout");
    assert!(src.len() >= ROWS * rb && dst.len() >= ROWS * rb && rb.is_multiple_of(bs), "x8: a whole group");
    #[cfg(target_arch = "x86_64")]
    let wide = matches!(
        v.level(),
        crate::dispatch::SimdLevel::Avx2Fma | crate::dispatch::SimdLevel::Avx512Vnni | crate::dispatch::SimdLevel::Amx
    );
    #[cfg(not(target_arch = "x86_64"))]
    let wide = {
        let _ = v;
        false
    };
    if wide {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is verified; the lengths are checked above.
        unsafe {
            match way {
                Way::ToX8 => move_group_avx2::<true>(an, bs, rb, src, dst),
                Way::ToFile => move_group_avx2::<false>(an, bs, rb, src, dst),
            }
        }
    } else {
        for b in 0..rb / bs {
            for r in 0..ROWS {
                move_head(an, bs, rb, b, r, src, dst, way);
                move_words(an, bs, rb, b, r, 0, src, dst, way);
            }
        }
    }
    if an.qh_masks {
        // The eight rows' `qh` words, now moved, wherever `dst` holds them.
        for b in 0..rb / bs {
            let at: [usize; ROWS] = core::array::from_fn(|r| match way {
                Way::ToX8 => b * ROWS * bs + ROWS * an.head + 4 * r,
                Way::ToFile => r * rb + b * bs + an.head,
            });
            let mut qh = at.map(|i| u32::from_le_bytes(dst[i..i + 4].try_into().expect("four bytes")));
            transpose_nibbles(&mut qh);
            for (i, w) in at.into_iter().zip(qh) {
                dst[i..i + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
    }
}

/// The 8×8 transpose of the nibbles of `x` (nibble c of `x[r]` becomes
/// nibble r of `x[c]`), its own inverse: the off-diagonal 4×4 blocks
/// swapped, then the 2×2 blocks within each, then single nibbles.
fn transpose_nibbles(x: &mut [u32; ROWS]) {
    for (step, mask, pairs) in
        [(16, 0x0000_FFFF, [0, 1, 2, 3]), (8, 0x00FF_00FF, [0, 1, 4, 5]), (4, 0x0F0F_0F0F, [0, 2, 4, 6])]
    {
        let partner = step / 4;
        for r in pairs {
            let t = ((x[r] >> step) ^ x[r + partner]) & mask;
            x[r] ^= t << step;
            x[r + partner] ^= t;
        }
    }
}

/// Row `r`'s head bytes of block `b`, `way` round (see [`move_group`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn move_head(an: Anatomy, bs: usize, rb: usize, b: usize, r: usize, src: &[u8], dst: &mut [u8], way: Way) {
    let (file, x8) = (r * rb + b * bs, b * ROWS * bs + an.head * r);
    let (at_s, at_d) = match way {
        Way::ToX8 => (file, x8),
        Way::ToFile => (x8, file),
    };
    // Lengths the compiler knows, as in `move_words`.
    match an.head {
        0 => {}
        2 => dst[at_d..at_d + 2].copy_from_slice(&src[at_s..at_s + 2]),
        4 => dst[at_d..at_d + 4].copy_from_slice(&src[at_s..at_s + 4]),
        n => dst[at_d..at_d + n].copy_from_slice(&src[at_s..at_s + n]),
    }
}

/// Row `r`'s words `from..` of block `b` and its tail, `way` round (see
/// [`move_group`]), in copies of a length the compiler knows (a range of a
/// length it did not know was a `memcpy` call a word, which held a
/// prefill's tiles to 5-7 GB/s).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn move_words(
    an: Anatomy,
    bs: usize,
    rb: usize,
    b: usize,
    r: usize,
    from: usize,
    src: &[u8],
    dst: &mut [u8],
    way: Way,
) {
    let (words, tail) = (an.words, an.tail);
    let (file, x8) = (r * rb + b * bs + an.head, b * ROWS * bs + ROWS * an.head);
    for w in from..words {
        let (at_s, at_d) = match way {
            Way::ToX8 => (file + 4 * w, x8 + 32 * w + 4 * r),
            Way::ToFile => (x8 + 32 * w + 4 * r, file + 4 * w),
        };
        let word: [u8; 4] = src[at_s..at_s + 4].try_into().expect("four bytes");
        dst[at_d..at_d + 4].copy_from_slice(&word.map(|x| x ^ an.flip));
    }
    for t in 0..tail {
        let (at_s, at_d) = match way {
            Way::ToX8 => (file + 4 * words + t, x8 + 32 * words + tail * r + t),
            Way::ToFile => (x8 + 32 * words + tail * r + t, file + 4 * words + t),
        };
        dst[at_d] = src[at_s];
    }
}

/// [`move_group`] where the CPU has AVX2, one way compiled each
/// (`TO_X8`: [`Way::ToX8`]).
///
/// # Safety
/// The CPU must have AVX2; `src` and `dst` hold eight rows of `rb` bytes,
/// whole blocks of `bs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn move_group_avx2<const TO_X8: bool>(an: Anatomy, bs: usize, rb: usize, src: &[u8], dst: &mut [u8]) {
    use core::arch::x86_64::*;
    let way = if TO_X8 { Way::ToX8 } else { Way::ToFile };
    let words = an.words;
    let wide = words / 8 * 8;
    let flip = _mm256_set1_epi8(an.flip as i8);
    // 32 bytes at `at` of `src`, and stored at `at` of `dst`.
    let load = |at: usize| {
        // SAFETY: 32 bytes inside `src`; loadu is unaligned.
        unsafe { _mm256_loadu_si256(src[at..at + 32].as_ptr().cast()) }
    };
    let store = |dst: &mut [u8], at: usize, v: __m256i| {
        // SAFETY: 32 bytes inside `dst`.
        unsafe { _mm256_storeu_si256(dst[at..at + 32].as_mut_ptr().cast(), v) }
    };
    for b in 0..rb / bs {
        // Word w of row r in the file's layout, and words w.. of the
        // eight rows in the group's block.
        let file = |r: usize, w: usize| r * rb + b * bs + an.head + 4 * w;
        let x8 = |w: usize| b * ROWS * bs + ROWS * an.head + 32 * w;
        for w in (0..wide).step_by(8) {
            // Eight words of eight rows: a vector a row one way, a vector
            // a word the other.
            let (from, to): ([usize; 8], [usize; 8]) = match way {
                Way::ToX8 => (core::array::from_fn(|r| file(r, w)), core::array::from_fn(|k| x8(w + k))),
                Way::ToFile => (core::array::from_fn(|k| x8(w + k)), core::array::from_fn(|r| file(r, w))),
            };
            let t = crate::avx2_q8::transpose_8x8_i32(from.map(load));
            for (at, v) in to.into_iter().zip(t) {
                store(dst, at, _mm256_xor_si256(v, flip));
            }
        }
        let mut from = wide;
        if words - wide >= 4 {
            // The last four words of the eight rows: rows r and r + 4 in
            // the halves of one vector (r < 4) against word wide + k of
            // the eight rows in vector k, a 4×4 transpose within each
            // 128-bit half either way.
            let half = |at: usize| {
                // SAFETY: 16 bytes inside `src`.
                unsafe { _mm_loadu_si128(src[at..at + 16].as_ptr().cast()) }
            };
            let x: [__m256i; 4] = match way {
                Way::ToX8 => core::array::from_fn(|r| {
                    _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(half(file(r, wide))), half(file(r + 4, wide)))
                }),
                Way::ToFile => core::array::from_fn(|k| load(x8(wide + k))),
            };
            let t0 = _mm256_unpacklo_epi32(x[0], x[1]);
            let t1 = _mm256_unpackhi_epi32(x[0], x[1]);
            let t2 = _mm256_unpacklo_epi32(x[2], x[3]);
            let t3 = _mm256_unpackhi_epi32(x[2], x[3]);
            let t = [
                _mm256_unpacklo_epi64(t0, t2),
                _mm256_unpackhi_epi64(t0, t2),
                _mm256_unpacklo_epi64(t1, t3),
                _mm256_unpackhi_epi64(t1, t3),
            ]
            .map(|v| _mm256_xor_si256(v, flip));
            for (k, v) in t.into_iter().enumerate() {
                match way {
                    Way::ToX8 => store(dst, x8(wide + k), v),
                    Way::ToFile => {
                        for (row, h) in [(k, _mm256_castsi256_si128(v)), (k + 4, _mm256_extracti128_si256::<1>(v))] {
                            let at = file(row, wide);
                            // SAFETY: 16 bytes inside `dst`.
                            unsafe { _mm_storeu_si128(dst[at..at + 16].as_mut_ptr().cast(), h) };
                        }
                    }
                }
            }
            from = wide + 4;
        }
        for r in 0..ROWS {
            move_head(an, bs, rb, b, r, src, dst, way);
            move_words(an, bs, rb, b, r, from, src, dst, way);
        }
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

/// Whether a loader should store matrices of `ty` that fit ([`fits`]) in
/// this layout: where this CPU has the kernels that make it pay for decode
/// ([`has_kernels`] at the level `WHALE_SIMD` leaves; elsewhere a matrix
/// in this layout is only correct, not fast), unless `WHALE_X8` says
/// `0`/`off` (or `1`/`on`: at any level, to test the other levels' path).
pub fn chosen(ty: GgmlType) -> bool {
    static SETTING: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let setting = *SETTING.get_or_init(|| crate::matmul::on_off(std::env::var("WHALE_X8").ok().as_deref()));
    supports(ty) && setting.unwrap_or_else(|| has_kernels(Verified::active(), ty))
}

/// Whether `v`'s level has this layout's own decode kernels for `ty`:
/// every type of the layout at AVX-512 VNNI, or AMX above it
/// (`rows8::q2_k_x8`, `q4_k_x8`, `q5_k_x8`, `q6_k_x8`, `iq4_xs_x8`,
/// `legacy_x8`), and at AVX2 (`rows8::avx2`'s of the same names); none
/// elsewhere.
fn has_kernels(v: Verified, ty: GgmlType) -> bool {
    use crate::dispatch::SimdLevel as L;
    cfg!(target_arch = "x86_64") && supports(ty) && matches!(v.level(), L::Avx512Vnni | L::Amx | L::Avx2Fma)
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
    let rb = ty.row_bytes(cols).ok_or(KernelError::NotBlockMultiple { ty, elements: cols })?;
    let rows = w.len() / rb.max(1);
    check(ty, rows, cols, w.len())?;
    if r >= rows || out.len() != rb {
        return Err(KernelError::BadLength { ty, elements: cols, bytes: out.len() });
    }
    let g = r / ROWS;
    let mut scratch = vec![0u8; ROWS * rb];
    move_group(Verified::active(), ty, rb, &w[g * ROWS * rb..(g + 1) * ROWS * rb], &mut scratch, Way::ToFile);
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
    let prepared = crate::qdot::PreparedActs::new(v, ty, Layout::X8, acts);
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
        move_group(v, ty, rb, group, dst, Way::ToFile);
    }
}

/// Activation rows `i..i + J` against group `g` (the first bytes of
/// `stream`, `nb` blocks a row) in this layout's kernels, which unpack
/// each block once for the `J` rows, into `out`; returns `J`.
///
/// # Safety
/// `has_kernels(v, ty)` for a `Verified` of this CPU; `stream` holds the
/// group's eight whole rows of `ty` blocks, and the activation rows have
/// as many columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_rows<const J: usize>(
    v: Verified,
    ty: GgmlType,
    stream: &[u8],
    nb: usize,
    acts: &crate::qdot::PreparedActs<'_>,
    i: usize,
    out: &mut [&mut [f32]],
    g: usize,
) -> usize {
    let a = core::array::from_fn(|j| acts.row(i + j));
    // SAFETY: the caller's contract: the level's kernels, for a type it has.
    let dots = unsafe {
        match (v.level(), ty) {
            (crate::dispatch::SimdLevel::Avx2Fma, GgmlType::Q4_K) => crate::rows8::avx2::q4_k_x8::<J>(stream, nb, a),
            (crate::dispatch::SimdLevel::Avx2Fma, GgmlType::Q5_K) => crate::rows8::avx2::q5_k_x8::<J>(stream, nb, a),
            (crate::dispatch::SimdLevel::Avx2Fma, GgmlType::Q6_K) => crate::rows8::avx2::q6_k_x8::<J>(stream, nb, a),
            (crate::dispatch::SimdLevel::Avx2Fma, GgmlType::Q2_K) => crate::rows8::avx2::q2_k_x8::<J>(stream, nb, a),
            (crate::dispatch::SimdLevel::Avx2Fma, GgmlType::IQ4_XS) => {
                crate::rows8::avx2::iq4_xs_x8::<J>(stream, nb, a)
            }
            (crate::dispatch::SimdLevel::Avx2Fma, _) => crate::rows8::avx2::legacy_x8::<J>(ty, stream, nb, a),
            (_, GgmlType::Q4_K) => crate::rows8::q4_k_x8::<J>(stream, nb, a),
            (_, GgmlType::Q6_K) => crate::rows8::q6_k_x8::<J>(stream, nb, a),
            (_, GgmlType::IQ4_XS) => crate::rows8::iq4_xs_x8::<J>(stream, nb, a),
            (_, GgmlType::Q2_K) => crate::rows8::q2_k_x8::<J>(stream, nb, a),
            (_, GgmlType::Q5_K) => crate::rows8::q5_k_x8::<J>(stream, nb, a),
            _ => crate::rows8::legacy_x8::<J>(ty, stream, nb, a),
        }
    };
    for (o, d) in out[i..i + J].iter_mut().zip(dots) {
        o[g * ROWS..(g + 1) * ROWS].copy_from_slice(&d);
    }
    J
}

/// The rows of `acts` from `acts.tiled()` on against the interleaved rows
/// `w` (whole groups, `rb` bytes a row), into `out` (one slice a row of
/// `acts`, one value a weight row): what `qdot::matmul_q_rows` leaves
/// where neither panels nor AMX tiles take a product's rows (decode, and
/// a few rows at once).
///
/// Where the level has this layout's kernels for the type ([`has_kernels`]:
/// all at AVX-512 VNNI and at AVX2) the activation rows meet
/// each group in turn, four (or two, or one) at a time, in those kernels,
/// which unpack each block once for them (a pass per activation row had
/// Q6_K at 4 rows 13.5 GB/s from memory against 19.1 in the file's layout;
/// now 19.2). Elsewhere (a layout `WHALE_X8` forced) the
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
    if has_kernels(v, ty) {
        let nb = rb / ty.type_size();
        for g in 0..groups {
            // The group, and the rest of the share after it to prefetch from.
            let stream = &w[g * ROWS * rb..];
            let mut i = first;
            while i < out.len() {
                // SAFETY: the level is verified; `stream` starts with
                // eight whole rows of `ty` blocks (`check`) and the
                // activation rows have as many columns (`check_acts`).
                i += unsafe {
                    match out.len() - i {
                        1 => group_rows::<1>(v, ty, stream, nb, acts, i, &mut out, g),
                        2 | 3 => group_rows::<2>(v, ty, stream, nb, acts, i, &mut out, g),
                        _ => group_rows::<4>(v, ty, stream, nb, acts, i, &mut out, g),
                    }
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nibble_transpose_moves_nibble_c_of_row_r_to_nibble_r_of_row_c() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100 {
            let x: [u32; ROWS] = core::array::from_fn(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u32
            });
            let mut t = x;
            transpose_nibbles(&mut t);
            for (r, xr) in x.iter().enumerate() {
                for (c, tc) in t.iter().enumerate() {
                    assert_eq!((xr >> (4 * c)) & 0xF, (tc >> (4 * r)) & 0xF, "row {r} nibble {c}");
                }
            }
            transpose_nibbles(&mut t);
            assert_eq!(t, x, "its own inverse");
        }
    }
}
