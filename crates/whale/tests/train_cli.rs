//! `whale train`: DeepSeek-R1's recipe end to end through the binary, and
//! its refusals.
//!
//! The acceptance run (one seed here; the three-seed run is in the README):
//! the SFT start imitates a teacher that forgets 70 % of carries, then three
//! arms run the same number of steps from it: (A) GRPO with the verifier,
//! (B) GRPO with a random reward, (C) more SFT on the teacher. Held-out
//! greedy exact match is measured on 1000 problems never trained on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn whale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale")).args(args).env("WHALE_LOG", "off").output().expect("run whale")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whale-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn json_of(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "whale failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn log_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// GRPO with the verifier lifts held-out accuracy by at least 25 points with
/// non-overlapping 95 % Wilson intervals (1000 problems: the intervals are
/// about ±3 points); the random reward and continued SFT do not gain more
/// than 3 points; the train reward of the last tenth of steps beats the first
/// tenth by 0.15. The engine's sampling log-probabilities match the
/// trainer's within 1e-4 at every step (both f32, see the rollout test).
#[test]
fn grpo_beats_random_reward_and_more_sft_from_the_same_start() {
    let d = tmp("acceptance");
    let steps = "150";
    let sft = json_of(&whale(&[
        "train",
        "sft",
        "--task",
        "addition",
        "--seed",
        "0",
        "--out",
        d.join("sft").to_str().unwrap(),
        "--json",
    ]));
    let start = f(&sft, "heldout");
    assert!((0.1..0.7).contains(&start), "the SFT start should be flawed but not hopeless: {start}");
    let init = d.join("sft/checkpoint");
    let arm = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec!["train", "grpo", "--task", "addition", "--seed", "0", "--steps", steps];
        args.extend(["--init", init.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
        args.extend(extra);
        json_of(&whale(&args))
    };
    let a = arm("a", &[]);
    let b = arm("b", &["--reward", "random", "--eval-every", "0"]);
    let c = json_of(&whale(&[
        "train",
        "sft",
        "--task",
        "addition",
        "--seed",
        "0",
        "--steps",
        steps,
        "--lr",
        "3e-4",
        "--init",
        init.to_str().unwrap(),
        "--out",
        d.join("c").to_str().unwrap(),
        "--json",
    ]));
    // The contract: these keys, in these ranges.
    for k in ["heldout_before", "heldout_after", "pass1_before", "pass1_after", "pass8_before", "pass8_after"] {
        assert!((0.0..=1.0).contains(&f(&a, k)), "{k}");
    }
    assert_eq!(a["steps"], 150);
    assert_eq!(a["rollouts"], 150 * 16 * 8);
    assert!(f(&a, "seconds") > 0.0);
    assert_eq!(f(&a, "heldout_before"), start, "GRPO is evaluated on the same held-out set");

    let gain_a = f(&a, "heldout_after") - f(&a, "heldout_before");
    assert!(gain_a >= 0.25, "GRPO gained {gain_a}");
    assert!(a["heldout_after_ci95"][0].as_f64().unwrap() > a["heldout_before_ci95"][1].as_f64().unwrap());
    assert!(f(&a, "reward_last10") >= f(&a, "reward_first10") + 0.15, "{a}");
    let gain_b = f(&b, "heldout_after") - f(&b, "heldout_before");
    assert!(gain_b <= 0.03, "a random reward gained {gain_b}");
    let gain_c = f(&c, "heldout") - start;
    assert!(gain_c <= 0.03, "more SFT on the teacher gained {gain_c}");

    // The log: one record a step, engine and trainer agree, the plot is drawn.
    let recs = log_records(Path::new(a["log"].as_str().unwrap()));
    assert_eq!(recs.len(), 150);
    let gap = recs.iter().map(|r| f(r, "logp_gap_max")).fold(0.0, f64::max);
    assert!(gap < 1e-4, "engine and trainer log-probabilities differ by {gap}");
    for k in ["reward", "accuracy", "response_length", "kl", "entropy", "grad_norm", "frac_zero_std", "seconds"] {
        assert!(recs[0][k].is_number(), "{k} missing from the log");
    }
    let svg = std::fs::read_to_string(a["plot"].as_str().unwrap()).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2);
    // The checkpoint is a model folder the engine runs.
    let info = whale(&["info", a["checkpoint"].as_str().unwrap()]);
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    // Exported with its character vocabulary, it answers through `whale run`
    // in the trained format and stops at `</answer>` (an end of generation).
    let gguf = d.join("tiny.gguf");
    let e = whale(&["export", a["model"].as_str().unwrap(), "-o", gguf.to_str().unwrap(), "--type", "f32"]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let run = whale(&["run", gguf.to_str().unwrap(), "-p", "123+459=", "--temp", "0", "-n", "24"]);
    let text = String::from_utf8_lossy(&run.stdout).trim().to_string();
    let (cols, answer) = text.split_once(":<answer>").unwrap_or_else(|| panic!("no answer in {text:?}"));
    assert_eq!(cols.split(',').count(), 3, "{text:?}");
    assert!(answer.chars().all(|c| c.is_ascii_digit()) && (3..=4).contains(&answer.len()), "{text:?}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A run killed mid-way resumes from its checkpoint when the same command is
/// run again, losing at most one step, and ends where an uninterrupted run
/// ends.
#[test]
fn a_killed_run_resumes() {
    let d = tmp("resume");
    let sft_dir = d.join("sft");
    json_of(&whale(&["train", "sft", "--steps", "40", "--out", sft_dir.to_str().unwrap(), "--json"]));
    let init = sft_dir.join("checkpoint");
    let out = d.join("g");
    let args = [
        "train",
        "grpo",
        "--steps",
        "12",
        "--prompts",
        "4",
        "--eval-every",
        "0",
        "-t",
        "1",
        "--init",
        init.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_whale")).args(args).env("WHALE_LOG", "off").spawn().unwrap();
    let log = out.join("grpo/log.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |s| s.lines().count()) < 4 {
        assert!(t0.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = log_records(&log).len();
    assert!(killed_at < 12, "the run ended before it was killed");
    let r = json_of(&whale(&args));
    assert_eq!(r["steps"], 12);
    // Every step is in the log; at most one was run twice.
    let steps: Vec<u64> = log_records(&log).iter().map(|r| r["step"].as_u64().unwrap()).collect();
    let uniq: std::collections::BTreeSet<u64> = steps.iter().copied().collect();
    assert_eq!(uniq, (1..=12).collect());
    assert!(steps.len() <= 13, "{steps:?}");
    // Resuming with other settings is refused, not mixed in.
    let mut other = args.to_vec();
    other[3] = "13";
    let o = whale(&other);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("other settings"));
    let _ = std::fs::remove_dir_all(&d);
}

fn fails_with(args: &[&str], needle: &str) {
    let o = whale(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Bad input gets a clear error and exit code 1, never a panic.
#[test]
fn bad_input_is_refused_clearly() {
    let d = tmp("bad");
    let o = d.to_str().unwrap();
    fails_with(&["train", "grpo", "--task", "chess", "--out", o], "unknown task \"chess\"");
    fails_with(&["train", "grpo", "-G", "1", "--out", o], "at least 2");
    fails_with(&["train", "grpo", "--lr", "NaN", "--out", o], "learning rate");
    fails_with(&["train", "grpo", "--loss", "ppo", "--out", o], "unknown loss");
    fails_with(&["train", "grpo", "--reward", "vibes", "--out", o], "unknown --reward");
    // A model the trainer cannot differentiate (DeepSeek-V3's MLA and MoE).
    let ds = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/hf-reference/models/dsv3_b_noqlora_norope_scaling");
    fails_with(
        &["train", "grpo", "--init", ds.to_str().unwrap(), "--out", d.join("q").to_str().unwrap()],
        "cannot train",
    );
    // A missing model folder.
    fails_with(
        &["train", "grpo", "--init", d.join("nothing").to_str().unwrap(), "--out", o],
        "no such file or directory",
    );

    // A learning rate that makes the loss blow up stops with a message, and
    // the checkpoint left is the last policy whose loss was finite.
    let sft_dir = d.join("sft");
    json_of(&whale(&["train", "sft", "--steps", "20", "--out", sft_dir.to_str().unwrap(), "--json"]));
    let init = sft_dir.join("checkpoint");
    let run = d.join("nan");
    fails_with(
        &[
            "train",
            "grpo",
            "--lr",
            "1e30",
            "--steps",
            "5",
            "--prompts",
            "2",
            "--eval-every",
            "0",
            "--init",
            init.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
        "not finite",
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("grpo/checkpoint/state.json")).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() < 5);
    let info = whale(&["info", run.join("grpo/checkpoint").to_str().unwrap()]);
    assert!(info.status.success());

    // A full disk: writes beyond a 64 KiB file-size limit fail (EFBIG, the
    // kernel's answer once RLIMIT_FSIZE is reached, with SIGXFSZ ignored),
    // and the run stops with the path and the reason.
    let full = d.join("full");
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec {} train sft --steps 5 --out {}",
        env!("CARGO_BIN_EXE_whale"),
        full.display()
    );
    let o = Command::new("bash").args(["-c", &script]).env("WHALE_LOG", "off").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("model.safetensors") && err.contains("too large"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// LoRA on a real model: SmolLM2-135M (GGUF Q4_1, dequantized for
/// training) with rank-4 adapters for one GRPO step. The engine's sampling
/// log-probabilities match the trainer's within 1e-4 on this 30-layer
/// model too (both run the same f32 weights); the checkpoint is a PEFT
/// adapter, and `whale export` merges it into a GGUF that `whale run`
/// loads and answers with.
#[test]
fn lora_on_a_real_gguf_checkpoints_an_adapter_and_exports() {
    let d = tmp("lora");
    let out = d.join("run");
    let r = json_of(&whale(&[
        "train",
        "grpo",
        "--init",
        "smollm2-135m",
        "--lora-rank",
        "4",
        "--steps",
        "1",
        "--prompts",
        "1",
        "-G",
        "2",
        "--max-new",
        "12",
        "--heldout",
        "2",
        "--eval-every",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!((r["steps"].as_u64(), r["rollouts"].as_u64()), (Some(1), Some(2)));
    let recs = log_records(&out.join("grpo/log.jsonl"));
    let gap = f(&recs[0], "logp_gap_max");
    assert!(gap < 1e-4, "engine and trainer log-probabilities differ by {gap}");
    let ck = out.join("grpo/checkpoint");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["peft_type"].as_str(), cfg["r"].as_u64()), (Some("LORA"), Some(4)));
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 7);
    assert!(ck.join("adapter_model.safetensors").exists() && !ck.join("model.safetensors").exists());
    let gguf = d.join("merged.gguf");
    let e = whale(&["export", ck.to_str().unwrap(), "-o", gguf.to_str().unwrap()]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    assert!(String::from_utf8_lossy(&e.stdout).contains("LoRA merged"));
    let run = whale(&["run", gguf.to_str().unwrap(), "--chat", "-p", "What is 2 + 3?", "-n", "8", "--temp", "0"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!String::from_utf8_lossy(&run.stdout).trim().is_empty());
    let _ = std::fs::remove_dir_all(&d);
}

/// Dr. GRPO and DAPO with dynamic sampling run through the same loop: every
/// step logs how many groups had no reward spread, and DAPO with dynamic
/// sampling skips the update when every group is flat (zero grad norm).
#[test]
fn dr_grpo_and_dapo_with_dynamic_sampling_run() {
    let d = tmp("losses");
    let sft_dir = d.join("sft");
    json_of(&whale(&["train", "sft", "--steps", "30", "--out", sft_dir.to_str().unwrap(), "--json"]));
    let init = sft_dir.join("model");
    for extra in [&["--loss", "dr_grpo"][..], &["--loss", "dapo", "--dynamic-sampling"][..]] {
        let out = d.join(extra[1]);
        let mut args = vec!["train", "grpo", "--steps", "3", "--prompts", "4", "-G", "4", "--eval-every", "0"];
        args.extend(["--heldout", "20", "--init", init.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
        args.extend(extra);
        let r = json_of(&whale(&args));
        assert_eq!(r["steps"], 3);
        for rec in log_records(&out.join("grpo/log.jsonl")) {
            let flat = f(&rec, "frac_zero_std");
            assert!((0.0..=1.0).contains(&flat));
            if extra.len() == 3 && flat == 1.0 {
                assert_eq!(f(&rec, "grad_norm"), 0.0, "no group left, no update");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
