//! Older deepseek2 GGUFs store the latent up-projection as one `attn_kv_b`
//! tensor (`[n_head * (qk_nope + v_head), kv_lora]`); newer ones split it into
//! `attn_k_b` (K part, transposed per head) and `attn_v_b`. This test rewrites
//! the llama.cpp-made fixture into the older layout (with the engine's GGUF
//! writer) and requires the same logits from both files.

mod common;

use common::{hf_reference, max_abs_diff};
use whale_engine::formats::gguf::{GgufFile, MetaValue};
use whale_engine::formats::gguf_write::GgufWriter;
use whale_engine::formats::weights::WeightStore;
use whale_engine::models::{load_weights, LoadOptions, Logits};
use whale_kernels::GgmlType;

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
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata.iter().filter(|(k, _)| !k.ends_with("key_length_mla") && !k.ends_with("value_length_mla"))
    {
        let v = match k.as_str() {
            "deepseek2.attention.key_length" => MetaValue::U32((nope + u("rope.dimension_count")) as u32),
            "deepseek2.attention.value_length" => MetaValue::U32(vh as u32),
            _ => v.clone(),
        };
        w.set(k, v);
    }
    for (name, dims, _) in &tensors {
        w.add_tensor(name, dims, GgmlType::F32).unwrap();
    }
    let mut b = Vec::new();
    w.write(&mut b, |i, _, out| out.write_all(&tensors[i].2)).unwrap();
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
