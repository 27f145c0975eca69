//! Synthetic DeepSeek FP8 checkpoints: a Hugging Face folder laid out as
//! `deepseek-ai/DeepSeek-V3` is released (`config.json` with its
//! `quantization_config`, sharded `model-0000k-of-0000n.safetensors` with
//! `model.safetensors.index.json`), at a preset's shapes, with random
//! weights: every projection in float8 e4m3fn with a `weight_scale_inv` per
//! 128×128 block, the embedding, output head, norms and router in bf16, the
//! router's correction bias in f32, as in the real files.
//!
//! FP8 codes are drawn from a normal distribution of standard deviation
//! [`CODE_STD`] rounded to the nearest e4m3 value (so a block's largest
//! code is near 448, as DeepSeek's per-block `amax / 448` scaling makes
//! it), and the block scale turns them into weights of the standard
//! deviation the GGUF synth uses for the same matrix. Written as a stream:
//! a folder of any size needs a few MiB of memory.

use std::io::{self, Write};

use half::bf16;

use super::fill::Rng;
use super::presets::{Config, Deepseek, Preset};
use super::SynthError;

/// Standard deviation of the FP8 codes (before the block scale).
pub const CODE_STD: f32 = 112.0;
/// Rows and columns per scale block.
const BLOCK: usize = whale_kernels::fp8::BLOCK;

/// How a tensor is stored and what its values look like.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// e4m3 codes whose weights have this standard deviation.
    Fp8(f32),
    /// The block scales of the FP8 tensor before it (f32, all equal).
    Scale(f32),
    /// bf16, normal with this standard deviation.
    Bf16Normal(f32),
    /// bf16, every element this value (norm weights).
    Bf16Const(f32),
    /// f32, normal with this standard deviation.
    F32Normal(f32),
}

#[derive(Clone, Debug)]
struct Tensor {
    name: String,
    shape: Vec<usize>,
    kind: Kind,
}

impl Tensor {
    fn elements(&self) -> usize {
        self.shape.iter().product()
    }
    fn bytes(&self) -> u64 {
        let per = match self.kind {
            Kind::Fp8(_) => 1,
            Kind::Bf16Normal(_) | Kind::Bf16Const(_) => 2,
            Kind::Scale(_) | Kind::F32Normal(_) => 4,
        };
        (self.elements() * per) as u64
    }
    fn dtype(&self) -> &'static str {
        match self.kind {
            Kind::Fp8(_) => "F8_E4M3",
            Kind::Bf16Normal(_) | Kind::Bf16Const(_) => "BF16",
            Kind::Scale(_) | Kind::F32Normal(_) => "F32",
        }
    }
}

/// A planned FP8 folder.
pub struct Fp8Folder {
    pub preset: &'static Preset,
    pub layers: usize,
    config: serde_json::Value,
    tensors: Vec<Tensor>,
    seed: u64,
}

/// An FP8 matrix and its block scales.
fn fp8(out: &mut Vec<Tensor>, name: String, rows: usize, cols: usize) {
    let std = 1.0 / (cols as f32).sqrt();
    let scale = format!("{}_scale_inv", name);
    out.push(Tensor { name, shape: vec![rows, cols], kind: Kind::Fp8(std) });
    out.push(Tensor {
        name: scale,
        shape: vec![rows.div_ceil(BLOCK), cols.div_ceil(BLOCK)],
        kind: Kind::Scale(std / CODE_STD),
    });
}

fn norm(out: &mut Vec<Tensor>, name: String, n: usize) {
    out.push(Tensor { name, shape: vec![n], kind: Kind::Bf16Const(1.0) });
}

