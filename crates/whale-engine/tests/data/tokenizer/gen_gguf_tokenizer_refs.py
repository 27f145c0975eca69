#!/usr/bin/env python3
"""Writes gguf_<model>.json: what llama.cpp's own tokenizer makes of the test strings in
CASES for each model vocabulary the Rust tests use (tests/tokenizer_gguf_models.rs).

Reference: llama.cpp through the `llama-cpp-cffi` wheel (see refcommon.py), i.e. the
C++ tokenizer that llama.cpp runs, independent of whale and of the `tokenizers` crate.
Expected ids are `llama_tokenize(text, add_special, parse_special=true)`; `decoded` is
the concatenation of `llama_token_to_piece(id, special=true)`; `eog_ids` is every id for
which `llama_vocab_is_eog` is true.

(Hugging Face `transformers`' GGUF tokenizer loader was not used: it needs torch, and in
5.24 it knows no "smollm" split and drops control tokens spelled outside the byte
alphabet, such as <｜User｜>.)

Set up (Python 3.11, Debian 12), then run from anywhere:
    python3 -m venv /tmp/tokref-venv
    /tmp/tokref-venv/bin/pip install --no-deps llama-cpp-cffi==0.4.42
    /tmp/tokref-venv/bin/pip install cffi
    WHALE_HOME=... /tmp/tokref-venv/bin/python gen_gguf_tokenizer_refs.py
The models are the ones scripts/fetch-test-models.sh puts in $WHALE_HOME/models.
"""
import json
import os
import shutil
import sys
import tempfile

from refcommon import HERE, LlamaCppVocab, ensure_shim, models_dir, read_gguf_kv, sha256

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2_5_coder": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    # The first 100 MB of the Q4_K_M file: full header, truncated tensor data.
    "r1_distill_qwen": "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.head.gguf",
}

CASES = [
    ("capital", "The capital of France is"),
    ("hello", "Hello world"),
    ("hello_leading_space", " Hello world"),
    ("spaces_around", "   leading and trailing spaces   "),
    ("only_spaces", "   "),
    ("empty", ""),
    ("tabs", "tabs\tand\t\tdouble tabs"),
    ("newlines", "line1\nline2\n\nline4\r\nwindows\r\n"),
    ("newlines_only", "\n\n\n"),
    ("digits_7", "1234567"),
    ("digits_mixed", "3.14159 and 1,000,000 and 007 and x2y34"),
    ("digits_code", "x=1234567890; y = -42.5e-3"),
    ("contractions", "don't won't I'm we'll they've she'd it's"),
    ("contractions_caps", "DON'T SHOUT, IT'S LOUD"),
    ("code_python", "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"),
    ("code_rust", "fn main() {\n\tprintln!(\"{}\", 1 + 2);\n}\n"),
    ("code_json", '{"key": [1, 2, 3], "nested": {"a": null}}'),
    ("chinese", "你好，世界！今天天气很好。"),
    ("japanese", "こんにちは、世界。カタカナとひらがな"),
    ("korean", "안녕하세요 세계"),
    ("cyrillic_accents", "Привет, мир! café naïve résumé"),
    ("greek_arabic_hebrew", "Ελληνικά και العربية و עברית"),
    ("emoji", "emoji 👋🏽 👨\u200d👩\u200d👧\u200d👦 ❤️ 🇯🇵 😀😃"),
    ("combining", "e\u0301 a\u0308 n\u0303"),
    ("invisible", "zero\u200bwidth\u200cjoin\u200d nbsp\u00a0em\u2003space soft\u00adhyphen"),
    ("punct_runs", "Wait... what?!?! (yes) [no] {maybe} <tag> --flag ==> ***bold***"),
    ("url", "See https://example.com/path?q=1&r=two#frag for details."),
    ("repeated", "a" * 40 + " " + "=" * 20),
    ("latin1", "ÀÉÎÕÜ ß ø å æ ¿¡"),
    ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
    ("endoftext", "text<|endoftext|>more"),
    ("deepseek_chat", "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hello<｜Assistant｜><think>\nhmm\n</think>\n\nAnswer<｜end▁of▁sentence｜>"),
    ("special_lookalike", "<|im_start| <|im_end |> <｜User| <think >"),
    ("tool_call", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
]


def vocab_path(name, fname):
    path = os.path.join(models_dir(), fname)
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: run scripts/fetch-test-models.sh")
    return path


def llama_cpp_copy(path, tmp):
    """llama.cpp refuses a GGUF whose tensor data runs past the end of the file even with
    vocab_only; a copy extended with a sparse hole loads (the tensors are never read)."""
    copy = os.path.join(tmp, os.path.basename(path))
    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        f.truncate(max(os.path.getsize(path), 16 << 30))
    return copy


def main():
    ensure_shim()
    import cffi
    import importlib.metadata as md
    versions = {
        "llama-cpp-cffi": md.version("llama-cpp-cffi"),
        "cffi": cffi.__version__,
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, fname in MODELS.items():
            path = vocab_path(name, fname)
            print(f"== {name}: {path}", file=sys.stderr)
            kv = read_gguf_kv(path)
            v = LlamaCppVocab(llama_cpp_copy(path, tmp))
            cases = []
            for case_name, text in CASES:
                ids = v.tokenize(text, add_special=False)
                ids_special = v.tokenize(text, add_special=True)
                decoded = b"".join(v.piece(i) for i in ids).decode("utf-8", errors="replace")
                cases.append({"name": case_name, "text": text, "ids": ids,
                              "ids_add_special": ids_special, "decoded": decoded})
            out = {
                "generator": "gen_gguf_tokenizer_refs.py",
                "reference": "llama.cpp (llama-cpp-cffi wheel, CPU build): llama_tokenize(parse_special=true), "
                             "llama_token_to_piece(special=true), llama_vocab_is_eog",
                "versions": versions,
                "model_file": fname,
                "model_sha256": sha256(path),
                "tokenizer_ggml_pre": kv.get("tokenizer.ggml.pre"),
                "vocab_size": v.n_tokens(),
                "bos_id": v.bos(),
                "eos_id": v.eos(),
                "add_bos": v.add_bos(),
                "eog_ids": v.eog_ids(),
                "cases": cases,
            }
            dst = os.path.join(HERE, f"gguf_{name}.json")
            with open(dst, "w", encoding="utf-8") as f:
                json.dump(out, f, ensure_ascii=False, indent=1)
                f.write("\n")
            print(f"  wrote {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
