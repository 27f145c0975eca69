//! Fuzz the tokenizer on arbitrary text (lossily decoded bytes): encoding must
//! not panic, every id must be in the vocabulary, and decoding the ids must give
//! the text back (byte-level BPE is lossless), also when streamed id by id.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whale_engine::text::tokenizer::{StreamDecoder, Tokenizer};

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = std::env::var("WHALE_FUZZ_TOKENIZER").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/hf-reference/tokenizer/tokenizer.json").into()
        });
        Tokenizer::from_tokenizer_json(std::path::Path::new(&path)).expect("tokenizer for fuzzing")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tok = tokenizer();
    let Ok(ids) = tok.encode(&text, false) else { return };
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    let decoded = tok.decode(&ids);
    assert_eq!(decoded, text, "round trip");
    let mut stream = StreamDecoder::new(tok);
    let mut s = String::new();
    for &id in &ids {
        s.push_str(&stream.push(id));
    }
    s.push_str(&stream.flush());
    assert_eq!(s, text, "streamed round trip");
});
