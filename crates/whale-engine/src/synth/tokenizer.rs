//! The `tokenizer.*` keys of a synthetic GGUF: copied from a real GGUF, or
//! converted from a Hugging Face `tokenizer.json` the way llama.cpp's
//! `convert_hf_to_gguf.py` does for byte-level BPE vocabularies:
//! tokens in id order (ids nothing names become `[PAD<id>]`, type unused, up
//! to the model's vocabulary size); added tokens marked special, or spelled
//! like `<|…|>` / `<｜…｜>`, are control tokens, other added tokens are
//! user-defined; merges as `"a b"`; BOS/EOS, `add_bos_token` and the chat
//! template from `tokenizer_config.json`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::formats::gguf::{GgufFile, MetaValue};

use super::SynthError;

/// Every `tokenizer.*` key of a GGUF file, in file order.
pub fn from_gguf(f: &GgufFile) -> Vec<(String, MetaValue)> {
    f.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned().collect()
}

fn err(msg: impl Into<String>) -> SynthError {
    SynthError::Tokenizer(msg.into())
}

fn read_text(path: &Path) -> Result<String, SynthError> {
    std::fs::read_to_string(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))
}

fn parse_json(text: &str, what: &str) -> Result<Value, SynthError> {
    serde_json::from_str(text).map_err(|e| err(format!("{what} is not valid JSON: {e}")))
}

/// A token named in `tokenizer_config.json`: a string or `{"content": …}`.
fn token_name(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("content")?.as_str())
}

fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>")) || (t.starts_with("<｜") && t.ends_with("｜>"))
}

/// Converts `dir/tokenizer.json` (and `dir/tokenizer_config.json` when
/// present), padding the vocabulary to `vocab_size` and naming the
/// pre-tokenizer `pre`.
pub fn from_hf_dir(dir: &Path, pre: &str, vocab_size: usize) -> Result<Vec<(String, MetaValue)>, SynthError> {
    let tj = read_text(&dir.join("tokenizer.json"))?;
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.exists() { Some(read_text(&cfg_path)?) } else { None };
    from_hf_json(&tj, cfg.as_deref(), pre, vocab_size)
}

/// [`from_hf_dir`] on the texts of `tokenizer.json` and (when there is one)
/// `tokenizer_config.json`. Any text gives keys or an error (fuzzed).
pub fn from_hf_json(
    tokenizer_json: &str,
    config_json: Option<&str>,
    pre: &str,
    vocab_size: usize,
) -> Result<Vec<(String, MetaValue)>, SynthError> {
    let tj = parse_json(tokenizer_json, "tokenizer.json")?;
    let model = tj.get("model").ok_or_else(|| err("tokenizer.json has no \"model\""))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(err("only BPE tokenizers (tokenizer.json model.type \"BPE\") can be converted"));
    }
    let vocab =
        model.get("vocab").and_then(Value::as_object).ok_or_else(|| err("tokenizer.json has no model.vocab"))?;
    // id → (text, type); 1 normal, 3 control, 4 user-defined, 5 unused.
    let mut by_id: HashMap<usize, (String, i32)> = HashMap::new();
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| err(format!("vocab id of {tok:?} is not a number")))? as usize;
        by_id.insert(id, (tok.clone(), 1));
    }
    for a in tj.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let (Some(id), Some(content)) = (a.get("id").and_then(Value::as_u64), a.get("content").and_then(Value::as_str))
        else {
            return Err(err("an added token lacks \"id\" or \"content\""));
        };
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false) || looks_special(content);
        by_id.insert(id as usize, (content.to_string(), if special { 3 } else { 4 }));
    }
    let n = by_id.keys().map(|&i| i + 1).max().unwrap_or(0).max(vocab_size);
    // A hostile file could name id 10^12: refuse rather than allocate.
    if n > 4 * vocab_size.max(by_id.len()) + 1024 {
        return Err(err(format!("token ids reach {n}, far beyond the {} tokens named", by_id.len())));
    }
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut ids: HashMap<&str, u32> = HashMap::new();
    for id in 0..n {
        match by_id.get(&id) {
            Some((t, ty)) => {
                tokens.push(MetaValue::String(t.clone()));
                types.push(MetaValue::I32(*ty));
            }
            None => {
                tokens.push(MetaValue::String(format!("[PAD{id}]")));
                types.push(MetaValue::I32(5));
            }
        }
    }
    for (id, (t, _)) in &by_id {
        ids.insert(t.as_str(), *id as u32);
    }
    let merges: Vec<MetaValue> = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| err("tokenizer.json has no model.merges"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(MetaValue::String(s.clone())),
            Value::Array(p) if p.len() == 2 && p.iter().all(Value::is_string) => Ok(MetaValue::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            other => Err(err(format!("a merge is neither \"a b\" nor [a, b]: {other}"))),
        })
        .collect::<Result<_, _>>()?;

    let mut out = vec![
        ("tokenizer.ggml.model".to_string(), MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), MetaValue::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), MetaValue::Array(tokens)),
        ("tokenizer.ggml.token_type".to_string(), MetaValue::Array(types)),
        ("tokenizer.ggml.merges".to_string(), MetaValue::Array(merges)),
    ];
    if let Some(text) = config_json {
        let cfg = parse_json(text, "tokenizer_config.json")?;
        for (field, key) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
            ("pad_token", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = cfg.get(field).and_then(token_name).and_then(|t| ids.get(t)) {
                out.push((key.to_string(), MetaValue::U32(*id)));
            }
        }
        for (field, key) in
            [("add_bos_token", "tokenizer.ggml.add_bos_token"), ("add_eos_token", "tokenizer.ggml.add_eos_token")]
        {
            if let Some(b) = cfg.get(field).and_then(Value::as_bool) {
                out.push((key.to_string(), MetaValue::Bool(b)));
            }
        }
        if let Some(t) = cfg.get("chat_template").and_then(Value::as_str) {
            out.push(("tokenizer.chat_template".to_string(), MetaValue::String(t.to_string())));
        }
    }
    Ok(out)
}
