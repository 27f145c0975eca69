//! Turning a model into a stream of tokens: sampling, the generation loop,
//! and the engine thread that serves many requests at once.
//!
//! # What lives here
//! - [`sampler`]: the sampling chain (penalties, top-k, top-p, min-p,
//!   temperature, draw); greedy is bit-deterministic;
//! - [`generate`]: a [`generate::Session`] (a KV cache and the tokens it
//!   holds), the prefill-then-sample loop with stop conditions, as
//!   `whale run` uses it;
//! - [`engine`]: one thread that owns the model and every sequence's cache,
//!   with continuous batching, admission control and cancellation; callers
//!   get a handle with `submit(request) -> stream of events`;
//! - [`stop`]: stop strings, matched by an Aho–Corasick automaton so that a
//!   token costs the bytes of its text whatever the stop strings are;
//! - [`speculative`]: speculative decoding with the model's own MTP layer
//!   (greedy), as `whale run --spec mtp:K` uses it;
//! - [`prefix_cache`]: finished sequences kept so that a later prompt with the
//!   same beginning skips recomputing it.
//!
//! # What it may call
//! Everything below it: [`crate::models`], [`crate::text`] and
//! [`crate::formats`]. Nothing in the engine calls into this folder; the
//! binary crate (CLI and HTTP server) sits on top of it.

pub mod engine;
pub mod generate;
pub mod prefix_cache;
pub mod sampler;
pub mod speculative;
pub mod stop;
