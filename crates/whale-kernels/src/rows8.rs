//! Decode products eight weight rows at a time (x86-64: at the AVX-512 VNNI
//! level Q4_K, Q4_1, Q5_0, and Q6_K rows of 10240 columns or more; at the
//! AVX2 level Q4_1 and Q5_0, see the `avx2` module at the end), and the
//! kernels of the interleaved layout (`crate::x8`) at both levels. On Intel
//! CPUs only Q4_1 and short rows come here: longer rows of the others read
//! faster from memory one row at a time there ([`chosen`]).
//!
//! A one-row K-quant dot (`avx2_q8::vec_dot_n` with one activation row)
//! spends most of its instructions on work that does not depend on the
//! activation: unpacking each block's scales (scalar bit work), broadcasting
//! a scale to every pair of bytes, two multiplies per 32 quants
//! (`vpmaddubsw`, then `vpdpwssd` by the scales) and two horizontal sums per
//! eight blocks. On Zen 4 that held a core to 20 GB/s of Q4_K from L2, and
//! a decode at 2 threads below the read speed.
//!
//! Here eight consecutive rows of a matrix share one pass over the
//! activation row, with lane r of every vector holding row r:
//!
//! * each 32-byte piece of the eight rows' quants is transposed in registers
//!   (an 8×8 transpose of 4-byte words), so one `vpdpbusd` multiplies 4
//!   quants of each of the eight rows by one broadcast 4-byte group of the
//!   activation: one multiply per 32 quants, and a sub-block's sums are
//!   already per row;
//! * a sub-block's scale is then one i32 multiply for the eight rows, and the
//!   scale and min bytes of the eight blocks are unpacked together (the
//!   blocks' first 16 bytes transposed to words: `d`/`dmin`, then the three
//!   words of packed 6-bit scales and mins);
//! * while a group is multiplied, the next group's bytes are prefetched
//!   into L2, because eight rows read at once are eight short streams that
//!   the hardware prefetcher does not follow (see `qdot::GroupJob`);
//! * Q6_K's offset (`u = q + 32`) starts each group's sum at `-32·Σy` of the
//!   group instead of a correction afterwards.
//!
//! Measured on Zen 4 (`examples/decode_bw THREADS MB COLS`): Q4_K one core
//! from L2 26-29 GB/s, from 20 one row at a time; two threads from memory
//! 37, from 31-33. Q6_K takes three transposes per 128 weights (the low
//! nibbles, their second half and the high bits), and one core from L2
//! ran 26-27 GB/s against 30 one row at a time, so short Q6_K rows stay
//! one at a time. Long rows are another matter: once the activation row no
//! longer stays in L1 beside the weight stream (18432 columns: 19.7 KB of
//! Q8_K), the one-row kernels re-read it for every row and fall to 10-11
//! GB/s a core from memory, where eight rows a call read it once for
//! eight: Q6_K 18.3 against 10.3 at one thread, 33.3 against 20.2 at two
//! (V3's dense `ffn_down`, 18432 columns), level at about 10240 columns
//! (`Q6_K_MIN_COLS`). Q5_0 (Qwen2.5's 896-column matrices, DeepSeek-V2's
//! expert downs) one core from L2: 16.4 GB/s against 12.2 at 896 columns,
//! 17.1 against 13.7 at 1408, 18 against 16 at 4864; two threads from
//! memory 25 against 23.5, 28.3 against 25.7, level at 4864. Q4_1
//! (SmolLM2's 576-column rows): 15.1 against 8.2-9.4 from L2, 24 against
//! 18.4 at two threads from memory.
//!
//! llama.cpp repacks Q4_K rows at load into an interleaved layout for the
//! same reason; here the transpose happens in registers, so the weights stay
//! the file's mapped bytes, which prefill's panels read as well.
//!
//! Bits: the integer sums are the reference's exact integers, and the f32
//! step is `avx2_q8::k_group_term` lane for lane (row r's block term in lane
//! r); block b's terms go into the accumulator `b % 8`, whose lane r is
//! lane `b % 8` of the one-row kernels' accumulator of row r, and the
//! eight accumulators are summed in `avx2::hsum`'s order, across the
//! vectors ([`hsum_across`]). So every result equals `vec_dot_q` of its row
//! bit for bit (`tests/qdot.rs` compares matrices of more than eight rows
//! with the scalar reference, at the extremes of the integer sums too).

use core::arch::x86_64::*;

use crate::avx2::{hsum_across, store8};
use crate::avx2_q8::{k_group_term, transpose_8x8_i32};
use crate::blocks::{BlockQ2_K, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_K, BlockQ6_K};
use crate::dispatch::{SimdLevel, Verified};
use crate::q8::ActRow;
use crate::types::{GgmlType, QK_K};

/// Rows a call takes.
pub(crate) const ROWS: usize = 8;

/// `body` once for each literal in the list with `$k` bound to it, so
/// that indexes into arrays of vectors are constants and the arrays stay in
/// registers (a loop the compiler keeps rolled puts them on the stack).
macro_rules! unroll {
    ($k:ident in [$($n:literal),*] $body:block) => {
        $({
            let $k: usize = $n;
            $body
        })*
    };
}

/// Whether rows of `wty` with `cols` elements go through this module at
/// `v`'s level: Q4_K, Q4_1 and Q5_0 always; Q6_K from `Q6_K_MIN_COLS`
/// (see the module docs).
pub(crate) fn supports(v: Verified, wty: GgmlType, cols: usize) -> bool {
    match v.level() {
        SimdLevel::Avx512Vnni | SimdLevel::Amx => match wty {
            GgmlType::Q4_K | GgmlType::Q4_1 | GgmlType::Q5_0 => true,
            GgmlType::Q6_K => cols >= Q6_K_MIN_COLS,
            _ => false,
        },
        SimdLevel::Avx2Fma => matches!(wty, GgmlType::Q4_1 | GgmlType::Q5_0),
        _ => false,
    }
}

/// Whether decode sends rows of `wty` with `cols` elements here at `v`'s
/// level: where [`supports`] holds, on the CPUs that run without software
/// prefetch (AMD's), and for Q4_1 everywhere. Eight rows a call are eight
/// short streams; on Zen 4, which follows them with the next group
/// prefetched, they beat the one-row kernels from memory (the module
/// docs). On the Xeon with AMX of stop 35,
/// where the one-row kernels prefetch their one stream, those read faster
/// from memory, whatever the distance of `rows8`'s prefetch (2-64 KiB) and
/// at either level, though slower from L2. `decode_bw 2 400 COLS TYPE`,
/// alternating, GB/s, eight rows -> one: Q4_K 2048 columns 15.2-16.4 ->
/// 19.1-20.2, 7168 15.5-16.4 -> 16.8-18.4; Q5_0 896 13.5-15.7 -> 17.7-18.4,
/// 1408 16.1-16.4 -> 17.4-17.7; Q6_K 18432 16.4 -> 17.3-17.9; at AVX2 Q5_0
/// 896 12.9-13.1 -> 15.4-15.9. Decode of the V2-Lite-shaped file, 2
/// threads, three alternations: 32.5-33.9 -> 35.3-37.9 tok/s. Q4_1 at 576
/// columns measured either way in `decode_bw`, but SmolLM2's decode fell
/// from 180-206 to 162-180 tok/s one row at a time, so Q4_1 keeps `rows8`.
/// Short rows ([`SHORT_COLS`]) come here on Intel too.
pub(crate) fn chosen(v: Verified, wty: GgmlType, cols: usize) -> bool {
    let short = cols <= if wty.block_size() == QK_K { SHORT_COLS_K } else { SHORT_COLS };
    (wty == GgmlType::Q4_1 || short || !crate::matmul::software_prefetch()) && supports(v, wty, cols)
}

/// The longest rows of a 32-element type that decode takes eight at a
/// time on every CPU; [`SHORT_COLS_K`] for the 256-element K types. On
/// short rows the one-row kernels' fixed cost per row (their horizontal
/// sums, the partial group of eight blocks, the call) outweighs how they
/// stream: MLA's per-head up-projections are such rows (DeepSeek-V2/V3
/// `attn_k_b`: 128 columns, Q5_0 in the Q4_K_M files; `attn_v_b`: 512
/// columns, Q4_K). On the 2-core Intel Xeon with AMX of stop 37
/// (`decode_bw 2 MB COLS TYPE`, GB/s, one row at a time -> eight):
/// Q5_0 128 columns 10.0-10.2 -> 15.6-17.0 from memory (100 MB) and
/// 9.5-10.3 -> 21.0-21.8 from L2 (2 MB); Q4_K 512 columns 15.6-15.8 ->
/// 22.3-23.3 and 16.2-16.4 -> 40.7-41.2. Level at Q5_0 256 columns
/// (18.2-18.3 -> 17.4-18.1) and Q4_K 1024 (19.5-20.4 -> 19.6-19.7);
/// one at a time faster from Q5_0 512 (22.2-22.3 against 18.4-19.3)
/// and Q4_K 1536 (22.9-23.0 against 17.6-19.1) on.
pub(crate) const SHORT_COLS: usize = 256;
/// See [`SHORT_COLS`].
pub(crate) const SHORT_COLS_K: usize = 512;

/// The shortest Q6_K rows taken eight at a time: at 9216 columns and fewer
/// the one-row kernel was as fast or faster, from 10752 on this one, by
/// 1.7× at 18432 (`examples/decode_bw 2 200 COLS` on Zen 4).
pub(crate) const Q6_K_MIN_COLS: usize = 10240;

/// Eight rows of `wty` (`w`: `8 * rb` bytes, row r at `r * rb`) against
/// one activation row of `vec_dot_type(wty)`; `ahead` (the next rows, or
/// empty) is prefetched into L2 over the call, a hint only.
///
/// # Safety
/// `supports(v, wty, cols)` for a `Verified` of this CPU; `rb` is a whole
/// number of `wty` blocks and `a` has as many columns as a row has
/// elements.
pub(crate) unsafe fn dot(v: Verified, wty: GgmlType, w: &[u8], rb: usize, a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
    // SAFETY (every arm): the caller's contract.
    unsafe {
        if v.level() == SimdLevel::Avx2Fma {
            return match wty {
                GgmlType::Q4_1 => avx2::q4_1(blocks(w, rb), a, ahead),
                GgmlType::Q5_0 => avx2::q5_0(blocks(w, rb), a, ahead),
                t => unreachable!("rows8::dot: {t} is not a type of this module at the AVX2 level"),
            };
        }
        match wty {
            GgmlType::Q4_K => q4_k(blocks(w, rb), a, ahead),
            GgmlType::Q4_1 => q4_1(blocks(w, rb), a, ahead),
            GgmlType::Q5_0 => q5_0(blocks(w, rb), a, ahead),
            GgmlType::Q6_K => q6_k(blocks(w, rb), a, ahead),
            t => unreachable!("rows8::dot: {t} is not a type of this module"),
        }
    }
}

/// The eight rows of `w` (`rb` bytes each) as blocks.
fn blocks<B: bytemuck::Pod>(w: &[u8], rb: usize) -> [&[B]; ROWS] {
    core::array::from_fn(|r| bytemuck::cast_slice(&w[r * rb..(r + 1) * rb]))
}

/// Eight rows of blocks `B` through `term(rows, b)` (the eight rows' terms
/// of block `b`, lane r = row r), accumulated as the one-row kernels do.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn rows_of<B>(rows: &[&[B]; ROWS], ahead: &[u8], term: impl Fn(&[&B; ROWS], usize) -> __m256) -> [f32; ROWS] {
    rows_of_min::<B, false>(rows, ahead, |blk, b| (term(blk, b), _mm256_setzero_ps()))
}

/// [`rows_of`] with a second term per block (`MIN`: the types with mins
/// in 32-element blocks, whose `m·Σy` terms the one-row kernels sum in
/// lanes of their own, added to the others' sum at the end).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn rows_of_min<B, const MIN: bool>(
    rows: &[&[B]; ROWS],
    ahead: &[u8],
    term: impl Fn(&[&B; ROWS], usize) -> (__m256, __m256),
) -> [f32; ROWS] {
    let nb = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == nb), "rows8: rows of different lengths");
    blocks_of::<MIN>(nb, ahead, |b| term(&core::array::from_fn(|r| &rows[r][b]), b))
}

/// The loop of [`rows_of_min`] over `nb` blocks, whatever holds them:
/// `term(b)` gives block `b`'s terms of the eight rows (lane r = row r);
/// `ahead` is prefetched into L2 a slice a block. Block b goes into the
/// accumulator `b % 8`, whose lane r is lane `b % 8` of the one-row
/// kernels' accumulator of row r ([`hsum_across`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn blocks_of<const MIN: bool>(nb: usize, ahead: &[u8], term: impl Fn(usize) -> (__m256, __m256)) -> [f32; ROWS] {
    // The bytes to prefetch while each block is multiplied.
    let step = ahead.len().div_ceil(nb.max(1)).next_multiple_of(64);
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut accm = [_mm256_setzero_ps(); 8];
    // The lanes past the end of a row are left out: the one-row kernels'
    // +0 there leaves their sums as they are. (A loop, not unrolled, as
    // in `x8_blocks`.)
    for b in 0..nb {
        let mut p = b * step;
        while p < ((b + 1) * step).min(ahead.len()) {
            // SAFETY: `p` is inside `ahead`; a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(p).cast()) };
            p += 64;
        }
        let (t, m) = term(b);
        acc[b % 8] = _mm256_add_ps(acc[b % 8], t);
        if MIN {
            accm[b % 8] = _mm256_add_ps(accm[b % 8], m);
        }
    }
    let sums = if MIN { _mm256_add_ps(hsum_across(acc), hsum_across(accm)) } else { hsum_across(acc) };
    store8(sums)
}

