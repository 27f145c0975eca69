//! Real models' shapes, as their `config.json` on the Hugging Face hub gives
//! them (field names as in that file).

/// A model `whale synth --like NAME` can imitate.
#[derive(Debug)]
pub struct Preset {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// The hub repository whose `config.json` these numbers come from.
    pub hf_repo: &'static str,
    /// Where the default tokenizer comes from: a `whale pull` spec (a catalog
    /// name, or `owner/repo` whose `tokenizer.json` is taken).
    pub tokenizer: &'static str,
    /// `tokenizer.ggml.pre` when the tokenizer comes from a `tokenizer.json`
    /// (a GGUF source keeps its own).
    pub pre_tokenizer: &'static str,
    /// The tensor order of the GGUF files people download for this model.
    pub order: Order,
    pub config: Config,
}

/// Tensor order in a file. It matters beyond looks: llama-quantize counts
/// some tensors in file order when it chooses their types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// llama.cpp's converter: the Hugging Face names sorted (`lm_head`,
    /// `model.embed_tokens`, `model.layers.10` before `model.layers.2`,
    /// `model.norm` last). Qwen's own GGUFs, and DeepSeek's MoE GGUFs.
    HfNames,
    /// Non-layer tensors first, then layers 0, 1, 2, …, each sorted by GGUF
    /// name (bartowski's and unsloth's files of the R1 distills).
    GgufNames,
}

#[derive(Debug)]
pub enum Config {
    Qwen2(Dense),
    Deepseek2(Deepseek),
}

/// A dense `qwen2` model (`Qwen2ForCausalLM`).
#[derive(Debug)]
pub struct Dense {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
}

/// A DeepSeek-V2/V3 model (`DeepseekV2ForCausalLM`, `DeepseekV3ForCausalLM`).
#[derive(Debug)]
pub struct Deepseek {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub intermediate_size: usize,
    pub moe_intermediate_size: usize,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub first_k_dense_replace: usize,
    pub n_group: usize,
    pub topk_group: usize,
    /// `scoring_func == "sigmoid"` (V3) rather than softmax (V2).
    pub sigmoid_scoring: bool,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f32,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    /// `rope_scaling` (type yarn): factor, original_max_position_embeddings,
    /// beta_fast, beta_slow, mscale_all_dim.
    pub yarn: (f32, usize, f32, f32, f32),
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "deepseek-v3",
        aliases: &["deepseek-r1", "deepseek-v3-0324", "deepseek-r1-0528"],
        hf_repo: "deepseek-ai/DeepSeek-V3",
        tokenizer: "deepseek-ai/DeepSeek-V3",
        pre_tokenizer: "deepseek-v3",
        order: Order::HfNames,
        config: Config::Deepseek2(Deepseek {
            hidden_size: 7168,
            num_hidden_layers: 61,
            num_attention_heads: 128,
            q_lora_rank: Some(1536),
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            intermediate_size: 18432,
            moe_intermediate_size: 2048,
            n_routed_experts: 256,
            n_shared_experts: 1,
            num_experts_per_tok: 8,
            first_k_dense_replace: 3,
            n_group: 8,
            topk_group: 4,
            sigmoid_scoring: true,
            norm_topk_prob: true,
            routed_scaling_factor: 2.5,
            vocab_size: 129280,
            max_position_embeddings: 163840,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            yarn: (40.0, 4096, 32.0, 1.0, 1.0),
        }),
    },
    Preset {
        name: "deepseek-v2-lite",
        aliases: &["deepseek-v2-lite-chat"],
        hf_repo: "deepseek-ai/DeepSeek-V2-Lite",
        tokenizer: "deepseek-ai/DeepSeek-V2-Lite",
        pre_tokenizer: "deepseek-llm",
        order: Order::HfNames,
        config: Config::Deepseek2(Deepseek {
            hidden_size: 2048,
            num_hidden_layers: 27,
            num_attention_heads: 16,
            q_lora_rank: None,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            intermediate_size: 10944,
            moe_intermediate_size: 1408,
            n_routed_experts: 64,
            n_shared_experts: 2,
            num_experts_per_tok: 6,
            first_k_dense_replace: 1,
            n_group: 1,
            topk_group: 1,
            sigmoid_scoring: false,
            norm_topk_prob: false,
            routed_scaling_factor: 1.0,
            vocab_size: 102400,
            max_position_embeddings: 163840,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            yarn: (40.0, 4096, 32.0, 1.0, 0.707),
        }),
    },
    Preset {
        name: "deepseek-r1-distill-qwen-7b",
        aliases: &[],
        hf_repo: "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        tokenizer: "deepseek-r1-distill-qwen-7b-head",
        pre_tokenizer: "deepseek-r1-qwen",
        order: Order::GgufNames,
        config: Config::Qwen2(Dense {
            hidden_size: 3584,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            intermediate_size: 18944,
            vocab_size: 152064,
            max_position_embeddings: 131072,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
        }),
    },
    Preset {
        name: "deepseek-r1-distill-qwen-1.5b",
        aliases: &[],
        hf_repo: "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        tokenizer: "deepseek-r1-distill-qwen-7b-head",
        pre_tokenizer: "deepseek-r1-qwen",
        order: Order::GgufNames,
        config: Config::Qwen2(Dense {
            hidden_size: 1536,
            num_hidden_layers: 28,
            num_attention_heads: 12,
            num_key_value_heads: 2,
            intermediate_size: 8960,
            vocab_size: 151936,
            max_position_embeddings: 131072,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
        }),
    },
    Preset {
        name: "qwen2.5-0.5b",
        aliases: &["qwen2.5-0.5b-instruct", "qwen2.5-coder-0.5b"],
        hf_repo: "Qwen/Qwen2.5-0.5B-Instruct",
        tokenizer: "qwen2.5-coder-0.5b",
        pre_tokenizer: "qwen2",
        order: Order::HfNames,
        config: Config::Qwen2(Dense {
            hidden_size: 896,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            intermediate_size: 4864,
            vocab_size: 151936,
            max_position_embeddings: 32768,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            // config.json ties them, but Qwen's own GGUFs (the files people
            // download, and llama-quantize's input) store output.weight.
            tie_word_embeddings: false,
        }),
    },
];

/// The preset called `name` (or one of its aliases), case-insensitively.
pub fn find(name: &str) -> Option<&'static Preset> {
    let l = name.to_ascii_lowercase();
    PRESETS.iter().find(|p| p.name == l || p.aliases.contains(&l.as_str()))
}

impl Preset {
    pub fn num_hidden_layers(&self) -> usize {
        match &self.config {
            Config::Qwen2(c) => c.num_hidden_layers,
            Config::Deepseek2(c) => c.num_hidden_layers,
        }
    }
    pub fn vocab_size(&self) -> usize {
        match &self.config {
            Config::Qwen2(c) => c.vocab_size,
            Config::Deepseek2(c) => c.vocab_size,
        }
    }
}
