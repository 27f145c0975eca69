//! whale's trainer: DeepSeek-R1's recipe (GRPO: reinforcement learning from
//! verifiable rewards) on models whale runs, with whale's engine doing the
//! rollouts and whale's own backward pass doing the gradients.
//!
//! # Data flow
//! - [`tasks`]: seeded problem generators (addition, multiplication,
//!   Countdown, sorting), their rule-based rewards, the flawed teacher that
//!   gives the starting policy, and the character vocabulary;
//! - [`model`]: a llama/qwen2 decoder (Q/K/V biases, tied head, grouped KV
//!   heads, optional LoRA adapters) with a forward pass that keeps a tape
//!   and the backward pass, built from [`ops`] (each op's forward and
//!   backward, checked against finite differences);
//! - [`optim`]: AdamW and gradient clipping;
//! - [`checkpoint`]: loading a model to train from any GGUF or Hugging Face
//!   folder the engine reads; safetensors + `config.json` folders (which the
//!   engine loads as any llama/qwen2 model), PEFT adapters, the resumable
//!   state file, the JSONL log and the SVG plot;
//! - [`rollout`]: sampling groups of answers through the engine
//!   (`whale_engine::models::llama`/`qwen2`), the prompt prefilled once and its KV
//!   cache forked G ways, all sequences in one batched forward;
//! - [`export`]: a trained model, adapters merged, as a GGUF with its tokenizer;
//! - [`grpo`]: the objective (GRPO, Dr. GRPO, DAPO) and the training loops
//!   (`sft` on the teacher, `grpo` on the rewards), with evaluation.
//!
//! Nothing here prints: the loops report through a callback, the binary
//! draws the progress bar.

pub mod checkpoint;
pub mod export;
pub mod grpo;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rollout;
pub mod tasks;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot train this model: {0}")]
    Unsupported(String),
    #[error("tensor shapes: {0}")]
    Shape(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error(
        "the loss is not finite at step {step} (learning rate too high?); the last good checkpoint is {checkpoint}"
    )]
    NonFinite { step: u64, checkpoint: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error(transparent)]
    Model(#[from] whale_engine::models::ModelError),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.display().to_string(), source }
}