/// `[w0 w1 w2 w3]` words of 16 bytes at `p` of rows r (low half) and r + 4
/// (high half) for r in 0..4, transposed: result t holds word t, lane r = row r.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn words4(p: [*const u8; ROWS]) -> [__m256i; 4] {
    // SAFETY: the caller passes pointers to at least 16 readable bytes.
    let x: [__m256i; 4] = core::array::from_fn(|r| unsafe {
        _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(p[r].cast())),
            _mm_loadu_si128(p[r + 4].cast()),
        )
    });
    let t0 = _mm256_unpacklo_epi32(x[0], x[1]);
    let t1 = _mm256_unpackhi_epi32(x[0], x[1]);
    let t2 = _mm256_unpacklo_epi32(x[2], x[3]);
    let t3 = _mm256_unpackhi_epi32(x[2], x[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// 32 bytes at `p[r]` of each row, transposed: result k holds bytes
/// 4k..4k + 4 of each row, lane r = row r.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bytes32(p: [*const u8; ROWS]) -> [__m256i; 8] {
    // SAFETY: the caller passes pointers to at least 32 readable bytes.
    transpose_8x8_i32(core::array::from_fn(|r| unsafe { _mm256_loadu_si256(p[r].cast()) }))
}

/// Activation bytes `y[at..at + 4]` in every lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bcast4<const L: usize>(y: &[i8; L], at: usize) -> __m256i {
    _mm256_set1_epi32(i32::from_le_bytes(bytemuck::cast([y[at], y[at + 1], y[at + 2], y[at + 3]])))
}

/// `vpdpbusd` of `acc` by `u` and the four activations at `y`'s start
/// broadcast to every lane, their load folded into the instruction
/// (`{1to8}`) by hand.
///
/// Through the intrinsics the compiler may hoist a block's broadcasts
/// ahead of their products, all of them, and spill them to the stack:
/// the AVX-512 Q6_K kernel compiled that way after any small change to
/// its code (98 stack moves and 56 `vbroadcastss` in its block, against
/// none), and ran 24-28 against 30-32 GB/s from L2. Here each load is
/// fixed inside its product. On the 2-core Xeon of stop 56,
/// `x8_bw 1 1 2048 TYPE` (one core, from L2) and `x8_bw 2 1000 2048 TYPE`
/// (two threads, 1000 MB from memory), GB/s, alternating: Q6_K 29.1-32.8
/// → 34.7-37.6 and 27.9-29.5 → 32.7-33.3; Q5_K 25.5-27.3 → 29.8-32.6;
/// IQ4_XS 23.2-25.0 → 25.1-26.6. Not for Q4_K (33.3-35.4 → 30.5-31.0
/// from L2, level from memory), Q2_K or the 32-element types, whose
/// compiled blocks were better as the compiler laid them out
/// ([`dpbusd_y`]; `docs/speed-log.md`, stop 56).
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn dpbusd_at(acc: __m256i, u: __m256i, y: &[i8]) -> __m256i {
    assert!(y.len() >= 4);
    let mut acc = acc;
    // SAFETY: AVX-512 VNNI and VL (the callers'); reads y[0..4].
    unsafe {
        core::arch::asm!(
            "vpdpbusd {acc:y}, {u:y}, dword ptr [{y}]{{1to8}}",
            acc = inout(zmm_reg) acc,
            u = in(zmm_reg) u,
            y = in(reg) y.as_ptr(),
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    acc
}

/// `vpdpbusd` of `acc` by `u` and `y[at..at + 4]` in every lane: through
/// [`dpbusd_at`] where `PINNED`, else through the intrinsics (the kernels
/// that share a term but not its best code: Q5_K pinned, Q4_K not).
#[inline(always)]
unsafe fn dpbusd_y<const PINNED: bool, const L: usize>(acc: __m256i, u: __m256i, y: &[i8; L], at: usize) -> __m256i {
    // SAFETY: AVX-512 VNNI and VL (the callers').
    unsafe {
        if PINNED {
            dpbusd_at(acc, u, &y[at..])
        } else {
            _mm256_dpbusd_epi32(acc, u, bcast4(y, at))
        }
    }
}

/// A `vpshufb` control with `ctl` (byte indices of a word, 0x80 for zero)
/// for every 4-byte lane, the indices moved to that lane's word (`vpshufb`
/// indexes bytes within each 128-bit half).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn word_control(ctl: [u8; 4]) -> __m256i {
    let at = |l: u8| i32::from_le_bytes(ctl.map(|c| if c & 0x80 != 0 { c } else { c + 4 * l }));
    _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(0), at(1), at(2), at(3))
}

/// Byte `j` (0..4) of each lane's word, zero-extended to i32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn byte_of(v: __m256i, j: u8) -> __m256i {
    _mm256_shuffle_epi8(v, word_control([j, 0x80, 0x80, 0x80]))
}

/// Bytes `j` and `j + 1` of each lane's word as two zero-extended i16.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn byte_pair(v: __m256i, j: u8) -> __m256i {
    _mm256_shuffle_epi8(v, word_control([j, 0x80, j + 1, 0x80]))
}

/// Q4_K: eight rows against one Q8_K row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k(rows: [&[BlockQ4_K]; ROWS], a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
    rows_of(&rows, ahead, |blk, b| {
        // d and dmin (f16), then the 12 bytes of packed scales and mins;
        // the quants 32 bytes of each row at a time.
        let head = words4(blk.map(|k| (k as *const BlockQ4_K).cast::<u8>()));
        q4_k_term::<1, false>(
            head,
            |c| bytes32(blk.map(|k| k.qs[32 * c..].as_ptr())),
            |_, _| unreachable!("Q4_K has no fifth bits"),
            [a],
            b,
            BlockAhead::NONE,
        )[0]
    })
}

/// Q4_K: eight rows stored interleaved (`crate::x8`: the words that
/// [`q4_k`] transposes in registers, stored transposed) against one Q8_K
/// row: the same integers and floats as `q4_k`, read with plain loads
/// from one stream. The group's `nb` blocks are the first bytes of
/// `stream`, which runs on through the rest of the matrix: each block asks
/// for the lines `matmul::prefetch` names as it starts, as the one-row
/// kernels do (one stream, which the hardware prefetcher follows too).
///
/// # Safety
/// The CPU must have AVX-512 VNNI (a `Verified` at that level); `stream`
/// holds at least `nb * 8 * 144` bytes and `a` has `nb * 256` columns.
///
/// `J` activation rows (`a`) meet each block in turn while its words are
/// in registers, unpacked once for them (a few sequences decoding at once):
/// each row's result is the bits it has alone.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q4_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
    x8_blocks::<BlockQ4_K, J>(stream, nb, |at, b, ahead| {
        // The burst before the block: its arithmetic is too short to
        // spread the requests through (see `BlockAhead`).
        ahead.all();
        let word = |w: usize| load_word(at, w);
        let head = [word(0), word(1), word(2), word(3)];
        q4_k_term::<J, false>(
            head,
            |c| core::array::from_fn(|k| word(4 + 8 * c + k)),
            |_, _| unreachable!("Q4_K has no fifth bits"),
            a,
            b,
            BlockAhead::NONE,
        )
    })
}

/// The loop of the interleaved kernels: `term(at, b, ahead)` of each of
/// the `nb` blocks of `B` of the eight rows that start `stream` (`at`: the
/// group's block b) for each of `J` activation rows; the term asks for the
/// lines ahead of its block through `ahead` ([`BlockAhead`]). Each
/// activation row's terms are summed as [`blocks_of`] sums one row's.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn x8_blocks<B, const J: usize>(
    stream: &[u8],
    nb: usize,
    term: impl Fn(&[u8], usize, BlockAhead<'_>) -> [__m256; J],
) -> [[f32; ROWS]; J] {
    let group_block = ROWS * core::mem::size_of::<B>();
    assert!(stream.len() >= nb * group_block, "x8: a group of eight rows of {nb} blocks");
    let on = crate::matmul::software_prefetch();
    // acc[j][k]: blocks b % 8 == k of the eight rows (lane r = row r),
    // activation row j.
    // (A loop, not unrolled: eight copies of Q6_K's block were slower.)
    let mut acc = [[_mm256_setzero_ps(); 8]; J];
    for b in 0..nb {
        let at = b * group_block;
        let ahead = BlockAhead { w: stream, at, len: group_block, on };
        let t = term(&stream[at..at + group_block], b, ahead);
        for (acc_j, t) in acc.iter_mut().zip(t) {
            acc_j[b % 8] = _mm256_add_ps(acc_j[b % 8], t);
        }
    }
    acc.map(|acc_j| store8(hsum_across(acc_j)))
}

/// One interleaved block's requests for the lines ahead of it
/// (`crate::matmul::prefetch`'s three distances), which its kernel makes
/// either a part at a time from inside its arithmetic ([`BlockAhead::part`])
/// or all at once before it ([`BlockAhead::all`]).
///
/// Spread through the arithmetic, the requests keep the queue of misses
/// busy while a block is unpacked and multiplied, where a burst before the
/// block fills it and leaves it idle for the rest (as the row kernels'
/// [`crate::matmul::Ahead`] found for the file's layout in stop 36). It pays
/// where the block's arithmetic is long: on the 2-core Intel Xeon of stop
/// 53, `x8_bw 2 400 2048 TYPE` (two threads, 400 MB from memory), medians
/// of three to five alternations, burst → sixteen parts, GB/s: AVX2 Q6_K
/// 24.7 → 29.0 and 26.5 → 28.6, AVX2 Q4_K 27.7 → 30.6 and 28.0 → 30.6,
/// AVX2 Q5_K 25.0 → 25.7, AVX-512 Q6_K 23.1 → 26.6 and 26.8 → 28.2,
/// AVX-512 Q5_K 26.4 → 28.5; IQ4_XS in eight parts (one per 32-element
/// sub-block), AVX-512 28.0 → 29.1 and 28.6 → 28.9, AVX2 24.7 → 25.3 and
/// 24.5 → 25.3. Not for AVX-512 Q4_K, whose block is the shortest
/// arithmetic of all: 28.4 → 26.7 and 31.4 → 28.8 (four parts 30.6, two
/// 29.7), nor for Q2_K's 672-byte blocks (sixteen parts: AVX-512 25.9 →
/// 25.7, AVX2 24.3 → 23.7): they keep the burst. The spread requests skip the
/// bounds test of each line ([`crate::matmul::prefetch_spread`]): with it,
/// AVX-512 Q6_K gave 23.6 and Q4_K 24.1 where without 26.6 and 26.7 (the
/// same run). Where the weights are already in L2 the requests cost
/// either way (one core, 2 MB: AVX-512 Q6_K 36.6 GB/s without any, 26.0
/// with the burst), which decode of a model larger than the caches never
/// is.
#[derive(Clone, Copy)]
pub(crate) struct BlockAhead<'a> {
    w: &'a [u8],
    at: usize,
    len: usize,
    on: bool,
}

impl BlockAhead<'_> {
    /// No requests: for the kernels of the file's layout, whose loop asks
    /// for a row's lines itself.
    pub(crate) const NONE: BlockAhead<'static> = BlockAhead { w: &[], at: 0, len: 0, on: false };

    /// Part `i` of `N` of the block's lines (a kernel calls `i = 0..N`
    /// spread through its block; `N` a constant, so that the lines of each
    /// part are too).
    #[inline(always)]
    pub(crate) fn part<const N: usize>(self, i: usize) {
        if self.on {
            let lines = self.len.div_ceil(64);
            let (l0, l1) = (i * lines / N, (i + 1) * lines / N);
            crate::matmul::prefetch_spread(self.w, self.at + 64 * l0, 64 * (l1 - l0));
        }
    }

    /// All of the block's lines at once, before its arithmetic (each
    /// address tested to be inside the weights, as `crate::matmul::prefetch`).
    #[inline(always)]
    pub(crate) fn all(self) {
        if self.on {
            crate::matmul::prefetch_lines(self.w, self.at, self.len);
        }
    }
}

/// Word `w` (32 bytes: a 4-byte word of each of eight rows) of an
/// interleaved block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_word(at: &[u8], w: usize) -> __m256i {
    let v = &at[32 * w..32 * w + 32];
    // SAFETY: `v` is 32 bytes; loadu is unaligned.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

/// Q4_K's and Q5_K's packed 6-bit scales and mins of eight rows (`w0`,
/// `w1`, `w2`: words 1..4 of a block, lane r = row r), as
/// `avx2_q8::k4_scales_mins_v` unpacks one row's: bytes 0..4 of the scales
/// in the first vector, 4..8 in the third, the mins likewise in the second
/// and fourth. AVX2 alone, compiled in its callers.
#[inline(always)]
unsafe fn k4_scales_mins_x8(w0: __m256i, w1: __m256i, w2: __m256i) -> [__m256i; 4] {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let (nib, m6, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x3F), _mm256_set1_epi8(0x03));
        let top = |w: __m256i| _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(w), m2));
        [
            _mm256_and_si256(w0, m6),
            _mm256_and_si256(w1, m6),
            _mm256_or_si256(_mm256_and_si256(w2, nib), top(w0)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32::<4>(w2), nib), top(w1)),
        ]
    }
}

/// Bit `n` of each byte of `v` moved to bit 4 (0x10 or 0): Q5_K's fifth
/// bits (16-bit shifts: the bits that cross into a neighbouring byte land
/// outside bit 4).
#[inline(always)]
unsafe fn bit_to_4(v: __m256i, n: usize) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let v = match n {
            0 => _mm256_slli_epi16::<4>(v),
            1 => _mm256_slli_epi16::<3>(v),
            2 => _mm256_slli_epi16::<2>(v),
            3 => _mm256_slli_epi16::<1>(v),
            4 => v,
            5 => _mm256_srli_epi16::<1>(v),
            6 => _mm256_srli_epi16::<2>(v),
            _ => _mm256_srli_epi16::<3>(v),
        };
        _mm256_and_si256(v, _mm256_set1_epi8(0x10))
    }
}

/// IQ4_XS's scale `ls - 32` of sub-block `ib` of eight rows, an i32 a
/// lane: nibble `ib` of `scales_l` (`sl`), bits `2ib..2ib + 2` of
/// `scales_h` (`sh`, each lane's `scales_h` in its low 16 bits).
#[inline(always)]
unsafe fn iq4_xs_scale_x8(sl: __m256i, sh: __m256i, ib: usize) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let shift = |v: __m256i, n: usize| _mm256_srl_epi32(v, _mm_cvtsi32_si128(n as i32));
        let lo = _mm256_and_si256(shift(sl, 4 * ib), _mm256_set1_epi32(0x0F));
        let hi = _mm256_and_si256(shift(sh, 2 * ib), _mm256_set1_epi32(0x03));
        _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32::<4>(hi)), _mm256_set1_epi32(32))
    }
}

