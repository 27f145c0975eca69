"""Checks of `whale serve` through the official `openai` Python package.

Run by crates/whale/tests/server_openai.rs as

    python checks.py BASE_URL API_KEY CHECK [ARG]

Each CHECK is a function below; it raises (non-zero exit, traceback on
stderr) when the server's answer is not what the client expects. The client
parses every response into its typed models, so a shape the package does not
accept fails here too.
"""

import json
import sys
import time

import openai

BASE, KEY, CHECK = sys.argv[1], sys.argv[2], sys.argv[3]
ARG = sys.argv[4] if len(sys.argv) > 4 else None

client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=300)

USER = [{"role": "user", "content": "What is the capital of France?"}]


def extra(obj, key):
    """A field the package does not model (DeepSeek's additions)."""
    return (obj.model_extra or {}).get(key)


def check_chat():
    """Non-streamed greedy chat equals `whale run --chat` (ARG), with DeepSeek's usage."""
    r = client.chat.completions.create(model="smollm2", messages=USER, max_tokens=16, temperature=0)
    assert r.object == "chat.completion", r
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content == ARG, (c.message.content, ARG)
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    hit, miss = extra(u, "prompt_cache_hit_tokens"), extra(u, "prompt_cache_miss_tokens")
    assert hit is not None and hit + miss == u.prompt_tokens, u
    assert u.prompt_tokens_details.cached_tokens == hit


