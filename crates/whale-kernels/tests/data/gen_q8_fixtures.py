#!/usr/bin/env python3
"""Generate the activation-quantization fixtures used by `tests/qdot.rs`.

Two independent sources of expected values:

1. `q8_gguf_py.bin` -- gguf-py (the PyPI `gguf` package, 0.19.0) quantizing
   f32 rows to Q8_0 with `gguf.quants.quantize`, which implements ggml's
   portable reference `quantize_row_q8_0_ref` (round half away from zero,
   `id = 1/d`). Checked against whale's `quantize_row_q8_0_ggml_ref`.

2. `q8_llamacpp.bin` -- llama.cpp's own CPU backend, called through ctypes
   from a build of the vendored llama.cpp (`libggml-cpu.so`, built with
   GGML_NATIVE=ON on the AMD Zen 5 development machine, so its x86 AVX2 /
   AVX-512 code paths). For each record it stores the f32 activations `x`,
   a random weight row, the bytes `type_traits_cpu[vec_dot_type].from_float`
   produced from `x` (the activation quantization llama.cpp really runs on
   x86-64) and the f32 result of `type_traits_cpu[weight type].vec_dot`.
   whale must reproduce the quantized bytes exactly and the dot up to f32
   summation order.

Regenerate (from the repository root; needs numpy and gguf, e.g. the venv
described in gen_dequant_fixtures.py, and a llama.cpp build):

    /work/venv/bin/python crates/whale-kernels/tests/data/gen_q8_fixtures.py \\
        /work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin

Generated with gguf 0.19.0, numpy 2.4.6, llama.cpp as vendored by
llama-cpp-python 0.3.36 (ggml 0.25.3). The inputs are deterministic (fixed
seed); the llama.cpp outputs depend on the machine only through which x86
code path runs, and the quantized bytes are the same for all of them.

File format (all little-endian):

    q8_gguf_py.bin:   b"WQ8G", u32 version = 1, u32 count, then per record:
                      u32 n, f32 x[n], u8 q8_0_blocks[n / 32 * 34]

    q8_llamacpp.bin:  b"WQ8L", u32 version = 1, u32 count, then per record:
                      u32 weight type id, u32 activation type id, u32 n,
                      f32 x[n],
                      u32 len, u8 weight_row[len],
                      u32 len, u8 acts[len],
                      f32 dot
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

import numpy as np
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import quantize

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
SEED = 0x0AC75EED

# name -> (type id, elements per block, bytes per block, f16 scale offsets)
LAYOUTS = {
    "Q4_0": (2, 32, 18, [0]),
    "Q4_1": (3, 32, 20, [0, 2]),
    "Q5_0": (6, 32, 22, [0]),
    "Q5_1": (7, 32, 24, [0, 2]),
    "Q8_0": (8, 32, 34, [0]),
    "Q2_K": (10, 256, 84, [80, 82]),
    "Q3_K": (11, 256, 110, [108]),
    "Q4_K": (12, 256, 144, [0, 2]),
    "Q5_K": (13, 256, 176, [0, 2]),
    "Q6_K": (14, 256, 210, [208]),
    "F16": (1, 1, 2, []),
    "BF16": (30, 1, 2, []),
}

# The activation type ggml-cpu uses for each weight type (type_traits_cpu).
VEC_DOT_TYPE = {2: 8, 3: 9, 6: 8, 7: 9, 8: 8, 10: 15, 11: 15, 12: 15, 13: 15, 14: 15, 1: 1, 30: 30}
ACT_ROW_BYTES = {8: lambda n: n // 32 * 34, 9: lambda n: n // 32 * 36, 15: lambda n: n // 256 * 292,
                 1: lambda n: 2 * n, 30: lambda n: 2 * n}


def weight_row(rng: np.random.Generator, name: str, n: int) -> bytes:
    tid, bs, ts, f16_offsets = LAYOUTS[name]
    if name == "F16":
        return rng.uniform(-1, 1, n).astype(np.float16).tobytes()
    if name == "BF16":
        bits = rng.uniform(-1, 1, n).astype(np.float32).view(np.uint32)
        return (bits >> 16).astype(np.uint16).tobytes()  # truncation: any bf16 will do
    blocks = rng.integers(0, 256, size=(n // bs, ts), dtype=np.uint8)
    for off in f16_offsets:
        vals = rng.uniform(-0.1, 0.1, size=n // bs).astype(np.float16)
        blocks[:, off:off + 2] = vals.view(np.uint8).reshape(-1, 2)
    return blocks.tobytes()


def activations(rng: np.random.Generator, n: int, kind: int) -> np.ndarray:
    """A few activation distributions, including exact rounding ties."""
    if kind == 0:
        x = rng.standard_normal(n)
    elif kind == 1:  # tiny and huge scales, outliers
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-4, 3, n)
    elif kind == 2:  # Q8_0/Q8_1 ties: amax = 127 per 32-block, so id = 1 and
        # halves are exact ties (round-half-even vs half-away differ).
        x = rng.integers(-254, 255, n) / 2.0
        x[::32] = 127.0
        x[5::64] = -127.0
    elif kind == 3:  # Q8_K ties: max = +-127 (iscale = -+1), halves; the
        # first element of largest magnitude decides the sign.
        x = rng.integers(-254, 255, n) / 2.0
        x[3::256] = -127.0
        x[200::256] = 127.0
    elif kind == 4:  # all-zero blocks and signed zeros mixed with values
        x = rng.standard_normal(n)
        x[: min(n, 256)] = 0.0
        x[1: min(n, 256): 3] = -0.0
    else:  # uniform [-1, 1) like the Rust tests
        x = rng.uniform(-1, 1, n)
    return x.astype(np.float32)


class Traits(ctypes.Structure):
    """ggml-cpu's `ggml_type_traits_cpu`."""
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def ggml_cpu(libdir: str):
    """Loads llama.cpp's CPU backend from a build's `bin` folder; returns
    `traits(type_id) -> Traits`."""
    ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
    cpu.ggml_cpu_init()
    return lambda tid: cpu.ggml_get_type_traits_cpu(tid).contents