/// The activation's 16-element sums `g` and `g + 1` as one i16 pair in
/// every lane: the other operand of a `vpmaddwd` by a pair of groups'
/// multipliers.
#[inline(always)]
unsafe fn bsum_pair(bs: &[i16], g: usize) -> __m256i {
    // SAFETY: AVX (the callers').
    unsafe { _mm256_set1_epi32((bs[g] as u16 as u32 | (bs[g + 1] as u16 as u32) << 16) as i32) }
}

/// Q2_K's `Σ_g min_g · bsum_g` of eight rows (lane r = row r) for each of
/// `J` activation rows (`bs`: their block's sixteen group sums), two groups
/// a `vpmaddwd` (`sc_words`: the four scale words, the mins in the high
/// nibbles). Exact; AVX2 alone, so both levels' kernels share it.
#[inline(always)]
unsafe fn q2_k_mins_x8<const J: usize>(sc_words: &[__m256i; 4], bs: &[&[i16]; J]) -> [__m256i; J] {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let mut m = [_mm256_setzero_si256(); J];
        for (w, &sw) in sc_words.iter().enumerate() {
            let mins = _mm256_and_si256(_mm256_srli_epi16::<4>(sw), _mm256_set1_epi8(0x0F));
            for half in 0..2 {
                let pair = byte_pair(mins, 2 * half as u8);
                for j in 0..J {
                    let prod = _mm256_madd_epi16(pair, bsum_pair(bs[j], 4 * w + 2 * half));
                    m[j] = _mm256_add_epi32(m[j], prod);
                }
            }
        }
        m
    }
}

/// An i32 a lane (within ±2^15) as both i16 of the lane: a `vpmaddwd`
/// multiplier of the lane's pair.
#[inline(always)]
unsafe fn i16_twice(v: __m256i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe { _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32::<16>(v)) }
}

/// Q6_K's signed scale of group `g` (0..16) of eight rows, sign-extended to
/// i32 (`sc`: the four scale words, lane r = row r).
#[inline(always)]
unsafe fn q6_k_scale_x8(sc: &[__m256i; 4], g: usize) -> __m256i {
    let w = sc[g / 4];
    // SAFETY: AVX2 (the callers').
    unsafe {
        match g % 4 {
            0 => _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(w)),
            1 => _mm256_srai_epi32::<24>(_mm256_slli_epi32::<16>(w)),
            2 => _mm256_srai_epi32::<24>(_mm256_slli_epi32::<8>(w)),
            _ => _mm256_srai_epi32::<24>(w),
        }
    }
}

/// The term of Q4_K block `b` of eight rows (lane r = row r) for each of
/// `J` activation rows `a`: `head` is the blocks' first 16 bytes as four
/// transposed words (`d`/`dmin`, then the three words of packed 6-bit
/// scales and mins), `qs(c)` bytes `32c..32c + 32` of their quants as
/// eight transposed words, and `fifth(c, k)` Q5_K's fifth bits of those
/// quants' low and high nibbles as 0x10 bytes (called only where `FIVE`, Q5_K); `ahead`
/// the block's requests for the lines ahead, made in sixteen parts through
/// the arithmetic ([`BlockAhead`]). The weights are unpacked once for the
/// `J` rows; each row's operations are those it has alone, in the same
/// order.
///
/// Without fifth bits (`FIVE` false, Q4_K) a high nibble is multiplied
/// where it lies, `q & 0xF0` (16 times the nibble, at most 240, which
/// `vpdpbusd`'s i32 sums hold), and the sub-block's sum is shifted back
/// by 4 once: the same integer (every term a multiple of 16, so the
/// arithmetic shift is exact), one shift a word fewer.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q4_k_term<const J: usize, const FIVE: bool>(
    head: [__m256i; 4],
    qs: impl Fn(usize) -> [__m256i; 8],
    fifth: impl Fn(usize, usize) -> (__m256i, __m256i),
    a: [ActRow<'_>; J],
    b: usize,
    ahead: BlockAhead<'_>,
) -> [__m256; J] {
    let nib = _mm256_set1_epi8(0x0F);
    let [dm, w0, w1, w2] = head;
    let d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dm));
    let dmin = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32::<16>(dm)));
    let [sc_lo, mn_lo, sc_hi, mn_hi] = k4_scales_mins_x8(w0, w1, w2);
    let mins = [byte_pair(mn_lo, 0), byte_pair(mn_lo, 2), byte_pair(mn_hi, 0), byte_pair(mn_hi, 2)];

    // m = Σ_s mins[s] · B_s, B_s = Σy of sub-block s (two Q8_K group
    // sums); `pair(i)` is (B_{2i}, B_{2i+1}) as i16 in every lane.
    // The pairs in vectors: `vpmaddwd` by ones sums the group sums into
    // the eight B_s (each at most 32·127, an i16), `vpackssdw` packs them
    // as [B0 B1 B2 B3 B0 B1 B2 B3 | B4 .. B7 B4 .. B7], whose words 0, 1,
    // 4 and 5 are the pairs (scalar, the pairs held a quarter of Q4_K's
    // decode samples from L2, out of line).
    let mut m = [_mm256_setzero_si256(); J];
    for j in 0..J {
        let bs = &a[j].bsums[16 * b..16 * b + 16];
        // SAFETY: 16 i16 = 32 bytes; loadu is unaligned.
        let g = unsafe { _mm256_loadu_si256(bs.as_ptr().cast()) };
        let sums = _mm256_madd_epi16(g, _mm256_set1_epi16(1));
        let packed = _mm256_packs_epi32(sums, sums);
        let pair = |w: i32| _mm256_permutexvar_epi32(_mm256_set1_epi32(w), packed);
        let mut mj = _mm256_madd_epi16(mins[0], pair(0));
        mj = _mm256_dpwssd_epi32(mj, mins[1], pair(1));
        mj = _mm256_dpwssd_epi32(mj, mins[2], pair(4));
        m[j] = _mm256_dpwssd_epi32(mj, mins[3], pair(5));
    }

    // isum = Σ_s scales[s] · Σ u·y over sub-block s. Sub-blocks 2c and
    // 2c + 1 are the low and high nibbles of qs[32c..32c + 32].
    let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
    let mut isum = [_mm256_setzero_si256(); J];
    unroll!(c in [0, 1, 2, 3] {
        let q = qs(c);
        let z = _mm256_setzero_si256();
        let (mut lo, mut hi) = ([[z; 2]; J], [[z; 2]; J]);
        unroll!(k in [0, 1, 2, 3, 4, 5, 6, 7] {
            if k.is_multiple_of(2) {
                ahead.part::<16>(4 * c + k / 2);
            }
            let (ul, uh) = if FIVE {
                let (fl, fh) = fifth(c, k);
                (
                    _mm256_or_si256(_mm256_and_si256(q[k], nib), fl),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib), fh),
                )
            } else {
                // The high nibble in place: 16 times its value.
                (_mm256_and_si256(q[k], nib), _mm256_andnot_si256(nib, q[k]))
            };
            for j in 0..J {
                lo[j][k % 2] = dpbusd_y::<FIVE, QK_K>(lo[j][k % 2], ul, y[j], 64 * c + 4 * k);
                hi[j][k % 2] = dpbusd_y::<FIVE, QK_K>(hi[j][k % 2], uh, y[j], 64 * c + 32 + 4 * k);
            }
        });
        let sc = if c < 2 { sc_lo } else { sc_hi };
        let jb = 2 * (c as u8 % 2);
        let (s0, s1) = (byte_of(sc, jb), byte_of(sc, jb + 1));
        for j in 0..J {
            let s_lo = _mm256_mullo_epi32(_mm256_add_epi32(lo[j][0], lo[j][1]), s0);
            let h = _mm256_add_epi32(hi[j][0], hi[j][1]);
            let s_hi = _mm256_mullo_epi32(if FIVE { h } else { _mm256_srai_epi32::<4>(h) }, s1);
            isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(s_lo, s_hi));
        }
    });
    core::array::from_fn(|j| k_group_term(isum[j], m[j], d, dmin, _mm256_set1_ps(a[j].d[b]), 0))
}

/// Q6_K: eight rows against one Q8_K row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_k(rows: [&[BlockQ6_K]; ROWS], a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
    rows_of(&rows, ahead, |blk, b| {
        // The 16 signed group scales, four words (lane r = row r), and d.
        let sc = words4(blk.map(|k| k.scales.as_ptr().cast::<u8>()));
        let dv: [u16; ROWS] = blk.map(|k| u16::from_le_bytes(k.d.0));
        // SAFETY: `dv` is 8 u16 = 16 bytes; loadu is unaligned.
        let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(dv.as_ptr().cast()) });
        q6_k_term(
            sc,
            d,
            |h| bytes32(blk.map(|k| k.qh[32 * h..].as_ptr())),
            |h, p| bytes32(blk.map(|k| k.ql[64 * h + 32 * p..].as_ptr())),
            [a],
            b,
            BlockAhead::NONE,
        )[0]
    })
}

/// Q6_K: eight rows stored interleaved against one Q8_K row, as
/// [`q4_k_x8`] is to [`q4_k`]: words 0..32 of a block are `ql`, 32..48
/// `qh`, 48..52 the scales, then the eight rows' `d`.
///
/// # Safety
/// As [`q4_k_x8`], with blocks of 210 bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q6_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
    x8_blocks::<BlockQ6_K, J>(stream, nb, |at, b, ahead| {
        let word = |w: usize| load_word(at, w);
        let dv = &at[52 * 32..52 * 32 + 16];
        // SAFETY: `dv` is the eight rows' 16 bytes of `d`; loadu is unaligned.
        let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(dv.as_ptr().cast()) });
        let sc = [word(48), word(49), word(50), word(51)];
        q6_k_term(
            sc,
            d,
            |h| core::array::from_fn(|k| word(32 + 8 * h + k)),
            |h, p| core::array::from_fn(|k| word(16 * h + 8 * p + k)),
            a,
            b,
            ahead,
        )
    })
}

/// Q5_K: eight rows stored interleaved against one Q8_K row, as
/// [`q4_k_x8`] with the fifth bits: words 0..4 the head, 4..12 `qh`,
/// 12..44 the quants. Element `64c + l` (a low nibble of `qs[32c + l]`)
/// has bit `2c` of `qh[l]` as its fifth, element `64c + 32 + l` bit
/// `2c + 1`; word k of `qh` is bytes `4k..` of the eight rows, those of
/// quant word k of each chunk, so each fifth bit is a shift and a mask.
/// The reference's integers (`q` up to 31) and float step, as Q4_K's.
///
/// # Safety
/// As [`q4_k_x8`], with blocks of 176 bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q5_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
    x8_blocks::<BlockQ5_K, J>(stream, nb, |at, b, ahead| {
        let word = |w: usize| load_word(at, w);
        let head = [word(0), word(1), word(2), word(3)];
        let qh: [__m256i; 8] = core::array::from_fn(|k| word(4 + k));
        let to4 = |v: __m256i, n: usize| bit_to_4(v, n);
        q4_k_term::<J, true>(
            head,
            |c| core::array::from_fn(|k| word(12 + 8 * c + k)),
            |c, k| (to4(qh[k], 2 * c), to4(qh[k], 2 * c + 1)),
            a,
            b,
            ahead,
        )
    })
}

/// Q2_K: eight rows stored interleaved against one Q8_K row. All of a
/// block is words (`crate::x8`): words 0..4 the sixteen scale bytes (scale
/// in the low nibble, min in the high one, a byte per 16 elements), words
/// 4..20 the quants, word 20 `d` and `dmin`. Element `128h + 32s + l` is
/// bits `2s..2s + 2` of `qs[32h + l]`, so group `g = 8h + 2s + hf` is
/// those bits of quant words `8h + 4hf..`, read once for the four `s`.
/// A group's sum `Σ q·y` is at most 16·3·127 in magnitude, an i16, so the
/// scale multiplies it by `vpdpwssd` against the scale in the low half of
/// each lane; the mins' sum pairs two groups a `vpdpwssd` (as Q4_K's).
/// The reference's integers, and its float step `term_k`.
///
/// # Safety
/// As [`q4_k_x8`], with blocks of 84 bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q2_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
    let (m2, m4) = (_mm256_set1_epi8(0x03), _mm256_set1_epi8(0x0F));
    x8_blocks::<BlockQ2_K, J>(stream, nb, |at, b, ahead| {
        ahead.all();
        let word = |w: usize| load_word(at, w);
        let dm = word(20);
        let d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dm));
        let dmin = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32::<16>(dm)));
        let sc_words: [__m256i; 4] = core::array::from_fn(&word);
        let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
        let bs: [&[i16]; J] = a.map(|a| &a.bsums[16 * b..16 * b + 16]);
        // m = Σ_g min_g · bsum_g, two groups a step.
        let m = q2_k_mins_x8(&sc_words, &bs);
        let mut isum = [_mm256_setzero_si256(); J];
        unroll!(h in [0, 1] {
            unroll!(hf in [0, 1] {
                let q: [__m256i; 4] = core::array::from_fn(|k| word(4 + 8 * h + 4 * hf + k));
                unroll!(s in [0, 1, 2, 3] {
                    let g = 8 * h + 2 * s + hf;
                    let scale = byte_of(_mm256_and_si256(sc_words[g / 4], m4), (g % 4) as u8);
                    let mut sums = [_mm256_setzero_si256(); J];
                    unroll!(k in [0, 1, 2, 3] {
                        let u = _mm256_and_si256(_mm256_srl_epi16(q[k], _mm_cvtsi32_si128(2 * s as i32)), m2);
                        for j in 0..J {
                            sums[j] = _mm256_dpbusd_epi32(sums[j], u, bcast4(y[j], 128 * h + 32 * s + 16 * hf + 4 * k));
                        }
                    });
                    for j in 0..J {
                        isum[j] = _mm256_dpwssd_epi32(isum[j], sums[j], scale);
                    }
                });
            });
        });
        core::array::from_fn(|j| k_group_term(isum[j], m[j], d, dmin, _mm256_set1_ps(a[j].d[b]), 0))
    })
}

