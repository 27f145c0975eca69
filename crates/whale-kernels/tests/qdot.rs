//! Quantized activations (`q8`) and the dot products against them (`qdot`).
//!
//! Independent references:
//!
//! * **llama.cpp itself** (`tests/data/q8_llamacpp.bin`, made by
//!   `gen_q8_fixtures.py` through ctypes from a build of the vendored
//!   llama.cpp): the bytes its CPU backend's `from_float` produces (must match
//!   bit for bit) and the result of its `vec_dot` (must match up to f32
//!   summation order, tolerance below).
//! * **gguf-py** (`tests/data/q8_gguf_py.bin`): Q8_0 with ggml's portable
//!   reference rounding, bit for bit against `quantize_row_q8_0_ggml_ref`.
//! * **Hand-derived blocks** for the rounding rules.
//! * **Exact integer cases**: weights and activations chosen so that every
//!   f32 operation is exact; the result must equal the f64 dot of the
//!   dequantized operands exactly.
//! * **The identity** `vec_dot_q = Σ dequant(w) · dequant(acts)` in f64, up
//!   to f32 rounding (tolerance below).
//!
//! Every SIMD level must be bit-identical to `vec_dot_q_ref` (the module
//! docs of `qdot` explain why that holds by construction), and quantizing at
//! any level must give identical bytes.
//!
//! # Tolerances
//!
//! `S` is the sum of the magnitudes of the terms the kernels add:
//! `Σ_j |d·sc·q_j · a_j| + Σ_j |dmin·m_j · a_j|` (the min part computed
//! separately, because a quantized weight `d·sc·q - dmin·m` can cancel while
//! the kernels still add both products). Any f32 summation of those terms in
//! a chain of at most `k` dependent additions, with each term rounded a few
//! (`c <= 4`) times, is off by at most `(k + c)·u·S`, u = 2^-24.
//!
//! * Against the f64 identity: whale's chains are at most `blocks/8 + 4`
//!   long (8 lanes) and the longest rows tested have 129 blocks: `k + c < 24`,
//!   so `1e-5·S` (~168 u) leaves a wide margin. Q4_1/Q5_1 add `mw·sa` where
//!   `sa = f16(d·Σq)` was rounded to f16 (ggml's definition), so there the
//!   exact identity is off by up to `|mw|·(2^-10·|sa| + 2^-24)` per block
//!   more, which the test adds to the tolerance.
//! * Against llama.cpp's `vec_dot`: both sides add the same exact integer
//!   block sums times the same scales, in different orders (ggml's AVX
//!   kernels keep 8 lanes of per-block partial sums and use FMA): each side
//!   is within `(k + 4)·u·S` of the exact value with k <= 65 blocks per chain
//!   (and 1000/8 + 4 for F16/BF16, whose ggml tail is summed in f64):
//!   `2·(129 + 4)·u < 1.6e-5`, so `2e-5·S`.
//!
//! A wrong nibble, scale, sign or offset changes the result by a sizable
//! fraction of `S` (and breaks the bit-exact checks outright).

mod common;

use std::path::PathBuf;

use common::{lengths, random_row, set_scales, Rng};
use whale_kernels::blocks::*;
use whale_kernels::q8::{
    quantize_row_q8_0, quantize_row_q8_0_ggml_ref, quantize_row_q8_1, quantize_row_q8_1_ggml_ref, quantize_row_q8_k,
};
use whale_kernels::x8::Layout;
use whale_kernels::{
    dequantize_row, matmul_q, matmul_q_acts, quantize_acts, quantize_acts_into, quantize_acts_with, vec_dot_q,
    vec_dot_q_ref, vec_dot_q_with, vec_dot_type, GgmlType, KernelError, QuantizedActs, SimdLevel,
};

const TOL_IDENTITY: f64 = 1e-5;
const TOL_LLAMACPP: f64 = 2e-5;

/// Weight types whose dot goes through quantized (or 16-bit) activations.
fn quant_types() -> Vec<GgmlType> {
    GgmlType::ALL.into_iter().filter(|t| vec_dot_type(*t) != GgmlType::F32).collect()
}

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

struct Reader {
    raw: Vec<u8>,
    at: usize,
}

impl Reader {
    fn open(name: &str, magic: &[u8; 4]) -> (Reader, usize) {
        let raw = std::fs::read(data_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&raw[..4], magic, "{name}: magic");
        let mut r = Reader { raw, at: 4 };
        assert_eq!(r.u32(), 1, "{name}: version");
        let n = r.u32() as usize;
        (r, n)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let v = self.raw[self.at..self.at + n].to_vec();
        self.at += n;
        v
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes(4).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.bytes(4 * n).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn done(&self) -> bool {
        self.at == self.raw.len()
    }
}

struct LlamaRecord {
    wty: GgmlType,
    aty: GgmlType,
    x: Vec<f32>,
    w: Vec<u8>,
    acts: Vec<u8>,
    dot: f32,
}

fn llamacpp_records() -> Vec<LlamaRecord> {
    llamacpp_records_from("q8_llamacpp.bin")
}

fn llamacpp_records_from(file: &str) -> Vec<LlamaRecord> {
    let (mut r, count) = Reader::open(file, b"WQ8L");
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let wty = GgmlType::from_u32(r.u32()).unwrap();
        let aty = GgmlType::from_u32(r.u32()).unwrap();
        let n = r.u32() as usize;
        let x = r.f32s(n);
        let len = r.u32() as usize;
        let w = r.bytes(len);
        let len = r.u32() as usize;
        let acts = r.bytes(len);
        let dot = r.f32s(1)[0];
        out.push(LlamaRecord { wty, aty, x, w, acts, dot });
    }
    assert!(r.done(), "trailing bytes");
    out
}

