//! `whale serve` under concurrency: continuous batching must not change
//! greedy output, the queue bound answers 429, queued streams get keep-alive
//! comments, a client that disconnects frees its slot, and a shared system
//! prompt is served from the prefix cache.

mod server_common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::*;

fn chat(prompt: &str, max_tokens: usize) -> Value {
    json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn eight_concurrent_greedy_requests_each_match_their_answer_alone() {
    let s = Server::start(&smollm2(), &["--parallel", "8", "--ctx", "512"]);
    let prompts = [
        "What is the capital of France?",
        "Name a large animal that lives in the sea.",
        "Write one word that rhymes with cat.",
        "What is 12 times 12?",
        "Give me a color.",
        "Why is the sky blue? Answer briefly.",
        "Say hello in Spanish.",
        "What do bees make?",
    ];
    let alone: Vec<String> = prompts.iter().map(|p| content(&post(&s, "/chat/completions", &chat(p, 12)).1)).collect();
    // The running gauge while the eight run together (to show they overlapped).
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, stop, url) = (peak.clone(), stop.clone(), s.url("/metrics"));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, m) = curl(&[&url]);
                if let Some(v) = m.lines().find_map(|l| l.strip_prefix("whale_running_requests ")) {
                    peak.fetch_max(v.trim().parse().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let together: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> =
            prompts.iter().map(|p| sc.spawn(|| content(&post(&s, "/chat/completions", &chat(p, 12)).1))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    for ((p, a), t) in prompts.iter().zip(&alone).zip(&together) {
        assert!(!a.is_empty());
        assert_eq!(a, t, "{p}");
    }
    assert!(peak.load(std::sync::atomic::Ordering::Relaxed) >= 2, "the requests never ran together");
}

#[test]
fn full_queue_is_429_queued_streams_get_keep_alives_and_disconnect_frees_the_slot() {
    let s =
        Server::start(&smollm2(), &["--parallel", "1", "--max-queue", "1", "--ctx", "2048", "--keep-alive-ms", "100"]);
    // A long answer takes the only slot. (Counting keeps going: the model
    // does not end it early, and 1500 tokens last seconds even on a fast
    // machine, so nothing below races the answer's natural end.)
    let mut long = chat("Count from 1 to 1000, separated by commas.", 1500);
    long["stream"] = json!(true);
    let a = StreamingCurl::start(&s, &long);
    a.until(Duration::from_secs(60), |l| l.contains("\"content\""));
    // A second one waits in the queue, and hears keep-alive comments meanwhile.
    let mut short = chat("Say hi.", 4);
    short["stream"] = json!(true);
    let b = StreamingCurl::start(&s, &short);
    assert!(wait_until(Duration::from_secs(30), || s.metric("whale_queue_length") == 1.0));
    let waiting = b.until(Duration::from_secs(10), |l| l.starts_with(':') && l.contains("keep-alive"));
    assert!(waiting.iter().all(|l| !l.starts_with("data:")), "B ran while A held the slot: {waiting:?}");
    // A third finds the queue full.
    let (code, v) = post(&s, "/chat/completions", &chat("Say hi.", 4));
    assert_eq!(code, 429, "{v}");
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("queue_full"))
    );
    // A's client goes away: its slot frees at once and B runs to the end.
    let t0 = Instant::now();
    a.disconnect();
    let rest = b.until(Duration::from_secs(60), |l| l == "data: [DONE]");
    assert!(rest.iter().any(|l| l.contains("\"finish_reason\":\"")), "{rest:?}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    b.disconnect();
    assert!(wait_until(Duration::from_secs(10), || s.metric("whale_running_requests") == 0.0));
    assert_eq!(s.metric("whale_cancelled_requests_total"), 1.0);
    // A non-streamed request whose client gives up is cancelled too. The
    // client leaves once the request is seen running (no fixed client
    // timeout: that raced a fast machine's whole answer, or a slow one's
    // first token).
    let c = StreamingCurl::start(&s, &chat("Count from 1 to 1000, separated by commas.", 1500));
    assert!(wait_until(Duration::from_secs(60), || s.metric("whale_running_requests") == 1.0));
    c.disconnect();
    assert!(wait_until(Duration::from_secs(10), || s.metric("whale_cancelled_requests_total") == 2.0));
    assert!(wait_until(Duration::from_secs(10), || s.metric("whale_running_requests") == 0.0));
    let (code, _) = post(&s, "/chat/completions", &chat("Say hi.", 2));
    assert_eq!(code, 200);
}

#[test]
fn shared_system_prompt_is_a_cache_hit_with_a_shorter_time_to_first_token() {
    let s = Server::start(&smollm2(), &["--ctx", "2048"]);
    let system = "You are a careful assistant for a marine biology museum. ".repeat(40);
    let ask = |q: &str| {
        let body = json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
                          "max_tokens": 1, "temperature": 0});
        let t0 = Instant::now();
        let (code, v) = post(&s, "/chat/completions", &body);
        assert_eq!(code, 200, "{v}");
        (t0.elapsed(), v["usage"].clone())
    };
    let (t_miss, u1) = ask("How long do blue whales live?");
    let (t_hit, u2) = ask("What do orcas eat?");
    let prompt1 = u1["prompt_tokens"].as_u64().unwrap();
    assert!(prompt1 > 400, "{u1}");
    assert_eq!(u1["prompt_cache_hit_tokens"], 0);
    let hit = u2["prompt_cache_hit_tokens"].as_u64().unwrap();
    assert!(hit > 400 && hit < u2["prompt_tokens"].as_u64().unwrap(), "{u2}");
    assert_eq!(u2["prompt_cache_miss_tokens"].as_u64().unwrap(), u2["prompt_tokens"].as_u64().unwrap() - hit);
    assert!(t_hit < t_miss, "cache hit {t_hit:?} not faster than miss {t_miss:?}");
    eprintln!("time to first token: miss {t_miss:?} ({prompt1} tokens), hit {t_hit:?} ({hit} cached)");
    assert!(s.metric("whale_prompt_cache_hit_tokens_total") >= hit as f64);
    assert!(s.metric("whale_time_to_first_token_seconds_count") >= 2.0);
}
