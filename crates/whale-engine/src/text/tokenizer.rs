//! Text ↔ token ids, for byte-level BPE vocabularies (GPT-2 style: Llama 3, Qwen2,
//! DeepSeek V2/V3/R1, SmolLM, …), read from a GGUF or from a Hugging Face folder.
//!
//! # Design
//!
//! **One engine for both sources.** The BPE merge loop, the added-token (special
//! token) matching and the regex pre-tokenization are done by the `tokenizers`
//! crate, the library behind Hugging Face's fast tokenizers:
//!
//! * a `tokenizer.json` is loaded as it is ([`Tokenizer::from_hf_dir`],
//!   [`Tokenizer::from_tokenizer_json`]);
//! * a GGUF vocabulary ([`Tokenizer::from_gguf`]) is turned into the equivalent
//!   `tokenizers` pipeline: a BPE model over `tokenizer.ggml.tokens` and
//!   `tokenizer.ggml.merges` (no byte fallback, no unknown token), a pre-tokenizer
//!   that is a sequence of regex splits ("isolated": matches and the text between
//!   them both become pieces) followed by the GPT-2 byte-to-unicode mapping, and
//!   the control (type 3) and user-defined (type 4) tokens registered as added
//!   tokens so that they are matched whole in the input text.
//!
//! The split regexes depend on `tokenizer.ggml.pre`, the name llama.cpp's
//! converter gives the model's pre-tokenizer. The table [`PRE_TOKENIZERS`] maps
//! each supported name to the regexes of the model's own `tokenizer.json`
//! (where llama.cpp rewrote a regex for its own engine, e.g. `(?i:'s|…)` to
//! `'[sS]|…`, the original is used: `tokenizers` runs it with a real regex
//! engine). An unknown name is an error that lists the known ones, never a silent
//! fallback, because a wrong split gives plausible but different ids.
//! `ignore_merges` (a word that is itself in the vocabulary is taken whole,
//! without running the merges) is set for the Llama 3 family, as in both HF's
//! `tokenizer.json` for those models and llama.cpp.
//!
//! **Special tokens in the text are parsed.** `encode` finds control tokens such
//! as `<|im_start|>` or `<｜User｜>` written in the text and emits their single
//! id, like llama.cpp with `parse_special = true` and HF tokenizers with added
//! tokens. This is what a rendered chat template needs. (Text from an untrusted
//! user that must not be able to inject control tokens has to be escaped before.)
//! BOS/EOS are added by `encode(text, true)` only when the vocabulary asks for it
//! (`tokenizer.ggml.add_bos_token`, `add_bos_token` in `tokenizer_config.json`,
//! or a Hugging Face post-processor that prepends BOS); the chat templates of
//! many models write the BOS text themselves, so callers check for that.
//!
//! **Decoding is done here, not by `tokenizers`.** [`Tokenizer::token_bytes`] maps
//! a token back to the raw bytes it stands for: a normal token through the
//! inverse GPT-2 byte mapping (falling back to the UTF-8 of its text if a
//! character is outside that alphabet, as HF's ByteLevel decoder does), a
//! control, user-defined, unused or unknown token as its text. `decode`
//! concatenates those bytes and converts once, lossily, so a character split over
//! several byte tokens comes out whole. `decode` skips nothing: special tokens
//! appear as their text (`<|im_end|>`), which is what a transcript or a debugging
//! print wants and what HF's `decode(ids)` returns;
//! [`Tokenizer::decode_skip_special`] drops control/unused/unknown tokens (HF's
//! `skip_special_tokens=True`; user-defined tokens such as `<think>` are kept, as
//! there). No whitespace clean-up is applied. [`StreamDecoder`] does the same
//! incrementally and never emits half a character.
//!
//! **End of generation.** [`Tokenizer::is_eog`] follows llama.cpp's EOG set: the
//! EOS, EOT and EOM ids from the metadata, every token whose text is one of the
//! well-known end markers ([`EOG_TEXTS`]), the fill-in-the-middle pad, repo and
//! file-separator tokens (`<|fim_pad|>`, `<|repo_name|>`, `<|file_sep|>`: a chat
//! model that emits one has left the conversation), and for Hugging Face folders
//! every id in `generation_config.json`'s `eos_token_id`.
//!
//! SentencePiece (`tokenizer.ggml.model = "llama"`), WordPiece and Unigram
//! vocabularies are not supported yet: they are rejected with a clear error.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::formats::gguf::{GgufFile, MetaValue};

