//! `Model::forward_batch` (continuous batching) gives every sequence the
//! same bits as `Model::forward` of that sequence alone: logits and the K/V
//! rows it leaves in its cache. Checked on a block-quantized GGUF (SmolLM2
//! Q4_1: one product over the stacked rows), on float safetensors models
//! (llama and qwen2 with Q/K/V biases: products per sequence, and in bf16
//! a decode step of several sequences as one product that reads the weights
//! once) and on the tiny
//! DeepSeek-V3 (MLA, routed experts fed by several sequences), with batches
//! that mix prompt chunks, single decode tokens and caches at different
//! lengths. Exact equality is the contract (see the trait docs), so there is
//! no tolerance.

mod common;

use whale_engine::formats::weights::WeightStore;
use whale_engine::models::{load, load_weights, BatchSeq, KvCache, LoadOptions, Logits, Model};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Cache contents up to its length, as bits.
fn cache_bits(c: &KvCache) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for (k, v) in c.k.iter().zip(&c.v) {
        let (mut kf, mut vf) = (vec![0f32; c.len * c.k_width], vec![0f32; c.len * c.v_width]);
        k.read(0, &mut kf);
        v.read(0, &mut vf);
        out.push(bits(&kf));
        out.push(bits(&vf));
    }
    out
}

fn ids(n: usize, seed: u32, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|j| (seed.wrapping_mul(7919).wrapping_add(j * 104_729)) % vocab).collect()
}

fn check(model: &dyn Model, threads_note: &str) {
    // (tokens already in the cache, tokens fed now)
    check_shapes(model, threads_note, &[(0, 7), (5, 1), (0, 1), (12, 3), (3, 1)]);
    // A decode step: every sequence brings one token.
    check_shapes(model, threads_note, &[(5, 1), (0, 1), (12, 1)]);
    check_failing_batch(model, threads_note);
}

/// `Logits::Last` finishes only each sequence's last row in the last block
/// (the others only write their cache rows there): its logits must be the
/// last row of `Logits::All`'s, and the caches (written before the rows
/// part) the same, bit for bit. With `tol`, the logits may differ by
/// `tol · max|logit|`: float weights go through a product whose summation
/// order depends on the row count (one row against all of them), so the
/// last block's products round differently; block-quantized products give
/// the same bits whatever the row count, so there `tol` is `None`.
fn check_last_equals_all(model: &dyn Model, threads_note: &str, tol: Option<f32>) {
    let vocab = model.info().vocab_size;
    for (s, (before, now)) in [(0, 9), (6, 5), (3, 1)].into_iter().enumerate() {
        let history = ids(before, s as u32 + 30, vocab as u32);
        let feed = ids(now, s as u32 + 60, vocab as u32);
        let mut c = model.new_cache(32);
        if before > 0 {
            model.forward(&mut c, &history, Logits::Last).unwrap();
        }
        let mut c_all = c.clone();
        let last = model.forward(&mut c, &feed, Logits::Last).unwrap();
        let all = model.forward(&mut c_all, &feed, Logits::All).unwrap();
        assert_eq!(all.len(), now * vocab);
        let want = &all[(now - 1) * vocab..];
        match tol {
            None => assert_eq!(bits(&last), bits(want), "{threads_note}: {before}+{now} last logits"),
            Some(tol) => {
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                let diff = last.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff <= tol * scale, "{threads_note}: {before}+{now} last logits differ by {diff}");
            }
        }
        assert!(cache_bits(&c) == cache_bits(&c_all), "{threads_note}: {before}+{now} cache");
    }
}

fn check_shapes(model: &dyn Model, threads_note: &str, shapes: &[(usize, usize)]) {
    let vocab = model.info().vocab_size as u32;
    let mut alone_caches = Vec::new();
    let mut alone_logits = Vec::new();
    let mut batch_caches = Vec::new();
    let mut feeds = Vec::new();
    for (s, &(before, now)) in shapes.iter().enumerate() {
        let history = ids(before, s as u32 + 1, vocab);
        let feed = ids(now, s as u32 + 100, vocab);
        let mut c = model.new_cache(32);
        if before > 0 {
            model.forward(&mut c, &history, Logits::Last).unwrap();
        }
        batch_caches.push(c.clone());
        alone_logits.push(model.forward(&mut c, &feed, Logits::Last).unwrap());
        alone_caches.push(c);
        feeds.push(feed);
    }
    let mut seqs: Vec<BatchSeq<'_>> =
        batch_caches.iter_mut().zip(&feeds).map(|(cache, tokens)| BatchSeq { cache, tokens }).collect();
    let batch_logits = model.forward_batch(&mut seqs).unwrap();
    assert_eq!(batch_logits.len(), shapes.len());
    for s in 0..shapes.len() {
        assert_eq!(bits(&batch_logits[s]), bits(&alone_logits[s]), "{threads_note}: sequence {s} logits differ");
        assert_eq!(batch_caches[s].len, alone_caches[s].len, "{threads_note}: sequence {s} cache length");
        assert!(cache_bits(&batch_caches[s]) == cache_bits(&alone_caches[s]), "{threads_note}: sequence {s} cache");
    }
}

