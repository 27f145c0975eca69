//! Fuzz a chat request's messages through what the server does with them:
//! parse the JSON into messages, guard their text, render DeepSeek-R1's chat
//! template and vocabulary (from the R1 distill's GGUF header) and tokenize. Nothing may
//! panic, and the prompt may hold no control token beyond those the template
//! wrote for the same conversation with each text replaced by "x".
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whale_engine::formats::gguf::GgufFile;
use whale_engine::text::chat_template::{ChatMessage, ChatTemplate};
use whale_engine::text::tokenizer::{TokenKind, Tokenizer};

fn setup() -> &'static (Tokenizer, ChatTemplate) {
    static S: OnceLock<(Tokenizer, ChatTemplate)> = OnceLock::new();
    S.get_or_init(|| {
        // The DeepSeek-R1 distill's header (`whale pull deepseek-r1-distill-qwen-7b-head`):
        // R1's template and vocabulary.
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

fuzz_target!(|data: &[u8]| {
    let (tok, tpl) = setup();
    let Ok(mut messages) = serde_json::from_slice::<Vec<ChatMessage>>(data) else { return };
    if messages.is_empty() || messages.len() > 16 {
        return;
    }
    // Only the roles the server lets through, without tool calls (checked
    // separately there).
    if messages.iter().any(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant") || m.tool_calls.is_some()) {
        return;
    }
    messages.iter_mut().for_each(|m| m.guard(tok));
    let Some(ids) = prompt(tok, tpl, &messages) else { return };
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    let plain: Vec<ChatMessage> = messages.iter().map(|m| ChatMessage::new(m.role.clone(), "x")).collect();
    if let Some(want) = prompt(tok, tpl, &plain) {
        assert!(control_ids(tok, &ids) <= control_ids(tok, &want), "message text became control tokens");
    }
});
