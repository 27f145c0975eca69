//! AMX-INT8 tile products for many activation rows (x86-64 Linux only).
//!
//! Intel's Advanced Matrix Extensions (Sapphire Rapids and later) add eight
//! tile registers of up to 16 rows × 64 bytes and `tdpbssd`, which multiplies
//! a 16×K tile of signed bytes by a K×16 one into a 16×16 tile of i32 sums
//! in one instruction. Prefill multiplies hundreds of activation rows by the
//! same weights, and there the vector kernels of `avx2_q8` spend most of
//! their time unpacking weights and issuing 32-byte multiply-adds; the tiles
//! do the integer part of a whole 16×16 block of outputs at once.
//!
//! # Exactly the reference's arithmetic
//!
//! The block formulas of [`crate::qdot`] scale each block's (or K-quant
//! sub-block's) exact integer sum by a float that depends on both the weight
//! row and the activation row, so a tile product can only span one scale
//! group: 32 elements (legacy types) or 16 (Q2_K, Q3_K, Q6_K).
//! After each group the 16×16 integer sums are stored and:
//!
//! * legacy types: `acc[b % 8] += (dw * da) * isum` (and `mw * sa` for
//!   Q4_1 / Q5_1 in a second set of lanes), per output, in block order;
//! * K-quants: `isum += sc_g * dot_g` (exact i32), and once per 256-element
//!   block the float term of [`crate::qdot::term`] / `term_k`.
//!
//! These are the f32 operations of the scalar reference in the same order,
//! computed for sixteen outputs per AVX-512 register, and the integer sums
//! are exact whatever the order, so every output is bit-identical to
//! `vec_dot_q_ref`, as at every other level (tested in `tests/qdot.rs`).
//!
//! # Layout
//!
//! Weights are unpacked once per 16 weight rows (an "N tile") into signed
//! bytes in the tile layout `tdpbssd` wants for its second operand (four
//! consecutive elements of one weight row per 32-bit column), with the
//! blocks' scales as 16-wide vectors. Unpacking is scalar: its cost is
//! shared by every activation row (512 in a pp512 prefill). Activation rows
//! are read in place: a 16-row tile of quants is 16 rows of 32 (or 16)
//! bytes at a stride of `cols` bytes in the [`crate::QuantizedActs`] buffer.
//!
//! # Operating-system support
//!
//! Linux hands out AMX tile state only to processes that ask for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux 5.16+).
//! [`available`] checks the CPUID bits and asks once; if either fails, the
//! AMX level is simply not available and the AVX-512 kernels run.

use crate::dequant::{decode_ints, IntBlock};
use crate::q8::ActRow;
use crate::types::{GgmlType, QK32, QK_K};
use core::arch::asm;
use core::arch::x86_64::*;

/// Whether the CPU has AMX-TILE and AMX-INT8 and the OS lets this process
/// use them (asked once per process).
pub(crate) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| cpu_has_amx_int8() && request_tile_permission())
}

/// CPUID leaf 7, sub-leaf 0, EDX (0 where the CPU has no leaf 7): bit 24
/// AMX-TILE, bit 25 AMX-INT8.
fn leaf7_edx() -> u32 {
    if __cpuid(0).eax < 7 {
        return 0;
    }
    __cpuid_count(7, 0).edx
}

/// Whether the CPU has AMX tiles, whatever the OS allows: what marks
/// Intel's Sapphire Rapids and later cores, see `iq::avx512::gathers`.
pub(crate) fn cpu_has_tiles() -> bool {
    leaf7_edx() & (1 << 24) != 0
}

fn cpu_has_amx_int8() -> bool {
    let edx = leaf7_edx();
    edx & (1 << 24) != 0 && edx & (1 << 25) != 0
}

#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with these arguments only changes
    // the process's permission to use extended state; it reads and writes no
    // memory of ours. `syscall` clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// The weight types the tile kernels take.
pub(crate) fn supports(wty: GgmlType) -> bool {
    min_act_rows(wty).is_some()
}

