//! Structured outputs through llguidance on real vocabularies (SmolLM2's,
//! Qwen2.5's and DeepSeek's): which tokens each mask allows as a text is
//! written token by token, when a grammar is complete, and the tool-call
//! grammars in each model's own format. The token ids come from the real
//! tokenizers, so a grammar that cannot be followed with the tokens a model
//! actually writes fails here.

mod common;

use serde_json::json;
use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::constraint::{Commit, Constraint, ConstraintEnv, Grammar};
use whale_engine::text::tokenizer::Tokenizer;
use whale_engine::text::tool_calls::{ToolFormat, DS_CALL_BEGIN, HERMES_BEGIN};

fn gguf_tokenizer(file: &str) -> Tokenizer {
    let g = GgufFile::open(common::cached_model(file)).unwrap();
    Tokenizer::from_gguf(&g).unwrap()
}

fn smollm2() -> Tokenizer {
    gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Whether the constraint's next mask allows `id`.
fn allows(c: &mut Constraint, vocab: usize, id: u32) -> bool {
    let mut logits = vec![0f32; vocab];
    assert!(c.apply(&mut logits).unwrap(), "the mask allows nothing");
    logits[id as usize] == 0.0
}

/// Feed `ids`; each must be allowed. Returns the last commit's result.
fn feed(c: &mut Constraint, tok: &Tokenizer, ids: &[u32]) -> Commit {
    let mut last = Commit::Continue;
    for (i, &id) in ids.iter().enumerate() {
        c.prepare_mask().unwrap();
        assert!(allows(c, tok.vocab_size(), id), "token {i} ({:?}) refused", tok.decode(&[id]));
        last = c.commit(id).unwrap();
        if i + 1 < ids.len() {
            assert_eq!(last, Commit::Continue, "complete too early, at token {i} ({:?})", tok.decode(&[id]));
        }
    }
    last
}

/// Feed `ids` until one is refused; returns its index (None: all allowed).
fn first_refused(c: &mut Constraint, tok: &Tokenizer, ids: &[u32]) -> Option<usize> {
    for (i, &id) in ids.iter().enumerate() {
        if !allows(c, tok.vocab_size(), id) {
            return Some(i);
        }
        c.commit(id).unwrap();
    }
    None
}

#[test]
fn json_object_follows_the_text_and_ends_with_the_object() {
    let tok = smollm2();
    let env = ConstraintEnv::new(&tok).unwrap();
    let mut c = env.compile(&Grammar::JsonObject, None).unwrap();
    let ids = tok.encode("{\"name\": \"Tom\", \"tags\": [1, 2.5e3, true, null], \"s\": \"é\\n\"}", false).unwrap();
    assert_eq!(feed(&mut c, &tok, &ids), Commit::Complete);
    // After the object: only the end-of-generation tokens.
    let mut logits = vec![0f32; tok.vocab_size()];
    c.apply(&mut logits).unwrap();
    let allowed: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&i| logits[i as usize] == 0.0).collect();
    assert_eq!(allowed, tok.eog_ids());

    // Not JSON: refused at the token that breaks it.
    for (bad, at) in [("{\"a\" 1}", "1"), ("[1, 2]", "["), ("{\"a\": tru}", "}")] {
        let mut c = env.compile(&Grammar::JsonObject, None).unwrap();
        let ids = tok.encode(bad, false).unwrap();
        let i = first_refused(&mut c, &tok, &ids).unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(tok.decode(&ids[i..i + 1]).contains(at), "{bad:?}: refused at {:?}", tok.decode(&ids[i..i + 1]));
    }
}

#[test]
fn control_tokens_never_count_as_json_text() {
    let tok = smollm2();
    let env = ConstraintEnv::new(&tok).unwrap();
    let mut c = env.compile(&Grammar::JsonObject, None).unwrap();
    feed(&mut c, &tok, &tok.encode("{\"a\": \"", false).unwrap());
    for special in ["<|im_end|>", "<|im_start|>", "<|endoftext|>"] {
        let id = tok.token_to_id(special).unwrap();
        assert!(!allows(&mut c, tok.vocab_size(), id), "{special} allowed inside a string");
    }
    // Ordinary text is.
    let x = tok.encode("x", false).unwrap()[0];
    assert!(allows(&mut c, tok.vocab_size(), x));
}

#[test]
fn json_schema_decides_keys_types_and_the_end() {
    let tok = smollm2();
    let env = ConstraintEnv::new(&tok).unwrap();
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let g = Grammar::JsonSchema(schema);
    let mut c = env.compile(&g, None).unwrap();
    assert_eq!(feed(&mut c, &tok, &tok.encode("{\"name\": \"Tom\", \"age\": 3}", false).unwrap()), Commit::Complete);
    for bad in [
        "{\"name\": \"Tom\", \"age\": 3.5}",
        "{\"name\": \"Tom\", \"color\": 1}",
        "{\"name\": 1}",
        "{\"name\": \"Tom\"}",
    ] {
        let mut c = env.compile(&g, None).unwrap();
        let ids = tok.encode(bad, false).unwrap();
        let refused = first_refused(&mut c, &tok, &ids);
        // "{"name": "Tom"}" is refused at the closing brace (age is required).
        assert!(refused.is_some(), "{bad:?} accepted");
    }
}

