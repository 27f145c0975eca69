"""Make a DeepSeek-style FP8 checkpoint from the tiny dsv3_a_qlora_yarn fixture.

Layout of DeepSeek's released FP8 checkpoints: each quantized linear weight
`X.weight` is float8_e4m3fn, with `X.weight_scale_inv` (float32, shape
[ceil(rows/128), ceil(cols/128)]) such that the real weight is
w_fp8[r, c] * scale_inv[r // 128, c // 128]. Embeddings, lm_head, norms and the
router stay in higher precision, as in the real checkpoints.

Writes two folders next to this script:
  fp8/      the FP8 checkpoint (config.json gains quantization_config as V3's has)
  dequant/  the same weights dequantized here in numpy, as float32

Run with numpy, ml_dtypes and safetensors installed (versions used:
numpy 2.x, ml_dtypes 0.5, safetensors 0.7):
  python make_fp8_fixture.py ../../../../../../shared/fixtures/hf-reference/models/dsv3_a_qlora_yarn
"""
import json, os, re, struct, sys

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file

BLOCK = 128
E4M3_MAX = 448.0
src = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
quantized = re.compile(r"\.(self_attn\.(q_a_proj|q_b_proj|q_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)|mlp\.(.*\.)?(gate_proj|up_proj|down_proj))\.weight$")


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, raw bytes). Plain format writer."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


weights = load_file(os.path.join(src, "model.safetensors"))
fp8, deq = {}, {}
for name, w in weights.items():
    w = w.astype(np.float32)
    if not quantized.search(name):
        fp8[name] = ("F32", w.shape, w.tobytes())
        deq[name] = ("F32", w.shape, w.tobytes())
        continue
    rows, cols = w.shape
    br, bc = -(-rows // BLOCK), -(-cols // BLOCK)
    scale = np.zeros((br, bc), np.float32)
    q = np.zeros((rows, cols), ml_dtypes.float8_e4m3fn)
    for i in range(br):
        for j in range(bc):
            blk = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]
            s = np.float32(max(np.abs(blk).max(), 1e-12) / E4M3_MAX)
            scale[i, j] = s
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = (blk / s).astype(ml_dtypes.float8_e4m3fn)
    back = q.astype(np.float32) * np.repeat(np.repeat(scale, BLOCK, 0), BLOCK, 1)[:rows, :cols]
    fp8[name] = ("F8_E4M3", w.shape, q.tobytes())
    fp8[name + "_scale_inv"] = ("F32", scale.shape, scale.tobytes())
    deq[name] = ("F32", w.shape, back.astype(np.float32).tobytes())

cfg = json.load(open(os.path.join(src, "config.json")))
for sub, tensors, extra in [("fp8", fp8, True), ("dequant", deq, False)]:
    d = os.path.join(here, sub)
    os.makedirs(d, exist_ok=True)
    c = dict(cfg)
    if extra:
        c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]}
    json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)
print("wrote", here)