def llamacpp_dot(traits, tid: int, act: int, act_len: int, x: np.ndarray, w: bytes) -> tuple[bytes, float]:
    """llama.cpp's quantization of `x` to type `act` (`act_len` bytes) and
    its `vec_dot` of weight row `w` (type `tid`) with it."""
    n = x.size
    act_buf = (ctypes.c_uint8 * act_len)()  # zero-filled
    FROM_FLOAT(traits(act).from_float)(x.ctypes.data, ctypes.addressof(act_buf), n)
    wbuf = (ctypes.c_uint8 * len(w)).from_buffer_copy(w)
    out = ctypes.c_float(0)
    VEC_DOT(traits(tid).vec_dot)(n, ctypes.addressof(out), 0, ctypes.addressof(wbuf), 0,
                                 ctypes.addressof(act_buf), 0, 1)
    return bytes(act_buf), out.value


def write_llamacpp_records(path: str, records: list) -> None:
    """The `WQ8L` file format of the module docs."""
    with open(path, "wb") as f:
        f.write(b"WQ8L" + struct.pack("<II", 1, len(records)))
        for tid, act, n, x, w, a, dot in records:
            f.write(struct.pack("<III", tid, act, n))
            f.write(x.astype("<f4").tobytes())
            f.write(struct.pack("<I", len(w)) + w)
            f.write(struct.pack("<I", len(a)) + a)
            f.write(struct.pack("<f", dot))


def main() -> None:
    libdir = sys.argv[1] if len(sys.argv) > 1 else \
        "/work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"
    traits = ggml_cpu(libdir)

    rng = np.random.default_rng(SEED)

    # --- llama.cpp records ---
    records = []
    for name, (tid, bs, _, _) in LAYOUTS.items():
        tt = traits(tid)
        act = tt.vec_dot_type
        assert act == VEC_DOT_TYPE[tid], (name, act)
        # Every distribution at a few small sizes, plus one longer row.
        if bs == 1:
            sizes, long_n = [1, 31, 45, 256], 1000
        elif bs == 32:
            sizes, long_n = [32, 224, 288], 2080
        else:
            sizes, long_n = [256, 768], 2304
        cases = [(n, kind) for n in sizes for kind in range(6)] + [(long_n, 0)]
        for n, kind in cases:
            x = activations(rng, n, kind)
            w = weight_row(rng, name, n)
            a, dot = llamacpp_dot(traits, tid, act, ACT_ROW_BYTES[act](n), x, w)
            records.append((tid, act, n, x, w, a, dot))

    write_llamacpp_records(os.path.join(OUT_DIR, "q8_llamacpp.bin"), records)

    # --- gguf-py Q8_0 records (reference rounding) ---
    gg = []
    for n in [32, 256, 1024]:
        for kind in range(6):
            x = activations(rng, n, kind)
            q = quantize(x.reshape(1, n), T.Q8_0)
            gg.append((n, x, q.tobytes()))
    with open(os.path.join(OUT_DIR, "q8_gguf_py.bin"), "wb") as f:
        f.write(b"WQ8G" + struct.pack("<II", 1, len(gg)))
        for n, x, q in gg:
            assert len(q) == n // 32 * 34
            f.write(struct.pack("<I", n) + x.astype("<f4").tobytes() + q)

    print(f"{len(records)} llama.cpp records, {len(gg)} gguf-py records")


if __name__ == "__main__":
    main()