/// Byte offsets and size of the (d, min) f16 fields of the types with mins.
fn min_fields(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => Some((0, 2)),
        GgmlType::Q2_K => Some((80, 82)),
        _ => None,
    }
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f64> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, bytes, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// `(Σ dequant(w)·dequant(a) in f64, S, extra)` for weight row `w` and the
/// ggml bytes of activation row `a`; `extra` is the Q8_1 `s` rounding
/// allowance (module docs).
fn identity(wty: GgmlType, w: &[u8], aty: GgmlType, a: &[u8], n: usize) -> (f64, f64, f64) {
    let av = dequant(aty, a, n);
    let wv = dequant(wty, w, n);
    let exact: f64 = wv.iter().zip(&av).map(|(p, q)| p * q).sum();
    let abs = |wv: &[f64]| -> f64 { wv.iter().zip(&av).map(|(p, q)| (p * q).abs()).sum() };
    let mut extra = 0.0;
    let s = match min_fields(wty) {
        None => abs(&wv),
        Some((d_off, m_off)) => {
            let ts = wty.type_size();
            let zero = |off: usize| {
                let mut c = w.to_vec();
                for blk in c.chunks_exact_mut(ts) {
                    blk[off..off + 2].fill(0);
                }
                dequant(wty, &c, n)
            };
            if matches!(wty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                for (wb, ab) in w.chunks_exact(ts).zip(a.chunks_exact(36)) {
                    let m = F16Le([wb[m_off], wb[m_off + 1]]).to_f32() as f64;
                    let s = F16Le([ab[2], ab[3]]).to_f32() as f64;
                    extra += m.abs() * (s.abs() * 2f64.powi(-10) + 2f64.powi(-24));
                }
            }
            abs(&zero(m_off)) + abs(&zero(d_off))
        }
    };
    (exact, s, extra)
}

fn assert_close(what: &str, got: f32, reference: f64, s: f64, rel: f64, extra: f64) {
    let err = (got as f64 - reference).abs();
    let tol = rel * s + extra + f64::from(f32::MIN_POSITIVE);
    assert!(err <= tol, "{what}: got {got:e}, reference {reference:e}, error {err:e} > tolerance {tol:e} (S = {s:e})");
}

/// Random activations in several flavours: uniform, wide dynamic range, and
/// rows full of exact rounding ties (amax = 127, halves).
fn activations(rng: &mut Rng, n: usize, kind: usize) -> Vec<f32> {
    match kind % 3 {
        0 => rng.vec_f32(n),
        1 => (0..n).map(|_| rng.uniform(-1.0, 1.0) * 10f32.powi((rng.next_u64() % 7) as i32 - 4)).collect(),
        _ => (0..n).map(|j| if j % 32 == 0 { 127.0 } else { ((rng.next_u64() % 509) as f32 - 254.0) / 2.0 }).collect(),
    }
}

/// The i-quant and ternary weight types against llama.cpp's own CPU backend
/// (`tests/data/iq_llamacpp.bin`, `gen_iq_fixtures.py`): the activation bytes
/// bit for bit, the dots within `TOL_LLAMACPP` (same argument as above:
/// both sides add the same exact integer block sums times the same scales,
/// ggml in another order and, for IQ4_XS, with the per-32 scale applied in
/// f32 before the block sum; chains are at most 72 blocks long), and every
/// level bit-identical to the reference.
#[test]
fn iq_vec_dot_matches_llamacpp() {
    let records = llamacpp_records_from("iq_llamacpp.bin");
    let mut per_type = std::collections::BTreeMap::new();
    for (k, r) in records.iter().enumerate() {
        assert!(r.wty.is_iquant(), "record {k}: {}", r.wty);
        assert_eq!(vec_dot_type(r.wty), r.aty, "record {k}: vec_dot_type({})", r.wty);
        let acts = quantize_acts(r.wty, &r.x, 1, r.x.len());
        assert_eq!(acts.ggml_row(0), r.acts, "record {k}: activation bytes");
        check_llamacpp_dot(k, r);
        *per_type.entry(r.wty.name()).or_insert(0) += 1;
    }
    assert_eq!(per_type.len(), 11, "{per_type:?}");
    assert!(per_type.values().all(|&c| c >= 13), "{per_type:?}");
}

// ----------------------------------------------------------------------------
// Against llama.cpp
// ----------------------------------------------------------------------------

#[test]
fn quantize_acts_matches_llamacpp_bytes() {
    let records = llamacpp_records();
    assert!(records.len() > 200);
    let mut per_type = std::collections::BTreeMap::new();
    for (k, r) in records.iter().enumerate() {
        assert_eq!(vec_dot_type(r.wty), r.aty, "record {k}: vec_dot_type({})", r.wty);
        let n = r.x.len();
        for level in SimdLevel::available() {
            let acts = quantize_acts_with(level, r.wty, &r.x, 1, n);
            assert_eq!(acts.ty(), r.aty);
            let ours = acts.ggml_row(0);
            if ours != r.acts {
                let first = ours.iter().zip(&r.acts).position(|(a, b)| a != b);
                panic!(
                    "record {k} ({} acts of {} weights, n={n}) at {level}: first differing byte {first:?}",
                    r.aty, r.wty
                );
            }
            // Reading llama.cpp's bytes back gives the same container.
            assert_eq!(QuantizedActs::from_ggml_rows(r.aty, 1, n, &r.acts).unwrap(), acts, "record {k}");
        }
        *per_type.entry(r.aty.name()).or_insert(0) += 1;
    }
    for t in ["Q8_0", "Q8_1", "Q8_K", "F16", "BF16"] {
        assert!(per_type.get(t).copied().unwrap_or(0) >= 10, "{t}: {per_type:?}");
    }
}

