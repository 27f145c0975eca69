//! A synthetic Janus-Pro folder: transformers' `JanusForConditionalGeneration`
//! layout at Janus-Pro-1B's or -7B's shapes, random bf16 weights, for timing
//! understanding and generation without the real weights. Written as one
//! `model.safetensors`, streamed tensor by tensor (a few MiB of memory).
//!
//! The VQ encoder (which turns pictures into codes, for training) is left
//! out: whale never runs it.

use std::io::Write;
use std::path::Path;

use half::bf16;

use crate::synth::fill::Rng;
use crate::synth::SynthError;

/// The shapes of one Janus-Pro size (Hugging Face `config.json` values).
#[derive(Clone, Copy, Debug)]
pub struct JanusShape {
    pub name: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab: usize,
}

/// The released sizes (deepseek-community/Janus-Pro-1B and -7B): a
/// DeepSeek-LLM language model, the same SigLIP-L encoder and VQ model.
pub const JANUS_SHAPES: [JanusShape; 2] = [
    JanusShape { name: "janus-pro-1b", hidden: 2048, intermediate: 5632, layers: 24, heads: 16, vocab: 102400 },
    JanusShape { name: "janus-pro-7b", hidden: 4096, intermediate: 11008, layers: 30, heads: 32, vocab: 102400 },
];

const VISION_HIDDEN: usize = 1024;
const VISION_LAYERS: usize = 24;
const CODES: usize = 16384;
const CODE_DIM: usize = 8;
const LATENT: usize = 256;
const BASE: usize = 128;
const MULT: [usize; 5] = [1, 1, 2, 2, 4];
const RES_BLOCKS: usize = 2;

/// How a tensor is filled.
#[derive(Clone, Copy)]
enum Init {
    Normal(f32),
    One,
    Zero,
}

struct Tensor {
    name: String,
    shape: Vec<usize>,
    init: Init,
}

