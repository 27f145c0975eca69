//! `whale run --image` and `whale imagine` on the tiny random Janus model in
//! `crates/whale-engine/tests/data/janus` (transformers' outputs beside it),
//! and the bad input they must refuse.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../whale-engine/tests/data/janus")
}

fn model() -> String {
    data().join("tiny").to_string_lossy().into_owned()
}

fn whale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale")).args(args).args(["-t", "2"]).output().expect("run whale")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = whale(args);
    assert!(out.status.success(), "whale {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn fails_with(args: &[&str], needle: &str) {
    let out = whale(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "whale {args:?} succeeded");
    assert!(err.contains(needle), "whale {args:?}: expected {needle:?} in:\n{err}");
    assert!(!err.contains("panicked"), "whale {args:?} panicked:\n{err}");
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data().join("expected/expected.json")).unwrap()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whale-janus-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The fixture's generation prompt is the chat template of "A whale swims in
/// a lake" plus `<begin_of_image>`, so `whale imagine --temp 0` must pick
/// transformers' greedy codes; `--from-codes` then decodes them to a PNG.
#[test]
fn imagine_greedy_codes_match_transformers_and_decode() {
    let d = tmp("imagine");
    let png = d.join("whale.png");
    let v = ok_json(&[
        "imagine",
        &model(),
        "-p",
        "A whale swims in a lake",
        "--temp",
        "0",
        "--cfg",
        "5",
        "-o",
        png.to_str().unwrap(),
        "--json",
    ]);
    let codes = &v["images"][0]["codes"];
    assert_eq!(codes, &expected()["gen_codes"]);
    let img = whale_engine::vision::image::decode(&std::fs::read(&png).unwrap()).unwrap();
    assert_eq!((img.width, img.height), (384, 384));

    // Decoding given codes: the fixture's random ones, against the
    // processor's 8-bit output. whale's pixels are within 1e-3 of
    // transformers' (see hf_reference_janus), so a byte can differ by one
    // where a value sits on a step; allow that on 0.1 % of bytes.
    let codes_file = d.join("codes.json");
    std::fs::write(&codes_file, expected()["decode_codes"].to_string()).unwrap();
    let out = d.join("decoded.png");
    let v = ok_json(&[
        "imagine",
        &model(),
        "--from-codes",
        codes_file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["images"][0]["codes"], expected()["decode_codes"]);
    let mine = whale_engine::vision::image::decode(&std::fs::read(&out).unwrap()).unwrap();
    let npy = std::fs::read(data().join("expected/decoded_u8.npy")).unwrap();
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let chw = &npy[10 + hlen..]; // [3, 384, 384]
    let n = 384 * 384;
    let mut off = 0;
    for p in 0..n {
        for c in 0..3 {
            let (a, b) = (mine.data[p * 3 + c] as i32, chw[c * n + p] as i32);
            assert!((a - b).abs() <= 1, "pixel {p} channel {c}: {a} vs {b}");
            off += (a != b) as usize;
        }
    }
    assert!(off * 1000 <= 3 * n, "{off} bytes differ by one");
    // Sampling is seeded: the same seed repeats, another differs.
    let sample = |seed: &str| {
        let v = ok_json(&["imagine", &model(), "-p", "a lake", "--seed", seed, "-o", png.to_str().unwrap(), "--json"]);
        v["images"][0]["codes"].clone()
    };
    assert_eq!(sample("7"), sample("7"));
    assert_ne!(sample("7"), sample("8"));
    let _ = std::fs::remove_dir_all(&d);
}

/// `--prompt-ids` with the image token at 576 positions: the first greedy
/// token is the argmax of transformers' last logits with the image.
#[test]
fn run_with_an_image_follows_transformers() {
    let e = expected();
    let ids: Vec<String> = e["image_ids"].as_array().unwrap().iter().map(|x| x.to_string()).collect();
    let img = data().join("expected/image.png");
    let v = ok_json(&[
        "run",
        &model(),
        "--image",
        img.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "-n",
        "1",
        "--temp",
        "0",
        "--json",
    ]);
    let npy = std::fs::read(data().join("expected/image_logits.npy")).unwrap();
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let logits: Vec<f32> =
        npy[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let vocab = 300;
    let last = &logits[logits.len() - vocab..];
    let best = (0..vocab).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
    assert_eq!(v["generated_ids"][0].as_u64(), Some(best as u64));
    // With --chat whale puts in the image tokens, 576 of them; text typed
    // by the user that spells the image token stays text.
    for text in ["What is this?", "<image_placeholder>"] {
        let v =
            ok_json(&["run", &model(), "--image", img.to_str().unwrap(), "--chat", "-p", text, "-n", "1", "--json"]);
        let n_img = v["prompt_ids"].as_array().unwrap().iter().filter(|x| x.as_u64() == Some(3)).count();
        assert_eq!(n_img, 576, "{text}");
    }
}

#[test]
fn bad_images_and_parameters_are_refused_clearly() {
    let d = tmp("bad");
    let m = model();
    let not_image = d.join("notes.png");
    std::fs::write(&not_image, "this is text, not a picture").unwrap();
    fails_with(&["run", &m, "--image", not_image.to_str().unwrap(), "-p", "x"], "neither PNG nor JPEG");
    let png = std::fs::read(data().join("expected/image.png")).unwrap();
    let truncated = d.join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    fails_with(&["run", &m, "--image", truncated.to_str().unwrap(), "-p", "x"], "PNG");
    // A header claiming 60000 × 60000 pixels: refused before any decoding.
    let mut bomb = png[..33].to_vec();
    bomb[16..20].copy_from_slice(&60000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let bomb_path = d.join("bomb.png");
    std::fs::write(&bomb_path, &bomb).unwrap();
    fails_with(&["run", &m, "--image", bomb_path.to_str().unwrap(), "-p", "x"], "more than the 40000000 allowed");
    let img = data().join("expected/image.png");
    let img = img.to_str().unwrap();
    let mut nine = vec!["run", m.as_str(), "-p", "x"];
    for _ in 0..9 {
        nine.extend(["--image", img]);
    }
    fails_with(&nine, "at most 8");
    // An image sent to a text-only model.
    let text_model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/hf-reference/models/llama_tiny_gqa_tied");
    fails_with(&["run", text_model.to_str().unwrap(), "--image", img, "-p", "x"], "text-only model");
    fails_with(&["imagine", &m, "-p", "x", "--cfg", "50"], "--cfg 50 is out of range");
    fails_with(&["imagine", &m, "-p", "x", "--cfg", "0.5"], "out of range");
    fails_with(&["imagine", &m, "-p", "x", "-n", "0"], "-n 0 is out of range");
    fails_with(&["imagine", &m, "-p", "x", "--temp=-1"], "--temp -1 is out of range");
    let bad_codes = d.join("codes.json");
    std::fs::write(&bad_codes, "[1, 2, 3]").unwrap();
    fails_with(&["imagine", &m, "--from-codes", bad_codes.to_str().unwrap()], "3 image codes given, 576");
    std::fs::write(&bad_codes, format!("[{}]", vec!["999"; 576].join(","))).unwrap();
    fails_with(&["imagine", &m, "--from-codes", bad_codes.to_str().unwrap()], "outside the codebook");
    std::fs::write(&bad_codes, "{oops").unwrap();
    fails_with(&["imagine", &m, "--from-codes", bad_codes.to_str().unwrap()], "is not JSON");
    fails_with(&["imagine", text_model.to_str().unwrap(), "-p", "x"], "text-only model");
    // DeepSeek's original layout: the error says how to convert it.
    let orig = d.join("multi_modality");
    std::fs::create_dir_all(&orig).unwrap();
    std::fs::write(
        orig.join("config.json"),
        r#"{"model_type": "multi_modality", "architectures": ["MultiModalityCausalLM"]}"#,
    )
    .unwrap();
    std::fs::copy(data().join("tiny/model.safetensors"), orig.join("model.safetensors")).unwrap();
    std::fs::copy(data().join("tiny/tokenizer.json"), orig.join("tokenizer.json")).unwrap();
    for args in [vec!["run", orig.to_str().unwrap(), "-p", "x"], vec!["imagine", orig.to_str().unwrap(), "-p", "x"]] {
        fails_with(&args, "convert_janus_weights_to_hf");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A Janus folder also runs as a plain language model, and `whale info`
/// describes its three parts.
#[test]
fn text_only_use_and_info() {
    let e = expected();
    let ids: Vec<String> = e["text_ids"].as_array().unwrap().iter().map(|x| x.to_string()).collect();
    let v = ok_json(&["run", &model(), "--prompt-ids", &ids.join(","), "-n", "1", "--temp", "0", "--json"]);
    let npy = std::fs::read(data().join("expected/text_logits.npy")).unwrap();
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let logits: Vec<f32> =
        npy[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let last = &logits[logits.len() - 300..];
    let best = (0..300).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
    assert_eq!(v["generated_ids"][0].as_u64(), Some(best as u64));
    let out = Command::new(env!("CARGO_BIN_EXE_whale")).args(["info", &model()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["vision encoder", "VQ decoder", "image generation", "576"] {
        assert!(text.contains(needle), "whale info lacks {needle:?}:\n{text}");
    }
}

/// `whale chat` with `/image`: the first answer is what `whale run --chat
/// --image` gives for the same message, and a second turn reuses the
/// conversation (its image stays in the prompt).
#[test]
fn chat_attaches_images() {
    use std::io::Write;
    let img = data().join("expected/image.png");
    let img = img.to_str().unwrap();
    let run = ok_json(&[
        "run",
        &model(),
        "--image",
        img,
        "--chat",
        "-p",
        "What is this?",
        "-n",
        "5",
        "--temp",
        "0",
        "--json",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(["chat", &model(), "-n", "5", "--temp", "0", "-t", "2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("/image {img}\nWhat is this?\n/image /no/such/file.png\nAnd now?\n");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(first, run["text"].as_str().unwrap());
    assert_eq!(stdout.lines().count(), 2, "two answers: {stdout:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("image not attached"));
}
