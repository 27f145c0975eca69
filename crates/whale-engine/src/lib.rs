//! whale's engine: everything between a model file and a stream of tokens.
//!
//! Data flows through the modules in this order:
//! `gguf` / `safetensors` (weights, memory-mapped) → `config` (hyper-parameters
//! resolved once) → `tokenizer` + `chat_template` (text → ids) → `model` and one
//! file per architecture (`llama`, `qwen2`, `deepseek_v3` with the shared
//! `moe` routing) → `sampler` → `generate` (the loop
//! that ties them together, with stop conditions and streaming detokenization).
//!
//! The engine has no async runtime and no HTTP: the binary crate builds the CLI
//! and the server on top of it.

pub mod chat_template;
pub mod gguf;
pub mod tokenizer;
pub mod deepseek_v3;
pub mod generate;
pub mod llama;
pub mod model;
pub mod moe;
pub mod names;
pub mod ops;
pub mod qwen2;
pub mod reasoning;
pub mod sampler;
pub mod storage;
pub mod weights;