fn tensors(s: &JanusShape, lm_layers: usize) -> Vec<Tensor> {
    let mut t = Vec::new();
    let mut w = |name: String, shape: Vec<usize>| {
        let init = if shape.len() == 1 { Init::Zero } else { Init::Normal(0.02) };
        t.push(Tensor { name, shape, init })
    };
    let (h, i, v) = (s.hidden, s.intermediate, s.vocab);
    let lm = "model.language_model";
    w(format!("{lm}.embed_tokens.weight"), vec![v, h]);
    for l in 0..lm_layers {
        let p = format!("{lm}.layers.{l}");
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            w(format!("{p}.self_attn.{n}.weight"), vec![h, h]);
        }
        w(format!("{p}.mlp.gate_proj.weight"), vec![i, h]);
        w(format!("{p}.mlp.up_proj.weight"), vec![i, h]);
        w(format!("{p}.mlp.down_proj.weight"), vec![h, i]);
        w(format!("{p}.input_layernorm.weight"), vec![h]);
        w(format!("{p}.post_attention_layernorm.weight"), vec![h]);
    }
    w(format!("{lm}.norm.weight"), vec![h]);
    w("lm_head.weight".into(), vec![v, h]);
    let lin = |w: &mut dyn FnMut(String, Vec<usize>), p: &str, rows: usize, cols: usize| {
        w(format!("{p}.weight"), vec![rows, cols]);
        w(format!("{p}.bias"), vec![rows]);
    };
    let hv = VISION_HIDDEN;
    let vm = "model.vision_model";
    w(format!("{vm}.embeddings.patch_embedding.weight"), vec![hv, 3, 16, 16]);
    w(format!("{vm}.embeddings.patch_embedding.bias"), vec![hv]);
    w(format!("{vm}.embeddings.position_embedding.weight"), vec![576, hv]);
    for l in 0..VISION_LAYERS {
        let p = format!("{vm}.encoder.layers.{l}");
        for n in ["layer_norm1", "layer_norm2"] {
            w(format!("{p}.{n}.weight"), vec![hv]);
            w(format!("{p}.{n}.bias"), vec![hv]);
        }
        for n in ["q_proj", "k_proj", "v_proj", "projection_layer"] {
            lin(&mut w, &format!("{p}.self_attn.{n}"), hv, hv);
        }
        lin(&mut w, &format!("{p}.mlp.fc1"), 4 * hv, hv);
        lin(&mut w, &format!("{p}.mlp.fc2"), hv, 4 * hv);
    }
    w(format!("{vm}.post_layernorm.weight"), vec![hv]);
    w(format!("{vm}.post_layernorm.bias"), vec![hv]);
    lin(&mut w, "model.aligner.fc1", h, hv);
    lin(&mut w, "model.aligner.hidden_layers.0", h, h);
    w("model.generation_embeddings.weight".into(), vec![CODES, CODE_DIM]);
    lin(&mut w, "model.generation_aligner.fc1", h, CODE_DIM);
    lin(&mut w, "model.generation_aligner.hidden_layers.0", h, h);
    lin(&mut w, "model.generation_head.proj_out", h, h);
    lin(&mut w, "model.generation_head.vision_head", CODES, h);
    let vq = "model.vqmodel";
    w(format!("{vq}.quantize.embedding.weight"), vec![CODES, CODE_DIM]);
    let conv = |w: &mut dyn FnMut(String, Vec<usize>), p: &str, c_in: usize, c_out: usize, k: usize| {
        w(format!("{p}.weight"), vec![c_out, c_in, k, k]);
        w(format!("{p}.bias"), vec![c_out]);
    };
    conv(&mut w, &format!("{vq}.post_quant_conv"), CODE_DIM, LATENT, 1);
    let d = format!("{vq}.decoder");
    let gn = |w: &mut dyn FnMut(String, Vec<usize>), p: &str, c: usize| {
        w(format!("{p}.weight"), vec![c]);
        w(format!("{p}.bias"), vec![c]);
    };
    let res = |w: &mut dyn FnMut(String, Vec<usize>), p: &str, c_in: usize, c_out: usize| {
        let conv = |w: &mut dyn FnMut(String, Vec<usize>), p: &str, a: usize, b: usize, k: usize| {
            w(format!("{p}.weight"), vec![b, a, k, k]);
            w(format!("{p}.bias"), vec![b]);
        };
        gn(w, &format!("{p}.norm1"), c_in);
        conv(w, &format!("{p}.conv1"), c_in, c_out, 3);
        gn(w, &format!("{p}.norm2"), c_out);
        conv(w, &format!("{p}.conv2"), c_out, c_out, 3);
        if c_in != c_out {
            conv(w, &format!("{p}.nin_shortcut"), c_in, c_out, 1);
        }
    };
    let attn = |w: &mut dyn FnMut(String, Vec<usize>), p: &str, c: usize| {
        gn(w, &format!("{p}.norm"), c);
        for n in ["q", "k", "v", "proj_out"] {
            w(format!("{p}.{n}.weight"), vec![c, c, 1, 1]);
            w(format!("{p}.{n}.bias"), vec![c]);
        }
    };
    let mut block_in = BASE * MULT[MULT.len() - 1];
    conv(&mut w, &format!("{d}.conv_in"), LATENT, block_in, 3);
    res(&mut w, &format!("{d}.mid.block_1"), block_in, block_in);
    attn(&mut w, &format!("{d}.mid.attn_1"), block_in);
    res(&mut w, &format!("{d}.mid.block_2"), block_in, block_in);
    for lvl in 0..MULT.len() {
        let out = BASE * MULT[MULT.len() - 1 - lvl];
        for j in 0..=RES_BLOCKS {
            res(&mut w, &format!("{d}.up.{lvl}.block.{j}"), block_in, out);
            block_in = out;
            if lvl == 0 {
                attn(&mut w, &format!("{d}.up.{lvl}.attn.{j}"), block_in);
            }
        }
        if lvl != MULT.len() - 1 {
            conv(&mut w, &format!("{d}.up.{lvl}.upsample.conv"), block_in, block_in, 3);
        }
    }
    gn(&mut w, &format!("{d}.norm_out"), block_in);
    conv(&mut w, &format!("{d}.conv_out"), block_in, 3, 3);
    // Norm weights are ones (their biases stay zero).
    for x in &mut t {
        let is_norm = x.name.contains("norm") || x.name.contains("layer_norm");
        if is_norm && x.name.ends_with(".weight") && x.shape.len() == 1 {
            x.init = Init::One;
        }
    }
    t
}

