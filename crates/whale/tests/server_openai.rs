//! `whale serve` through the official `openai` Python package: every answer
//! must parse into the package's types and mean what the client expects.
//!
//! The checks are in `openai_client/checks.py`; they run with the virtual
//! environment `scripts/test` makes (`target/pyenv`, with `openai`), or the
//! Python named by `WHALE_TEST_PYTHON`.

mod server_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use server_common::*;

fn python() -> PathBuf {
    let p = std::env::var_os("WHALE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: scripts/test creates it (python3 -m venv target/pyenv && target/pyenv/bin/pip install openai jsonschema)",
        p.display()
    );
    p
}

/// Run one check of `checks.py` against `server`.
fn check(server: &Server, key: &str, name: &str, arg: Option<&str>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client/checks.py");
    let out =
        Command::new(python()).arg(&script).args([&server.base, key, name]).args(arg).output().expect("run python");
    assert!(
        out.status.success(),
        "check {name} failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

#[test]
fn openai_client_chat_stream_completions_logprobs_json_prefix_seed_errors() {
    let model = smollm2();
    let want = whale_run_chat(&model, "What is the capital of France?", 16);
    let s = Server::start(&model, &["--ctx", "512"]);
    check(&s, "none", "chat", Some(&want));
    for name in ["stream", "completions", "logprobs", "json_mode", "json_schema", "prefix", "seed", "errors"] {
        check(&s, "none", name, None);
    }
}

#[test]
fn openai_client_authentication() {
    let s = Server::start(&tiny_deepseek(), &["--ctx", "128", "--api-key", "sk-local"]);
    check(&s, "sk-local", "auth", None);
}

#[test]
fn openai_client_fim_and_tool_calls_on_qwen_coder() {
    let s = Server::start(&qwen_coder(), &["--ctx", "1024"]);
    check(&s, "none", "fim", None);
    check(&s, "none", "tools", None);
    check(&s, "none", "strict_tools", None);
}

#[test]
fn openai_client_queue_full_and_disconnect() {
    let s = Server::start(&smollm2(), &["--ctx", "512", "--parallel", "1", "--max-queue", "0"]);
    // Hold the only slot with a long stream, then the client must get a 429.
    let long = json!({"messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
                      "max_tokens": 400, "temperature": 0, "stream": true});
    let holder = StreamingCurl::start(&s, &long);
    holder.until(Duration::from_secs(60), |l| l.contains("\"content\""));
    check(&s, "none", "queue_full", None);
    holder.disconnect();
    assert!(wait_until(Duration::from_secs(10), || s.metric("whale_running_requests") == 0.0));
    // The client closes a stream after one chunk; its slot frees at once.
    check(&s, "none", "disconnect", None);
}

/// `images.generate` of the official client against a Janus model (the tiny
/// random one whose codes match transformers): the served PNG is the one
/// `whale imagine --temp 0` writes; the endpoint's rules answer 400.
#[test]
fn openai_client_images_generate() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../whale-engine/tests/data/janus/tiny");
    let png = std::env::temp_dir().join(format!("whale-served-{}.png", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(["imagine", model.to_str().unwrap(), "-p", "A whale swims in a lake", "--temp", "0", "--cfg", "5"])
        .args(["-o", png.to_str().unwrap(), "-t", "2"])
        .output()
        .expect("run whale imagine");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = Server::start(&model, &["--ctx", "1024"]);
    check(&s, "none", "images", Some(png.to_str().unwrap()));
    let _ = std::fs::remove_file(&png);
    check(&s, "none", "chat_text_on_janus", None);
    let img = model.join("../expected/image.png");
    let out = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(["run", model.to_str().unwrap(), "--image", img.to_str().unwrap(), "--chat", "-p", "What is this?"])
        .args(["-n", "5", "--temp", "0", "--json", "-t", "2"])
        .output()
        .expect("run whale");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arg = json!({"image": img, "text": run["text"]}).to_string();
    check(&s, "none", "chat_image", Some(&arg));
    // A text-only model refuses the route with a clear 400.
    let tpl = r1_template_file();
    let t = Server::start(&tiny_deepseek(), &["--ctx", "128", "--chat-template-file", tpl.to_str().unwrap()]);
    let (code, body) = post(&t, "/v1/images/generations", &json!({"prompt": "a whale"}));
    assert_eq!(code, 400, "{body}");
    assert!(error_message(&body).contains("cannot generate images"), "{body}");
    // An image sent to a text-only model, and a broken one to Janus.
    let part = |url: &str| json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]});
    let (code, body) = post(&t, "/v1/chat/completions", &part("data:image/png;base64,AAAA"));
    assert_eq!(code, 400, "{body}");
    assert!(error_message(&body).contains("does not read images"), "{body}");
    let (code, body) = post(&s, "/v1/chat/completions", &part("data:image/png;base64,iVBORw0KGgo="));
    assert_eq!(code, 400, "{body}");
    assert!(error_message(&body).contains("image 0"), "{body}");
    // The prefix cache never serves one image's rows for another: the same
    // text with image A, then B, then A again gives A's log-probabilities
    // twice and B's apart.
    use base64::Engine as _;
    let b64 = |f: &str| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(model.join("../expected").join(f)).unwrap())
    };
    let ask = |url: String| {
        let body = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is this?"}]}],
            "max_tokens": 1, "temperature": 0, "logprobs": true, "top_logprobs": 5});
        // Too large for a command line: curl reads it from a file.
        let f = std::env::temp_dir().join(format!("whale-img-body-{}.json", std::process::id()));
        std::fs::write(&f, body.to_string()).unwrap();
        let at = format!("@{}", f.display());
        let url = s.url("/v1/chat/completions");
        let (code, text) = curl(&["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &at, &url]);
        let _ = std::fs::remove_file(&f);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(code, 200, "{v}");
        v["choices"][0]["logprobs"]["content"][0]["top_logprobs"].clone()
    };
    let (a_url, b_url) =
        (format!("data:image/png;base64,{}", b64("image.png")), format!("data:image/jpeg;base64,{}", b64("image.jpg")));
    let a1 = ask(a_url.clone());
    let b = ask(b_url);
    let a2 = ask(a_url);
    assert_eq!(a1, a2);
    assert_ne!(a1, b, "image B was answered from image A's cache");
    let (code, body) = post(&s, "/v1/chat/completions", &part("data:text/plain;base64,aGk="));
    assert_eq!(code, 400, "{body}");
    assert!(error_message(&body).contains("not an image type"), "{body}");
    let (code, body) = post(&s, "/v1/images/generations", &json!({"prompt": 5}));
    assert_eq!(code, 400, "{body}");
    assert!(error_message(&body).contains("prompt"), "{body}");
    // A client that gives up mid-generation: its job stops, and the next
    // request is served.
    let data = json!({"prompt": "a lake", "n": 4}).to_string();
    let url = s.url("/v1/images/generations");
    let (code, _) = curl(&[
        "--max-time",
        "0.5",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
        &url,
    ]);
    assert_eq!(code, 0, "the request should have timed out on the client's side");
    let t0 = std::time::Instant::now();
    let (code, body) = post(&s, "/v1/images/generations", &json!({"prompt": "a lake", "temperature": 0}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    eprintln!("one image after an abandoned request of four: {:.1}s", t0.elapsed().as_secs_f64());
}
