//! whale's engine: everything between a model file and a stream of tokens.
//!
//! Data flows through the modules in this order:
//! `gguf` / `safetensors` (weights, memory-mapped) → `config` (hyper-parameters
//! resolved once) → `tokenizer` + `chat_template` (text → ids) → `model` and one
//! file per architecture (`llama`, `qwen2`, `deepseek_v3` with the shared
//! `moe` routing) → `sampler` → `generate` (the loop
//! that ties them together, with stop conditions and streaming detokenization).
//!
//! For serving, `engine` runs the model on its own thread with continuous
//! batching over many sequences (`prefix_cache` keeps finished sequences' KV
//! for reuse, `json_constraint` masks tokens in JSON mode, `tool_calls` knows
//! the tool-call formats of chat templates).
//!
//! The engine has no async runtime and no HTTP: the binary crate builds the CLI
//! and the server on top of it.

pub mod chat_template;
pub mod deepseek_v3;
pub mod engine;
pub mod generate;
pub mod gguf;
pub mod json_constraint;
pub mod llama;
pub mod model;
pub mod moe;
pub mod names;
pub mod ops;
pub mod prefix_cache;
pub mod qwen2;
pub mod reasoning;
pub mod sampler;
pub mod storage;
pub mod tokenizer;
pub mod tool_calls;
pub mod weights;
