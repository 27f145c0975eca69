//! The DeepSeek V3-style tokenizer against `expected/tokenizer_deepseek_v3.json` in
//! the shared hf-reference fixtures: 46 texts with the ids Hugging Face `tokenizers`
//! gives them (`add_special_tokens=False`) and the decoded text. The same vocabulary
//! is loaded three ways: `tokenizer.json` alone, the folder with its config, and the
//! GGUF that llama.cpp's converter made from it (`tokenizer.ggml.pre = "deepseek-v3"`).

mod common;

use std::path::PathBuf;

use serde_json::Value;
use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::tokenizer::{StreamDecoder, Tokenizer};

struct Case {
    name: String,
    text: String,
    ids: Vec<u32>,
    ids_add_special: Vec<u32>,
    decoded: String,
}

fn fixture() -> Value {
    let path = common::hf_reference().join("expected/tokenizer_deepseek_v3.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn cases() -> Vec<Case> {
    fixture()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            text: c["text"].as_str().unwrap().to_owned(),
            ids: ids(&c["ids"]),
            ids_add_special: ids(&c["ids_add_special_tokens"]),
            decoded: c["decoded"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn tokenizer_dir() -> PathBuf {
    common::hf_reference().join("tokenizer")
}

fn gguf_path() -> PathBuf {
    common::hf_reference().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf")
}

/// Every case: encode gives the fixture's ids, decode gives the fixture's text.
fn check_all_cases(tok: &Tokenizer, source: &str) {
    let cases = cases();
    assert_eq!(cases.len(), 46, "the fixture should have 46 cases");
    let mut failures = Vec::new();
    for c in &cases {
        let got = tok.encode(&c.text, false).unwrap();
        if got != c.ids {
            failures.push(format!("{}: encode {:?}\n   got      {got:?}\n   expected {:?}", c.name, c.text, c.ids));
        }
        let decoded = tok.decode(&c.ids);
        if decoded != c.decoded {
            failures.push(format!("{}: decode gave {decoded:?}, expected {:?}", c.name, c.decoded));
        }
    }
    assert!(
        failures.is_empty(),
        "{source}: {} of {} checks failed:\n{}",
        failures.len(),
        2 * cases.len(),
        failures.join("\n")
    );
}

/// The special ids the fixture lists, looked up by text.
fn check_special_ids(tok: &Tokenizer, source: &str) {
    let f = fixture();
    let specials = f["special_token_ids"].as_object().unwrap();
    assert!(specials.len() >= 6);
    for (text, id) in specials {
        let id = id.as_u64().unwrap() as u32;
        assert_eq!(tok.token_to_id(text), Some(id), "{source}: id of {text}");
        assert_eq!(tok.id_to_token(id).as_deref(), Some(text.as_str()), "{source}: text of {id}");
        assert_eq!(tok.decode(&[id]), *text, "{source}: decode of {text}");
    }
    let bos = specials["<｜begin▁of▁sentence｜>"].as_u64().unwrap() as u32;
    let eos = specials["<｜end▁of▁sentence｜>"].as_u64().unwrap() as u32;
    assert_eq!(tok.bos_id(), Some(bos), "{source}: bos");
    assert_eq!(tok.eos_id(), Some(eos), "{source}: eos");
    assert_eq!(tok.bos_token(), "<｜begin▁of▁sentence｜>");
    assert_eq!(tok.eos_token(), "<｜end▁of▁sentence｜>");
    assert!(tok.is_eog(eos), "{source}: eos must end generation");
    assert!(!tok.is_eog(bos), "{source}: bos must not end generation");
    let user = specials["<｜User｜>"].as_u64().unwrap() as u32;
    assert!(!tok.is_eog(user));
    assert!(tok.is_special(bos) && tok.is_special(eos), "{source}");
    assert_eq!(tok.vocab_size(), f["vocab_size_with_added"].as_u64().unwrap() as usize, "{source}: vocab size");
}

#[test]
fn tokenizer_json_matches_hf_on_all_cases() {
    let tok = Tokenizer::from_tokenizer_json(&tokenizer_dir().join("tokenizer.json")).unwrap();
    check_all_cases(&tok, "tokenizer.json");
    // Without its config the BOS/EOS are found among the special tokens by their texts.
    check_special_ids(&tok, "tokenizer.json");
}

#[test]
fn hf_dir_reads_config() {
    let tok = Tokenizer::from_hf_dir(&tokenizer_dir()).unwrap();
    check_special_ids(&tok, "hf dir");
    // tokenizer_config.json says add_bos_token = false: the chat template writes BOS.
    assert!(!tok.add_bos());
    assert_eq!(tok.pad_id(), tok.eos_id(), "pad_token is the end of sentence");
    assert_eq!(tok.chat_template(), None, "this fixture ships no chat template");
    // With add_special the ids are those HF gives with add_special_tokens=True.
    for c in cases() {
        assert_eq!(tok.encode(&c.text, true).unwrap(), c.ids_add_special, "{}", c.name);
    }
}

#[test]
fn gguf_vocabulary_matches_hf_on_all_cases() {
    let g = GgufFile::open(gguf_path()).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    // (keys.json beside the GGUF says "joyai-llm", an alias with the same splits; the file says this.)
    assert_eq!(tok.pre_tokenizer(), Some("deepseek-v3"));
    assert!(!tok.add_bos());
    assert_eq!(tok.pad_id(), tok.eos_id(), "tokenizer.ggml.padding_token_id");
    check_all_cases(&tok, "GGUF");
    check_special_ids(&tok, "GGUF");
    // The converter marks <｜User｜> control (tokenizer.json: a non-special added token) and
    // <think> user-defined: both are matched whole in text, only the first is special.
    assert!(tok.is_special(tok.token_to_id("<｜User｜>").unwrap()));
    let think = tok.token_to_id("<think>").unwrap();
    assert!(!tok.is_special(think));
    assert_eq!(tok.decode_skip_special(&tok.encode("<｜User｜>hi<think>", false).unwrap()), "hi<think>");
}

#[test]
fn token_bytes_add_up_to_decode() {
    let tok = Tokenizer::from_tokenizer_json(&tokenizer_dir().join("tokenizer.json")).unwrap();
    for c in cases() {
        let bytes: Vec<u8> = c.ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), c.decoded, "{}", c.name);
    }
}

/// Feeds ids one at a time. No piece may contain U+FFFD (the texts have none), and
/// the pieces must add up to the whole decode. At least one case must actually split
/// a character over several tokens, or the test proves nothing.
#[test]
fn stream_decoder_never_splits_a_character() {
    let tok = Tokenizer::from_tokenizer_json(&tokenizer_dir().join("tokenizer.json")).unwrap();
    let mut split_chars = 0;
    let mut texts: Vec<(String, Vec<u32>)> = cases().into_iter().map(|c| (c.name, c.ids)).collect();
    for extra in ["🦀🐋 emoji 👨‍👩‍👧‍👦 and 漢字かなカナ한국어", "零一二三四五六七八九十", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ E⋅da = Q"]
    {
        texts.push((extra.to_owned(), tok.encode(extra, false).unwrap()));
    }
    for (name, ids) in &texts {
        let mut dec = StreamDecoder::new(&tok);
        let mut joined = String::new();
        for &id in ids {
            if std::str::from_utf8(&tok.token_bytes(id)).is_err() {
                split_chars += 1;
            }
            let piece = dec.push(id);
            assert!(!piece.contains('\u{FFFD}'), "{name}: piece {piece:?} after id {id}");
            joined.push_str(&piece);
        }
        let rest = dec.flush();
        assert!(rest.is_empty(), "{name}: {rest:?} left over");
        assert_eq!(joined, tok.decode(ids), "{name}");
    }
    assert!(split_chars > 20, "only {split_chars} tokens held part of a character");
}
