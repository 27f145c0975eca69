//! Tokenizers built from small hand-made GGUF images: the error messages for bad or
//! unsupported vocabularies, and the BOS/EOS and token-kind rules on a toy vocabulary
//! whose expected ids are worked out by hand.

use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::tokenizer::{TokenKind, Tokenizer, TokenizerError};

enum V {
    Str(&'static str),
    U32(u32),
    Bool(bool),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 image with these key/values and no tensors.
fn gguf(kvs: &[(&str, V)]) -> GgufFile {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        match v {
            V::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            V::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            V::Bool(b) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(*b as u8);
            }
            V::Strs(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            V::I32s(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for x in items {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    GgufFile::from_bytes(out).expect("test GGUF parses")
}

/// GPT-2's spelling of each byte: printable Latin-1 as itself, the rest from U+0100 on.
fn byte_chars() -> Vec<String> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut next = 0x100;
    (0u32..256)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

/// Ids 0..256: the bytes (so 'a' = 97, ' ' = 32 spelled 'Ġ'); then "Ġa" (256), "ab" (257),
/// "<s>" (258, control), "</s>" (259, control), "<think>" (260, user-defined), "[PAD]" (261, unused).
fn toy(extra: Vec<(&str, V)>) -> GgufFile {
    let mut tokens = byte_chars();
    tokens.extend(["Ġa", "ab", "<s>", "</s>", "<think>", "[PAD]"].map(String::from));
    let mut types = vec![1i32; 256];
    types.extend([1, 1, 3, 3, 4, 5]);
    let mut kvs = vec![
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.tokens", V::Strs(tokens)),
        ("tokenizer.ggml.token_type", V::I32s(types)),
        ("tokenizer.ggml.merges", V::Strs(vec!["Ġ a".into(), "a b".into()])),
        ("tokenizer.ggml.bos_token_id", V::U32(258)),
        ("tokenizer.ggml.eos_token_id", V::U32(259)),
    ];
    kvs.extend(extra);
    gguf(&kvs)
}

fn err(g: &GgufFile) -> TokenizerError {
    Tokenizer::from_gguf(g).expect_err("should be rejected")
}

#[test]
fn sentencepiece_is_not_supported_yet() {
    let e = err(&gguf(&[("tokenizer.ggml.model", V::Str("llama"))]));
    assert!(matches!(e, TokenizerError::UnsupportedModel(ref m) if m == "llama"), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("\"llama\" (SentencePiece)") && msg.contains("not supported yet"), "{msg}");
}

#[test]
fn missing_keys_are_named() {
    let e = err(&gguf(&[]));
    assert_eq!(e.to_string(), "the GGUF has no tokenizer key `tokenizer.ggml.model`");
    let e = err(&gguf(&[("tokenizer.ggml.model", V::Str("gpt2")), ("tokenizer.ggml.pre", V::Str("qwen2"))]));
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
}

#[test]
fn unknown_pre_tokenizer_lists_the_known_ones() {
    let e = err(&toy(vec![("tokenizer.ggml.pre", V::Str("no-such-model"))]));
    let msg = e.to_string();
    assert!(msg.contains("unknown pre-tokenizer \"no-such-model\""), "{msg}");
    for known in ["default", "gpt-2", "smollm", "llama-bpe", "qwen2", "deepseek-r1-qwen", "deepseek-v3"] {
        assert!(msg.contains(known), "{known} missing from: {msg}");
    }
}

#[test]
fn wrong_types_and_ranges_are_reported() {
    let e = err(&gguf(&[("tokenizer.ggml.model", V::U32(2))]));
    assert!(e.to_string().contains("`tokenizer.ggml.model` should be a string"), "{e}");
    let e =
        err(&toy(vec![("tokenizer.ggml.padding_token_id", V::U32(0)), ("tokenizer.ggml.eot_token_id", V::U32(9999))]));
    assert!(e.to_string().contains("tokenizer.ggml.eot_token_id = 9999 is outside the vocabulary of 262"), "{e}");
}

#[test]
fn toy_vocabulary_rules() {
    // No tokenizer.ggml.pre: llama.cpp's "default" split; no add_bos key: no BOS.
    let tok = Tokenizer::from_gguf(&toy(vec![])).unwrap();
    assert_eq!(tok.pre_tokenizer(), None);
    assert!(!tok.add_bos());
    // "ab" merges; " a" merges; "<s>" in text is the control token; "<think>" the user-defined one.
    assert_eq!(tok.encode("ab a<s><think>", true).unwrap(), [257, 256, 258, 260]);
    assert_eq!(tok.decode(&[257, 256, 258, 260, 261]), "ab a<s><think>[PAD]");
    assert_eq!(tok.decode_skip_special(&[257, 258, 260, 261, 259]), "ab<think>");
    assert_eq!(tok.token_kind(258), Some(TokenKind::Control));
    assert_eq!(tok.token_kind(260), Some(TokenKind::UserDefined));
    assert_eq!(tok.token_kind(261), Some(TokenKind::Unused));
    assert_eq!(tok.token_kind(262), None);
    assert_eq!(tok.token_bytes(32), b" ");
    assert_eq!(tok.token_bytes(0xe4), [0xe4]);
    assert_eq!(tok.id_to_token(256).as_deref(), Some("Ġa"));
    assert_eq!(tok.token_to_id("Ġa"), Some(256));
    assert!(tok.is_eog(259) && !tok.is_eog(258));
    assert_eq!((tok.bos_token().as_str(), tok.eos_token().as_str()), ("<s>", "</s>"));

    // The flags add BOS and EOS.
    let tok = Tokenizer::from_gguf(&toy(vec![
        ("tokenizer.ggml.pre", V::Str("gpt-2")),
        ("tokenizer.ggml.add_bos_token", V::Bool(true)),
        ("tokenizer.ggml.add_eos_token", V::Bool(true)),
    ]))
    .unwrap();
    assert_eq!(tok.encode("ab", true).unwrap(), [258, 257, 259]);
    assert_eq!(tok.encode("ab", false).unwrap(), [257]);
    assert_eq!(tok.encode("", true).unwrap(), [258, 259]);
    // The Llama 3 family adds BOS unless told otherwise.
    let tok = Tokenizer::from_gguf(&toy(vec![("tokenizer.ggml.pre", V::Str("llama-bpe"))])).unwrap();
    assert!(tok.add_bos());
}