/// IQ4_XS: eight rows stored interleaved against one Q8_K row. All of a
/// block is words (`crate::x8`): word 0 is each row's `d` and `scales_h`,
/// word 1 its `scales_l`, words 2..34 its quants, sub-block `ib`'s 16
/// bytes in words `2 + 4ib..`. A sub-block's 32 weights are the nibbles
/// looked up in IQ4's table plus 128 (`vpshufb`), multiplied as Q8_0's
/// flipped quants (its sum starts at `-128·Σy`, the two Q8_K group sums),
/// times its scale `ls - 32` (six bits: nibble `ib` of `scales_l`, bits
/// `2ib..2ib + 2` of `scales_h`); the block's term is the reference's
/// `(d·da)·isum`, and IQ4_XS's power of two is 1.
///
/// # Safety
/// As [`q4_k_x8`], with blocks of 136 bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn iq4_xs_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
    debug_assert_eq!(crate::iq::post_scale(GgmlType::IQ4_XS), 1.0);
    // SAFETY: 16 table bytes.
    let table = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(crate::iq::KVALUES_IQ4_U.as_ptr().cast()) });
    let nib = _mm256_set1_epi8(0x0F);
    x8_blocks::<crate::blocks::BlockIq4Xs, J>(stream, nb, |at, b, ahead| {
        let word = |w: usize| load_word(at, w);
        let (w0, sl) = (word(0), word(1));
        let d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(w0));
        let sh = _mm256_srli_epi32::<16>(w0);
        let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
        let bs: [&[i16]; J] = a.map(|a| &a.bsums[16 * b..16 * b + 16]);
        let mut isum = [_mm256_setzero_si256(); J];
        unroll!(ib in [0, 1, 2, 3, 4, 5, 6, 7] {
            ahead.part::<8>(ib);
            let scale = iq4_xs_scale_x8(sl, sh, ib);
            let mut sums: [[__m256i; 2]; J] = core::array::from_fn(|j| {
                let sy = i32::from(bs[j][2 * ib]) + i32::from(bs[j][2 * ib + 1]);
                [_mm256_set1_epi32(-128 * sy), _mm256_setzero_si256()]
            });
            unroll!(k in [0, 1, 2, 3] {
                let q = word(2 + 4 * ib + k);
                let ul = _mm256_shuffle_epi8(table, _mm256_and_si256(q, nib));
                let uh = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(q), nib));
                for j in 0..J {
                    sums[j][0] = dpbusd_at(sums[j][0], ul, &y[j][32 * ib + 4 * k..]);
                    sums[j][1] = dpbusd_at(sums[j][1], uh, &y[j][32 * ib + 16 + 4 * k..]);
                }
            });
            for j in 0..J {
                let s = _mm256_add_epi32(sums[j][0], sums[j][1]);
                isum[j] = _mm256_add_epi32(isum[j], _mm256_mullo_epi32(s, scale));
            }
        });
        core::array::from_fn(|j| {
            _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(a[j].d[b])), _mm256_cvtepi32_ps(isum[j]))
        })
    })
}

/// The term of Q6_K block `b` of eight rows (lane r = row r) for each of
/// `J` activation rows `a`: `sc` the 16 signed scales as four transposed
/// words, `d` the rows' scales, `qh_words(h)` bytes `32h..32h + 32` of
/// `qh` and `ql_words(h, p)` bytes `64h + 32p..` of `ql`, each as eight
/// transposed words; `ahead` as [`q4_k_term`]'s. The weights are unpacked
/// once for the `J` rows; each row's operations are those it has alone, in
/// the same order.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q6_k_term<const J: usize>(
    sc: [__m256i; 4],
    d: __m256,
    qh_words: impl Fn(usize) -> [__m256i; 8],
    ql_words: impl Fn(usize, usize) -> [__m256i; 8],
    a: [ActRow<'_>; J],
    b: usize,
    ahead: BlockAhead<'_>,
) -> [__m256; J] {
    let nib = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    // Scale of group g (0..16) as i32, sign-extended.
    let scale = |g: usize| q6_k_scale_x8(&sc, g);
    // Each group's sum starts at -32·Σy (u = q + 32), so the block's
    // integer is Σ sc·(Σ u·y - 32·Σy) = isum - 32·Σ sc·Σy, the number
    // the reference forms as `isum - off·m`.
    // The 16 start values of each row at once (widened, times -32) in
    // memory, so that each group's is one broadcast load.
    let starts: [[__m256i; 2]; J] = core::array::from_fn(|j| {
        let bs = &a[j].bsums[16 * b..16 * b + 16];
        core::array::from_fn(|half| {
            // SAFETY: `bs` holds 16 i16, so 8 from `8 * half` are in bounds.
            let v = unsafe { _mm256_cvtepi16_epi32(_mm_loadu_si128(bs[8 * half..].as_ptr().cast())) };
            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(v))
        })
    });
    let starts: [&[i32; 16]; J] = core::array::from_fn(|j| bytemuck::cast_ref(&starts[j]));
    let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
    // One partial sum per pass and activation row, added at the end.
    let mut part = [[_mm256_setzero_si256(); 4]; J];
    unroll!(h in [0, 1] {
        // Element 128h + 32s + l: nibble s/2 of ql[64h + 32(s%2) + l],
        // bits 2s..2s+2 of qh[32h + l]. One pass over each half of
        // ql[64h..64h + 64] (p = s % 2: sub-groups s = p and p + 2), so
        // that fewer vectors are live at once.
        let qh = qh_words(h);
        unroll!(p in [0, 1] {
            let q = ql_words(h, p);
            // sums[j][i][hf]: group 8h + 2s + hf for s = p + 2i.
            let mut sums: [[[__m256i; 2]; 2]; J] = core::array::from_fn(|j| {
                core::array::from_fn(|i| {
                    core::array::from_fn(|hf| _mm256_set1_epi32(starts[j][8 * h + 2 * (p + 2 * i) + hf]))
                })
            });
            unroll!(k in [0, 1, 2, 3, 4, 5, 6, 7] {
                if k.is_multiple_of(2) {
                    ahead.part::<16>(8 * h + 4 * p + k / 2);
                }
                let hf = k / 4;
                let (hb_lo, hb_hi) = if p == 0 {
                    (_mm256_slli_epi16::<4>(qh[k]), qh[k])
                } else {
                    (_mm256_slli_epi16::<2>(qh[k]), _mm256_srli_epi16::<2>(qh[k]))
                };
                let u_lo = _mm256_or_si256(_mm256_and_si256(q[k], nib), _mm256_and_si256(hb_lo, m30));
                let u_hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib),
                    _mm256_and_si256(hb_hi, m30),
                );
                for j in 0..J {
                    sums[j][0][hf] = dpbusd_at(sums[j][0][hf], u_lo, &y[j][128 * h + 32 * p + 4 * k..]);
                    sums[j][1][hf] = dpbusd_at(sums[j][1][hf], u_hi, &y[j][128 * h + 32 * (p + 2) + 4 * k..]);
                }
            });
            let scales: [__m256i; 4] = core::array::from_fn(|x| {
                let (i, hf) = (x / 2, x % 2);
                scale(8 * h + 2 * (p + 2 * i) + hf)
            });
            for j in 0..J {
                let scaled: [__m256i; 4] = core::array::from_fn(|x| _mm256_mullo_epi32(sums[j][x / 2][x % 2], scales[x]));
                part[j][2 * h + p] = _mm256_add_epi32(
                    _mm256_add_epi32(scaled[0], scaled[1]),
                    _mm256_add_epi32(scaled[2], scaled[3]),
                );
            }
        });
    });
    core::array::from_fn(|j| {
        let part = part[j];
        let isum = _mm256_add_epi32(_mm256_add_epi32(part[0], part[1]), _mm256_add_epi32(part[2], part[3]));
        k_group_term(isum, _mm256_setzero_si256(), d, _mm256_setzero_ps(), _mm256_set1_ps(a[j].d[b]), 32)
    })
}

/// The 32-element types stored interleaved (`crate::x8`), `J` activation
/// rows against the eight rows that start `stream` (`nb` blocks a row):
/// `crate::x8`'s group block b is the eight rows' heads (`d`, Q4_1's `d`
/// and `m`) row by row, then the quant words transposed (Q5_0's `qh`
/// first), so a block's `d` of the eight rows is one `vcvtph2ps` and each
/// 4-byte word of their quants one load. The arithmetic of each block is
/// that of the file-layout kernels above ([`q5_0`], [`q4_1`]) and of the
/// one-row kernels: the exact integer sums, then the reference's f32 step
/// in lane r for row r.
///
/// The block terms accumulate per block position, `acc[k]` holding the
/// blocks `b ≡ k (mod 8)` of the eight rows (lane r = row r): the same
/// additions in the same order as a row's accumulator of the one-row
/// kernels (block b in lane b % 8), summed at the end across the vectors
/// in `avx2::hsum`'s order ([`hsum_across`]), as the K-quants' loop
/// (`x8_blocks`) does too since stop 51. Here the eight positions are
/// unrolled: a 32-element block is small, and the rolled loop was 10-20 %
/// slower from L2 (Q8_0, Q4_0); for the K-quants it is the other way round
/// (eight copies of Q6_K's block: 11 % slower than the loop).
///
/// # Safety
/// The CPU must have AVX-512 VNNI; `stream` holds at least the group's
/// `nb` blocks and each activation row `nb * 32` columns of
/// `vec_dot_type(wty)`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn legacy_x8<const J: usize>(
    wty: GgmlType,
    stream: &[u8],
    nb: usize,
    a: [ActRow<'_>; J],
) -> [[f32; ROWS]; J] {
    // SAFETY (every arm): this function's features, which the block
    // functions are compiled in; the caller's contract.
    unsafe {
        match wty {
            GgmlType::Q4_0 => x8_legacy::<18, false, J>(stream, nb, &a, q4_0_x8_block::<J>),
            GgmlType::Q4_1 => x8_legacy::<20, true, J>(stream, nb, &a, q4_1_x8_block::<J>),
            GgmlType::Q5_0 => x8_legacy::<22, false, J>(stream, nb, &a, q5_0_x8_block::<J>),
            GgmlType::Q8_0 => x8_legacy::<34, false, J>(stream, nb, &a, q8_0_x8_block::<J>),
            GgmlType::IQ4_NL => x8_legacy::<18, false, J>(stream, nb, &a, iq4_nl_x8_block::<J>),
            t => unreachable!("x8: {t} is not a 32-element type of the layout"),
        }
    }
}

/// A block function of [`x8_legacy`].
type X8Block<const J: usize> = unsafe fn(&[u8], usize, &[ActRow<'_>; J], &mut [[__m256; 2]; J]);

/// The loop of [`legacy_x8`] over `nb` blocks of `BS` bytes a row:
/// `block(at, b, a, t)` puts block b's terms of the eight rows for each
/// activation row into `t[j][0]` (and, where `MIN`, its `m·s` terms into
/// `t[j][1]`), `at` the group's block b; each block first asks for the
/// lines ahead of it, as the one-row kernels do. The block functions and
/// this loop have no features of their own: they are compiled inside
/// `legacy_x8`.
#[inline(always)]
unsafe fn x8_legacy<const BS: usize, const MIN: bool, const J: usize>(
    stream: &[u8],
    nb: usize,
    a: &[ActRow<'_>; J],
    block: X8Block<J>,
) -> [[f32; ROWS]; J] {
    let group_block = ROWS * BS;
    assert!(stream.len() >= nb * group_block, "x8: a group of eight rows of {nb} blocks");
    // SAFETY: AVX2 and more (the caller's features).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 8]; J];
        let mut accm = [[_mm256_setzero_ps(); 8]; J];
        for g in 0..nb.div_ceil(8) {
            // Blocks 8g.. each into its position's accumulator; those past
            // the end of the row add nothing, as the reference's lanes.
            unroll!(k in [0, 1, 2, 3, 4, 5, 6, 7] {
                let b = 8 * g + k;
                if b < nb {
                    crate::matmul::prefetch(stream, b * group_block, group_block);
                    let mut t = [[_mm256_setzero_ps(); 2]; J];
                    block(&stream[b * group_block..(b + 1) * group_block], b, a, &mut t);
                    for j in 0..J {
                        acc[j][k] = _mm256_add_ps(acc[j][k], t[j][0]);
                        if MIN {
                            accm[j][k] = _mm256_add_ps(accm[j][k], t[j][1]);
                        }
                    }
                }
            });
        }
        // Each row summed as `blocks_of` sums it.
        core::array::from_fn(|j| {
            let sums = hsum_across(acc[j]);
            store8(if MIN { _mm256_add_ps(sums, hsum_across(accm[j])) } else { sums })
        })
    }
}

/// The `d` of the eight rows: the group block's first 16 bytes.
#[inline(always)]
unsafe fn x8_d(at: &[u8]) -> __m256 {
    // SAFETY: F16C (the callers'); 16 bytes.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at[..16].as_ptr().cast())) }
}

/// Each row's block sum `isum` times `d·da`: the reference's `term`.
#[inline(always)]
unsafe fn x8_scaled(d: __m256, da: f32, isum: __m256i) -> __m256 {
    // SAFETY: AVX (the callers').
    unsafe { _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(da)), _mm256_cvtepi32_ps(isum)) }
}

/// The integer sum of a block's 32 unsigned weights `u` (vector k:
/// elements 4k..4k + 4 of the eight rows) against activation row `aj`'s
/// block b, from `start`.
#[inline(always)]
unsafe fn x8_isum(u: &[__m256i; 8], aj: &ActRow<'_>, b: usize, start: __m256i) -> __m256i {
    let y: &[i8; 32] = aj.qs[32 * b..32 * b + 32].try_into().unwrap();
    // SAFETY: AVX-512 VNNI/VL (the callers').
    unsafe {
        let (mut lo, mut hi) = (start, _mm256_setzero_si256());
        unroll!(k in [0, 1, 2, 3] {
            lo = _mm256_dpbusd_epi32(lo, u[k], bcast4(y, 4 * k));
            hi = _mm256_dpbusd_epi32(hi, u[4 + k], bcast4(y, 16 + 4 * k));
        });
        _mm256_add_epi32(lo, hi)
    }
}

