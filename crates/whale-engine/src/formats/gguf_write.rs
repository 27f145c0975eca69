//! GGUF writer (version 3), streaming: the header is written first, then each
//! tensor's bytes are asked for in table order and written straight through,
//! so a file of any size is written in the memory of one tensor chunk.
//!
//! The layout is the one [`crate::formats::gguf`] reads; a file this writes
//! is read back by that reader in the tests, and loaded by llama.cpp in the
//! `whale synth` checks.

use std::io::{self, Write};

use whale_kernels::GgmlType;

use crate::formats::gguf::{MetaValue, TensorInfo};

/// A file plan: metadata and tensor table. Offsets are laid out by
/// [`GgufWriter::add_tensor`]; data comes later, through [`GgufWriter::write`].
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    data_len: u64,
}

/// The GGUF default; `general.alignment` is never written, so readers use it.
const ALIGNMENT: u64 = 32;

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// A tensor whose shape does not fit its type.
#[derive(Debug, thiserror::Error)]
#[error("tensor {name:?}: shape {dims:?} does not fit {ty}: {why}")]
pub struct ShapeError {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: &'static str,
    pub why: &'static str,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds (or replaces) a metadata key.
    pub fn set(&mut self, key: &str, value: MetaValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Appends a tensor to the table (GGUF dimension order: `dims[0]` is the
    /// contiguous one) and returns its entry.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> Result<&TensorInfo, ShapeError> {
        let err = |why| ShapeError { name: name.to_string(), dims: dims.to_vec(), ty: ty.name(), why };
        if dims.is_empty() || dims.len() > 4 || dims.contains(&0) {
            return Err(err("between 1 and 4 non-zero dimensions are needed"));
        }
        if !dims[0].is_multiple_of(ty.block_size() as u64) {
            return Err(err("the first dimension is not a multiple of the block size"));
        }
        let n: u64 = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| err("too many elements"))?;
        let size = (n / ty.block_size() as u64).checked_mul(ty.type_size() as u64).ok_or_else(|| err("too large"))?;
        let offset = align(self.data_len);
        self.data_len = offset + size;
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            offset,
            size,
            part: 0,
            layout: whale_kernels::x8::Layout::File,
        });
        Ok(self.tensors.last().expect("just pushed"))
    }

    /// Splits the plan into parts of at most about `max_bytes` of tensor
    /// data each (a part holds at least one tensor), as llama.cpp's
    /// `gguf-split --split-max-size` does: the first part keeps all metadata,
    /// every part gets `split.no`, `split.count` and `split.tensors.count`.
    /// Returns each part with the indices of its tensors in this plan.
    pub fn split(&self, max_bytes: u64) -> Vec<(GgufWriter, Vec<usize>)> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
        let mut size = 0u64;
        for (i, t) in self.tensors.iter().enumerate() {
            let last = groups.last_mut().expect("one group at least");
            if !last.is_empty() && size + t.size > max_bytes {
                groups.push(vec![i]);
                size = t.size;
            } else {
                last.push(i);
                size += t.size;
            }
        }
        let count = groups.len();
        groups
            .into_iter()
            .enumerate()
            .map(|(no, idx)| {
                let mut w = GgufWriter::new();
                if no == 0 {
                    w.metadata = self.metadata.clone();
                }
                w.set("split.no", MetaValue::U16(no as u16));
                w.set("split.count", MetaValue::U16(count as u16));
                w.set("split.tensors.count", MetaValue::I32(self.tensors.len() as i32));
                for &i in &idx {
                    let t = &self.tensors[i];
                    w.add_tensor(&t.name, &t.dims, t.ty).expect("the shape was accepted once");
                }
                (w, idx)
            })
            .collect()
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// Bytes of the header (magic to the padding before the data).
    pub fn header_len(&self) -> u64 {
        let mut c = Counter(0);
        self.write_header(&mut c).expect("counting cannot fail");
        c.0
    }

    /// Total file size.
    pub fn file_len(&self) -> u64 {
        self.header_len() + self.data_len
    }

    /// The header alone (metadata and tensor table, padded).
    pub fn header(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_header(&mut v).expect("writing to memory cannot fail");
        v
    }

    fn write_header(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"GGUF")?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (k, v) in &self.metadata {
            write_str(w, k)?;
            w.write_all(&type_id(v).to_le_bytes())?;
            write_value(w, v)?;
        }
        let mut pos = 24 + self.metadata.iter().map(|(k, v)| 8 + k.len() as u64 + 4 + value_len(v)).sum::<u64>();
        for t in &self.tensors {
            write_str(w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&(t.ty as u32).to_le_bytes())?;
            w.write_all(&t.offset.to_le_bytes())?;
            pos += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
        }
        w.write_all(&vec![0u8; (align(pos) - pos) as usize])
    }

    /// Writes the file. `data(i, tensor, out)` must write exactly
    /// `tensor.size` bytes for tensor `i`; anything else is an error.
    /// Returns the number of bytes written.
    pub fn write<W: Write>(
        &self,
        out: &mut W,
        mut data: impl FnMut(usize, &TensorInfo, &mut dyn Write) -> io::Result<()>,
    ) -> io::Result<u64> {
        let mut out = Counting { inner: out, n: 0 };
        self.write_header(&mut out)?;
        let data_start = out.n;
        for (i, t) in self.tensors.iter().enumerate() {
            let pad = data_start + t.offset - out.n;
            out.write_all(&vec![0u8; pad as usize])?;
            let before = out.n;
            data(i, t, &mut out)?;
            if out.n - before != t.size {
                return Err(io::Error::other(format!(
                    "tensor {:?}: {} bytes written, {} expected",
                    t.name,
                    out.n - before,
                    t.size
                )));
            }
        }
        out.flush()?;
        Ok(out.n)
    }
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

