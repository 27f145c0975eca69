//! The vocabularies of the real test models (SmolLM2-135M, Qwen2.5-Coder-0.5B and the
//! DeepSeek-R1-Distill-Qwen-7B header) against what llama.cpp's own tokenizer makes of
//! the same texts: `tests/data/tokenizer/gguf_<model>.json`, written by
//! `gen_gguf_tokenizer_refs.py` beside it. The models come from
//! `scripts/fetch-test-models.sh`; a missing one fails the test.

mod common;

use serde_json::Value;
use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::tokenizer::{StreamDecoder, Tokenizer};

fn reference(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tokenizer/gguf_{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(r: &Value) -> Tokenizer {
    let path = common::cached_model(r["model_file"].as_str().unwrap());
    let g = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Ids with and without BOS, decoded text, special ids, EOG set: all as llama.cpp has them.
fn check_model(name: &str) {
    let r = reference(name);
    let tok = load(&r);
    assert_eq!(tok.pre_tokenizer(), r["tokenizer_ggml_pre"].as_str(), "{name}: pre-tokenizer");
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().unwrap(), "{name}: vocab size");
    assert_eq!(tok.bos_id().map(u64::from), r["bos_id"].as_u64(), "{name}: bos");
    assert_eq!(tok.eos_id().map(u64::from), r["eos_id"].as_u64(), "{name}: eos");
    assert_eq!(tok.add_bos(), r["add_bos"].as_bool().unwrap(), "{name}: add_bos");
    assert_eq!(tok.eog_ids(), ids(&r["eog_ids"]), "{name}: end-of-generation ids");
    assert!(tok.chat_template().is_some(), "{name}: chat template");

    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "{name}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let (case, text) = (c["name"].as_str().unwrap(), c["text"].as_str().unwrap());
        let expected = ids(&c["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != expected {
            failures.push(format!("{case}: encode {text:?}\n   got      {got:?}\n   expected {expected:?}"));
        }
        let expected_special = ids(&c["ids_add_special"]);
        let got_special = tok.encode(text, true).unwrap();
        if got_special != expected_special {
            failures.push(format!(
                "{case}: encode with BOS\n   got      {got_special:?}\n   expected {expected_special:?}"
            ));
        }
        let decoded = tok.decode(&expected);
        if decoded != c["decoded"].as_str().unwrap() {
            failures.push(format!("{case}: decode gave {decoded:?}, expected {:?}", c["decoded"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} checks failed:\n{}",
        failures.len(),
        3 * cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model("smollm2");
}

#[test]
fn qwen2_5_coder_matches_llama_cpp() {
    check_model("qwen2_5_coder");
}

#[test]
fn r1_distill_qwen_matches_llama_cpp() {
    check_model("r1_distill_qwen");
}

/// The ids the task statement gives for llama.cpp, written out by hand.
#[test]
fn known_llama_cpp_ids() {
    let smol = load(&reference("smollm2"));
    assert_eq!(smol.encode("The capital of France is", true).unwrap(), [504, 3575, 282, 4649, 314]);
    let qwen = load(&reference("qwen2_5_coder"));
    assert_eq!(qwen.encode("The capital of France is", false).unwrap(), [785, 6722, 315, 9625, 374]);
}

#[test]
fn special_tokens_and_flags() {
    let smol = load(&reference("smollm2"));
    // SmolLM2's GGUF says tokenizer.ggml.pre = "smollm" (digits split one by one).
    assert_eq!(smol.pre_tokenizer(), Some("smollm"));
    let im_end = smol.token_to_id("<|im_end|>").unwrap();
    assert!(smol.is_eog(im_end) && smol.is_special(im_end));
    assert_eq!(smol.decode_skip_special(&smol.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap()), "user\nhi");

    let r1 = load(&reference("r1_distill_qwen"));
    // R1 adds BOS and its template also writes it: the template text starts with it.
    assert!(r1.add_bos());
    assert_eq!(r1.bos_token(), "<｜begin▁of▁sentence｜>");
    assert_eq!(r1.eos_token(), "<｜end▁of▁sentence｜>");
    let think = r1.token_to_id("<think>").unwrap();
    assert!(!r1.is_special(think), "<think> is user-defined, kept by decode_skip_special");
    assert!(r1.chat_template().unwrap().contains("content.split('</think>')[-1]"));
}

/// Token-by-token decoding of the emoji / CJK / combining-mark cases never emits
/// U+FFFD and adds up to the full decode, for each vocabulary.
#[test]
fn stream_decoding_multibyte() {
    for name in ["smollm2", "qwen2_5_coder", "r1_distill_qwen"] {
        let r = reference(name);
        let tok = load(&r);
        let mut held_partial = 0;
        for c in r["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let ids = ids(&c["ids"]);
            let mut dec = StreamDecoder::new(&tok);
            let mut joined = String::new();
            for &id in &ids {
                if std::str::from_utf8(&tok.token_bytes(id)).is_err() {
                    held_partial += 1;
                }
                let piece = dec.push(id);
                assert!(!piece.contains('\u{FFFD}'), "{name}/{}: {piece:?}", c["name"]);
                joined.push_str(&piece);
            }
            joined.push_str(&dec.flush());
            assert_eq!(joined, tok.decode(&ids), "{name}/{}", c["name"]);
            assert_eq!(joined, text, "{name}/{}", c["name"]);
        }
        assert!(held_partial >= 10, "{name}: only {held_partial} tokens carried part of a character");
    }
}