/// From how many activation rows a product of `wty` goes to the tiles
/// (fewer go to the panels of [`crate::panel`] or the row kernels), or
/// `None` where the tiles are never faster. A tile product spans one scale
/// group (16 or 32 elements) and is followed by a store of 256 i32 sums and
/// their scaling, whatever the number of rows; the panels have no such
/// fixed cost. `prefill_shapes M 2` on a Xeon with AMX (2026-12-05),
/// panels or row kernels → tiles, GMAC/s at 2 threads:
///
/// * Q4_0 … Q8_0 (Q5_0 at 4864×896): m = 64 161 → 146, 128 171 → 208,
///   192 177 → 245; IQ4_NL (15872×896, `x8_bw 2 8 896 iq4_nl M`, ms,
///   panels → tiles, 2026-12-06): interleaved 8.1 → 4.3 at 128 rows,
///   39.2 → 23.9 at 512; the file's layout 9.5 → 8.0 and 39.9 → 33.1;
/// * Q6_K (896×4864): m = 128 178 → 176, 192 176 → 193, 512 174–177 →
///   214–216;
/// * Q4_K: slower on the tiles at every m up to 512 (896×4864: 196 → 159
///   at 512, 124 → 43 at 16), so never (Q5_K, the same panels, likewise);
/// * Q2_K / Q3_K, which have no panels: the row kernels at 16 rows 91 / 67
///   against 45 / 43, the tiles from 64 / 32 rows (99 against 91, 75
///   against 69).
pub(crate) fn min_act_rows(wty: GgmlType) -> Option<usize> {
    use GgmlType as G;
    match wty {
        G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::IQ4_NL => Some(128),
        G::Q6_K => Some(192),
        G::Q2_K => Some(64),
        G::Q3_K => Some(32),
        _ => None,
    }
}

/// Rows per tile (activation rows and weight rows alike).
pub(crate) const TILE: usize = 16;

// ----------------------------------------------------------------------------
// Tile instructions
// ----------------------------------------------------------------------------

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Tile registers, two sets so that two products are in flight at once:
/// tmm0/tmm1 the 16×16 i32 sums, tmm2/tmm3 16 activation rows of `group`
/// bytes, tmm4/tmm5 the weights (`group / 4` rows of 16 × 4 bytes).
struct Tiles;

impl Tiles {
    /// Configures this thread's tiles for scale groups of `group` (16 or 32)
    /// elements, until the returned value is dropped.
    ///
    /// # Safety
    /// [`available`] must have returned true.
    unsafe fn configure(group: usize) -> Tiles {
        let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for t in 0..2 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = TILE as u8;
            cfg.colsb[2 + t] = group as u16;
            cfg.rows[2 + t] = TILE as u8;
            cfg.colsb[4 + t] = 64;
            cfg.rows[4 + t] = (group / 4) as u8;
        }
        // SAFETY: (caller) AMX is enabled for this process; the configuration
        // is valid for palette 1 (at most 16 rows, 64 bytes per row).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly)) };
        Tiles
    }

    /// `out[m][n] = Σ_k a[m * a_stride + k] * b[(k / 4) * 64 + 4n + k % 4]`
    /// for 16 activation rows `m` and 16 weight rows `n`, `k < group`.
    ///
    /// # Safety
    /// `a` must be readable for 15 strides plus `group` bytes; `b` for
    /// `group * 16` bytes.
    #[inline(always)]
    unsafe fn dot(&self, a: *const i8, a_stride: usize, b: *const u8, out: &mut CTile) {
        // SAFETY: (caller) the tile loads stay inside `a` and `b`; the store
        // writes the 1 KiB of `out`.
        unsafe {
            asm!(
                "tileloadd tmm2, [{a} + {sa}*1]",
                "tileloadd tmm4, [{b} + {s64}*1]",
                "tilezero tmm0",
                "tdpbssd tmm0, tmm2, tmm4",
                "tilestored [{c} + {s64}*1], tmm0",
                a = in(reg) a,
                sa = in(reg) a_stride,
                b = in(reg) b,
                c = in(reg) out.0.as_mut_ptr(),
                s64 = in(reg) 64usize,
                options(nostack),
            );
        }
    }

    /// Two independent [`Tiles::dot`]s, `(a0, b0)` into `out0` and `(a1, b1)`
    /// into `out1`, interleaved so that the tile unit overlaps them.
    ///
    /// # Safety
    /// As [`Tiles::dot`], for both.
    #[inline(always)]
    unsafe fn dot2(&self, a: [*const i8; 2], a_stride: usize, b: [*const u8; 2], out: [&mut CTile; 2]) {
        let [o0, o1] = out;
        // SAFETY: as in `dot`, for each pair.
        unsafe {
            asm!(
                "tileloadd tmm2, [{a0} + {sa}*1]",
                "tileloadd tmm4, [{b0} + {s64}*1]",
                "tilezero tmm0",
                "tileloadd tmm3, [{a1} + {sa}*1]",
                "tileloadd tmm5, [{b1} + {s64}*1]",
                "tilezero tmm1",
                "tdpbssd tmm0, tmm2, tmm4",
                "tdpbssd tmm1, tmm3, tmm5",
                "tilestored [{c0} + {s64}*1], tmm0",
                "tilestored [{c1} + {s64}*1], tmm1",
                a0 = in(reg) a[0],
                a1 = in(reg) a[1],
                sa = in(reg) a_stride,
                b0 = in(reg) b[0],
                b1 = in(reg) b[1],
                c0 = in(reg) o0.0.as_mut_ptr(),
                c1 = in(reg) o1.0.as_mut_ptr(),
                s64 = in(reg) 64usize,
                options(nostack),
            );
        }
    }
}

