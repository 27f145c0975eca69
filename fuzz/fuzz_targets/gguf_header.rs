//! Fuzz the GGUF reader: header, metadata, tensor table and tensor bounds, then
//! the model loader's use of them, as one file or as the parts of a split
//! model (split.no, split.count, split.tensors.count, tensors in two parts).
//! Any input must give Ok or an error, never a panic, hang or huge
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_engine::formats::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    // The first byte picks one file or 2..3 parts, cut at the first bytes
    // "GGUF" after the first image's magic.
    let (mode, rest) = data.split_first().map_or((0, data), |(&m, r)| (m % 3, r));
    let opened = if mode == 0 {
        GgufFile::from_bytes(rest.to_vec())
    } else {
        let mut starts: Vec<usize> = (1..rest.len().saturating_sub(3)).filter(|&i| &rest[i..i + 4] == b"GGUF").collect();
        starts.truncate(mode as usize);
        let mut images = Vec::new();
        let mut at = 0;
        for s in starts {
            images.push(rest[at..s].to_vec());
            at = s;
        }
        images.push(rest[at..].to_vec());
        GgufFile::from_part_images(images)
    };
    if let Ok(g) = opened {
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
