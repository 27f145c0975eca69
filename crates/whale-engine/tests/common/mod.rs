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
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-models.sh first (the README's test command does)",
        p.display()
    );
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
    let shape: Vec<usize> =
        shape_str.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
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

/// Members of an uncompressed `.npz` (numpy's `savez`): name → raw `.npy` bytes.
pub fn read_npz(path: &std::path::Path) -> std::collections::HashMap<String, Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = std::collections::HashMap::new();
    let mut i = 0;
    // Walk the local file headers: PK\x03\x04, method must be 0 (stored).
    while i + 30 <= b.len() && b[i..i + 4] == *b"PK\x03\x04" {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
        assert_eq!(u16_at(i + 8), 0, "{}: compressed npz members are not supported", path.display());
        let mut size = u32_at(i + 18);
        let (name_len, extra_len) = (u16_at(i + 26), u16_at(i + 28));
        let name = String::from_utf8(b[i + 30..i + 30 + name_len].to_vec()).unwrap();
        let start = i + 30 + name_len + extra_len;
        if size == 0xFFFF_FFFF {
            // ZIP64: the extra field (id 1) holds the 64-bit sizes.
            let extra = &b[i + 30 + name_len..start];
            assert_eq!(u16::from_le_bytes([extra[0], extra[1]]), 1, "zip64 extra field expected");
            size = u64::from_le_bytes(extra[4..12].try_into().unwrap()) as usize;
        }
        out.insert(name.trim_end_matches(".npy").to_string(), b[start..start + size].to_vec());
        i = start + size;
    }
    out
}

/// Parse `.npy` bytes of any simple dtype into f64 values with their shape.
pub fn npy_values(bytes: &[u8]) -> (Vec<usize>, Vec<f64>) {
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let descr = header.split("'descr': '").nth(1).unwrap().split('\'').next().unwrap();
    let shape_str = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        shape_str.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data = &bytes[10 + hlen..];
    let vals: Vec<f64> = match descr {
        "<f4" => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "<f8" => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        "<i8" => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "<i4" => data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "|u1" => data.iter().map(|&b| b as f64).collect(),
        other => panic!("unsupported npy dtype {other}"),
    };
    (shape, vals)
}
