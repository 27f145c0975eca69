//! Weights stored eight rows interleaved (`GgufFile::interleave_x8`, the
//! layout of `whale_kernels::x8`): which tensors a GGUF held in memory
//! rewrites, and that every reader (products, row lookups, slices of rows,
//! dequantization, whole models) gives the bits it gives on the file's
//! layout. The loader only rewrites where the CPU has the layout's decode
//! kernels; these tests rewrite explicitly, so they check the layout on
//! any CPU (elsewhere through the tiles put back in the file's layout).

mod common;

use whale_engine::formats::gguf::GgufFile;
use whale_engine::formats::gguf_write::GgufWriter;
use whale_engine::formats::names::TensorName;
use whale_engine::formats::weights::WeightStore;
use whale_engine::models::{self, LoadOptions, Logits};
use whale_engine::synth::fill::{fill, Init, Rng};
use whale_engine::synth::mix::FileType;
use whale_engine::synth::{self, Synth, SynthSpec};
use whale_kernels::x8::Layout;
use whale_kernels::GgmlType;

/// (name, GGUF dims, type) of the little file below, and whether the
/// rewrite takes it.
const TENSORS: [(&str, &[u64], GgmlType, bool); 12] = [
    ("q4k_rows16", &[512, 16], GgmlType::Q4_K, true),
    ("q6k_stack", &[256, 8, 3], GgmlType::Q6_K, true),
    ("q8_0_rows8", &[64, 8], GgmlType::Q8_0, true),
    ("q5_0_stack", &[96, 16, 2], GgmlType::Q5_0, true),
    ("q4k_rows12", &[256, 12], GgmlType::Q4_K, false),
    ("q5_1_rows8", &[64, 8], GgmlType::Q5_1, false),
    ("q4k_not_picked", &[256, 8], GgmlType::Q4_K, false),
    ("q4k_overlapped", &[256, 8], GgmlType::Q4_K, false),
    ("iq4_xs_rows8", &[256, 8], GgmlType::IQ4_XS, true),
    ("iq4_nl_stack", &[64, 8, 2], GgmlType::IQ4_NL, true),
    ("q2k_rows16", &[256, 16], GgmlType::Q2_K, true),
    ("q5k_stack", &[512, 8, 2], GgmlType::Q5_K, true),
];

/// The file's bytes, with `q4k_overlapped`'s offset moved onto
/// `q4k_not_picked`'s bytes (a crafted file whose tensors share bytes).
fn little_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", whale_engine::formats::gguf::MetaValue::String("llama".into()));
    for (name, dims, ty, _) in TENSORS {
        w.add_tensor(name, dims, ty).unwrap();
    }
    let shared = w.tensors()[6].offset;
    let mut bytes = Vec::new();
    w.write(&mut bytes, |i, t, out| {
        let mut b = vec![0u8; t.size as usize];
        fill(t.ty, Init::Normal(1.0), &mut Rng::new(7, TENSORS[i].0), &mut b);
        out.write_all(&b)
    })
    .unwrap();
    // The tensor table entry: name, n_dims (u32), dims (u64 each), type (u32), offset (u64).
    let name = b"q4k_overlapped";
    let at = bytes.windows(name.len()).position(|s| s == name).unwrap() + name.len() + 4 + 2 * 8 + 4;
    bytes[at..at + 8].copy_from_slice(&shared.to_le_bytes());
    bytes
}

