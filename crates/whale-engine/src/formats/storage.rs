//! Shared, immutable byte storage for weights: a memory map or an owned buffer.
//!
//! Weights are never copied out of a memory-mapped file; a [`ByteSlice`] is a
//! reference-counted window into the mapping, so a model can own its weights
//! without borrowing from the file object that opened them.

use std::ops::{Deref, Range};
use std::sync::Arc;

enum Backing {
    Mapped(memmap2::Mmap),
    /// A file read whole into anonymous memory ([`LoadMode::Read`]).
    Read(memmap2::MmapMut),
    Owned(Vec<u8>),
}

/// A whole file (or buffer) of bytes, cheap to clone.
#[derive(Clone)]
pub struct Storage(Arc<Backing>);

/// How a model file's bytes come into memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadMode {
    /// Memory-mapped: pages read from the file as they are first touched
    /// and shared with the page cache (any model size; nothing read twice).
    #[default]
    Map,
    /// Read whole into anonymous memory, in 2 MiB pages where the kernel
    /// has transparent huge pages (`madvise`). Decode streams every weight
    /// once a token, and such pages streamed faster than the file's own:
    /// on the 2-core Intel Xeon with AMX of stop 36 (a virtual machine),
    /// the same 760 MB of a V3-shaped GGUF's `output.weight` read at 18.8
    /// GB/s (Q6_K products 16.0) as mapped file pages and at 35.5 (23.8)
    /// once read into such memory; 4 KiB anonymous pages gave 28.3 (20.5).
    Read,
}

/// `len` bytes of zeroed anonymous memory of their own mapping (given back
/// to the system when dropped), asking for 2 MiB pages where the kernel
/// gives them only on request (see [`LoadMode::Read`]).
pub fn anon_huge(len: usize) -> std::io::Result<memmap2::MmapMut> {
    let mem = memmap2::MmapMut::map_anon(len)?;
    #[cfg(target_os = "linux")]
    let _ = mem.advise(memmap2::Advice::HugePage);
    Ok(mem)
}

impl Storage {
    pub fn mapped(map: memmap2::Mmap) -> Storage {
        Storage(Arc::new(Backing::Mapped(map)))
    }

    /// `file` as `mode` says: mapped, or read whole into anonymous memory
    /// (see [`LoadMode::Read`]; a file that shrinks while it is read is an
    /// error, not short data).
    ///
    /// # Safety
    /// For [`LoadMode::Map`], as [`memmap2::Mmap::map`]: the file must not
    /// be truncated by another process while it is mapped.
    pub unsafe fn open(file: &std::fs::File, mode: LoadMode) -> std::io::Result<Storage> {
        match mode {
            // SAFETY: the caller's promise.
            LoadMode::Map => Ok(Storage::mapped(unsafe { memmap2::Mmap::map(file)? })),
            LoadMode::Read => {
                use std::io::Read;
                let len = usize::try_from(file.metadata()?.len())
                    .map_err(|_| std::io::Error::other("the file is larger than the address space"))?;
                if len == 0 {
                    return Ok(Storage::owned(Vec::new()));
                }
                let mut mem = anon_huge(len)?;
                let mut f = file;
                f.read_exact(&mut mem)?;
                Ok(Storage(Arc::new(Backing::Read(mem))))
            }
        }
    }
    pub fn owned(v: Vec<u8>) -> Storage {
        Storage(Arc::new(Backing::Owned(v)))
    }

    /// The bytes, writable, when they are in memory (read in, or owned)
    /// and no other `Storage` or [`ByteSlice`] shares them: `None` for a
    /// file's mapping, or while anything else can read them. For rewriting
    /// weights at load, before any model holds them.
    pub fn get_mut(&mut self) -> Option<&mut [u8]> {
        match Arc::get_mut(&mut self.0)? {
            Backing::Mapped(_) => None,
            Backing::Read(m) => Some(m),
            Backing::Owned(v) => Some(v),
        }
    }
    /// A window into this storage. Panics if `r` is out of bounds: callers
    /// check ranges against the length first (see `GgufFile::range`).
    pub fn slice(&self, r: Range<usize>) -> ByteSlice {
        assert!(r.start <= r.end && r.end <= self.len(), "slice {r:?} out of {} bytes", self.len());
        ByteSlice { storage: self.clone(), start: r.start, end: r.end }
    }
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Backing::Mapped(m) => m,
            Backing::Read(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A window of a [`Storage`].
#[derive(Clone)]
pub struct ByteSlice {
    storage: Storage,
    start: usize,
    end: usize,
}

impl ByteSlice {
    /// An owned buffer as a slice (for weights converted at load time).
    pub fn from_vec(v: Vec<u8>) -> ByteSlice {
        let end = v.len();
        ByteSlice { storage: Storage::owned(v), start: 0, end }
    }
}

impl ByteSlice {
    /// Whether the bytes are the loaded file's own (its mapping, or the
    /// whole file read in by [`LoadMode::Read`]), not a buffer converted at
    /// load time.
    pub fn is_mapped(&self) -> bool {
        matches!(&*self.storage.0, Backing::Mapped(_) | Backing::Read(_))
    }

    /// Asks the kernel to read these bytes in ahead of use (`madvise`
    /// WILLNEED, asynchronous) when they are file pages; a hint only.
    pub fn will_need(&self) {
        if let Backing::Mapped(m) = &*self.storage.0 {
            #[cfg(unix)]
            let _ = m.advise_range(memmap2::Advice::WillNeed, self.start, self.end - self.start);
            #[cfg(not(unix))]
            let _ = m;
        }
    }

    /// A window of this window (`r` relative to its start). Panics when out of
    /// bounds: callers compute `r` from shapes already checked.
    pub fn sub(&self, r: Range<usize>) -> ByteSlice {
        assert!(
            r.start <= r.end && self.start + r.end <= self.end,
            "sub-slice {r:?} out of {} bytes",
            self.end - self.start
        );
        ByteSlice { storage: self.storage.clone(), start: self.start + r.start, end: self.start + r.end }
    }
}

impl Deref for ByteSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }
}

impl std::fmt::Debug for ByteSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteSlice({} bytes)", self.end - self.start)
    }
}
