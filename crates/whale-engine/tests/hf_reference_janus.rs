//! Janus-Pro against Hugging Face transformers, on the tiny random
//! `JanusForConditionalGeneration` in `tests/data/janus` (built by
//! `make_janus_fixture.py` there; transformers 5.25, float32, CPU).
//!
//! Tolerances:
//! - preprocessing: whale resamples as PIL does (fixed point, bit for bit),
//!   so a PNG's pixel values are equal to within 1e-6 (one rounding of
//!   `(p/255 − 0.5)/0.5` to f32). A JPEG is decoded by a different IDCT than
//!   libjpeg's, so its pixels may differ by a few levels: mean |Δ| ≤ 2/255
//!   and max |Δ| ≤ 24/255 on the normalised scale (×2).
//! - vision encoder, aligner, logits: 1e-4 (the bar), float32 sums
//!   in another order through two transformer stacks;
//! - guided image-token logits: 1e-4 at all 576 steps, and the greedy codes
//!   equal;
//! - VQ decoder pixels: 1e-3 (the bar: eleven convolutions of up to
//!   576 terms each and a GroupNorm per block, float32);
//! - 8-bit pixels: whale's rule on transformers' floats gives transformers'
//!   bytes exactly.

mod common;

use std::path::PathBuf;

use common::{max_abs_diff, npy_values, read_npy_f32};
use whale_engine::formats::weights::WeightStore;
use whale_engine::models::llama::Head;
use whale_engine::models::{BatchSeq, CacheType, LoadOptions, Logits, Model};
use whale_engine::vision::image::{self, Preprocess};
use whale_engine::vision::janus::Janus;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/janus")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected/expected.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn npy(name: &str) -> Vec<f32> {
    read_npy_f32(&dir().join("expected").join(name)).1
}

fn load(threads: usize) -> Janus {
    let store = WeightStore::open(&dir().join("tiny")).unwrap();
    Janus::load(&store, LoadOptions { threads, cache_type: CacheType::F32, ..Default::default() }).unwrap()
}

#[test]
fn preprocessing_matches_the_processor() {
    let p = Preprocess::default();
    let png = image::decode(&std::fs::read(dir().join("expected/image.png")).unwrap()).unwrap();
    assert_eq!((png.width, png.height), (300, 225));
    let d = max_abs_diff(&p.pixel_values(&png), &npy("pixel_values_png.npy"));
    assert!(d <= 1e-6, "PNG pixel values: max |Δ| = {d:e}");
    let jpg = image::decode(&std::fs::read(dir().join("expected/image.jpg")).unwrap()).unwrap();
    let (got, want) = (p.pixel_values(&jpg), npy("pixel_values_jpg.npy"));
    let mean = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).sum::<f32>() / got.len() as f32;
    let max = max_abs_diff(&got, &want);
    assert!(mean <= 2.0 * 2.0 / 255.0 && max <= 2.0 * 24.0 / 255.0, "JPEG: mean |Δ| {mean:e}, max {max:e}");
}

