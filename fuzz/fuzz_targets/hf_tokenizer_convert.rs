//! Fuzz the conversion of a Hugging Face tokenizer.json (and
//! tokenizer_config.json) into GGUF tokenizer keys, as `whale synth
//! --tokenizer` does with a downloaded file. The input is both texts,
//! separated by the first NUL byte. Any input must give keys or an error,
//! never a panic, hang or huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_engine::synth::tokenizer::from_hf_json;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (tj, cfg) = match text.split_once('\0') {
        Some((a, b)) => (a, Some(b)),
        None => (&text[..], None),
    };
    let _ = from_hf_json(tj, cfg, "deepseek-v3", 1000);
});
