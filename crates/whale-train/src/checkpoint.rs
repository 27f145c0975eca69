//! What a run leaves on disk: model folders (`config.json` +
//! `model.safetensors` in transformers' names, which whale's engine loads
//! as any llama model), the resumable checkpoint (model, optimiser moments
//! and a JSON state, replaced atomically so a kill loses at most one step),
//! the JSONL log and an SVG plot of the curves.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{LlamaConfig, Lora, Model, Params};
use crate::{io_err, TrainError};

fn ck_err(path: &Path, msg: impl Into<String>) -> TrainError {
    TrainError::Checkpoint { path: path.display().to_string(), msg: msg.into() }
}

/// Write `params` as one safetensors file of f32 tensors (`prefix` before
/// each name).
pub fn write_safetensors(path: &Path, params: &Params, prefix: &str) -> Result<(), TrainError> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for ((name, shape), d) in params.names.iter().zip(&params.shapes).zip(&params.data) {
        let bytes = d.len() * 4;
        header.insert(
            format!("{prefix}{name}"),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, off + bytes]}),
        );
        off += bytes;
    }
    let mut h = serde_json::to_vec(&header).expect("a JSON map serialises");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for d in &params.data {
        out.extend_from_slice(bytemuck::cast_slice(d));
    }
    write_file(path, &out)
}

/// Write and flush a file, so a full disk shows up here and not later.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Read the tensors of `like` (names and shapes) from a safetensors file,
/// each under `prefix`. Every tensor must be there, f32 (or f16/bf16,
/// widened), with the expected shape.
pub fn read_safetensors(path: &Path, like: &Params, prefix: &str) -> Result<Params, TrainError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ck_err(path, e.to_string()))?;
    let mut out = like.zeros_like();
    for i in 0..like.names.len() {
        let name = format!("{prefix}{}", like.names[i]);
        let t = st.tensor(&name).map_err(|_| ck_err(path, format!("tensor {name} is missing")))?;
        if t.shape() != like.shapes[i].as_slice() {
            return Err(ck_err(path, format!("{name} has shape {:?}, expected {:?}", t.shape(), like.shapes[i])));
        }
        let d = t.data();
        out.data[i] = match t.dtype() {
            safetensors::Dtype::F32 => {
                d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            safetensors::Dtype::BF16 => {
                d.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
            }
            other => return Err(ck_err(path, format!("{name} is {other:?}; the trainer reads F32 and BF16"))),
        };
    }
    Ok(out)
}

/// A model folder: `config.json` and `model.safetensors`.
pub fn save_model(dir: &Path, cfg: &LlamaConfig, params: &Params) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let cfg_path = dir.join("config.json");
    write_file(&cfg_path, &serde_json::to_vec_pretty(cfg).expect("config serialises"))?;
    write_safetensors(&dir.join("model.safetensors"), params, "")
}

