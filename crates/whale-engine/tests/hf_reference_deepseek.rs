//! DeepSeek-V2/V3 (MLA + DeepSeekMoE + YaRN) against Hugging Face
//! transformers, on the tiny random-weight models in
//! `../shared/fixtures/hf-reference`, and the llama.cpp-converted GGUF.
//!
//! Tolerances: logits within 1e-4 teacher-forced (the reference README: a
//! float64 reimplementation agrees with transformers within 2.5e-6, so what is
//! left is float32 summation order); expert ids exactly equal; expert weights
//! within 1e-5 (they are sigmoid/softmax outputs in [0, 2.5] computed in f32).
//! The GGUF (f32) top-5 logits within 1e-3: the README reports llama.cpp
//! itself reproduces them within 9e-4 in log-probability.

mod common;

use common::{hf_reference, max_abs_diff, npy_values, read_npy_f32, read_npz};
use whale_engine::models::deepseek_v3::{Deepseek, LayerRouting};
use whale_engine::serving::generate::Session;
// Transformers keeps keys and values in f32, so these comparisons use an
// f32 KV cache (the default f16 cache rounds them, as llama.cpp does).
use whale_engine::formats::storage::LoadMode;
use whale_engine::formats::weights::{Fp8Mode, WeightStore};
use whale_engine::models::{CacheType, LoadOptions, Logits, Model};
use whale_engine::serving::sampler::argmax;

const TOL: f32 = 1e-4;

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_model(name: &str) {
    let root = hf_reference();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(format!("expected/{name}.json"))).unwrap()).unwrap();
    let mut worst = 0f32;
    // The shards mapped at one thread and read into memory at two: the
    // same checks either way.
    for (threads, mode) in [(1, LoadMode::Map), (2, LoadMode::Read)] {
        let store = WeightStore::open_with(&root.join(format!("models/{name}")), Fp8Mode::Keep, mode).unwrap();
        let model =
            Deepseek::load(&store, LoadOptions { threads, cache_type: CacheType::F32, ..Default::default() }).unwrap();
        let vocab = model.info().vocab_size;
        for prompt in expected["prompts"].as_array().unwrap() {
            let pname = prompt["name"].as_str().unwrap();
            let ids = ids_of(&prompt["input_ids"]);
            let mut cache = model.new_cache(64);
            let mut trace: Vec<LayerRouting> = Vec::new();
            let logits = model.forward_traced(&mut cache, &ids, Logits::All, Some(&mut trace)).unwrap();
            let (_, want) =
                read_npy_f32(&root.join("expected").join(prompt["prefill"]["logits_file"].as_str().unwrap()));
            let d = max_abs_diff(&logits, &want);
            assert!(d <= TOL, "{name}/{pname} prefill: max |Δlogit| = {d:e}");
            worst = worst.max(d);
            // Routing: expert ids (sorted ascending in the file) and final weights.
            let npz = read_npz(&root.join("expected").join(prompt["prefill"]["routing_file"].as_str().unwrap()));
            assert!(!trace.is_empty(), "{name}: no MoE layer ran");
            for lr in &trace {
                let (shape, want_ids) = npy_values(&npz[&format!("layer{}_expert_ids", lr.layer)]);
                let (_, want_w) = npy_values(&npz[&format!("layer{}_expert_weights", lr.layer)]);
                let k = shape[1];
                for (t, r) in lr.tokens.iter().enumerate() {
                    let mut got = r.clone();
                    got.sort_by_key(|x| x.0);
                    for j in 0..k {
                        assert_eq!(
                            got[j].0 as f64,
                            want_ids[t * k + j],
                            "{name}/{pname} layer {} token {t}: experts",
                            lr.layer
                        );
                        let dw = (got[j].1 as f64 - want_w[t * k + j]).abs();
                        assert!(dw <= 1e-5, "{name}/{pname} layer {} token {t}: weight off by {dw:e}", lr.layer);
                    }
                }
            }
            // Teacher-forced decode through the latent cache.
            let gen = ids_of(&prompt["greedy"]["generated_ids"]);
            let (_, dec) =
                read_npy_f32(&root.join("expected").join(prompt["greedy"]["decode_logits_file"].as_str().unwrap()));
            let mut session = Session::new(&model, 64);
            let mut row = session.feed(&model, &ids).unwrap();
            let mut free = Vec::new();
            for (k, &tok) in gen.iter().enumerate() {
                let d = max_abs_diff(&row, &dec[k * vocab..(k + 1) * vocab]);
                assert!(d <= TOL, "{name}/{pname} decode step {k}: max |Δlogit| = {d:e}");
                worst = worst.max(d);
                free.push(argmax(&row));
                row = session.feed(&model, &[tok]).unwrap();
            }
            assert_eq!(free, gen, "{name}/{pname}: greedy ids");
        }
    }
    eprintln!("{name}: worst max |Δlogit| = {worst:e}");
}

