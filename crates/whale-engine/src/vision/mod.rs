//! Images: DeepSeek's Janus-Pro, which understands pictures and draws them.
//!
//! Janus-Pro is a llama-architecture language model with two image paths
//! beside it, and this folder holds both, in the order data flows:
//!
//! - [`image`]: bytes a user sends (PNG or JPEG, with the pixel count
//!   limited before anything is decoded) to the `[3, 384, 384]` input the
//!   vision encoder takes, as Janus's processor prepares it (resize the long
//!   side with PIL's bicubic filter, pad to a square with the background
//!   colour, normalise); and generated pixels back to PNG bytes;
//! - [`nn`]: the layers the image models are made of that a language model
//!   lacks: LayerNorm, GroupNorm, exact GELU, full (non-causal) attention,
//!   and 2-D convolutions as GEMMs over whale's kernels;
//! - [`siglip`]: understanding: the SigLIP vision encoder and the MLP
//!   aligner that turn an image into 576 rows in the language model's space;
//! - [`vq`]: generation's last step: the VQ decoder that turns 24×24 image
//!   codes into pixels;
//! - [`janus`]: the model: its configuration (transformers'
//!   `JanusForConditionalGeneration` layout), loading, understanding (image
//!   rows placed at the image token's positions) and generation (the
//!   image-token head with classifier-free guidance, the conditional and
//!   unconditional sequences as one batch of two).
//!
//! Text-only use of a Janus folder goes through the ordinary
//! [`crate::models`] path: the registry loads its language model as a llama.

pub mod image;
pub mod janus;
pub mod nn;
pub mod siglip;
pub mod vq;

use crate::formats::weights::WeightError;
use crate::models::ModelError;

/// What can go wrong with an image or an image model.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("the image cannot be read: {0}")]
    BadImage(String),
    #[error(
        "the image is {width}x{height} = {pixels} pixels, more than the {limit} allowed (a decompression bomb or a photo too large: scale it down)"
    )]
    TooManyPixels { width: u64, height: u64, pixels: u64, limit: u64 },
    #[error("the image is neither PNG nor JPEG (its first bytes are {magic:02x?}); whale reads PNG and JPEG")]
    UnknownFormat { magic: Vec<u8> },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Request(String),
}