impl Drop for Tiles {
    /// Returns the tile state to the initial state (so the OS need not save
    /// it), also when a panic unwinds.
    fn drop(&mut self) {
        // SAFETY: `tilerelease` only resets tile state, which this thread
        // configured in `configure`.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// 16×16 i32 sums, as `tilestored` writes them (row `m`, 16 columns).
#[repr(C, align(64))]
struct CTile([i32; TILE * TILE]);

// ----------------------------------------------------------------------------
// Weight unpacking
// ----------------------------------------------------------------------------

/// Sixteen weight rows (an N tile) unpacked for the tiles.
struct Unpacked {
    /// Elements per scale group (one `tdpbssd`): 32 or 16.
    group: usize,
    /// Per group `g` of the row, `group * 16` bytes: byte `64r + 4n + e` is
    /// quant `group * g + 4r + e` of weight row `n`.
    b: Vec<u8>,
    /// Per weight block: `d` (and `dmin`, or `m`) of the 16 rows.
    d: Vec<[f32; TILE]>,
    dmin: Vec<[f32; TILE]>,
    /// K-quants, per 16 elements: scale and min of the 16 rows.
    sc: Vec<[i32; TILE]>,
    mn: Vec<[i32; TILE]>,
}

impl Unpacked {
    fn new(wty: GgmlType, cols: usize) -> Unpacked {
        let group = match wty {
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q6_K => 16,
            _ => 32,
        };
        let nb = cols / wty.block_size();
        let k = wty.block_size() == QK_K;
        Unpacked {
            group,
            b: vec![0; cols * TILE],
            d: vec![[0.0; TILE]; nb],
            dmin: vec![[0.0; TILE]; nb],
            sc: vec![[0; TILE]; if k { cols / 16 } else { 0 }],
            mn: vec![[0; TILE]; if k { cols / 16 } else { 0 }],
        }
    }

    /// [`Unpacked::fill`] of rows of a 32-element type stored interleaved
    /// (`crate::x8`, whole groups of eight): each group block unpacked as
    /// the layout's decode kernels unpack it (`rows8::legacy_x8_unpacked`:
    /// eight vectors of four elements of each of the eight rows, unsigned
    /// `q + off`), made signed, is half of each of the block's eight tile
    /// rows. Putting the rows back in the file's layout first cost a
    /// Qwen2.5-0.5B prefill (Q5_0 and Q8_0) a tenth of its speed.
    ///
    /// # Safety
    /// The CPU must have AVX-512 VNNI (the AMX level has it).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn fill_x8_legacy(&mut self, wty: GgmlType, rows: &[u8], rb: usize) {
        let ts = wty.type_size();
        let g8 = crate::x8::ROWS;
        let nrows = rows.len() / rb;
        if nrows < TILE {
            self.b.fill(0);
            self.d.iter_mut().for_each(|v| v.fill(0.0));
            self.dmin.iter_mut().for_each(|v| v.fill(0.0));
        }
        // What `decode_ints` subtracts: the unsigned form's offset.
        let off = _mm256_set1_epi8(crate::panel::legacy_off(wty) as u8 as i8);
        for blk in 0..rb / ts {
            let tile = &mut self.b[blk * QK32 * TILE..(blk + 1) * QK32 * TILE];
            for g in 0..nrows / g8 {
                let at = &rows[g * g8 * rb + blk * g8 * ts..][..g8 * ts];
                // SAFETY: this function's features; `at` is one group block;
                // each store 32 bytes of a 64-byte tile row, or 8 f32 of 16.
                unsafe {
                    let (u, d, m) = crate::rows8::legacy_x8_unpacked(wty, at);
                    for (r, ur) in u.into_iter().enumerate() {
                        let dst = &mut tile[64 * r + 32 * g..64 * r + 32 * g + 32];
                        _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm256_sub_epi8(ur, off));
                    }
                    _mm256_storeu_ps(self.d[blk][8 * g..8 * g + 8].as_mut_ptr(), d);
                    _mm256_storeu_ps(self.dmin[blk][8 * g..8 * g + 8].as_mut_ptr(), m);
                }
            }
        }
    }