#[test]
fn vec_dot_q_matches_llamacpp() {
    for (k, r) in llamacpp_records().iter().enumerate() {
        check_llamacpp_dot(k, r);
    }
}

/// Record `k`'s dot: the reference within `TOL_LLAMACPP` of llama.cpp's,
/// every level bit-identical to the reference.
fn check_llamacpp_dot(k: usize, r: &LlamaRecord) {
    let n = r.x.len();
    let acts = quantize_acts(r.wty, &r.x, 1, n);
    let (_, s, _) = identity(r.wty, &r.w, r.aty, &r.acts, n);
    let what = format!("record {k}: {} x {} n={n}", r.wty, r.aty);
    let reference = vec_dot_q_ref(r.wty, &r.w, &acts, 0);
    assert_close(&what, reference, r.dot as f64, s, TOL_LLAMACPP, 0.0);
    for level in SimdLevel::available() {
        let got = vec_dot_q_with(level, r.wty, &r.w, &acts, 0);
        assert_eq!(got.to_bits(), reference.to_bits(), "{what} at {level}");
    }
}

// ----------------------------------------------------------------------------
// Quantizers
// ----------------------------------------------------------------------------

#[test]
fn q8_0_hand_examples() {
    // amax = 1.27: d = 0.01 (f16), id = 127 / 1.27 = 100.
    let mut x = [0f32; 32];
    x[0] = 1.27;
    x[1] = -1.27;
    x[2] = 0.5;
    let mut b = [BlockQ8_0 { d: F16Le::default(), qs: [0; 32] }];
    quantize_row_q8_0(&x, &mut b);
    assert_eq!(b[0].d, F16Le::from_f32(0.01));
    assert_eq!(&b[0].qs[..4], &[127, -127, 50, 0]);
    assert!(b[0].qs[3..].iter().all(|&q| q == 0));

    // amax = 127: d = 1, x * id = x. Halves are ties: the x86 rule rounds
    // them to even, the reference rule away from zero.
    let mut x = [0f32; 32];
    x[..8].copy_from_slice(&[127.0, 2.5, 0.5, -0.5, -3.5, 1.5, -2.5, 126.5]);
    let mut b = [BlockQ8_0 { d: F16Le::default(), qs: [0; 32] }];
    quantize_row_q8_0(&x, &mut b);
    assert_eq!(b[0].d.to_f32(), 1.0);
    assert_eq!(&b[0].qs[..8], &[127, 2, 0, 0, -4, 2, -2, 126]);
    quantize_row_q8_0_ggml_ref(&x, &mut b);
    assert_eq!(&b[0].qs[..8], &[127, 3, 1, -1, -4, 2, -3, 127]);

    // Q8_1: s = f16(d * Σq) with the f32 d.
    let mut b1 = [BlockQ8_1 { d: F16Le::default(), s: F16Le::default(), qs: [0; 32] }];
    quantize_row_q8_1(&x, &mut b1);
    assert_eq!(&b1[0].qs[..8], &[127, 2, 0, 0, -4, 2, -2, 126]);
    assert_eq!(b1[0].s.to_f32(), (127 + 2 - 4 + 2 - 2 + 126) as f32);
    quantize_row_q8_1_ggml_ref(&x, &mut b1);
    assert_eq!(b1[0].s.to_f32(), (127 + 3 + 1 - 1 - 4 + 2 - 3 + 127) as f32);

    // All zeros: d = 0, quants 0 (no division by zero).
    quantize_row_q8_0(&[0.0; 32], &mut b);
    assert_eq!((b[0].d.to_f32(), b[0].qs), (0.0, [0; 32]));
}

#[test]
fn q8_k_hand_examples() {
    let mut blk = [BlockQ8_K { d: F32Le::default(), qs: [0; 256], bsums: [I16Le::default(); 16] }];
    // The first element of largest magnitude is -127: iscale = -127 / -127 = 1,
    // d = 1; the later +127 does not change the sign. Halves round to even.
    let mut x = [0f32; 256];
    x[0] = 2.5;
    x[1] = -127.0;
    x[2] = 3.5;
    x[3] = -0.5;
    x[16] = 1.5;
    x[255] = 127.0;
    quantize_row_q8_k(&x, &mut blk);
    assert_eq!(blk[0].d.to_f32(), 1.0);
    assert_eq!(&blk[0].qs[..4], &[2, -127, 4, 0]);
    assert_eq!(blk[0].qs[16], 2);
    assert_eq!(blk[0].qs[255], 127);
    assert_eq!(blk[0].bsums[0].get(), 2 - 127 + 4);
    assert_eq!(blk[0].bsums[1].get(), 2);
    assert_eq!(blk[0].bsums[15].get(), 127);
    // Now +127 comes first: iscale = -1, d = -1, every quant negated.
    x[1] = 127.0;
    x[255] = -127.0;
    quantize_row_q8_k(&x, &mut blk);
    assert_eq!(blk[0].d.to_f32(), -1.0);
    assert_eq!(&blk[0].qs[..4], &[-2, -127, -4, 0]);
    assert_eq!(blk[0].bsums[0].get(), -2 - 127 - 4);
    // max = 2: iscale = -63.5; 1.0 -> -63.5 -> -64 (even); d = 1 / -63.5.
    let mut x = [0f32; 256];
    x[7] = 2.0;
    x[8] = 1.0;
    quantize_row_q8_k(&x, &mut blk);
    assert_eq!(blk[0].d.to_f32(), 1.0 / -63.5);
    assert_eq!((blk[0].qs[7], blk[0].qs[8]), (-127, -64));
    // All zeros.
    quantize_row_q8_k(&[0.0; 256], &mut blk);
    assert_eq!(blk[0].d.to_f32(), 0.0);
    assert!(blk[0].qs.iter().all(|&q| q == 0) && blk[0].bsums.iter().all(|b| b.get() == 0));
}