#[test]
fn invalid_schemas_are_errors_that_name_the_problem() {
    let tok = smollm2();
    let env = ConstraintEnv::new(&tok).unwrap();
    for (schema, says) in [
        (json!({"type": "nope"}), "nope"),
        (json!({"type": "object", "properties": {"a": {"$ref": "#/defs/x"}}}), "/defs/x"),
        (json!({"type": "integer", "minimum": 5, "maximum": 1}), ""),
    ] {
        let e = env.compile(&Grammar::JsonSchema(schema.clone()), None).err();
        let e = e.unwrap_or_else(|| panic!("{schema} compiled")).to_string();
        assert!(e.contains(says), "{schema}: {e}");
    }
}

#[test]
fn hermes_tool_call_grammar_waits_for_the_call_token_then_holds_the_schema() {
    let tok = gguf_tokenizer("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let env = ConstraintEnv::new(&tok).unwrap();
    let tools = vec![
        (
            "get_weather".to_string(),
            Some(
                json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}),
            ),
        ),
        ("get_time".to_string(), None),
    ];
    let g = ToolFormat::Hermes.call_grammar(&tok, &tools, false);
    let trigger = tok.token_to_id(HERMES_BEGIN).unwrap();
    let mut c = env.compile(&Grammar::Lark(g.clone()), Some(trigger)).unwrap();
    // Free text first: nothing is masked.
    let mut logits: Vec<f32> = (0..tok.vocab_size()).map(|i| i as f32).collect();
    let before = logits.clone();
    assert!(c.apply(&mut logits).unwrap());
    assert_eq!(logits, before);
    let text = "Let me check.";
    assert_eq!(feed(&mut c, &tok, &tok.encode(text, false).unwrap()), Commit::Continue);
    assert!(!c.is_active());
    // The call: the real tokens Qwen writes, with its own <tool_call> tokens.
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let ids = tok.encode(call, false).unwrap();
    assert_eq!(ids[0], trigger);
    assert_eq!(feed(&mut c, &tok, &ids), Commit::Continue);
    // Free again after the call, and a second call may follow.
    assert!(!c.is_active());
    let ids = tok.encode("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", false).unwrap();
    feed(&mut c, &tok, &ids);
    // Arguments outside the schema, or an unknown tool, are refused.
    for bad in [
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}",
        "<tool_call>\n{\"name\": \"delete_files\"",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_",
    ] {
        let mut c = env.compile(&Grammar::Lark(g.clone()), Some(trigger)).unwrap();
        assert!(first_refused(&mut c, &tok, &tok.encode(bad, false).unwrap()).is_some(), "{bad:?} accepted");
    }
}

#[test]
fn deepseek_tool_call_grammar_uses_its_tool_tokens() {
    let tok = Tokenizer::from_hf_dir(&common::hf_reference().join("tokenizer")).unwrap();
    let env = ConstraintEnv::new(&tok).unwrap();
    let tools = vec![(
        "get_weather".to_string(),
        Some(json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})),
    )];
    let format = ToolFormat::DeepSeek { typed: true };
    let call = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>";
    // Forced from the start (the trigger is part of the grammar).
    let mut c = env.compile(&Grammar::Lark(format.call_grammar(&tok, &tools, true)), None).unwrap();
    let ids = tok.encode(call, false).unwrap();
    assert_eq!(ids[0], tok.token_to_id(DS_CALL_BEGIN).unwrap());
    assert_eq!(feed(&mut c, &tok, &ids), Commit::Complete);
    // The separator spelled as plain text is not the separator token.
    let mut c = env.compile(&Grammar::Lark(format.call_grammar(&tok, &tools, true)), None).unwrap();
    let mut spelled = tok.encode("<｜tool▁call▁begin｜>function", false).unwrap();
    spelled.extend(tok.encode("<｜tool▁sep", false).unwrap().iter().skip(1));
    let refused = first_refused(&mut c, &tok, &spelled);
    assert!(refused.is_some_and(|i| i >= 2), "refused at {refused:?}");
    // V3.1's layout: NAME<｜tool▁sep｜>ARGS.
    let v31 = ToolFormat::DeepSeek { typed: false };
    let mut c = env.compile(&Grammar::Lark(v31.call_grammar(&tok, &tools, false)), None).unwrap();
    let ids = tok.encode("get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}<｜tool▁call▁end｜>", false).unwrap();
    assert_eq!(feed(&mut c, &tok, &ids), Commit::Complete);
}
