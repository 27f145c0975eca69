//! `whale info` and `whale run` on DeepSeek models, and DeepSeek-specific bad
//! input: inconsistent configs, missing expert tensors, MTP layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod scratch;
mod server_common;

use scratch::Scratch;

fn whale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale")).args(args).env("WHALE_LOG", "off").output().expect("run whale")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf-reference")
}

fn expect_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected exit 1; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn temp_dir(name: &str) -> Scratch {
    Scratch::new("whale-ds", name)
}

/// Safetensors tensors as (dtype, shape, bytes), read and written plainly.
type Tensor = (String, Vec<u64>, Vec<u8>);
type Tensors = BTreeMap<String, Tensor>;

fn read_st(path: &Path) -> Tensors {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut out = Tensors::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let o: Vec<usize> =
            v["data_offsets"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let shape = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        out.insert(name, (v["dtype"].as_str().unwrap().to_string(), shape, b[8 + n + o[0]..8 + n + o[1]].to_vec()));
    }
    out
}

fn write_st(path: &Path, t: &Tensors) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, (dtype, shape, bytes)) in t {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// A copy of a fixture model whose config and tensors the closure may change.
fn modified_model(name: &str, tag: &str, edit: impl FnOnce(&mut serde_json::Value, &mut Tensors)) -> Scratch {
    let src = fixtures().join("models").join(name);
    let d = temp_dir(tag);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let mut t = read_st(&src.join("model.safetensors"));
    edit(&mut cfg, &mut t);
    std::fs::write(d.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    write_st(&d.join("model.safetensors"), &t);
    d
}

#[test]
fn info_reports_mla_cache_for_real_v3_dimensions() {
    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/deepseek-v3-config");
    let o = whale(&["info", cfg.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 576 values × 2 bytes × 61 layers; decompressed 128 × (192 + 128) values.
    assert!(out.contains("576 values per layer") && out.contains("as bf16: 70272 bytes"), "{out}");
    assert!(out.contains("40960 values per layer") && out.contains("71.1×"), "{out}");
    // DeepSeek's published sizes: 671B main, 685B with MTP, 37B activated;
    // the FP8 release is 688.6 GB on the hub (weights plus headers).
    assert!(out.contains("684.49 B (671.03 B without the 1 MTP layer(s)); one decoded token reads 36.62 B"), "{out}");
    assert!(out.contains("kept (--fp8 keep): 686.6 GB"), "{out}");
    assert!(out.contains("0.3 GB for 4096 tokens") && out.contains("11.5 GB for 163840 tokens"), "{out}");
}

/// `whale run` refuses a context whose KV cache cannot fit, before
/// allocating it, and says what would fit.
#[test]
fn run_refuses_a_context_whose_cache_cannot_fit() {
    let g = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let run = |limit: &str, ctx: &str| {
        Command::new(env!("CARGO_BIN_EXE_whale"))
            .args(["run", g.to_str().unwrap(), "--prompt-ids", "1,2,3", "-n", "1", "--ctx", ctx, "--cache-type", "f32"])
            .env("WHALE_LOG", "off")
            .env("WHALE_MEM_LIMIT", limit)
            .output()
            .unwrap()
    };
    // 3 layers × 40 values × 4 bytes = 480 bytes a token: 1,000,000 tokens
    // need 480 MB, more than the 1 MB allowed.
    expect_error(
        &run("1M", "1000000"),
        &["KV cache for a context of 1000000 tokens needs 480.00 MB", "WHALE_MEM_LIMIT", "at most 2083"],
    );
    let o = run("1M", "1000");
    assert!(o.status.success(), "480 kB fits in 1 MB: {}", String::from_utf8_lossy(&o.stderr));
}

/// A model larger than the memory whale may use still runs (its weights
/// page in from disk, routed experts prefetched as the router picks them),
/// says so, and gives the same greedy ids as with the memory to hold it.
#[test]
fn model_larger_than_the_memory_limit_runs_the_same() {
    let g = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let run = |limit: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_whale"));
        c.args(["run", g.to_str().unwrap(), "--prompt-ids", "5,6,7,8", "-n", "6", "--temp", "0", "--ctx", "16"]);
        c.args(["--ignore-eos", "--json"]).env("WHALE_LOG", "off");
        if let Some(l) = limit {
            c.env("WHALE_MEM_LIMIT", l);
        }
        c.output().unwrap()
    };
    let (small, plenty) = (run(Some("1M")), run(None));
    let err = String::from_utf8_lossy(&small.stderr);
    assert!(small.status.success() && plenty.status.success(), "{err}");
    assert!(err.contains("is larger than the memory whale may use (1.00 MB, from WHALE_MEM_LIMIT)"), "{err}");
    let ids = |o: &Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["generated_ids"].clone();
    assert_eq!(ids(&small), ids(&plenty));
    assert_eq!(ids(&small).as_array().map(Vec::len), Some(6));
}

/// The weights read into memory (the default when they fit, or
/// `--no-mmap`) and mapped (`--mmap`) give the same greedy ids (safetensors
/// folders read both ways: `hf_reference_deepseek`); `--no-mmap` refuses a
/// model larger than the memory whale may use, and the two flags exclude
/// each other.
#[test]
fn read_and_mapped_weights_run_the_same() {
    let gguf = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    {
        let model = &gguf;
        let run = |flags: &[&str], limit: Option<&str>| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_whale"));
            c.args(["run", model.to_str().unwrap(), "--prompt-ids", "5,6,7,8", "-n", "6", "--temp", "0"]);
            c.args(["--ctx", "16", "--ignore-eos", "--json"]).args(flags).env("WHALE_LOG", "off");
            if let Some(l) = limit {
                c.env("WHALE_MEM_LIMIT", l);
            }
            c.output().unwrap()
        };
        let ids = |o: &Output| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["generated_ids"].clone()
        };
        let mapped = ids(&run(&["--mmap"], None));
        assert_eq!(mapped.as_array().map(Vec::len), Some(6));
        assert_eq!(ids(&run(&["--no-mmap"], None)), mapped, "{}", model.display());
        assert_eq!(ids(&run(&[], None)), mapped, "{}", model.display());
        expect_error(
            &run(&["--no-mmap"], Some("1M")),
            &["--no-mmap: the model", "is larger than the memory whale may use (1.00 MB, from WHALE_MEM_LIMIT)"],
        );
        // A usage error: clap's exit status 2.
        let both = run(&["--no-mmap", "--mmap"], None);
        assert_eq!(both.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&both.stderr).contains("'--no-mmap' cannot be used with '--mmap'"));
    }
}