#[test]
fn dsv3_a_qlora_yarn_matches_transformers() {
    check_model("dsv3_a_qlora_yarn");
}

#[test]
fn dsv3_b_noqlora_norope_scaling_matches_transformers() {
    check_model("dsv3_b_noqlora_norope_scaling");
}

#[test]
fn dsv2_e_lite_greedy_matches_transformers() {
    check_model("dsv2_e_lite_greedy");
}

/// llama.cpp's converter output: `deepseek2` naming (attn_k_b/attn_v_b, stacked
/// experts, exp_probs_b), the real 129,280-token vocabulary. Free-running
/// greedy with the cache; at every step the expected top-5 logits must be
/// within 1e-3 and the chosen id equal. The chat prompt is tokenized by whale.
#[test]
fn dsv3_gguf_made_by_llama_cpp_matches_transformers() {
    let root = hf_reference();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected/dsv3_a_qlora_yarn_v129280.json")).unwrap())
            .unwrap();
    let m = whale_engine::models::load(
        &root.join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf"),
        LoadOptions { threads: 2, cache_type: CacheType::F32, ..Default::default() },
    )
    .unwrap();
    assert_eq!(m.model.info().kv_values_per_token_layer, 32 + 8, "the cache holds the latent and the rope key only");
    let mut worst = 0f32;
    for prompt in expected["prompts"].as_array().unwrap() {
        let pname = prompt["name"].as_str().unwrap();
        let want_ids = ids_of(&prompt["input_ids"]);
        let ids = match prompt.get("text").and_then(|t| t.as_str()) {
            Some(text) => m.tokenizer.encode(text, false).unwrap(),
            None => want_ids.clone(),
        };
        assert_eq!(ids, want_ids, "{pname}: whale's tokenization");
        let mut session = Session::new(m.model.as_ref(), 64);
        let mut row = session.feed(m.model.as_ref(), &ids).unwrap();
        for step in prompt["greedy"]["steps"].as_array().unwrap() {
            let k = step["step"].as_u64().unwrap();
            let top_ids = ids_of(&step["top5"]["ids"]);
            for (j, (&id, v)) in top_ids.iter().zip(step["top5"]["values"].as_array().unwrap()).enumerate() {
                let d = (row[id as usize] - v.as_f64().unwrap() as f32).abs();
                assert!(d <= 1e-3, "{pname} step {k}: top-{j} id {id} logit off by {d:e}");
                worst = worst.max(d);
            }
            let chosen = argmax(&row);
            assert_eq!(chosen as u64, step["chosen"].as_u64().unwrap(), "{pname} step {k}: greedy id");
            row = session.feed(m.model.as_ref(), &[chosen]).unwrap();
        }
    }
    eprintln!("GGUF: worst top-5 |Δlogit| = {worst:e}");
}