fn view(store: &WeightStore, name: &str, dims: &[u64]) -> whale_engine::formats::weights::TensorView {
    let shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
    store.get(&TensorName { gguf: name.into(), hf: name.into() }, &shape).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn the_rewrite_takes_whole_groups_of_rows_of_its_types_in_memory_only() {
    let bytes = little_gguf();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let mut x8 = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(x8.interleave_x8(|t| t.name != "q4k_not_picked"), 8);
    for (name, dims, _, taken) in TENSORS {
        let want = if taken { Layout::X8 } else { Layout::File };
        assert_eq!(x8.tensor(name).unwrap().layout, want, "{name}");
        let same = x8.tensor_data(name).unwrap().1 == file.tensor_data(name).unwrap().1;
        assert_eq!(same, !taken, "{name}: bytes rewritten only where the layout says so");
        let _ = dims;
    }
    // Twice is once: a rewritten tensor is not rewritten again.
    assert_eq!(x8.interleave_x8(|_| true), 0);

    // A mapped file is left as it is.
    let path = std::env::temp_dir().join(format!("whale-x8-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let mut mapped = GgufFile::open(&path).unwrap();
    assert_eq!(mapped.interleave_x8(|_| true), 0);
    assert!(mapped.tensors.iter().all(|t| t.layout == Layout::File));
    drop(mapped);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn every_reader_of_an_interleaved_matrix_gets_the_file_layouts_bits() {
    let bytes = little_gguf();
    let file = WeightStore::Gguf(GgufFile::from_bytes(bytes.clone()).unwrap());
    let mut g = GgufFile::from_bytes(bytes).unwrap();
    g.interleave_x8(|_| true);
    let x8 = WeightStore::Gguf(g);
    for (name, dims) in [
        ("q4k_rows16", &[512u64, 16][..]),
        ("q6k_stack", &[256, 8, 3][..]),
        ("q8_0_rows8", &[64, 8][..]),
        ("q5_0_stack", &[96, 16, 2][..]),
        ("iq4_xs_rows8", &[256, 8][..]),
        ("iq4_nl_stack", &[64, 8, 2][..]),
        ("q2k_rows16", &[256, 16][..]),
        ("q5k_stack", &[512, 8, 2][..]),
    ] {
        let (a, b) = (view(&file, name, dims), view(&x8, name, dims));
        assert_eq!(b.layout, Layout::X8);
        assert_eq!(bits(&a.to_f32().unwrap()), bits(&b.to_f32().unwrap()), "{name}: dequantized");
        let cols = dims[0] as usize;
        let rows: usize = dims[1..].iter().map(|&d| d as usize).product();
        // Slices on group boundaries stay interleaved; others are copied
        // out in the file's layout.
        for (r0, n) in [(0, rows), (rows - 8, 8), (3, 5), (rows - 7, 7)] {
            let (la, lb) = (models::Linear::row_slice(&a, r0, n, cols), models::Linear::row_slice(&b, r0, n, cols));
            let aligned = r0 % 8 == 0 && n % 8 == 0;
            assert_eq!(lb.layout, if aligned { Layout::X8 } else { Layout::File }, "{name} rows {r0}+{n}");
            let (mut ra, mut rb) = (vec![0f32; cols], vec![1f32; cols]);
            for r in 0..n {
                la.row(r, &mut ra);
                lb.row(r, &mut rb);
                assert_eq!(bits(&ra), bits(&rb), "{name} rows {r0}+{n}: row {r}");
            }
            // Products of 1 (decode), 5 (this layout's own kernels) and
            // 20 rows (panels), over one thread and two.
            for m in [1, 5, 20] {
                let x: Vec<f32> = (0..m * cols).map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0).collect();
                for threads in [1, 2] {
                    let (ya, yb) = (la.forward(&x, m, threads), lb.forward(&x, m, threads));
                    assert_eq!(bits(&ya), bits(&yb), "{name} rows {r0}+{n}: m {m}, threads {threads}");
                    assert!(ya.iter().any(|&v| v != 0.0));
                }
            }
        }
    }
}

fn spec(like: &str) -> SynthSpec {
    SynthSpec { like: like.into(), layers: Some(2), ftype: FileType::Q4_K_M, seed: 3 }
}

/// A whole model's logits, over a prefill and decode steps, are the bits
/// of the same file in the file's layout; at least `min_rewritten` of its
/// tensors are rewritten, `must` among them, and a matrix of each of
/// `types`.
fn same_logits_both_layouts(bytes: Vec<u8>, min_rewritten: usize, must: &[&str], types: &[GgmlType]) {
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    let arch = g.architecture().unwrap().to_string();
    let opts = LoadOptions { threads: 2, ..LoadOptions::default() };
    let file = models::load_weights(&WeightStore::Gguf(g), &arch, opts).unwrap();
    let mut g = GgufFile::from_bytes(bytes).unwrap();
    let rewritten = g.interleave_x8(|_| true);
    for &ty in types {
        assert!(g.tensors.iter().any(|t| t.ty == ty && t.layout == Layout::X8), "{arch}: a {ty} matrix");
    }
    assert!(rewritten >= min_rewritten, "{arch}: {rewritten} tensors rewritten");
    for name in must {
        assert_eq!(g.tensor(name).map(|t| t.layout), Some(Layout::X8), "{arch}: {name}");
    }
    let x8 = models::load_weights(&WeightStore::Gguf(g), &arch, opts).unwrap();
    let prompt: Vec<u32> = (0..37u32).map(|j| (j * 7919 + 11) % 50_000).collect();
    let (mut ca, mut cb) = (file.new_cache(64), x8.new_cache(64));
    let (a, b) =
        (file.forward(&mut ca, &prompt, Logits::All).unwrap(), x8.forward(&mut cb, &prompt, Logits::All).unwrap());
    assert_eq!(bits(&a), bits(&b), "{arch}: prefill logits");
    for t in [5u32, 17, 123] {
        let (a, b) =
            (file.forward(&mut ca, &[t], Logits::Last).unwrap(), x8.forward(&mut cb, &[t], Logits::Last).unwrap());
        assert_eq!(bits(&a), bits(&b), "{arch}: decode logits after token {t}");
    }
}

#[test]
fn a_dense_model_in_the_interleaved_layout_gives_the_same_logits() {
    let real = GgufFile::open(common::cached_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")).unwrap();
    let s = Synth::plan(&spec("qwen2.5-0.5b"), synth::tokenizer::from_gguf(&real)).unwrap();
    // Rows of 896 are no multiple of 256: llama-quantize's Q4_K_M keeps
    // only `ffn_down` (4864 columns) in Q4_K or Q6_K, one a layer, and
    // falls back to Q5_0 and Q8_0 for the rest.
    same_logits_both_layouts(
        s.to_bytes(),
        14,
        &["blk.1.ffn_down.weight", "blk.1.attn_q.weight", "blk.1.ffn_gate.weight", "output.weight"],
        &[GgmlType::Q6_K],
    );
}

#[test]
fn an_iq4_xs_model_in_the_interleaved_layout_gives_the_same_logits() {
    let real = GgufFile::open(common::cached_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")).unwrap();
    let spec = SynthSpec { ftype: FileType::IQ4_XS, ..spec("qwen2.5-0.5b") };
    let s = Synth::plan(&spec, synth::tokenizer::from_gguf(&real)).unwrap();
    // llama-quantize's IQ4_XS falls back to IQ4_NL for the rows of 896;
    // `ffn_down` (4864 columns) is IQ4_XS.
    same_logits_both_layouts(
        s.to_bytes(),
        10,
        &["blk.1.attn_q.weight", "blk.1.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.1.ffn_down.weight"],
        &[GgmlType::IQ4_NL, GgmlType::IQ4_XS],
    );
}

#[test]
fn a_deepseek_moe_model_in_the_interleaved_layout_gives_the_same_logits() {
    let tok = GgufFile::open(common::hf_reference().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf")).unwrap();
    let s = Synth::plan(&spec("deepseek-v2-lite"), synth::tokenizer::from_gguf(&tok)).unwrap();
    // Among them the stacks of routed experts (3-D) and the output head.
    same_logits_both_layouts(
        s.to_bytes(),
        8,
        &[
            "blk.1.ffn_gate_exps.weight",
            "blk.1.ffn_up_exps.weight",
            "blk.1.ffn_down_exps.weight",
            "blk.0.ffn_up.weight",
            "output.weight",
        ],
        &[GgmlType::Q6_K],
    );
}
