#!/usr/bin/env python3
"""Writes chat_templates.json: the chat templates embedded in the test models' GGUFs,
rendered by Python jinja2 exactly the way Hugging Face `transformers` renders them in
`apply_chat_template` (transformers.utils.chat_template_utils.render_jinja_template:
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, tojson as
json.dumps(ensure_ascii=False), raise_exception, strftime_now), for the conversations in
CASES. The Rust test (tests/chat_template_models.rs) reads the template from the GGUF, checks
it is the one stored here, renders the same messages and compares byte for byte.

Messages are written in whale's ChatMessage JSON form. `template_messages` turns them into
what the template sees: fields that are absent stay absent, and an assistant message with
tool calls and empty content gets `content: None`, as OpenAI-style clients send it.

The DeepSeek V3 tokenizer fixture (shared/fixtures/hf-reference/tokenizer) ships no chat
template (neither tokenizer_config.json nor the GGUF made from it has one), so it is not here.

Set up (Python 3.11):
    /tmp/tokref-venv/bin/pip install transformers==5.24.0 jinja2==3.1.6
    WHALE_HOME=... /tmp/tokref-venv/bin/python gen_chat_template_refs.py
"""
import copy
import importlib.metadata as md
import json
import os
import sys

from refcommon import HERE, models_dir, read_gguf_kv

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
R1 = "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.head.gguf"


def m(role, content, **extra):
    d = {"role": role, "content": content}
    d.update(extra)
    return d


SYSTEM_USER = [m("system", "You are a terse assistant."), m("user", "Hello! Who are you?")]
USER_ONLY = [m("user", "What is 2+2?")]
MULTI_TURN = [
    m("system", "You are a terse assistant."),
    m("user", "What is 2+2?"),
    m("assistant", "4."),
    m("user", "And 3+3?"),
]
UNICODE = [m("user", "naïve café 你好 👋 \"quotes\" 'single' {braces} {{ not jinja }} <b>&amp;</b>\n\tindented\n")]
R1_THINKING = [
    m("user", "What is 2+2?"),
    m("assistant", "<think>\nTwo plus two.\nThat is four.\n</think>\n\nThe answer is 4."),
    m("user", "And 3+3?"),
]
R1_LAST_ASSISTANT = [
    m("system", "Think step by step."),
    m("user", "Name a prime."),
    m("assistant", "<think>\nsmall ones\n</think>\n\n2"),
]
R1_TOOLS = [
    m("user", "Weather in Paris?"),
    m("assistant", "", tool_calls=[{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]),
    m("tool", "{\"temp_c\": 21}", tool_call_id="call_1"),
    m("assistant", "It is 21 °C in Paris."),
]
QWEN_TOOLS_DEF = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city. Units: °C.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "days": {"type": "integer", "minimum": 1, "default": 1},
                "detailed": {"type": "boolean"},
                "scale": {"type": "number", "default": 0.5},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city"],
        },
    },
}]
QWEN_TOOL_CHAT = [
    m("user", "Weather in Paris?"),
    m("assistant", "", tool_calls=[{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2, "tags": [], "opts": {}}}}]),
    m("tool", "{\"temp_c\": 21}", tool_call_id="call_1", name="get_weather"),
    m("tool", "{\"temp_c\": 19}", tool_call_id="call_2", name="get_weather"),
    m("assistant", "21 °C today, 19 °C tomorrow."),
]

CASES = {
    "smollm2": (SMOLLM2, [
        ("system_user", SYSTEM_USER, True, None),
        ("user_only", USER_ONLY, True, None),
        ("multi_turn", MULTI_TURN, True, None),
        ("multi_turn_no_gen", MULTI_TURN, False, None),
        ("unicode", UNICODE, True, None),
    ]),
    "qwen2_5_coder": (QWEN, [
        ("system_user", SYSTEM_USER, True, None),
        ("user_only", USER_ONLY, True, None),
        ("multi_turn_no_gen", MULTI_TURN, False, None),
        ("tools", QWEN_TOOL_CHAT, True, QWEN_TOOLS_DEF),
        ("tools_system", [m("system", "Be exact.")] + USER_ONLY, True, QWEN_TOOLS_DEF),
        ("unicode", UNICODE, True, None),
    ]),
    "r1_distill_qwen": (R1, [
        ("system_user", SYSTEM_USER, True, None),
        ("user_only", USER_ONLY, True, None),
        ("multi_turn", MULTI_TURN, True, None),
        ("drops_earlier_thinking", R1_THINKING, True, None),
        ("last_assistant_no_gen", R1_LAST_ASSISTANT, False, None),
        ("tool_call", R1_TOOLS, True, None),
        ("unicode", UNICODE, False, None),
    ]),
}


def template_messages(msgs):
    out = []
    for msg in copy.deepcopy(msgs):
        if msg.get("content") == "" and msg.get("tool_calls") is not None:
            msg["content"] = None
        out.append(msg)
    return out


def main():
    from transformers.utils.chat_template_utils import render_jinja_template

    out = {
        "generator": "gen_chat_template_refs.py",
        "reference": "transformers.utils.chat_template_utils.render_jinja_template (Python jinja2)",
        "versions": {p: md.version(p) for p in ("transformers", "jinja2")} | {"python": sys.version.split()[0]},
        "models": {},
    }
    for name, (fname, cases) in CASES.items():
        path = os.path.join(models_dir(), fname)
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run scripts/fetch-test-models.sh")
        kv = read_gguf_kv(path)
        tokens = kv["tokenizer.ggml.tokens"]
        template = kv["tokenizer.chat_template"]
        bos = tokens[kv["tokenizer.ggml.bos_token_id"]]
        eos = tokens[kv["tokenizer.ggml.eos_token_id"]]
        rendered_cases = []
        for case_name, msgs, agp, tools in cases:
            (text,), _ = render_jinja_template(
                conversations=[template_messages(msgs)],
                tools=tools,
                chat_template=template,
                add_generation_prompt=agp,
                bos_token=bos,
                eos_token=eos,
            )
            rendered_cases.append({"name": case_name, "messages": msgs, "add_generation_prompt": agp,
                                   "tools": tools, "expected": text})
        out["models"][name] = {"model_file": fname, "bos_token": bos, "eos_token": eos,
                               "template": template, "cases": rendered_cases}
        print(f"== {name}: {len(rendered_cases)} cases", file=sys.stderr)
    dst = os.path.join(HERE, "chat_templates.json")
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
