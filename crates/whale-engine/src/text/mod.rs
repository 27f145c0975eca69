//! Text on either side of the model: what turns a conversation into token
//! ids, and what turns generated ids back into text the caller can use.
//!
//! # What lives here
//! - [`tokenizer`]: text ↔ ids for byte-level BPE vocabularies, from a GGUF
//!   or a Hugging Face folder, with streaming detokenization;
//! - [`chat_template`]: the model's own Jinja chat template, rendered as
//!   Python's jinja2 renders it;
//! - [`reasoning`]: splitting `<think> … </think>` from the answer as it
//!   streams;
//! - [`tool_calls`]: the tool-call formats chat templates use (DeepSeek's
//!   tokens, Hermes' `<tool_call>`), forcing and parsing calls;
//! - [`constraint`]: structured outputs, the token mask that keeps the
//!   output inside a JSON schema or grammar (through llguidance).
//!
//! # What it may call
//! [`crate::formats`] (a tokenizer can come from GGUF metadata). Never
//! [`crate::models`] or [`crate::serving`]: text processing knows nothing of
//! the forward pass.

pub mod chat_template;
pub mod constraint;
pub mod reasoning;
pub mod tokenizer;
pub mod tool_calls;
