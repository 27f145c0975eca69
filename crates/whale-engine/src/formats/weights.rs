//! Where weights come from: a GGUF file or a Hugging Face safetensors folder,
//! behind one lookup by name, with shapes checked against what the
//! architecture declares.
//!
//! Each architecture asks for tensors through the [`names`](crate::formats::names)
//! table, which gives both the GGUF name (llama.cpp's `blk.N.attn_q.weight`) and
//! the Hugging Face name (`model.layers.N.self_attn.q_proj.weight`). Shapes are
//! always spoken in PyTorch order, outermost first: a projection from `in` to
//! `out` features is `[out, in]` (GGUF stores the same tensor as dims
//! `[in, out]`; the reversal happens here, once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use whale_kernels::x8::Layout;
use whale_kernels::GgmlType;

use crate::formats::gguf::{GgufError, GgufFile};
use crate::formats::names::TensorName;
use crate::formats::storage::{ByteSlice, LoadMode, Storage};

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
    /// How the rows of `data` are stored (see [`GgufFile::interleave_x8`]).
    pub layout: Layout,
    /// For FP8 kept as FP8 ([`GgmlType::F8_E4M3`], 2-D): the 128×128 block
    /// scales, `[ceil(rows/128), ceil(cols/128)]` row-major.
    pub scales: Option<Arc<[f32]>>,
}

impl TensorView {
    /// Dequantize the whole tensor to f32 (for norms, biases and small
    /// tensors; FP8 with its block scales).
    pub fn to_f32(&self) -> Result<Vec<f32>, WeightError> {
        let n: usize = self.shape.iter().product();
        let mut out = vec![0f32; n];
        if let Some(scales) = &self.scales {
            let cols = *self.shape.last().unwrap_or(&1);
            let rows = n / cols.max(1);
            let m = whale_kernels::fp8::Fp8Matrix { w: &self.data, scales, rows, cols, row0: 0 };
            for (r, o) in out.chunks_exact_mut(cols.max(1)).enumerate() {
                m.dequantize_row(r, o);
            }
            return Ok(out);
        }
        let bad = |e: whale_kernels::KernelError| WeightError::Bad { name: self.name.clone(), msg: e.to_string() };
        match self.layout {
            Layout::File => whale_kernels::dequantize_row(self.ty, &self.data, &mut out).map_err(bad)?,
            Layout::X8 => {
                let cols = *self.shape.last().unwrap_or(&1);
                let mut file = self.data.to_vec();
                whale_kernels::x8::deinterleave_in_place(self.ty, n / cols.max(1), cols, &mut file).map_err(bad)?;
                whale_kernels::dequantize_row(self.ty, &file, &mut out).map_err(bad)?;
            }
        }
        Ok(out)
    }
}

/// What loading does with the FP8 weights of a safetensors checkpoint
/// (`--fp8`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fp8Mode {
    /// Kept as FP8: 1 byte a weight, memory-mapped, read by the FP8 kernels
    /// (`whale_kernels::fp8`), which round the activations to bf16 (relative
    /// error at most 2^-8) and multiply exactly after that.
    #[default]
    Keep,
    /// Requantized to Q8_0 at load (1.06 bytes a weight, in anonymous memory),
    /// for the 8-bit integer kernels. Adds Q8_0's rounding.
    Q8_0,
    /// Dequantized to f32 at load (4 bytes a weight): the exact reference.
    F32,
}

impl std::str::FromStr for Fp8Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Fp8Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "keep" | "fp8" => Ok(Fp8Mode::Keep),
            "q8_0" | "q8" => Ok(Fp8Mode::Q8_0),
            "f32" => Ok(Fp8Mode::F32),
            _ => Err(format!("unknown FP8 mode {s:?} (keep, q8_0 or f32)")),
        }
    }
}

impl Fp8Mode {
    pub fn name(self) -> &'static str {
        match self {
            Fp8Mode::Keep => "keep",
            Fp8Mode::Q8_0 => "q8_0",
            Fp8Mode::F32 => "f32",
        }
    }
}

