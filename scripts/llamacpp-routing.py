#!/usr/bin/env python3
"""Record llama.cpp's greedy run of a MoE GGUF with its routing, as JSON.

whale's V3-shaped greedy test (crates/whale/tests/llamacpp_greedy.rs) reads
the result: at each step llama.cpp's token, its two best logits, and for
each MoE layer the experts it chose for the step's token with their router
scores; and the experts llama.cpp chooses for the same tokens evaluated in
one batch, which tells how far llama.cpp agrees with itself.

    llamacpp-routing.py GREEDY_IDS MODEL.gguf PROMPT_IDS N [THREADS] > out.json

GREEDY_IDS is scripts/llamacpp-greedy-ids.cpp built against llama.cpp (its
header says how). Outside whale's build and tests: a recording tool.
"""

import json
import os
import platform
import re
import subprocess
import sys


def run(binary, model, ids, n, threads, **env):
    e = dict(os.environ, **env)
    p = subprocess.run([binary, model, ids, str(n), str(threads)], env=e, capture_output=True, text=True,
                       errors="replace", check=True)
    return p.stdout.strip(), p.stderr.splitlines()


def layer_of(name):
    return int(re.search(r"-(\d+)", name).group(1))


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    binary, model, prompt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    threads = sys.argv[5] if len(sys.argv) > 5 else "2"
    out, err = run(binary, model, prompt, n, threads, GREEDY_IDS_EXPERTS="scores", GREEDY_IDS_TOP="1")
    ids = [int(x) for x in out.split(",")]
    steps, experts, scores = [], {}, {}
    for line in err:
        if line.startswith("ffn_moe_topk-"):
            # One line a computed token: the step's token is the last.
            name, rest = line.split(" token ", 1)
            experts[layer_of(name)] = [int(x) for x in rest.split(":")[1].split()]
        elif line.startswith("ffn_moe_probs-"):
            name, rest = line.split(" scores:", 1)
            scores[layer_of(name)] = [float(x) for x in rest.split()]
        elif line.startswith("step "):
            m = re.match(r"step (\d+): (\d+) (\S+) (\d+) (\S+)", line)
            top = [[int(m.group(2)), float(m.group(3))], [int(m.group(4)), float(m.group(5))]]
            layers = [{"layer": l, "experts": e, "scores": [scores[l][x] for x in e]}
                      for l, e in sorted(experts.items())]
            steps.append({"id": ids[len(steps)], "top": top, "layers": layers})
            experts, scores = {}, {}
    assert len(steps) == n, f"{len(steps)} steps parsed of {n}"
    # The same ids in one batch: the experts of each step's token.
    p = [int(x) for x in prompt.split(",")]
    _, err = run(binary, model, ",".join(map(str, p + ids[:-1])), 0, threads, GREEDY_IDS_EXPERTS="1",
                 GREEDY_IDS_BATCH="1")
    batch = {}
    for line in err:
        if line.startswith("ffn_moe_topk-"):
            name, rest = line.split(" token ", 1)
            tok, ex = rest.split(":")
            batch[(layer_of(name), int(tok))] = [int(x) for x in ex.split()]
    for i, s in enumerate(steps):
        for lr in s["layers"]:
            lr["batch_experts"] = batch[(lr["layer"], len(p) - 1 + i)]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    json.dump({"model": os.path.basename(model), "prompt": p, "threads": int(threads), "cpu": cpu, "steps": steps},
              sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
