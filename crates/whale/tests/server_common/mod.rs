//! What the `server_*` tests share: starting the real `whale serve` binary on
//! a free loopback port, finding the test models, and talking HTTP through
//! curl (a real client, run as a process).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A model fetched by `scripts/fetch-test-models.sh` into the whale cache.
pub fn cached_model(file: &str) -> PathBuf {
    let home = std::env::var("WHALE_HOME").map(PathBuf::from).unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
        base.join("whale")
    });
    let p = home.join("models").join(file);
    assert!(p.exists(), "{} is missing: run scripts/fetch-test-models.sh first (scripts/test does)", p.display());
    p
}

pub fn smollm2() -> PathBuf {
    cached_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn qwen_coder() -> PathBuf {
    cached_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf-reference")
}

/// The tiny DeepSeek-V3 GGUF (real vocabulary, random weights, no template).
pub fn tiny_deepseek() -> PathBuf {
    fixtures().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf")
}

/// The DeepSeek-R1 chat template (from the R1-Distill GGUF, kept in the
/// engine's test data), written to a file for `--chat-template-file`.
pub fn r1_template_file() -> PathBuf {
    let refs =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../whale-engine/tests/data/tokenizer/chat_templates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&refs).unwrap()).unwrap();
    let tpl = v["models"]["r1_distill_qwen"]["template"].as_str().expect("R1 template").to_string();
    let p = std::env::temp_dir().join(format!("whale-r1-template-{}.jinja", std::process::id()));
    std::fs::write(&p, tpl).unwrap();
    p
}

/// A running `whale serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Start `whale serve MODEL --port 0 ARGS...` and wait until it listens.
    pub fn start(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_whale"))
            .arg("serve")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("WHALE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start whale serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("on http://") {
                    let addr = line[at + 3..].split_whitespace().next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("whale serve did not start; its output:\n{}", log.lock().unwrap());
            }
        };
        Server { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A metric's value from `/metrics` (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = curl(&[&self.url("/metrics")]);
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).map(|v| v.trim().parse().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run curl with `args`; returns (HTTP status, body). The status is 0 when
/// curl itself failed (a time-out included: a stream that never ends fails).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = if out.status.success() { code.trim().parse().unwrap_or(0) } else { 0 };
    (code, body.to_string())
}

/// POST a JSON body; returns (status, parsed JSON body).
pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    post_with(server, path, body, &[])
}

pub fn post_with(server: &Server, path: &str, body: &Value, headers: &[&str]) -> (u16, Value) {
    post_url(&server.url(path), body, headers)
}

/// POST a JSON body to any URL (a worker, or a gateway in front of workers).
pub fn post_url(url: &str, body: &Value, headers: &[&str]) -> (u16, Value) {
    let data = body.to_string();
    let mut args = vec!["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &data];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let (code, text) = curl(&args);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text:?}"));
    (code, v)
}

/// POST a streaming request; returns (status, the SSE payloads in order, the
/// comment lines seen).
pub fn post_stream(server: &Server, path: &str, body: &Value) -> (u16, Vec<String>, Vec<String>) {
    let data = body.to_string();
    let url = server.url(path);
    let (code, text) =
        curl(&["-N", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &data, &url]);
    let (data, comments) = parse_sse(&text);
    (code, data, comments)
}

/// Split an SSE body into `data:` payloads and `:` comments.
pub fn parse_sse(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut data, mut comments) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            data.push(d.trim_start().to_string());
        } else if line.starts_with(':') {
            comments.push(line.to_string());
        }
    }
    (data, comments)
}

/// The chat message's content of a non-streamed answer.
pub fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

/// Check an error body's shape and return its message.
pub fn error_message(v: &Value) -> String {
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string() && e.get("code").is_some(), "error shape: {v}");
    e["message"].as_str().unwrap().to_string()
}

/// `whale run MODEL --chat -p PROMPT -n N --temp 0`'s text (stdout without the final newline).
pub fn whale_run_chat(model: &Path, prompt: &str, n: usize) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_whale"))
        .arg("run")
        .arg(model)
        .args(["--chat", "-p", prompt, "-n", &n.to_string(), "--temp", "0", "--json"])
        .env("WHALE_LOG", "off")
        .output()
        .expect("run whale");
    assert!(out.status.success(), "whale run failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("whale run --json");
    v["text"].as_str().unwrap().to_string()
}

/// Wait until `cond` holds (checked every 20 ms), at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A streaming request in a curl process; its output lines arrive on a channel.
pub struct StreamingCurl {
    child: Child,
    lines: Receiver<String>,
}

impl StreamingCurl {
    pub fn start(server: &Server, body: &Value) -> StreamingCurl {
        let mut child = Command::new("curl")
            .args(["-sN", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &body.to_string()])
            .arg(server.url("/chat/completions"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        StreamingCurl { child, lines }
    }

    /// Lines until one satisfies `f` (that one included), at most `limit`.
    pub fn until(&self, limit: Duration, f: impl Fn(&str) -> bool) -> Vec<String> {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = limit.checked_sub(t0.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = f(&l);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no matching line within {limit:?}; got {seen:?}");
    }

    /// Drop the connection, as a client that goes away does.
    pub fn disconnect(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