#[test]
fn info_and_run_on_the_llama_cpp_gguf() {
    let g = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let o = whale(&["info", g.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("deepseek2") && out.contains("40 values per layer"), "{out}");
    // Greedy through the CLI contract equals transformers' ids (rand_len7).
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected/dsv3_a_qlora_yarn_v129280.json")).unwrap(),
    )
    .unwrap();
    let p = &expected["prompts"][1];
    let ids: Vec<String> = p["input_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let o = whale(&[
        "run",
        g.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "-n",
        "16",
        "--temp",
        "0",
        "--ignore-eos",
        "--json",
        "--top-logits",
        "5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["generated_ids"], p["greedy"]["generated_ids"]);
    assert_eq!(v["steps"][0]["top"].as_array().unwrap().len(), 5);
}

#[test]
fn inconsistent_config_names_the_tensor() {
    let d = modified_model("dsv3_a_qlora_yarn", "kvlora", |c, _| c["kv_lora_rank"] = 48.into());
    expect_error(
        &whale(&["info", d.to_str().unwrap()]),
        &["model.layers.0.self_attn.kv_b_proj.weight", "has shape [128, 32], expected [128, 48]"],
    );
    let d = modified_model("dsv3_a_qlora_yarn", "ngroup", |c, _| c["n_group"] = 3.into());
    expect_error(&whale(&["info", d.to_str().unwrap()]), &["n_group 3 must divide n_routed_experts 8"]);
}

#[test]
fn missing_expert_tensor_is_named() {
    let d = modified_model("dsv3_a_qlora_yarn", "noexpert", |_, t| {
        t.remove("model.layers.1.mlp.experts.5.up_proj.weight").expect("fixture has this tensor");
    });
    expect_error(
        &whale(&["info", d.to_str().unwrap()]),
        &["missing tensor \"model.layers.1.mlp.experts.5.up_proj.weight\""],
    );
}

/// Real V3/R1 checkpoints carry the multi-token-prediction layer after the
/// last one. It must load (and be checked), not run as an ordinary layer.
/// The dsv3_a fixture with an MTP layer appended: a copy of its last layer
/// as the block, its norms as the MTP norms, and `eh_proj` as `fill`
/// gives it (the fixture's weights were not trained with MTP, so any
/// layer of the right shapes is as good a draft model; what matters is
/// that the main model's output does not depend on it).
fn with_mtp_layer(tag: &str, fill: impl Fn(usize) -> f32) -> Scratch {
    modified_model("dsv3_a_qlora_yarn", tag, |c, t| {
        c["num_nextn_predict_layers"] = 1.into();
        let layer2: Vec<(String, Tensor)> = t
            .iter()
            .filter(|(k, _)| k.starts_with("model.layers.2."))
            .map(|(k, v)| (k.replace("model.layers.2.", "model.layers.3."), v.clone()))
            .collect();
        t.extend(layer2);
        let norm = t["model.layers.2.input_layernorm.weight"].clone();
        for n in ["enorm", "hnorm", "shared_head.norm"] {
            t.insert(format!("model.layers.3.{n}.weight"), norm.clone());
        }
        let eh: Vec<u8> = (0..64 * 128).flat_map(|i| fill(i).to_le_bytes()).collect();
        t.insert("model.layers.3.eh_proj.weight".into(), ("F32".into(), vec![64, 128], eh));
    })
}

/// An `eh_proj` that passes the hidden half through (so the draft layer
/// sees the main model's state), with a little noise: a draft layer that
/// does draft, accepted now and then.
fn drafting_eh_proj(i: usize) -> f32 {
    let (r, c) = (i / 128, i % 128);
    (if c == 64 + r { 1.0 } else { 0.0 }) + ((i * 7919) % 13) as f32 * 1e-3
}

#[test]
fn mtp_layer_loads_without_changing_the_model() {
    let with_mtp = with_mtp_layer("mtp", |_| 0.0);
    let plain = fixtures().join("models/dsv3_a_qlora_yarn");
    let run = |m: &Path| {
        let o = whale(&[
            "run",
            m.to_str().unwrap(),
            "--prompt-ids",
            "5,6,7",
            "-n",
            "4",
            "--temp",
            "0",
            "--json",
            "--top-logits",
            "3",
            "--spec",
            "none",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    // The fixture folders have no tokenizer.json; give both the DeepSeek one.
    let tok = fixtures().join("tokenizer/tokenizer.json");
    let plain_copy = temp_dir("plain");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(plain.join(f), plain_copy.join(f)).unwrap();
    }
    for d in [&with_mtp, &plain_copy] {
        std::fs::copy(&tok, d.join("tokenizer.json")).unwrap();
    }
    assert_eq!(run(&with_mtp)["steps"], run(&plain_copy)["steps"]);
    // A checkpoint that announces an MTP layer but lacks its tensors is an error.
    let broken = modified_model("dsv3_a_qlora_yarn", "mtpmissing", |c, _| c["num_nextn_predict_layers"] = 1.into());
    expect_error(&whale(&["info", broken.to_str().unwrap()]), &["model.layers.3."]);
}

/// Speculative decoding with the MTP layer (`--spec mtp:K`): the greedy ids
/// are those of decoding one token at a time, for K = 1, 2, 3 and for
/// prompts of several lengths; the JSON reports the drafts. Without an MTP
/// layer, or with --top-logits, `--spec mtp` is a clear error.
#[test]
fn mtp_speculative_decoding_gives_the_greedy_ids() {
    // A draft layer that does draft: eh_proj passes the hidden half through
    // (so the layer sees the main model's state), with a little noise.
    let d = with_mtp_layer("mtpspec", drafting_eh_proj);
    std::fs::copy(fixtures().join("tokenizer/tokenizer.json"), d.join("tokenizer.json")).unwrap();
    let run = |ids: &str, spec: &str| {
        let o = whale(&[
            "run",
            d.to_str().unwrap(),
            "--prompt-ids",
            ids,
            "-n",
            "24",
            "--temp",
            "0",
            "--ignore-eos",
            "--json",
            "--spec",
            spec,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (mut drafted, mut accepted) = (0, 0);
    for ids in ["5,6,7", "1", "900,31,4,4,77,512,3,9,10,11,12"] {
        let plain = run(ids, "none");
        assert!(plain.get("speculative").is_none());
        assert_eq!(plain["generated_ids"].as_array().unwrap().len(), 24);
        for k in 1..=3 {
            let s = run(ids, &format!("mtp:{k}"));
            assert_eq!(s["generated_ids"], plain["generated_ids"], "prompt {ids}, --spec mtp:{k}");
            assert_eq!(s["text"], plain["text"]);
            let sp = &s["speculative"];
            assert_eq!(sp["draft_tokens"], k);
            let (steps, d, a) =
                (sp["steps"].as_u64().unwrap(), sp["drafted"].as_u64().unwrap(), sp["accepted"].as_u64().unwrap());
            // 23 tokens after the first: each step yields its accepted drafts plus one.
            assert_eq!(steps + a, 23, "prompt {ids}, k {k}: {sp}");
            assert!(a <= d && d <= k as u64 * steps);
            drafted += d;
            accepted += a;
        }
        // The default with greedy sampling is mtp:1.
        assert_eq!(run(ids, "auto")["speculative"]["draft_tokens"], 1);
    }
    eprintln!("drafts accepted: {accepted} of {drafted}");
    // 11 of 383 with these weights: the accepting branch runs too.
    assert!(accepted > 0, "no draft accepted: the acceptance path went untested");
    // whale bench reports the same figures for its tg test.
    let o = whale(&[
        "bench",
        d.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "12",
        "-r",
        "1",
        "--bandwidth",
        "10",
        "--json",
        "--spec",
        "mtp:2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sp = &b["speculative"];
    assert_eq!(sp["draft_tokens"], 2, "{b}");
    assert!((0.0..=1.0).contains(&sp["acceptance_rate"].as_f64().unwrap()), "{b}");
    assert!((1.0..=3.0).contains(&sp["tokens_per_step"].as_f64().unwrap()), "{b}");
    // Errors: top logits, a bad K, a model without the layer.
    let o = whale(&["run", d.to_str().unwrap(), "--prompt-ids", "5", "-n", "2", "--top-logits", "3", "--spec", "mtp"]);
    expect_error(&o, &["--spec mtp does not report --top-logits"]);
    let o = whale(&["run", d.to_str().unwrap(), "--prompt-ids", "5", "--spec", "mtp:9"]);
    assert_eq!(o.status.code(), Some(2), "a bad --spec value is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("mtp:K with K from 1 to 8"));
    let g = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let o = whale(&["run", g.to_str().unwrap(), "--prompt-ids", "5", "-n", "2", "--temp", "0", "--spec", "mtp"]);
    expect_error(&o, &["this model has no multi-token-prediction layer"]);
    // The server refuses it before it listens (bounded: a server that
    // starts anyway would never exit).
    let o = whale_within(60, &["serve", g.to_str().unwrap(), "--port", "0", "--spec", "mtp:2"]);
    expect_error(&o, &["this model has no multi-token-prediction layer"]);
}

/// [`whale`] that must exit within `secs` seconds (killed and failed after).
fn whale_within(secs: u64, args: &[&str]) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(args)
        .env("WHALE_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run whale");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait for whale").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("whale {args:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("whale's output")
}

/// The tiny DeepSeek GGUF with an MTP layer in llama.cpp's `nextn` naming
/// (block_count counts it, `nextn_predict_layers` says it is the last,
/// `blk.3.nextn.{eh_proj,enorm,hnorm,shared_head_norm}` beside the block's
/// usual tensors): the same layer as [`with_mtp_layer`] gives the
/// safetensors folder (a copy of layer 2, its norm, [`drafting_eh_proj`]).
/// `edit` may change the tensor list before writing (for the bad-input cases).
fn gguf_with_nextn(tag: &str, edit: impl FnOnce(&mut Vec<(String, Vec<u64>, Vec<u8>)>)) -> Scratch {
    use whale_engine::formats::gguf::{GgufFile, MetaValue};
    use whale_engine::formats::gguf_write::GgufWriter;
    let g = GgufFile::open(fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf")).unwrap();
    let mut tensors: Vec<(String, Vec<u64>, Vec<u8>)> = Vec::new();
    for t in &g.tensors {
        let (_, data) = g.tensor_data(&t.name).unwrap();
        tensors.push((t.name.clone(), t.dims.clone(), data.to_vec()));
        if let Some(rest) = t.name.strip_prefix("blk.2.") {
            tensors.push((format!("blk.3.{rest}"), t.dims.clone(), data.to_vec()));
            if rest == "attn_norm.weight" {
                for n in ["enorm", "hnorm", "shared_head_norm"] {
                    tensors.push((format!("blk.3.nextn.{n}.weight"), t.dims.clone(), data.to_vec()));
                }
            }
        }
    }
    let eh: Vec<u8> = (0..64 * 128).flat_map(|i| drafting_eh_proj(i).to_le_bytes()).collect();
    tensors.push(("blk.3.nextn.eh_proj.weight".into(), vec![128, 64], eh));
    edit(&mut tensors);
    let mut w = GgufWriter::new();
    for (k, v) in &g.metadata {
        w.set(k, v.clone());
    }
    let blocks = g.get_u64("deepseek2.block_count").unwrap() as u32;
    w.set("deepseek2.block_count", MetaValue::U32(blocks + 1));
    w.set("deepseek2.nextn_predict_layers", MetaValue::U32(1));
    for (name, dims, _) in &tensors {
        w.add_tensor(name, dims, whale_kernels::GgmlType::F32).unwrap();
    }
    let p = temp_dir(tag).file("nextn.gguf");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    w.write(&mut f, |i, _, out| out.write_all(&tensors[i].2)).unwrap();
    drop(f);
    p
}

/// A GGUF's MTP layer in llama.cpp's `nextn` naming: block_count counts it,
/// so the model without it is the original file's (the same top logits),
/// and it drafts: `--spec mtp:K` gives the greedy ids of plain decoding. A
/// nextn layer with a missing or wrongly shaped tensor is an error naming
/// it. (The fixture GGUF has no safetensors twin with its vocabulary, so
/// the drafts are not compared with the safetensors path; both load the
/// layer through the same name table.)
#[test]
fn gguf_nextn_layer_loads_and_drafts() {
    let g = gguf_with_nextn("nextn", |_| {});
    let orig = fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let run = |m: &Path, ids: &str, spec: &str| {
        let args = ["run", m.to_str().unwrap(), "--prompt-ids", ids, "-n", "24", "--temp", "0", "--ignore-eos"];
        let o = whale(&[&args[..], &["--json", "--spec", spec]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let top = |m: &Path| {
        let args = ["run", m.to_str().unwrap(), "--prompt-ids", "5,6,7", "-n", "4", "--temp", "0", "--json"];
        let o = whale(&[&args[..], &["--top-logits", "3", "--spec", "none"]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["steps"].clone()
    };
    assert_eq!(top(&g), top(&orig), "the nextn layer changed the main model");
    let mut drafted = 0;
    for ids in ["5,6,7", "1", "900,31,4,4,77,512,3,9,10,11,12"] {
        let plain = run(&g, ids, "none");
        for k in 1..=3 {
            let s = run(&g, ids, &format!("mtp:{k}"));
            assert_eq!(s["generated_ids"], plain["generated_ids"], "prompt {ids}, mtp:{k}");
            drafted += s["speculative"]["drafted"].as_u64().unwrap();
        }
    }
    assert!(drafted > 0);
    let o = whale(&["info", g.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let missing = gguf_with_nextn("nextn-missing", |t| t.retain(|x| x.0 != "blk.3.nextn.hnorm.weight"));
    expect_error(&whale(&["info", missing.to_str().unwrap()]), &["blk.3.nextn.hnorm.weight"]);
    let wrong = gguf_with_nextn("nextn-shape", |t| {
        let eh = t.iter_mut().find(|x| x.0 == "blk.3.nextn.eh_proj.weight").unwrap();
        eh.1 = vec![64, 128];
    });
    expect_error(&whale(&["info", wrong.to_str().unwrap()]), &["blk.3.nextn.eh_proj.weight"]);
}

/// `whale serve --spec mtp:K`: four requests at once, batched with their
/// drafts checked in one main pass, give exactly what the server without
/// speculation gives (texts, and log-probabilities within 1e-5: the checking
/// pass computes the same rows as single-token steps, bit for bit by the
/// batching contract, so only the summation order of the log-softmax could
/// differ, far below that), and again when their prompts come back from the
/// prefix cache with the draft layer's rows. A sampled request (seeded) and a
/// JSON-mode one (no drafts under a grammar) run in the same batch. `/metrics`
/// counts the drafts.
#[test]
fn mtp_in_the_server_batches_and_keeps_the_greedy_outputs() {
    use serde_json::{json, Value};
    use server_common::{post, Server};
    let d = with_mtp_layer("mtpserve", drafting_eh_proj);
    std::fs::copy(fixtures().join("tokenizer/tokenizer.json"), d.join("tokenizer.json")).unwrap();
    let prompts: [&[u32]; 4] = [&[5, 6, 7], &[1], &[900, 31, 4, 4, 77, 512, 3, 9, 10, 11, 12], &[44, 45]];
    let body = |ids: &[u32]| json!({"prompt": ids, "max_tokens": 20, "temperature": 0, "logprobs": 2});
    let sampled = json!({"prompt": [7, 8, 9], "max_tokens": 12, "temperature": 1.0, "seed": 3});
    let grammar = json!({"prompt": [7, 8], "max_tokens": 8, "temperature": 0,
        "response_format": {"type": "json_object"}});
    let together = |s: &Server| -> Vec<Value> {
        std::thread::scope(|sc| {
            let mut hs: Vec<_> =
                prompts.iter().map(|p| sc.spawn(move || post(s, "/v1/completions", &body(p)))).collect();
            hs.push(sc.spawn(|| post(s, "/v1/completions", &sampled)));
            hs.push(sc.spawn(|| post(s, "/v1/completions", &grammar)));
            hs.into_iter()
                .map(|h| {
                    let (status, v) = h.join().unwrap();
                    assert_eq!(status, 200, "{v}");
                    v
                })
                .collect()
        })
    };
    let plain = Server::start(&d, &["--spec", "none", "--parallel", "6", "--ctx", "256"]);
    let want = together(&plain);
    assert_eq!(plain.metric("whale_spec_draft_tokens_total"), 0.0);
    drop(plain);
    let text = |v: &Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let logprobs = |v: &Value| -> Vec<f64> {
        v["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    };
    for k in 1..=3 {
        let s = Server::start(&d, &["--spec", &format!("mtp:{k}"), "--parallel", "6", "--ctx", "256"]);
        for round in 0..2 {
            let got = together(&s);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                if j == 4 {
                    // Sampled: the same length and a valid answer; its draws
                    // differ from the plain server's (drafts use the RNG too).
                    assert_eq!(g["usage"]["completion_tokens"], w["usage"]["completion_tokens"], "{g}");
                    continue;
                }
                assert_eq!(text(g), text(w), "request {j}, mtp:{k}, round {round}");
                if j < 4 {
                    let (a, b) = (logprobs(g), logprobs(w));
                    assert_eq!(a.len(), b.len());
                    for (x, y) in a.iter().zip(&b) {
                        assert!((x - y).abs() <= 1e-5, "request {j}, mtp:{k}: logprob {x} vs {y}");
                    }
                }
            }
            if round == 1 {
                assert!(got[0]["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{}", got[0]);
            }
        }
        let (steps, drafted, accepted) = (
            s.metric("whale_spec_steps_total"),
            s.metric("whale_spec_draft_tokens_total"),
            s.metric("whale_spec_accepted_tokens_total"),
        );
        eprintln!("mtp:{k}: {steps} checking passes, {accepted} of {drafted} drafts accepted");
        assert!(steps > 0.0 && drafted >= steps && drafted <= k as f64 * steps, "{steps} {drafted}");
        assert!(accepted <= drafted);
        let rate = s.metric("whale_spec_acceptance_ratio");
        assert!((rate - accepted / drafted).abs() < 1e-9, "{rate}");
    }
}

/// Sampled speculative decoding keeps the model's distribution. With
/// top-k 3 at temperature 1 the first three tokens after a prompt have 27
/// possible values, whose exact probabilities the main model gives one
/// token at a time. 4000 seeded runs with 2 drafts a step (the second and
/// third tokens come from rejection sampling against the draft layer) must
/// fit them: Pearson's chi-square below its 1e-4 critical value (cells
/// expected below 5 pooled). Drafting from the draft layer's own
/// distribution without the check fails this by far (the draft layer is
/// not the model); the seeds are fixed, so the test is deterministic.
#[test]
fn mtp_rejection_sampling_keeps_the_distribution() {
    use std::collections::HashMap;
    use whale_engine::formats::weights::WeightStore;
    use whale_engine::models::{load_weights, CacheType, LoadOptions, Logits};
    use whale_engine::serving::sampler::{Sampler, SamplerConfig};
    use whale_engine::serving::speculative;

    let dir = with_mtp_layer("mtpstat", drafting_eh_proj);
    let store = WeightStore::open(&dir).unwrap();
    let opts = LoadOptions { threads: 1, cache_type: CacheType::F32, ..Default::default() };
    let model = load_weights(&store, "deepseek_v3", opts).unwrap();
    let d = model.drafter().expect("the model has an MTP layer");
    let cfg = SamplerConfig { temperature: 1.0, top_k: 3, top_p: 1.0, min_p: 0.0, ..SamplerConfig::default() };
    let prompt = [5u32, 6, 7];
    let s = Sampler::new(cfg.clone());
    let dist = |ids: &[u32]| {
        let mut c = model.new_cache(16);
        let mut l = model.forward(&mut c, ids, Logits::Last).unwrap();
        s.distribution(&mut l, ids)
    };
    let mut exact: HashMap<Vec<u32>, f64> = HashMap::new();
    for (a, pa) in dist(&prompt) {
        let p1: Vec<u32> = prompt.iter().copied().chain([a]).collect();
        for (b, pb) in dist(&p1) {
            let p2: Vec<u32> = p1.iter().copied().chain([b]).collect();
            for (c, pc) in dist(&p2) {
                exact.insert(vec![a, b, c], pa as f64 * pb as f64 * pc as f64);
            }
        }
    }
    assert_eq!(exact.len(), 27);
    let runs = 4000u64;
    let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..runs {
        let mut sm = Sampler::new(SamplerConfig { seed: Some(seed), ..cfg.clone() });
        let (toks, st) = speculative::generate(model.as_ref(), d, &prompt, 3, 2, 16, &mut sm, &mut |_| false).unwrap();
        *counts.entry(toks).or_default() += 1;
        drafted += st.drafted;
        accepted += st.accepted;
    }
    assert!(counts.keys().all(|k| exact.contains_key(k)), "a sequence outside top-k 3: {counts:?}");
    // Pearson's chi-square, cells with fewer than 5 expected pooled.
    let (mut chi2, mut cells, mut pool_e, mut pool_o) = (0f64, 0usize, 0f64, 0f64);
    for (k, &p) in &exact {
        let (e, o) = (p * runs as f64, counts.get(k).copied().unwrap_or(0) as f64);
        if e < 5.0 {
            (pool_e, pool_o) = (pool_e + e, pool_o + o);
        } else {
            chi2 += (o - e).powi(2) / e;
            cells += 1;
        }
    }
    if pool_e > 0.0 {
        chi2 += (pool_o - pool_e).powi(2) / pool_e;
        cells += 1;
    }
    // Wilson-Hilferty: the chi-square quantile at 1 - 1e-4 (z = 3.719).
    let df = (cells - 1) as f64;
    let crit = df * (1.0 - 2.0 / (9.0 * df) + 3.719 * (2.0 / (9.0 * df)).sqrt()).powi(3);
    eprintln!("chi-square {chi2:.1} over {cells} cells (critical {crit:.1}); drafts accepted {accepted} of {drafted}");
    assert!(chi2 < crit, "sampled speculative decoding is off the model's distribution: chi2 {chi2:.1} >= {crit:.1}");
    // 108 of 12000 with these weights (the draft layer is random, so its
    // top 3 seldom overlap the model's): enough to run the accepting path.
    assert!(accepted >= 50, "too few drafts accepted ({accepted} of {drafted}) to test the accepting path");
}
