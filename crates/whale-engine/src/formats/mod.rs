//! Model files, read as they are downloaded.
//!
//! # What lives here
//! - [`storage`]: shared, immutable bytes (a memory map or an owned buffer)
//!   that weights are windows into, never copies of;
//! - [`gguf`]: the GGUF reader (header, metadata, tensor table), and
//!   [`gguf_write`], its streaming writer (for `whale synth`);
//! - [`weights`]: one lookup by name over a GGUF file or a Hugging Face
//!   safetensors folder (FP8 blocks included), with each tensor's shape
//!   checked against what the architecture declares;
//! - [`names`]: the tensor-name table, each weight's GGUF and Hugging Face
//!   names in one place.
//!
//! # What it may call
//! Only the kernels crate (for block sizes and dequantization). Nothing here
//! knows about tokenizers, architectures or serving: every other folder of
//! the engine reads its files through this one.

pub mod gguf;
pub mod gguf_write;
pub mod names;
pub mod storage;
pub mod weights;
