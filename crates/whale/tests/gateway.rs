//! whale workers behind an existing distributed serving engine: the SGLang
//! Model Gateway (`sglang-router` 0.3.2 from PyPI, which scripts/test
//! installs into target/pyenv as it does the `openai` package), on loopback.
//!
//! - The official `openai` client gets the same answers through the gateway
//!   as from a worker, streamed and not, with `reasoning_content`, tool calls
//!   and DeepSeek's cache-hit usage.
//! - Cache-aware routing keeps a shared system prompt cached: after the first
//!   request a worker serves, every request finds at least 90 % of the
//!   prefix in whale's prefix cache. Requests that alternate between several
//!   system prompts find theirs far more often than under round robin.
//! - A worker killed under a load of requests loses none of them: the
//!   gateway retries them on the other worker, and keeps serving.
//!
//! The tests take turns (one lock): each starts its own workers and gateway.

mod server_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use server_common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn pyenv_bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: scripts/test installs it (target/pyenv/bin/pip install sglang-router==0.3.2 openai)",
        p.display()
    );
    p
}

/// A running `smg launch` in front of `workers`; killed when dropped.
struct Gateway {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    fn start(policy: &str, workers: &[&Server]) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(pyenv_bin("smg"))
            .args(["launch", "--host", "127.0.0.1", "--port", &port.to_string(), "--policy", policy])
            .arg("--worker-urls")
            .args(workers.iter().map(|w| w.base.clone()))
            // Notice a dead worker within seconds; retry soon.
            .args(["--health-check-interval-secs", "1", "--health-failure-threshold", "2"])
            .args(["--worker-startup-timeout-secs", "120", "--worker-startup-check-interval", "1"])
            .args(["--retry-initial-backoff-ms", "20", "--retry-max-backoff-ms", "500"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start smg");
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, log2) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let g = Gateway { child, base: format!("http://127.0.0.1:{port}"), log };
        // Workers register in the background: wait until all are healthy.
        let ready = wait_until(Duration::from_secs(120), || {
            let (code, text) = curl(&[&format!("{}/workers", g.base)]);
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let healthy = v["workers"].as_array().map_or(0, |w| w.iter().filter(|w| w["is_healthy"] == true).count());
            code == 200 && healthy == workers.len()
        });
        assert!(ready, "the gateway did not register {} healthy workers; its log:\n{}", workers.len(), g.log());
        g
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workers(model: &Path, n: usize, args: &[&str]) -> Vec<Server> {
    (0..n).map(|_| Server::start(model, &[&["--threads", "1"], args].concat())).collect()
}

#[test]
fn openai_client_gets_the_same_answers_through_the_gateway() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let template = r1_template_file();
    let ws = workers(&tiny_deepseek(), 2, &["--ctx", "512", "--chat-template-file", template.to_str().unwrap()]);
    let g = Gateway::start("cache_aware", &ws.iter().collect::<Vec<_>>());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/same_answers.py");
    let out = Command::new(pyenv_bin("python")).arg(&script).args([&g.base, &ws[0].base]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        g.log()
    );
    // What the gateway asked of the workers to register them.
    for w in &ws {
        let (_, info) = curl(&[&w.url("/server_info")]);
        assert!(info.contains("\"served_model_name\"") && !info.contains("model_path"), "{info}");
    }
}

/// A long system prompt: about 420 tokens of SmolLM2's vocabulary.
fn system_prompt(topic: &str) -> String {
    let rules: Vec<String> =
        (0..25).map(|i| format!("Rule {i}: when asked about {topic}, state fact number {i} precisely.")).collect();
    format!("You are an assistant for questions about {topic}. {}", rules.join(" "))
}

fn chat(g: &Gateway, system: &str, question: &str) -> Value {
    let body = json!({"model": "smollm2", "max_tokens": 4, "temperature": 0, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": question}]});
    let (code, v) = post_url(&g.url("/v1/chat/completions"), &body, &[]);
    assert_eq!(code, 200, "{v}\ngateway log:\n{}", g.log());
    v
}

/// Which worker served the last request: the one whose engine count grew.
fn served_by(ws: &[Server], before: &mut [f64]) -> usize {
    let now: Vec<f64> = ws.iter().map(|w| w.metric("whale_engine_requests_total")).collect();
    let i = (0..ws.len()).find(|&i| now[i] > before[i]).expect("no worker counted the request");
    before.copy_from_slice(&now);
    i
}

/// Tokens two chat prompts with `system` and different questions share, as
/// whale's tokenizer and SmolLM2's template make them (`whale run -n 0`).
fn shared_prefix(model: &Path, system: &str) -> usize {
    let ids = |q: &str| -> Vec<u64> {
        let out = Command::new(env!("CARGO_BIN_EXE_whale"))
            .arg("run")
            .arg(model)
            .args(["--chat", "--system", system, "-p", q, "-n", "0", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).expect("whale run --json");
        v["prompt_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
    };
    let (a, b) = (ids("Question 1: one thing?"), ids("Question 2: one thing?"));
    a.iter().zip(&b).take_while(|(x, y)| x == y).count()
}

#[test]
fn cache_aware_routing_keeps_system_prompts_cached() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let model = smollm2();
    let ws = workers(&model, 2, &["--ctx", "1024"]);
    let system = system_prompt("astronomy");
    let prefix = shared_prefix(&model, &system);
    assert!(prefix > 300, "{prefix}");
    let tenants: Vec<String> = ["sailing", "cooking", "chess"].iter().map(|t| system_prompt(t)).collect();
    let mut report = Vec::new();
    for policy in ["cache_aware", "round_robin"] {
        for w in &ws {
            let (code, v) = post_url(&w.url("/flush_cache"), &json!({}), &[]);
            assert_eq!(code, 200, "{v}");
        }
        let g = Gateway::start(policy, &ws.iter().collect::<Vec<_>>());
        let mut counts: Vec<f64> = ws.iter().map(|w| w.metric("whale_engine_requests_total")).collect();
        // One shared system prompt, 8 requests.
        let mut seen = [false; 2];
        let (mut hits, mut firsts) = (0u64, 0);
        for q in 0..8 {
            let v = chat(&g, &system, &format!("Question {q}: one thing?"));
            let cached = v["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap();
            let w = served_by(&ws, &mut counts);
            if std::mem::replace(&mut seen[w], true) {
                assert!(
                    cached as f64 >= 0.9 * prefix as f64,
                    "{policy}: request {q} on worker {w}: {cached} of {prefix}"
                );
            } else {
                firsts += 1;
            }
            hits += cached;
        }
        // Three system prompts in turn, three rounds.
        let mut tenant_hits = 0;
        for round in 0..3 {
            for t in &tenants {
                let v = chat(&g, t, &format!("Question {round}: one thing?"));
                tenant_hits += v["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap();
                served_by(&ws, &mut counts);
            }
        }
        report.push((policy, hits, firsts, tenant_hits));
    }
    eprintln!(
        "shared prefix {prefix} tokens; (policy, hit tokens of 8 requests, workers used, hit tokens of 9 alternating):"
    );
    eprintln!("{report:?}");
    let (ca, rr) = (&report[0], &report[1]);
    // Cache-aware sends a known prefix to the worker that has it: one cold
    // start instead of one per worker, and with alternating system prompts
    // each is computed once, not once per worker.
    assert!(ca.1 > rr.1, "{report:?}");
    assert!(ca.3 as f64 >= 1.5 * rr.3 as f64, "{report:?}");
}

#[test]
fn a_killed_worker_loses_no_request() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut ws = workers(&smollm2(), 2, &["--ctx", "512", "--parallel", "4"]);
    let g = Gateway::start("round_robin", &ws.iter().collect::<Vec<_>>());
    let url = g.url("/v1/chat/completions");
    let load: Vec<_> = (0..12)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = json!({"model": "smollm2", "max_tokens": 48, "temperature": 0,
                    "messages": [{"role": "user", "content": format!("Count from {i} to {} in words.", i + 40)}]});
                let data = body.to_string();
                curl(&["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &data, &url])
            })
        })
        .collect();
    // Kill the second worker while it generates.
    let doomed = ws.pop().unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || doomed.metric("whale_completion_tokens_total") > 0.0),
        "the second worker never got a request"
    );
    drop(doomed);
    let mut answered = 0;
    for h in load {
        let (code, text) = h.join().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}), status {code}: {text}"));
        if code == 200 {
            assert!(!content(&v).is_empty(), "{v}");
            answered += 1;
        } else {
            // A clear error, never a hang or a dropped connection.
            assert!(code >= 400 && v["error"]["message"].is_string(), "{code}: {v}");
        }
    }
    eprintln!("{answered} of 12 requests answered after a worker was killed under load");
    assert_eq!(answered, 12, "gateway log:\n{}", g.log());
    // The gateway goes on serving with the worker that is left.
    for q in 0..3 {
        let body =
            json!({"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": format!("Hi {q}")}]});
        let (code, v) = post_url(&url, &body, &[]);
        assert_eq!(code, 200, "{v}");
    }
}