fn config_json(c: &Deepseek, p: &Preset, layers: usize, dense: usize) -> serde_json::Value {
    let (factor, orig, beta_fast, beta_slow, mscale_all_dim) = c.yarn;
    serde_json::json!({
        "architectures": [if c.sigmoid_scoring { "DeepseekV3ForCausalLM" } else { "DeepseekV2ForCausalLM" }],
        "model_type": if c.sigmoid_scoring { "deepseek_v3" } else { "deepseek_v2" },
        "_synthetic": format!("whale synth --like {} --type fp8: random weights at {}'s shapes", p.name, p.hf_repo),
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "moe_intermediate_size": c.moe_intermediate_size,
        "num_hidden_layers": layers,
        "num_nextn_predict_layers": 0,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_attention_heads,
        "n_shared_experts": c.n_shared_experts,
        "n_routed_experts": c.n_routed_experts,
        "routed_scaling_factor": c.routed_scaling_factor,
        "kv_lora_rank": c.kv_lora_rank,
        "q_lora_rank": c.q_lora_rank,
        "qk_rope_head_dim": c.qk_rope_head_dim,
        "v_head_dim": c.v_head_dim,
        "qk_nope_head_dim": c.qk_nope_head_dim,
        "topk_method": if c.sigmoid_scoring { "noaux_tc" } else { "greedy" },
        "n_group": c.n_group,
        "topk_group": c.topk_group,
        "num_experts_per_tok": c.num_experts_per_tok,
        "moe_layer_freq": 1,
        "first_k_dense_replace": dense,
        "norm_topk_prob": c.norm_topk_prob,
        "scoring_func": if c.sigmoid_scoring { "sigmoid" } else { "softmax" },
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": {
            "type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": orig,
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
            "mscale": mscale_all_dim,
            "mscale_all_dim": mscale_all_dim,
        },
        "tie_word_embeddings": false,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [BLOCK, BLOCK],
        },
    })
}

impl Fp8Folder {
    /// Plans the folder for a DeepSeek preset (`layers`: as for the GGUF
    /// synth; a MoE model keeps at least one MoE layer).
    pub fn plan(preset: &'static Preset, layers: Option<usize>, seed: u64) -> Result<Fp8Folder, SynthError> {
        let Config::Deepseek2(c) = &preset.config else {
            return Err(SynthError::Unsupported(format!(
                "--type fp8 writes DeepSeek's FP8 layout; {} is not a DeepSeek model",
                preset.name
            )));
        };
        let max = c.num_hidden_layers;
        let layers = layers.unwrap_or(max);
        if layers == 0 || layers > max {
            return Err(SynthError::BadLayers { model: preset.name, asked: layers, max });
        }
        let dense = c.first_k_dense_replace.min(layers.saturating_sub(1));
        let (h, nh) = (c.hidden_size, c.num_attention_heads);
        let qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
        let mut t = Vec::new();
        t.push(Tensor {
            name: "model.embed_tokens.weight".into(),
            shape: vec![c.vocab_size, h],
            kind: Kind::Bf16Normal(0.1),
        });
        for i in 0..layers {
            let l = |s: &str| format!("model.layers.{i}.{s}");
            norm(&mut t, l("input_layernorm.weight"), h);
            match c.q_lora_rank {
                Some(q) => {
                    fp8(&mut t, l("self_attn.q_a_proj.weight"), q, h);
                    norm(&mut t, l("self_attn.q_a_layernorm.weight"), q);
                    fp8(&mut t, l("self_attn.q_b_proj.weight"), nh * qk, q);
                }
                None => fp8(&mut t, l("self_attn.q_proj.weight"), nh * qk, h),
            }
            fp8(&mut t, l("self_attn.kv_a_proj_with_mqa.weight"), c.kv_lora_rank + c.qk_rope_head_dim, h);
            norm(&mut t, l("self_attn.kv_a_layernorm.weight"), c.kv_lora_rank);
            fp8(&mut t, l("self_attn.kv_b_proj.weight"), nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
            fp8(&mut t, l("self_attn.o_proj.weight"), h, nh * c.v_head_dim);
            norm(&mut t, l("post_attention_layernorm.weight"), h);
            if i < dense {
                fp8(&mut t, l("mlp.gate_proj.weight"), c.intermediate_size, h);
                fp8(&mut t, l("mlp.up_proj.weight"), c.intermediate_size, h);
                fp8(&mut t, l("mlp.down_proj.weight"), h, c.intermediate_size);
                continue;
            }
            let (ff, sh) = (c.moe_intermediate_size, c.moe_intermediate_size * c.n_shared_experts);
            t.push(Tensor {
                name: l("mlp.gate.weight"),
                shape: vec![c.n_routed_experts, h],
                kind: Kind::Bf16Normal(1.0 / (h as f32).sqrt()),
            });
            if c.sigmoid_scoring {
                t.push(Tensor {
                    name: l("mlp.gate.e_score_correction_bias"),
                    shape: vec![c.n_routed_experts],
                    kind: Kind::F32Normal(0.01),
                });
            }
            for e in 0..c.n_routed_experts {
                fp8(&mut t, l(&format!("mlp.experts.{e}.gate_proj.weight")), ff, h);
                fp8(&mut t, l(&format!("mlp.experts.{e}.up_proj.weight")), ff, h);
                fp8(&mut t, l(&format!("mlp.experts.{e}.down_proj.weight")), h, ff);
            }
            if sh > 0 {
                fp8(&mut t, l("mlp.shared_experts.gate_proj.weight"), sh, h);
                fp8(&mut t, l("mlp.shared_experts.up_proj.weight"), sh, h);
                fp8(&mut t, l("mlp.shared_experts.down_proj.weight"), h, sh);
            }
        }
        norm(&mut t, "model.norm.weight".into(), h);
        t.push(Tensor {
            name: "lm_head.weight".into(),
            shape: vec![c.vocab_size, h],
            kind: Kind::Bf16Normal(4.0 / (h as f32).sqrt()),
        });
        let config = config_json(c, preset, layers, dense);
        Ok(Fp8Folder { preset, layers, config, tensors: t, seed })
    }

    /// config.json's text.
    pub fn config(&self) -> String {
        serde_json::to_string_pretty(&self.config).expect("a JSON value serializes")
    }

    /// Bytes of tensor data in all shards.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(Tensor::bytes).sum()
    }

