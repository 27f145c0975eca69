//! Older deepseek2 GGUFs store the latent up-projection as one `attn_kv_b`
//! tensor (`[n_head * (qk_nope + v_head), kv_lora]`); newer ones split it into
//! `attn_k_b` (K part, transposed per head) and `attn_v_b`. This test rewrites
//! the llama.cpp-made fixture into the older layout with its own small GGUF
//! writer and requires the same logits from both files.

mod common;

use common::{hf_reference, max_abs_diff};
use whale_engine::formats::gguf::{GgufFile, MetaValue};
use whale_engine::formats::weights::WeightStore;
use whale_engine::models::{load_weights, LoadOptions, Logits};

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => b.push(*x),
        MetaValue::I8(x) => b.push(*x as u8),
        MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => b.push(*x as u8),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::Array(a) => {
            b.extend_from_slice(&a.first().map_or(4, type_id).to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(b, x);
            }
        }
        MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn older_attn_kv_b_layout_gives_the_same_logits() {
    let src = hf_reference().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    let g = GgufFile::open(&src).unwrap();
    let u = |k: &str| g.get_u64(&format!("deepseek2.{k}")).unwrap() as usize;
    let (nh, lat) = (u("attention.head_count"), u("attention.kv_lora_rank"));
    let (nope, vh) = (u("attention.key_length_mla") - u("rope.dimension_count"), u("attention.value_length_mla"));
    // Tensors of the new file, with each layer's k_b/v_b merged into kv_b.
    let mut tensors: Vec<(String, Vec<u64>, Vec<u8>)> = Vec::new();
    for t in &g.tensors {
        let (_, data) = g.tensor_data(&t.name).unwrap();
        if t.name.ends_with("attn_v_b.weight") {
            continue;
        }
        if let Some(prefix) = t.name.strip_suffix("attn_k_b.weight") {
            let k = f32s(data); // [nh, lat, nope]
            let (_, vd) = g.tensor_data(&format!("{prefix}attn_v_b.weight")).unwrap();
            let v = f32s(vd); // [nh, vh, lat]
            let mut kv = Vec::with_capacity(nh * (nope + vh) * lat); // [nh * (nope + vh), lat]
            for h in 0..nh {
                for r in 0..nope {
                    for c in 0..lat {
                        kv.push(k[(h * lat + c) * nope + r]);
                    }
                }
                kv.extend_from_slice(&v[h * vh * lat..(h + 1) * vh * lat]);
            }
            let bytes = kv.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((format!("{prefix}attn_kv_b.weight"), vec![lat as u64, (nh * (nope + vh)) as u64], bytes));
            continue;
        }
        tensors.push((t.name.clone(), t.dims.clone(), data.to_vec()));
    }
    // Older files described the per-head sizes in key_length/value_length.
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    let meta: Vec<(String, MetaValue)> = g
        .metadata
        .iter()
        .filter(|(k, _)| !k.ends_with("key_length_mla") && !k.ends_with("value_length_mla"))
        .map(|(k, v)| match k.as_str() {
            "deepseek2.attention.key_length" => (k.clone(), MetaValue::U32((nope + u("rope.dimension_count")) as u32)),
            "deepseek2.attention.value_length" => (k.clone(), MetaValue::U32(vh as u32)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (k, v) in &meta {
        put_str(&mut b, k);
        b.extend_from_slice(&type_id(v).to_le_bytes());
        put_value(&mut b, v);
    }
    let mut off = 0u64;
    for (name, dims, data) in &tensors {
        put_str(&mut b, name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&off.to_le_bytes());
        off += (data.len() as u64).div_ceil(32) * 32;
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for (_, _, data) in &tensors {
        b.extend_from_slice(data);
        while b.len() % 32 != 0 {
            b.push(0);
        }
    }
    let old = WeightStore::Gguf(GgufFile::from_bytes(b).unwrap());
    assert!(old.contains(&whale_engine::formats::names::layer(whale_engine::formats::names::ATTN_KV_B, 0)));
    let new = WeightStore::Gguf(g);
    let opts = LoadOptions { threads: 2, ..Default::default() };
    let (m_old, m_new) =
        (load_weights(&old, "deepseek2", opts).unwrap(), load_weights(&new, "deepseek2", opts).unwrap());
    let ids = [0u32, 128803, 21750, 260, 535, 16251, 943, 270, 8343, 16, 128804];
    let a = m_old.forward(&mut m_old.new_cache(16), &ids, Logits::All).unwrap();
    let b = m_new.forward(&mut m_new.new_cache(16), &ids, Logits::All).unwrap();
    let d = max_abs_diff(&a, &b);
    // Same weights, same arithmetic: only the K part's storage order differs.
    assert!(d <= 1e-6, "old vs new layout: max |Δlogit| = {d:e}");
}
