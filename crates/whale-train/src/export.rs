//! `whale export`: a trained model (LoRA merged) as one GGUF file that
//! `whale run` and `whale serve` load, with the base model's tokenizer (or,
//! for a tiny model trained from scratch, its character vocabulary as a
//! byte-level BPE without merges).
//!
//! Tensors get llama.cpp's names and dimension order; llama Q/K rows are put
//! in the order llama.cpp's converter writes (the engine reads GGUF llama
//! with adjacent rotation pairs); matrices are f32 or f16, vectors f32.

use std::io::Write;
use std::path::Path;

use whale_engine::formats::gguf::{GgufFile, MetaValue};
use whale_engine::formats::gguf_write::GgufWriter;
use whale_kernels::GgmlType;

use crate::checkpoint::permute_rows;
use crate::model::Model;
use crate::tasks;
use crate::{io_err, TrainError};

/// The `tokenizer.*` keys for the output: the base's (a GGUF, or a Hugging
/// Face folder with `tokenizer.json`), else the tiny vocabulary.
pub fn tokenizer_metadata(base: Option<&Path>, vocab_size: usize) -> Result<Vec<(String, MetaValue)>, TrainError> {
    let bad = |e: String| TrainError::Input(format!("the base model's tokenizer: {e}"));
    match base {
        Some(p) if p.is_file() => {
            let g = GgufFile::open(p).map_err(|e| bad(e.to_string()))?;
            Ok(whale_engine::synth::tokenizer::from_gguf(&g))
        }
        Some(p) if p.join("tokenizer.json").exists() => {
            whale_engine::synth::tokenizer::from_hf_dir(p, "default", vocab_size).map_err(|e| bad(e.to_string()))
        }
        _ if vocab_size == tasks::VOCAB.len() => Ok(tiny_tokenizer()),
        _ => Err(TrainError::Input("no tokenizer: give the base model (--base) the model was trained from".into())),
    }
}

/// The tiny character vocabulary as GGUF `gpt2` keys: each character a
/// token in the byte-level alphabet (space is `Ġ`), no merges, `<s>`/`</s>`
/// control tokens, `<answer>`/`</answer>` user-defined ones, and
/// `</answer>` an end of generation, as it ends every answer.
pub fn tiny_tokenizer() -> Vec<(String, MetaValue)> {
    let s = |v: &str| MetaValue::String(v.into());
    let tokens: Vec<MetaValue> = tasks::VOCAB.iter().map(|t| s(if *t == " " { "Ġ" } else { t })).collect();
    let types: Vec<MetaValue> = (0..tasks::VOCAB.len())
        .map(|i| {
            MetaValue::I32(match i as u32 {
                tasks::BOS | tasks::EOS => 3,
                tasks::ANSWER_OPEN | tasks::ANSWER_CLOSE => 4,
                _ => 1,
            })
        })
        .collect();
    vec![
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("default")),
        ("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
        ("tokenizer.ggml.merges".into(), MetaValue::Array(vec![])),
        ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(tasks::BOS)),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(tasks::EOS)),
        ("tokenizer.ggml.eot_token_id".into(), MetaValue::U32(tasks::ANSWER_CLOSE)),
        ("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true)),
    ]
}

/// Matrix element type of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportType {
    F32,
    F16,
}

/// Write `model` (adapters merged) to `out` as a GGUF with `tokenizer`
/// keys. Returns the bytes written.
pub fn write_gguf(
    model: &Model,
    tokenizer: Vec<(String, MetaValue)>,
    name: &str,
    ty: ExportType,
    out: &Path,
) -> Result<u64, TrainError> {
    let c = &model.cfg;
    let arch = c.model_type.as_str();
    let params = model.merged();
    let mut w = GgufWriter::new();
    let u = |v: usize| MetaValue::U32(v as u32);
    w.set("general.architecture", MetaValue::String(arch.into()));
    w.set("general.name", MetaValue::String(name.into()));
    w.set(&format!("{arch}.context_length"), u(c.max_position_embeddings));
    w.set(&format!("{arch}.embedding_length"), u(c.hidden_size));
    w.set(&format!("{arch}.block_count"), u(c.num_hidden_layers));
    w.set(&format!("{arch}.feed_forward_length"), u(c.intermediate_size));
    w.set(&format!("{arch}.attention.head_count"), u(c.num_attention_heads));
    w.set(&format!("{arch}.attention.head_count_kv"), u(c.num_key_value_heads));
    w.set(&format!("{arch}.attention.key_length"), u(c.head_dim()));
    w.set(&format!("{arch}.attention.value_length"), u(c.head_dim()));
    w.set(&format!("{arch}.attention.layer_norm_rms_epsilon"), MetaValue::F32(c.rms_norm_eps as f32));
    w.set(&format!("{arch}.rope.freq_base"), MetaValue::F32(c.rope_theta as f32));
    for (k, v) in tokenizer {
        w.set(&k, v);
    }
    let hd = c.head_dim();
    let mut datas: Vec<(GgmlType, Vec<f32>)> = vec![];
    for i in 0..params.names.len() {
        let hf = &params.names[i];
        let shape = &params.shapes[i];
        let gguf = gguf_name(hf);
        let mut d = params.data[i].clone();
        if arch == "llama" && (hf.ends_with("q_proj.weight") || hf.ends_with("k_proj.weight")) {
            d = permute_rows(&d, shape[0] / hd, hd, shape[1]);
        }
        let t = if shape.len() == 2 && ty == ExportType::F16 { GgmlType::F16 } else { GgmlType::F32 };
        let dims: Vec<u64> = shape.iter().rev().map(|&x| x as u64).collect();
        w.add_tensor(&gguf, &dims, t).map_err(|e| TrainError::Shape(e.to_string()))?;
        datas.push((t, d));
    }
    let f = std::fs::File::create(out).map_err(io_err(out))?;
    let mut buf = std::io::BufWriter::new(f);
    let n = w
        .write(&mut buf, |i, _, sink| {
            let (t, d) = &datas[i];
            match t {
                GgmlType::F16 => {
                    let mut h = vec![0u16; d.len()];
                    whale_kernels::f32_to_f16(d, &mut h);
                    sink.write_all(bytemuck::cast_slice(&h))
                }
                _ => sink.write_all(bytemuck::cast_slice(d)),
            }
        })
        .map_err(io_err(out))?;
    buf.flush().map_err(io_err(out))?;
    buf.get_ref().sync_all().map_err(io_err(out))?;
    Ok(n)
}