/// A Hugging Face model folder: `config.json` and one or more safetensors shards.
pub struct HfDir {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    tensors: HashMap<String, TensorView>,
}

impl HfDir {
    /// Open with FP8 weights kept as FP8.
    pub fn open(dir: &Path) -> Result<HfDir, WeightError> {
        HfDir::open_with(dir, Fp8Mode::Keep, LoadMode::Map)
    }

    /// Open with FP8 weights as `fp8_mode` says, the shards mapped or read
    /// into memory as `mode` says.
    pub fn open_with(dir: &Path, fp8_mode: Fp8Mode, mode: LoadMode) -> Result<HfDir, WeightError> {
        let cfg_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|source| WeightError::Io { path: cfg_path.clone(), source })?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| WeightError::BadSafetensors {
            path: cfg_path.clone(),
            msg: format!("config.json is not valid JSON: {e}"),
        })?;
        // Shards: from the index if there is one, else the single file.
        let index_path = dir.join("model.safetensors.index.json");
        let shards: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|source| WeightError::Io { path: index_path.clone(), source })?;
            let index: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| WeightError::BadSafetensors { path: index_path.clone(), msg: e.to_string() })?;
            let map = index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                WeightError::BadSafetensors { path: index_path.clone(), msg: "no \"weight_map\" object".into() }
            })?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            files.sort();
            files.dedup();
            files.iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut tensors = HashMap::new();
        let mut fp8 = HashMap::new();
        for shard in &shards {
            read_safetensors(shard, mode, &mut tensors, &mut fp8)?;
        }
        attach_fp8(&mut tensors, fp8, fp8_mode)?;
        Ok(HfDir { dir: dir.to_path_buf(), config, tensors })
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// A tensor by its Hugging Face name.
    pub fn tensor(&self, name: &str) -> Option<&TensorView> {
        self.tensors.get(name)
    }

    /// One part of a multimodal checkpoint seen as a model of its own: the
    /// tensors under `from` renamed to start with `to` (the others kept as
    /// they are), with `config` (the part's sub-config) as its
    /// `config.json`. Tensors are shared, not copied.
    pub fn sub_model(&self, from: &str, to: &str, config: serde_json::Value) -> HfDir {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, v)| match k.strip_prefix(from) {
                Some(rest) => (format!("{to}{rest}"), v.clone()),
                None => (k.clone(), v.clone()),
            })
            .collect();
        HfDir { dir: self.dir.clone(), config, tensors }
    }
}

/// An FP8 (e4m3fn) tensor waiting for its block scales.
struct Fp8Tensor {
    shape: Vec<usize>,
    data: ByteSlice,
}

