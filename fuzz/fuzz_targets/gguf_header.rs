//! Fuzz the GGUF reader: header, metadata, tensor table and tensor bounds, then
//! the model loader's use of them. Any input must give Ok or an error, never a
//! panic, hang or huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_engine::formats::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = GgufFile::from_bytes(data.to_vec()) {
        let _ = g.check_tensors();
        for t in &g.tensors {
            let _ = g.tensor_data(&t.name);
        }
        let _ = g.architecture();
        // The tokenizer and model loaders read the same metadata.
        let _ = whale_engine::text::tokenizer::Tokenizer::from_gguf(&g);
        let store = whale_engine::formats::weights::WeightStore::Gguf(g);
        let _ = whale_engine::models::load_weights(&store, "llama", Default::default());
    }
});