def check_stream():
    """Streamed chat adds up to the non-streamed answer; usage comes last."""
    full = client.chat.completions.create(model="m", messages=USER, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model="m", messages=USER, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, roles = "", None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert roles == ["assistant"], roles
    assert text == full.choices[0].message.content, (text, full.choices[0].message.content)
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens, usage


def check_completions():
    """Legacy completions with log-probabilities."""
    r = client.completions.create(model="m", prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2)
    c = r.choices[0]
    assert c.text, r
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert all(l <= 0 for l in lp.token_logprobs)
    assert all(max(t.values()) == l for t, l in zip(lp.top_logprobs, lp.token_logprobs)), lp


def check_logprobs():
    """Chat log-probabilities: the greedy token is the top alternative."""
    r = client.chat.completions.create(
        model="m", messages=USER, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    for e in entries:
        assert len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token


def check_json_mode():
    """JSON mode answers with a JSON object."""
    r = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a cat as JSON with the keys name and age."}],
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_object"},
    )
    obj = json.loads(r.choices[0].message.content)
    assert isinstance(obj, dict), obj


def parse(**kw):
    """The client's structured-output helper (its name moved out of beta)."""
    chat = client.chat.completions
    return (chat.parse if hasattr(chat, "parse") else client.beta.chat.completions.parse)(**kw)


def check_json_schema():
    """response_format json_schema: the client's parse() turns the answer into
    the pydantic model, and the raw text validates against the schema
    (jsonschema), streamed and not."""
    import jsonschema
    import pydantic

    class Cat(pydantic.BaseModel):
        name: str
        age: int
        color: str

    msgs = [{"role": "user", "content": "Describe a cat as JSON."}]
    r = parse(model="m", messages=msgs, max_tokens=64, temperature=0, response_format=Cat)
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    assert isinstance(c.message.parsed, Cat), c.message
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "lives": {"type": "integer", "minimum": 1, "maximum": 9},
            "mood": {"enum": ["sleepy", "hungry", "curious"]},
        },
        "required": ["name", "lives", "mood"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "cat", "schema": schema, "strict": True}}
    r = client.chat.completions.create(model="m", messages=msgs, max_tokens=64, temperature=0, response_format=fmt)
    obj = json.loads(r.choices[0].message.content)
    jsonschema.validate(obj, schema)
    text = ""
    for chunk in client.chat.completions.create(
        model="m", messages=msgs, max_tokens=64, temperature=0, response_format=fmt, stream=True
    ):
        for ch in chunk.choices:
            text += ch.delta.content or ""
    assert json.loads(text) == obj, (text, obj)
    # A schema the library cannot use is a 400 that names it.
    try:
        client.chat.completions.create(
            model="m", messages=msgs, max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
        )
        raise AssertionError("an invalid schema was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "nope" in str(e), e


def check_strict_tools():
    """Tools with "strict": true: the arguments match the tool's schema under
    tool_choice auto, a named tool and required (Qwen2.5-Coder, Hermes format)."""
    import jsonschema

    weather = {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "London", "Tokyo"]}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    }
    clock = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"],
             "additionalProperties": False}
    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
                                          "parameters": weather, "strict": True}},
        {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone",
                                          "parameters": clock, "strict": True}},
    ]
    schemas = {"get_weather": weather, "get_time": clock}
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    # Under auto, with one tool (with both, this 0.5B model answers in text,
    # which auto allows); required and a named tool choose among both.
    for choice, offered in [("auto", tools[:1]), ("required", tools),
                            ({"type": "function", "function": {"name": "get_weather"}}, tools)]:
        r = client.chat.completions.create(
            model="m", messages=msgs, tools=offered, tool_choice=choice, max_tokens=60, temperature=0
        )
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", (choice, c)
        for call in c.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
        if isinstance(choice, dict):
            assert c.message.tool_calls[0].function.name == "get_weather", c
    # Streamed, under auto.
    calls = []
    for chunk in client.chat.completions.create(
        model="m", messages=msgs, tools=tools[:1], max_tokens=60, temperature=0, stream=True
    ):
        for ch in chunk.choices:
            calls.extend(ch.delta.tool_calls or [])
    assert calls and calls[0].function.name in schemas, calls
    jsonschema.validate(json.loads(calls[0].function.arguments), schemas[calls[0].function.name])
    # A strict tool whose schema cannot be used is a 400 about the tools.
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}, "strict": True}}]
    try:
        client.chat.completions.create(model="m", messages=msgs, tools=bad, max_tokens=8)
        raise AssertionError("an invalid strict tool schema was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "tools" and "nope" in str(e), e.body


def check_prefix():
    """DeepSeek's chat prefix completion (beta base URL, `prefix: true`)."""
    beta = openai.OpenAI(base_url=BASE + "/beta", api_key=KEY, max_retries=0)
    full = client.chat.completions.create(model="m", messages=USER, max_tokens=12, temperature=0).choices[0].message.content
    words = full.split(" ")
    prefix = " ".join(words[:3])
    r = beta.chat.completions.create(
        model="m",
        messages=USER + [{"role": "assistant", "content": prefix, "prefix": True}],
        max_tokens=4,
        temperature=0,
    )
    joined = prefix + r.choices[0].message.content
    assert full.startswith(joined) or joined.startswith(full), (prefix, r.choices[0].message.content, full)


def check_seed():
    """A seed repeats a sampled answer."""
    kw = dict(model="m", messages=USER, max_tokens=10, temperature=1.3, seed=77)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b, (a, b)


def check_errors():
    """400s come as BadRequestError with the server's message."""
    for kwargs, needle in [
        (dict(messages=[{"role": "wizard", "content": "x"}]), "unknown role"),
        (dict(messages=USER, temperature=2.5), "temperature"),
        (dict(messages=USER, max_tokens=100000), "beyond the context"),
    ]:
        try:
            client.chat.completions.create(model="m", **kwargs)
        except openai.BadRequestError as e:
            assert e.status_code == 400 and needle in e.message, e.message
            assert e.body["type"] == "invalid_request_error", e.body
        else:
            raise AssertionError(f"no error for {kwargs}")


def check_auth():
    """A wrong key is an AuthenticationError; the right one (KEY) works."""
    bad = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-wrong", max_retries=0)
    try:
        bad.models.list()
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    else:
        raise AssertionError("no 401 for a wrong key")
    ids = [m.id for m in client.models.list()]
    assert len(ids) == 1, ids


def check_fim():
    """Fill-in-the-middle through `suffix` (Qwen2.5-Coder)."""
    r = client.completions.create(
        model="m", prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", max_tokens=6, temperature=0
    )
    assert "a + b" in r.choices[0].text, r.choices[0].text


def check_tools():
    """Tool calls parsed from the model's own format (Qwen2.5-Coder: <tool_call>)."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model="m", messages=msgs, tools=tools, max_tokens=40, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    call = c.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris", call
    # The call and its result go back through the template (this 0.5B model
    # then tends to repeat the call before it uses the result; tool_choice
    # none keeps that as text, and the result shows).
    msgs.append(c.message.model_dump(exclude_none=True))
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'})
    r2 = client.chat.completions.create(
        model="m", messages=msgs, tools=tools, tool_choice="none", max_tokens=24, temperature=0
    )
    assert "21" in r2.choices[0].message.content, r2
    # Streamed tool calls.
    calls = []
    for chunk in client.chat.completions.create(model="m", messages=msgs[:1], tools=tools, max_tokens=40, temperature=0, stream=True):
        for ch in chunk.choices:
            calls.extend(ch.delta.tool_calls or [])
    assert len(calls) == 1 and calls[0].function.name == "get_weather", calls


def check_queue_full():
    """429 as a RateLimitError while the only slot and the queue are taken
    (the Rust side fills them first)."""
    try:
        client.chat.completions.create(model="m", messages=USER, max_tokens=2)
    except openai.RateLimitError as e:
        assert e.status_code == 429 and e.body["code"] == "queue_full", e.body
    else:
        raise AssertionError("no 429")


def check_disconnect():
    """Open a stream, read one chunk, close it: the server must free the slot."""
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        max_tokens=400, temperature=0, stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    # The slot is free again: the next request is served (the server runs
    # with --parallel 1 --max-queue 0, so a held slot would be a 429).
    deadline = time.time() + 10
    while True:
        try:
            client.chat.completions.create(model="m", messages=USER, max_tokens=2, temperature=0)
            return
        except openai.RateLimitError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def check_images():
    """images.generate on a Janus model: PNGs as b64_json; ARG is the PNG
    file that `whale imagine --temp 0` wrote for the same prompt;
    the rules of the endpoint answer 400 naming the parameter."""
    import base64

    r = client.images.generate(
        model="janus", prompt="A whale swims in a lake", n=1, size="384x384", response_format="b64_json",
        extra_body={"temperature": 0, "cfg": 5},
    )
    png = base64.b64decode(r.data[0].b64_json)
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
    assert png == open(ARG, "rb").read(), "the served PNG differs from whale imagine's"
    r = client.images.generate(model="janus", prompt="a lake", n=2, extra_body={"seed": 3})
    assert len(r.data) == 2 and r.data[0].b64_json != r.data[1].b64_json
    for kw, param in [
        ({"size": "1024x1024"}, "size"),
        ({"response_format": "url"}, "response_format"),
        ({"n": 9}, "n"),
        ({"extra_body": {"cfg": 100}}, "cfg"),
    ]:
        try:
            client.images.generate(model="janus", prompt="x", **kw)
        except openai.BadRequestError as e:
            assert param in str(e), (param, str(e))
        else:
            raise AssertionError(f"{kw} was accepted")


def check_chat_image():
    """A chat with an image_url part (a data URL) answers as `whale run
    --image --chat` does; ARG is JSON: {"image": PNG path, "text": its answer}.
    Streamed the same. Remote URLs are refused with a 400."""
    import base64

    arg = json.loads(ARG)
    url = "data:image/png;base64," + base64.b64encode(open(arg["image"], "rb").read()).decode()
    msgs = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What is this?"},
    ]}]
    r = client.chat.completions.create(model="janus", messages=msgs, max_tokens=5, temperature=0)
    assert r.choices[0].message.content == arg["text"], (r.choices[0].message.content, arg["text"])
    assert r.usage.prompt_tokens > 576, r.usage
    parts = client.chat.completions.create(model="janus", messages=msgs, max_tokens=5, temperature=0, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    assert streamed == arg["text"], (streamed, arg["text"])
    remote = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]
    try:
        client.chat.completions.create(model="janus", messages=remote, max_tokens=2)
    except openai.BadRequestError as e:
        assert "data URL" in str(e), str(e)
    else:
        raise AssertionError("a remote image URL was accepted")


def check_chat_text_on_janus():
    """A Janus model answers text chat through the ordinary engine."""
    r = client.chat.completions.create(model="janus", messages=USER, max_tokens=4, temperature=0)
    assert r.choices[0].message.role == "assistant"


globals()["check_" + CHECK]()
print("ok", CHECK)