#[test]
fn half_activations_round_to_nearest_even() {
    let x = [1.0 / 3.0, 65504.0, 1e-8, -2.0];
    let a = quantize_acts(GgmlType::F16, &x, 1, 4);
    let h: Vec<u16> = a.ggml_row(0).chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(h, [0x3555, 0x7BFF, 0x0000, 0xC000]);
    let a = quantize_acts(GgmlType::BF16, &x, 1, 4);
    let h: Vec<u16> = a.ggml_row(0).chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    // 1/3 = 0x3EAAAAAB rounds up to 0x3EAB; 65504 = 0x477FE000 rounds to 0x4780.
    assert_eq!(h[0], 0x3EAB);
    assert_eq!(h[1], 0x4780);
    assert_eq!(h[3], 0xC000);
}

/// ggml's portable reference rule, bit for bit against gguf-py.
#[test]
fn q8_0_ggml_ref_matches_gguf_py() {
    let (mut r, count) = Reader::open("q8_gguf_py.bin", b"WQ8G");
    let mut ties_seen = 0;
    for k in 0..count {
        let n = r.u32() as usize;
        let x = r.f32s(n);
        let expected = r.bytes(n / 32 * 34);
        let mut blocks = vec![BlockQ8_0 { d: F16Le::default(), qs: [0; 32] }; n / 32];
        quantize_row_q8_0_ggml_ref(&x, &mut blocks);
        assert_eq!(bytemuck::cast_slice::<BlockQ8_0, u8>(&blocks), &expected[..], "record {k}");
        // The x86 rule differs from it only at (near-)ties, by one step.
        let mut x86 = blocks.clone();
        quantize_row_q8_0(&x, &mut x86);
        for (b, (p, q)) in blocks.iter().zip(&x86).enumerate() {
            assert_eq!(p.d, q.d);
            let amax = x[32 * b..32 * b + 32].iter().fold(0f32, |m, v| m.max(v.abs()));
            for j in 0..32 {
                let (a, c) = (p.qs[j] as i32, q.qs[j] as i32);
                if a != c {
                    assert_eq!((a - c).abs(), 1, "record {k} block {b}");
                    let t = (x[32 * b + j] as f64 * 127.0 / amax as f64).abs();
                    assert!((t - t.floor() - 0.5).abs() < 1e-5, "record {k} block {b}: {t} is no tie");
                    ties_seen += 1;
                }
            }
        }
    }
    assert!(r.done());
    assert!(ties_seen > 50, "the fixtures exercise ties ({ties_seen})");
}

/// Every level quantizes to identical bytes, including ties and zero blocks.
#[test]
fn quantize_acts_same_at_every_level() {
    let mut rng = Rng::new(31);
    for wty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        let cols = 512;
        for kind in 0..6 {
            let m = 3;
            let mut x = activations(&mut rng, m * cols, kind);
            if kind >= 3 {
                x[cols..cols + 256].fill(0.0);
                x[5] = f32::MIN_POSITIVE / 4.0; // subnormal
            }
            let scalar = quantize_acts_with(SimdLevel::Scalar, wty, &x, m, cols);
            for level in SimdLevel::available() {
                assert_eq!(quantize_acts_with(level, wty, &x, m, cols), scalar, "{wty} kind {kind} at {level}");
            }
            // ggml_row / from_ggml_rows round trip.
            let bytes: Vec<u8> = (0..m).flat_map(|i| scalar.ggml_row(i)).collect();
            assert_eq!(QuantizedActs::from_ggml_rows(scalar.ty(), m, cols, &bytes).unwrap(), scalar);
        }
    }
}

#[test]
fn quantize_acts_into_reuses_and_resets() {
    let mut rng = Rng::new(32);
    let x = rng.vec_f32(4 * 256);
    let mut acts = QuantizedActs::new();
    assert_eq!((acts.ty(), acts.m(), acts.cols()), (GgmlType::F32, 0, 0));
    for (wty, m, cols) in [(GgmlType::Q4_K, 4, 256), (GgmlType::Q4_1, 2, 512), (GgmlType::F16, 1, 1024)] {
        quantize_acts_into(wty, &x[..m * cols], m, cols, &mut acts);
        assert_eq!(acts, quantize_acts(wty, &x[..m * cols], m, cols));
        assert_eq!((acts.ty(), acts.m(), acts.cols()), (vec_dot_type(wty), m, cols));
    }
}

