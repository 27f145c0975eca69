//! Split GGUF models (`PREFIX-00001-of-0000N.gguf`, …): opened from any
//! part, every tensor's bytes equal to the unsplit file's, and a missing,
//! duplicated, mismatched or truncated part is an error naming it. Parts
//! written by gguf-py (llama.cpp's own writer) are read in
//! crates/whale/tests/synth_cli.rs; llama.cpp reading whale's parts was
//! checked by hand (issue 15's note).

mod common;

use std::path::{Path, PathBuf};

use whale_engine::formats::gguf::{split_path, GgufFile};
use whale_engine::synth::mix::FileType;
use whale_engine::synth::{self, Synth, SynthSpec};

fn plan() -> Synth {
    let tok = GgufFile::open(common::cached_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")).unwrap();
    let spec = SynthSpec { like: "qwen2.5-0.5b".into(), layers: Some(2), ftype: FileType::Q4_K_M, seed: 0 };
    Synth::plan(&spec, synth::tokenizer::from_gguf(&tok)).unwrap()
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whale-split-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `s` split at `max` bytes under `d/m-0000k-of-…`; returns the paths.
fn write_split(s: &Synth, d: &Path, max: u64) -> Vec<PathBuf> {
    let parts = s.split(max);
    let prefix = d.join("m").to_string_lossy().into_owned();
    let mut paths = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        let p = PathBuf::from(split_path(&prefix, k as u64, parts.len() as u64));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        s.write_part(part, &mut f, 0, |_| {}).unwrap();
        paths.push(p);
    }
    paths
}

fn err(p: &Path) -> String {
    GgufFile::open(p).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{} opened", p.display()))
}

#[test]
fn any_part_opens_the_whole_model_with_the_same_bytes() {
    let s = plan();
    let whole = GgufFile::from_bytes(s.to_bytes()).unwrap();
    let d = dir("ok");
    let paths = write_split(&s, &d, 60_000_000);
    // The output and the embedding (about 70 MB each) get a part of their own.
    assert!(paths.len() >= 3, "{paths:?}");
    for p in &paths {
        let g = GgufFile::open(p).unwrap();
        g.check_tensors().unwrap();
        assert_eq!(g.parts().len(), paths.len());
        assert_eq!(g.get_str("general.architecture"), Some("qwen2"));
        assert_eq!(g.tensors.len(), whole.tensors.len());
        for t in &whole.tensors {
            let (a, b) = (g.tensor_data(&t.name).unwrap(), whole.tensor_data(&t.name).unwrap());
            assert_eq!((&a.0.dims, a.0.ty), (&b.0.dims, b.0.ty), "{}", t.name);
            assert!(a.1 == b.1, "{}: bytes differ", t.name);
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_parts_are_errors_that_name_them() {
    let s = plan();
    let d = dir("bad");
    let paths = write_split(&s, &d, 60_000_000);
    let n = paths.len();
    assert!(n >= 3, "{paths:?}");
    let first = &paths[0];
    let name = |k: usize, of: usize| format!("m-{k:05}-of-{of:05}.gguf");

    // Missing.
    let p2 = paths[1].with_extension("moved");
    std::fs::rename(&paths[1], &p2).unwrap();
    let e = err(first);
    assert!(e.contains(&format!("part 2 of {n} is missing")) && e.contains(&name(2, n)), "{e}");
    std::fs::rename(&p2, &paths[1]).unwrap();

    // Truncated: opens (the header is whole) but its tensors are past the end.
    let bytes = std::fs::read(&paths[2]).unwrap();
    std::fs::write(&paths[2], &bytes[..bytes.len() / 2]).unwrap();
    let g = GgufFile::open(first).unwrap();
    let e = g.check_tensors().unwrap_err().to_string();
    assert!(e.contains("past the end"), "{e}");
    std::fs::write(&paths[2], &bytes).unwrap();

    // Duplicated: part 3 is a copy of part 2 (it says split.no 1).
    std::fs::copy(&paths[1], &paths[2]).unwrap();
    let e = err(first);
    assert!(e.contains(&name(3, n)) && e.contains("split.no 1"), "{e}");
    std::fs::write(&paths[2], &bytes).unwrap();

    // From another split of the same model, with one part more.
    let other = dir("bad-other");
    let more = write_split(&s, &other, 10_000_000);
    let m = more.len();
    assert!(m > n, "{more:?}");
    std::fs::copy(&more[1], &paths[1]).unwrap();
    let e = err(first);
    assert!(e.contains(&name(2, n)) && e.contains(&format!("split.count {m}")), "{e}");

    // A part whose name does not say which part it is.
    let renamed = d.join("renamed.gguf");
    std::fs::copy(&more[0], &renamed).unwrap();
    let e = err(&renamed);
    assert!(e.contains(&format!("part 1 of {m}")) && e.contains(&format!("-00001-of-{m:05}.gguf")), "{e}");

    GgufFile::open(&more[m - 1]).unwrap().check_tensors().unwrap();
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&other);
}

/// The same checks on parts held in memory (the fuzz target's way in).
#[test]
fn part_images_in_memory() {
    let s = plan();
    let parts = s.split(60_000_000);
    let images: Vec<Vec<u8>> = parts
        .iter()
        .map(|part| {
            let mut v = Vec::new();
            s.write_part(part, &mut v, 0, |_| {}).unwrap();
            v
        })
        .collect();
    let n = images.len();
    let g = GgufFile::from_part_images(images.clone()).unwrap();
    g.check_tensors().unwrap();
    assert_eq!((g.parts().len(), g.tensors.len()), (n, s.tensors().len()));
    assert_eq!(g.parts()[0].0, None, "no paths in memory");

    let mut swapped = images.clone();
    swapped.swap(1, 2);
    let e = GgufFile::from_part_images(swapped).unwrap_err().to_string();
    assert!(e.contains("part 2 of") && e.contains("split.no 2"), "{e}");
    let e = GgufFile::from_part_images(images[..n - 1].to_vec()).unwrap_err().to_string();
    assert!(e.contains(&format!("{} parts given, the first says {n}", n - 1)), "{e}");
    let e = GgufFile::from_part_images(images[1..].to_vec()).unwrap_err().to_string();
    assert!(e.contains("parts given") || e.contains("split.no 0"), "{e}");
}
