#!/usr/bin/env python3
"""Generate the dequantization fixtures used by `tests/dequant_reference.rs`.

The expected values come from an implementation that is *not* ours: the
`gguf` Python package (the reference GGUF tooling published on PyPI), whose
`gguf.quants.dequantize` has numpy dequantizers for the ggml block formats.

Generated with: gguf 0.19.0, numpy 2.4.6 (Python 3.11).

Regenerate (from the repository root):

    python3 -m venv /tmp/ggufenv
    /tmp/ggufenv/bin/pip install gguf==0.19.0 numpy
    /tmp/ggufenv/bin/python crates/whale-kernels/tests/data/gen_dequant_fixtures.py

The output is deterministic (fixed seed), so rerunning it with the same package
versions reproduces the checked-in files byte for byte.

Two types are not covered by `gguf.quants.dequantize` in that version:

* Q8_1: gguf-py has no dequantizer and its GGML_QUANT_SIZES still lists the
  historic 40-byte layout (f32 d, f32 s). Current ggml (and whale) use the
  36-byte layout `f16 d, f16 s, i8 qs[32]`. Its expected values are computed
  here with numpy from the format definition x = qs * d (s is unused).
* Q8_K: gguf-py has no dequantizer. Layout `f32 d, i8 qs[256], i16 bsums[16]`,
  x = qs * d, computed here with numpy.

Both are one multiplication per element, computed by numpy in float32, so they
remain an independent reference for the Rust code.

Fixture file format (`dequant_<type>.bin`, all little-endian):

    magic    4 bytes  b"WKFX"
    version  u32      1
    type id  u32      GGUF/ggml tensor type id
    n_elems  u32      number of dequantized values
    n_bytes  u32      number of encoded bytes
    data     n_bytes  encoded blocks
    values   n_elems  float32 expected dequantized values
"""

from __future__ import annotations

import os
import struct

import numpy as np
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import dequantize

SEED = 0x5EED_CAFE
N_BLOCKS = 8  # blocks per quantized type
N_FLOAT = 256  # elements for the F32 / F16 / BF16 fixtures

OUT_DIR = os.path.dirname(os.path.abspath(__file__))


# name -> (type id, elements per block, bytes per block, offsets of f16 scale fields,
#          offsets of f32 scale fields)
LAYOUTS: dict[str, tuple[int, int, int, list[int], list[int]]] = {
    "Q4_0": (2, 32, 18, [0], []),
    "Q4_1": (3, 32, 20, [0, 2], []),
    "Q5_0": (6, 32, 22, [0], []),
    "Q5_1": (7, 32, 24, [0, 2], []),
    "Q8_0": (8, 32, 34, [0], []),
    "Q8_1": (9, 32, 36, [0, 2], []),
    "Q2_K": (10, 256, 84, [80, 82], []),
    "Q3_K": (11, 256, 110, [108], []),
    "Q4_K": (12, 256, 144, [0, 2], []),
    "Q5_K": (13, 256, 176, [0, 2], []),
    "Q6_K": (14, 256, 210, [208], []),
    "Q8_K": (15, 256, 292, [], [0]),
    # The i-quants and ternary types (appended after the others so that
    # the rng stream, and hence the older fixtures, are unchanged). Every
    # byte pattern of their index fields is valid.
    "IQ2_XXS": (16, 256, 66, [0], []),
    "IQ2_XS": (17, 256, 74, [0], []),
    "IQ3_XXS": (18, 256, 98, [0], []),
    "IQ1_S": (19, 256, 50, [0], []),
    "IQ4_NL": (20, 32, 18, [0], []),
    "IQ3_S": (21, 256, 110, [0], []),
    "IQ2_S": (22, 256, 82, [0], []),
    "IQ4_XS": (23, 256, 136, [0], []),
    "IQ1_M": (29, 256, 56, [], []),
    "TQ1_0": (34, 256, 54, [52], []),
    "TQ2_0": (35, 256, 66, [64], []),
}


def set_iq1_m_scale(rng: np.random.Generator, blocks: np.ndarray) -> None:
    """IQ1_M keeps its f16 `d` in the top nibbles of the four u16 scale
    words (bytes 48..56); give it a sane finite value like the others."""
    for b in range(blocks.shape[0]):
        d = np.float16(rng.uniform(-0.1, 0.1)) if b != 2 else np.float16(0.0)
        bits = int(np.frombuffer(d.tobytes(), dtype=np.uint16)[0])
        words = blocks[b, 48:56].copy().view(np.uint16)
        for i in range(4):
            words[i] = (words[i] & 0x0FFF) | (((bits >> (4 * i)) & 0xF) << 12)
        blocks[b, 48:56] = words.view(np.uint8)


