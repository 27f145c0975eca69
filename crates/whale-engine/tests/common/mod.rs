//! Helpers shared by the engine's integration tests: where the fixtures are,
//! and a reader for the `.npy` arrays that the reference scripts wrote.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/fixtures/hf-reference` beside the checkout (or $WHALE_FIXTURES).
pub fn hf_reference() -> PathBuf {
    if let Ok(p) = std::env::var("WHALE_FIXTURES") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf-reference");
    assert!(p.is_dir(), "fixtures not found at {} (set WHALE_FIXTURES)", p.display());
    p
}

/// A model fetched by `scripts/fetch-test-models.sh` into the whale cache.
pub fn cached_model(file: &str) -> PathBuf {
    let home = std::env::var("WHALE_HOME").map(PathBuf::from).unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
        base.join("whale")
    });
    let p = home.join("models").join(file);
    assert!(p.exists(), "{} is missing: run scripts/fetch-test-models.sh first (the README's test command does)", p.display());
    p
}

/// A float32 array from a `.npy` file: (shape, values).
pub fn read_npy_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, hstart) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12)
    };
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let shape_str = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_str.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data: Vec<f32> =
        bytes[hstart + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