/// Load a llama or qwen2 model to train, from anything the engine loads: a
/// Hugging Face folder (f32/bf16/f16 safetensors, sharded or not; the
/// folders [`save_model`] writes) or a GGUF file of any quantization,
/// dequantized to f32. GGUF llama Q/K rows, which llama.cpp's converter
/// permutes for its RoPE pairing, are put back in Hugging Face's order, so
/// the trainer and everything it writes use one layout.
pub fn load_model(path: &Path) -> Result<(LlamaConfig, Params), TrainError> {
    use whale_engine::formats::names::{self, layer, name};
    use whale_engine::formats::weights::WeightStore;
    use whale_engine::models::llama::LlamaParams;
    use whale_engine::models::ops::RopeStyle;
    let store = WeightStore::open(path).map_err(whale_engine::models::ModelError::from)?;
    let unsupported = |what: &str| {
        Err(TrainError::Unsupported(format!(
            "{what}: whale's trainer differentiates llama and qwen2 models (DeepSeek's MLA and MoE layers have no backward pass yet)"
        )))
    };
    let (qwen2, p, gguf_llama) = match &store {
        WeightStore::Gguf(g) => match g.get_str("general.architecture").unwrap_or("") {
            "llama" => (false, LlamaParams::from_gguf(g, "llama", RopeStyle::Interleaved, false)?, true),
            "qwen2" => (true, LlamaParams::from_gguf(g, "qwen2", RopeStyle::Halves, true)?, false),
            other => return unsupported(&format!("GGUF architecture {other:?}")),
        },
        WeightStore::Hf(hf) => match hf.config.get("model_type").and_then(|v| v.as_str()).unwrap_or("") {
            "llama" => (false, LlamaParams::from_hf(&hf.config, false)?, false),
            "qwen2" => (true, LlamaParams::from_hf(&hf.config, true)?, false),
            other => return unsupported(&format!("model_type {other:?}")),
        },
    };
    if p.rope_freq_factors.is_some() || store.contains(&name(names::ROPE_FREQS)) {
        return Err(TrainError::Unsupported("llama3 RoPE scaling is not supported by the trainer yet".into()));
    }
    let tied = !store.contains(&name(names::OUTPUT));
    let mut cfg = LlamaConfig::from_engine(&p, qwen2, tied);
    if let WeightStore::Hf(hf) = &store {
        cfg.bos_token_id = hf.config.get("bos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
        cfg.eos_token_id = hf.config.get("eos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
    }
    cfg.validate()?;
    let mut params = Params::zeros(&cfg);
    let hd = cfg.head_dim();
    for i in 0..params.names.len() {
        let hf = params.names[i].clone();
        let tn = match hf.strip_prefix("model.layers.") {
            None => name(match hf.as_str() {
                "model.embed_tokens.weight" => names::TOKEN_EMBD,
                "model.norm.weight" => names::OUTPUT_NORM,
                _ => names::OUTPUT,
            }),
            Some(rest) => {
                let (l, suffix) = rest.split_once('.').expect("layer names have a suffix");
                let l: usize = l.parse().expect("layer index");
                let pair = [
                    names::ATTN_NORM,
                    names::ATTN_Q,
                    names::ATTN_K,
                    names::ATTN_V,
                    names::ATTN_Q_BIAS,
                    names::ATTN_K_BIAS,
                    names::ATTN_V_BIAS,
                    names::ATTN_OUT,
                    names::FFN_NORM,
                    names::FFN_GATE,
                    names::FFN_UP,
                    names::FFN_DOWN,
                ]
                .into_iter()
                .find(|pair| pair.1.ends_with(suffix))
                .expect("every trainer tensor has an engine name");
                layer(pair, l)
            }
        };
        let mut w = store
            .get(&tn, &params.shapes[i])
            .map_err(whale_engine::models::ModelError::from)?
            .to_f32()
            .map_err(whale_engine::models::ModelError::from)?;
        if gguf_llama && (hf.ends_with("q_proj.weight") || hf.ends_with("k_proj.weight")) {
            w = unpermute_rows(&w, params.shapes[i][0] / hd, hd, params.shapes[i][1]);
        }
        params.data[i] = w;
    }
    Ok((cfg, params))
}

/// llama.cpp's converter stores each head's rows as adjacent rotation pairs
/// (row `2i + j` of a head is Hugging Face's row `j·hd/2 + i`); undo it.
pub fn unpermute_rows(w: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    reorder_rows(w, heads, hd, cols, false)
}

/// The inverse of [`unpermute_rows`]: Hugging Face's order to llama.cpp's.
pub fn permute_rows(w: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    reorder_rows(w, heads, hd, cols, true)
}

fn reorder_rows(w: &[f32], heads: usize, hd: usize, cols: usize, to_gguf: bool) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    let half = hd / 2;
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (hf, gguf) = ((h * hd + j * half + i) * cols, (h * hd + 2 * i + j) * cols);
                let (src, dst) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// Copy a Hugging Face folder's tokenizer files next to a model (nothing
/// for a GGUF, whose tokenizer stays in the file).
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<(), TrainError> {
    if !from.is_dir() {
        return Ok(());
    }
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
        let src = from.join(f);
        if src.exists() {
            std::fs::copy(&src, to.join(f)).map_err(io_err(&src))?;
        }
    }
    Ok(())
}

/// What a run needs to resume, beside the model and the optimiser.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Steps completed.
    pub step: u64,
    /// The command's settings, to refuse resuming with different ones.
    pub settings: serde_json::Value,
    /// Held-out accuracy at evaluation steps: `(step, accuracy)`.
    pub heldout: Vec<(u64, f64)>,
    /// The first held-out evaluation, before any step.
    pub heldout_before: Option<f64>,
    pub rollouts: u64,
    pub seconds: f64,
}