/// The character [`Tokenizer::guard_text`] puts inside a marker's spelling
/// to keep it text: U+FDD0, a Unicode noncharacter (reserved for internal
/// use, never assigned). It is removed from request text before guarding.
pub const TEXT_GUARD: char = '\u{FDD0}';

/// Why a tokenizer could not be built or could not encode.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the GGUF has no tokenizer key `{0}`")]
    MissingKey(String),
    #[error("GGUF key `{key}` should be {expected}, found {found}")]
    BadKey { key: String, expected: &'static str, found: String },
    #[error(
        "unsupported tokenizer.ggml.model \"{0}\": only \"gpt2\" (byte-level BPE) is supported; \
         \"llama\" (SentencePiece) and other vocabulary types are not supported yet"
    )]
    UnsupportedModel(String),
    #[error("unknown pre-tokenizer \"{name}\" (tokenizer.ggml.pre); known: {known}")]
    UnknownPreTokenizer { name: String, known: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("invalid vocabulary: {0}")]
    Invalid(String),
    #[error("tokenization failed: {0}")]
    Encode(String),
}

/// What a vocabulary entry is, with the numbering of `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An ordinary BPE token, spelled in the byte-level alphabet (type 1; 0 is read as 1).
    Normal,
    /// The unknown token (type 2).
    Unknown,
    /// A control token such as `<|im_end|>` (type 3; HF: an added token with `special: true`).
    Control,
    /// A user-defined token such as `<think>` (type 4; HF: an added token with `special: false`).
    UserDefined,
    /// A padding entry that no text maps to (type 5), or an id with no entry at all.
    Unused,
    /// A byte token `<0xNN>` (type 6).
    Byte,
}

impl TokenKind {
    fn from_gguf(t: i64) -> TokenKind {
        match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// One supported `tokenizer.ggml.pre` family.
pub struct PreTokenizerSpec {
    /// The names llama.cpp's converter writes for this family.
    pub names: &'static [&'static str],
    /// Regexes applied in turn, each splitting the pieces the previous one left.
    pub regexes: &'static [&'static str],
    /// Take a word whole when it is in the vocabulary (HF `ignore_merges`).
    pub ignore_merges: bool,
    /// Whether BOS is added when the GGUF has no `tokenizer.ggml.add_bos_token`.
    pub add_bos_default: bool,
}

/// The regex of GPT-2's byte-level BPE (HF `ByteLevel` pre-tokenizer with `use_regex`).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's `tokenizer.json` split (numbers in groups of up to three digits).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's `tokenizer.json` split (every digit on its own).
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek V3's three splits: digit groups, runs of CJK ideographs and kana, then words.
const DEEPSEEK_V3_REGEXES: &[&str] = &[
    r"\p{N}{1,3}",
    "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
/// DeepSeek LLM (V1, V2, V2-Lite) splits. The second class lists cased letters; the
/// characters that Unicode normalization would replace by others (Ohm and Kelvin signs,
/// some Greek) are written as escapes so that no editor or tool can silently change them.
const DEEPSEEK_LLM_REGEXES: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1f7d}ᾀ-ᾴᾶ-ᾼ\u{1fbe}ῂ-ῄῆ-ῌῐ-\u{1fd3}ῖ-\u{1fdb}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212a}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
];
/// DeepSeek Coder (V1) splits.
const DEEPSEEK_CODER_REGEXES: &[&str] = &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"];

