//! `whale serve` over HTTP with curl: response shapes, usage, streaming,
//! completions and FIM, log-probabilities, stop/seed, prefix completion, JSON
//! mode, tool calls, reasoning content, and every error path with its status.

mod server_common;

use std::time::Duration;

use serde_json::{json, Value};
use server_common::*;

fn chat_body(prompt: &str, max_tokens: usize) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
}

fn check_usage(u: &Value) -> (u64, u64, u64) {
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("usage.{k} missing: {u}"));
    let (p, c, hit, miss) =
        (n("prompt_tokens"), n("completion_tokens"), n("prompt_cache_hit_tokens"), n("prompt_cache_miss_tokens"));
    assert_eq!(n("total_tokens"), p + c, "{u}");
    assert_eq!(hit + miss, p, "{u}");
    (p, c, hit)
}

#[test]
fn chat_greedy_equals_whale_run_and_streams_the_same() {
    let model = smollm2();
    let prompt = "What is the capital of France?";
    let want = whale_run_chat(&model, prompt, 16);
    assert!(!want.is_empty());
    let s = Server::start(&model, &["--ctx", "512"]);
    let (code, v) = post(&s, "/chat/completions", &chat_body(prompt, 16));
    assert_eq!(code, 200, "{v}");
    assert_eq!(content(&v), want);
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "SmolLM2-135M-Instruct.Q4_1");
    let choice = &v["choices"][0];
    assert_eq!((&choice["index"], &choice["message"]["role"]), (&json!(0), &json!("assistant")));
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    assert!(choice["message"].get("reasoning_content").is_none(), "SmolLM2 is not a reasoning model: {v}");
    let (prompt_tokens, completion, hit) = check_usage(&v["usage"]);
    assert!((1..=16).contains(&completion));
    assert_eq!(hit, 0, "a fresh server has nothing cached");

    // The /v1 alias; the same prompt again is a prefix-cache hit.
    let (code, v1) = post(&s, "/v1/chat/completions", &chat_body(prompt, 16));
    assert_eq!(code, 200);
    assert_eq!(content(&v1), want);
    let (p1, _, hit1) = check_usage(&v1["usage"]);
    assert_eq!(p1, prompt_tokens);
    assert_eq!(hit1, prompt_tokens - 1, "all but the last prompt token come from the cache");

    // Streamed: role first, the same text in pieces, one finish, usage, [DONE].
    let mut body = chat_body(prompt, 16);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (code, data, _) = post_stream(&s, "/chat/completions", &body);
    assert_eq!(code, 200);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, want);
    let finishes: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [&choice["finish_reason"]]);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(check_usage(&usage_chunk["usage"]).1, completion);
}