/// DeepSeek's FP8 checkpoints: each `X.weight` in float8 e4m3fn has an
/// `X.weight_scale_inv` of shape `[ceil(rows/128), ceil(cols/128)]`; the real
/// weight is `w[r][c] * scale_inv[r/128][c/128]`. Each FP8 tensor gets its
/// scales checked, then is kept as FP8 (the bytes stay in the memory map),
/// requantized to Q8_0 or dequantized to f32, as `mode` says. 1-D FP8
/// tensors (none in DeepSeek's checkpoints) are always dequantized.
fn attach_fp8(
    tensors: &mut HashMap<String, TensorView>,
    fp8: HashMap<String, Fp8Tensor>,
    mode: Fp8Mode,
) -> Result<(), WeightError> {
    const BLOCK: usize = whale_kernels::fp8::BLOCK;
    for (name, t) in fp8 {
        let scale_name = format!("{name}_scale_inv");
        let Some(scale) = tensors.remove(&scale_name) else {
            return Err(WeightError::Missing {
                name: scale_name,
                hint: format!(" (the block scales of FP8 tensor {name:?})"),
            });
        };
        let (rows, cols) = match t.shape[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => {
                return Err(WeightError::Bad {
                    name,
                    msg: format!("FP8 tensor of shape {:?}: only 1-D and 2-D are supported", t.shape),
                })
            }
        };
        let want = if t.shape.len() == 2 {
            vec![rows.div_ceil(BLOCK), cols.div_ceil(BLOCK)]
        } else {
            vec![cols.div_ceil(BLOCK)]
        };
        if scale.shape != want {
            return Err(WeightError::Shape { name: scale_name, expected: want, found: scale.shape });
        }
        let scales: Arc<[f32]> = scale.to_f32()?.into();
        if let Some(bad) = scales.iter().position(|s| !s.is_finite()) {
            return Err(WeightError::Bad { name: scale_name, msg: format!("block scale {bad} is not finite") });
        }
        let kept = TensorView {
            name: name.clone(),
            ty: GgmlType::F8_E4M3,
            shape: t.shape,
            data: t.data,
            layout: Layout::File,
            scales: Some(scales.clone()),
        };
        let view = match mode {
            Fp8Mode::Keep if kept.shape.len() == 2 => kept,
            Fp8Mode::Q8_0 if kept.shape.len() == 2 && cols % 32 == 0 => {
                // Row by row: a whole matrix in f32 would be 4 bytes a weight at once.
                let m = whale_kernels::fp8::Fp8Matrix { w: &kept.data, scales: &scales, rows, cols, row0: 0 };
                let mut q = Vec::with_capacity(rows * GgmlType::Q8_0.row_bytes(cols).expect("cols % 32 == 0"));
                let mut row = vec![0f32; cols];
                for r in 0..rows {
                    m.dequantize_row(r, &mut row);
                    q.extend(whale_kernels::quantize_acts(GgmlType::Q8_0, &row, 1, cols).ggml_row(0));
                }
                TensorView {
                    name,
                    ty: GgmlType::Q8_0,
                    shape: kept.shape,
                    data: ByteSlice::from_vec(q),
                    layout: Layout::File,
                    scales: None,
                }
            }
            _ => {
                let out: Vec<u8> = kept.to_f32()?.iter().flat_map(|v| v.to_le_bytes()).collect();
                let data = ByteSlice::from_vec(out);
                TensorView { name, ty: GgmlType::F32, shape: kept.shape, data, layout: Layout::File, scales: None }
            }
        };
        tensors.insert(view.name.clone(), view);
    }
    Ok(())
}

/// Read one safetensors file (`u64 header length | JSON header | data`) with
/// the `safetensors` crate, which checks the header and that the tensors'
/// data cover the file exactly; the data stay in the file's mapping, or in
/// the copy `mode` reads it into.
fn read_safetensors(
    path: &Path,
    mode: LoadMode,
    out: &mut HashMap<String, TensorView>,
    fp8: &mut HashMap<String, Fp8Tensor>,
) -> Result<(), WeightError> {
    use safetensors::{Dtype, SafeTensorError, SafeTensors};
    let io = |source| WeightError::Io { path: path.to_path_buf(), source };
    let bad = |msg: String| WeightError::BadSafetensors { path: path.to_path_buf(), msg };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only private mapping; see GgufFile::open for the usual caveat
    // about other processes truncating the file.
    let storage = unsafe { Storage::open(&file, mode) }.map_err(io)?;
    let (header_len, meta) = SafeTensors::read_metadata(&storage[..]).map_err(|e| match e {
        // Say how far the header's offsets reach: a truncated download.
        SafeTensorError::MetadataIncompleteBuffer => {
            let header_len = u64::from_le_bytes(storage[..8].try_into().expect("checked by the crate")) as usize;
            let declared = serde_json::from_slice::<safetensors::tensor::Metadata>(&storage[8..8 + header_len])
                .map_or(0, |m| 8 + header_len + m.data_len());
            bad(format!(
                "the header's data_offsets reach byte {declared}, but the file has {} bytes (truncated or corrupt)",
                storage.len()
            ))
        }
        e => bad(e.to_string()),
    })?;
    let data_start = 8 + header_len;
    for (name, info) in meta.tensors() {
        let ty = match info.dtype {
            Dtype::F32 => Some(GgmlType::F32),
            Dtype::F16 => Some(GgmlType::F16),
            Dtype::BF16 => Some(GgmlType::BF16),
            Dtype::F8_E4M3 => None,
            other => return Err(WeightError::UnsupportedDtype { name, dtype: other.to_string() }),
        };
        let shape = info.shape.clone();
        if shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).is_none_or(|n| n >= 1 << 48) {
            return Err(bad(format!("tensor {name:?} has an absurd shape {shape:?}")));
        }
        let (s, e) = info.data_offsets;
        let data = storage.slice(data_start + s..data_start + e);
        match ty {
            Some(ty) => {
                out.insert(name.clone(), TensorView { name, ty, shape, data, layout: Layout::File, scales: None });
            }
            None => {
                fp8.insert(name, Fp8Tensor { shape, data });
            }
        }
    }
    Ok(())
}