/// The supported `tokenizer.ggml.pre` values and their splits.
pub const PRE_TOKENIZERS: &[PreTokenizerSpec] = &[
    // llama.cpp's fallback for a BPE vocabulary, also used when the key is absent.
    PreTokenizerSpec {
        names: &["default"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", "[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &["gpt-2", "phi-2", "mpt", "olmo"],
        regexes: &[GPT2_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
    // HF: Digits(individual_digits) then ByteLevel(use_regex).
    PreTokenizerSpec {
        names: &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
        regexes: &[r"\p{N}", GPT2_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"],
        regexes: &[LLAMA3_REGEX],
        ignore_merges: true,
        add_bos_default: true,
    },
    PreTokenizerSpec {
        names: &["dbrx", "smaug-bpe"],
        regexes: &[LLAMA3_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan", "kormo"],
        regexes: &[QWEN2_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
    // `joyai-llm` is what current llama.cpp converters write for the DeepSeek
    // V3/V4 tokenizer (same splits as `deepseek-v3`).
    PreTokenizerSpec {
        names: &["deepseek-v3", "joyai-llm", "hunyuan-dense"],
        regexes: DEEPSEEK_V3_REGEXES,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &["deepseek-llm"],
        regexes: DEEPSEEK_LLM_REGEXES,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &["deepseek-coder"],
        regexes: DEEPSEEK_CODER_REGEXES,
        ignore_merges: false,
        add_bos_default: false,
    },
];

/// Looks up a `tokenizer.ggml.pre` value.
pub fn pre_tokenizer_spec(name: &str) -> Option<&'static PreTokenizerSpec> {
    PRE_TOKENIZERS.iter().find(|s| s.names.contains(&name))
}

fn known_pre_tokenizers() -> String {
    PRE_TOKENIZERS.iter().flat_map(|s| s.names.iter().copied()).collect::<Vec<_>>().join(", ")
}

/// Token texts that end a generation wherever they are in the vocabulary
/// (llama.cpp's list, plus DeepSeek's end of sentence).
pub const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

/// Fill-in-the-middle pad / repository / file-separator tokens, which llama.cpp
/// also counts as end of generation.
const FIM_EOG_TEXTS: &[&str] = &["<|fim_pad|>", "<|fim_repo|>", "<|repo_name|>", "<|file_sep|>"];

/// BOS / EOS texts tried when a `tokenizer.json` comes without its config.
const BOS_GUESSES: &[&str] = &["<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<|startoftext|>", "<s>", "<bos>"];
const EOS_GUESSES: &[&str] = &["<｜end▁of▁sentence｜>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"];

// ---------------------------------------------------------------------------
// GPT-2 byte ↔ unicode mapping

/// Whether byte `b` stands for itself in the byte-level alphabet (printable
/// Latin-1 apart from the soft hyphen).
const fn byte_is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 bytes that are not printable, in increasing order: the n-th is
/// spelled as the character U+0100 + n.
const SHIFTED_BYTES: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !byte_is_printable(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

/// The byte a byte-level character stands for.
fn char_to_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 && byte_is_printable(u as u8) {
        Some(u as u8)
    } else if (256..256 + SHIFTED_BYTES.len() as u32).contains(&u) {
        Some(SHIFTED_BYTES[(u - 256) as usize])
    } else {
        None
    }
}

/// Bytes of a token spelled in the byte-level alphabet; `None` if a character is outside it.
fn byte_level_decode(text: &str) -> Option<Vec<u8>> {
    text.chars().map(char_to_byte).collect()
}

/// The byte of a `<0xNN>` token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

// ---------------------------------------------------------------------------

/// A byte-level BPE tokenizer with the model's special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Vocabulary strings by id ("" where an id has no entry).
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    eog: HashSet<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
    pre: Option<String>,
    /// Spellings of control and user-defined tokens (`true`: control), for
    /// [`Tokenizer::guard_text`].
    markers: Vec<(String, bool)>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("chat_template", &self.chat_template.as_ref().map(|t| t.len()))
            .finish()
    }
}

fn meta_type(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => match a.first() {
            Some(x) => format!("an array of {}", x.type_name()),
            None => "an empty array".into(),
        },
        other => format!("a {}", other.type_name()),
    }
}

fn gguf_string_array(g: &GgufFile, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(v) = g.get(key) else { return Ok(None) };
    let bad = || TokenizerError::BadKey { key: key.into(), expected: "an array of strings", found: meta_type(v) };
    let arr = v.as_array().ok_or_else(bad)?;
    arr.iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(bad)).collect::<Result<Vec<_>, _>>().map(Some)
}

fn gguf_token_id(g: &GgufFile, key: &str, n_vocab: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = g.get(key) else { return Ok(None) };
    let id = v.as_i64().ok_or_else(|| TokenizerError::BadKey {
        key: key.into(),
        expected: "an integer token id",
        found: meta_type(v),
    })?;
    // -1 (or any negative value) is how some converters write "none".
    if id < 0 {
        return Ok(None);
    }
    if id as u64 >= n_vocab as u64 {
        return Err(TokenizerError::Invalid(format!("{key} = {id} is outside the vocabulary of {n_vocab} tokens")));
    }
    Ok(Some(id as u32))
}

fn gguf_bool(g: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    let Some(v) = g.get(key) else { return Ok(None) };
    v.as_bool().map(Some).ok_or_else(|| TokenizerError::BadKey {
        key: key.into(),
        expected: "a bool",
        found: meta_type(v),
    })
}

fn read_json(path: &Path) -> Result<Json, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.into(), source })
}