/// The checkpoint folder of a run directory.
pub fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// Moments of the optimiser as one tensor set (`m.` and `v.` prefixes).
fn moments_of(opt: &crate::optim::AdamW) -> Params {
    let mut p = opt.m.clone();
    p.names =
        opt.m.names.iter().map(|n| format!("m.{n}")).chain(opt.v.names.iter().map(|n| format!("v.{n}"))).collect();
    p.shapes.extend(opt.v.shapes.iter().cloned());
    p.data.extend(opt.v.data.iter().cloned());
    p
}

/// Replace the run's checkpoint with this one: everything is written into
/// `checkpoint.tmp` first, then swapped in by renames, so a kill at any
/// moment leaves a complete checkpoint (the old or the new one). A full
/// model is a model folder; under LoRA the folder holds the adapter as PEFT
/// writes it (`adapter_model.safetensors`, `adapter_config.json` naming the
/// base) beside the base's `config.json`.
pub fn save_checkpoint(
    run: &Path,
    model: &Model,
    base: &str,
    opt: &crate::optim::AdamW,
    state: &RunState,
) -> Result<(), TrainError> {
    let tmp = run.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    match &model.lora {
        None => save_model(&tmp, &model.cfg, &model.params)?,
        Some(lora) => {
            std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
            write_file(&tmp.join("config.json"), &serde_json::to_vec_pretty(&model.cfg).expect("config serialises"))?;
            write_file(
                &tmp.join("adapter_config.json"),
                &serde_json::to_vec_pretty(&lora.peft_config(base)).expect("JSON"),
            )?;
            write_safetensors(&tmp.join("adapter_model.safetensors"), &lora.params, "")?;
        }
    }
    write_safetensors(&tmp.join("optimizer.safetensors"), &moments_of(opt), "")?;
    let mut st = serde_json::to_value(state).expect("state serialises");
    st["adam_t"] = opt.t.into();
    write_file(&tmp.join("state.json"), &serde_json::to_vec_pretty(&st).expect("JSON"))?;
    let cur = checkpoint_dir(run);
    let old = run.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&old);
    if cur.exists() {
        std::fs::rename(&cur, &old).map_err(io_err(&cur))?;
    }
    std::fs::rename(&tmp, &cur).map_err(io_err(&tmp))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// An adapter folder's rank and alpha, if `dir` holds one.
pub fn adapter_config(dir: &Path) -> Result<Option<(usize, f32)>, TrainError> {
    let p = dir.join("adapter_config.json");
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ck_err(&p, e.to_string()))?;
    let r = v.get("r").and_then(|x| x.as_u64()).ok_or_else(|| ck_err(&p, "no rank \"r\""))? as usize;
    let a = v.get("lora_alpha").and_then(|x| x.as_f64()).ok_or_else(|| ck_err(&p, "no \"lora_alpha\""))? as f32;
    Ok(Some((r, a)))
}

