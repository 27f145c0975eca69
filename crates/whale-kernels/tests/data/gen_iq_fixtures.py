#!/usr/bin/env python3
"""Generate `iq_llamacpp.bin`: llama.cpp's own activation bytes and dot
products for the i-quant and ternary weight types, used by
`tests/qdot.rs` (`iq_vec_dot_matches_llamacpp`).

Same record format and method as `q8_llamacpp.bin` (see
`gen_q8_fixtures.py`): for each record, f32 activations `x`, a random weight
row (every index/sign/scale bit pattern of these formats is valid; the f16
`d` is set to a finite value in [-0.1, 0.1)), the bytes llama.cpp's CPU
backend produces when it quantizes `x` to the weight type's vec_dot type
(Q8_K, or Q8_0 for IQ4_NL), and the f32 result of its `vec_dot`.

Regenerate (from the repository root; needs numpy and gguf, and a llama.cpp
build with shared libraries, e.g. `cmake -B build -DBUILD_SHARED_LIBS=ON
-DGGML_NATIVE=ON`):

    target/pyenv/bin/python crates/whale-kernels/tests/data/gen_iq_fixtures.py \\
        /work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin

Generated with gguf 0.19.0, numpy, llama.cpp as vendored by llama-cpp-python
0.3.36, built with GGML_NATIVE=ON on an Intel Xeon (AVX-512 VNNI, no AMX
exposed), so its AVX-512/AVX2 i-quant kernels produced the dots.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_q8_fixtures import activations, ggml_cpu, llamacpp_dot, write_llamacpp_records  # noqa: E402

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
SEED = 0x1C0DE
# name -> (type id, elements per block, bytes per block, f16 d offset or None)
LAYOUTS = {
    "IQ2_XXS": (16, 256, 66, 0),
    "IQ2_XS": (17, 256, 74, 0),
    "IQ3_XXS": (18, 256, 98, 0),
    "IQ1_S": (19, 256, 50, 0),
    "IQ4_NL": (20, 32, 18, 0),
    "IQ3_S": (21, 256, 110, 0),
    "IQ2_S": (22, 256, 82, 0),
    "IQ4_XS": (23, 256, 136, 0),
    "IQ1_M": (29, 256, 56, None),
    "TQ1_0": (34, 256, 54, 52),
    "TQ2_0": (35, 256, 66, 64),
}
VEC_DOT_TYPE = {20: 8}  # Q8_0 for IQ4_NL; Q8_K (15) for the others
ACT_ROW_BYTES = {8: lambda n: n // 32 * 34, 15: lambda n: n // 256 * 292}


def weight_row(rng: np.random.Generator, name: str, n: int) -> bytes:
    _, bs, ts, d_off = LAYOUTS[name]
    blocks = rng.integers(0, 256, size=(n // bs, ts), dtype=np.uint8)
    d = rng.uniform(-0.1, 0.1, size=n // bs).astype(np.float16)
    if d_off is not None:
        blocks[:, d_off:d_off + 2] = d.view(np.uint8).reshape(-1, 2)
    else:  # IQ1_M: d in the top nibbles of the four u16 words at 48..56
        bits = d.view(np.uint16)
        words = blocks[:, 48:56].copy().view(np.uint16)
        for i in range(4):
            words[:, i] = (words[:, i] & 0x0FFF) | (((bits >> (4 * i)) & 0xF) << 12)
        blocks[:, 48:56] = words.view(np.uint8)
    return blocks.tobytes()


def main() -> None:
    libdir = sys.argv[1] if len(sys.argv) > 1 else \
        "/work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"
    traits = ggml_cpu(libdir)
    rng = np.random.default_rng(SEED)
    records = []
    for name, (tid, bs, _, _) in LAYOUTS.items():
        tt = traits(tid)
        act = tt.vec_dot_type
        assert act == VEC_DOT_TYPE.get(tid, 15), (name, act)
        sizes, long_n = ([32, 224, 288], 2080) if bs == 32 else ([256, 768], 2304)
        cases = [(n, kind) for n in sizes for kind in range(6)] + [(long_n, 0)]
        for n, kind in cases:
            x = activations(rng, n, kind)
            w = weight_row(rng, name, n)
            a, dot = llamacpp_dot(traits, tid, act, ACT_ROW_BYTES[act](n), x, w)
            records.append((tid, act, n, x, w, a, dot))

    write_llamacpp_records(os.path.join(OUT_DIR, "iq_llamacpp.bin"), records)
    print(f"{len(records)} llama.cpp records")


if __name__ == "__main__":
    main()