/// A group block's eight rows of 32 unsigned weights `q + off`
/// (`panel::legacy_off`: vector k holds elements 4k..4k + 4 of each row,
/// the panels' and the kernels' form), their `d` and their `m` (Q4_1; 0
/// for the others): what [`legacy_x8`]'s kernels multiply, and what the
/// panels take from this layout without putting it back.
///
/// # Safety
/// The CPU must have AVX-512 VNNI; `at` holds one group block of `wty`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn legacy_x8_unpacked(wty: GgmlType, at: &[u8]) -> X8Unpacked {
    // SAFETY: this function's features; one group block.
    unsafe {
        match wty {
            GgmlType::Q4_0 => q4_0_x8_unpack(at),
            GgmlType::Q4_1 => q4_1_x8_unpack(at),
            GgmlType::Q5_0 => q5_0_x8_unpack(at),
            GgmlType::Q8_0 => q8_0_x8_unpack(at),
            GgmlType::IQ4_NL => iq4_nl_x8_unpack(at),
            t => unreachable!("x8: {t} is not a 32-element type of the layout"),
        }
    }
}

/// A group block unpacked: eight vectors of four elements of each row,
/// the rows' `d` and `m`.
type X8Unpacked = ([__m256i; 8], __m256, __m256);

/// Low nibbles of four quant words (elements 4k.. of a block), then their
/// high nibbles (elements 16 + 4k..).
#[inline(always)]
unsafe fn x8_nibbles(q: [__m256i; 4]) -> [__m256i; 8] {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let nib = _mm256_set1_epi8(0x0F);
        core::array::from_fn(|i| {
            if i < 4 {
                _mm256_and_si256(q[i], nib)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(q[i - 4]), nib)
            }
        })
    }
}

/// Q4_0 (group block: `d` ×8, four quant words): `u = q + 8`, the nibbles.
#[inline(always)]
unsafe fn q4_0_x8_unpack(at: &[u8]) -> X8Unpacked {
    // SAFETY: the callers' features; a whole group block.
    unsafe { (x8_nibbles(core::array::from_fn(|k| load_word(&at[16..], k))), x8_d(at), _mm256_setzero_ps()) }
}

/// Q4_1 (group block: `d` and `m` as a word a row, four quant words),
/// with AVX2 alone (`avx2::f16_lanes`), so both levels take it.
#[inline(always)]
unsafe fn q4_1_x8_unpack(at: &[u8]) -> X8Unpacked {
    // SAFETY: the callers' features (AVX2 and F16C at least); a whole group block.
    unsafe {
        let dm = load_word(at, 0);
        let (d, m) = (avx2::f16_lanes(dm), avx2::f16_lanes(_mm256_srli_epi32::<16>(dm)));
        (x8_nibbles(core::array::from_fn(|k| load_word(&at[32..], k))), d, m)
    }
}

/// Q5_0 (group block: `d` ×8, the fifth bits as eight byte masks, four
/// quant words): `u = q + 16`, each vector's fifth bits added under its
/// mask (`crate::x8` stores `qh` so: word i is the mask of vector i, bit
/// 4r + j for element j of row r; shuffling each row's `qh` into masks
/// here took a fifth of the kernel's instructions).
#[inline(always)]
unsafe fn q5_0_x8_unpack(at: &[u8]) -> X8Unpacked {
    // SAFETY: the callers' features; a whole group block.
    unsafe {
        let (bit5, nib) = (_mm256_set1_epi8(0x10), _mm256_set1_epi8(0x0F));
        let q: [__m256i; 4] = core::array::from_fn(|k| load_word(&at[16..], 1 + k));
        let mut u = [_mm256_setzero_si256(); 8];
        unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7] {
            // A mask register loaded from memory (`kmovd k, m32`: a load,
            // where one through a general register takes the shuffle port),
            // its bytes as 0x10 or 0, and `(nibbles & 0x0F) | fifth` in one
            // `vpternlogd` (0xEC: `(a & c) | b`).
            let mask = _load_mask32(at[16 + 4 * i..20 + 4 * i].as_ptr().cast());
            let fifth = _mm256_maskz_mov_epi8(mask, bit5);
            let nibbles = if i < 4 { q[i % 4] } else { _mm256_srli_epi16::<4>(q[i % 4]) };
            u[i] = _mm256_ternarylogic_epi32::<0xEC>(nibbles, fifth, nib);
        });
        (u, x8_d(at), _mm256_setzero_ps())
    }
}

/// Q8_0 (group block: `d` ×8, eight quant words stored as `q + 128`,
/// `crate::x8`'s flip): the unsigned weights as they come.
#[inline(always)]
unsafe fn q8_0_x8_unpack(at: &[u8]) -> X8Unpacked {
    // SAFETY: the callers' features; a whole group block.
    unsafe { (core::array::from_fn(|k| load_word(&at[16..], k)), x8_d(at), _mm256_setzero_ps()) }
}

/// IQ4_NL (group block: `d` ×8, four quant words, as Q4_0): each nibble
/// through IQ4's table shifted by 128 (`vpshufb`), so the weights are
/// `v + 128`, unsigned as Q8_0's flipped quants, and the sum starts at
/// `-128·Σy` as Q8_0's does: the exact `Σ v·y` of the reference.
#[inline(always)]
unsafe fn iq4_nl_x8_unpack(at: &[u8]) -> X8Unpacked {
    // SAFETY: the callers' features; a whole group block; 16 table bytes.
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(crate::iq::KVALUES_IQ4_U.as_ptr().cast()));
        let u = x8_nibbles(core::array::from_fn(|k| load_word(&at[16..], k)));
        (u.map(|v| _mm256_shuffle_epi8(table, v)), x8_d(at), _mm256_setzero_ps())
    }
}

/// A level's integer sum of a group block's unpacked weights against one
/// activation row's block b, from a start ([`x8_isum`], `avx2::isum_small`,
/// `avx2::isum_signed`).
type X8Isum = unsafe fn(&[__m256i; 8], &ActRow<'_>, usize, __m256i) -> __m256i;

/// The block function of every type: `unpack`'s weights against each
/// activation row through `isum`, the sum starting at `-off·Σy`, and the
/// reference's `(d·da)·isum`, with `m·s` beside it where `MIN` (Q4_1). Its
/// pieces are `#[inline(always)]` functions without features of their
/// own, so that each level's kernel compiles them with its own.
#[inline(always)]
unsafe fn x8_block<const J: usize, const OFF: i32, const MIN: bool>(
    unpack: unsafe fn(&[u8]) -> X8Unpacked,
    isum: X8Isum,
    at: &[u8],
    b: usize,
    a: &[ActRow<'_>; J],
    t: &mut [[__m256; 2]; J],
) {
    // SAFETY: the callers' features; a whole group block.
    unsafe {
        let (u, d, m) = unpack(at);
        for j in 0..J {
            let s = isum(&u, &a[j], b, _mm256_set1_epi32(-OFF * a[j].sums[b]));
            t[j][0] = x8_scaled(d, a[j].d[b], s);
            if MIN {
                t[j][1] = _mm256_mul_ps(m, _mm256_set1_ps(a[j].s[b]));
            }
        }
    }
}

#[inline(always)]
unsafe fn q4_0_x8_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
    // SAFETY: as `x8_block`.
    unsafe { x8_block::<J, { crate::qdot::Q4_0_OFF }, false>(q4_0_x8_unpack, x8_isum, at, b, a, t) }
}

#[inline(always)]
unsafe fn q5_0_x8_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
    // SAFETY: as `x8_block`.
    unsafe { x8_block::<J, { crate::qdot::Q5_0_OFF }, false>(q5_0_x8_unpack, x8_isum, at, b, a, t) }
}

#[inline(always)]
unsafe fn q8_0_x8_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
    // SAFETY: as `x8_block`.
    unsafe { x8_block::<J, { crate::avx512_q8::Q8_0_OFF }, false>(q8_0_x8_unpack, x8_isum, at, b, a, t) }
}

#[inline(always)]
unsafe fn iq4_nl_x8_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
    // SAFETY: as `x8_block`.
    unsafe { x8_block::<J, { crate::avx512_q8::Q8_0_OFF }, false>(iq4_nl_x8_unpack, x8_isum, at, b, a, t) }
}

#[inline(always)]
unsafe fn q4_1_x8_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
    // SAFETY: as `x8_block`.
    unsafe { x8_block::<J, 0, true>(q4_1_x8_unpack, x8_isum, at, b, a, t) }
}

/// Q5_0: eight rows against one Q8_0 row. A block's 16 quant bytes of the
/// eight rows are four transposed words (low nibbles: elements 4k..4k + 4,
/// high: 16 + 4k..); the fifth bits come from `qh` (bit e for element e),
/// set in the bytes by a byte test and a masked add. The sum starts at
/// `-16·Σy` (`u = q + 16`), as the reference subtracts it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0(rows: [&[BlockQ5_0]; ROWS], a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
    let nib = _mm256_set1_epi8(0x0F);
    let bit5 = _mm256_set1_epi8(0x10);
    // Bits j..j + 4 of each lane's `qh` as a byte mask over its four bytes.
    let high = |qh: __m256i, j: u8| -> __mmask32 {
        let rep = _mm256_shuffle_epi8(qh, word_control([j / 8, j / 8, j / 8, j / 8]));
        let o = j % 8;
        let bits = i32::from_le_bytes([1 << o, 1 << (o + 1), 1 << (o + 2), 1 << (o + 3)]);
        _mm256_test_epi8_mask(rep, _mm256_set1_epi32(bits))
    };
    rows_of(&rows, ahead, |blk, b| {
        // Bytes 0..16: d, qh, qs[0..10]; then the 16 quant bytes.
        let [w0, w1, _, _] = words4(blk.map(|k| (k as *const BlockQ5_0).cast::<u8>()));
        let q = words4(blk.map(|k| k.qs.as_ptr()));
        let d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(w0));
        let qh = _mm256_or_si256(_mm256_srli_epi32::<16>(w0), _mm256_slli_epi32::<16>(w1));
        let y: &[i8; 32] = a.qs[32 * b..32 * b + 32].try_into().unwrap();
        let mut lo = _mm256_set1_epi32(-16 * a.sums[b]);
        let mut hi = _mm256_setzero_si256();
        unroll!(k in [0, 1, 2, 3] {
            let ul = _mm256_and_si256(q[k], nib);
            let uh = _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib);
            let ul = _mm256_mask_add_epi8(ul, high(qh, 4 * k as u8), ul, bit5);
            let uh = _mm256_mask_add_epi8(uh, high(qh, 16 + 4 * k as u8), uh, bit5);
            lo = _mm256_dpbusd_epi32(lo, ul, bcast4(y, 4 * k));
            hi = _mm256_dpbusd_epi32(hi, uh, bcast4(y, 16 + 4 * k));
        });
        let isum = _mm256_add_epi32(lo, hi);
        // The reference's `legacy_group`: (d·da)·isum.
        _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(a.d[b])), _mm256_cvtepi32_ps(isum))
    })
}

/// Q4_1: eight rows against one Q8_1 row: the quant bytes as in Q5_0
/// without a fifth bit or offset, and the reference's two terms,
/// `(d·da)·isum` and `m·s` (`s` the activation block's `d·Σy`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1(rows: [&[BlockQ4_1]; ROWS], a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
    let nib = _mm256_set1_epi8(0x0F);
    rows_of_min::<BlockQ4_1, true>(&rows, ahead, |blk, b| {
        // Bytes 0..16: d, m, qs[0..12]; then the 16 quant bytes.
        let [dm, _, _, _] = words4(blk.map(|k| (k as *const BlockQ4_1).cast::<u8>()));
        let q = words4(blk.map(|k| k.qs.as_ptr()));
        let d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dm));
        let m = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32::<16>(dm)));
        let y: &[i8; 32] = a.qs[32 * b..32 * b + 32].try_into().unwrap();
        let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        unroll!(k in [0, 1, 2, 3] {
            lo = _mm256_dpbusd_epi32(lo, _mm256_and_si256(q[k], nib), bcast4(y, 4 * k));
            hi = _mm256_dpbusd_epi32(hi, _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib), bcast4(y, 16 + 4 * k));
        });
        let isum = _mm256_add_epi32(lo, hi);
        (
            _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(a.d[b])), _mm256_cvtepi32_ps(isum)),
            _mm256_mul_ps(m, _mm256_set1_ps(a.s[b])),
        )
    })
}

/// The AVX2 level (no VNNI, no mask registers): eight rows from the file's
/// layout for the 32-element types whose one-row kernels are slowest on
/// short rows (Q4_1: 8.2 GB/s a core from L2 at SmolLM2's 576 columns;
/// Q5_0: 9.4 at Qwen2.5's 896), and every type of the interleaved layout
/// (`crate::x8`). A 4-byte multiply-add is `vpmaddubsw`, whose i16 pair
/// sums (at most 2·u_max·127: 3810 for Q4_1 and Q4_K, 7874 for Q5_0's
/// `q + 16` and Q5_K, 16002 for Q6_K's `q + 32`) are added as i16 for 8
/// steps, 4 or 2 and widened once by `vpmaddwd`, against the scale where
/// there is one; the signed types (Q8_0, IQ4_NL, IQ4_XS) as magnitudes
/// against the activations with the weights' signs (`vpsignb`), each
/// step widened; the fifth bits of Q5_0 become bytes by compare instead
/// of mask registers. The same exact integers and f32 steps as the VNNI
/// versions above.
pub(crate) mod avx2 {
    use super::{
        bcast4, byte_pair, load_word, rows_of, rows_of_min, word_control, words4, BlockAhead, X8Unpacked, ROWS,
    };
    use crate::avx2_q8::k_group_term;
    use crate::blocks::{BlockQ2_K, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_K, BlockQ6_K};
    use crate::q8::ActRow;
    use crate::types::GgmlType;
    use crate::types::QK_K;
    use core::arch::x86_64::*;