/// In a folder without config.json, the first part of a split GGUF
/// (`*-00001-of-*.gguf`), if there is exactly one such file.
fn first_gguf_part(dir: &Path) -> Option<std::path::PathBuf> {
    if dir.join("config.json").exists() {
        return None;
    }
    let mut firsts = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        matches!(crate::formats::gguf::parse_split_path(name), Some((_, 0, count)) if count > 1)
    });
    let first = firsts.next()?;
    firsts.next().is_none().then_some(first)
}

/// A model's weights, from either format.
pub enum WeightStore {
    Gguf(GgufFile),
    Hf(HfDir),
}

impl WeightStore {
    /// Open a GGUF file or a Hugging Face folder (FP8 weights kept as FP8).
    pub fn open(path: &Path) -> Result<WeightStore, WeightError> {
        WeightStore::open_with(path, Fp8Mode::Keep, LoadMode::Map)
    }

    /// [`WeightStore::open`], with what to do with FP8 weights and whether
    /// the files are mapped or read into memory.
    pub fn open_with(path: &Path, fp8_mode: Fp8Mode, mode: LoadMode) -> Result<WeightStore, WeightError> {
        if let Some(first) = path.is_dir().then(|| first_gguf_part(path)).flatten() {
            return Ok(WeightStore::Gguf(GgufFile::open_with(first, mode)?));
        }
        if path.is_dir() {
            Ok(WeightStore::Hf(HfDir::open_with(path, fp8_mode, mode)?))
        } else {
            Ok(WeightStore::Gguf(GgufFile::open_with(path, mode)?))
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
                let (ty, layout) = (info.ty, info.layout);
                Ok(Some(TensorView { name: name.gguf.clone(), ty, shape, data, layout, scales: None }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fp8_case(rows: usize, cols: usize, scale_shape: Vec<usize>) -> Result<Vec<f32>, WeightError> {
        fp8_case_as(rows, cols, scale_shape, Fp8Mode::Keep).map(|(_, w)| w)
    }

    fn fp8_case_as(
        rows: usize,
        cols: usize,
        scale_shape: Vec<usize>,
        fp8_mode: Fp8Mode,
    ) -> Result<(GgmlType, Vec<f32>), WeightError> {
        let mut tensors = HashMap::new();
        let n_scales: usize = scale_shape.iter().product();
        // Scales 1, 2, 3, ... per block; every weight byte 0x38 (= 1.0).
        let scales: Vec<u8> = (0..n_scales).flat_map(|i| ((i + 1) as f32).to_le_bytes()).collect();
        tensors.insert(
            "w.weight_scale_inv".to_string(),
            TensorView {
                name: "w.weight_scale_inv".into(),
                ty: GgmlType::F32,
                shape: scale_shape,
                data: ByteSlice::from_vec(scales),
                layout: Layout::File,
                scales: None,
            },
        );
        let mut fp8 = HashMap::new();
        fp8.insert(
            "w.weight".to_string(),
            Fp8Tensor { shape: vec![rows, cols], data: ByteSlice::from_vec(vec![0x38; rows * cols]) },
        );
        attach_fp8(&mut tensors, fp8, fp8_mode)?;
        Ok((tensors["w.weight"].ty, tensors["w.weight"].to_f32()?))
    }

    #[test]
    fn fp8_modes_keep_the_bytes_requantize_or_dequantize() {
        let (ty, keep) = fp8_case_as(130, 256, vec![2, 2], Fp8Mode::Keep).unwrap();
        assert_eq!(ty, GgmlType::F8_E4M3);
        let (ty, f32s) = fp8_case_as(130, 256, vec![2, 2], Fp8Mode::F32).unwrap();
        assert_eq!(ty, GgmlType::F32);
        assert_eq!(keep, f32s, "kept FP8 dequantizes to the f32 path's values exactly");
        let (ty, q8) = fp8_case_as(130, 256, vec![2, 2], Fp8Mode::Q8_0).unwrap();
        assert_eq!(ty, GgmlType::Q8_0);
        // Q8_0 of a constant row: 127 · f16(c/127), within f16's relative 2^-11.
        for (a, b) in q8.iter().zip(&f32s) {
            assert!((a - b).abs() <= b.abs() / 2048.0, "{a} vs {b}");
        }
        // Rows not a multiple of 32 stay exact (f32) under q8_0.
        assert_eq!(fp8_case_as(2, 200, vec![1, 2], Fp8Mode::Q8_0).unwrap().0, GgmlType::F32);
        assert_eq!("Q8_0".parse::<Fp8Mode>(), Ok(Fp8Mode::Q8_0));
        assert!("fp4".parse::<Fp8Mode>().unwrap_err().contains("keep, q8_0 or f32"));
    }

    #[test]
    fn fp8_missing_block_scales_name_the_tensor() {
        let mut fp8 = HashMap::new();
        fp8.insert(
            "w.weight".to_string(),
            Fp8Tensor { shape: vec![4, 256], data: ByteSlice::from_vec(vec![0x38; 1024]) },
        );
        let e = attach_fp8(&mut HashMap::new(), fp8, Fp8Mode::Keep).unwrap_err().to_string();
        assert!(e.contains("\"w.weight_scale_inv\"") && e.contains("block scales of FP8 tensor \"w.weight\""), "{e}");
    }

    #[test]
    fn fp8_non_finite_block_scale_is_refused() {
        let mut tensors = HashMap::new();
        let scales: Vec<u8> = [1.0f32, f32::INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.insert(
            "w.weight_scale_inv".to_string(),
            TensorView {
                name: "w.weight_scale_inv".into(),
                ty: GgmlType::F32,
                shape: vec![1, 2],
                data: ByteSlice::from_vec(scales),
                layout: Layout::File,
                scales: None,
            },
        );
        let mut fp8 = HashMap::new();
        fp8.insert(
            "w.weight".to_string(),
            Fp8Tensor { shape: vec![4, 256], data: ByteSlice::from_vec(vec![0x38; 1024]) },
        );
        let e = attach_fp8(&mut tensors, fp8, Fp8Mode::Keep).unwrap_err().to_string();
        assert!(e.contains("w.weight_scale_inv") && e.contains("not finite"), "{e}");
    }

    #[test]
    fn fp8_blocks_of_128_get_their_own_scale() {
        // 130 × 200: blocks (0,0) (0,1) (1,0) (1,1) have scales 1 2 3 4.
        let w = fp8_case(130, 200, vec![2, 2]).unwrap();
        assert_eq!(w[0], 1.0);
        assert_eq!(w[127], 1.0);
        assert_eq!(w[128], 2.0);
        assert_eq!(w[128 * 200], 3.0);
        assert_eq!(w[129 * 200 + 199], 4.0);
    }

    #[test]
    fn fp8_wrong_block_scale_shape_names_the_tensor() {
        let e = fp8_case(130, 200, vec![1, 2]).unwrap_err().to_string();
        assert!(e.contains("w.weight_scale_inv") && e.contains("expected [2, 2]"), "{e}");
    }
}
