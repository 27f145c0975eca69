//! `whale synth --type fp8`'s folders: written by the streaming writer (in
//! shards with an index, as DeepSeek's release is laid out), read back by the
//! safetensors loader, and run with the FP8 kept and dequantized.
//!
//! A DeepSeek-V3-like model small enough for a test (hidden 256, 1 dense
//! and 1 MoE layer of 8 experts), with column counts that are not all
//! multiples of 128 (`o_proj` reads 64), so partial scale blocks run too.
//! Tolerance between `--fp8 keep` and `--fp8 f32`: keep rounds each
//! activation entering an FP8 matrix to bf16 (relative error at most 2^-8,
//! see `whale_kernels::fp8`), then sums exact products; the f32 path sums
//! the unrounded ones. `--fp8 q8_0` rounds the same activations to 8-bit
//! integers per 32 (a step of amax/127, coarser than bf16's for all but a
//! block's largest) and the weights too, so keep's distance from f32 must
//! be below q8_0's: half of it allowed, 0.28 of it observed (0.16 against
//! 0.57 for logits up to 15). A wrong scale block or decode moves them by
//! more than q8_0's error.

use whale_engine::formats::storage::LoadMode;
use whale_engine::formats::weights::{Fp8Mode, WeightStore};
use whale_engine::models::deepseek_v3::Deepseek;
use whale_engine::models::{CacheType, LoadOptions, Logits, Model};
use whale_engine::synth::fp8::Fp8Folder;
use whale_engine::synth::presets::{Config, Deepseek as DsConfig, Order, Preset};

static TINY: Preset = Preset {
    name: "tiny-v3",
    aliases: &[],
    hf_repo: "test/tiny-v3",
    tokenizer: "-",
    pre_tokenizer: "deepseek-v3",
    order: Order::HfNames,
    config: Config::Deepseek2(DsConfig {
        hidden_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        q_lora_rank: Some(128),
        kv_lora_rank: 128,
        qk_nope_head_dim: 32,
        qk_rope_head_dim: 16,
        v_head_dim: 32,
        intermediate_size: 384,
        moe_intermediate_size: 128,
        n_routed_experts: 8,
        n_shared_experts: 1,
        num_experts_per_tok: 2,
        first_k_dense_replace: 1,
        n_group: 2,
        topk_group: 1,
        sigmoid_scoring: true,
        norm_topk_prob: true,
        routed_scaling_factor: 2.5,
        vocab_size: 512,
        max_position_embeddings: 4096,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        yarn: (1.0, 4096, 32.0, 1.0, 1.0),
    }),
};

#[test]
fn synthetic_fp8_folder_loads_and_keep_equals_f32() {
    let dir = std::env::temp_dir().join(format!("whale-synth-fp8-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let f = Fp8Folder::plan(&TINY, None, 7).unwrap();
    let shards = f.shards(f.data_bytes() / 2);
    assert!(shards.len() >= 2, "split in shards");
    for (r, name) in shards.iter().zip(Fp8Folder::shard_names(shards.len())) {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap());
        f.write_shard(r.clone(), &mut out, |_| {}).unwrap();
    }
    std::fs::write(dir.join("model.safetensors.index.json"), f.index_json(&shards)).unwrap();
    std::fs::write(dir.join("config.json"), f.config()).unwrap();

    let load = |fp8| {
        let store = WeightStore::open_with(&dir, fp8, LoadMode::Map).unwrap();
        Deepseek::load(&store, LoadOptions { threads: 2, cache_type: CacheType::F32, fp8, ..Default::default() })
            .unwrap()
    };
    let (keep, exact, q8) = (load(Fp8Mode::Keep), load(Fp8Mode::F32), load(Fp8Mode::Q8_0));
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 512).collect();
    let a = keep.forward(&mut keep.new_cache(64), &ids, Logits::All).unwrap();
    let b = exact.forward(&mut exact.new_cache(64), &ids, Logits::All).unwrap();
    let c = q8.forward(&mut q8.new_cache(64), &ids, Logits::All).unwrap();
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let q8_worst = c.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    eprintln!("q8_0 vs f32: max |Δlogit| {q8_worst:e}");
    let spread = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("keep vs f32: max |Δlogit| {worst:e} (logits up to {spread})");
    assert!(spread > 1.0, "the random model gives non-trivial logits");
    let tol = q8_worst / 2.0;
    assert!(worst <= tol, "--fp8 keep differs from --fp8 f32 by {worst:e} (allowed {tol:e})");
    // Decoding one token after the prompt agrees as well (the one-row path).
    let mut c1 = keep.new_cache(64);
    let mut c2 = exact.new_cache(64);
    keep.forward(&mut c1, &ids, Logits::Last).unwrap();
    exact.forward(&mut c2, &ids, Logits::Last).unwrap();
    let a = keep.forward(&mut c1, &[9], Logits::Last).unwrap();
    let b = exact.forward(&mut c2, &[9], Logits::Last).unwrap();
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    eprintln!("decode: max |Δlogit| {worst:e}");
    assert!(worst <= tol, "decode: --fp8 keep differs from --fp8 f32 by {worst:e} (allowed {tol:e})");
    assert!(keep.active_weight_bytes() * 3 < exact.active_weight_bytes() * 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
