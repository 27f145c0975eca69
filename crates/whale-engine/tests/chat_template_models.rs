//! The chat templates embedded in the test models' GGUFs, rendered by whale and by
//! Python jinja2 the way `transformers` does it (`tests/data/tokenizer/chat_templates.json`,
//! written by `gen_chat_template_refs.py` beside it), compared byte for byte. The models
//! come from `scripts/fetch-test-models.sh`; a missing one fails the test.

mod common;

use serde_json::Value;
use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::chat_template::{ChatMessage, ChatTemplate};
use whale_engine::text::tokenizer::Tokenizer;

fn reference() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/chat_templates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn check_model(name: &str) {
    let r = reference();
    let m = &r["models"][name];
    let path = common::cached_model(m["model_file"].as_str().unwrap());
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let source = tok.chat_template().unwrap_or_else(|| panic!("{name}: no chat template"));
    assert_eq!(
        source,
        m["template"].as_str().unwrap(),
        "{name}: the GGUF's template is not the one rendered by jinja2"
    );
    assert_eq!(tok.bos_token(), m["bos_token"].as_str().unwrap(), "{name}: bos text");
    assert_eq!(tok.eos_token(), m["eos_token"].as_str().unwrap(), "{name}: eos text");

    let tpl = ChatTemplate::new(source).unwrap();
    let cases = m["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut failures = Vec::new();
    for c in cases {
        let case = c["name"].as_str().unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(c["messages"].clone()).unwrap();
        let tools = c.get("tools").filter(|t| !t.is_null());
        let agp = c["add_generation_prompt"].as_bool().unwrap();
        let expected = c["expected"].as_str().unwrap();
        match tpl.render(&messages, agp, &tok.bos_token(), &tok.eos_token(), tools) {
            Ok(got) if got == expected => {}
            Ok(got) => failures.push(format!("{case}:\n   got      {got:?}\n   expected {expected:?}")),
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} renders differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_template_matches_jinja2() {
    check_model("smollm2");
}

#[test]
fn qwen2_5_coder_template_matches_jinja2() {
    check_model("qwen2_5_coder");
}

#[test]
fn r1_distill_template_matches_jinja2() {
    check_model("r1_distill_qwen");
}

/// The R1 template keeps only what follows `</think>` of earlier assistant turns.
#[test]
fn r1_drops_earlier_thinking() {
    let r = reference();
    let tpl = ChatTemplate::new(r["models"]["r1_distill_qwen"]["template"].as_str().unwrap()).unwrap();
    let msgs = [
        ChatMessage::new("user", "Q1"),
        ChatMessage::new("assistant", "<think>\nsecret reasoning\n</think>\n\nA1"),
        ChatMessage::new("user", "Q2"),
    ];
    let out = tpl.render(&msgs, true, "<B>", "<E>", None).unwrap();
    assert!(!out.contains("secret reasoning"), "{out}");
    // (The template writes the end of sentence itself, and BOS through `bos_token`.)
    assert!(out.contains("<｜Assistant｜>\n\nA1<｜end▁of▁sentence｜>"), "{out}");
    assert!(out.starts_with("<B><｜User｜>Q1") && out.ends_with("Q2<｜Assistant｜>"), "{out}");
}