    /// Unpacks `rows` (at most 16 rows of `rb` bytes); missing rows are zero.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL (only so that the decoding loops
    /// vectorise with them).
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    unsafe fn fill(&mut self, wty: GgmlType, rows: &[u8], rb: usize, dec: &mut IntBlock) {
        let bs = wty.block_size();
        let ts = wty.type_size();
        let k = bs == QK_K;
        let group = self.group;
        let nrows = rows.len() / rb;
        if nrows < TILE {
            self.b.fill(0);
            self.d.iter_mut().for_each(|v| v.fill(0.0));
            self.dmin.iter_mut().for_each(|v| v.fill(0.0));
            self.sc.iter_mut().for_each(|v| v.fill(0));
            self.mn.iter_mut().for_each(|v| v.fill(0));
        }
        for (n, row) in rows.chunks_exact(rb).enumerate() {
            for (blk, bytes) in row.chunks_exact(ts).enumerate() {
                decode_ints(wty, bytes, dec);
                self.d[blk][n] = dec.d;
                self.dmin[blk][n] = dec.dmin;
                if k {
                    for g in 0..16 {
                        self.sc[blk * 16 + g][n] = dec.sc[g];
                        self.mn[blk * 16 + g][n] = dec.mn[g];
                    }
                }
                // Group j of the block is group `blk * bs / group + j` of the
                // row; its elements 4r..4r+4 go to tile row r, column n.
                let q: &[u8] = bytemuck::cast_slice(&dec.q[..bs]);
                let first = blk * bs / group;
                for (j, gq) in q.chunks_exact(group).enumerate() {
                    let tile = &mut self.b[(first + j) * group * TILE..][..group * TILE];
                    for (r, quad) in gq.chunks_exact(4).enumerate() {
                        tile[64 * r + 4 * n..64 * r + 4 * n + 4].copy_from_slice(quad);
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Products
// ----------------------------------------------------------------------------

/// One 16-row activation tile: its quants and its per-block fields
/// transposed to one 16-wide vector per block (row `m` in lane `m`). Made
/// once per product ([`act_tiles`]) and shared by every thread's part.
pub(crate) struct ActTile<'a> {
    /// The 16 rows' quants, `16 * cols` bytes: tile loads read all of them.
    qs: &'a [i8],
    /// Per block: `d` of the 16 rows.
    d: Vec<[f32; TILE]>,
    /// Q8_1 (Q4_1 / Q5_1 weights), per block: `s` of the 16 rows.
    s: Vec<[f32; TILE]>,
    /// Q8_K (K-quants with mins), per 16 elements: the sum of the quants.
    bsums: Vec<[i32; TILE]>,
}

/// The activation tiles of `acts` (rows in groups of 16; a last partial
/// group is left to the caller) for `wty` weights. `qs` holds the quants of
/// those rows, `cols` bytes per row, and `acts` views the same rows
/// (checked: the tile loads read row `m` of a tile at `m * cols`).
pub(crate) fn act_tiles<'a>(wty: GgmlType, cols: usize, acts: &[ActRow<'_>], qs: &'a [i8]) -> Vec<ActTile<'a>> {
    assert!(supports(wty) && acts.len().is_multiple_of(TILE) && qs.len() == acts.len() * cols);
    let nb = cols / wty.block_size();
    fn transpose(rows: &[ActRow<'_>], nb: usize, field: fn(&ActRow<'_>, usize) -> f32) -> Vec<[f32; TILE]> {
        (0..nb).map(|b| core::array::from_fn(|m| field(&rows[m], b))).collect()
    }
    acts.chunks_exact(TILE)
        .zip(qs.chunks_exact(TILE * cols))
        .map(|(rows, tq)| {
            for (m, a) in rows.iter().enumerate() {
                assert!(a.qs.len() == cols && core::ptr::eq(a.qs.as_ptr(), tq[m * cols..].as_ptr()));
            }
            let s = if matches!(wty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                transpose(rows, nb, |a, b| a.s[b])
            } else {
                Vec::new()
            };
            let bsums = if wty == GgmlType::Q2_K {
                (0..cols / 16).map(|g| core::array::from_fn(|m| rows[m].bsums[g] as i32)).collect()
            } else {
                Vec::new()
            };
            ActTile { qs: tq, d: transpose(rows, nb, |a, b| a.d[b]), s, bsums }
        })
        .collect()
}

/// `out[i][r] = dot(weight row r of w, activation row i)` for every row of
/// the activation tiles (`out.len() == 16 * tiles.len()`) and every weight
/// row of `w` (`rb` bytes each, `cols` elements), bit-identical to
/// `vec_dot_q_ref`.
///
/// # Safety
/// [`available`] must have returned true; the AVX-512 F/BW/VL features must
/// be present (the AMX level implies them).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn matmul_tiles(
    wty: GgmlType,
    layout: crate::x8::Layout,
    w: &[u8],
    rb: usize,
    cols: usize,
    act_tiles: &[ActTile<'_>],
    out: &mut [&mut [f32]],
) {
    assert!(supports(wty) && out.len() == act_tiles.len() * TILE);
    assert!(act_tiles.iter().all(|t| t.qs.len() == TILE * cols));
    let mut unpacked = Unpacked::new(wty, cols);
    let mut dec = IntBlock::default();
    let zero = _mm512_setzero_ps();
    let mut scratch = Scratch { c: [CTile([0; TILE * TILE]), CTile([0; TILE * TILE])], lanes: [[zero; TILE]; 8] };
    // SAFETY: (caller) AMX is available.
    let tiles = unsafe { Tiles::configure(unpacked.group) };
    let nrows = w.len() / rb;
    let v = crate::dispatch::Verified::active();
    let interleaved = layout == crate::x8::Layout::X8;
    // The 32-element types' interleaved words are already the tiles' rows.
    let direct = interleaved && wty.block_size() != QK_K;
    let mut file_rows = if interleaved && !direct { vec![0u8; TILE * rb] } else { Vec::new() };
    for n0 in (0..nrows).step_by(TILE) {
        let nv = TILE.min(nrows - n0);
        let mut rows = &w[n0 * rb..(n0 + nv) * rb];
        if direct {
            // SAFETY: (caller) AVX-512, and the AMX level has VNNI; whole
            // groups of eight rows.
            unsafe { unpacked.fill_x8_legacy(wty, rows, rb) };
        } else {
            if interleaved {
                // A tile of rows back in the file's layout (whole groups of eight).
                crate::x8::to_file_layout(v, wty, rb, rows, &mut file_rows[..nv * rb]);
                rows = &file_rows[..nv * rb];
            }
            // SAFETY: (caller) AVX-512.
            unsafe { unpacked.fill(wty, rows, rb, &mut dec) };
        }
        for (t, at) in act_tiles.iter().enumerate() {
            // SAFETY: (caller) AMX and AVX-512; `at` and `unpacked` describe
            // `cols` elements.
            let sums = match wty.block_size() {
                QK_K => unsafe { k_tile(wty, &tiles, &unpacked, at, cols, &mut scratch) },
                _ => unsafe { legacy_tile(wty, &tiles, &unpacked, at, cols, &mut scratch) },
            };
            let mask: __mmask16 = if nv == TILE { 0xFFFF } else { (1u16 << nv) - 1 };
            for (m, s) in sums.iter().enumerate() {
                let dst = &mut out[t * TILE + m][n0..n0 + nv];
                // SAFETY: `dst` has `nv` elements and the mask writes the
                // first `nv` lanes only.
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, *s) };
            }
        }
    }
    drop(tiles);
}

/// Adds the eight lanes of each of the 16 rows in the order of
/// [`crate::qdot::reduce8`], sixteen outputs at a time.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
fn reduce_lanes(l: &[[__m512; TILE]; 8]) -> [__m512; TILE] {
    core::array::from_fn(|m| {
        let a = _mm512_add_ps(_mm512_add_ps(l[0][m], l[4][m]), _mm512_add_ps(l[2][m], l[6][m]));
        let b = _mm512_add_ps(_mm512_add_ps(l[1][m], l[5][m]), _mm512_add_ps(l[3][m], l[7][m]));
        _mm512_add_ps(a, b)
    })
}

/// Per-thread scratch of the tile kernels, made once per [`matmul_tiles`]
/// call (zeroing it per tile cost more than the float work).
struct Scratch {
    /// Two 16×16 sums, as `tilestored` writes them.
    c: [CTile; 2],
    /// The eight lanes of the sixteen rows' sixteen outputs.
    lanes: [[__m512; TILE]; 8],
}

/// `acc[m] += (dw * da[m]) * c[m]` for the 16 rows of one block's sums.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
fn legacy_terms(acc: &mut [__m512; TILE], c: &CTile, dw: &[f32; TILE], da: &[f32; TILE]) {
    // SAFETY: 16 floats.
    let dwv = unsafe { _mm512_loadu_ps(dw.as_ptr()) };
    for (m, a) in acc.iter_mut().enumerate() {
        // SAFETY: row m of the 16×16 sums (64-byte aligned).
        let isum = unsafe { _mm512_load_si512(c.0.as_ptr().add(TILE * m).cast()) };
        let t = _mm512_mul_ps(_mm512_mul_ps(dwv, _mm512_set1_ps(da[m])), _mm512_cvtepi32_ps(isum));
        *a = _mm512_add_ps(*a, t);
    }
}

/// Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / IQ4_NL: the 16×16 outputs of one activation
/// tile against one N tile (row `m` of the result holds `out[m][n0..n0+16]`).
///
/// Block `b` goes to lane `b % 8`, and each lane sums its blocks in order,
/// as the reference does; the lanes are done one after another (so one
/// lane's sixteen accumulators stay in registers) with blocks `b` and `b + 8`
/// in flight together.
///
/// # Safety
/// As [`matmul_tiles`], with `tiles` configured for 32-element groups.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn legacy_tile(
    wty: GgmlType,
    tiles: &Tiles,
    u: &Unpacked,
    at: &ActTile<'_>,
    cols: usize,
    sc: &mut Scratch,
) -> [__m512; TILE] {
    let zero = _mm512_setzero_ps();
    let nb = u.d.len();
    let [c0, c1] = &mut sc.c;
    let a_at = |b: usize| at.qs.as_ptr().wrapping_add(QK32 * b);
    let b_at = |b: usize| u.b.as_ptr().wrapping_add(QK32 * TILE * b);
    for (lane, lane_acc) in sc.lanes.iter_mut().enumerate() {
        let mut acc = [zero; TILE];
        let mut b = lane;
        while b + 8 < nb {
            // SAFETY: blocks b and b + 8 exist: their activation bytes are
            // `32b..32b+32` of each of the 16 rows (checked by the caller)
            // and `u.b` holds 512 bytes per block.
            unsafe { tiles.dot2([a_at(b), a_at(b + 8)], cols, [b_at(b), b_at(b + 8)], [c0, c1]) };
            legacy_terms(&mut acc, c0, &u.d[b], &at.d[b]);
            legacy_terms(&mut acc, c1, &u.d[b + 8], &at.d[b + 8]);
            b += 16;
        }
        if b < nb {
            // SAFETY: as above, for block b.
            unsafe { tiles.dot(a_at(b), cols, b_at(b), c0) };
            legacy_terms(&mut acc, c0, &u.d[b], &at.d[b]);
        }
        *lane_acc = acc;
    }
    let mut res = reduce_lanes(&sc.lanes);
    if matches!(wty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        // The `mw * sa` terms, in their own lanes.
        for (lane, lane_acc) in sc.lanes.iter_mut().enumerate() {
            let mut acc = [zero; TILE];
            for b in (lane..nb).step_by(8) {
                // SAFETY: 16 floats.
                let mwv = unsafe { _mm512_loadu_ps(u.dmin[b].as_ptr()) };
                for (a, &s) in acc.iter_mut().zip(&at.s[b]) {
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(mwv, _mm512_set1_ps(s)));
                }
            }
            *lane_acc = acc;
        }
        let mins = reduce_lanes(&sc.lanes);
        for (r, m) in res.iter_mut().zip(mins) {
            *r = _mm512_add_ps(*r, m);
        }
    }
    res
}