#[test]
fn from_ggml_rows_rejects_bad_input() {
    assert_eq!(
        QuantizedActs::from_ggml_rows(GgmlType::Q8_0, 1, 32, &[0; 33]),
        Err(KernelError::BadLength { ty: GgmlType::Q8_0, elements: 32, bytes: 33 })
    );
    assert_eq!(
        QuantizedActs::from_ggml_rows(GgmlType::Q8_K, 2, 100, &[]),
        Err(KernelError::NotBlockMultiple { ty: GgmlType::Q8_K, elements: 200 })
    );
    let err = QuantizedActs::from_ggml_rows(GgmlType::Q4_0, 1, 32, &[0; 18]).unwrap_err();
    assert_eq!(err, KernelError::NotActivationType { ty: GgmlType::Q4_0 });
    assert!(err.to_string().contains("Q4_0"));
}

// ----------------------------------------------------------------------------
// Dot products
// ----------------------------------------------------------------------------

/// Every level returns exactly the reference's bits, and the reference obeys
/// the f64 identity.
#[test]
fn vec_dot_q_every_level_bit_identical_to_ref() {
    let mut rng = Rng::new(33);
    let levels = SimdLevel::available();
    for wty in quant_types() {
        for n in lengths(wty) {
            for kind in 0..3 {
                let row = random_row(&mut rng, wty, n);
                let x = activations(&mut rng, n, kind);
                let acts = quantize_acts(wty, &x, 1, n);
                let reference = vec_dot_q_ref(wty, &row, &acts, 0);
                let (exact, s, extra) = identity(wty, &row, acts.ty(), &acts.ggml_row(0), n);
                let what = format!("{wty} n={n} kind={kind}");
                assert_close(&what, reference, exact, s, TOL_IDENTITY, extra);
                assert_eq!(vec_dot_q(wty, &row, &acts, 0).to_bits(), reference.to_bits(), "{what}");
                for &level in &levels {
                    let got = vec_dot_q_with(level, wty, &row, &acts, 0);
                    assert_eq!(got.to_bits(), reference.to_bits(), "{what} at {level}: {got:e} vs {reference:e}");
                }
            }
        }
    }
}

/// F32 weights (and Q8_1 / Q8_K used as weights) keep f32 activations.
#[test]
fn f32_activation_types() {
    let mut rng = Rng::new(34);
    for wty in [GgmlType::F32, GgmlType::Q8_1, GgmlType::Q8_K] {
        assert_eq!(vec_dot_type(wty), GgmlType::F32);
        let n = 512;
        let row = random_row(&mut rng, wty, n);
        let x = rng.vec_f32(n);
        let acts = quantize_acts(wty, &x, 1, n);
        assert_eq!(acts.ggml_row(0), bytemuck::cast_slice::<f32, u8>(&x));
        let (exact, s, _) = identity(wty, &row, GgmlType::F32, &acts.ggml_row(0), n);
        assert_close(&format!("{wty} ref"), vec_dot_q_ref(wty, &row, &acts, 0), exact, s, TOL_IDENTITY, 0.0);
        for level in SimdLevel::available() {
            let got = vec_dot_q_with(level, wty, &row, &acts, 0);
            assert_close(&format!("{wty} at {level}"), got, exact, s, TOL_IDENTITY, 0.0);
        }
    }
}

/// Scales of 1 and activations whose quantization is exact (amax = 127 in
/// every block, small integers elsewhere): every f32 operation in the
/// kernels is then exact, so the result must equal the f64 dot of the
/// dequantized operands exactly. This pins down the integer arithmetic
/// (nibble order, offsets, scales, mins, bsums) with no tolerance at all.
#[test]
fn vec_dot_q_exact_integer_cases() {
    let mut rng = Rng::new(35);
    for wty in quant_types() {
        for n in [256, 512] {
            let mut row = random_row(&mut rng, wty, n);
            set_scales(wty, &mut row, 1.0);
            let small = |rng: &mut Rng| (rng.next_u64() % 17) as f32 - 8.0;
            let x: Vec<f32> = if wty.block_size() == 1 {
                // 16-bit floats: small integers in both operands.
                let w: Vec<f32> = (0..n).map(|_| small(&mut rng)).collect();
                row = if wty == GgmlType::F16 {
                    w.iter().flat_map(|&v| F16Le::from_f32(v).0).collect()
                } else {
                    w.iter().flat_map(|&v| Bf16Le::from_f32(v).0).collect()
                };
                (0..n).map(|_| small(&mut rng)).collect()
            } else {
                (0..n)
                    .map(|j| {
                        if j % 32 == 0 {
                            if j % 64 == 0 {
                                127.0
                            } else {
                                -127.0
                            }
                        } else {
                            small(&mut rng)
                        }
                    })
                    .collect()
            };
            let acts = quantize_acts(wty, &x, 1, n);
            let (exact, _, _) = identity(wty, &row, acts.ty(), &acts.ggml_row(0), n);
            // Integer-valued by construction; the i-quants' weights are
            // multiples of 1/8 at d = 1 (module docs of `whale_kernels::iq`).
            let unit = if wty.is_iquant() { 8.0 } else { 1.0 };
            assert_eq!(exact * unit, (exact * unit).round(), "{wty}: exact by construction");
            assert!(exact.abs() < (1 << 24) as f64);
            for level in SimdLevel::available() {
                let got = vec_dot_q_with(level, wty, &row, &acts, 0);
                assert_eq!(got as f64, exact, "{wty} n={n} at {level}");
            }
        }
    }
}

