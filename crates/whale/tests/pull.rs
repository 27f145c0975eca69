//! `whale pull` against a local fake of the Hugging Face hub.
//!
//! The fake serves like the hub: `/OWNER/REPO/resolve/REV/FILE` answers LFS
//! files with a 302 to `/cdn/N` carrying `X-Linked-Etag` (sha256),
//! `X-Linked-Size`, `ETag` and `X-Repo-Commit`; small files are served
//! directly; `/cdn/N` honours `Range: bytes=N-` with a 206. Each server
//! thread handles a fixed number of requests (or stops after a deadline), and
//! records every request so tests can check what was (not) fetched.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod scratch;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct FakeFile {
    repo: &'static str,
    path: &'static str,
    body: Vec<u8>,
    /// Served through the CDN redirect with checksum headers.
    lfs: bool,
    /// Overrides the advertised sha256 (to provoke a mismatch).
    fake_sha: Option<String>,
    /// Answers 401 without `Authorization: Bearer ...`.
    gated: bool,
    /// The first full CDN answer announces the whole length but sends only
    /// this many bytes, then the connection drops.
    cut_once: Option<AtomicUsize>,
}

fn file(repo: &'static str, path: &'static str, body: Vec<u8>, lfs: bool) -> FakeFile {
    FakeFile { repo, path, body, lfs, fake_sha: None, gated: false, cut_once: None }
}

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    range: Option<String>,
    auth: bool,
    status: u16,
    body_len: usize,
}

