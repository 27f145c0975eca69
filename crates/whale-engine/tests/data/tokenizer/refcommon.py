"""Helpers shared by the reference generators in this folder (not used by the Rust tests).

* `read_gguf_kv(path)`: the metadata of a GGUF (header and key/values only), so that it
  also works on the truncated DeepSeek-R1-Distill head file.
* `LlamaCppVocab(path)`: llama.cpp's own tokenizer, through the C API compiled into the
  `llama-cpp-cffi` wheel (0.4.42, CPU build). Only the vocabulary is loaded (`vocab_only`).
  That wheel is built against GCC 14's libstdc++, which lacks on Debian 12 exactly one
  symbol, `__cxa_call_terminate`; `ensure_shim()` compiles a two-line replacement and the
  scripts re-exec themselves with it in LD_PRELOAD.
"""
import glob
import hashlib
import importlib.util
import os
import site
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def models_dir():
    home = os.environ.get("WHALE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "whale")
    return os.path.join(home, "models")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_gguf_kv(path):
    f = open(path, "rb")

    def rd(fmt):
        return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

    def rstr():
        return f.read(rd("Q")).decode("utf-8")

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def rval(t):
        if t in scalar:
            return rd(scalar[t])
        if t == 8:
            return rstr()
        if t == 9:
            et, n = rd("I"), rd("Q")
            return [rval(et) for _ in range(n)]
        raise ValueError(f"GGUF value type {t}")

    assert f.read(4) == b"GGUF"
    rd("I")  # version
    rd("Q")  # tensor count
    n_kv = rd("Q")
    kv = {}
    for _ in range(n_kv):
        k = rstr()
        kv[k] = rval(rd("I"))
    return kv


SHIM_SRC = """#include <exception>
extern "C" void __cxa_call_terminate(void *) noexcept { std::terminate(); }
"""


def ensure_shim():
    """Re-exec with the libstdc++ shim preloaded (see the module docstring)."""
    if os.environ.get("WHALE_REF_SHIM") == "1":
        return
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "whale-tokref-shim")
    os.makedirs(d, exist_ok=True)
    so = os.path.join(d, "libcxa_shim.so")
    if not os.path.exists(so):
        src = os.path.join(d, "shim.cc")
        open(src, "w").write(SHIM_SRC)
        subprocess.check_call(["g++", "-shared", "-fPIC", "-O2", "-o", so, src])
    env = dict(os.environ, WHALE_REF_SHIM="1", LD_PRELOAD=so)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def _load_llama_cpp():
    so = None
    for sp in site.getsitepackages():
        found = glob.glob(os.path.join(sp, "llama", "_llama_cpp_cpu*.so"))
        if found:
            so = found[0]
    if so is None:
        raise SystemExit("llama-cpp-cffi is not installed: pip install --no-deps llama-cpp-cffi==0.4.42 cffi")
    spec = importlib.util.spec_from_file_location("_llama_cpp_cpu", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.lib.llama_backend_init()
    return mod.ffi, mod.lib


class LlamaCppVocab:
    def __init__(self, path):
        self.ffi, self.lib = _load_llama_cpp()
        p = self.lib.llama_model_default_params()
        p.vocab_only = True
        self.model = self.lib.llama_model_load_from_file(path.encode(), p)
        if self.model == self.ffi.NULL:
            raise RuntimeError("llama.cpp could not load " + path)
        self.vocab = self.lib.llama_model_get_vocab(self.model)

    def tokenize(self, text, add_special=False, parse_special=True):
        b = text.encode("utf-8")
        n = len(b) + 16
        buf = self.ffi.new("llama_token[]", n)
        k = self.lib.llama_tokenize(self.vocab, b, len(b), buf, n, add_special, parse_special)
        assert k >= 0, k
        return [buf[i] for i in range(k)]

    def piece(self, tok):
        buf = self.ffi.new("char[]", 512)
        k = self.lib.llama_token_to_piece(self.vocab, tok, buf, 512, 0, True)
        assert k >= 0
        return self.ffi.unpack(buf, k)

    def n_tokens(self):
        return self.lib.llama_vocab_n_tokens(self.vocab)

    def eog_ids(self):
        return [i for i in range(self.n_tokens()) if self.lib.llama_vocab_is_eog(self.vocab, i)]

    def bos(self):
        return self.lib.llama_vocab_bos(self.vocab)

    def eos(self):
        return self.lib.llama_vocab_eos(self.vocab)

    def add_bos(self):
        return bool(self.lib.llama_vocab_get_add_bos(self.vocab))
