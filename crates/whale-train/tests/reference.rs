//! The trainer's forward pass against outside references: transformers on
//! the tiny llama and qwen2 fixtures, and whale's engine on a real
//! quantized GGUF (SmolLM2-135M, which exercises the Q/K row order
//! llama.cpp's converter writes).

#[path = "../../whale-engine/tests/common/mod.rs"]
mod common;

use common::{cached_model, hf_reference, read_npy_f32};
use whale_engine::models::{CacheType, LoadOptions, Logits};
use whale_train::checkpoint::load_model;
use whale_train::model::Model;

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = row.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln() as f32 + max;
    row.iter().map(|&v| v - lse).collect()
}

/// Teacher-forced log-probabilities within 2e-4 of transformers' (float32,
/// eager). The engine's logits agree with transformers within 1e-4 (its
/// own test); a log-softmax moves each entry by the logit's error plus the
/// log-sum-exp's, so at most twice that.
fn check(name: &str) {
    let root = hf_reference();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(format!("expected/{name}.json"))).unwrap()).unwrap();
    let (cfg, params) = load_model(&root.join(format!("models/{name}"))).unwrap();
    let model = Model::new(cfg, params).unwrap();
    let vocab = model.cfg.vocab_size;
    let mut worst = 0f32;
    for prompt in expected["prompts"].as_array().unwrap() {
        let ids: Vec<u32> =
            prompt["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let (_, want) = read_npy_f32(&root.join("expected").join(prompt["prefill"]["logits_file"].as_str().unwrap()));
        for threads in [1, 2] {
            let tape = model.forward(&[&ids], threads).unwrap();
            for r in 0..ids.len() {
                let w = log_softmax(&want[r * vocab..(r + 1) * vocab]);
                let d = tape.logp_row(r).iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                worst = worst.max(d);
            }
        }
    }
    assert!(worst <= 2e-4, "{name}: max |Δlogp| = {worst:e}");
    eprintln!("{name}: max |Δlogp| against transformers = {worst:e}");
}

#[test]
fn llama_tied_gqa_matches_transformers() {
    check("llama_tiny_gqa_tied");
}

#[test]
fn qwen2_biases_match_transformers() {
    check("qwen2_tiny_gqa_bias");
}

/// A real GGUF (Q4_1), dequantized for training, against the engine running
/// the same file. The engine quantizes activations to 8 bits for its Q4_1
/// products, so the two differ by that rounding (mean |Δlogp| over the
/// likely tokens 0.08 here), not by 1e-4. Loading the file with llama.cpp's
/// Q/K row order left as it is gives 1.67 (measured by disabling the
/// un-permutation), so the bound is 0.3, between the two; the greedy choice
/// must also agree at ≥ 90 % of positions.
#[test]
fn smollm2_gguf_loads_for_training_and_agrees_with_the_engine() {
    let path = cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let (cfg, params) = load_model(&path).unwrap();
    assert!(cfg.tie_word_embeddings);
    assert_eq!((cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size), (30, 576, 49152));
    let model = Model::new(cfg, params).unwrap();
    let loaded =
        whale_engine::models::load(&path, LoadOptions { threads: 2, cache_type: CacheType::F32, ..Default::default() })
            .unwrap();
    let ids = loaded
        .tokenizer
        .encode("The capital of France is Paris. The capital of Italy is Rome. The capital of", true)
        .unwrap();
    let mut cache = loaded.model.new_cache(ids.len());
    let engine = loaded.model.forward(&mut cache, &ids, Logits::All).unwrap();
    let tape = model.forward(&[&ids], 2).unwrap();
    let v = model.cfg.vocab_size;
    let (mut agree, mut gap, mut n) = (0, 0f64, 0);
    for r in 0..ids.len() {
        let e = log_softmax(&engine[r * v..(r + 1) * v]);
        let t = tape.logp_row(r);
        let am = |x: &[f32]| (0..v).fold(0, |b, i| if x[i] > x[b] { i } else { b });
        agree += (am(&e) == am(t)) as usize;
        for i in (0..v).filter(|&i| e[i] > -5.0) {
            gap += (e[i] - t[i]).abs() as f64;
            n += 1;
        }
    }
    let mean = gap / n as f64;
    eprintln!("SmolLM2 Q4_1: greedy agrees at {agree}/{}, mean |Δlogp| {mean:.4}", ids.len());
    assert!(agree * 10 >= ids.len() * 9, "greedy agrees at {agree} of {} positions", ids.len());
    assert!(mean < 0.3, "mean |Δlogp| over likely tokens {mean}");
}