/// Read an adapter saved by [`save_checkpoint`] onto the base `model`.
pub fn load_adapter(dir: &Path, model: Model) -> Result<Model, TrainError> {
    let (r, a) = adapter_config(dir)?.ok_or_else(|| ck_err(dir, "no adapter_config.json"))?;
    let mut lora = Lora::zeros(&model.cfg, r, a);
    lora.params = read_safetensors(&dir.join("adapter_model.safetensors"), &lora.params, "")?;
    model.with_lora(lora)
}

/// The run's last complete checkpoint: model (a LoRA checkpoint on the
/// base model at `base`), optimiser state, run state.
pub fn load_checkpoint(
    run: &Path,
    base: &Path,
    opt_cfg: crate::optim::AdamWConfig,
) -> Result<Option<(Model, crate::optim::AdamW, RunState)>, TrainError> {
    let mut dir = checkpoint_dir(run);
    if !dir.exists() {
        // Killed between the two renames: the old one is complete.
        dir = run.join("checkpoint.old");
        if !dir.exists() {
            return Ok(None);
        }
    }
    let model = if adapter_config(&dir)?.is_some() {
        let (cfg, params) = load_model(base)?;
        load_adapter(&dir, Model::new(cfg, params)?)?
    } else {
        let (cfg, params) = load_model(&dir)?;
        Model::new(cfg, params)?
    };
    let mut opt = crate::optim::AdamW::new(opt_cfg, model.trainable());
    let both = moments_of(&opt);
    let mo = read_safetensors(&dir.join("optimizer.safetensors"), &both, "")?;
    let k = opt.m.data.len();
    opt.m.data = mo.data[..k].to_vec();
    opt.v.data = mo.data[k..].to_vec();
    let sp = dir.join("state.json");
    let text = std::fs::read_to_string(&sp).map_err(io_err(&sp))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ck_err(&sp, e.to_string()))?;
    opt.t = v.get("adam_t").and_then(|t| t.as_u64()).unwrap_or(0);
    let state: RunState = serde_json::from_value(v).map_err(|e| ck_err(&sp, e.to_string()))?;
    Ok(Some((model, opt, state)))
}

/// The per-step JSONL log, flushed line by line.
pub struct Log {
    path: PathBuf,
    file: std::fs::File,
}

impl Log {
    /// Open for appending (a resumed run continues its log).
    pub fn open(path: &Path) -> Result<Log, TrainError> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
        Ok(Log { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        let mut line = serde_json::to_vec(record).expect("JSON");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io_err(&self.path))?;
        self.file.flush().map_err(io_err(&self.path))
    }
}

/// One curve of [`plot_svg`]: its name, its colour and its points.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// An SVG line chart of several series of `(x, y)` with `y` in [0, 1]
/// (rewards above 1 are clipped to the frame), a legend and axes.
pub fn plot_svg(title: &str, series: &[Series<'_>]) -> String {
    let (w, h, m) = (640.0, 360.0, 48.0);
    let xmax = series.iter().flat_map(|s| s.2.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    let ymax = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(1.0f64, f64::max).min(1.2);
    let px = |x: f64| m + x / xmax * (w - 2.0 * m);
    let py = |y: f64| h - m - y.clamp(0.0, ymax) / ymax * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{m}\" y=\"20\" font-size=\"14\">{title}</text>\n"
    );
    s += &format!(
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - m,
        w - m,
        h - m,
        h - m
    );
    for k in 0..=4 {
        let y = ymax * k as f64 / 4.0;
        s += &format!("<text x=\"8\" y=\"{:.1}\">{y:.2}</text>\n", py(y) + 4.0);
    }
    s += &format!("<text x=\"{:.1}\" y=\"{}\">step {xmax:.0}</text>\n", w - m - 40.0, h - m + 20.0);
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            path.join(" ")
        );
        s += &format!("<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n", w - m - 150.0, m + 16.0 * i as f64);
    }
    s + "</svg>\n"
}
