//! The architectures whale runs and loading a model file into one of them.
//!
//! Adding an architecture touches this list, the tensor-name table
//! ([`crate::formats::names`]) and one file in this folder.

use std::path::Path;

use crate::formats::gguf::{GgufFile, MetaValue};
use crate::formats::storage::LoadMode;
use crate::formats::weights::WeightStore;
use crate::models::{LoadOptions, Model, ModelError};
use crate::text::tokenizer::Tokenizer;

/// The architectures whale runs, by their Hugging Face `model_type` and GGUF
/// `general.architecture` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    /// DeepSeek-V2/V3/R1 (MLA + DeepSeekMoE).
    Deepseek,
    /// Janus-Pro (transformers' layout): its llama language model here; the
    /// image paths are loaded beside it by the engine's `vision` folder.
    Janus,
}

impl Architecture {
    pub const ALL: [Architecture; 4] =
        [Architecture::Llama, Architecture::Qwen2, Architecture::Deepseek, Architecture::Janus];

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Deepseek => "deepseek2",
            Architecture::Janus => "janus",
        }
    }

    /// Every name an architecture goes by: GGUF `general.architecture` first,
    /// then Hugging Face `model_type`s.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Architecture::Llama => &["llama"],
            Architecture::Qwen2 => &["qwen2"],
            Architecture::Deepseek => &["deepseek2", "deepseek_v2", "deepseek_v3"],
            Architecture::Janus => &["janus"],
        }
    }

    /// From GGUF `general.architecture` or config.json `model_type`.
    pub fn from_name(name: &str) -> Result<Architecture, ModelError> {
        if name == "multi_modality" {
            return Err(ModelError::Config(
                "this is DeepSeek's original Janus layout (model_type \"multi_modality\"); whale reads the layout of \
                 transformers' JanusForConditionalGeneration: convert it with transformers' \
                 models/janus/convert_janus_weights_to_hf.py, or download a converted copy \
                 (deepseek-community/Janus-Pro-1B or -7B)"
                    .into(),
            ));
        }
        Architecture::ALL.into_iter().find(|a| a.aliases().contains(&name)).ok_or_else(|| {
            ModelError::UnknownArchitecture {
                found: name.to_string(),
                known: Architecture::ALL.iter().flat_map(|a| a.aliases()).copied().collect::<Vec<_>>().join(", "),
            }
        })
    }
}

/// A model ready to run, with its tokenizer.
pub struct LoadedModel {
    pub model: Box<dyn Model>,
    pub tokenizer: Tokenizer,
}

/// Open a GGUF file or Hugging Face folder and build the model it holds.
///
/// The tokenizer is built from the model mapped, before any weights are
/// read into memory, and the heap its transient copies took is handed back
/// to the system before the read ([`trim_heap`]): otherwise those copies
/// (the GGUF header's vocabulary and merges, parsed, and the strings the
/// tokenizer is built from) sat on top of the weights at the load's peak.
/// A GGUF's header is parsed once and its vocabulary arrays forgotten
/// before the weights are read ([`GgufFile::read_into_memory`]).
/// `whale bench -p 0` peak RSS on the Intel Xeon of stop 42: Qwen2.5-0.5B
/// (151k-token vocabulary) 562.0-562.7 -> 524.9 MiB (llama.cpp `-lm none`
/// 527.2), SmolLM2-135M 129.7 -> 118.6, a V3-shaped GGUF 8958.4 -> 8920.1.
pub fn load(path: &Path, opts: LoadOptions) -> Result<LoadedModel, ModelError> {
    let store = WeightStore::open_with(path, opts.fp8, LoadMode::Map)?;
    let (arch_name, tokenizer) = match &store {
        WeightStore::Gguf(g) => {
            let arch = g.architecture().ok_or_else(|| ModelError::Config("GGUF has no general.architecture".into()))?;
            (arch.to_string(), Tokenizer::from_gguf(g)?)
        }
        WeightStore::Hf(h) => {
            let mt = h.config.get("model_type").and_then(|v| v.as_str());
            let mt = mt.ok_or_else(|| ModelError::Config("config.json has no \"model_type\"".into()))?;
            (mt.to_string(), Tokenizer::from_hf_dir(&h.dir)?)
        }
    };
    let store = match (opts.load_mode, store) {
        (LoadMode::Map, store) => store,
        // The header's vocabulary arrays have done their work: forgotten
        // before the read, so that they are not held beside the weights.
        (LoadMode::Read, WeightStore::Gguf(mut g)) => {
            g.retain_metadata(|k, v| !(k.starts_with("tokenizer.ggml.") && matches!(v, MetaValue::Array(_))));
            trim_heap();
            g.read_into_memory().map_err(crate::formats::weights::WeightError::from)?;
            interleave(&mut g);
            WeightStore::Gguf(g)
        }
        (mode, store) => {
            drop(store);
            trim_heap();
            WeightStore::open_with(path, opts.fp8, mode)?
        }
    };
    let model = load_weights(&store, &arch_name, opts)?;
    Ok(LoadedModel { model, tokenizer })
}

/// Stores the matrices of a GGUF held in memory eight rows interleaved
/// where this CPU's decode kernels take that layout for their type
/// ([`whale_kernels::x8::chosen`]: Q2_K, Q4_K, Q5_K, Q6_K, IQ4_XS, Q4_0, Q4_1,
/// Q5_0, Q8_0, IQ4_NL at the AVX-512 VNNI level and at AVX2): a decode
/// reads one
/// stream of words instead of eight rows' and transposes nothing. Every
/// reader of a `Linear` or `TensorView` knows its layout; a mapped file
/// stays as it is.
fn interleave(g: &mut GgufFile) {
    g.interleave_x8(|t| whale_kernels::x8::chosen(t.ty));
}

/// Hands the heap's free pages back to the system (glibc's `malloc_trim`;
/// nothing elsewhere), so that memory freed after a large transient use
/// leaves the resident set.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's
    // arenas; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Build the model and tokenizer of a GGUF already open (or built in
/// memory, as `whale bench --like` does).
pub fn load_gguf(mut g: GgufFile, opts: LoadOptions) -> Result<LoadedModel, ModelError> {
    let arch =
        g.architecture().ok_or_else(|| ModelError::Config("GGUF has no general.architecture".into()))?.to_string();
    let tokenizer = Tokenizer::from_gguf(&g)?;
    interleave(&mut g);
    let store = WeightStore::Gguf(g);
    let model = load_weights(&store, &arch, opts)?;
    Ok(LoadedModel { model, tokenizer })
}

/// Build the model from already-opened weights (no tokenizer needed).
pub fn load_weights(store: &WeightStore, arch_name: &str, opts: LoadOptions) -> Result<Box<dyn Model>, ModelError> {
    Ok(match Architecture::from_name(arch_name)? {
        Architecture::Llama => Box::new(crate::models::llama::Llama::load(store, Architecture::Llama, opts)?),
        Architecture::Qwen2 => Box::new(crate::models::qwen2::load(store, opts)?),
        Architecture::Deepseek => Box::new(crate::models::deepseek_v3::Deepseek::load(store, opts)?),
        Architecture::Janus => Box::new(crate::models::llama::Llama::load_janus(store, opts)?),
    })
}