/// DeepSeek's FP8 layout (float8 e4m3fn + 128×128 `weight_scale_inv`), made
/// from the dsv3_a fixture by `tests/data/fp8/make_fp8_fixture.py`, which also
/// wrote the same weights dequantized by numpy. Loading the FP8 checkpoint
/// must give the logits of the numpy-dequantized one, while both differ from
/// the unquantized model by the quantization error itself:
/// - `--fp8 f32` (dequantized at load): the same f32 weights through the
///   same kernels, so within 1e-5 (in practice identical);
/// - `--fp8 keep` (the default; bytes read in place by the FP8 kernels):
///   each activation entering an FP8 matrix is rounded to bf16 (a relative
///   step of 2^-7, 16 times finer than e4m3's 2^-3 for the weights; DeepSeek's
///   own inference rounds them to e4m3), then the products are exact. An
///   error of the same kind as FP8's and 16 times smaller, so it has to
///   stay below 1/8 of the quantization error the fixture shows (a margin
///   of 2; observed: 0.01 to 0.06 of it);
/// - `--fp8 q8_0` adds Q8_0's rounding of the weights (a step of amax/127
///   per 32, about a third of e4m3's 3-bit relative step for Gaussian
///   weights) and of the activations, so it has to stay below the FP8
///   quantization error the fixture shows (observed: 0.3 to 0.6 of it,
///   the long prompt amplifying both alike).
///
/// Kept, every FP8 matrix stays its file's pages, one byte a weight.
#[test]
fn fp8_block_scaled_checkpoint_matches_python_dequantization() {
    let root = hf_reference();
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fp8");
    let load = |dir: &str, fp8: Fp8Mode| {
        Deepseek::load(
            &WeightStore::open_with(&data.join(dir), fp8, LoadMode::Map).unwrap(),
            LoadOptions { threads: 2, cache_type: CacheType::F32, fp8, ..Default::default() },
        )
        .unwrap()
    };
    let deq = load("dequant", Fp8Mode::Keep);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected/dsv3_a_qlora_yarn.json")).unwrap()).unwrap();
    let mut bytes = Vec::new();
    // Allowed: an absolute bound, or a fraction of the quantization error.
    for (mode, tol, frac) in [(Fp8Mode::F32, Some(1e-5), 0.0), (Fp8Mode::Keep, None, 0.125), (Fp8Mode::Q8_0, None, 1.0)]
    {
        let fp8 = load("fp8", mode);
        bytes.push(fp8.active_weight_bytes());
        for prompt in expected["prompts"].as_array().unwrap() {
            let ids = ids_of(&prompt["input_ids"]);
            let a = fp8.forward(&mut fp8.new_cache(64), &ids, Logits::All).unwrap();
            let b = deq.forward(&mut deq.new_cache(64), &ids, Logits::All).unwrap();
            let (_, orig) =
                read_npy_f32(&root.join("expected").join(prompt["prefill"]["logits_file"].as_str().unwrap()));
            let same = max_abs_diff(&a, &b);
            let quant_err = max_abs_diff(&b, &orig);
            eprintln!(
                "--fp8 {}, {}: vs numpy-dequantized {same:e}; dequantized vs unquantized {quant_err:e}",
                mode.name(),
                prompt["name"]
            );
            match tol {
                Some(tol) => {
                    assert!(same <= tol, "--fp8 {}: differs from the Python dequantization by {same:e}", mode.name());
                    assert!(quant_err > 10.0 * tol, "the FP8 fixture should show a quantization error ({quant_err:e})");
                }
                None => assert!(
                    same < frac * quant_err,
                    "--fp8 {}: {same:e} against {frac} of FP8's own error {quant_err:e}",
                    mode.name()
                ),
            }
        }
    }
    eprintln!("matrix bytes read per token: f32 {}, keep {}, q8_0 {}", bytes[0], bytes[1], bytes[2]);
    assert!(bytes[1] < bytes[2] && bytes[2] < bytes[0], "bytes per token: keep < q8_0 < f32: {bytes:?}");
    // Kept, every FP8 matrix is its file's pages, 1 byte a weight.
    let WeightStore::Hf(dir) = WeightStore::open_with(&data.join("fp8"), Fp8Mode::Keep, LoadMode::Map).unwrap() else {
        panic!()
    };
    let mut kept = 0;
    for name in dir.tensor_names().filter(|n| n.ends_with("proj.weight")) {
        let t = dir.tensor(name).unwrap();
        assert_eq!(t.ty, whale_kernels::GgmlType::F8_E4M3, "{name}");
        assert!(t.data.is_mapped() && t.data.len() == t.shape.iter().product::<usize>(), "{name}");
        kept += 1;
    }
    assert!(kept >= 10, "{kept} FP8 matrices");
}
