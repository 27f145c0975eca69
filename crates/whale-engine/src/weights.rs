//! Where weights come from: a GGUF file or a Hugging Face safetensors folder,
//! behind one lookup by name, with shapes checked against what the
//! architecture declares.
//!
//! Each architecture asks for tensors through the [`names`](crate::names)
//! table, which gives both the GGUF name (llama.cpp's `blk.N.attn_q.weight`) and
//! the Hugging Face name (`model.layers.N.self_attn.q_proj.weight`). Shapes are
//! always spoken in PyTorch order, outermost first: a projection from `in` to
//! `out` features is `[out, in]` (GGUF stores the same tensor as dims
//! `[in, out]`; the reversal happens here, once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use whale_kernels::GgmlType;

use crate::gguf::{GgufError, GgufFile};
use crate::names::TensorName;
use crate::storage::{ByteSlice, Storage};

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid safetensors file: {msg}")]
    BadSafetensors { path: PathBuf, msg: String },
    #[error("tensor {name:?} has unsupported dtype {dtype} (supported: F32, F16, BF16, F8_E4M3)")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("missing tensor {name:?}{hint}")]
    Missing { name: String, hint: String },
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor {name:?}: {msg}")]
    Bad { name: String, msg: String },
}

/// One tensor as stored: its element type, its shape (outermost first) and bytes.
#[derive(Clone, Debug)]
pub struct TensorView {
    pub name: String,
    pub ty: GgmlType,
    pub shape: Vec<usize>,
    pub data: ByteSlice,
}

impl TensorView {
    /// Dequantize the whole tensor to f32 (for norms, biases and small tensors).
    pub fn to_f32(&self) -> Result<Vec<f32>, WeightError> {
        let n: usize = self.shape.iter().product();
        let mut out = vec![0f32; n];
        whale_kernels::dequantize_row(self.ty, &self.data, &mut out)
            .map_err(|e| WeightError::Bad { name: self.name.clone(), msg: e.to_string() })?;
        Ok(out)
    }
}

/// A Hugging Face model folder: `config.json` and one or more safetensors shards.
pub struct HfDir {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    tensors: HashMap<String, TensorView>,
}

impl HfDir {
    pub fn open(dir: &Path) -> Result<HfDir, WeightError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| WeightError::Io { path: cfg_path.clone(), source })?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| WeightError::BadSafetensors { path: cfg_path.clone(), msg: format!("config.json is not valid JSON: {e}") })?;
        // Shards: from the index if there is one, else the single file.
        let index_path = dir.join("model.safetensors.index.json");
        let shards: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| WeightError::Io { path: index_path.clone(), source })?;
            let index: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| WeightError::BadSafetensors { path: index_path.clone(), msg: e.to_string() })?;
            let map = index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| WeightError::BadSafetensors {
                path: index_path.clone(),
                msg: "no \"weight_map\" object".into(),
            })?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            files.sort();
            files.dedup();
            files.iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut tensors = HashMap::new();
        for shard in &shards {
            read_safetensors(shard, &mut tensors)?;
        }
        Ok(HfDir { dir: dir.to_path_buf(), config, tensors })
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

/// Parse one safetensors file: `u64 header length | JSON header | data`.
fn read_safetensors(path: &Path, out: &mut HashMap<String, TensorView>) -> Result<(), WeightError> {
    let io = |source| WeightError::Io { path: path.to_path_buf(), source };
    let bad = |msg: String| WeightError::BadSafetensors { path: path.to_path_buf(), msg };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only private mapping; see GgufFile::open for the usual caveat
    // about other processes truncating the file.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let storage = Storage::mapped(map);
    if storage.len() < 8 {
        return Err(bad(format!("file has {} bytes, too short for a header", storage.len())));
    }
    let header_len = u64::from_le_bytes(storage[..8].try_into().expect("8 bytes"));
    if header_len > storage.len() as u64 - 8 || header_len > 100 << 20 {
        return Err(bad(format!("header length {header_len} exceeds the file ({} bytes)", storage.len())));
    }
    let data_start = 8 + header_len as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&storage[8..data_start]).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?").to_string();
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad(format!("tensor {name:?} has no shape")))?;
        let offs: Vec<u64> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| bad(format!("tensor {name:?} has no data_offsets")))?;
        let ty = match dtype.as_str() {
            "F32" => GgmlType::F32,
            "F16" => GgmlType::F16,
            "BF16" => GgmlType::BF16,
            _ => return Err(WeightError::UnsupportedDtype { name, dtype }),
        };
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        let bytes = n * 4 / (if ty == GgmlType::F32 { 1 } else { 2 });
        let (s, e) = (offs[0], offs[1]);
        if e < s || e - s != bytes || data_start as u64 + e > storage.len() as u64 {
            return Err(bad(format!(
                "tensor {name:?} ({dtype}, shape {shape:?}) has data_offsets [{s}, {e}] that do not fit its size or the file"
            )));
        }
        let data = storage.slice(data_start + s as usize..data_start + e as usize);
        out.insert(name.clone(), TensorView { name, ty, shape, data });
    }
    Ok(())
}

