//! Fuzz the GGUF reader: header, metadata, tensor table and tensor bounds, then
//! the model loader's use of them, as one file or as the parts of a split
//! model (split.no, split.count, split.tensors.count, tensors in two parts).
//! The first row of every tensor is decoded and dotted with quantized
//! activations, so arbitrary block bytes of every type (the i-quants' grid
//! indices and sign codes included) reach the kernels. Any input must give
//! Ok or an error, never a panic, hang or huge allocation.
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
            let Ok((t, bytes)) = g.tensor_data(&t.name) else { continue };
            let n = t.dims.first().copied().unwrap_or(0) as usize;
            let Some(rb) = t.ty.row_bytes(n).filter(|&rb| n <= 1 << 16 && rb <= bytes.len()) else { continue };
            let mut out = vec![0f32; n];
            let _ = whale_kernels::dequantize_row(t.ty, &bytes[..rb], &mut out);
            if n > 0 && !matches!(t.ty, whale_kernels::GgmlType::Q8_1 | whale_kernels::GgmlType::Q8_K) {
                let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
                let acts = whale_kernels::quantize_acts(t.ty, &x, 1, n);
                let _ = whale_kernels::vec_dot_q(t.ty, &bytes[..rb], &acts, 0);
            }
        }
        let _ = g.architecture();
        // The tokenizer and model loaders read the same metadata.
        let _ = whale_engine::text::tokenizer::Tokenizer::from_gguf(&g);
        let store = whale_engine::formats::weights::WeightStore::Gguf(g);
        let _ = whale_engine::models::load_weights(&store, "llama", Default::default());
    }
});