/// The config.json of the shape (transformers' key names).
fn config(s: &JanusShape, lm_layers: usize, image_token_id: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["JanusForConditionalGeneration"],
        "model_type": "janus",
        "image_token_id": image_token_id,
        "text_config": {
            "model_type": "llama", "vocab_size": s.vocab, "hidden_size": s.hidden,
            "intermediate_size": s.intermediate, "num_hidden_layers": lm_layers,
            "num_attention_heads": s.heads, "num_key_value_heads": s.heads, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "max_position_embeddings": 16384, "hidden_act": "silu"
        },
        "vision_config": {
            "hidden_size": VISION_HIDDEN, "num_hidden_layers": VISION_LAYERS, "num_attention_heads": 16,
            "image_size": 384, "patch_size": 16, "mlp_ratio": 4.0, "projection_dim": s.hidden, "depth": 2,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6
        },
        "vq_config": {
            "embed_dim": CODE_DIM, "num_embeddings": CODES, "latent_channels": LATENT, "base_channels": BASE,
            "channel_multiplier": MULT, "num_res_blocks": RES_BLOCKS, "projection_dim": s.hidden,
            "image_token_embed_dim": s.hidden, "num_hidden_layers": 2, "hidden_act": "gelu"
        }
    })
}

/// Write the folder: config.json, model.safetensors (bf16) and the
/// tokenizer files of `tokenizer_dir` (which must hold Janus's image tokens;
/// its ids must be below the vocabulary size). `lm_layers` can shorten the
/// language model. Returns the bytes of weights written.
pub fn write_janus(
    out: &Path,
    shape: &JanusShape,
    lm_layers: Option<usize>,
    tokenizer_dir: &Path,
    image_token_id: u32,
    seed: u64,
) -> Result<u64, SynthError> {
    let io = |e: std::io::Error| SynthError::Io(e.to_string());
    let layers = lm_layers.unwrap_or(shape.layers).clamp(1, shape.layers);
    std::fs::create_dir_all(out).map_err(io)?;
    for f in ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"] {
        let src = tokenizer_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, out.join(f)).map_err(io)?;
        }
    }
    let cfg = config(shape, layers, image_token_id);
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap_or_default()).map_err(io)?;
    let list = tensors(shape, layers);
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for t in &list {
        let bytes = t.shape.iter().product::<usize>() as u64 * 2;
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [at, at + bytes]}),
        );
        at += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut head = serde_json::to_string(&header).unwrap_or_default().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let file = std::fs::File::create(out.join("model.safetensors")).map_err(io)?;
    let mut f = std::io::BufWriter::with_capacity(8 << 20, file);
    f.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&head).map_err(io)?;
    let mut buf = Vec::new();
    for t in &list {
        let n: usize = t.shape.iter().product();
        let mut rng = Rng::new(seed, &t.name);
        for chunk in (0..n).step_by(1 << 20) {
            let m = (1 << 20).min(n - chunk);
            buf.clear();
            for _ in 0..m {
                let x = match t.init {
                    Init::One => 1.0,
                    Init::Zero => 0.0,
                    // A sum of uniforms: mean 0, about normal.
                    Init::Normal(std) => (rng.unit() + rng.unit() + rng.unit() - 1.5) * 2.0 * std,
                };
                buf.extend_from_slice(&bf16::from_f32(x).to_le_bytes());
            }
            f.write_all(&buf).map_err(io)?;
        }
    }
    f.flush().map_err(io)?;
    Ok(at)
}