/// Decode (one activation row) takes weight rows in groups where a kernel
/// does (`rows8` at the VNNI level: Q4_K, Q4_1, Q5_0, and Q6_K rows of
/// 10240 columns or more, eight rows a call, transposed in registers; on
/// Intel CPUs Q4_1 and short rows, such as MLA's per-head 128 and 512
/// columns). Every row's result stays the scalar reference's bits at the
/// extremes of the integer sums (every quant, scale and min at its
/// maximum, activations at ±127), with all-zero blocks, with rows at odd
/// addresses, and with row counts and block counts that do not fill a
/// group.
#[test]
fn matmul_q_decode_row_groups_match_scalar_at_extremes() {
    let mut rng = Rng::new(38);
    for wty in quant_types() {
        for (rows, cols) in [(16, 128), (8, 256), (17, 512), (16, 768), (19, 2816), (24, 2048), (10, 10240), (9, 18432)]
        {
            if cols % wty.block_size() != 0 {
                continue;
            }
            let rb = wty.row_bytes(cols).unwrap();
            for fill in ["max", "zero", "random"] {
                let mut w: Vec<u8> = match fill {
                    "max" => vec![0xFF; rows * rb],
                    "zero" => vec![0; rows * rb],
                    _ => (0..rows).flat_map(|_| random_row(&mut rng, wty, cols)).collect(),
                };
                if fill == "max" {
                    set_scales(wty, &mut w, 1.0);
                }
                let x: Vec<f32> = match fill {
                    "random" => rng.vec_f32(cols),
                    _ => (0..cols).map(|j| if j % 3 == 0 { -1.0 } else { 1.0 }).collect(),
                };
                let acts = quantize_acts(wty, &x, 1, cols);
                let mut shifted = vec![0u8; w.len() + 1];
                shifted[1..].copy_from_slice(&w);
                for (what, wv) in [("aligned", &w[..]), ("odd address", &shifted[1..])] {
                    let mut y = vec![f32::NAN; rows];
                    matmul_q(wty, wv, rows, cols, &x, 1, &mut y, 1);
                    for r in 0..rows {
                        let want = vec_dot_q_with(SimdLevel::Scalar, wty, &w[r * rb..(r + 1) * rb], &acts, 0);
                        assert_eq!(y[r].to_bits(), want.to_bits(), "{wty} {rows}x{cols} {fill} {what} row {r}");
                    }
                }
            }
        }
    }
}

/// Prefill products (16 activation rows: the panels at the x86 levels
/// where a type has them, the i-quants among them; 208 rows: on a CPU with
/// AMX, the tiles for every type that takes them, see
/// `amx::min_act_rows`) at the extremes of the integer sums: every bit of
/// the blocks set (or clear: IQ4's -127, its scale -32) against activations
/// of ±127, each output the scalar reference's bits.
#[test]
fn matmul_q_batches_match_scalar_at_extremes() {
    for (wty, m) in quant_types().into_iter().flat_map(|t| [(t, 16), (t, 32), (t, 208)]) {
        let (rows, cols) = (19, 2048);
        let rb = wty.row_bytes(cols).unwrap();
        for (fill, sign) in [(0xFF, 1.0f32), (0xFF, -1.0), (0x00, 1.0)] {
            let mut w = vec![fill; rows * rb];
            set_scales(wty, &mut w, 1.0);
            let x: Vec<f32> = (0..m * cols).map(|j| if j % 3 == 0 { -sign } else { sign }).collect();
            let acts = quantize_acts(wty, &x, m, cols);
            let mut y = vec![f32::NAN; m * rows];
            matmul_q(wty, &w, rows, cols, &x, m, &mut y, 2);
            for i in 0..m {
                for r in 0..rows {
                    let want = vec_dot_q_with(SimdLevel::Scalar, wty, &w[r * rb..(r + 1) * rb], &acts, i);
                    assert_eq!(y[i * rows + r].to_bits(), want.to_bits(), "{wty} {fill:#x} {sign} [{i}][{r}]");
                }
            }
        }
    }
}

/// Long prefill batches (208 activation rows: the AMX tiles on a CPU that
/// has them, for every type they take; the panels elsewhere) on random
/// blocks, each output the scalar reference's bits.
#[test]
fn matmul_q_long_batches_match_reference() {
    let mut rng = Rng::new(38);
    for wty in quant_types() {
        let (rows, cols, m) = (21, wty.block_size().max(32) * 9, 208);
        let rb = wty.row_bytes(cols).unwrap();
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, wty, cols)).collect();
        let x = rng.vec_f32(m * cols);
        let acts = quantize_acts(wty, &x, m, cols);
        let mut y = vec![f32::NAN; m * rows];
        matmul_q(wty, &w, rows, cols, &x, m, &mut y, 2);
        for i in 0..m {
            for r in 0..rows {
                let want = vec_dot_q_ref(wty, &w[r * rb..(r + 1) * rb], &acts, i);
                assert_eq!(y[i * rows + r].to_bits(), want.to_bits(), "{wty} m={m} [{i}][{r}]");
            }
        }
    }
}

/// Rows at odd addresses (block structs have alignment 1).
#[test]
fn vec_dot_q_unaligned_rows() {
    let mut rng = Rng::new(36);
    for wty in quant_types() {
        let n = wty.block_size().max(32) * 9;
        let row = random_row(&mut rng, wty, n);
        let mut shifted = vec![0u8; row.len() + 1];
        shifted[1..].copy_from_slice(&row);
        let acts = quantize_acts(wty, &rng.vec_f32(n), 1, n);
        let reference = vec_dot_q_ref(wty, &row, &acts, 0);
        for level in SimdLevel::available() {
            assert_eq!(vec_dot_q_with(level, wty, &shifted[1..], &acts, 0).to_bits(), reference.to_bits(), "{wty}");
        }
    }
}