#[test]
fn errors_have_their_status_and_shape_and_never_500() {
    let s = Server::start(&smollm2(), &["--ctx", "256", "--max-body-bytes", "8192"]);
    let long = "word ".repeat(400);
    let msgs = |c: &str| json!([{"role": "user", "content": c}]);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/chat/completions", json!({"messages": [{"role": "wizard", "content": "hi"}]}), "unknown role \"wizard\""),
        ("/chat/completions", json!({"messages": msgs("hi"), "temperature": 3}), "temperature must be between 0 and 2"),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "max_tokens": 1000}),
            "max_tokens (1000) is beyond the context of 256",
        ),
        ("/chat/completions", json!({"messages": msgs(&long)}), "the prompt is too long"),
        ("/chat/completions", json!({"messages": msgs("hi"), "max_tokens": 250}), "exceed the context of 256"),
        ("/chat/completions", json!({"messages": msgs("hi"), "max_tokens": 0}), "max_tokens must be at least 1"),
        ("/chat/completions", json!({"messages": []}), "at least one message"),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "temperature": "hot"}),
            "temperature: invalid type: string \"hot\"",
        ),
        ("/chat/completions", json!({"messages": msgs("hi"), "top_p": 0}), "top_p"),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "presence_penalty": 5}),
            "presence_penalty must be between -2 and 2",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "top_logprobs": 3}),
            "top_logprobs needs \"logprobs\": true",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "logprobs": true, "top_logprobs": 50}),
            "top_logprobs must be between 0 and 20",
        ),
        ("/chat/completions", json!({"messages": msgs("hi"), "n": 2}), "n must be 1"),
        ("/chat/completions", json!({"messages": msgs("hi"), "stop": ["a", ""]}), "stop strings must not be empty"),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "response_format": {"type": "json_schema"}}),
            "needs a \"json_schema\" object",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "response_format": {"type": "xml"}}),
            "use \"text\", \"json_object\" or \"json_schema\"",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}}),
            "response_format: the schema or grammar cannot be used",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "minLength": 5, "maxLength": 2}}}}),
            "response_format: the schema or grammar cannot be used",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "stop": ["x".repeat(300)]}),
            "a stop string is 300 bytes long; at most 256 are allowed",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "tools": vec![json!({"type": "function", "function": {"name": "f"}}); 129]}),
            "tools holds 129 entries; at most 128 are allowed",
        ),
        // Shapes a template would index: a 400 naming the field, never a panic.
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [1]}]}),
            "messages[1].tool_calls[0]: invalid type: integer `1`",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": 1}]}, {"role": "user", "content": "hi"}]}),
            "messages[0].tool_calls[0].function: invalid type: integer `1`",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"type": 7, "function": {"name": "f"}}]}, {"role": "user", "content": "hi"}]}),
            "messages[0].tool_calls[0].type: invalid type: integer `7`",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"type": "retrieval", "function": {"name": "f"}}]}, {"role": "user", "content": "hi"}]}),
            "messages[0]: tool_calls[0].type must be \"function\"",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": ["f"]}}]}, {"role": "user", "content": "hi"}]}),
            "messages[0].tool_calls[0].function.name: invalid type: sequence",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]}),
            "tools[0]: function.strict: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "tools": [{"type": "function", "function": {"name": "f"}}]}),
            "no tool-call format",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "assistant", "content": "x", "prefix": true}, {"role": "user", "content": "y"}]}),
            "only the last message may have",
        ),
        ("/chat/completions", json!({"messages": [{"content": "no role"}]}), "messages[0]: missing field `role`"),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}),
            "messages: this model does not read images",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "messages[0].content: a content part of type \"input_audio\" is not supported by this model",
        ),
        ("/chat/completions", json!({"messages": msgs("hi"), "tool_choice": 3}), "tool_choice: expected a string"),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "logit_bias": {"50000": 5}}),
            "logit_bias: \"50000\": the vocabulary has 49152 tokens",
        ),
        (
            "/chat/completions",
            json!({"messages": msgs("hi"), "logit_bias": {"5": 500}}),
            "between -100 and 100, got 500",
        ),
        ("/chat/completions", json!({"messages": "hi"}), "messages: invalid type: string \"hi\""),
        ("/completions", json!({"prompt": "hi", "max_tokens": "many"}), "max_tokens: invalid type: string"),
        ("/completions", json!({"prompt": "def f(", "suffix": "return 1"}), "no fill-in-the-middle tokens"),
        ("/completions", json!({"prompt": "hi", "echo": true}), "echo is not supported"),
        ("/completions", json!({"prompt": ""}), "the prompt is empty"),
        ("/completions", json!({"prompt": [1, 2, 999999]}), "outside the vocabulary"),
        ("/completions", json!({"prompt": ["a", "b"]}), "one prompt per request"),
        ("/completions", json!({"prompt": "hi", "logprobs": 21}), "logprobs must be between 0 and 20"),
    ];
    for (path, body, needle) in &cases {
        let (code, v) = post(&s, path, body);
        assert_eq!(code, 400, "{path} {body}: {v}");
        let msg = error_message(&v);
        assert!(msg.contains(needle), "{body}: message {msg:?} lacks {needle:?}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // Not JSON at all.
    let (code, text) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{oops",
        &s.url("/chat/completions"),
    ]);
    assert_eq!(code, 400, "{text}");
    // Unknown routes and methods.
    let (code, text) = curl(&[&s.url("/nope")]);
    assert_eq!(code, 404);
    assert!(error_message(&serde_json::from_str(&text).unwrap()).contains("no route for GET /nope"));
    let (code, text) = curl(&["-X", "POST", &s.url("/v1/engines")]);
    assert_eq!(code, 404, "{text}");
    let (code, text) = curl(&[&s.url("/chat/completions")]);
    assert_eq!(code, 405, "{text}");
    error_message(&serde_json::from_str(&text).unwrap());
    let (code, text) = curl(&[&s.url("/models/other-model")]);
    assert_eq!(code, 404, "{text}");
    // A body over --max-body-bytes, announced by Content-Length as 12 MB: the
    // 413 comes before the body is sent (curl waits for 100 Continue).
    let big = json!({"messages": msgs(&"x".repeat(12 << 20))}).to_string();
    let file = std::env::temp_dir().join(format!("whale-big-body-{}.json", std::process::id()));
    std::fs::write(&file, big).unwrap();
    let at = format!("@{}", file.display());
    let (code, text) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &at,
        &s.url("/chat/completions"),
    ]);
    assert_eq!(code, 413, "{text}");
    assert!(error_message(&serde_json::from_str(&text).unwrap()).contains("larger than the limit of 8192 bytes"));
    // The same without a length (chunked): refused once 8192 bytes have come.
    let chunked = json!({"messages": msgs(&"x".repeat(20_000))}).to_string();
    std::fs::write(&file, chunked).unwrap();
    let (code, text) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        &s.url("/chat/completions"),
    ]);
    assert_eq!(code, 413, "{text}");
    assert!(error_message(&serde_json::from_str(&text).unwrap()).contains("larger than the limit of 8192 bytes"));
    let _ = std::fs::remove_file(&file);
    // The server is still healthy and no request was answered with a 5xx.
    let (code, _) = curl(&[&s.url("/health")]);
    assert_eq!(code, 200);
    let (_, metrics) = curl(&[&s.url("/metrics")]);
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    assert!(metrics.contains("status=\"400\""), "{metrics}");
}

