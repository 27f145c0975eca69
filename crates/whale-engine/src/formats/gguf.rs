//! GGUF reader (versions 2 and 3).
//!
//! Layout of a file (all little-endian):
//! ```text
//! magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv × (key: string, type: u32, value)
//! n_tensors × (name: string, n_dims: u32, dims: u64 × n_dims, type: u32, offset: u64)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor at data_start + offset
//! ```
//! A model split by llama.cpp's `gguf-split` (or by gguf-py, or by
//! `whale synth --split-max-size`) is several such files named
//! `PREFIX-00001-of-0000N.gguf` …: the first holds all metadata, every part
//! holds `split.no`, `split.count` and `split.tensors.count` and its own
//! tensors. [`GgufFile::open`] on any part opens them all, each memory-mapped,
//! as one file.
//!
//! Strings are a u64 length followed by UTF-8 bytes. Every count and length read
//! from the file is checked against the bytes that remain before anything is
//! allocated, so a corrupt or hostile header yields an error, never a huge
//! allocation or a panic. The weights are memory-mapped and handed out as
//! borrowed byte slices: nothing is copied at load.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use whale_kernels::x8::{self, Layout};
use whale_kernels::GgmlType;

use crate::formats::storage::{ByteSlice, LoadMode, Storage};

/// Errors while reading a GGUF file. Each names what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a GGUF file: the first four bytes are {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (whale reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("GGUF header is truncated: needed {needed} bytes at offset {offset} while reading {what}, but the file has {len} bytes")]
    Truncated { what: String, offset: u64, needed: u64, len: u64 },
    #[error("GGUF metadata key {key:?} has unknown value type {ty}")]
    BadValueType { key: String, ty: u32 },
    #[error("GGUF string at offset {offset} is not valid UTF-8")]
    BadUtf8 { offset: u64 },
    #[error("tensor {name:?} has unknown or unsupported type id {ty} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K)")]
    UnknownTensorType { name: String, ty: u32 },
    #[error("tensor {name:?} has {n_dims} dimensions (at most 4 are allowed)")]
    TooManyDims { name: String, n_dims: u32 },
    #[error(
        "tensor {name:?} has shape {shape:?} whose first dimension is not a multiple of the {ty} block size {block}"
    )]
    BadBlockShape { name: String, shape: Vec<u64>, ty: &'static str, block: usize },
    #[error("tensor {name:?} is too large ({shape:?})")]
    TensorTooLarge { name: String, shape: Vec<u64> },
    #[error("tensor {name:?} lies past the end of the file: it needs bytes {start}..{end} but the file has {file_len} bytes (the file is truncated or incomplete)")]
    TensorPastEnd { name: String, start: u64, end: u64, file_len: u64 },
    #[error("tensor {name:?} has offset {offset} which is not a multiple of the alignment {alignment}")]
    Misaligned { name: String, offset: u64, alignment: u64 },
    #[error("bad general.alignment {0}: must be a non-zero power of two")]
    BadAlignment(u64),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("no tensor named {0:?} in the file")]
    MissingTensor(String),
    #[error("metadata key {key:?}: {msg}")]
    Metadata { key: String, msg: String },
    #[error("split model: {0}")]
    Split(String),
}

/// A metadata value, with the GGUF type it was stored as.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Integer view of any integer (or bool) value.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            MetaValue::U8(v) => v as i64,
            MetaValue::I8(v) => v as i64,
            MetaValue::U16(v) => v as i64,
            MetaValue::I16(v) => v as i64,
            MetaValue::U32(v) => v as i64,
            MetaValue::I32(v) => v as i64,
            MetaValue::U64(v) => i64::try_from(v).ok()?,
            MetaValue::I64(v) => v,
            MetaValue::Bool(v) => v as i64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => self.as_i64().map(|v| v != 0),
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
    /// The GGUF type name, for `whale info`.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "str",
            MetaValue::Array(_) => "arr",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }
}