    /// [`super::legacy_x8`] at the AVX2 level: the same group blocks,
    /// unpacked with AVX2 alone (a Q5_0 mask word spread into bytes by a
    /// broadcast, a byte shuffle and a compare; Q4_1's `d` and `m` widened
    /// by [`f16_lanes`]; Q8_0's stored `q + 128` flipped back and IQ4_NL's
    /// nibbles through IQ4's signed table), and the multiply-adds as
    /// `vpmaddubsw` pairs added as i16 for four steps (at most 4·2·31·127
    /// for Q5_0's `q + 16`) and widened once by `vpmaddwd`, or for the
    /// signed Q8_0 and IQ4_NL as magnitudes against the activations with
    /// the weights' signs, widened every step ([`isum_signed`]). The same
    /// exact integers and f32 steps, hence the reference's bits. (Q8_0
    /// through `vpsignb` first measured no faster than its row kernels at
    /// 896 columns, 24.1 against 24.8 GB/s from L2, in stop 45; at stop 47,
    /// 37.3 against 26.5 at 896 columns and 39.5 against 29.6 at 7168.)
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; as [`super::legacy_x8`]
    /// otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn legacy_x8<const J: usize>(
        wty: GgmlType,
        stream: &[u8],
        nb: usize,
        a: [ActRow<'_>; J],
    ) -> [[f32; ROWS]; J] {
        // SAFETY (every arm): this function's features, which the block
        // functions are compiled in; the caller's contract.
        unsafe {
            match wty {
                GgmlType::Q4_0 => super::x8_legacy::<18, false, J>(stream, nb, &a, q4_0_block::<J>),
                GgmlType::Q4_1 => super::x8_legacy::<20, true, J>(stream, nb, &a, q4_1_block::<J>),
                GgmlType::Q5_0 => super::x8_legacy::<22, false, J>(stream, nb, &a, q5_0_block::<J>),
                GgmlType::Q8_0 => super::x8_legacy::<34, false, J>(stream, nb, &a, q8_0_block::<J>),
                GgmlType::IQ4_NL => super::x8_legacy::<18, false, J>(stream, nb, &a, iq4_nl_block::<J>),
                t => unreachable!("x8: no AVX2 kernel of {t}"),
            }
        }
    }