fn read_json_opt(path: &Path) -> Result<Option<Json>, TokenizerError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The text of a special-token entry in `tokenizer_config.json`: a string or an
/// `AddedToken` object with `content`.
fn config_token_text(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// Whether a `tokenizer.json` component (decoder or pre-tokenizer) is, or contains, ByteLevel.
fn has_byte_level(v: &Json) -> bool {
    match v.get("type").and_then(Json::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => ["decoders", "pretokenizers"]
            .iter()
            .filter_map(|k| v.get(*k).and_then(Json::as_array))
            .flatten()
            .any(has_byte_level),
        _ => false,
    }
}

/// The special token a `TemplateProcessing` post-processor puts first, if any
/// (how Llama 3's `tokenizer.json` adds `<|begin_of_text|>`).
fn post_processor_bos(pp: &Json) -> Option<&str> {
    match pp.get("type").and_then(Json::as_str)? {
        "TemplateProcessing" => {
            let first = pp.get("single")?.as_array()?.first()?;
            first.get("SpecialToken")?.get("id")?.as_str()
        }
        "Sequence" => pp.get("processors")?.as_array()?.iter().find_map(post_processor_bos),
        _ => None,
    }
}

/// Ids listed under `eos_token_id` in `generation_config.json` / `config.json` (an int or a list).
fn json_ids(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_u64).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

/// A `chat_template` value of `tokenizer_config.json`: a string, or a list of
/// `{name, template}` from which "default" is taken.
fn config_chat_template(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => {
            let named = |name: &str| {
                list.iter().find(|e| e.get("name").and_then(Json::as_str) == Some(name))?.get("template")?.as_str()
            };
            named("default").map(str::to_owned)
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Builds the tokenizer embedded in a GGUF (`tokenizer.ggml.*`,
    /// `tokenizer.chat_template`). Only byte-level BPE (`tokenizer.ggml.model =
    /// "gpt2"`) is supported.
    pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model_key = "tokenizer.ggml.model";
        let model = g.get(model_key).ok_or_else(|| TokenizerError::MissingKey(model_key.into()))?;
        let model = model.as_str().ok_or_else(|| TokenizerError::BadKey {
            key: model_key.into(),
            expected: "a string",
            found: meta_type(model),
        })?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.into()));
        }

        let pre = match g.get("tokenizer.ggml.pre") {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| TokenizerError::BadKey {
                key: "tokenizer.ggml.pre".into(),
                expected: "a string",
                found: meta_type(v),
            })?),
        };
        let pre_name = pre.unwrap_or("default");
        let spec = pre_tokenizer_spec(pre_name).ok_or_else(|| TokenizerError::UnknownPreTokenizer {
            name: pre_name.into(),
            known: known_pre_tokenizers(),
        })?;

        let tokens = gguf_string_array(g, "tokenizer.ggml.tokens")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.tokens".into()))?;
        if tokens.is_empty() {
            return Err(TokenizerError::Invalid("tokenizer.ggml.tokens is empty".into()));
        }
        let n = tokens.len();
        let kinds: Vec<TokenKind> = match g.get("tokenizer.ggml.token_type") {
            None => vec![TokenKind::Normal; n],
            Some(v) => {
                let bad = || TokenizerError::BadKey {
                    key: "tokenizer.ggml.token_type".into(),
                    expected: "an array of integers",
                    found: meta_type(v),
                };
                let arr = v.as_array().ok_or_else(bad)?;
                if arr.len() != n {
                    return Err(TokenizerError::Invalid(format!(
                        "tokenizer.ggml.token_type has {} entries for {n} tokens",
                        arr.len()
                    )));
                }
                arr.iter().map(|t| t.as_i64().map(TokenKind::from_gguf).ok_or_else(bad)).collect::<Result<_, _>>()?
            }
        };
        let merges = gguf_string_array(g, "tokenizer.ggml.merges")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.merges".into()))?;
        let merges = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_owned(), b.to_owned())),
                None => {
                    Err(TokenizerError::Invalid(format!("merge {i} ({m:?}) is not two tokens separated by a space")))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Where a string occurs twice the first id wins (inserted last).
        let vocab: BpeVocab = tokens.iter().enumerate().rev().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(false)
            .ignore_merges(spec.ignore_merges)
            .build()
            .map_err(|e| TokenizerError::Invalid(format!("cannot build the BPE model: {e}")))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(build_pre_tokenizer(spec.regexes)?));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&kinds)
            .filter(|(t, k)| !t.is_empty() && matches!(k, TokenKind::Control | TokenKind::Unknown))
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&kinds)
            .filter(|(t, k)| !t.is_empty() && **k == TokenKind::UserDefined)
            .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
            .collect();
        inner.add_special_tokens(special).map_err(|e| TokenizerError::Invalid(format!("special tokens: {e}")))?;
        inner.add_tokens(user).map_err(|e| TokenizerError::Invalid(format!("user-defined tokens: {e}")))?;

        let bos = gguf_token_id(g, "tokenizer.ggml.bos_token_id", n)?;
        let eos = gguf_token_id(g, "tokenizer.ggml.eos_token_id", n)?;
        let pad = gguf_token_id(g, "tokenizer.ggml.padding_token_id", n)?;
        let mut eog_ids: Vec<u32> = eos.into_iter().collect();
        for key in [
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
            "tokenizer.ggml.fim_pad_token_id",
            "tokenizer.ggml.fim_rep_token_id",
            "tokenizer.ggml.fim_sep_token_id",
        ] {
            eog_ids.extend(gguf_token_id(g, key, n)?);
        }
        let add_bos = gguf_bool(g, "tokenizer.ggml.add_bos_token")?.unwrap_or(spec.add_bos_default);
        let add_eos = gguf_bool(g, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let chat_template = g.get_str("tokenizer.chat_template").map(str::to_owned);

        Ok(Tokenizer::assemble(Parts {
            inner,
            tokens,
            kinds,
            bos,
            eos,
            pad,
            eog_ids,
            add_bos,
            add_eos,
            chat_template,
            pre: pre.map(str::to_owned),
        }))
    }

    /// Loads a Hugging Face model folder: `tokenizer.json`, plus
    /// `tokenizer_config.json` (BOS/EOS tokens, `add_bos_token`, `add_eos_token`,
    /// `chat_template` as a string or a list of `{name, template}` from which
    /// "default" is used), `chat_template.jinja` / `chat_template.json` when the
    /// config has no template, and `generation_config.json`'s `eos_token_id`
    /// (an int or a list; every id counts as end of generation).
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let config = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let gen_config = read_json_opt(&dir.join("generation_config.json"))?;
        let mut chat_template = config.as_ref().and_then(|c| config_chat_template(c.get("chat_template")));
        if chat_template.is_none() {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                let t = std::fs::read_to_string(&jinja).map_err(|source| TokenizerError::Io { path: jinja, source })?;
                chat_template = Some(t);
            } else if let Some(j) = read_json_opt(&dir.join("chat_template.json"))? {
                chat_template = config_chat_template(j.get("chat_template"));
            }
        }
        Self::from_hf_parts(&dir.join("tokenizer.json"), config.as_ref(), gen_config.as_ref(), chat_template)
    }

    /// Loads a `tokenizer.json` without its config. BOS is taken from a
    /// post-processor that prepends one; otherwise BOS and EOS are looked up
    /// among the added special tokens by their usual texts
    /// (`<｜begin▁of▁sentence｜>`, `<|begin_of_text|>`, `<s>`, …).
    pub fn from_tokenizer_json(path: &Path) -> Result<Tokenizer, TokenizerError> {
        Self::from_hf_parts(path, None, None, None)
    }

    fn from_hf_parts(
        path: &Path,
        config: Option<&Json>,
        gen_config: Option<&Json>,
        chat_template: Option<String>,
    ) -> Result<Tokenizer, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.into(), source })?;
        let json: Json =
            serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.into(), source })?;
        let bad = |message: String| TokenizerError::BadFile { path: path.into(), message };

        let model_type = json.get("model").and_then(|m| m.get("type")).and_then(Json::as_str).unwrap_or("?");
        if model_type != "BPE" {
            return Err(bad(format!("model type \"{model_type}\" is not supported; only byte-level BPE is")));
        }
        let byte_level =
            json.get("decoder").is_some_and(has_byte_level) || json.get("pre_tokenizer").is_some_and(has_byte_level);
        if !byte_level {
            return Err(bad("only byte-level BPE (a ByteLevel decoder or pre-tokenizer) is supported".into()));
        }

        let inner: tokenizers::Tokenizer = text.parse().map_err(|e| bad(format!("cannot load: {e}")))?;
        drop(text);

        let vocab = inner.get_vocab(true);
        let n = vocab.values().copied().max().map_or(0, |m| m as usize + 1);
        let mut tokens = vec![String::new(); n];
        let mut kinds = vec![TokenKind::Unused; n];
        for (t, id) in vocab {
            kinds[id as usize] = TokenKind::Normal;
            tokens[id as usize] = t;
        }
        for added in json.get("added_tokens").and_then(Json::as_array).into_iter().flatten() {
            let (Some(id), Some(content)) =
                (added.get("id").and_then(Json::as_u64), added.get("content").and_then(Json::as_str))
            else {
                continue;
            };
            let Some(slot) = kinds.get_mut(id as usize) else { continue };
            *slot = if added.get("special").and_then(Json::as_bool).unwrap_or(false) {
                TokenKind::Control
            } else {
                TokenKind::UserDefined
            };
            tokens[id as usize] = content.to_owned();
        }

        let lookup = |t: &str| inner.token_to_id(t);
        let special_lookup = |t: &str| lookup(t).filter(|&id| kinds.get(id as usize) == Some(&TokenKind::Control));
        let pp_bos = json.get("post_processor").and_then(post_processor_bos);
        let pad = config.and_then(|c| config_token_text(c.get("pad_token"))).and_then(lookup);
        let (bos, eos, add_bos, add_eos) = match config {
            Some(c) => {
                let bos = config_token_text(c.get("bos_token")).and_then(lookup);
                let eos = config_token_text(c.get("eos_token")).and_then(lookup);
                let add_bos = c.get("add_bos_token").and_then(Json::as_bool).unwrap_or(pp_bos.is_some());
                let add_eos = c.get("add_eos_token").and_then(Json::as_bool).unwrap_or(false);
                (bos.or_else(|| pp_bos.and_then(lookup)), eos, add_bos, add_eos)
            }
            None => {
                let bos = pp_bos.and_then(lookup).or_else(|| BOS_GUESSES.iter().find_map(|t| special_lookup(t)));
                let eos = EOS_GUESSES.iter().find_map(|t| special_lookup(t));
                (bos, eos, pp_bos.is_some(), false)
            }
        };
        let gen_eos = gen_config.map(|g| json_ids(g.get("eos_token_id"))).unwrap_or_default();
        let eos = eos.or_else(|| gen_eos.first().copied());
        let mut eog_ids: Vec<u32> = eos.into_iter().chain(gen_eos).filter(|&id| (id as usize) < n).collect();
        eog_ids.sort_unstable();
        eog_ids.dedup();

        Ok(Tokenizer::assemble(Parts {
            inner,
            tokens,
            kinds,
            bos,
            eos,
            pad,
            eog_ids,
            add_bos,
            add_eos,
            chat_template,
            pre: None,
        }))
    }

    fn assemble(p: Parts) -> Tokenizer {
        let mut eog: HashSet<u32> = p.eog_ids.into_iter().collect();
        for text in EOG_TEXTS.iter().chain(FIM_EOG_TEXTS) {
            if let Some(id) = p.inner.token_to_id(text) {
                eog.insert(id);
            }
        }
        let markers = p
            .tokens
            .iter()
            .zip(&p.kinds)
            .filter(|(t, _)| !t.is_empty())
            .filter_map(|(t, k)| match k {
                TokenKind::Control => Some((t.clone(), true)),
                TokenKind::UserDefined => Some((t.clone(), false)),
                _ => None,
            })
            .collect();
        Tokenizer {
            markers,
            inner: p.inner,
            tokens: p.tokens,
            kinds: p.kinds,
            bos: p.bos,
            eos: p.eos,
            pad: p.pad,
            eog,
            add_bos: p.add_bos,
            add_eos: p.add_eos,
            chat_template: p.chat_template,
            pre: p.pre,
        }
    }

    /// Tokenizes `text`. Special tokens written in the text are recognised.
    /// With `add_special`, BOS is prepended if the vocabulary asks for it
    /// ([`Tokenizer::add_bos`]) and has one, and EOS appended likewise.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_pieces(std::iter::once(text), add_special)
    }

    /// The pieces encoded one after the other, between BOS and EOS as
    /// [`Tokenizer::encode`] adds them.
    fn encode_pieces<'a>(
        &self,
        pieces: impl Iterator<Item = &'a str>,
        add_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        for piece in pieces {
            let enc = self.inner.encode_fast(piece, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
            ids.extend_from_slice(enc.get_ids());
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included as their text (`<|im_end|>`).
    /// Bytes that are not valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.append_bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Like [`Tokenizer::decode`] without the special tokens (control, unused and
    /// unknown; user-defined tokens such as `<think>` stay).
    pub fn decode_skip_special(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids.iter().filter(|&&id| !self.is_special(id)) {
            self.append_bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes token `id` stands for (empty for an id outside the vocabulary).
    /// A byte-level token may be part of a UTF-8 character.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_bytes(id, &mut out);
        out
    }

    fn append_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let i = id as usize;
        let Some(text) = self.tokens.get(i) else { return };
        match self.kinds[i] {
            TokenKind::Normal => match byte_level_decode(text) {
                Some(b) => out.extend_from_slice(&b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            TokenKind::Byte => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            _ => out.extend_from_slice(text.as_bytes()),
        }
    }

    /// The vocabulary string of `id` (byte-level spelling for normal tokens, e.g. `Ġthe`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokens.get(id as usize).filter(|t| !t.is_empty()).cloned()
    }

    /// The id of a vocabulary string, or of an added/special token's text.
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    /// Number of ids (the largest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// What kind of entry `id` is; `None` outside the vocabulary.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The padding token (`tokenizer.ggml.padding_token_id`, `pad_token`), if any.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether generating `id` ends the turn (see the module docs for the set).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.eog.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Whether `encode(text, true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether `encode(text, true)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// The Jinja chat template the model ships, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// `tokenizer.ggml.pre` of a GGUF vocabulary (`None` for `tokenizer.json`).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        self.pre.as_deref()
    }

    /// The BOS text, for chat templates ("" if there is none).
    pub fn bos_token(&self) -> String {
        self.bos.map(|id| self.decode(&[id])).unwrap_or_default()
    }

    /// The EOS text, for chat templates ("" if there is none).
    pub fn eos_token(&self) -> String {
        self.eos.map(|id| self.decode(&[id])).unwrap_or_default()
    }

    /// `s` with every spelling of a control token (and, with
    /// `user_defined_too`, of a user-defined token such as `<tool_call>` or
    /// `<think>`) broken by [`TEXT_GUARD`] after its first character, so
    /// that [`Tokenizer::encode_guarded`] reads it as text, never as the
    /// token: what a request writes cannot end a turn or open one. Text
    /// without such spellings comes back unchanged.
    pub fn guard_text(&self, s: &str, user_defined_too: bool) -> String {
        let mut out = s.replace(TEXT_GUARD, "");
        for (text, control) in &self.markers {
            if !(*control || user_defined_too) || !out.contains(text.as_str()) {
                continue;
            }
            let first = text.chars().next().map_or(0, char::len_utf8);
            let broken = format!("{}{TEXT_GUARD}{}", &text[..first], &text[first..]);
            out = out.replace(text.as_str(), &broken);
        }
        out
    }

    /// [`Tokenizer::encode`] of text in which [`Tokenizer::guard_text`] broke
    /// markers: the text is encoded in pieces split at each guard (which is
    /// dropped), so a broken marker is tokenized as text on either side.
    /// Text with no guard is encoded exactly as `encode` does.
    pub fn encode_guarded(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_pieces(text.split(TEXT_GUARD), add_special)
    }

    /// Control, unused and unknown tokens: what `decode_skip_special` drops.
    pub fn is_special(&self, id: u32) -> bool {
        matches!(self.token_kind(id), Some(TokenKind::Control | TokenKind::Unused | TokenKind::Unknown))
    }
}

struct Parts {
    inner: tokenizers::Tokenizer,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    eog_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
    pre: Option<String>,
}

fn build_pre_tokenizer(regexes: &[&str]) -> Result<Sequence, TokenizerError> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for r in regexes {
        let split = Split::new(SplitPattern::Regex((*r).to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| TokenizerError::Invalid(format!("bad pre-tokenizer regex {r:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps))
}

/// Turns ids into text one at a time, for streaming output. Each call returns
/// only complete UTF-8 characters: the bytes of a character split over several
/// tokens (emoji, CJK in byte-level vocabularies) are held until it is complete.
/// Bytes that can never form a character become U+FFFD at once, the same way
/// [`Tokenizer::decode`] treats them, so the pieces always add up to `decode` of
/// all the ids.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
    skip_special: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that renders special tokens as their text, like [`Tokenizer::decode`].
    pub fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder { tok, pending: Vec::new(), skip_special: false }
    }

    /// A decoder that drops special tokens, like [`Tokenizer::decode_skip_special`].
    pub fn skipping_special(tok: &'a Tokenizer) -> Self {
        StreamDecoder { tok, pending: Vec::new(), skip_special: true }
    }

    /// Adds one token; returns the text completed by it (often "", never half a character).
    pub fn push(&mut self, id: u32) -> String {
        if self.skip_special && self.tok.is_special(id) {
            return String::new();
        }
        self.tok.append_bytes(id, &mut self.pending);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still held (an unfinished character becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        // Every byte has exactly one character, and the characters are those of GPT-2's table:
        // printable Latin-1 as itself, the 68 others from U+0100 on (space is U+0120 'Ġ').
        let mut seen = [false; 256];
        for c in (0u32..0x200).filter_map(char::from_u32) {
            if let Some(b) = char_to_byte(c) {
                assert!(!seen[b as usize], "byte {b} twice");
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(char_to_byte('Ġ'), Some(b' '));
        assert_eq!(char_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(char_to_byte('ĉ'), Some(b'\t'));
        assert_eq!(char_to_byte('A'), Some(b'A'));
        assert_eq!(char_to_byte('｜'), None);
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xFF>"), Some(255));
        assert_eq!(parse_byte_token("<0x0>"), None);
        assert_eq!(parse_byte_token("0x0A"), None);
    }

    #[test]
    fn all_pre_tokenizer_regexes_compile() {
        for spec in PRE_TOKENIZERS {
            build_pre_tokenizer(spec.regexes).unwrap_or_else(|e| panic!("{:?}: {e}", spec.names));
        }
    }

    #[test]
    fn pre_tokenizer_names_are_unique() {
        let mut names: Vec<&str> = PRE_TOKENIZERS.iter().flat_map(|s| s.names.iter().copied()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