impl fmt::Display for MetaValue {
    /// Short rendering: long strings and arrays are abbreviated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::String(s) => {
                let one_line = s.replace('\n', "\\n");
                if one_line.chars().count() > 60 {
                    let head: String = one_line.chars().take(57).collect();
                    write!(f, "{head:?}... ({} chars)", s.chars().count())
                } else {
                    write!(f, "{one_line:?}")
                }
            }
            MetaValue::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().take(4).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() > 4 {
                    write!(f, ", ... ({} items)", a.len())?;
                }
                write!(f, "]")
            }
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            other => write!(f, "{}", other.as_i64().unwrap_or_default()),
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) dimension. A weight
    /// matrix with `rows` outputs and `cols` inputs is `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes the tensor occupies.
    pub size: u64,
    /// The part of a split model that holds it (0 when not split).
    pub part: usize,
    /// How its rows are held in memory: as in the file, unless
    /// [`GgufFile::interleave_x8`] rewrote them.
    pub layout: Layout,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An open GGUF file: parsed header and memory-mapped data.
pub struct GgufFile {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset of the tensor data section (of the first part).
    pub data_offset: u64,
    parts: Vec<Part>,
}

/// One file of a (possibly split) model.
struct Part {
    path: Option<PathBuf>,
    bytes: Storage,
    data_offset: u64,
}

/// Which of the byte ranges `(part, start, end)` overlap another's: in
/// order of start, each checked against the furthest end before it (a
/// range that overlaps any earlier one overlaps that one).
fn overlapping(ranges: impl Iterator<Item = (usize, u64, u64)>) -> Vec<bool> {
    let mut spans: Vec<(usize, u64, u64, usize)> = ranges.enumerate().map(|(i, (p, s, e))| (p, s, e, i)).collect();
    spans.sort_unstable();
    let mut shared = vec![false; spans.len()];
    let mut furthest: Option<(usize, u64, usize)> = None; // (part, end, range)
    for &(part, start, end, i) in &spans {
        match furthest {
            Some((p, e, j)) if p == part && start < e => {
                shared[i] = true;
                shared[j] = true;
                if end > e {
                    furthest = Some((part, end, i));
                }
            }
            _ => furthest = Some((part, end, i)),
        }
    }
    shared
}

/// `PREFIX-00001-of-00003.gguf` for part 0 of 3, as llama.cpp names parts.
pub fn split_path(prefix: &str, no: u64, count: u64) -> String {
    format!("{prefix}-{:05}-of-{:05}.gguf", no + 1, count)
}

/// `(prefix, no, count)` of a name [`split_path`] makes (`no` from 0), if
/// `name` is one: `PREFIX-00002-of-00003.gguf` gives `(PREFIX, 1, 3)`.
pub fn parse_split_path(name: &str) -> Option<(&str, u64, u64)> {
    let (rest, count) = name.strip_suffix(".gguf")?.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let five_digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !five_digits(no) || !five_digits(count) {
        return None;
    }
    let (no, count): (u64, u64) = (no.parse().ok()?, count.parse().ok()?);
    (no >= 1 && no <= count).then_some((prefix, no - 1, count))
}

/// The prefix of a part's path, if it is named as part `no` of `count`.
fn split_prefix(path: &Path, no: u64, count: u64) -> Option<String> {
    let (prefix, n, c) = parse_split_path(path.to_str()?)?;
    (n == no && c == count).then(|| prefix.to_string())
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

/// Bounds-checked little-endian cursor over the header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { offset: start })
    }
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
}