/// `isum[m] += sc * c[m]` (exact i32) for the 16 rows of one group's sums.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
fn scaled_sums(isum: &mut [__m512i; TILE], c: &CTile, sc: &[i32; TILE]) {
    // SAFETY: 16 i32.
    let scv = unsafe { _mm512_loadu_si512(sc.as_ptr().cast()) };
    for (m, s) in isum.iter_mut().enumerate() {
        // SAFETY: row m of the 16×16 sums (64-byte aligned).
        let dot = unsafe { _mm512_load_si512(c.0.as_ptr().add(TILE * m).cast()) };
        *s = _mm512_add_epi32(*s, _mm512_mullo_epi32(dot, scv));
    }
}

/// Q2_K / Q3_K / Q6_K, as [`legacy_tile`]: per 256-element
/// block the exact `Σ_g sc_g · dot_g` from one tile product per scale group
/// (two in flight), then the block's float term into lane `b % 8`.
///
/// # Safety
/// As [`matmul_tiles`], with `tiles` configured for `u.group`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn k_tile(
    wty: GgmlType,
    tiles: &Tiles,
    u: &Unpacked,
    at: &ActTile<'_>,
    cols: usize,
    sc: &mut Scratch,
) -> [__m512; TILE] {
    let with_min = wty == GgmlType::Q2_K;
    let zero = _mm512_setzero_ps();
    let group = u.group;
    let groups = QK_K / group;
    let nb = u.d.len();
    let [c0, c1] = &mut sc.c;
    let a_at = |g: usize| at.qs.as_ptr().wrapping_add(group * g);
    let b_at = |g: usize| u.b.as_ptr().wrapping_add(group * TILE * g);
    for (lane, lane_acc) in sc.lanes.iter_mut().enumerate() {
        let mut acc = [zero; TILE];
        for b in (lane..nb).step_by(8) {
            let mut isum = [_mm512_setzero_si512(); TILE];
            for j in (0..groups).step_by(2) {
                let g = b * groups + j;
                // SAFETY: groups g and g + 1 of the row exist (`groups` is
                // even): their activation bytes are `group*g..group*(g+2)` of
                // each row, and `u.b` holds `group * 16` bytes per group.
                unsafe { tiles.dot2([a_at(g), a_at(g + 1)], cols, [b_at(g), b_at(g + 1)], [c0, c1]) };
                scaled_sums(&mut isum, c0, &u.sc[g * group / 16]);
                scaled_sums(&mut isum, c1, &u.sc[(g + 1) * group / 16]);
            }
            // SAFETY: 16 floats each.
            let (dwv, dminv) = unsafe { (_mm512_loadu_ps(u.d[b].as_ptr()), _mm512_loadu_ps(u.dmin[b].as_ptr())) };
            for (m, a) in acc.iter_mut().enumerate() {
                let da = _mm512_set1_ps(at.d[b][m]);
                let mut t = _mm512_mul_ps(_mm512_mul_ps(dwv, da), _mm512_cvtepi32_ps(isum[m]));
                if with_min {
                    let mut msum = _mm512_setzero_si512();
                    for g in 16 * b..16 * b + 16 {
                        // SAFETY: 16 i32.
                        let mnv = unsafe { _mm512_loadu_si512(u.mn[g].as_ptr().cast()) };
                        msum = _mm512_add_epi32(msum, _mm512_mullo_epi32(mnv, _mm512_set1_epi32(at.bsums[g][m])));
                    }
                    t = _mm512_sub_ps(t, _mm512_mul_ps(_mm512_mul_ps(dminv, da), _mm512_cvtepi32_ps(msum)));
                }
                *a = _mm512_add_ps(*a, t);
            }
        }
        *lane_acc = acc;
    }
    reduce_lanes(&sc.lanes)
}
