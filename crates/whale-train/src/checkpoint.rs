//! What a run leaves on disk: model folders (`config.json` +
//! `model.safetensors` in transformers' names, which whale's engine loads
//! as any llama model), the resumable checkpoint (model, optimiser moments
//! and a JSON state, replaced atomically so a kill loses at most one step),
//! the JSONL log and an SVG plot of the curves.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{LlamaConfig, Params};
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

/// Read a model folder written by [`save_model`] (or by transformers, for a
/// llama whose tensors are all f32/bf16).
pub fn load_model(dir: &Path) -> Result<(LlamaConfig, Params), TrainError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| ck_err(&cfg_path, e.to_string()))?;
    if let Some(mt) = raw.get("model_type").and_then(|v| v.as_str()) {
        if mt != "llama" {
            return Err(TrainError::Unsupported(format!(
                "model_type {mt:?}: whale's trainer differentiates llama models (tiny ones from `whale train sft`)"
            )));
        }
    }
    let cfg: LlamaConfig = serde_json::from_value(raw).map_err(|e| ck_err(&cfg_path, e.to_string()))?;
    cfg.validate()?;
    let params = read_safetensors(&dir.join("model.safetensors"), &Params::zeros(&cfg), "")?;
    Ok((cfg, params))
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

/// Replace the run's checkpoint with this one: everything is written into
/// `checkpoint.tmp` first, then swapped in by renames, so a kill at any
/// moment leaves a complete checkpoint (the old or the new one).
pub fn save_checkpoint(
    run: &Path,
    cfg: &LlamaConfig,
    params: &Params,
    opt: &crate::optim::AdamW,
    state: &RunState,
) -> Result<(), TrainError> {
    let tmp = run.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    save_model(&tmp, cfg, params)?;
    let mut moments = opt.m.clone();
    moments.names =
        opt.m.names.iter().map(|n| format!("m.{n}")).chain(opt.v.names.iter().map(|n| format!("v.{n}"))).collect();
    moments.shapes.extend(opt.v.shapes.iter().cloned());
    moments.data.extend(opt.v.data.iter().cloned());
    write_safetensors(&tmp.join("optimizer.safetensors"), &moments, "")?;
    let mut st = serde_json::to_value(state).expect("state serialises");
    st["adam_t"] = opt.t.into();
    let sp = tmp.join("state.json");
    write_file(&sp, &serde_json::to_vec_pretty(&st).expect("JSON"))?;
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

/// The run's last complete checkpoint: model, optimiser moments, state.
pub fn load_checkpoint(
    run: &Path,
    opt_cfg: crate::optim::AdamWConfig,
) -> Result<Option<(LlamaConfig, Params, crate::optim::AdamW, RunState)>, TrainError> {
    let mut dir = checkpoint_dir(run);
    if !dir.exists() {
        // Killed between the two renames: the old one is complete.
        dir = run.join("checkpoint.old");
        if !dir.exists() {
            return Ok(None);
        }
    }
    let (cfg, params) = load_model(&dir)?;
    let mut opt = crate::optim::AdamW::new(opt_cfg, &params);
    let mut both = params.zeros_like();
    both.names =
        params.names.iter().map(|n| format!("m.{n}")).chain(params.names.iter().map(|n| format!("v.{n}"))).collect();
    both.shapes.extend(params.shapes.iter().cloned());
    both.data.extend(params.data.iter().map(|d| vec![0f32; d.len()]));
    let mo = read_safetensors(&dir.join("optimizer.safetensors"), &both, "")?;
    let k = params.data.len();
    opt.m.data = mo.data[..k].to_vec();
    opt.v.data = mo.data[k..].to_vec();
    let sp = dir.join("state.json");
    let text = std::fs::read_to_string(&sp).map_err(io_err(&sp))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ck_err(&sp, e.to_string()))?;
    opt.t = v.get("adam_t").and_then(|t| t.as_u64()).unwrap_or(0);
    let state: RunState = serde_json::from_value(v).map_err(|e| ck_err(&sp, e.to_string()))?;
    Ok(Some((cfg, params, opt, state)))
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