def make_blocks(rng: np.random.Generator, n_blocks: int, type_size: int,
                f16_offsets: list[int], f32_offsets: list[int]) -> np.ndarray:
    """Random block bytes with sane, finite scale fields."""
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for b in range(n_blocks):
        for off in f16_offsets:
            v = np.float16(rng.uniform(-0.1, 0.1))
            if b == 1 and off == f16_offsets[0]:
                v = np.float16(3.0e-6)  # an f16 subnormal: exercises the half conversion
            if b == 2 and off == f16_offsets[0]:
                v = np.float16(0.0)
            blocks[b, off:off + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
        for off in f32_offsets:
            v = np.float32(rng.uniform(-0.1, 0.1))
            blocks[b, off:off + 4] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    return blocks


def ref_q8_1(blocks: np.ndarray) -> np.ndarray:
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 4:36].copy().view(np.int8).astype(np.float32)
    return (qs * d).reshape(-1)


def ref_q8_k(blocks: np.ndarray) -> np.ndarray:
    d = blocks[:, 0:4].copy().view(np.float32)
    qs = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (qs * d).reshape(-1)


def finite_bits(rng: np.random.Generator, n: int, bits: int, exp_mask: int) -> np.ndarray:
    """Random bit patterns of floats, with NaN/inf patterns replaced by finite ones."""
    dtype = {16: np.uint16, 32: np.uint32}[bits]
    info = np.iinfo(dtype)
    v = rng.integers(0, int(info.max) + 1, size=n, dtype=np.uint64).astype(dtype)
    all_ones = (v & dtype(exp_mask)) == dtype(exp_mask)
    # clear the lowest exponent bit of any inf/NaN pattern -> a large finite value
    lowest_exp_bit = dtype(exp_mask & (-exp_mask))
    v = np.where(all_ones, v & ~lowest_exp_bit, v).astype(dtype)
    # a few special values at the front: +0, -0, smallest subnormal
    v[0] = 0
    v[1] = dtype(1 << (bits - 1))
    v[2] = 1
    return v


def write_fixture(name: str, type_id: int, data: np.ndarray, values: np.ndarray) -> int:
    raw = np.ascontiguousarray(data).view(np.uint8).tobytes()
    vals = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    assert np.all(np.isfinite(vals)), name
    header = b"WKFX" + struct.pack("<IIII", 1, type_id, vals.size, len(raw))
    path = os.path.join(OUT_DIR, f"dequant_{name.lower()}.bin")
    blob = header + raw + vals.astype("<f4").tobytes()
    with open(path, "wb") as f:
        f.write(blob)
    return len(blob)


def main() -> None:
    rng = np.random.default_rng(SEED)
    total = 0

    # Plain float types.
    f32 = finite_bits(rng, N_FLOAT, 32, 0x7F80_0000)
    total += write_fixture("F32", 0, f32, dequantize(f32.view(np.uint8), T.F32))
    f16 = finite_bits(rng, N_FLOAT, 16, 0x7C00)
    total += write_fixture("F16", 1, f16, dequantize(f16.view(np.uint8), T.F16))
    bf16 = finite_bits(rng, N_FLOAT, 16, 0x7F80)
    total += write_fixture("BF16", 30, bf16, dequantize(bf16.view(np.uint8), T.BF16))

    for name, (type_id, block_size, type_size, f16_offs, f32_offs) in LAYOUTS.items():
        blocks = make_blocks(rng, N_BLOCKS, type_size, f16_offs, f32_offs)
        if name == "IQ1_M":
            set_iq1_m_scale(rng, blocks)
        if name == "Q8_1":
            values = ref_q8_1(blocks)
        elif name == "Q8_K":
            values = ref_q8_k(blocks)
        else:
            qtype = T[name]
            values = dequantize(blocks.reshape(-1), qtype).reshape(-1)
        assert values.size == N_BLOCKS * block_size, name
        total += write_fixture(name, type_id, blocks, values)

    print(f"wrote {len(LAYOUTS) + 3} fixtures, {total} bytes in total, to {OUT_DIR}")


if __name__ == "__main__":
    main()
