#![recursion_limit = "256"]
//! whale's engine: everything between a model file and a stream of tokens.
//!
//! Five folders, in the order data flows through them; each may call only
//! the ones before it:
//!
//! 1. [`formats`]: model files as they are downloaded (GGUF, safetensors
//!    folders), memory-mapped, behind one lookup by tensor name.
//! 2. [`text`]: the tokenizer, chat templates, the reasoning split, tool-call
//!    formats and structured-output grammars.
//! 3. [`models`]: the [`models::Model`] trait, the KV cache, linear layers,
//!    attention and MoE routing, then one file per architecture (`llama`,
//!    `qwen2`, `deepseek_v3`), and loading a file into one of them.
//! 4. [`vision`]: images: Janus-Pro's vision encoder, image preprocessing,
//!    image generation with its VQ decoder, PNG/JPEG in and out.
//! 5. [`serving`]: the sampler, the generation loop, and the engine thread
//!    with continuous batching and the prefix cache.
//!
//! A request reads top to bottom: text → ids ([`text`]) → the engine thread
//! ([`serving::engine`]) → a batched forward pass ([`models`], over weights
//! from [`formats`] and the kernels crate) → the sampler → events.
//!
//! Beside the flow, [`synth`] writes synthetic GGUF files (a real model's
//! shapes and tokenizer, random weights) for benchmarks; it uses only
//! [`formats`].
//!
//! The engine has no async runtime and no HTTP: the binary crate builds the
//! CLI and the server on top of it.

pub mod formats;
pub mod models;
pub mod serving;
pub mod synth;
pub mod text;
pub mod vision;