    /// Weights (elements of the matrices and vectors, scales not counted)
    /// and how many of them are FP8.
    pub fn weight_counts(&self) -> (u64, u64) {
        let all = self.tensors.iter().filter(|t| !matches!(t.kind, Kind::Scale(_))).map(|t| t.elements() as u64).sum();
        let f8 = self.tensors.iter().filter(|t| matches!(t.kind, Kind::Fp8(_))).map(|t| t.elements() as u64).sum();
        (all, f8)
    }

    /// The tensors split into shards of at most `max_bytes` of data each (a
    /// tensor with its scales never straddles two), as index ranges.
    pub fn shards(&self, max_bytes: u64) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut size) = (0, 0u64);
        for (i, t) in self.tensors.iter().enumerate() {
            let scale_follows = matches!(t.kind, Kind::Scale(_));
            if size > 0 && size + t.bytes() > max_bytes && !scale_follows {
                out.push(start..i);
                (start, size) = (i, 0);
            }
            size += t.bytes();
        }
        out.push(start..self.tensors.len());
        out
    }

    /// The shard file names, as Hugging Face names them.
    pub fn shard_names(n: usize) -> Vec<String> {
        if n == 1 {
            return vec!["model.safetensors".into()];
        }
        (1..=n).map(|k| format!("model-{k:05}-of-{n:05}.safetensors")).collect()
    }

    /// `model.safetensors.index.json` for these shards.
    pub fn index_json(&self, shards: &[std::ops::Range<usize>]) -> String {
        let names = Self::shard_names(shards.len());
        let mut map = serde_json::Map::new();
        for (r, file) in shards.iter().zip(&names) {
            for t in &self.tensors[r.clone()] {
                map.insert(t.name.clone(), serde_json::Value::String(file.clone()));
            }
        }
        let v = serde_json::json!({ "metadata": { "total_size": self.data_bytes() }, "weight_map": map });
        serde_json::to_string_pretty(&v).expect("a JSON value serializes")
    }

    /// Writes one shard (the tensors `range`): the safetensors header, then
    /// each tensor's data, generated in chunks. `progress` gets bytes written.
    pub fn write_shard(
        &self,
        range: std::ops::Range<usize>,
        out: &mut impl Write,
        mut progress: impl FnMut(u64),
    ) -> io::Result<()> {
        let tensors = &self.tensors[range];
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        let mut at = 0u64;
        for t in tensors {
            header.insert(
                t.name.clone(),
                serde_json::json!({ "dtype": t.dtype(), "shape": t.shape, "data_offsets": [at, at + t.bytes()] }),
            );
            at += t.bytes();
        }
        let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("a JSON value serializes");
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        out.write_all(&(h.len() as u64).to_le_bytes())?;
        out.write_all(&h)?;
        let table = code_table();
        let mut buf = vec![0u8; 4 << 20];
        for t in tensors {
            let mut rng = Rng::new(self.seed, &t.name);
            let mut left = t.bytes() as usize;
            while left > 0 {
                let n = left.min(buf.len());
                fill(t.kind, &table, &mut rng, &mut buf[..n]);
                out.write_all(&buf[..n])?;
                progress(n as u64);
                left -= n;
            }
        }
        Ok(())
    }
}