/// llama.cpp's name of a Hugging Face tensor name.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
    let (l, suffix) = rest.split_once('.').expect("layer index");
    let g = match suffix {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => other,
    };
    format!("blk.{l}.{g}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LlamaConfig, Lora, Params};
    use rand::{Rng, SeedableRng};
    use whale_engine::models::{CacheType, LoadOptions, Logits};

    /// An exported GGUF, loaded by the engine with its own tokenizer, gives
    /// the trainer's log-probabilities within 1e-4 (f32 export; the two
    /// differ by summation order only): for a llama with LoRA adapters (Q/K
    /// rows permuted for llama.cpp, adapters merged) and a qwen2 with biases
    /// and a tied head. The tokenizer encodes a prompt to the ids training
    /// used.
    #[test]
    fn exported_gguf_runs_in_the_engine_as_trained() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (model_type, tied, lora) in [("llama", false, true), ("qwen2", true, false)] {
            let mut cfg = LlamaConfig::tiny(tasks::VOCAB.len(), 32, 2, tasks::BOS, tasks::EOS);
            cfg.model_type = model_type.into();
            cfg.tie_word_embeddings = tied;
            let mut params = Params::init(&cfg, &mut rng);
            params.data.iter_mut().for_each(|d| d.iter_mut().for_each(|x| *x = *x * 5.0 + 0.01));
            let mut model = Model::new(cfg.clone(), params).unwrap();
            if lora {
                let mut l = Lora::new(&cfg, 4, 8.0, &mut rng).unwrap();
                for (n, d) in l.params.names.iter().zip(l.params.data.iter_mut()) {
                    if n.ends_with("lora_B.weight") {
                        d.iter_mut().for_each(|x| *x = rng.gen::<f32>() - 0.5);
                    }
                }
                model = model.with_lora(l).unwrap();
            }
            let path = std::env::temp_dir().join(format!("whale-export-{model_type}-{}.gguf", std::process::id()));
            write_gguf(&model, tiny_tokenizer(), "test", ExportType::F32, &path).unwrap();
            let loaded = whale_engine::models::load(
                &path,
                LoadOptions { threads: 1, cache_type: CacheType::F32, ..Default::default() },
            )
            .unwrap();
            let p = tasks::Problem::train(tasks::Task::Addition, &mut rng);
            let ids = loaded.tokenizer.encode(&format!("{}<answer>1", p.prompt), true).unwrap();
            let mut want = p.prompt_ids();
            want.extend([tasks::ANSWER_OPEN, 5]);
            assert_eq!(ids, want, "the exported tokenizer encodes as training did");
            assert!(loaded.tokenizer.is_eog(tasks::ANSWER_CLOSE));
            let mut cache = loaded.model.new_cache(ids.len());
            let logits = loaded.model.forward(&mut cache, &ids, Logits::All).unwrap();
            let tape = model.forward(&[&ids], 1).unwrap();
            let v = cfg.vocab_size;
            let mut worst = 0f32;
            for r in 0..ids.len() {
                let e = crate::ops::log_softmax_rows(&logits[r * v..(r + 1) * v], v);
                worst = tape.logp_row(r).iter().zip(&e).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
            }
            assert!(worst < 1e-4, "{model_type}: max |Δlogp| {worst}");
            let _ = std::fs::remove_file(&path);
        }
    }
}
