//! `Tokenizer::from_hf_dir` on a small Llama-3-shaped folder written by the test: BOS
//! from the post-processor, EOS and chat template from `tokenizer_config.json` (the
//! template as a list of named templates), extra end-of-generation ids from
//! `generation_config.json`, and the errors for folders it cannot use.

use std::path::PathBuf;

use serde_json::json;
use whale_engine::text::chat_template::ChatTemplate;
use whale_engine::text::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

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

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("whale-tok-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, v: &serde_json::Value) {
        std::fs::write(self.0.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ids 0..256 are the bytes, 256 = "Ġh", 257 = "Ġhi"; added: 258 <|begin_of_text|>,
/// 259 <|end_of_text|>, 260 <|eot_id|>, 261 <|eom_id|> (all special), 262 "<tool>" (not special).
fn llama3_like_tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c, json!(i));
    }
    vocab.insert("Ġh".into(), json!(256));
    vocab.insert("Ġhi".into(), json!(257));
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": special})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            added(258, "<|begin_of_text|>", true),
            added(259, "<|end_of_text|>", true),
            added(260, "<|eot_id|>", true),
            added(261, "<|eom_id|>", true),
            added(262, "<tool>", false),
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [258], "tokens": ["<|begin_of_text|>"]}}}
        ]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                  "vocab": vocab, "merges": [["Ġ", "h"], ["Ġh", "i"]]}
    })
}

#[test]
fn llama3_like_folder() {
    let dir = TempDir::new("llama3");
    dir.write("tokenizer.json", &llama3_like_tokenizer_json());
    dir.write(
        "tokenizer_config.json",
        &json!({
            "bos_token": "<|begin_of_text|>",
            "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "special": true},
            "chat_template": [
                {"name": "tool_use", "template": "TOOLS"},
                {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}<|eot_id|>{% endfor %}"}
            ]
        }),
    );
    dir.write("generation_config.json", &json!({"bos_token_id": 258, "eos_token_id": [259, 260, 261]}));

    let tok = Tokenizer::from_hf_dir(&dir.0).unwrap();
    assert_eq!(tok.vocab_size(), 263);
    assert_eq!(tok.bos_id(), Some(258));
    assert_eq!(tok.eos_id(), Some(260));
    // No add_bos_token in the config: the post-processor's leading BOS decides.
    assert!(tok.add_bos());
    assert_eq!(tok.encode(" hi<tool>", true).unwrap(), [258, 257, 262]);
    assert_eq!(tok.encode(" hi<|eot_id|>", false).unwrap(), [257, 260]);
    assert_eq!(tok.eog_ids(), [259, 260, 261]);
    assert_eq!(tok.decode(&[258, 257, 262, 260]), "<|begin_of_text|> hi<tool><|eot_id|>");
    assert_eq!(tok.decode_skip_special(&[258, 257, 262, 260]), " hi<tool>");
    assert_eq!(tok.bos_token(), "<|begin_of_text|>");

    let src = tok.chat_template().expect("the \"default\" template");
    let tpl = ChatTemplate::new(src).unwrap();
    let msgs = [whale_engine::text::chat_template::ChatMessage::new("user", "hi")];
    assert_eq!(
        tpl.render(&msgs, false, &tok.bos_token(), &tok.eos_token(), None).unwrap(),
        "<|begin_of_text|>hi<|eot_id|>"
    );

    // Without its config, BOS still comes from the post-processor; EOS is found by its text.
    let alone = Tokenizer::from_tokenizer_json(&dir.0.join("tokenizer.json")).unwrap();
    assert_eq!((alone.bos_id(), alone.eos_id(), alone.add_bos()), (Some(258), Some(259), true));

    let mut dec = StreamDecoder::skipping_special(&tok);
    let text: String = [258, 257, 0xe4, 0xbd, 0xa0, 260].iter().map(|&id| dec.push(id)).collect();
    assert_eq!(text + &dec.flush(), " hi你");
}

#[test]
fn chat_template_file_beside_the_config() {
    let dir = TempDir::new("jinja");
    dir.write("tokenizer.json", &llama3_like_tokenizer_json());
    dir.write("tokenizer_config.json", &json!({"add_bos_token": false, "eos_token": "<|end_of_text|>"}));
    std::fs::write(dir.0.join("chat_template.jinja"), "{{ messages[0].content }}").unwrap();
    let tok = Tokenizer::from_hf_dir(&dir.0).unwrap();
    assert_eq!(tok.chat_template(), Some("{{ messages[0].content }}"));
    assert!(!tok.add_bos(), "the config's add_bos_token wins over the post-processor");
    assert_eq!(tok.eos_id(), Some(259));
}

#[test]
fn unusable_folders_are_reported() {
    let dir = TempDir::new("bad");
    match Tokenizer::from_hf_dir(&dir.0) {
        Err(e @ TokenizerError::Io { .. }) => assert!(e.to_string().contains("tokenizer.json"), "{e}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    std::fs::write(dir.0.join("tokenizer.json"), "{not json").unwrap();
    assert!(matches!(Tokenizer::from_hf_dir(&dir.0), Err(TokenizerError::Json { .. })));
    let mut wordpiece = llama3_like_tokenizer_json();
    wordpiece["model"]["type"] = json!("WordPiece");
    dir.write("tokenizer.json", &wordpiece);
    let e = Tokenizer::from_hf_dir(&dir.0).unwrap_err();
    assert!(e.to_string().contains("model type \"WordPiece\" is not supported"), "{e}");
    let mut metaspace = llama3_like_tokenizer_json();
    metaspace["decoder"] = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    metaspace["pre_tokenizer"] =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    dir.write("tokenizer.json", &metaspace);
    let e = Tokenizer::from_hf_dir(&dir.0).unwrap_err();
    assert!(e.to_string().contains("only byte-level BPE"), "{e}");
}

#[test]
fn tokenizer_and_template_are_shareable_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<ChatTemplate>();
}
