//! Greedy generation on real quantized GGUF models against llama.cpp.
//!
//! Reference: llama.cpp (commit 0c1e57098, CPU) greedy ids for the raw prompt
//! "The capital of France is" (no BOS, no template), 32 tokens, recorded in the
//! engine-core issue. Two engines that round differently can only be required
//! to agree where the choice is clear. So the ids must match at every step
//! whose top-1/top-2 logit margin (in whale's own logits) is at least
//! `NEAR_TIE`; where whale picks otherwise at a near-tie, the test feeds
//! llama.cpp's token (teacher forcing through `--prompt-ids`) and requires the
//! rest to match again. At most `MAX_TIES` such steps are allowed. 0.05 is
//! well above the known near-ties (llama.cpp's own gaps there are 0.005 and
//! 0.008 in log-probability) and well below every other step's margin.

use std::process::Command;

const NEAR_TIE: f32 = 0.05;
const MAX_TIES: usize = 2;

fn run_json(model: &str, prompt_ids: &[u32], n: usize) -> serde_json::Value {
    let ids: Vec<String> = prompt_ids.iter().map(|i| i.to_string()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args([
            "run",
            model,
            "--prompt-ids",
            &ids.join(","),
            "-n",
            &n.to_string(),
            "--temp",
            "0",
            "--json",
            "--top-logits",
            "2",
        ])
        .output()
        .expect("run whale");
    assert!(out.status.success(), "whale failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn check(model: &str, want_prompt: &[u32], want: &[u32]) {
    // whale's own tokenization of the prompt.
    let out = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(["run", model, "-p", "The capital of France is", "-n", "0", "--json"])
        .output()
        .expect("run whale");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["prompt_ids"], serde_json::json!(want_prompt), "{model}: prompt tokens");
    let mut done = 0;
    let mut ties = 0;
    while done < want.len() {
        let mut prompt = want_prompt.to_vec();
        prompt.extend_from_slice(&want[..done]);
        let v = run_json(model, &prompt, want.len() - done);
        let steps = v["steps"].as_array().unwrap();
        let mut diverged = false;
        for (j, step) in steps.iter().enumerate() {
            let k = done + j;
            let top = step["top"].as_array().unwrap();
            let margin = top[0][1].as_f64().unwrap() as f32 - top[1][1].as_f64().unwrap() as f32;
            let got = step["id"].as_u64().unwrap() as u32;
            if got != want[k] {
                assert!(
                    margin < NEAR_TIE,
                    "{model}: step {k} differs from llama.cpp ({got} vs {}) with margin {margin}",
                    want[k]
                );
                ties += 1;
                assert!(ties <= MAX_TIES, "{model}: more than {MAX_TIES} near-tie divergences");
                eprintln!("{model}: step {k} is a near-tie (margin {margin}); continuing from llama.cpp's token");
                done = k + 1;
                diverged = true;
                break;
            }
        }
        if !diverged {
            assert_eq!(steps.len(), want.len() - done, "{model}: stopped early");
            done = want.len();
        }
    }
}

#[test]
fn qwen25_coder_05b_q4_k_m_matches_llama_cpp() {
    check(
        "qwen2.5-coder-0.5b",
        &[785, 6722, 315, 9625, 374],
        &[
            12095, 13, 12095, 374, 7407, 304, 279, 10200, 30282, 949, 315, 9625, 13, 576, 6722, 315, 9625, 374, 7407,
            304, 279, 10200, 30282, 949, 315, 9625, 13, 12095, 374, 7407, 304, 279,
        ],
    );
}

#[test]
fn smollm2_135m_q4_1_matches_llama_cpp() {
    check(
        "smollm2-135m",
        &[504, 3575, 282, 4649, 314],
        &[
            7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35, 33, 33, 2215, 701, 30, 198, 198,
            504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35, 33,
        ],
    );
}

/// Perplexity computed as llama-perplexity does, on a text every Debian
/// machine has. llama.cpp 0c1e57098 on the same file and model, 2 threads:
/// `llama-perplexity -m SmolLM2-135M-Instruct.Q4_1.gguf -f /usr/share/common-licenses/GPL-3 -c 256 --chunks 10`
/// gives 22.2869 with its default f16 KV cache, and 22.2021 with
/// `-ctk f32 -ctv f32 -fa off`. The cache type alone moves it by 0.4 %, so
/// whale runs with each cache type and must be within 0.25 % of llama.cpp's
/// figure for that type.
#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    for (cache_type, want) in [("f16", 22.2869), ("f32", 22.2021)] {
        let out = Command::new(env!("CARGO_BIN_EXE_whale"))
            .args([
                "perplexity",
                "smollm2-135m",
                "-f",
                "/usr/share/common-licenses/GPL-3",
                "-c",
                "256",
                "--chunks",
                "10",
                "--cache-type",
                cache_type,
                "--json",
            ])
            .output()
            .expect("run whale");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ppl = v["ppl"].as_f64().unwrap();
        assert_eq!(v["chunks"], 10);
        let rel = (ppl - want).abs() / want;
        eprintln!("{cache_type} cache: whale PPL {ppl:.4}, llama.cpp {want}: {:.3} % apart", rel * 100.0);
        assert!(rel < 0.0025, "{cache_type} cache: whale PPL {ppl} vs llama.cpp {want}");
    }
}