fn read_value(c: &mut Cursor<'_>, ty: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
    let what = || format!("the value of metadata key {key:?}");
    Ok(match ty {
        0 => MetaValue::U8(c.array::<1>(&what)?[0]),
        1 => MetaValue::I8(c.array::<1>(&what)?[0] as i8),
        2 => MetaValue::U16(u16::from_le_bytes(c.array(&what)?)),
        3 => MetaValue::I16(i16::from_le_bytes(c.array(&what)?)),
        4 => MetaValue::U32(u32::from_le_bytes(c.array(&what)?)),
        5 => MetaValue::I32(i32::from_le_bytes(c.array(&what)?)),
        6 => MetaValue::F32(f32::from_le_bytes(c.array(&what)?)),
        7 => MetaValue::Bool(c.array::<1>(&what)?[0] != 0),
        8 => MetaValue::String(c.string(&what)?),
        9 => {
            if depth > 0 {
                // Nested arrays are legal in the spec but no model uses them; one
                // level of nesting is allowed, deeper is treated as corruption.
                if depth > 1 {
                    return Err(GgufError::BadValueType { key: key.to_string(), ty });
                }
            }
            let elem_ty = c.u32(&what)?;
            let n = c.u64(&what)?;
            // Every element takes at least one byte: a count beyond the remaining
            // bytes is corruption, caught here before allocating.
            if n > c.remaining() {
                return Err(GgufError::Truncated {
                    what: format!("{n} array elements of metadata key {key:?}"),
                    offset: c.pos as u64,
                    needed: n,
                    len: c.buf.len() as u64,
                });
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_value(c, elem_ty, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::U64(u64::from_le_bytes(c.array(&what)?)),
        11 => MetaValue::I64(i64::from_le_bytes(c.array(&what)?)),
        12 => MetaValue::F64(f64::from_le_bytes(c.array(&what)?)),
        _ => return Err(GgufError::BadValueType { key: key.to_string(), ty }),
    })
}

impl GgufFile {
    /// Open and memory-map a file, parse its header and tensor table.
    ///
    /// Tensors lying past the end of a truncated file do not fail `open` (so
    /// `whale info` can still print the header); [`GgufFile::check_tensors`]
    /// and [`GgufFile::tensor_data`] report them.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        Self::open_with(path, LoadMode::Map)
    }

    /// [`GgufFile::open`], each part mapped or read into memory as `mode` says.
    pub fn open_with(path: impl AsRef<Path>, mode: LoadMode) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let mut g = Self::open_part(path, mode)?;
        let count = g.get_u64("split.count").unwrap_or(1);
        if count <= 1 {
            return Ok(g);
        }
        let no = g.get_u64("split.no").unwrap_or(0);
        let prefix = split_prefix(path, no, count).ok_or_else(|| {
            GgufError::Split(format!(
                "{} says it is part {} of {count}, but its name does not end in -{:05}-of-{count:05}.gguf",
                path.display(),
                no + 1,
                no + 1
            ))
        })?;
        if no != 0 {
            return Self::open_with(split_path(&prefix, 0, count), mode);
        }
        for i in 1..count {
            let p = PathBuf::from(split_path(&prefix, i, count));
            if !p.exists() {
                return Err(GgufError::Split(format!("part {} of {count} is missing: {}", i + 1, p.display())));
            }
            let part = match Self::open_part(&p, mode) {
                Ok(part) => part,
                Err(e) => return Err(GgufError::Split(format!("part {}: {e}", p.display()))),
            };
            g.merge(part, i, count, &p.display())?;
        }
        g.check_split_count()?;
        Ok(g)
    }

    /// One file, mapped (or read) and parsed (a part, or a whole model).
    fn open_part(path: &Path, mode: LoadMode) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: a mapping is read-only and private to this process. Like every
        // mmap-based loader we rely on the file not being truncated by another
        // process while it is mapped; all offsets are bounds-checked against the
        // length seen at map time.
        let storage = unsafe { Storage::open(&file, mode) }.map_err(io)?;
        let mut g = Self::parse(storage)?;
        g.parts[0].path = Some(path.to_path_buf());
        Ok(g)
    }

    /// Every part's bytes read into memory ([`LoadMode::Read`]) in place of
    /// its mapping, the header kept as parsed: a model whose tokenizer was
    /// built from the mapped file reads its weights without parsing the
    /// header again (`models::load`). A part whose length changed since it
    /// was opened is an error; parts held in memory already stay as they are.
    pub fn read_into_memory(&mut self) -> Result<(), GgufError> {
        for part in &mut self.parts {
            let Some(path) = part.path.clone() else { continue };
            let io = |source| GgufError::Io { path: path.clone(), source };
            let file = std::fs::File::open(&path).map_err(io)?;
            // SAFETY: LoadMode::Read maps nothing of the file.
            let bytes = unsafe { Storage::open(&file, LoadMode::Read) }.map_err(io)?;
            if bytes.len() != part.bytes.len() {
                let msg = format!(
                    "the file changed while it was loaded: {} bytes, {} when opened",
                    bytes.len(),
                    part.bytes.len()
                );
                return Err(io(std::io::Error::other(msg)));
            }
            part.bytes = bytes;
        }
        Ok(())
    }

    /// Keeps only the metadata entries `keep(key, value)` accepts, such as
    /// all but the tokenizer's arrays once the tokenizer is built from them.
    pub fn retain_metadata(&mut self, keep: impl Fn(&str, &MetaValue) -> bool) {
        self.metadata.retain(|(k, v)| keep(k, v));
        self.meta_index = self.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
    }

    /// A split model from the images of its parts, in order, held in memory
    /// (the fuzz target's way in): the same checks as [`GgufFile::open`].
    pub fn from_part_images(images: Vec<Vec<u8>>) -> Result<GgufFile, GgufError> {
        let mut images = images.into_iter();
        let first = images.next().ok_or_else(|| GgufError::Split("no parts".into()))?;
        let mut g = Self::from_bytes(first)?;
        let count = g.get_u64("split.count").unwrap_or(1).max(1);
        let rest: Vec<Vec<u8>> = images.collect();
        if rest.len() as u64 + 1 != count {
            return Err(GgufError::Split(format!("{} parts given, the first says {count}", rest.len() + 1)));
        }
        if count > 1 && g.get_u64("split.no") != Some(0) {
            return Err(GgufError::Split("the first part does not say split.no 0".into()));
        }
        for (i, img) in rest.into_iter().enumerate() {
            let i = i as u64 + 1;
            let part = Self::from_bytes(img).map_err(|e| GgufError::Split(format!("part {}: {e}", i + 1)))?;
            g.merge(part, i, count, &format!("part {}", i + 1))?;
        }
        g.check_split_count()?;
        Ok(g)
    }

    fn check_split_count(&self) -> Result<(), GgufError> {
        match self.get_u64("split.tensors.count") {
            Some(want) if want != self.tensors.len() as u64 => Err(GgufError::Split(format!(
                "the parts hold {} tensors but the first part announces {want}",
                self.tensors.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Adds part `i` of `count` (checked to say so) to this, the first part.
    fn merge(&mut self, part: GgufFile, i: u64, count: u64, path: &dyn fmt::Display) -> Result<(), GgufError> {
        let (no, c) = (part.get_u64("split.no"), part.get_u64("split.count"));
        if no != Some(i) || c != Some(count) {
            let say = |v: Option<u64>| v.map_or("nothing".to_string(), |v| v.to_string());
            return Err(GgufError::Split(format!(
                "{path} should be part {} of {count} (split.no {i}, split.count {count}) but says split.no {}, split.count {}: is it from another model?",
                i + 1,
                say(no),
                say(c)
            )));
        }
        let index = self.parts.len();
        for mut t in part.tensors {
            if self.tensor_index.contains_key(&t.name) {
                return Err(GgufError::Split(format!("tensor {:?} is in two parts (again in {path})", t.name)));
            }
            t.part = index;
            self.tensor_index.insert(t.name.clone(), self.tensors.len());
            self.tensors.push(t);
        }
        self.parts.extend(part.parts);
        Ok(())
    }

    /// The files of this model and their sizes (one entry unless split;
    /// no path for an image held in memory).
    pub fn parts(&self) -> Vec<(Option<&Path>, u64)> {
        self.parts.iter().map(|p| (p.path.as_deref(), p.bytes.len() as u64)).collect()
    }

    /// Parse a GGUF image held in memory (used by tests and the fuzz target).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(Storage::owned(bytes))
    }

    fn parse(bytes: Storage) -> Result<GgufFile, GgufError> {
        let buf: &[u8] = &bytes;
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = if bytes.len() < 4 {
            let mut m = [0u8; 4];
            m[..buf.len()].copy_from_slice(buf);
            return Err(GgufError::BadMagic { found: m });
        } else {
            c.array(&|| "magic".into())?
        };
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = c.u32(&|| "the version".into())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64(&|| "the tensor count".into())?;
        let n_kv = c.u64(&|| "the metadata count".into())?;
        // Each KV needs at least 12 bytes and each tensor entry at least 24.
        if n_kv.saturating_mul(12) > c.remaining() || n_tensors.saturating_mul(24) > c.remaining() {
            return Err(GgufError::Truncated {
                what: format!("{n_kv} metadata entries and {n_tensors} tensor entries"),
                offset: c.pos as u64,
                needed: n_kv.saturating_mul(12).saturating_add(n_tensors.saturating_mul(24)),
                len: bytes.len() as u64,
            });
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("the key of metadata entry {i}"))?;
            let ty = c.u32(&|| format!("the type of metadata key {key:?}"))?;
            let value = read_value(&mut c, ty, &key, 0)?;
            meta_index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }
        let alignment = match meta_index.get("general.alignment") {
            Some(&i) => {
                let a = metadata[i].1.as_i64().unwrap_or(0);
                if a <= 0 || (a as u64).count_ones() != 1 {
                    return Err(GgufError::BadAlignment(a.max(0) as u64));
                }
                a as u64
            }
            None => 32,
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("the name of tensor {i}"))?;
            let what = || format!("the table entry of tensor {name:?}");
            let n_dims = c.u32(&what)?;
            if n_dims > 4 {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let ty_id = c.u32(&what)?;
            let offset = c.u64(&what)?;
            let ty = GgmlType::from_u32(ty_id)
                .ok_or_else(|| GgufError::UnknownTensorType { name: name.clone(), ty: ty_id })?;
            let n_el = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let Some(n_el) = n_el.filter(|&n| n < (1u64 << 48)) else {
                return Err(GgufError::TensorTooLarge { name, shape: dims });
            };
            let block = ty.block_size() as u64;
            if dims.first().copied().unwrap_or(1) % block != 0 {
                return Err(GgufError::BadBlockShape { name, shape: dims, ty: ty.name(), block: ty.block_size() });
            }
            let size = n_el / block * ty.type_size() as u64;
            if offset % alignment != 0 {
                return Err(GgufError::Misaligned { name, offset, alignment });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, size, part: 0, layout: Layout::File });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let parts = vec![Part { path: None, bytes, data_offset }];
        Ok(GgufFile { version, metadata, meta_index, tensors, tensor_index, alignment, data_offset, parts })
    }

    /// Total length in bytes (of all parts).
    pub fn file_len(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes.len() as u64).sum()
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_i64).and_then(|v| u64::try_from(v).ok())
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute byte range of a tensor in its part, checked against that part's length.
    fn range(&self, t: &TensorInfo) -> Result<std::ops::Range<usize>, GgufError> {
        let part = &self.parts[t.part];
        let len = part.bytes.len() as u64;
        let start = part.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(s), Some(e)) if e <= len => Ok(s as usize..e as usize),
            _ => Err(GgufError::TensorPastEnd {
                name: t.name.clone(),
                start: start.unwrap_or(u64::MAX),
                end: end.unwrap_or(u64::MAX),
                file_len: len,
            }),
        }
    }

    /// The raw (possibly quantized) bytes of a tensor, borrowed from the mapping.
    pub fn tensor_data(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        let r = self.range(t)?;
        Ok((t, &self.parts[t.part].bytes[r]))
    }

    /// Like [`GgufFile::tensor_data`], but the bytes keep the mapping alive on
    /// their own, so a model can hold them after the `GgufFile` is dropped.
    pub fn tensor_slice(&self, name: &str) -> Result<(&TensorInfo, ByteSlice), GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        let r = self.range(t)?;
        Ok((t, self.parts[t.part].bytes.slice(r)))
    }

    /// Rewrites the matrices that `pick` chooses, and that can be, into
    /// the layout of eight rows interleaved ([`whale_kernels::x8`]), in
    /// memory, and marks them so ([`TensorInfo::layout`]): Q4_K and Q6_K
    /// matrices (or stacks of them, such as a layer's experts) whose
    /// matrices have a multiple of eight rows, in parts held in memory
    /// ([`GgufFile::read_into_memory`], or built from bytes) that nothing
    /// else shares yet. A tensor in a mapped part, one that lies outside
    /// its part, or one whose bytes another tensor's overlap, stays as it
    /// is. Returns how many were rewritten.
    pub fn interleave_x8(&mut self, pick: impl Fn(&TensorInfo) -> bool) -> usize {
        // Tensors whose bytes overlap another's (a crafted file): rewriting
        // one would scramble the other.
        let shared = overlapping(self.tensors.iter().map(|t| (t.part, t.offset, t.offset.saturating_add(t.size))));
        let mut done = 0;
        for (i, &shared) in shared.iter().enumerate() {
            let t = &self.tensors[i];
            if shared {
                continue;
            }
            let (cols, rows) = match t.dims[..] {
                [c, r] | [c, r, _] => (c as usize, r as usize),
                _ => continue,
            };
            if t.layout != Layout::File || !x8::fits(t.ty, rows, cols) || !pick(t) {
                continue;
            }
            let Ok(range) = self.range(t) else { continue };
            let (ty, all_rows) = (t.ty, (t.n_elements() / cols.max(1) as u64) as usize);
            let Some(bytes) = self.parts[t.part].bytes.get_mut() else { continue };
            if x8::interleave_in_place(ty, all_rows, cols, &mut bytes[range]).is_ok() {
                self.tensors[i].layout = Layout::X8;
                done += 1;
            }
        }
        done
    }

    /// Check that every tensor lies inside the file; the first that does not is
    /// reported (a truncated download shows up here).
    pub fn check_tensors(&self) -> Result<(), GgufError> {
        for t in &self.tensors {
            self.range(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a small GGUF image by hand: one string, one u32, one array, one tensor.
    pub(crate) fn tiny_gguf(version: u32, truncate_data: bool) -> Vec<u8> {
        tiny_gguf_with_table_end(version, truncate_data).0
    }

    /// The image and the offset where its tensor table ends (before padding).
    fn tiny_gguf_with_table_end(version: u32, truncate_data: bool) -> (Vec<u8>, usize) {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&3u64.to_le_bytes()); // kv
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&7u32.to_le_bytes());
        s(&mut b, "arr");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes()); // i32 elements
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&(-1i32).to_le_bytes());
        b.extend_from_slice(&2i32.to_le_bytes());
        s(&mut b, "w");
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&0u64.to_le_bytes());
        let table_end = b.len();
        while b.len() % 32 != 0 {
            b.push(0);
        }
        let n = if truncate_data { 5 } else { 8 };
        for i in 0..n {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        (b, table_end)
    }

    #[test]
    fn parses_hand_built_file() {
        for v in [2, 3] {
            let g = GgufFile::from_bytes(tiny_gguf(v, false)).unwrap();
            assert_eq!(g.architecture(), Some("llama"));
            assert_eq!(g.get_u64("llama.block_count"), Some(7));
            assert_eq!(g.get("arr"), Some(&MetaValue::Array(vec![MetaValue::I32(-1), MetaValue::I32(2)])));
            let (t, data) = g.tensor_data("w").unwrap();
            assert_eq!(t.dims, vec![4, 2]);
            assert_eq!(data.len(), 32);
            assert_eq!(f32::from_le_bytes(data[28..32].try_into().unwrap()), 7.0);
        }
    }

    /// A file opened mapped and then read into memory keeps its header
    /// and gives the same tensor bytes; metadata can be forgotten by key;
    /// a file whose length changed in between is an error, not other data.
    #[test]
    fn read_into_memory_keeps_the_header_and_refuses_a_changed_file() {
        let path = std::env::temp_dir().join(format!("whale-read-into-memory-{}.gguf", std::process::id()));
        std::fs::write(&path, tiny_gguf(3, false)).unwrap();
        let mut g = GgufFile::open_with(&path, LoadMode::Map).unwrap();
        let mapped = g.tensor_data("w").unwrap().1.to_vec();
        g.retain_metadata(|k, _| k != "arr");
        assert_eq!(g.get("arr"), None);
        assert_eq!(g.get_u64("llama.block_count"), Some(7));
        g.read_into_memory().unwrap();
        assert_eq!(g.tensor_data("w").unwrap().1, &mapped[..]);
        assert_eq!(g.architecture(), Some("llama"));

        let mut g = GgufFile::open_with(&path, LoadMode::Map).unwrap();
        let mut longer = tiny_gguf(3, false);
        longer.extend_from_slice(&[0; 32]);
        // Replaced, not truncated in place: the mapping keeps the old inode.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, longer).unwrap();
        let e = g.read_into_memory().unwrap_err().to_string();
        assert!(e.contains("changed while it was loaded"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    /// `overlapping` against every pair compared, on random ranges (some
    /// empty, in two parts).
    #[test]
    fn overlapping_ranges_are_those_that_share_a_byte_with_another() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        for _ in 0..500 {
            let ranges: Vec<(usize, u64, u64)> = (0..next(8))
                .map(|_| {
                    let (start, len) = (next(60), next(20));
                    (next(2) as usize, start, start + len)
                })
                .collect();
            let want: Vec<bool> = ranges
                .iter()
                .enumerate()
                .map(|(i, a)| ranges.iter().enumerate().any(|(j, b)| i != j && a.0 == b.0 && a.1 < b.2 && b.1 < a.2))
                .collect();
            assert_eq!(overlapping(ranges.iter().copied()), want, "{ranges:?}");
        }
    }

    #[test]
    fn truncated_data_names_the_tensor() {
        let g = GgufFile::from_bytes(tiny_gguf(3, true)).unwrap();
        let e = g.check_tensors().unwrap_err().to_string();
        assert!(e.contains("\"w\"") && e.contains("past the end"), "{e}");
    }

    #[test]
    fn every_truncation_of_the_header_is_an_error() {
        let (full, table_end) = tiny_gguf_with_table_end(3, false);
        for n in 0..table_end {
            let r = GgufFile::from_bytes(full[..n].to_vec());
            assert!(r.is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = tiny_gguf(3, false);
        b[0] = b'X';
        assert!(matches!(GgufFile::from_bytes(b).unwrap_err(), GgufError::BadMagic { .. }));
        let b = tiny_gguf(1, false);
        assert!(matches!(GgufFile::from_bytes(b).unwrap_err(), GgufError::UnsupportedVersion(1)));
    }

    #[test]
    fn unknown_tensor_type() {
        let mut b = tiny_gguf(3, false);
        // Tensor entry: name "w" | n_dims u32 | 2 dims u64 | type u32 | offset u64.
        let pos = b.windows(2 + 8 + 8 + 4).position(|w| w[..2] == [b'w', 2]).unwrap() + 1 + 4 + 16;
        b[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
        let e = GgufFile::from_bytes(b).unwrap_err();
        assert!(matches!(e, GgufError::UnknownTensorType { ty: 99, .. }), "{e}");
    }
}