/// An array's element type: its first element's, and u32 for an empty one.
fn elem_type(a: &[MetaValue]) -> u32 {
    a.first().map(type_id).unwrap_or(4)
}

fn value_len(v: &MetaValue) -> u64 {
    match v {
        MetaValue::U8(_) | MetaValue::I8(_) | MetaValue::Bool(_) => 1,
        MetaValue::U16(_) | MetaValue::I16(_) => 2,
        MetaValue::U32(_) | MetaValue::I32(_) | MetaValue::F32(_) => 4,
        MetaValue::U64(_) | MetaValue::I64(_) | MetaValue::F64(_) => 8,
        MetaValue::String(s) => 8 + s.len() as u64,
        MetaValue::Array(a) => 12 + a.iter().map(value_len).sum::<u64>(),
    }
}

fn write_value(w: &mut impl Write, v: &MetaValue) -> io::Result<()> {
    match v {
        MetaValue::U8(x) => w.write_all(&[*x]),
        MetaValue::I8(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U16(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I16(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::F32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::Bool(x) => w.write_all(&[*x as u8]),
        MetaValue::String(s) => write_str(w, s),
        MetaValue::U64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::F64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::Array(a) => {
            let et = elem_type(a);
            if let Some(bad) = a.iter().find(|x| type_id(x) != et) {
                return Err(io::Error::other(format!(
                    "a GGUF array holds one type: found {} among {}",
                    bad.type_name(),
                    a[0].type_name()
                )));
            }
            w.write_all(&et.to_le_bytes())?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            a.iter().try_for_each(|x| write_value(w, x))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf::GgufFile;

    #[test]
    fn round_trips_through_the_reader() {
        let mut w = GgufWriter::new();
        w.set("general.architecture", MetaValue::String("llama".into()));
        w.set("a.n", MetaValue::U32(7));
        w.set("a.n", MetaValue::U32(8));
        w.set("a.list", MetaValue::Array(vec![MetaValue::String("x".into()), MetaValue::String("yz".into())]));
        w.set("a.f", MetaValue::F32(0.5));
        w.add_tensor("t0", &[3], GgmlType::F32).unwrap();
        w.add_tensor("t1", &[64, 2], GgmlType::Q8_0).unwrap();
        assert!(w.add_tensor("bad", &[48, 2], GgmlType::Q8_0).is_err());
        let mut bytes = Vec::new();
        let n = w.write(&mut bytes, |i, t, out| out.write_all(&vec![i as u8 + 1; t.size as usize])).unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(n, w.file_len());
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.get_u64("a.n"), Some(8));
        assert_eq!(f.get_f64("a.f"), Some(0.5));
        assert_eq!(f.get("a.list").unwrap().as_array().unwrap().len(), 2);
        assert_eq!(f.data_offset, w.header_len());
        let (t, d) = f.tensor_data("t1").unwrap();
        assert_eq!((t.ty, t.dims.clone(), d.len()), (GgmlType::Q8_0, vec![64, 2], 4 * 34));
        assert!(d.iter().all(|&b| b == 2));
        assert_eq!(f.tensor_data("t0").unwrap().1, &[1u8; 12][..]);
    }

    #[test]
    fn a_short_tensor_is_an_error() {
        let mut w = GgufWriter::new();
        w.add_tensor("t", &[4], GgmlType::F32).unwrap();
        let err = w.write(&mut Vec::new(), |_, _, out| out.write_all(&[0; 8])).unwrap_err();
        assert!(err.to_string().contains("8 bytes written, 16 expected"), "{err}");
    }
}
