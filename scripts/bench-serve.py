#!/usr/bin/env python3
"""Throughput of `whale serve` beside llama.cpp's `llama-server` on the same
GGUF (a benchmark, not a test).

Each server is started in turn on a free loopback port with the same context,
slots and threads; then, for each concurrency level C, 2*C streamed chat
requests (distinct prompts, greedy, a fixed max_tokens) are sent by C client
threads. Reported per level: aggregate generated tokens/s over the wall time,
and the mean and median time to first token.

    scripts/bench-serve.py [--model GGUF] [--whale target/release/whale]
                           [--llama-server PATH] [--levels 1,4,8]
                           [--max-tokens 64] [--threads 2] [--ctx 1024]
    scripts/bench-serve.py --schema [--rounds 2] ...

With --schema, whale alone runs each level without and with a JSON schema in
`response_format` (a long string field, so that every request runs to
max_tokens), alternating for --rounds rounds: the cost of grammar masks.

Only the Python standard library is used.
"""

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

LLAMA_SERVER = "/work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server"


def default_model():
    home = os.environ.get("WHALE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "whale"
    )
    return os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, limit=300):
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


# Long enough that a constrained answer runs to max_tokens, like a free one.
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "story",
        "schema": {
            "type": "object",
            "properties": {"title": {"type": "string", "maxLength": 40}, "story": {"type": "string", "minLength": 2000}},
            "required": ["title", "story"],
            "additionalProperties": False,
        },
    },
}


def one_request(port, prompt, max_tokens, extra=None):
    """Stream one chat completion; returns (ttft seconds, generated tokens, total seconds)."""
    body = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.time()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft, chunks, usage = None, 0, None
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.time() - t0
    conn.close()
    tokens = usage["completion_tokens"] if usage else chunks
    return ttft if ttft is not None else time.time() - t0, tokens, time.time() - t0


PROMPTS = [
    "Write a short story about a whale who learns to sing.",
    "Explain how a bicycle works.",
    "List some facts about the ocean.",
    "Describe a day in the life of a lighthouse keeper.",
    "What are the benefits of reading books?",
    "Explain photosynthesis to a child.",
    "Write a poem about the moon.",
    "Describe how bread is made.",
]


def run_level(port, concurrency, max_tokens, extra=None):
    n = 2 * concurrency
    jobs = [f"{PROMPTS[i % len(PROMPTS)]} (request {i})" for i in range(n)]
    results, lock = [], threading.Lock()

    def worker():
        while True:
            with lock:
                if not jobs:
                    return
                prompt = jobs.pop()
            r = one_request(port, prompt, max_tokens, extra)
            with lock:
                results.append(r)

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    tokens = sum(r[1] for r in results)
    ttfts = [r[0] for r in results]
    return {
        "concurrency": concurrency,
        "requests": n,
        "tokens": tokens,
        "wall_s": wall,
        "tok_per_s": tokens / wall,
        "ttft_mean_s": statistics.mean(ttfts),
        "ttft_median_s": statistics.median(ttfts),
    }


@contextlib.contextmanager
def serving(name, cmd, port):
    """A server started, healthy and warmed up; stopped on the way out."""
    log = open(f"/tmp/bench-serve-{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc)
        one_request(port, "Warm up.", 4)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench(name, cmd, port, levels, max_tokens):
    with serving(name, cmd, port):
        return [dict(server=name, **run_level(port, c, max_tokens)) for c in levels]


def bench_schema(cmd, port, levels, max_tokens, rounds):
    """whale without and with a schema, alternating, on one server."""
    rows = []
    with serving("whale-schema", cmd, port):
        one_request(port, "Warm up.", 4, {"response_format": SCHEMA})
        for rnd in range(rounds):
            for c in levels:
                for name, extra in [("text", None), ("schema", {"response_format": SCHEMA})]:
                    rows.append(dict(server=f"whale {name} r{rnd + 1}", **run_level(port, c, max_tokens, extra)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--whale", default="target/release/whale")
    ap.add_argument("--llama-server", default=LLAMA_SERVER)
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=1024, help="tokens per sequence")
    ap.add_argument("--json", action="store_true", help="print one JSON object per row")
    ap.add_argument("--schema", action="store_true", help="whale without and with a JSON schema")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of --schema")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    slots = max(levels)
    rows = []
    port = free_port()
    whale = [a.whale, "serve", a.model, "--port", str(port), "--parallel", str(slots), "--max-queue", "64",
             "--ctx", str(a.ctx), "--threads", str(a.threads)]
    if a.schema:
        rows += bench_schema(whale, port, levels, a.max_tokens, a.rounds)
    else:
        rows += bench("whale", whale, port, levels, a.max_tokens)
    if not a.schema and os.path.exists(a.llama_server):
        port = free_port()
        # llama-server splits -c among its slots: give each slot the same context.
        llama = [a.llama_server, "-m", a.model, "--port", str(port), "--host", "127.0.0.1", "-np", str(slots),
                 "-c", str(a.ctx * slots), "-t", str(a.threads), "-ngl", "0"]
        rows += bench("llama-server", llama, port, levels, a.max_tokens)
    elif not a.schema:
        print(f"llama-server not found at {a.llama_server}; whale only", file=sys.stderr)
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"model {os.path.basename(a.model)}, {a.threads} threads, max_tokens {a.max_tokens}, {slots} slots")
    print(f"{'server':<16} {'conc':>4} {'reqs':>4} {'tokens':>6} {'wall s':>7} {'tok/s':>7} {'ttft mean':>9} {'ttft p50':>8}")
    for r in rows:
        print(f"{r['server']:<16} {r['concurrency']:>4} {r['requests']:>4} {r['tokens']:>6} {r['wall_s']:>7.2f} "
              f"{r['tok_per_s']:>7.1f} {r['ttft_mean_s']:>9.3f} {r['ttft_median_s']:>8.3f}")


if __name__ == "__main__":
    main()