#[test]
fn api_key_is_required_except_for_health() {
    let key_file = std::env::temp_dir().join(format!("whale-key-{}", std::process::id()));
    std::fs::write(&key_file, "sk-test-123\n").unwrap();
    let s = Server::start(&tiny_deepseek(), &["--api-key-file", key_file.to_str().unwrap(), "--ctx", "128"]);
    // The server read the key at start.
    let _ = std::fs::remove_file(&key_file);
    let models = s.url("/v1/models");
    assert_eq!(curl(&[&s.url("/health")]).0, 200);
    let (code, text) = curl(&[&models]);
    assert_eq!(code, 401);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("authentication_error"), Some("invalid_api_key"))
    );
    assert_eq!(curl(&["-H", "Authorization: Bearer sk-wrong", &models]).0, 401);
    assert_eq!(curl(&["-H", "Authorization: sk-test-123", &models]).0, 401);
    let (code, text) = curl(&["-H", "Authorization: Bearer sk-test-123", &models]);
    assert_eq!(code, 200, "{text}");
    let (code, _) = post(&s, "/completions", &json!({"prompt": "hi", "max_tokens": 1}));
    assert_eq!(code, 401);
    let key = ["Authorization: Bearer sk-test-123"];
    let (code, v) = post_with(&s, "/completions", &json!({"prompt": "hi", "max_tokens": 1}), &key);
    assert_eq!(code, 200, "{v}");
    // This model has no chat template.
    let (code, v) = post_with(&s, "/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}]}), &key);
    assert_eq!(code, 400, "{v}");
    assert!(error_message(&v).contains("no chat template"), "{v}");
}

fn whale_run_raw(model: &std::path::Path, prompt: &str, n: usize) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_whale"))
        .arg("run")
        .arg(model)
        .args(["-p", prompt, "-n", &n.to_string(), "--temp", "0", "--json"])
        .env("WHALE_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["text"].as_str().unwrap().to_string()
}

