//! Qwen2: the decoder of DeepSeek-R1-Distill-Qwen and Qwen2.5.
//!
//! It is Llama with biases on the Q, K and V projections and RoPE rotating
//! halves in every format (llama.cpp's converter does not permute qwen2's Q/K),
//! so it reuses the Llama blocks. config.json has no `attention_bias` key for
//! qwen2: the biases are always there.

use crate::formats::weights::WeightStore;
use crate::models::llama::Llama;
use crate::models::{Architecture, LoadOptions, ModelError};

pub fn load(store: &WeightStore, opts: LoadOptions) -> Result<Llama, ModelError> {
    Llama::load(store, Architecture::Qwen2, opts)
}
