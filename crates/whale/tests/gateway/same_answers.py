"""The official `openai` client through the SGLang Model Gateway and straight
to one whale worker: the answers must be the same.

Run by crates/whale/tests/gateway.rs as

    python same_answers.py GATEWAY_URL WORKER_URL

The workers run the tiny DeepSeek-V3 model with DeepSeek-R1's chat template,
so answers carry `reasoning_content`, and a forced tool choice yields
`tool_calls`. Every request is greedy; ids and timestamps differ, the
meaning must not. Raises (non-zero exit, traceback) on any difference.
"""

import sys

import openai

GATEWAY, WORKER = sys.argv[1], sys.argv[2]


def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)


via, direct = client(GATEWAY), client(WORKER)
MODEL = direct.models.list().data[0].id
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            # Strict, with a closed set of values and no free white space
            # (llguidance's x-guidance option): the random model's call is
            # complete within the token budget.
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                "required": ["city"],
                "additionalProperties": False,
                "x-guidance": {"whitespace_flexible": False},
            },
            "strict": True,
        },
    }
]


def extra(obj, key):
    return (obj.model_extra or {}).get(key)


# The answer opened inside <think> (prefix completion), so that what the model
# writes is reasoning. The gateway drops DeepSeek's "prefix": true on the
# message; SGLang's and vLLM's continue_final_message, which whale also
# takes, goes through.
THINKING = MESSAGES + [{"role": "assistant", "content": "<think>\n"}]


def chat(c, messages=MESSAGES, **kw):
    r = c.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=24, **kw)
    m = r.choices[0].message
    calls = [(t.function.name, t.function.arguments) for t in (m.tool_calls or [])]
    u = r.usage
    assert extra(u, "prompt_cache_hit_tokens") is not None, u
    assert extra(u, "prompt_cache_hit_tokens") + extra(u, "prompt_cache_miss_tokens") == u.prompt_tokens, u
    return (m.content, extra(m, "reasoning_content"), calls, r.choices[0].finish_reason, u.prompt_tokens, u.completion_tokens)


def stream(c):
    content, reasoning, usage = "", "", None
    for chunk in c.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=24, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            reasoning += extra(ch.delta, "reasoning_content") or ""
    assert usage is not None and extra(usage, "prompt_cache_hit_tokens") is not None, usage
    return content, reasoning, usage.completion_tokens


def completion(c):
    r = c.completions.create(model=MODEL, prompt="The first prime numbers are", temperature=0, max_tokens=16)
    return r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens


plain = chat(via)
assert plain == chat(direct), (plain, chat(direct))
thinking = chat(via, THINKING, extra_body={"continue_final_message": True})
assert thinking == chat(direct, THINKING, extra_body={"continue_final_message": True})
assert thinking[1], f"an answer opened inside <think> gives reasoning_content: {thinking}"
forced = chat(via, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
assert forced == chat(direct, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
assert forced[2] and forced[2][0][0] == "get_weather", forced
streamed = stream(via)
assert streamed == stream(direct), (streamed, stream(direct))
# A stream is the same answer as the non-streamed one.
assert (streamed[0] or None, streamed[1] or None) == (plain[0] or None, plain[1] or None), (streamed, plain)
text = completion(via)
assert text == completion(direct), (text, completion(direct))
print("same answers through the gateway:", {"chat": plain[0], "reasoning": thinking[1], "tool_call": forced[2], "completion": text[0]})