struct Hub {
    endpoint: String,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl Hub {
    fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(files: Vec<FakeFile>, max_requests: usize) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    served += 1;
                    stream.set_nonblocking(false).unwrap();
                    // Log before answering, so the log is complete once
                    // the client has its answer.
                    if let Some((entry, answer)) = handle(&stream, &files) {
                        log2.lock().unwrap().push(entry);
                        let _ = (&stream).write_all(&answer);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    Hub { endpoint, log }
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn handle(stream: &TcpStream, files: &[FakeFile]) -> Option<(Logged, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let (mut range, mut auth) = (None, false);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "range" => range = Some(value),
            "authorization" => auth = value.starts_with("Bearer "),
            _ => {}
        }
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut body: &[u8] = b"";
    let mut cut = None;
    let status = if let Some(idx) = path.strip_prefix("/cdn/") {
        let f = &files[idx.parse::<usize>().ok()?];
        cut = f.cut_once.as_ref().map(|c| c.swap(0, Ordering::SeqCst));
        headers.push(("ETag".into(), format!("\"{}\"", sha256(&f.body))));
        headers.push(("Accept-Ranges".into(), "bytes".into()));
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
        match start {
            Some(s) if s >= f.body.len() => 416,
            Some(s) => {
                let end = f.body.len() - 1;
                headers.push(("Content-Range".into(), format!("bytes {s}-{end}/{}", f.body.len())));
                body = &f.body[s..];
                206
            }
            None => {
                body = &f.body;
                200
            }
        }
    } else {
        // /OWNER/REPO/resolve/REV/FILE
        let seg: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        let found = (seg.len() == 5 && seg[2] == "resolve").then(|| {
            let repo = format!("{}/{}", seg[0], seg[1]);
            let idx = files.iter().position(|f| f.repo == repo && f.path == seg[4]);
            (repo, seg[3], idx)
        });
        match found {
            Some((repo, rev, idx)) if rev == "main" || rev == COMMIT => match idx {
                None => {
                    let known = files.iter().any(|f| f.repo == repo);
                    let code = if known { "EntryNotFound" } else { "RepoNotFound" };
                    headers.push(("X-Error-Code".into(), code.into()));
                    404
                }
                Some(i) if files[i].gated && !auth => {
                    headers.push(("X-Error-Code".into(), "GatedRepo".into()));
                    401
                }
                Some(i) => {
                    let f = &files[i];
                    headers.push(("X-Repo-Commit".into(), COMMIT.into()));
                    if f.lfs {
                        let sha = f.fake_sha.clone().unwrap_or_else(|| sha256(&f.body));
                        headers.push(("Location".into(), format!("/cdn/{i}")));
                        headers.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
                        headers.push(("X-Linked-Size".into(), f.body.len().to_string()));
                        headers.push(("ETag".into(), format!("\"{sha}\"")));
                        302
                    } else {
                        headers.push(("ETag".into(), format!("\"{}\"", &COMMIT[..40])));
                        body = &f.body;
                        200
                    }
                }
            },
            _ => 404,
        }
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        416 => "Range Not Satisfiable",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut answer = head.into_bytes();
    if let Some(cut) = cut.filter(|&c| c > 0 && status == 200) {
        body = &body[..cut];
    }
    answer.extend_from_slice(body);
    Some((Logged { path, range, auth, status, body_len: body.len() }, answer))
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn home(name: &str) -> scratch::Scratch {
    scratch::Scratch::new("whale-pull-test", name)
}

fn whale(home: &Path, endpoint: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whale"));
    cmd.args(args).env("WHALE_HOME", home).env("HF_ENDPOINT", endpoint).env_remove("HF_TOKEN");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn partial(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", p.display()))
}

#[test]
fn pull_verifies_checksum_and_caches() {
    let body = data(300_000, 1);
    let hub = serve(vec![file("acme/tiny-GGUF", "tiny.gguf", body.clone(), true)], 4);
    let home = home("ok");
    let spec = "hf:acme/tiny-GGUF/tiny.gguf";
    let out = whale(&home, &hub.endpoint, None, &["pull", spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = home.join("models/acme--tiny-GGUF/tiny.gguf");
    assert_eq!(stdout(&out), dest.display().to_string());
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(stderr(&out).contains(&format!("verified sha256 {}", sha256(&body))));
    let sidecar = std::fs::read_to_string(format!("{}.sha256", dest.display())).unwrap();
    assert!(sidecar.starts_with(&sha256(&body)));
    let log = hub.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].status, log[1].status), (302, 200));

    // Cached and verified: nothing is fetched.
    let out = whale(&home, &hub.endpoint, None, &["pull", spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), dest.display().to_string());
    assert_eq!(hub.log().len(), 2);

    // --force fetches again.
    let out = whale(&home, &hub.endpoint, None, &["pull", spec, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.log().len(), 4);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let mut f = file("acme/tiny-GGUF", "bad.gguf", data(200_000, 2), true);
    f.fake_sha = Some(sha256(b"something else"));
    let hub = serve(vec![f], 2);
    let home = home("mismatch");
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/tiny-GGUF/bad.gguf"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch") && err.contains("bad.gguf"), "{err}");
    let dest = home.join("models/acme--tiny-GGUF/bad.gguf");
    assert!(!dest.exists());
    assert!(!partial(&dest).exists());
}

#[test]
fn not_found_names_the_file() {
    let hub = serve(vec![file("acme/tiny-GGUF", "tiny.gguf", data(10, 3), true)], 2);
    let home = home("404");
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/tiny-GGUF/nope.gguf"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("'nope.gguf'") && err.contains("acme/tiny-GGUF"), "{err}");
    assert!(err.contains("404"), "{err}");
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/absent/x.gguf"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("repository acme/absent not found"), "{}", stderr(&out));
}

#[test]
fn gated_file_needs_hf_token() {
    let body = data(50_000, 4);
    let mut f = file("acme/gated-GGUF", "g.gguf", body.clone(), true);
    f.gated = true;
    let hub = serve(vec![f], 3);
    let home = home("401");
    let spec = "hf:acme/gated-GGUF/g.gguf";
    let out = whale(&home, &hub.endpoint, None, &["pull", spec]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("HF_TOKEN") && err.contains("401"), "{err}");

    let out = whale(&home, &hub.endpoint, Some("hf_secret"), &["pull", spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(stdout(&out)).unwrap(), body);
    let log = hub.log();
    assert!(log[1].auth && log[1].status == 302, "{log:?}");
}

#[test]
fn resumes_partial_download_with_range() {
    let body = data(400_000, 5);
    let hub = serve(vec![file("acme/tiny-GGUF", "r.gguf", body.clone(), true)], 2);
    let home = home("resume");
    let dest = home.join("models/acme--tiny-GGUF/r.gguf");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(partial(&dest), &body[..123_456]).unwrap();
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/tiny-GGUF/r.gguf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!partial(&dest).exists());
    let log = hub.log();
    let cdn = &log[1];
    assert_eq!(cdn.range.as_deref(), Some("bytes=123456-"), "{log:?}");
    assert_eq!((cdn.status, cdn.body_len), (206, body.len() - 123_456));
}

#[test]
fn interrupted_download_keeps_partial_and_resumes() {
    let body = data(500_000, 10);
    let mut f = file("acme/tiny-GGUF", "i.gguf", body.clone(), true);
    f.cut_once = Some(AtomicUsize::new(200_000));
    let hub = serve(vec![f], 4);
    let home = home("interrupted");
    let dest = home.join("models/acme--tiny-GGUF/i.gguf");
    let spec = "hf:acme/tiny-GGUF/i.gguf";
    let out = whale(&home, &hub.endpoint, None, &["pull", spec]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert!(!dest.exists());
    assert_eq!(std::fs::read(partial(&dest)).unwrap(), &body[..200_000]);
    let out = whale(&home, &hub.endpoint, None, &["pull", spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let log = hub.log();
    assert_eq!(log[3].range.as_deref(), Some("bytes=200000-"), "{log:?}");
    assert_eq!(log[3].status, 206);
}

#[test]
fn stale_partial_is_restarted() {
    let body = data(300_000, 6);
    let hub = serve(vec![file("acme/tiny-GGUF", "s.gguf", body.clone(), true)], 4);
    let home = home("stale");
    let dest = home.join("models/acme--tiny-GGUF/s.gguf");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(partial(&dest), data(100_000, 99)).unwrap();
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/tiny-GGUF/s.gguf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("from scratch"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let st: Vec<u16> = hub.log().iter().map(|l| l.status).collect();
    assert_eq!(st, [302, 206, 302, 200]);
}

#[test]
fn whole_folder_with_index_and_two_shards() {
    let repo = "acme/tiny-model";
    let (s1, s2) = (data(120_000, 7), data(80_000, 8));
    let index = br#"{"metadata":{"total_size":200000},"weight_map":{
        "a.weight":"model-00001-of-00002.safetensors",
        "b.weight":"model-00002-of-00002.safetensors",
        "c.weight":"model-00001-of-00002.safetensors"}}"#;
    let files = vec![
        file(repo, "config.json", br#"{"model_type":"qwen2"}"#.to_vec(), false),
        file(repo, "tokenizer.json", b"{}".to_vec(), false),
        file(repo, "tokenizer_config.json", b"{}".to_vec(), false),
        file(repo, "model.safetensors.index.json", index.to_vec(), false),
        file(repo, "model-00001-of-00002.safetensors", s1.clone(), true),
        file(repo, "model-00002-of-00002.safetensors", s2.clone(), true),
    ];
    // 3 small + 1 missing generation_config + index + 2 shards x 2 requests.
    let hub = serve(files, 9);
    let home = home("folder");
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/tiny-model"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = home.join("models/acme--tiny-model");
    assert_eq!(stdout(&out), dir.display().to_string());
    assert_eq!(std::fs::read(dir.join("model-00001-of-00002.safetensors")).unwrap(), s1);
    assert_eq!(std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(), s2);
    assert_eq!(std::fs::read(dir.join("model.safetensors.index.json")).unwrap(), index);
    assert!(dir.join("config.json").is_file() && dir.join("tokenizer.json").is_file());
    assert!(!dir.join("generation_config.json").exists());
    assert!(dir.join(".whale-complete").is_file());
    let log = hub.log();
    assert_eq!(log.len(), 9, "{log:?}");
    // After config.json everything is fetched at the commit it came from.
    assert!(log[1..].iter().all(|l| l.path.starts_with("/cdn/") || l.path.contains(COMMIT)));

    // Complete: a second pull fetches nothing.
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/tiny-model"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.log().len(), 9);
}

#[test]
fn plain_url_with_sha256_fragment() {
    let body = data(64_000, 9);
    let hub = serve(vec![file("acme/x", "m.gguf", body.clone(), true)], 2);
    let home = home("url");
    let url = format!("{}/cdn/0", hub.endpoint);
    let bad = format!("{url}#sha256={}", sha256(b"nope"));
    let out = whale(&home, &hub.endpoint, None, &["pull", &bad]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("checksum mismatch"), "{}", stderr(&out));
    let good = format!("{url}#sha256={}", sha256(&body));
    let out = whale(&home, &hub.endpoint, None, &["pull", &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    let port = hub.endpoint.rsplit(':').next().unwrap();
    let dest = home.join(format!("models/url/127.0.0.1_{port}/cdn/0"));
    assert_eq!(stdout(&out), dest.display().to_string());
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn network_failure_is_reported() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let home = home("net");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = whale(&home, &endpoint, None, &["pull", "hf:acme/x/m.gguf"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("network error") && err.contains("HF_ENDPOINT"), "{err}");
}

#[test]
fn unknown_name_lists_catalog() {
    let home = home("unknown");
    let out = whale(&home, "http://127.0.0.1:9", None, &["pull", "no-such-model"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown model 'no-such-model'"), "{err}");
    for name in ["smollm2-135m", "qwen2.5-coder-0.5b", "deepseek-r1-distill-qwen-7b-head"] {
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn list_prints_catalog() {
    let home = home("list");
    let out = whale(&home, "http://127.0.0.1:9", None, &["pull", "--list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for name in ["smollm2-135m", "qwen2.5-coder-0.5b", "deepseek-r1-distill-llama-8b"] {
        assert!(text.contains(name), "{text}");
    }
}

/// `whale synth --like deepseek-v3` with no --tokenizer fetches
/// tokenizer.json and tokenizer_config.json from the model's hub repository
/// (here the DeepSeek tokenizer fixture, served the way the hub serves it)
/// and converts them; a second run uses the cache.
#[test]
fn synth_fetches_the_tokenizer_from_the_hub() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf-reference/tokenizer");
    let tj = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let tc = std::fs::read(dir.join("tokenizer_config.json")).unwrap();
    let files = vec![
        file("deepseek-ai/DeepSeek-V3", "tokenizer.json", tj, true),
        file("deepseek-ai/DeepSeek-V3", "tokenizer_config.json", tc, false),
    ];
    let hub = serve(files, 8);
    let home = home("synth-tok");
    let out_file = home.join("v3.gguf");
    let args = ["synth", out_file.to_str().unwrap(), "--like", "deepseek-r1", "--layers", "4", "--dry-run"];
    let out = whale(&home, &hub.endpoint, None, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("would be like deepseek-v3 (4 of 61 layers), q4_k_m"), "{text}");
    assert!(!out_file.exists(), "a dry run writes nothing");
    assert!(home.join("models/deepseek-ai--DeepSeek-V3/tokenizer.json").exists());
    let fetched = hub.log().len();
    assert!(fetched >= 2, "{:?}", hub.log());
    let out = whale(&home, &hub.endpoint, None, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.log().len(), fetched, "cached: nothing fetched again");
}

/// Naming one part of a split GGUF fetches every part (none loads alone) and
/// returns the first; a second pull fetches nothing; a part the hub lacks is
/// an error naming it.
#[test]
fn one_part_of_a_split_model_fetches_every_part() {
    let parts: Vec<Vec<u8>> = (0..3).map(|k| data(50_000 + k * 1000, 20 + k as u64)).collect();
    let names = ["q/m-00001-of-00003.gguf", "q/m-00002-of-00003.gguf", "q/m-00003-of-00003.gguf"];
    let files = names.iter().zip(&parts).map(|(n, b)| file("acme/big-GGUF", n, b.clone(), true)).collect();
    let hub = serve(files, 20);
    let home = home("split");
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/big-GGUF/q/m-00002-of-00003.gguf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("one of 3 parts"), "{}", stderr(&out));
    let dir = home.join("models/acme--big-GGUF/q");
    assert_eq!(stdout(&out), dir.join("m-00001-of-00003.gguf").display().to_string());
    for (n, b) in names.iter().zip(&parts) {
        let f = dir.join(n.strip_prefix("q/").unwrap());
        assert_eq!(&std::fs::read(&f).unwrap(), b, "{n}");
    }
    let fetched = hub.log().len();
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/big-GGUF/q/m-00003-of-00003.gguf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.log().len(), fetched, "cached: nothing fetched again");

    // Two parts on the hub of a model that says it has four.
    let files = names[..2].iter().zip(&parts).map(|(n, b)| {
        let n4: &'static str = Box::leak(n.replace("of-00003", "of-00004").into_boxed_str());
        file("acme/big-GGUF", n4, b.clone(), true)
    });
    let hub = serve(files.collect(), 20);
    let out = whale(&home, &hub.endpoint, None, &["pull", "hf:acme/big-GGUF/q/m-00001-of-00004.gguf"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("m-00003-of-00004.gguf"), "{}", stderr(&out));
}

/// A catalog model split in parts (unsloth's 1.58-bit R1, here three small
/// stand-ins at the catalog's real hub paths): every part is sized first
/// (the redirect only, no body), then each is fetched once and verified; the
/// first part's path is printed.
#[test]
fn catalog_split_model_fetches_every_part_once() {
    let dir = "DeepSeek-R1-UD-IQ1_S";
    let names: [&'static str; 3] = [
        "DeepSeek-R1-UD-IQ1_S/DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf",
        "DeepSeek-R1-UD-IQ1_S/DeepSeek-R1-UD-IQ1_S-00002-of-00003.gguf",
        "DeepSeek-R1-UD-IQ1_S/DeepSeek-R1-UD-IQ1_S-00003-of-00003.gguf",
    ];
    let parts: Vec<Vec<u8>> = (0..3).map(|k| data(40_000 + k * 777, 40 + k as u64)).collect();
    let files = names.iter().zip(&parts).map(|(n, b)| file("unsloth/DeepSeek-R1-GGUF", n, b.clone(), true)).collect();
    let hub = serve(files, 30);
    let home = home("catsplit");
    let out = whale(&home, &hub.endpoint, None, &["pull", "deepseek-r1-ud-iq1_s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = home.join("models/unsloth--DeepSeek-R1-GGUF");
    assert_eq!(stdout(&out), root.join(names[0]).display().to_string());
    for (n, b) in names.iter().zip(&parts) {
        assert_eq!(&std::fs::read(root.join(n)).unwrap(), b, "{n}");
    }
    assert!(root.join(dir).is_dir());
    let log = hub.log();
    // Three size probes (redirects, no body), then per part the redirect
    // and one CDN download.
    assert!(log[..3].iter().all(|l| l.status == 302 && l.body_len == 0), "{log:#?}");
    let cdn: Vec<_> = log.iter().filter(|l| l.path.starts_with("/cdn/")).collect();
    assert_eq!(cdn.len(), 3, "each part downloaded once: {log:#?}");
    assert!(cdn.iter().all(|l| l.status == 200));
    assert!(stderr(&out).matches("verified sha256").count() == 3, "{}", stderr(&out));
}

/// Not enough disk for the download (simulated with WHALE_MIN_FREE, the
/// free space whale must leave): refused before any byte is fetched, with
/// the needed and free sizes named, for one file and for the parts of a
/// split model together.
#[test]
fn a_download_that_does_not_fit_is_refused_up_front() {
    let body = data(100_000, 7);
    let parts: Vec<Vec<u8>> = (0..2).map(|k| data(60_000, 50 + k as u64)).collect();
    let mut files = vec![file("acme/one-GGUF", "m.gguf", body, true)];
    for (k, b) in parts.iter().enumerate() {
        let n: &'static str = Box::leak(format!("s-0000{}-of-00002.gguf", k + 1).into_boxed_str());
        files.push(file("acme/one-GGUF", n, b.clone(), true));
    }
    let hub = serve(files, 20);
    let home = home("nospace");
    let run = |spec: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_whale"));
        cmd.args(["pull", spec])
            .env("WHALE_HOME", &home)
            .env("HF_ENDPOINT", &hub.endpoint)
            .env_remove("HF_TOKEN")
            .env("WHALE_MIN_FREE", "1000000000000000000");
        cmd.output().unwrap()
    };
    for (spec, need) in
        [("hf:acme/one-GGUF/m.gguf", "100.00 kB"), ("hf:acme/one-GGUF/s-00001-of-00002.gguf", "120.00 kB")]
    {
        let out = run(spec);
        assert!(!out.status.success(), "{spec}");
        let err = stderr(&out);
        assert!(err.contains("not enough disk space"), "{spec}: {err}");
        assert!(err.contains(&format!("needs {need} more")), "{spec}: {err}");
        assert!(err.contains("WHALE_MIN_FREE"), "{spec}: {err}");
    }
    assert!(hub.log().iter().all(|l| !l.path.starts_with("/cdn/")), "nothing downloaded: {:#?}", hub.log());
    let repo = home.join("models/acme--one-GGUF");
    let left: Vec<_> = std::fs::read_dir(&repo).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "no file or partial written: {left:?}");

    // A bad WHALE_MIN_FREE is an error, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(["pull", "hf:acme/one-GGUF/m.gguf"])
        .env("WHALE_HOME", &home)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("WHALE_MIN_FREE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("WHALE_MIN_FREE must be a number of bytes"), "{}", stderr(&out));
}