/// `matmul_q`: y[i][r] is `vec_dot_q` of row r and activation row i, bit for
/// bit, for any thread count and batch size, and batching does not change
/// any row's result.
#[test]
fn matmul_q_matches_vec_dot_q_and_is_thread_independent() {
    let mut rng = Rng::new(37);
    for wty in GgmlType::ALL {
        let bs = wty.block_size().max(32);
        // 2304 columns: nine K blocks, so that lanes hold more than one
        // block and the lane order of the float sums shows.
        let shapes = [(67, if bs == 256 { 1024 } else { 1056 }), (18, 2304), (5, bs * 2), (1, bs)];
        for (rows, cols) in shapes {
            let rb = wty.row_bytes(cols).unwrap();
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, wty, cols)).collect();
            for m in [1, 2, 3, 5, 8, 15, 16, 35] {
                let x = rng.vec_f32(m * cols);
                let acts = quantize_acts(wty, &x, m, cols);
                let mut y1 = vec![f32::NAN; m * rows];
                matmul_q(wty, &w, rows, cols, &x, m, &mut y1, 1);
                for i in 0..m {
                    for r in 0..rows {
                        let want = vec_dot_q(wty, &w[r * rb..(r + 1) * rb], &acts, i);
                        assert_eq!(y1[i * rows + r].to_bits(), want.to_bits(), "{wty} {rows}x{cols} m={m} [{i}][{r}]");
                    }
                    // Row i alone (m = 1) gives the same numbers.
                    let mut yi = vec![f32::NAN; rows];
                    matmul_q(wty, &w, rows, cols, &x[i * cols..(i + 1) * cols], 1, &mut yi, 3);
                    assert_eq!(
                        yi.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        y1[i * rows..(i + 1) * rows].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{wty} m={m} row {i} alone"
                    );
                }
                for threads in [2, 3, 0, 64] {
                    let mut yt = vec![f32::NAN; m * rows];
                    matmul_q(wty, &w, rows, cols, &x, m, &mut yt, threads);
                    let same = y1.iter().zip(&yt).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{wty} {rows}x{cols} m={m}: threads={threads} differs");
                    let mut ya = vec![f32::NAN; m * rows];
                    matmul_q_acts(wty, &w, rows, cols, &acts, &mut ya, threads);
                    assert!(y1.iter().zip(&ya).all(|(a, b)| a.to_bits() == b.to_bits()), "{wty} matmul_q_acts");
                }
            }
        }
    }
}

#[test]
fn matmul_q_degenerate() {
    let (wty, rows, cols) = (GgmlType::Q4_0, 3, 64);
    let w = vec![0u8; rows * wty.row_bytes(cols).unwrap()];
    let mut empty: Vec<f32> = vec![];
    matmul_q(wty, &w, rows, cols, &[], 0, &mut empty, 2);
    matmul_q(wty, &[], 0, cols, &[0.0; 64], 1, &mut empty, 2);
    // cols = 0: every dot is an empty sum.
    let mut y = vec![f32::NAN; 3];
    matmul_q(wty, &[], 3, 0, &[], 1, &mut y, 2);
    assert_eq!(y, [0.0; 3]);
}

#[test]
#[should_panic(expected = "Q4_K weights need Q8_K activations, got Q8_0")]
fn vec_dot_q_wrong_activation_type_panics() {
    let acts = quantize_acts(GgmlType::Q4_0, &[0.0; 256], 1, 256);
    vec_dot_q(GgmlType::Q4_K, &[0u8; 144], &acts, 0);
}

#[test]
#[should_panic(expected = "activation row 1 of 1")]
fn vec_dot_q_bad_row_index_panics() {
    let acts = quantize_acts(GgmlType::Q4_0, &[0.0; 32], 1, 32);
    vec_dot_q(GgmlType::Q4_0, &[0u8; 18], &acts, 1);
}

#[test]
#[should_panic(expected = "vec_dot_q: a Q4_0 row of 32 elements takes 18 bytes, got 17")]
fn vec_dot_q_bad_row_length_panics() {
    let acts = quantize_acts(GgmlType::Q4_0, &[0.0; 32], 1, 32);
    vec_dot_q(GgmlType::Q4_0, &[0u8; 17], &acts, 0);
}

#[test]
#[should_panic(expected = "quantize_acts: cols = 288 is not a multiple of the Q8_K block size 256 (weights Q6_K)")]
fn quantize_acts_bad_cols_panics() {
    quantize_acts(GgmlType::Q6_K, &[0.0; 288], 1, 288);
}

#[test]
#[should_panic(expected = "matmul_q: y has 5 elements, expected m * rows = 2 * 3")]
fn matmul_q_bad_y_panics() {
    let mut y = [0f32; 5];
    matmul_q(GgmlType::Q8_0, &[0u8; 102], 3, 32, &[0f32; 64], 2, &mut y, 1);
}

#[test]
#[should_panic(expected = "matmul_q_acts: w has 100 bytes, expected rows * row_bytes = 3 * 34")]
fn matmul_q_acts_bad_w_panics() {
    let acts = quantize_acts(GgmlType::Q8_0, &[0.0; 32], 1, 32);
    let mut y = [0f32; 3];
    matmul_q_acts(GgmlType::Q8_0, &[0u8; 100], 3, 32, &acts, &mut y, 1);
}