/// `check`'s failing batch.
fn check_failing_batch(model: &dyn Model, threads_note: &str) {
    let vocab = model.info().vocab_size as u32;

    // A failing batch (one sequence's cache is full) advances no cache.
    let mut full = model.new_cache(2);
    let mut ok = model.new_cache(8);
    let long = ids(3, 9, vocab);
    let one = ids(1, 10, vocab);
    let mut seqs = [BatchSeq { cache: &mut ok, tokens: &one }, BatchSeq { cache: &mut full, tokens: &long }];
    assert!(model.forward_batch(&mut seqs).is_err(), "{threads_note}: a full cache must fail the batch");
    assert_eq!((ok.len, full.len), (0, 0), "{threads_note}: a failed batch advanced a cache");
}

#[test]
fn quantized_gguf_batch_equals_each_sequence_alone() {
    let path = common::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    for threads in [1, 2] {
        let m = load(&path, LoadOptions { threads, ..Default::default() }).unwrap();
        check(m.model.as_ref(), &format!("SmolLM2 Q4_1, {threads} threads"));
        check_last_equals_all(m.model.as_ref(), &format!("SmolLM2 Q4_1, {threads} threads"), None);
    }
}

#[test]
fn float_safetensors_batch_equals_each_sequence_alone() {
    let root = common::hf_reference();
    for (name, arch) in [("llama_tiny_gqa_tied", "llama"), ("qwen2_tiny_gqa_bias", "qwen2")] {
        let store = WeightStore::open(&root.join(format!("models/{name}"))).unwrap();
        let model = load_weights(&store, arch, LoadOptions { threads: 2, ..Default::default() }).unwrap();
        check(model.as_ref(), name);
        // f32 rounding over a few hundred terms a product, a few layers deep.
        check_last_equals_all(model.as_ref(), name, Some(1e-5));
    }
}

/// A copy of a float32 safetensors model folder with every weight rounded
/// to bf16 (the config beside it as it is).
fn bf16_copy(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let (mut out_header, mut out_data) = (serde_json::Map::new(), Vec::new());
    for (name, t) in header {
        if name == "__metadata__" {
            out_header.insert(name, t);
            continue;
        }
        assert_eq!(t["dtype"], "F32", "{name}");
        let (a, b) = (t["data_offsets"][0].as_u64().unwrap() as usize, t["data_offsets"][1].as_u64().unwrap() as usize);
        let start = out_data.len();
        for v in data[a..b].chunks_exact(4) {
            out_data.extend(half::bf16::from_f32(f32::from_le_bytes(v.try_into().unwrap())).to_le_bytes());
        }
        out_header.insert(
            name,
            serde_json::json!({"dtype": "BF16", "shape": t["shape"], "data_offsets": [start, out_data.len()]}),
        );
    }
    let h = serde_json::to_vec(&out_header).unwrap();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend(h);
    file.extend(out_data);
    std::fs::write(dst.join("model.safetensors"), file).unwrap();
}

#[test]
fn bf16_safetensors_batch_equals_each_sequence_alone() {
    let root = common::hf_reference();
    for (name, arch) in [("llama_tiny_gqa_tied", "llama"), ("qwen2_tiny_gqa_bias", "qwen2")] {
        let dir = std::env::temp_dir().join(format!("whale-bf16-{name}-{}", std::process::id()));
        bf16_copy(&root.join(format!("models/{name}")), &dir);
        let store = WeightStore::open(&dir).unwrap();
        let model = load_weights(&store, arch, LoadOptions { threads: 2, ..Default::default() }).unwrap();
        check(model.as_ref(), &format!("{name} in bf16"));
        drop((model, store));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn deepseek_batch_equals_each_sequence_alone() {
    let path = common::hf_reference().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    for threads in [1, 2] {
        let m = load(&path, LoadOptions { threads, ..Default::default() }).unwrap();
        let note = format!("tiny DeepSeek-V3, {threads} threads");
        check(m.model.as_ref(), &note);
        // An f32 file: as for the float safetensors models.
        check_last_equals_all(m.model.as_ref(), &note, Some(1e-5));
    }
}
