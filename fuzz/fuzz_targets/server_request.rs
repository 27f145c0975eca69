//! Fuzz a request body through what `whale serve` does with it before the
//! engine: parse it as a chat and as a completion request (typed, with the
//! bad field's path in the error), validate the shared fields, the tools and
//! the tool choice, check the messages for each tool-call format, then guard
//! their text, render DeepSeek-R1's chat template and tokenize with R1's
//! vocabulary (from the R1 distill's GGUF header). Nothing may panic, and the
//! prompt may hold no control token beyond those the template wrote for the
//! same conversation with each text replaced by "x".
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whale::server::request::{
    parse_body, parse_messages, parse_tools, validate_common, ChatRequest, CompletionRequest,
};
use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::chat_template::{ChatMessage, ChatTemplate};
use whale_engine::text::tokenizer::{TokenKind, Tokenizer};
use whale_engine::text::tool_calls::ToolFormat;

fn setup() -> &'static (Tokenizer, ChatTemplate) {
    static S: OnceLock<(Tokenizer, ChatTemplate)> = OnceLock::new();
    S.get_or_init(|| {
        // `whale pull deepseek-r1-distill-qwen-7b-head`: R1's template and vocabulary.
        let path = std::env::var("WHALE_FUZZ_GGUF").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/whale/models/DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.head.gguf")
        });
        let gguf = GgufFile::open(std::path::Path::new(&path)).expect("the R1 distill header for fuzzing");
        let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer for fuzzing");
        let tpl = ChatTemplate::new(tok.chat_template().expect("a chat template")).expect("template compiles");
        (tok, tpl)
    })
}

fn control_ids(tok: &Tokenizer, ids: &[u32]) -> usize {
    ids.iter().filter(|&&id| tok.token_kind(id) == Some(TokenKind::Control)).count()
}

fn prompt(tok: &Tokenizer, tpl: &ChatTemplate, messages: &[ChatMessage]) -> Option<Vec<u32>> {
    let text = tpl.render(messages, true, &tok.bos_token(), &tok.eos_token(), None).ok()?;
    tok.encode_guarded(&text, false).ok()
}

const FORMATS: [Option<ToolFormat>; 4] =
    [None, Some(ToolFormat::Hermes), Some(ToolFormat::DeepSeek { typed: false }), Some(ToolFormat::DeepSeek { typed: true })];

fuzz_target!(|data: &[u8]| {
    let (tok, tpl) = setup();
    if let Ok(req) = parse_body::<CompletionRequest>(data) {
        let _ = validate_common(&req.common, 4096, tok.vocab_size());
    }
    let Ok(req) = parse_body::<ChatRequest>(data) else { return };
    let _ = validate_common(&req.common, 4096, tok.vocab_size());
    let tools = req.tools.clone().unwrap_or_default();
    let _ = parse_tools(&tools, req.tool_choice.as_ref());
    let mut last = None;
    for format in FORMATS {
        last = parse_messages(req.messages.clone(), format).ok();
    }
    // R1's template, with R1's tool-call format (the last one tried).
    let Some(conv) = last else { return };
    if conv.messages.len() > 16 {
        return;
    }
    let mut messages = conv.messages;
    messages.iter_mut().for_each(|m| m.guard(tok));
    let Some(ids) = prompt(tok, tpl, &messages) else { return };
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    // Tool calls render markup of their own: compare with the same calls'
    // names and arguments as "x".
    let plain: Vec<ChatMessage> = messages
        .iter()
        .map(|m| {
            let mut p = ChatMessage::new(m.role.clone(), "x");
            p.tool_calls = m.tool_calls.as_ref().map(|c| {
                let n = c.as_array().map_or(0, Vec::len);
                serde_json::json!(vec![serde_json::json!({"type": "function", "function": {"name": "x", "arguments": "x"}}); n])
            });
            p
        })
        .collect();
    if let Some(want) = prompt(tok, tpl, &plain) {
        assert!(control_ids(tok, &ids) <= control_ids(tok, &want), "request text became control tokens");
    }
});