/// `matmul_q_many`: each product equals `matmul_q` of its matrix alone, bit
/// for bit, with mixed weight types (two sharing Q8_0 activations, one
/// Q8_K), empty matrices and any thread count.
#[test]
fn matmul_q_many_equals_each_product_alone() {
    use whale_kernels::{matmul_q_many, QProduct};
    let mut rng = Rng::new(53);
    let cols = 512;
    let specs = [(GgmlType::Q5_0, 37), (GgmlType::Q8_0, 5), (GgmlType::Q4_K, 19), (GgmlType::Q4_1, 0)];
    let ws: Vec<Vec<u8>> =
        specs.iter().map(|&(t, r)| (0..r).flat_map(|_| random_row(&mut rng, t, cols)).collect()).collect();
    for m in [1, 3, 9] {
        let x = rng.vec_f32(m * cols);
        let alone: Vec<Vec<f32>> = specs
            .iter()
            .zip(&ws)
            .map(|(&(t, r), w)| {
                let mut y = vec![f32::NAN; m * r];
                matmul_q(t, w, r, cols, &x, m, &mut y, 1);
                y
            })
            .collect();
        for threads in [1, 2, 5] {
            let mut ys: Vec<Vec<f32>> = specs.iter().map(|&(_, r)| vec![f32::NAN; m * r]).collect();
            let mut products: Vec<QProduct<'_>> = specs
                .iter()
                .zip(&ws)
                .zip(ys.iter_mut())
                .map(|((&(wty, rows), w), y)| QProduct { wty, layout: Layout::File, w, rows, y })
                .collect();
            matmul_q_many(&mut products, cols, &x, m, threads);
            drop(products);
            for (k, (a, b)) in alone.iter().zip(&ys).enumerate() {
                assert!(
                    a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "product {k} ({}) m={m} threads={threads}",
                    specs[k].0
                );
            }
        }
    }
}

/// `matmul_q_each`: each product, of its own input and shape, equals
/// `matmul_q` of its matrix and input alone, bit for bit, with mixed weight
/// types and widths (MLA's 128-wide k_b beside 512-wide v_b), an empty
/// matrix, row counts that differ between products, and any thread count.
/// Each call quantizes into the activation buffers the previous calls on
/// this thread left (of other types and sizes), so stale bytes would show.
#[test]
fn matmul_q_each_equals_each_product_alone() {
    use whale_kernels::{matmul_q_each, QProductOwn};
    let mut rng = Rng::new(59);
    let specs =
        [(GgmlType::Q5_0, 512, 128), (GgmlType::Q4_K, 128, 512), (GgmlType::Q8_0, 7, 64), (GgmlType::Q6_K, 0, 256)];
    let ws: Vec<Vec<u8>> =
        specs.iter().map(|&(t, r, c)| (0..r).flat_map(|_| random_row(&mut rng, t, c)).collect()).collect();
    for m in [1, 4, 17] {
        let xs: Vec<Vec<f32>> = specs.iter().map(|&(_, _, c)| rng.vec_f32(m * c)).collect();
        let alone: Vec<Vec<f32>> = specs
            .iter()
            .zip(ws.iter().zip(&xs))
            .map(|(&(t, r, c), (w, x))| {
                let mut y = vec![f32::NAN; m * r];
                matmul_q(t, w, r, c, x, m, &mut y, 1);
                y
            })
            .collect();
        for threads in [1, 2, 5] {
            let mut ys: Vec<Vec<f32>> = specs.iter().map(|&(_, r, _)| vec![f32::NAN; m * r]).collect();
            let mut products: Vec<QProductOwn<'_>> = specs
                .iter()
                .zip(ws.iter().zip(&xs))
                .zip(ys.iter_mut())
                .map(|((&(wty, rows, cols), (w, x)), y)| QProductOwn {
                    wty,
                    layout: Layout::File,
                    w,
                    rows,
                    cols,
                    m,
                    x,
                    y,
                })
                .collect();
            matmul_q_each(&mut products, threads);
            drop(products);
            for (k, (a, b)) in alone.iter().zip(&ys).enumerate() {
                assert!(
                    a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "product {k} ({}) m={m} threads={threads}",
                    specs[k].0
                );
            }
        }
    }
}

/// `matmul_q_each` with a different row count per product (the routed
/// experts of a prefill, each its own tokens), one of them empty.
#[test]
fn matmul_q_each_with_own_row_counts() {
    use whale_kernels::{matmul_q_each, QProductOwn};
    let mut rng = Rng::new(61);
    let (cols, rows) = (256, 24);
    let ms = [5usize, 0, 1, 12];
    let ws: Vec<Vec<u8>> =
        ms.iter().map(|_| (0..rows).flat_map(|_| random_row(&mut rng, GgmlType::Q4_K, cols)).collect()).collect();
    let xs: Vec<Vec<f32>> = ms.iter().map(|&m| rng.vec_f32(m * cols)).collect();
    let alone: Vec<Vec<f32>> = ms
        .iter()
        .zip(ws.iter().zip(&xs))
        .map(|(&m, (w, x))| {
            let mut y = vec![f32::NAN; m * rows];
            matmul_q(GgmlType::Q4_K, w, rows, cols, x, m, &mut y, 1);
            y
        })
        .collect();
    let mut ys: Vec<Vec<f32>> = ms.iter().map(|&m| vec![f32::NAN; m * rows]).collect();
    let mut products: Vec<QProductOwn<'_>> = ms
        .iter()
        .zip(ws.iter().zip(&xs))
        .zip(ys.iter_mut())
        .map(|((&m, (w, x)), y)| QProductOwn { wty: GgmlType::Q4_K, layout: Layout::File, w, rows, cols, m, x, y })
        .collect();
    matmul_q_each(&mut products, 2);
    drop(products);
    for (k, (a, b)) in alone.iter().zip(&ys).enumerate() {
        assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()), "product {k}");
    }
}