    /// `super::legacy_x8_unpacked` at this level: Q8_0's and IQ4_NL's
    /// weights signed, as the AVX2 panels take them (their `legacy_off`
    /// is 0 there).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `at` holds one group block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn legacy_x8_unpacked(wty: GgmlType, at: &[u8]) -> X8Unpacked {
        // SAFETY: this function's features; one group block.
        unsafe {
            match wty {
                GgmlType::Q4_0 => super::q4_0_x8_unpack(at),
                GgmlType::Q4_1 => super::q4_1_x8_unpack(at),
                GgmlType::Q5_0 => q5_0_unpack(at),
                GgmlType::Q8_0 => q8_0_unpack(at),
                GgmlType::IQ4_NL => iq4_nl_unpack(at),
                t => unreachable!("x8: no AVX2 panel unpacking of {t}"),
            }
        }
    }

    /// The integer sum of 32 unsigned weights of at most 31 (`u[k]`:
    /// elements 4k..4k + 4 of the eight rows) against activation row
    /// `aj`'s block b, from `start`.
    #[inline(always)]
    unsafe fn isum_small(u: &[__m256i; 8], aj: &ActRow<'_>, b: usize, start: __m256i) -> __m256i {
        let y: &[i8; 32] = aj.qs[32 * b..32 * b + 32].try_into().unwrap();
        // SAFETY: AVX2 (the callers').
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            unroll!(k in [0, 1, 2, 3] {
                lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(u[k], bcast4(y, 4 * k)));
                hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(u[4 + k], bcast4(y, 16 + 4 * k)));
            });
            _mm256_add_epi32(_mm256_add_epi32(start, _mm256_madd_epi16(lo, ones)), _mm256_madd_epi16(hi, ones))
        }
    }

    #[inline(always)]
    unsafe fn q4_0_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
        // SAFETY: as `super::x8_block`; Q4_0's unpacking is AVX2 and F16C alone.
        unsafe {
            super::x8_block::<J, { crate::qdot::Q4_0_OFF }, false>(super::q4_0_x8_unpack, isum_small, at, b, a, t)
        }
    }

    #[inline(always)]
    unsafe fn q5_0_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
        // SAFETY: as `super::x8_block`.
        unsafe { super::x8_block::<J, { crate::qdot::Q5_0_OFF }, false>(q5_0_unpack, isum_small, at, b, a, t) }
    }

    #[inline(always)]
    unsafe fn q4_1_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
        // SAFETY: as `super::x8_block`.
        unsafe { super::x8_block::<J, 0, true>(super::q4_1_x8_unpack, isum_small, at, b, a, t) }
    }

    /// Q5_0's group block: each stored mask word broadcast, its byte
    /// `e / 8` moved to byte e and tested for bit `e % 8`.
    #[inline(always)]
    unsafe fn q5_0_unpack(at: &[u8]) -> X8Unpacked {
        // SAFETY: the callers' features; a whole group block.
        unsafe {
            let (bit5, nib) = (_mm256_set1_epi8(0x10), _mm256_set1_epi8(0x0F));
            // `vpshufb` picks within each 128-bit half, and the broadcast
            // word is in both: bytes 0 and 1 for the low half, 2 and 3 for
            // the high one.
            let spread = _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
            );
            let bits = _mm256_set1_epi64x(i64::from_le_bytes([1, 2, 4, 8, 16, 32, 64, 128]));
            let q: [__m256i; 4] = core::array::from_fn(|k| load_word(&at[16..], 1 + k));
            let mut u = [_mm256_setzero_si256(); 8];
            unroll!(i in [0, 1, 2, 3, 4, 5, 6, 7] {
                let mask = i32::from_le_bytes(at[16 + 4 * i..20 + 4 * i].try_into().unwrap());
                let rep = _mm256_shuffle_epi8(_mm256_set1_epi32(mask), spread);
                let fifth = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(rep, bits), bits), bit5);
                let nibbles = if i < 4 { q[i % 4] } else { _mm256_srli_epi16::<4>(q[i % 4]) };
                u[i] = _mm256_or_si256(_mm256_and_si256(nibbles, nib), fifth);
            });
            (u, super::x8_d(at), _mm256_setzero_ps())
        }
    }

    /// Q4_K stored interleaved (`crate::x8`, as [`super::q4_k_x8`] reads
    /// it) at this level: [`q4_k_term`]. The reference's integers and f32
    /// step, hence its bits.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; as [`super::q4_k_x8`] otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q4_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
        super::x8_blocks::<BlockQ4_K, J>(stream, nb, |at, b, ahead| {
            let word = |w: usize| load_word(at, w);
            let head = [word(0), word(1), word(2), word(3)];
            // SAFETY: this function's features.
            unsafe {
                q4_k_term::<J, false>(
                    head,
                    |c| core::array::from_fn(|k| word(4 + 8 * c + k)),
                    |_, _| unreachable!("Q4_K has no fifth bits"),
                    a,
                    b,
                    ahead,
                )
            }
        })
    }

    /// Q5_K stored interleaved at this level: [`super::q5_k_x8`]'s words
    /// and fifth bits, [`q4_k_term`]'s arithmetic.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; as [`super::q5_k_x8`] otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q5_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
        super::x8_blocks::<BlockQ5_K, J>(stream, nb, |at, b, ahead| {
            let word = |w: usize| load_word(at, w);
            let head = [word(0), word(1), word(2), word(3)];
            let qh: [__m256i; 8] = core::array::from_fn(|k| word(4 + k));
            // SAFETY: this function's features.
            let to4 = |v: __m256i, n: usize| unsafe { super::bit_to_4(v, n) };
            // SAFETY: this function's features.
            unsafe {
                q4_k_term::<J, true>(
                    head,
                    |c| core::array::from_fn(|k| word(12 + 8 * c + k)),
                    |c, k| (to4(qh[k], 2 * c), to4(qh[k], 2 * c + 1)),
                    a,
                    b,
                    ahead,
                )
            }
        })
    }

    /// `super::q4_k_term` without VNNI: each sub-block's `Σ u·y` as
    /// `vpmaddubsw` pairs added as i16 and widened by one `vpmaddwd` against
    /// its scale (in both halves of each lane), so the scale multiply costs
    /// nothing more. Q4_K's `u <= 15` lets a sub-block's eight steps add as
    /// i16 (at most 8·2·15·127 = 30480); Q5_K's `u <= 31` (`FIVE`) four
    /// (4·2·31·127 = 31496), its two halves widened apart. The mins' pairs
    /// as there, with `vpmaddwd` and adds for `vpdpwssd`. The same exact
    /// integers and the same f32 step (`k_group_term`).
    #[inline(always)]
    unsafe fn q4_k_term<const J: usize, const FIVE: bool>(
        head: [__m256i; 4],
        qs: impl Fn(usize) -> [__m256i; 8],
        fifth: impl Fn(usize, usize) -> (__m256i, __m256i),
        a: [ActRow<'_>; J],
        b: usize,
        ahead: BlockAhead<'_>,
    ) -> [__m256; J] {
        // SAFETY: AVX2, FMA and F16C (the callers'); the bsums slice is 32 bytes.
        unsafe {
            let nib = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            let [dm, w0, w1, w2] = head;
            let d = f16_lanes(dm);
            let dmin = f16_lanes(_mm256_srli_epi32::<16>(dm));
            let [sc_lo, mn_lo, sc_hi, mn_hi] = super::k4_scales_mins_x8(w0, w1, w2);
            let mins = [byte_pair(mn_lo, 0), byte_pair(mn_lo, 2), byte_pair(mn_hi, 0), byte_pair(mn_hi, 2)];
            let mut m = [_mm256_setzero_si256(); J];
            for j in 0..J {
                let bs = &a[j].bsums[16 * b..16 * b + 16];
                let g = _mm256_loadu_si256(bs.as_ptr().cast());
                let sums = _mm256_madd_epi16(g, ones);
                let packed = _mm256_packs_epi32(sums, sums);
                let pair = |w: i32| _mm256_permutevar8x32_epi32(packed, _mm256_set1_epi32(w));
                let lo = _mm256_add_epi32(_mm256_madd_epi16(mins[0], pair(0)), _mm256_madd_epi16(mins[1], pair(1)));
                let hi = _mm256_add_epi32(_mm256_madd_epi16(mins[2], pair(4)), _mm256_madd_epi16(mins[3], pair(5)));
                m[j] = _mm256_add_epi32(lo, hi);
            }
            let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
            let mut isum = [_mm256_setzero_si256(); J];
            unroll!(c in [0, 1, 2, 3] {
                let q = qs(c);
                let z = _mm256_setzero_si256();
                // i16 sums of sub-blocks 2c (`lo`) and 2c + 1 (`hi`): one
                // each for Q4_K, a half of the steps each for Q5_K.
                let (mut lo, mut hi) = ([[z; 2]; J], [[z; 2]; J]);
                unroll!(k in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if k.is_multiple_of(2) {
                        ahead.part::<16>(4 * c + k / 2);
                    }
                    let (mut ul, mut uh) =
                        (_mm256_and_si256(q[k], nib), _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib));
                    if FIVE {
                        let (fl, fh) = fifth(c, k);
                        (ul, uh) = (_mm256_or_si256(ul, fl), _mm256_or_si256(uh, fh));
                    }
                    let h = if FIVE { k / 4 } else { 0 };
                    for j in 0..J {
                        let pl = maddubs_at(ul, &y[j][64 * c + 4 * k..]);
                        let ph = maddubs_at(uh, &y[j][64 * c + 32 + 4 * k..]);
                        lo[j][h] = _mm256_add_epi16(lo[j][h], pl);
                        hi[j][h] = _mm256_add_epi16(hi[j][h], ph);
                    }
                });
                let sc = if c < 2 { sc_lo } else { sc_hi };
                let jb = 2 * (c as u8 % 2);
                // Each lane's scale byte as both of its i16.
                let s0 = _mm256_shuffle_epi8(sc, word_control([jb, 0x80, jb, 0x80]));
                let s1 = _mm256_shuffle_epi8(sc, word_control([jb + 1, 0x80, jb + 1, 0x80]));
                for j in 0..J {
                    let mut t = _mm256_add_epi32(_mm256_madd_epi16(lo[j][0], s0), _mm256_madd_epi16(hi[j][0], s1));
                    if FIVE {
                        t = _mm256_add_epi32(
                            t,
                            _mm256_add_epi32(_mm256_madd_epi16(lo[j][1], s0), _mm256_madd_epi16(hi[j][1], s1)),
                        );
                    }
                    isum[j] = _mm256_add_epi32(isum[j], t);
                }
            });
            core::array::from_fn(|j| k_group_term(isum[j], m[j], d, dmin, _mm256_set1_ps(a[j].d[b]), 0))
        }
    }

    /// `vpmaddubsw` of `u` by the four activations at `y`'s start
    /// broadcast to every lane, the broadcast load next to its product:
    /// as [`super::dpbusd_at`], so that the compiler cannot hoist the
    /// block's broadcasts and spill them (with 16 registers the AVX2
    /// blocks spill anyway, and the hoisted broadcasts made it worse). On
    /// the Xeon of stop 56 at `WHALE_SIMD=avx2`, `x8_bw 1 1 2048 TYPE` and
    /// `x8_bw 2 1000 2048 TYPE`, GB/s, alternating: Q6_K from L2
    /// 21.7-22.0 → 25.7-27.5, from memory 26.0-28.7 → 28.1-28.6; Q4_K
    /// 23.0-24.6 → 25.2-25.6 and 29.0-29.8 → 31.6; Q5_K 20.4 → 22.0-22.4
    /// and 26.1-26.5 → 29.1-30.0; Q2_K 15.6-16.2 → 16.2-16.6 from L2. Not
    /// for the 32-element types: Q5_0 and Q4_0 from L2 were 3-10 % slower.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn maddubs_at(u: __m256i, y: &[i8]) -> __m256i {
        assert!(y.len() >= 4);
        let t: __m256i;
        // SAFETY: AVX2 (this function's); reads y[0..4].
        unsafe {
            core::arch::asm!(
                "vpbroadcastd {t}, dword ptr [{y}]",
                "vpmaddubsw {t}, {u}, {t}",
                t = out(ymm_reg) t,
                u = in(ymm_reg) u,
                y = in(reg) y.as_ptr(),
                options(pure, readonly, nostack, preserves_flags)
            );
        }
        t
    }

    /// Q6_K stored interleaved at this level: [`super::q6_k_x8`]'s words,
    /// its unpacking of `u = q + 32`, and `vpmaddubsw` pairs (at most
    /// 2·63·127) added as i16 two steps at a time (32004) and widened by
    /// `vpmaddwd` against the group's signed scale, into one sum per
    /// activation row. The offset comes off as the reference takes it,
    /// `isum - 32·Σ sc·Σy` (`k_group_term`'s `off`), with `Σ sc·Σy` two
    /// groups a `vpmaddwd`. The same exact integers and f32 step.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; as [`super::q6_k_x8`] otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q6_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
        let nib = _mm256_set1_epi8(0x0F);
        let m30 = _mm256_set1_epi8(0x30);
        super::x8_blocks::<BlockQ6_K, J>(stream, nb, |at, b, ahead| {
            let word = |w: usize| load_word(at, w);
            let dv = &at[52 * 32..52 * 32 + 16];
            // SAFETY: `dv` is the eight rows' 16 bytes of `d`; loadu is unaligned.
            let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(dv.as_ptr().cast()) });
            let sc = [word(48), word(49), word(50), word(51)];
            // Bytes `j` and `j2` of each lane's word as its two i16, sign-extended.
            let pair = |w: __m256i, j: u8, j2: u8| {
                _mm256_srai_epi16::<8>(_mm256_shuffle_epi8(w, word_control([j, j, j2, j2])))
            };
            let bs: [&[i16]; J] = a.map(|a| &a.bsums[16 * b..16 * b + 16]);
            let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
            let mut m = [_mm256_setzero_si256(); J];
            for i in 0..8 {
                let p = pair(sc[i / 2], 2 * (i % 2) as u8, 2 * (i % 2) as u8 + 1);
                for j in 0..J {
                    // SAFETY: this function's features.
                    m[j] = _mm256_add_epi32(m[j], _mm256_madd_epi16(p, unsafe { super::bsum_pair(bs[j], 2 * i) }));
                }
            }
            let mut isum = [_mm256_setzero_si256(); J];
            unroll!(h in [0, 1] {
                // As `super::q6_k_term`: element 128h + 32s + l is nibble
                // s/2 of ql[64h + 32(s%2) + l] with bits 2s..2s+2 of
                // qh[32h + l]; group 8h + 2s + l/16.
                // The words loaded where they are used, so that four
                // activation rows' sums and their operands fit the 16
                // registers.
                let qh = |k: usize| word(32 + 8 * h + k);
                unroll!(p in [0, 1] {
                    let q = |k: usize| word(16 * h + 8 * p + k);
                    unroll!(hf in [0, 1] {
                        let (g_lo, g_hi) = (8 * h + 2 * p + hf, 8 * h + 2 * (p + 2) + hf);
                        let s_lo = pair(sc[g_lo / 4], (g_lo % 4) as u8, (g_lo % 4) as u8);
                        let s_hi = pair(sc[g_hi / 4], (g_hi % 4) as u8, (g_hi % 4) as u8);
                        unroll!(k2 in [0, 1] {
                            ahead.part::<16>(8 * h + 4 * p + 2 * hf + k2);
                            let mut u = [[_mm256_setzero_si256(); 2]; 2];
                            unroll!(e in [0, 1] {
                                let k = 4 * hf + 2 * k2 + e;
                                let (qk, qhk) = (q(k), qh(k));
                                let (hb_lo, hb_hi) = if p == 0 {
                                    (_mm256_slli_epi16::<4>(qhk), qhk)
                                } else {
                                    (_mm256_slli_epi16::<2>(qhk), _mm256_srli_epi16::<2>(qhk))
                                };
                                u[0][e] = _mm256_or_si256(_mm256_and_si256(qk, nib), _mm256_and_si256(hb_lo, m30));
                                u[1][e] = _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(qk), nib),
                                    _mm256_and_si256(hb_hi, m30),
                                );
                            });
                            let k0 = 4 * hf + 2 * k2;
                            for j in 0..J {
                                let at_lo = 128 * h + 32 * p + 4 * k0;
                                let at_hi = 128 * h + 32 * (p + 2) + 4 * k0;
                                let t_lo = _mm256_add_epi16(
                                    maddubs_at(u[0][0], &y[j][at_lo..]),
                                    maddubs_at(u[0][1], &y[j][at_lo + 4..]),
                                );
                                let t_hi = _mm256_add_epi16(
                                    maddubs_at(u[1][0], &y[j][at_hi..]),
                                    maddubs_at(u[1][1], &y[j][at_hi + 4..]),
                                );
                                isum[j] = _mm256_add_epi32(
                                    isum[j],
                                    _mm256_add_epi32(_mm256_madd_epi16(t_lo, s_lo), _mm256_madd_epi16(t_hi, s_hi)),
                                );
                            }
                        });
                    });
                });
            });
            core::array::from_fn(|j| {
                // SAFETY: this function's features.
                unsafe { k_group_term(isum[j], m[j], d, _mm256_setzero_ps(), _mm256_set1_ps(a[j].d[b]), 32) }
            })
        })
    }

    /// Q2_K stored interleaved at this level: [`super::q2_k_x8`]'s words and
    /// order, a group's four steps of `vpmaddubsw` pairs added as i16 (at
    /// most 4·2·3·127) and widened by `vpmaddwd` against its scale in both
    /// halves of each lane, the mins as there with `vpmaddwd` and adds.
    /// The same exact integers and f32 step.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; as [`super::q2_k_x8`] otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q2_k_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
        let (m2, m4) = (_mm256_set1_epi8(0x03), _mm256_set1_epi8(0x0F));
        super::x8_blocks::<BlockQ2_K, J>(stream, nb, |at, b, ahead| {
            ahead.all();
            let word = |w: usize| load_word(at, w);
            let dm = word(20);
            let d = f16_lanes(dm);
            let dmin = f16_lanes(_mm256_srli_epi32::<16>(dm));
            let sc_words: [__m256i; 4] = core::array::from_fn(&word);
            let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
            let bs: [&[i16]; J] = a.map(|a| &a.bsums[16 * b..16 * b + 16]);
            // SAFETY: this function's features.
            let m = unsafe { super::q2_k_mins_x8(&sc_words, &bs) };
            let mut isum = [_mm256_setzero_si256(); J];
            unroll!(h in [0, 1] {
                unroll!(hf in [0, 1] {
                    let q: [__m256i; 4] = core::array::from_fn(|k| word(4 + 8 * h + 4 * hf + k));
                    unroll!(s in [0, 1, 2, 3] {
                        let g = 8 * h + 2 * s + hf;
                        let jb = (g % 4) as u8;
                        let scale =
                            _mm256_shuffle_epi8(_mm256_and_si256(sc_words[g / 4], m4), word_control([jb, 0x80, jb, 0x80]));
                        let mut sums = [_mm256_setzero_si256(); J];
                        unroll!(k in [0, 1, 2, 3] {
                            let u = _mm256_and_si256(_mm256_srl_epi16(q[k], _mm_cvtsi32_si128(2 * s as i32)), m2);
                            for j in 0..J {
                                let at = 128 * h + 32 * s + 16 * hf + 4 * k;
                                sums[j] = _mm256_add_epi16(sums[j], maddubs_at(u, &y[j][at..]));
                            }
                        });
                        for j in 0..J {
                            isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(sums[j], scale));
                        }
                    });
                });
            });
            core::array::from_fn(|j| {
                // SAFETY: this function's features.
                unsafe { k_group_term(isum[j], m[j], d, dmin, _mm256_set1_ps(a[j].d[b]), 0) }
            })
        })
    }

    /// IQ4_XS stored interleaved at this level: [`super::iq4_xs_x8`]'s
    /// words, each nibble through IQ4's signed table, multiplied as
    /// magnitudes against the activations with the weights' signs
    /// (`vpsignb`; a pair at most 2·127·127, so each step is widened) by
    /// `vpmaddwd` against the sub-block's scale `ls - 32` in both halves of
    /// each lane. The reference's integers and `(d·da)·isum`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; as [`super::iq4_xs_x8`] otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn iq4_xs_x8<const J: usize>(stream: &[u8], nb: usize, a: [ActRow<'_>; J]) -> [[f32; ROWS]; J] {
        debug_assert_eq!(crate::iq::post_scale(GgmlType::IQ4_XS), 1.0);
        // SAFETY: 16 table bytes.
        let table = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(crate::iq::KVALUES_IQ4.as_ptr().cast()) });
        let nib = _mm256_set1_epi8(0x0F);
        super::x8_blocks::<crate::blocks::BlockIq4Xs, J>(stream, nb, |at, b, ahead| {
            let word = |w: usize| load_word(at, w);
            let (w0, sl) = (word(0), word(1));
            let d = f16_lanes(w0);
            let sh = _mm256_srli_epi32::<16>(w0);
            let y: [&[i8; QK_K]; J] = a.map(|a| a.qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
            let mut isum = [_mm256_setzero_si256(); J];
            unroll!(ib in [0, 1, 2, 3, 4, 5, 6, 7] {
                ahead.part::<8>(ib);
                // SAFETY: this function's features.
                let scale = unsafe { super::i16_twice(super::iq4_xs_scale_x8(sl, sh, ib)) };
                unroll!(k in [0, 1, 2, 3] {
                    let q = word(2 + 4 * ib + k);
                    let vl = _mm256_shuffle_epi8(table, _mm256_and_si256(q, nib));
                    let vh = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(q), nib));
                    let (al, ah) = (_mm256_abs_epi8(vl), _mm256_abs_epi8(vh));
                    for j in 0..J {
                        let pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(bcast4(y[j], 32 * ib + 4 * k), vl));
                        let ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(bcast4(y[j], 32 * ib + 16 + 4 * k), vh));
                        isum[j] = _mm256_add_epi32(
                            isum[j],
                            _mm256_add_epi32(_mm256_madd_epi16(pl, scale), _mm256_madd_epi16(ph, scale)),
                        );
                    }
                });
            });
            core::array::from_fn(|j| {
                _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(a[j].d[b])), _mm256_cvtepi32_ps(isum[j]))
            })
        })
    }

    /// The integer sum of 32 signed weights `w` (vector k: elements
    /// 4k..4k + 4 of the eight rows) against activation row `aj`'s block
    /// b, from `start`: magnitudes against the activations with the
    /// weights' signs (`vpsignb`), each step's pairs (at most 2·128·127)
    /// widened by `vpmaddwd`.
    #[inline(always)]
    unsafe fn isum_signed(w: &[__m256i; 8], aj: &ActRow<'_>, b: usize, start: __m256i) -> __m256i {
        let y: &[i8; 32] = aj.qs[32 * b..32 * b + 32].try_into().unwrap();
        // SAFETY: AVX2 (the callers').
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let step = |v: __m256i, at: usize| {
                _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(bcast4(y, at), v)), ones)
            };
            let (mut lo, mut hi) = (start, _mm256_setzero_si256());
            unroll!(k in [0, 1, 2, 3] {
                lo = _mm256_add_epi32(lo, step(w[k], 4 * k));
                hi = _mm256_add_epi32(hi, step(w[4 + k], 16 + 4 * k));
            });
            _mm256_add_epi32(lo, hi)
        }
    }

    /// Q8_0's group block with its stored `q + 128` flipped back: signed.
    #[inline(always)]
    unsafe fn q8_0_unpack(at: &[u8]) -> X8Unpacked {
        // SAFETY: the callers' features; a whole group block.
        unsafe {
            let flip = _mm256_set1_epi8(i8::MIN);
            (
                core::array::from_fn(|k| _mm256_xor_si256(load_word(&at[16..], k), flip)),
                super::x8_d(at),
                _mm256_setzero_ps(),
            )
        }
    }

    /// IQ4_NL's group block: each nibble through IQ4's signed table.
    #[inline(always)]
    unsafe fn iq4_nl_unpack(at: &[u8]) -> X8Unpacked {
        // SAFETY: the callers' features; a whole group block; 16 table bytes.
        unsafe {
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(crate::iq::KVALUES_IQ4.as_ptr().cast()));
            let u = super::x8_nibbles(core::array::from_fn(|k| load_word(&at[16..], k)));
            (u.map(|v| _mm256_shuffle_epi8(table, v)), super::x8_d(at), _mm256_setzero_ps())
        }
    }

    #[inline(always)]
    unsafe fn q8_0_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
        // SAFETY: as `super::x8_block`.
        unsafe { super::x8_block::<J, 0, false>(q8_0_unpack, isum_signed, at, b, a, t) }
    }

    #[inline(always)]
    unsafe fn iq4_nl_block<const J: usize>(at: &[u8], b: usize, a: &[ActRow<'_>; J], t: &mut [[__m256; 2]; J]) {
        // SAFETY: as `super::x8_block`.
        unsafe { super::x8_block::<J, 0, false>(iq4_nl_unpack, isum_signed, at, b, a, t) }
    }

    /// Whether [`k_x8_unpacked`] takes `wty`.
    pub(crate) fn unpacks_k_x8(wty: GgmlType) -> bool {
        matches!(wty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::IQ4_XS)
    }

    /// A group block of a K type stored interleaved (Q2_K, Q4_K, Q5_K,
    /// Q6_K, IQ4_XS), in the panels' form (`crate::panel::Panel`, eight
    /// rows): its 64 vectors of quants `q` (vector w: elements 4w..4w + 4
    /// of each row, the decode kernels' unpacked words as they come), the
    /// group scales `sc`, the multipliers of the activation's 16-element
    /// sums `mv` (Q2_K's mins, Q4_K's and Q5_K's twice each, Q6_K's scales
    /// in pairs), `d` and `dmin`, as `avx2_q8::unpack_k` (IQ4_XS:
    /// `iq::avx2::unpack_iq4_xs_signed`, signed table values) gives them
    /// for each row of the file's layout; returns the offset of `mv` (0,
    /// Q6_K's 32). No put-back to the file's layout and no transpose.
    /// `iq4_off`: IQ4_XS's values are given plus this (0: signed, for the
    /// AVX2 panels; the VNNI panels' `iq::avx512::panel_offset`, 127, as
    /// `iq::avx512::unpack_k` gives them), with its scales as `mv`, and
    /// it is returned as the offset.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `at` holds one group block
    /// of `wty` ([`unpacks_k_x8`]); `q` has 64 vectors, `sc` a block's
    /// scale groups and `mv` 8, all with room for group `g`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn k_x8_unpacked<const R: usize, const V: usize>(
        wty: GgmlType,
        at: &[u8],
        g: usize,
        iq4_off: i32,
        q: &mut [[u8; V]],
        sc: &mut [[i32; R]],
        mv: &mut [[i32; R]],
        d: &mut [f32; R],
        dmin: &mut [f32; R],
    ) -> i32 {
        let word = |w: usize| load_word(at, w);
        // Group g's eight rows: bytes 32g.. of each vector, entries 8g.. of
        // each row array (a panel of sixteen rows holds two groups).
        let st = |dst: &mut [u8; V], v: __m256i| {
            // SAFETY: 32 bytes.
            unsafe { _mm256_storeu_si256(dst[32 * g..32 * g + 32].as_mut_ptr().cast(), v) }
        };
        let sti = |dst: &mut [i32; R], v: __m256i| {
            // SAFETY: 8 i32.
            unsafe { _mm256_storeu_si256(dst[8 * g..8 * g + 8].as_mut_ptr().cast(), v) }
        };
        let stf = |dst: &mut [f32; R], v: __m256| {
            // SAFETY: 8 f32.
            unsafe { _mm256_storeu_ps(dst[8 * g..8 * g + 8].as_mut_ptr(), v) }
        };
        let nib = _mm256_set1_epi8(0x0F);
        // SAFETY: this function's features; the table and `d` loads are 16 bytes.
        unsafe {
            match wty {
                GgmlType::Q4_K | GgmlType::Q5_K => {
                    let [dm, w0, w1, w2] = [word(0), word(1), word(2), word(3)];
                    stf(d, f16_lanes(dm));
                    stf(dmin, f16_lanes(_mm256_srli_epi32::<16>(dm)));
                    let [sc_lo, mn_lo, sc_hi, mn_hi] = super::k4_scales_mins_x8(w0, w1, w2);
                    for s in 0..8 {
                        let j = (s % 4) as u8;
                        sti(&mut sc[s], super::byte_of(if s < 4 { sc_lo } else { sc_hi }, j));
                        let mn = if s < 4 { mn_lo } else { mn_hi };
                        sti(&mut mv[s], _mm256_shuffle_epi8(mn, word_control([j, 0x80, j, 0x80])));
                    }
                    let five = wty == GgmlType::Q5_K;
                    let base = if five { 12 } else { 4 };
                    unroll!(c in [0, 1, 2, 3] {
                        for k in 0..8 {
                            let w = word(base + 8 * c + k);
                            let mut lo = _mm256_and_si256(w, nib);
                            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w), nib);
                            if five {
                                // Bits 2c and 2c + 1 of each `qh` byte to bit 4.
                                let h = word(4 + k);
                                lo = _mm256_or_si256(lo, super::bit_to_4(h, 2 * c));
                                hi = _mm256_or_si256(hi, super::bit_to_4(h, 2 * c + 1));
                            }
                            st(&mut q[16 * c + k], lo);
                            st(&mut q[16 * c + 8 + k], hi);
                        }
                    });
                    0
                }
                GgmlType::Q6_K => {
                    let m30 = _mm256_set1_epi8(0x30);
                    let dv = &at[52 * 32..52 * 32 + 16];
                    stf(d, _mm256_cvtph_ps(_mm_loadu_si128(dv.as_ptr().cast())));
                    stf(dmin, _mm256_setzero_ps());
                    let scw = [word(48), word(49), word(50), word(51)];
                    for (grp, dst) in sc.iter_mut().enumerate().take(16) {
                        sti(dst, super::q6_k_scale_x8(&scw, grp));
                    }
                    for p in 0..8 {
                        let j = 2 * (p % 2) as u8;
                        let pair = _mm256_shuffle_epi8(scw[p / 2], word_control([j, j, j + 1, j + 1]));
                        sti(&mut mv[p], _mm256_srai_epi16::<8>(pair));
                    }
                    unroll!(h in [0, 1] {
                        unroll!(p in [0, 1] {
                            for k in 0..8 {
                                let (ql, qh) = (word(16 * h + 8 * p + k), word(32 + 8 * h + k));
                                let (hb_lo, hb_hi) = if p == 0 {
                                    (_mm256_slli_epi16::<4>(qh), qh)
                                } else {
                                    (_mm256_slli_epi16::<2>(qh), _mm256_srli_epi16::<2>(qh))
                                };
                                let lo = _mm256_or_si256(_mm256_and_si256(ql, nib), _mm256_and_si256(hb_lo, m30));
                                let hi = _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql), nib),
                                    _mm256_and_si256(hb_hi, m30),
                                );
                                st(&mut q[32 * h + 8 * p + k], lo);
                                st(&mut q[32 * h + 8 * (p + 2) + k], hi);
                            }
                        });
                    });
                    32
                }
                GgmlType::Q2_K => {
                    let (m2, m4) = (_mm256_set1_epi8(0x03), nib);
                    let dm = word(20);
                    stf(d, f16_lanes(dm));
                    stf(dmin, f16_lanes(_mm256_srli_epi32::<16>(dm)));
                    for w in 0..4 {
                        let sw = word(w);
                        let (scales, mins) =
                            (_mm256_and_si256(sw, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(sw), m4));
                        for j in 0..4 {
                            sti(&mut sc[4 * w + j], super::byte_of(scales, j as u8));
                        }
                        for half in 0..2 {
                            sti(&mut mv[2 * w + half], byte_pair(mins, 2 * half as u8));
                        }
                    }
                    // Element 128h + 32s + l: bits 2s..2s + 2 of qs[32h + l],
                    // quant word 4 + 8h + 4hf + k holding l = 16hf + 4k...
                    unroll!(s in [0, 1, 2, 3] {
                        for h in 0..2 {
                            for x in 0..8 {
                                let w = word(4 + 8 * h + x);
                                let u = _mm256_and_si256(_mm256_srl_epi16(w, _mm_cvtsi32_si128(2 * s as i32)), m2);
                                st(&mut q[32 * h + 8 * s + x], u);
                            }
                        }
                    });
                    0
                }
                GgmlType::IQ4_XS => {
                    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(crate::iq::KVALUES_IQ4.as_ptr().cast()));
                    let (w0, sl) = (word(0), word(1));
                    stf(d, f16_lanes(w0));
                    stf(dmin, _mm256_setzero_ps());
                    let sh = _mm256_srli_epi32::<16>(w0);
                    for ib in 0..8 {
                        let s32 = super::iq4_xs_scale_x8(sl, sh, ib);
                        sti(&mut sc[ib], s32);
                        // Both 16-element groups of the sub-block: its scale.
                        sti(&mut mv[ib], super::i16_twice(s32));
                        let off8 = _mm256_set1_epi8(iq4_off as i8);
                        for k in 0..4 {
                            let w = word(2 + 4 * ib + k);
                            let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(w, nib));
                            st(&mut q[8 * ib + k], _mm256_add_epi8(lo, off8));
                            let h = _mm256_and_si256(_mm256_srli_epi16::<4>(w), nib);
                            st(&mut q[8 * ib + 4 + k], _mm256_add_epi8(_mm256_shuffle_epi8(table, h), off8));
                        }
                    }
                    iq4_off
                }
                t => unreachable!("x8: no panel unpacking of {t} here"),
            }
        }
    }

    /// The low 16 bits of each i32 lane as eight packed halves, widened to f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn f16_lanes(v: __m256i) -> __m256 {
        let lo16 = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1,
            -1, -1,
        );
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(v, lo16));
        _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
    }

    /// Q4_1: eight rows against one Q8_1 row (`super::q4_1`'s arithmetic).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1(rows: [&[BlockQ4_1]; ROWS], a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
        let nib = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        rows_of_min::<BlockQ4_1, true>(&rows, ahead, |blk, b| {
            let [dm, _, _, _] = words4(blk.map(|k| (k as *const BlockQ4_1).cast::<u8>()));
            let q = words4(blk.map(|k| k.qs.as_ptr()));
            let d = f16_lanes(dm);
            let m = f16_lanes(_mm256_srli_epi32::<16>(dm));
            let y: &[i8; 32] = a.qs[32 * b..32 * b + 32].try_into().unwrap();
            // Eight steps of pairs of at most 3840 each: within i16.
            let mut s16 = _mm256_setzero_si256();
            unroll!(k in [0, 1, 2, 3] {
                let ul = _mm256_and_si256(q[k], nib);
                let uh = _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib);
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(ul, bcast4(y, 4 * k)));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(uh, bcast4(y, 16 + 4 * k)));
            });
            let isum = _mm256_madd_epi16(s16, ones);
            (
                _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(a.d[b])), _mm256_cvtepi32_ps(isum)),
                _mm256_mul_ps(m, _mm256_set1_ps(a.s[b])),
            )
        })
    }

    /// Q5_0: eight rows against one Q8_0 row (`super::q5_0`'s arithmetic).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5_0(rows: [&[BlockQ5_0]; ROWS], a: ActRow<'_>, ahead: &[u8]) -> [f32; ROWS] {
        let nib = _mm256_set1_epi8(0x0F);
        let bit5 = _mm256_set1_epi8(0x10);
        let ones = _mm256_set1_epi16(1);
        // 0x10 in byte e of each lane where bit j + e of its `qh` is set.
        let high = |qh: __m256i, j: u8| -> __m256i {
            let rep = _mm256_shuffle_epi8(qh, word_control([j / 8, j / 8, j / 8, j / 8]));
            let o = j % 8;
            let bits = _mm256_set1_epi32(i32::from_le_bytes([1 << o, 1 << (o + 1), 1 << (o + 2), 1 << (o + 3)]));
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(rep, bits), bits), bit5)
        };
        rows_of(&rows, ahead, |blk, b| {
            let [w0, w1, _, _] = words4(blk.map(|k| (k as *const BlockQ5_0).cast::<u8>()));
            let q = words4(blk.map(|k| k.qs.as_ptr()));
            let d = f16_lanes(w0);
            let qh = _mm256_or_si256(_mm256_srli_epi32::<16>(w0), _mm256_slli_epi32::<16>(w1));
            let y: &[i8; 32] = a.qs[32 * b..32 * b + 32].try_into().unwrap();
            // Four steps of pairs of at most 7936 each: within i16.
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            unroll!(k in [0, 1, 2, 3] {
                let ul = _mm256_or_si256(_mm256_and_si256(q[k], nib), high(qh, 4 * k as u8));
                let uh = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q[k]), nib),
                    high(qh, 16 + 4 * k as u8),
                );
                lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(ul, bcast4(y, 4 * k)));
                hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(uh, bcast4(y, 16 + 4 * k)));
            });
            let isum = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_set1_epi32(-16 * a.sums[b]), _mm256_madd_epi16(lo, ones)),
                _mm256_madd_epi16(hi, ones),
            );
            _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(a.d[b])), _mm256_cvtepi32_ps(isum))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type at every level this CPU has, called directly (which CPUs
    /// take these kernels in `matmul_q` depends on the vendor, see
    /// [`chosen`]): each of the eight results is the scalar
    /// reference's bits, over random blocks and all-set / all-clear ones
    /// against activations of ±1.
    #[test]
    fn eight_rows_give_the_scalar_bits() {
        let scalar = Verified::new(SimdLevel::Scalar).unwrap();
        let mut s = 11u64;
        let mut rnd = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        };
        let mut ran = 0;
        for level in [SimdLevel::Avx2Fma, SimdLevel::Avx512Vnni] {
            let Some(v) = Verified::new(level) else { continue };
            for wty in [GgmlType::Q4_K, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q6_K] {
                if !supports(v, wty, Q6_K_MIN_COLS) {
                    continue;
                }
                for cols in [256, 2048, Q6_K_MIN_COLS, 18432] {
                    let rb = wty.row_bytes(cols).unwrap();
                    for fill in [None, Some(0u8), Some(0xFF)] {
                        let mut w: Vec<u8> = (0..ROWS * rb).map(|_| fill.unwrap_or_else(&mut rnd)).collect();
                        // Finite scales: each f16's high byte small.
                        let ts = wty.type_size();
                        for blk in w.chunks_exact_mut(ts) {
                            match wty {
                                GgmlType::Q6_K => blk[ts - 1] = 0x1c,
                                GgmlType::Q4_K | GgmlType::Q4_1 => (blk[1], blk[3]) = (0x1c, 0x1c),
                                _ => blk[1] = 0x1c,
                            }
                        }
                        let x: Vec<f32> = (0..cols)
                            .map(|j| if (j + rnd() as usize).is_multiple_of(3) { -1.0 } else { 1.0 })
                            .collect();
                        let acts = crate::quantize_acts(wty, &x, 1, cols);
                        // SAFETY: a level this CPU has, whole rows, an
                        // activation row of as many columns.
                        let got = unsafe { dot(v, wty, &w, rb, acts.row(0), &[]) };
                        for (r, g) in got.iter().enumerate() {
                            let want =
                                crate::qdot::vec_dot_q_verified(scalar, wty, &w[r * rb..(r + 1) * rb], acts.row(0));
                            assert_eq!(g.to_bits(), want.to_bits(), "{level} {wty} {cols} {fill:?} row {r}");
                        }
                        ran += 1;
                    }
                }
            }
        }
        if ran == 0 {
            eprintln!("no AVX2 on this CPU: these kernels do not run here");
        }
    }
}
