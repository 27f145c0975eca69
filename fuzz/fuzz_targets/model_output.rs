//! Fuzz what whale parses out of generated text, which a model (or a prompt
//! injection through it) controls: the `<think>` splitter and the tool-call
//! parsers and splitter of both formats. Nothing may panic; streaming the
//! text in arbitrary pieces must give what parsing it whole gives; and every
//! parsed call's arguments must be a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_engine::text::reasoning::{split, ReasoningParser, Segment};
use whale_engine::text::tool_calls::{ToolCallSplitter, ToolFormat};

/// `text` cut at the byte positions given by `cuts` (kept on char boundaries).
fn pieces<'a>(text: &'a str, cuts: &[u8]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let mut end = (at + c as usize % 16).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
    }
    out.push(&text[at..]);
    out
}

fuzz_target!(|data: &[u8]| {
    let (cuts, text) = data.split_at(data.len().min(8));
    let text = String::from_utf8_lossy(text);
    let parts = pieces(&text, cuts);
    for in_thinking in [false, true] {
        let whole = split(&text, in_thinking);
        let mut p = ReasoningParser::new(in_thinking);
        let (mut reasoning, mut content) = (String::new(), String::new());
        let mut segs: Vec<Segment> = parts.iter().flat_map(|piece| p.push(piece)).collect();
        segs.extend(p.finish());
        for s in segs {
            match s {
                Segment::Reasoning(t) => reasoning.push_str(&t),
                Segment::Content(t) => content.push_str(&t),
            }
        }
        assert_eq!((reasoning, content), whole, "streamed reasoning split differs");
    }
    for format in [ToolFormat::Hermes, ToolFormat::DeepSeek { typed: true }, ToolFormat::DeepSeek { typed: false }] {
        if let Some(Ok((_, calls))) = format.parse(&text) {
            for c in calls {
                let v: serde_json::Value = serde_json::from_str(&c.arguments).expect("arguments are JSON");
                assert!(v.is_object(), "arguments are an object");
            }
        }
        let mut sp = ToolCallSplitter::new(format);
        let mut passed: String = parts.iter().map(|piece| sp.push(piece)).collect();
        let (rest, calls) = sp.finish();
        passed.push_str(&rest);
        passed.push_str(calls.as_deref().unwrap_or_default());
        assert_eq!(passed, text, "the splitter lost or reordered text");
    }
});