/// A model's weights, from either format.
pub enum WeightStore {
    Gguf(GgufFile),
    Hf(HfDir),
}

impl WeightStore {
    /// Open a GGUF file or a Hugging Face folder.
    pub fn open(path: &Path) -> Result<WeightStore, WeightError> {
        if path.is_dir() {
            Ok(WeightStore::Hf(HfDir::open(path)?))
        } else {
            Ok(WeightStore::Gguf(GgufFile::open(path)?))
        }
    }

    pub fn is_gguf(&self) -> bool {
        matches!(self, WeightStore::Gguf(_))
    }

    fn lookup(&self, name: &TensorName) -> Result<Option<TensorView>, WeightError> {
        match self {
            WeightStore::Gguf(g) => {
                let Some(_) = g.tensor(&name.gguf) else { return Ok(None) };
                let (info, data) = g.tensor_slice(&name.gguf)?;
                let shape = info.dims.iter().rev().map(|&d| d as usize).collect();
                Ok(Some(TensorView { name: name.gguf.clone(), ty: info.ty, shape, data }))
            }
            WeightStore::Hf(h) => Ok(h.tensors.get(&name.hf).cloned()),
        }
    }

    fn display_name<'a>(&self, name: &'a TensorName) -> &'a str {
        match self {
            WeightStore::Gguf(_) => &name.gguf,
            WeightStore::Hf(_) => &name.hf,
        }
    }

    pub fn contains(&self, name: &TensorName) -> bool {
        match self {
            WeightStore::Gguf(g) => g.tensor(&name.gguf).is_some(),
            WeightStore::Hf(h) => h.tensors.contains_key(&name.hf),
        }
    }

    /// A tensor that must exist with exactly this shape (outermost first).
    pub fn get(&self, name: &TensorName, shape: &[usize]) -> Result<TensorView, WeightError> {
        let t = self.optional(name, shape)?;
        t.ok_or_else(|| WeightError::Missing { name: self.display_name(name).to_string(), hint: String::new() })
    }

    /// A tensor that may be absent; if present it must have this shape.
    pub fn optional(&self, name: &TensorName, shape: &[usize]) -> Result<Option<TensorView>, WeightError> {
        let Some(t) = self.lookup(name)? else { return Ok(None) };
        // A 1-D GGUF tensor [n] and a 2-D [1, n] are the same thing; compare
        // without leading ones so either spelling passes.
        let strip = |s: &[usize]| s.iter().skip_while(|&&d| d == 1).copied().collect::<Vec<_>>();
        if strip(&t.shape) != strip(shape) {
            return Err(WeightError::Shape { name: t.name, expected: shape.to_vec(), found: t.shape });
        }
        if t.shape.len() >= 2 {
            let cols = *t.shape.last().expect("non-empty");
            if cols % t.ty.block_size() != 0 {
                return Err(WeightError::Bad {
                    name: t.name,
                    msg: format!("row length {cols} is not a multiple of the {} block size", t.ty.name()),
                });
            }
        }
        Ok(Some(t))
    }

    /// A 1-D tensor (norm weight, bias) dequantized to f32.
    pub fn vector(&self, name: &TensorName, n: usize) -> Result<Vec<f32>, WeightError> {
        self.get(name, &[n])?.to_f32()
    }

    pub fn optional_vector(&self, name: &TensorName, n: usize) -> Result<Option<Vec<f32>>, WeightError> {
        self.optional(name, &[n])?.map(|t| t.to_f32()).transpose()
    }
}
