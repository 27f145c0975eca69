//! Fuzz the Hugging Face folder reader: the safetensors header (length,
//! JSON, dtypes, shapes, offsets, FP8 scale pairing) and then the model loader
//! on whatever parsed. Any bytes must give Ok or an error, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whale_engine::formats::weights::WeightStore;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("whale-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        // A small llama config, so loading gets past the config stage.
        let cfg = r#"{"model_type":"llama","vocab_size":8,"hidden_size":32,"intermediate_size":64,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5}"#;
        std::fs::write(d.join("config.json"), cfg).expect("config");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    if std::fs::write(d.join("model.safetensors"), data).is_err() {
        return;
    }
    if let Ok(store) = WeightStore::open(d) {
        let _ = whale_engine::models::load_weights(&store, "llama", Default::default());
    }
});