#[test]
fn completions_with_stop_seed_and_logprobs() {
    let model = smollm2();
    let prompt = "The capital of France is";
    let want = whale_run_raw(&model, prompt, 10);
    let s = Server::start(&model, &["--ctx", "256"]);
    let body = json!({"prompt": prompt, "max_tokens": 10, "temperature": 0});
    let (code, v) = post(&s, "/completions", &body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], want);
    check_usage(&v["usage"]);
    // DeepSeek's path.
    let (code, vb) = post(&s, "/beta/completions", &body);
    assert_eq!((code, &vb["choices"][0]["text"]), (200, &json!(want)));
    // Stop before a piece of the greedy text.
    let stop: String = want.chars().skip(want.chars().count() / 2).take(3).collect();
    let (_, vs) =
        post(&s, "/completions", &json!({"prompt": prompt, "max_tokens": 10, "temperature": 0, "stop": stop}));
    assert_eq!(vs["choices"][0]["text"], want[..want.find(&stop).unwrap()], "stop {stop:?}");
    assert_eq!(vs["choices"][0]["finish_reason"], "stop");
    // A seed repeats a sampled answer.
    let sampled = json!({"prompt": prompt, "max_tokens": 12, "temperature": 1.2, "seed": 1234});
    let (_, a) = post(&s, "/completions", &sampled);
    let (_, b) = post(&s, "/completions", &sampled);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    // Log-probabilities: one entry per token, the greedy token on top.
    let (_, vl) =
        post(&s, "/completions", &json!({"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 2}));
    let lp = &vl["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len() as u64, vl["usage"]["completion_tokens"].as_u64().unwrap());
    for (i, t) in tokens.iter().enumerate() {
        let l = lp["token_logprobs"][i].as_f64().unwrap();
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(l <= 0.0 && top.len() <= 2);
        let best = top.values().map(|x| x.as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert_eq!(top.get(t.as_str().unwrap()).and_then(Value::as_f64), Some(l), "greedy token is in top: {lp}");
        assert!((best - l).abs() < 1e-6);
    }
    let offsets: Vec<u64> = lp["text_offset"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    // Chat log-probabilities.
    let mut cb = chat_body("Say hello.", 5);
    cb["logprobs"] = json!(true);
    cb["top_logprobs"] = json!(2);
    let (_, vc) = post(&s, "/chat/completions", &cb);
    let entries = vc["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(entries.len() as u64, vc["usage"]["completion_tokens"].as_u64().unwrap());
    let joined: String = entries.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert!(joined.starts_with(&content(&vc)), "{joined:?} vs {:?}", content(&vc));
    for e in entries {
        assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(e["top_logprobs"][0]["token"], e["token"]);
        assert!(e["bytes"].is_array());
    }
    // Streamed completions add up to the same text.
    let (code, data, _) =
        post_stream(&s, "/completions", &json!({"prompt": prompt, "max_tokens": 10, "temperature": 0, "stream": true}));
    assert_eq!(code, 200);
    let text: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, want);
}

#[test]
fn prefix_completion_continues_the_assistant_message() {
    let s = Server::start(&smollm2(), &["--ctx", "256"]);
    let (_, full) = post(&s, "/chat/completions", &chat_body("Tell me about whales.", 16));
    let full = content(&full);
    let cut = full.char_indices().filter(|(_, c)| *c == ' ').map(|(i, _)| i).nth(3).expect("a few words");
    let prefix = &full[..cut];
    let body = json!({
        "messages": [{"role": "user", "content": "Tell me about whales."}, {"role": "assistant", "content": prefix, "prefix": true}],
        "max_tokens": 6,
        "temperature": 0,
    });
    for path in ["/chat/completions", "/beta/chat/completions"] {
        let (code, v) = post(&s, path, &body);
        assert_eq!(code, 200, "{v}");
        let joined = format!("{prefix}{}", content(&v));
        assert!(
            full.starts_with(&joined) || joined.starts_with(&full),
            "prefix {prefix:?} + {:?} vs {full:?}",
            content(&v)
        );
        assert!(joined.len() > prefix.len());
    }
    // vLLM's and SGLang's spelling of the same request (what the SGLang
    // gateway forwards; it drops "prefix") gives the same answer.
    let (_, want) = post(&s, "/chat/completions", &body);
    let mut alias = body.clone();
    alias["messages"][1].as_object_mut().unwrap().remove("prefix");
    alias["continue_final_message"] = json!(true);
    let (code, v) = post(&s, "/chat/completions", &alias);
    assert_eq!(code, 200, "{v}");
    assert_eq!(content(&v), content(&want));
    let mut bad = alias.clone();
    bad["messages"] = json!([{"role": "user", "content": "hi"}]);
    let (code, v) = post(&s, "/chat/completions", &bad);
    assert_eq!(code, 400, "{v}");
    assert!(error_message(&v).contains("only for an assistant message"), "{v}");
}

#[test]
fn json_mode_answers_with_a_json_object() {
    let s = Server::start(&smollm2(), &["--ctx", "512"]);
    let mut body = chat_body("Describe a cat as JSON with the keys name and age.", 64);
    body["response_format"] = json!({"type": "json_object"});
    let (code, v) = post(&s, "/chat/completions", &body);
    assert_eq!(code, 200, "{v}");
    let text = content(&v);
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    assert!(parsed.is_object());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Without the constraint the same model does not answer in JSON.
    let (_, free) = post(&s, "/chat/completions", &chat_body("Describe a cat as JSON with the keys name and age.", 64));
    assert!(serde_json::from_str::<Value>(&content(&free)).is_err(), "{}", content(&free));
}

#[test]
fn fim_uses_the_models_fill_in_the_middle_tokens() {
    let s = Server::start(&qwen_coder(), &["--ctx", "512"]);
    let (prefix, suffix) = ("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n");
    let (code, v) =
        post(&s, "/beta/completions", &json!({"prompt": prefix, "suffix": suffix, "max_tokens": 6, "temperature": 0}));
    assert_eq!(code, 200, "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.contains("a + b"), "{text:?}");
    // The same as writing Qwen's FIM tokens in the prompt by hand.
    let raw = format!("<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>");
    let (_, r) = post(&s, "/completions", &json!({"prompt": raw, "max_tokens": 6, "temperature": 0}));
    assert_eq!(r["choices"][0]["text"], json!(text));
    assert_eq!(r["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"]);
}

#[test]
fn tool_calls_in_the_templates_format() {
    let s = Server::start(&qwen_coder(), &["--ctx", "1024"]);
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }]);
    let ask = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    // A named tool_choice forces the call; its arguments are constrained JSON.
    let forced = json!({"messages": ask, "tools": tools, "max_tokens": 24, "temperature": 0,
                        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (code, v) = post(&s, "/chat/completions", &forced);
    assert_eq!(code, 200, "{v}");
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert!(msg["content"].is_null());
    let call = &msg["tool_calls"][0];
    assert_eq!((&call["type"], &call["function"]["name"]), (&json!("function"), &json!("get_weather")));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.is_object(), "{args}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    // `auto`: the model writes <tool_call> itself, parsed into tool_calls.
    let auto = json!({"messages": ask, "tools": tools, "max_tokens": 40, "temperature": 0});
    let (_, va) = post(&s, "/chat/completions", &auto);
    assert_eq!(va["choices"][0]["finish_reason"], "tool_calls", "{va}");
    let call = &va["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    // Streamed: the call comes as delta.tool_calls.
    let mut streamed = auto.clone();
    streamed["stream"] = json!(true);
    let (_, data, _) = post_stream(&s, "/chat/completions", &streamed);
    let chunks: Vec<Value> = data.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas.len(), 1, "{data:?}");
    assert_eq!(deltas[0][0]["function"]["arguments"], call["function"]["arguments"]);
    assert_eq!(deltas[0][0]["index"], 0);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    // The next turn: the call and its result go back through the template.
    // (This 0.5B model then tends to repeat the call before it uses the
    // result; tool_choice none keeps that as text, and the result shows.)
    let follow = json!({
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature_c\": 21}"},
        ],
        "tools": tools, "tool_choice": "none", "max_tokens": 24, "temperature": 0,
    });
    let (code, vf) = post(&s, "/chat/completions", &follow);
    assert_eq!(code, 200, "{vf}");
    assert!(content(&vf).contains("21"), "{vf}");
    // tool_choice none: no tools, plain text.
    let mut none = auto.clone();
    none["tool_choice"] = json!("none");
    let (_, vn) = post(&s, "/chat/completions", &none);
    assert!(vn["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn deepseek_template_reasoning_and_fim() {
    let tpl = r1_template_file();
    let s = Server::start(&tiny_deepseek(), &["--ctx", "256", "--chat-template-file", tpl.to_str().unwrap()]);
    // A reasoning model's answer always has reasoning_content.
    let (code, v) = post(&s, "/chat/completions", &chat_body("hi", 4));
    assert_eq!(code, 200, "{v}");
    assert!(v["choices"][0]["message"]["reasoning_content"].is_string(), "{v}");
    // With the answer opened inside <think> (prefix completion), everything the
    // model writes before </think> is reasoning.
    let body = json!({
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\n", "prefix": true}],
        "max_tokens": 8, "temperature": 0,
    });
    let (_, v) = post(&s, "/chat/completions", &body);
    let msg = &v["choices"][0]["message"];
    let reasoning = msg["reasoning_content"].as_str().unwrap().to_string();
    assert!(!reasoning.is_empty(), "{v}");
    assert!(v["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap() > 0, "{v}");
    // Streamed as delta.reasoning_content, then delta.content.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (_, data, _) = post_stream(&s, "/chat/completions", &sb);
    let chunks: Vec<Value> = data.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let r: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    let c: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!((r, c), (reasoning, content(&v)));
    // DeepSeek's FIM tokens.
    let (code, v) =
        post(&s, "/completions", &json!({"prompt": "def f(", "suffix": "\n", "max_tokens": 2, "temperature": 0}));
    assert_eq!(code, 200, "{v}");
    let (_, raw) = post(
        &s,
        "/completions",
        &json!({"prompt": "<｜fim▁begin｜>def f(<｜fim▁hole｜>\n<｜fim▁end｜>", "max_tokens": 2, "temperature": 0}),
    );
    assert_eq!(raw["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"], "{raw} {v}");
    assert_eq!(raw["choices"][0]["text"], v["choices"][0]["text"]);
}

/// `/metrics` through prometheus-client: the HTTP counters by route and
/// status, the per-request histograms (queue time, prefill and decode
/// speed), and the KV-cache usage ratio, which is above zero while a
/// request runs and zero once it is done.
#[test]
fn metrics_report_requests_speeds_and_kv_usage() {
    let s = Server::start(&smollm2(), &["--ctx", "512", "--parallel", "2"]);
    for _ in 0..2 {
        let (code, v) = post(&s, "/chat/completions", &chat_body("Say hello.", 8));
        assert_eq!(code, 200, "{v}");
    }
    let (_, text) = curl(&[&s.url("/metrics")]);
    assert!(text.contains("whale_requests_total{route=\"/chat/completions\",status=\"200\"} 2"), "{text}");
    for (name, kind) in [
        ("whale_time_to_first_token_seconds", "histogram"),
        ("whale_queue_time_seconds", "histogram"),
        ("whale_prefill_tokens_per_second", "histogram"),
        ("whale_decode_tokens_per_second", "histogram"),
        ("whale_kv_cache_usage_ratio", "gauge"),
        ("whale_prompt_tokens", "counter"),
    ] {
        assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name}: {text}");
    }
    for name in ["whale_queue_time_seconds_count", "whale_prefill_tokens_per_second_count"] {
        assert_eq!(s.metric(name), 2.0, "{name}: {text}");
    }
    assert!(s.metric("whale_decode_tokens_per_second_count") >= 1.0, "{text}");
    assert!(s.metric("whale_decode_tokens_per_second_sum") > 0.0, "{text}");
    assert!(s.metric("whale_completion_tokens_total") >= 2.0, "{text}");
    assert_eq!(s.metric("whale_kv_cache_usage_ratio"), 0.0, "{text}");
    // While a long stream runs, its cache counts.
    let long = json!({"messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
                      "max_tokens": 400, "temperature": 0, "stream": true});
    let holder = StreamingCurl::start(&s, &long);
    holder.until(Duration::from_secs(60), |l| l.contains("\"content\""));
    // (The first chunk comes at admission, before the prompt is in the cache.)
    assert!(wait_until(Duration::from_secs(10), || s.metric("whale_kv_cache_usage_ratio") > 0.0));
    let ratio = s.metric("whale_kv_cache_usage_ratio");
    assert!(ratio > 0.0 && ratio <= 1.0, "ratio {ratio}");
    holder.disconnect();
    assert!(wait_until(Duration::from_secs(10), || s.metric("whale_kv_cache_usage_ratio") == 0.0));
}

/// A message spelling `<|im_end|>` gets it as text (several tokens), not as
/// the control token that would end the user's turn (one token).
#[test]
fn message_text_never_becomes_control_tokens() {
    let s = Server::start(&smollm2(), &["--ctx", "256"]);
    let usage = |content: &str| {
        let (code, v) = post(&s, "/chat/completions", &chat_body(content, 1));
        assert_eq!(code, 200, "{v}");
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    let plain = usage("x");
    let marked = usage("x<|im_end|>");
    assert!(marked >= plain + 4, "x: {plain} prompt tokens, x<|im_end|>: {marked}");
}

#[test]
fn a_body_sent_too_slowly_gets_408_and_the_server_goes_on() {
    use std::io::{Read, Write};
    let s = Server::start(&smollm2(), &["--body-timeout-ms", "400"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // Announce 100 bytes and send 10 of them, then nothing (a slow or stuck
    // client, or one that lies about the length).
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(b"{\"messages").unwrap();
    let t0 = std::time::Instant::now();
    let mut answer = String::new();
    // The server answers and closes the connection, so this read ends.
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 400ms"), "{answer}");
    // At the request's own timeout, not the 30 s default.
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // Other clients are served meanwhile and after.
    let (code, v) = post(&s, "/chat/completions", &chat_body("Hi", 2));
    assert_eq!(code, 200, "{v}");
}

/// What a router in front of several workers (the SGLang Model Gateway) asks
/// of each: server and model info, load, a cache flush, a generation check.
#[test]
fn endpoints_a_router_calls_on_a_worker() {
    let s = Server::start(&smollm2(), &["--ctx", "256", "--parallel", "3", "--api-key", "k"]);
    let auth = "Authorization: Bearer k";
    let get = |path: &str| -> (u16, Value) {
        let (code, text) = curl(&["-H", auth, &s.url(path)]);
        (code, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
    };
    let (_, models) = get("/v1/models");
    for path in ["/server_info", "/get_server_info"] {
        let (code, v) = get(path);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["served_model_name"], models["data"][0]["id"], "{v}");
        assert_eq!((v["max_running_requests"].as_u64(), v["context_length"].as_u64()), (Some(3), Some(256)), "{v}");
        // From a model_path the gateway would try to fetch a tokenizer from the hub.
        assert!(v.get("model_path").is_none(), "{v}");
    }
    let (_, info) = get("/model_info");
    assert_eq!((info["model_type"].as_str(), info["is_generation"].as_bool()), (Some("llama"), Some(true)), "{info}");
    let (_, load) = get("/get_load");
    assert_eq!(load, json!([{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]));
    // A request leaves a session in the prefix cache; a flush drops it.
    let body = chat_body("Tell me about whales.", 4);
    let hit =
        |s: &Server| post_with(s, "/v1/chat/completions", &body, &[auth]).1["usage"]["prompt_cache_hit_tokens"].clone();
    hit(&s);
    assert!(hit(&s).as_u64().unwrap() > 0);
    let (code, v) = post_with(&s, "/flush_cache", &json!({}), &[auth]);
    assert_eq!(code, 200, "{v}");
    assert!(v["flushed_sessions"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(hit(&s), json!(0));
    let (code, v) = get("/health_generate");
    assert_eq!((code, v), (200, json!({"status": "ok"})));
    // The API key guards them as it does the API (not /health).
    let (code, _) = curl(&[&s.url("/server_info")]);
    assert_eq!(code, 401);
    let (code, _) = curl(&[&s.url("/health")]);
    assert_eq!(code, 200);
}