/// Fills `out` (whole elements) with values of `kind`.
fn fill(kind: Kind, table: &[u8; 1 << 16], rng: &mut Rng, out: &mut [u8]) {
    match kind {
        Kind::Fp8(_) => {
            for c in out.chunks_mut(4) {
                let r = rng.next_u64();
                for (k, b) in c.iter_mut().enumerate() {
                    *b = table[(r >> (16 * k)) as usize & 0xffff];
                }
            }
        }
        Kind::Scale(s) => out.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&s.to_le_bytes())),
        Kind::Bf16Const(v) => out.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&bf16::from_f32(v).to_le_bytes())),
        Kind::Bf16Normal(std) => {
            out.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&bf16::from_f32(normal(rng) * std).to_le_bytes()))
        }
        Kind::F32Normal(std) => {
            out.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&(normal(rng) * std).to_le_bytes()))
        }
    }
}

/// A standard normal sample (Box-Muller, one of the pair).
fn normal(rng: &mut Rng) -> f32 {
    let u1 = rng.unit().max(1e-7);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Φ, the standard normal CDF (Abramowitz & Stegun 26.2.17, error < 7.5e-8).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.231_641_9 * x.abs());
    let poly =
        t * (0.319_381_530 + t * (-0.356_563_782 + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    let tail = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly;
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// A 16-bit uniform index → e4m3 code table whose codes follow
/// N(0, CODE_STD²) rounded to the nearest e4m3 value: code `c` gets the
/// share of indices equal to the probability of its rounding interval.
fn code_table() -> [u8; 1 << 16] {
    // Finite codes by value (0x80, negative zero, left out; NaNs too).
    let mut codes: Vec<(f32, u8)> = (0..=255u8)
        .filter(|&b| b & 0x7f != 0x7f && b != 0x80)
        .map(|b| (whale_kernels::fp8::e4m3_to_f32_ref(b), b))
        .collect();
    codes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut table = [0u8; 1 << 16];
    let mut from = 0usize;
    for (k, &(v, code)) in codes.iter().enumerate() {
        let upper = codes.get(k + 1).map_or(f64::INFINITY, |&(w, _)| (v as f64 + w as f64) / 2.0);
        let to = ((normal_cdf(upper / CODE_STD as f64) * 65536.0).round() as usize).min(1 << 16);
        for slot in &mut table[from.min(to)..to] {
            *slot = code;
        }
        from = from.max(to);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_table_follows_the_normal_and_uses_the_range() {
        let t = code_table();
        let vals: Vec<f64> = t.iter().map(|&b| whale_kernels::fp8::e4m3_to_f32_ref(b) as f64).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let std = (vals.iter().map(|v| v * v).sum::<f64>() / vals.len() as f64).sqrt();
        assert!(mean.abs() < 1.0, "mean {mean}");
        assert!((std / CODE_STD as f64 - 1.0).abs() < 0.02, "std {std}");
        assert!(t.iter().all(|&b| b & 0x7f != 0x7f), "no NaN code");
        let max = vals.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!((300.0..=448.0).contains(&max), "largest |code| {max}");
    }

    #[test]
    fn v3_plan_has_real_shapes_and_fp8_projections() {
        let p = super::super::presets::find("deepseek-v3").unwrap();
        let f = Fp8Folder::plan(p, Some(2), 0).unwrap();
        let find = |n: &str| f.tensors.iter().find(|t| t.name == n).unwrap_or_else(|| panic!("{n}"));
        assert_eq!(find("model.layers.0.mlp.gate_proj.weight").shape, vec![18432, 7168]);
        assert_eq!(find("model.layers.1.mlp.experts.255.down_proj.weight").shape, vec![7168, 2048]);
        assert_eq!(find("model.layers.1.mlp.experts.255.down_proj.weight_scale_inv").shape, vec![56, 16]);
        assert_eq!(find("model.layers.1.self_attn.kv_a_proj_with_mqa.weight").shape, vec![576, 7168]);
        assert_eq!(find("model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv").shape, vec![5, 56]);
        assert_eq!(find("lm_head.weight").dtype(), "BF16");
        assert_eq!(f.config["first_k_dense_replace"], 1);
        let (all, f8) = f.weight_counts();
        assert!(f8 > 11_000_000_000 && all - f8 < 2_000_000_000, "{all} weights, {f8} FP8");
        // Shards never separate a tensor from its scales.
        let shards = f.shards(4 << 30);
        assert!(shards.len() > 3);
        for r in &shards {
            assert!(!matches!(f.tensors[r.start].kind, Kind::Scale(_)));
        }
        assert!(Fp8Folder::plan(super::super::presets::find("qwen2.5-0.5b").unwrap(), None, 0).is_err());
    }
}
