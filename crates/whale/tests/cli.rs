//! The `whale` command line on real files and on broken ones. Every bad input
//! must end in a clear message and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod scratch;

fn whale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale")).args(args).env("WHALE_LOG", "off").output().expect("run whale")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Expect failure with a message containing every one of `needles`, and no panic.
fn expect_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf-reference")
}

fn temp_dir(name: &str) -> scratch::Scratch {
    scratch::Scratch::new("whale-cli", name)
}

/// A minimal GGUF v3 writer for building broken files.
struct GgufWriter {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl GgufWriter {
    fn new() -> Self {
        GgufWriter { kv: Vec::new(), n_kv: 0, tensors: Vec::new() }
    }
    fn str_(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    fn kv_str(mut self, k: &str, v: &str) -> Self {
        Self::str_(&mut self.kv, k);
        self.kv.extend_from_slice(&8u32.to_le_bytes());
        Self::str_(&mut self.kv, v);
        self.n_kv += 1;
        self
    }
    fn kv_u32(mut self, k: &str, v: u32) -> Self {
        Self::str_(&mut self.kv, k);
        self.kv.extend_from_slice(&4u32.to_le_bytes());
        self.kv.extend_from_slice(&v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        self
    }
    fn write(&self, path: &Path) {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.n_kv.to_le_bytes());
        b.extend_from_slice(&self.kv);
        let mut off = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            Self::str_(&mut b, name);
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
            off += (data.len() as u64).div_ceil(32) * 32;
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for (_, _, _, data) in &self.tensors {
            b.extend_from_slice(data);
            while b.len() % 32 != 0 {
                b.push(0);
            }
        }
        std::fs::write(path, b).unwrap();
    }
}

#[test]
fn bad_magic_is_a_clear_error() {
    let d = temp_dir("magic");
    let p = d.join("x.gguf");
    std::fs::write(&p, b"NOPE and some more bytes").unwrap();
    expect_error(&whale(&["info", p.to_str().unwrap()]), &["not a GGUF file"]);
    expect_error(&whale(&["run", p.to_str().unwrap(), "-p", "hi"]), &["not a GGUF file"]);
}

#[test]
fn empty_and_missing_files() {
    let d = temp_dir("empty");
    let p = d.join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    expect_error(&whale(&["info", p.to_str().unwrap()]), &["not a GGUF file"]);
    let missing = d.join("nope.gguf");
    expect_error(&whale(&["info", missing.to_str().unwrap()]), &["nope.gguf"]);
}

#[test]
fn unknown_tensor_type_names_the_tensor() {
    let d = temp_dir("ttype");
    let p = d.join("t.gguf");
    GgufWriter::new()
        .kv_str("general.architecture", "llama")
        .tensor("blk.0.attn_q.weight", &[32, 1], 99, vec![0; 32])
        .write(&p);
    expect_error(&whale(&["info", p.to_str().unwrap()]), &["blk.0.attn_q.weight", "unknown or unsupported type id 99"]);
}

#[test]
fn unknown_architecture_lists_the_known_ones() {
    let d = temp_dir("arch");
    let p = d.join("a.gguf");
    GgufWriter::new().kv_str("general.architecture", "mamba9").tensor("w", &[4], 0, vec![0; 16]).write(&p);
    expect_error(&whale(&["info", p.to_str().unwrap()]), &["unknown architecture \"mamba9\"", "llama", "qwen2"]);
}

#[test]
fn wrong_tensor_shape_names_tensor_and_shapes() {
    // A llama GGUF whose attn_q is [hidden=32, rows=16] instead of [32, 32].
    let d = temp_dir("shape");
    let p = d.join("s.gguf");
    let f32s = |n: usize| vec![0u8; n * 4];
    GgufWriter::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.embedding_length", 32)
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.feed_forward_length", 64)
        .kv_u32("llama.attention.head_count", 4)
        .kv_u32("llama.context_length", 128)
        .tensor("token_embd.weight", &[32, 10], 0, f32s(320))
        .tensor("blk.0.attn_norm.weight", &[32], 0, f32s(32))
        .tensor("blk.0.attn_q.weight", &[32, 16], 0, f32s(512))
        .write(&p);
    expect_error(&whale(&["info", p.to_str().unwrap()]), &["blk.0.attn_q.weight", "[16, 32]", "expected [32, 32]"]);
}

#[test]
fn hf_folder_with_inconsistent_config_names_the_tensor() {
    let d = temp_dir("hfshape");
    let src = fixtures().join("models/llama_tiny_gqa_tied");
    for f in ["model.safetensors", "generation_config.json"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 160", "\"intermediate_size\": 170");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    expect_error(
        &whale(&["info", d.to_str().unwrap()]),
        &["model.layers.0.mlp.gate_proj.weight", "expected [170, 64]"],
    );
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let d = temp_dir("hftrunc");
    let src = fixtures().join("models/llama_tiny_gqa_tied");
    std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&whale(&["info", d.to_str().unwrap()]), &["model.safetensors", "data_offsets"]);
}

/// The first 100 MB of DeepSeek-R1-Distill-Qwen-7B: the header is complete,
/// the tensors are not.
#[test]
fn truncated_gguf_prints_header_then_names_the_tensor() {
    let out = whale(&["info", "deepseek-r1-distill-qwen-7b-head"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("general.architecture") && text.contains("qwen2"), "{text}");
    assert!(text.contains("deepseek-r1-qwen"), "pre-tokenizer missing from: {text}");
    // The vocabulary as llama.cpp's gguf-py reads this header: 152,064 tokens,
    // BOS 151646 and EOS 151643 (the R1 distill's own ids).
    let line = |key: &str| text.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_default().to_string();
    assert!(line("tokenizer.ggml.tokens ").ends_with("(152064 items)]"), "{text}");
    assert!(line("tokenizer.ggml.token_type ").ends_with("(152064 items)]"), "{text}");
    assert!(line("tokenizer.ggml.bos_token_id ").ends_with(" 151646"), "{text}");
    assert!(line("tokenizer.ggml.eos_token_id ").ends_with(" 151643"), "{text}");
    expect_error(&out, &["lies past the end of the file"]);
}

#[test]
fn absurd_parameters_are_rejected() {
    let m = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let m = m.to_str().unwrap();
    expect_error(&whale(&["run", m, "-p", "hi", "--top-p", "7"]), &["top_p"]);
    expect_error(&whale(&["run", m, "-p", "hi", "--temp", "NaN"]), &["temperature"]);
    expect_error(&whale(&["run", m, "-p", "hi", "--threads", "0"]), &["--threads"]);
}

/// Without `--bandwidth`, `whale bench` measures the memory bandwidth
/// itself, over a 1 GiB buffer before the model loads and again after the
/// runs; neither buffer may count in the model's peak RSS (the fixture's
/// 72 MB of f32 weights take far less than the probe's gigabyte).
#[test]
fn bench_measures_the_bandwidth_outside_the_peak_rss() {
    let m = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let o = whale(&["bench", m.to_str().unwrap(), "-p", "0", "-n", "2", "-r", "1", "-t", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert!(v["bandwidth_gb_s"].as_f64().is_some_and(|b| b > 0.0), "measured: {v}");
    let rss = v["peak_rss_bytes"].as_u64().expect("peak RSS");
    assert!(rss > 0 && rss < 512 << 20, "peak RSS {rss} bytes: the probe's buffer was counted: {v}");
}

/// `whale bench --json` reports its figures (speeds are not checked: timings
/// belong in benchmarks), at a depth, with the bound from `--bandwidth`;
/// bad arguments are refused.
#[test]
fn bench_reports_json_at_a_depth() {
    let m = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let m = m.to_str().unwrap();
    let o = whale(&["bench", m, "-p", "8", "-n", "4", "-r", "1", "-d", "16", "-t", "1", "--bandwidth", "10", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!((v["depth"].as_u64(), v["n_prompt"].as_u64(), v["n_gen"].as_u64()), (Some(16), Some(8), Some(4)));
    for key in ["pp_tok_s", "tg_tok_s", "peak_rss_bytes", "weight_bytes"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert_eq!((v["pp_std"].as_f64(), v["tg_std"].as_f64()), (Some(0.0), Some(0.0)), "one repetition");
    // The bytes one decoded token reads, counted here from the file's own
    // tensor table: every matrix but the embedding (not tied in this
    // fixture), the routed experts at expert_used_count of expert_count.
    let g = whale_engine::formats::gguf::GgufFile::open(m).unwrap();
    let (used, all) = (g.get_u64("deepseek2.expert_used_count").unwrap(), g.get_u64("deepseek2.expert_count").unwrap());
    let active: u64 = g
        .tensors
        .iter()
        .filter(|t| t.dims.len() >= 2 && t.name != "token_embd.weight")
        .map(|t| if t.name.contains("_exps.") { t.size / all * used } else { t.size })
        .sum();
    assert!(active < g.file_len() / 2, "most of this file is the embedding and unread experts");
    assert_eq!(v["active_bytes_per_token"].as_u64(), Some(active), "{v}");
    let bound = 10e9 / active as f64;
    let frac = v["tg_tok_s"].as_f64().unwrap() / bound;
    assert!((v["tg_fraction_of_bound"].as_f64().unwrap() - frac).abs() <= 1e-9 * frac, "{v}");
    expect_error(&whale(&["bench", m, "-r", "0"]), &["-r must be at least 1"]);
    let o = whale(&["bench", m, "--cache-type", "f8"]);
    assert!(!o.status.success() && stderr(&o).contains("unknown cache type"), "{}", stderr(&o));
}