#[test]
fn vision_encoder_aligner_and_logits_match_transformers() {
    let e = expected();
    let pixels = npy("pixel_values_png.npy");
    for threads in [1, 2] {
        let j = load(threads);
        let enc = j.vision.encode(&pixels, threads).unwrap();
        let d = max_abs_diff(&enc, &npy("vision.npy"));
        assert!(d <= 1e-4, "vision encoder: {d:e}");
        let feats = j.vision.align(&enc, threads);
        let d = max_abs_diff(&feats, &npy("aligned.npy"));
        assert!(d <= 1e-4, "aligner: {d:e}");

        // Text only, through the ordinary Model path.
        let t = ids(&e["text_ids"]);
        let mut cache = j.lm.new_cache(64);
        let d = max_abs_diff(&j.lm.forward(&mut cache, &t, Logits::All).unwrap(), &npy("text_logits.npy"));
        assert!(d <= 1e-4, "text logits: {d:e}");

        // With the image's rows at the image tokens.
        let t = ids(&e["image_ids"]);
        let mut cache = j.lm.new_cache(t.len());
        let got = j.forward_with_images(&mut cache, &t, &feats, Logits::All).unwrap();
        let d = max_abs_diff(&got, &npy("image_logits.npy"));
        assert!(d <= 1e-4, "logits with an image: {d:e}");
        // The same rows fed in two pieces (a prefill split inside the image) agree.
        assert!(j.input_rows(&t, &[]).is_err(), "image tokens without image rows are refused");
        let h = j.lm.params.hidden_size;
        let rows = j.input_rows(&t, &feats).unwrap();
        let mut cache = j.lm.new_cache(t.len());
        let cut = 100;
        let mut all = Vec::new();
        for (ids, x) in [(&t[..cut], &rows[..cut * h]), (&t[cut..], &rows[cut * h..])] {
            let mut seqs = [BatchSeq { cache: &mut cache, tokens: ids }];
            all.extend(j.lm.forward_embeds(&mut seqs, x.to_vec(), Head::Logits(Logits::All)).unwrap().concat());
        }
        let d = max_abs_diff(&all, &npy("image_logits.npy"));
        assert!(d <= 1e-4, "logits with the image fed in two pieces: {d:e}");
    }
}

#[test]
fn guided_generation_matches_transformers() {
    let e = expected();
    let j = load(2);
    let want = npy("gen_logits.npy");
    let codes_n = j.vq.cfg.num_embeddings;
    let mut worst = 0f32;
    let (prompt, uncond) = (ids(&e["gen_prompt"]), ids(&e["gen_uncond"]));
    let sp = &e["special_ids"];
    let made = Janus::unconditional(
        &prompt,
        sp["bos"].as_u64().unwrap() as u32,
        sp["boi"].as_u64().unwrap() as u32,
        sp["pad"].as_u64().unwrap() as u32,
    );
    assert_eq!(made, uncond, "the unconditional prompt is built as transformers builds it");
    let codes = j
        .generate_codes(&prompt, &uncond, e["cfg"].as_f64().unwrap() as f32, 0.0, 0, |i, g| {
            worst = worst.max(max_abs_diff(g, &want[i * codes_n..(i + 1) * codes_n]));
            true
        })
        .unwrap();
    assert!(worst <= 1e-4, "guided logits: max |Δ| over 576 steps = {worst:e}");
    assert_eq!(codes, ids(&e["gen_codes"]));
}

#[test]
fn vq_decoder_matches_transformers() {
    let e = expected();
    let j = load(2);
    let codes = ids(&e["decode_codes"]);
    let px = j.decode_codes(&codes, |_, _| {}).unwrap();
    let want = npy("decoded.npy");
    let d = max_abs_diff(&px, &want);
    assert!(d <= 1e-3, "VQ decoder pixels: max |Δ| = {d:e}");
    // The processor's postprocess output is channel-first, [3, 384, 384].
    let (shape, chw) = npy_values(&std::fs::read(dir().join("expected/decoded_u8.npy")).unwrap());
    assert_eq!(shape, [3, 384, 384]);
    let u8s: Vec<f64> = (0..384 * 384).flat_map(|p| [0, 1, 2].map(|c| chw[c * 384 * 384 + p])).collect();
    let rule = image::to_rgb8(&want, 384, 384);
    let same = rule.data.iter().zip(&u8s).filter(|(a, b)| **a as f64 == **b).count();
    assert_eq!(
        same,
        u8s.len(),
        "8-bit rule on transformers' floats: {} of {} bytes differ",
        u8s.len() - same,
        u8s.len()
    );
    // And whale's PNG holds whale's bytes.
    let mine = image::to_rgb8(&px, 384, 384);
    let back = image::decode(&image::encode_png(&mine).unwrap()).unwrap();
    assert_eq!(back, mine);
}
