//! `whale synth` and `whale bench --like` from the command line: the file is
//! written, reproducible, loadable, and bad arguments get clear errors with
//! nothing left behind. (The same files against llama.cpp: llamacpp_greedy.rs;
//! the tensor tables against real llama-quantize output: the engine's
//! tests/synth.rs.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn whale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale")).args(args).output().expect("run whale")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "whale failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails_with(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected a failure, got: {}", String::from_utf8_lossy(&o.stdout));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whale-synth-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn deepseek_tokenizer() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/hf-reference/gguf/dsv3_a_qlora_yarn_v129280.f32.gguf")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn synth_writes_the_same_file_for_the_same_seed() {
    let d = tmp("seed");
    let (a, b, c) = (d.join("a.gguf"), d.join("b.gguf"), d.join("c.gguf"));
    let s = |p: &PathBuf, seed: &str| {
        ok(&whale(&["synth", p.to_str().unwrap(), "--like", "qwen2.5-0.5b", "--layers", "2", "--seed", seed]))
    };
    let out = s(&a, "5");
    assert!(out.contains("written: like qwen2.5-0.5b (2 of 24 layers), q4_k_m"), "{out}");
    // The mix of a 896-wide model: Q4_K falls back to Q5_0, Q6_K to Q8_0.
    assert!(out.contains("Q5_0") && out.contains("Q8_0"), "{out}");
    s(&b, "5");
    s(&c, "6");
    let (ba, bb, bc) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert!(ba == bb, "same seed, same bytes");
    assert!(ba != bc, "another seed, other weights");
    assert!(!d.join("a.gguf.partial").exists());

    // whale reads it back: the header says what it is, and it generates.
    let info = ok(&whale(&["info", a.to_str().unwrap()]));
    assert!(info.contains("synthetic"), "{info}");
    let seed_line = info.lines().find(|l| l.contains("whale.synth.seed")).unwrap_or_default();
    assert!(seed_line.trim_end().ends_with(" 5"), "{info}");
    let run = whale(&["run", a.to_str().unwrap(), "-p", "Hello", "-n", "4", "--temp", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run)).unwrap();
    assert_eq!(v["steps"].as_array().map(|s| s.len()), Some(4), "{v}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn synth_refuses_bad_arguments_clearly() {
    let d = tmp("bad");
    let out = d.join("x.gguf");
    let o = out.to_str().unwrap();
    fails_with(&whale(&["synth", o, "--like", "gpt-5"]), &["unknown model \"gpt-5\"", "deepseek-v3"]);
    fails_with(&whale(&["synth", o, "--like", "deepseek-v3", "--layers", "0"]), &["--layers 0", "1 to 61"]);
    fails_with(&whale(&["synth", o, "--like", "deepseek-v3", "--layers", "62"]), &["1 to 61"]);
    fails_with(&whale(&["synth", o, "--like", "qwen2.5-0.5b", "--type", "q3_k_xl"]), &["unknown file type", "q4_k_m"]);
    fails_with(
        &whale(&["synth", o, "--like", "qwen2.5-0.5b", "--tokenizer", d.join("none.gguf").to_str().unwrap()]),
        &["none.gguf"],
    );
    fails_with(&whale(&["synth", "--like", "qwen2.5-0.5b"]), &["OUT.gguf"]);
    fails_with(&whale(&["synth", o, "--like", "qwen2.5-0.5b", "--split-max-size", "lots"]), &["is not a size"]);
    fails_with(&whale(&["synth", o, "--like", "qwen2.5-0.5b", "--split-max-size", "0"]), &["between 1 byte"]);
    // A directory that does not exist: an error naming it, nothing written.
    let deep = d.join("no/such/dir/x.gguf");
    fails_with(
        &whale(&["synth", deep.to_str().unwrap(), "--like", "deepseek-v2-lite", "--tokenizer", &deepseek_tokenizer()]),
        &["no/such/dir"],
    );
    assert!(std::fs::read_dir(&d).unwrap().next().is_none(), "nothing is left behind");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bench_like_runs_a_synthetic_moe_in_memory() {
    let o = whale(&[
        "bench",
        "--like",
        "deepseek-v2-lite",
        "--layers",
        "2",
        "--tokenizer",
        &deepseek_tokenizer(),
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
        "-t",
        "2",
        "--bandwidth",
        "10",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(v["model"], "deepseek-v2-lite synth 2L q4_k_m");
    assert!(v["tg_tok_s"].as_f64().unwrap() > 0.0 && v["pp_tok_s"].as_f64().unwrap() > 0.0, "{v}");
    // One token reads 6 of the 64 experts of the MoE layer: well under the
    // file, well over the dense layer alone (~40 MiB of Q4_K/Q6_K).
    let (active, file) = (v["active_bytes_per_token"].as_u64().unwrap(), v["weight_bytes"].as_u64().unwrap());
    assert!(active < file / 10 * 6 && active > 40 << 20, "active {active} of {file}");
    let frac = v["tg_fraction_of_bound"].as_f64().unwrap();
    let want = v["tg_tok_s"].as_f64().unwrap() / (10e9 / active as f64);
    assert!((frac - want).abs() < 1e-9 * want.max(1.0), "{frac} vs {want}");

    fails_with(&whale(&["bench", "smollm2-135m", "--like", "qwen2.5-0.5b"]), &["cannot be used with"]);
    fails_with(&whale(&["bench"]), &["required"]);
}

fn python() -> PathBuf {
    let p = std::env::var_os("WHALE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python"));
    assert!(p.exists(), "{} is missing: scripts/test creates it (with the gguf package)", p.display());
    p
}

fn greedy_ids(model: &str) -> serde_json::Value {
    let o = whale(&["run", model, "-p", "The capital of France is", "-n", "8", "--temp", "0", "--json"]);
    serde_json::from_str::<serde_json::Value>(&ok(&o)).unwrap()["generated_ids"].clone()
}

/// Split files from whale's own writer (`--split-max-size`) and from gguf-py
/// (llama.cpp's Python GGUF writer, `split_max_tensors`): any part loads the
/// whole model, which decodes exactly as the unsplit file does.
#[test]
fn split_files_from_whale_and_from_gguf_py_run_as_the_whole_file() {
    let d = tmp("split");
    let whole = d.join("whole.gguf");
    let base = ["--like", "qwen2.5-0.5b", "--layers", "2", "--seed", "9"];
    let mut args = vec!["synth", whole.to_str().unwrap()];
    args.extend(base);
    ok(&whale(&args));
    let want = greedy_ids(whole.to_str().unwrap());
    assert_eq!(want.as_array().map(|a| a.len()), Some(8), "{want}");

    let split = d.join("parts.gguf");
    let mut args = vec!["synth", split.to_str().unwrap(), "--split-max-size", "100M"];
    args.extend(base);
    let out = ok(&whale(&args));
    assert!(out.contains("in 3 parts"), "{out}");
    for k in 1..=3 {
        let part = d.join(format!("parts-{k:05}-of-00003.gguf"));
        assert_eq!(greedy_ids(part.to_str().unwrap()), want, "whale's part {k}");
    }
    let info = ok(&whale(&["info", d.join("parts-00002-of-00003.gguf").to_str().unwrap()]));
    assert!(info.contains("split into 3 parts"), "{info}");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf_py_split.py");
    let py = d.join("py");
    let o = Command::new(python()).arg(&script).arg(&whole).arg(&py).arg("10").output().expect("run python");
    assert!(o.status.success(), "gguf-py: {}", String::from_utf8_lossy(&o.stderr));
    let first = d.join("py-00001-of-00003.gguf");
    assert!(first.exists(), "27 tensors at 10 a part make 3 parts");
    assert_eq!(greedy_ids(first.to_str().unwrap()), want, "gguf-py's parts");
    let _ = std::fs::remove_dir_all(&d);
}
