//! Request bodies as clients send them, and their validation into what the
//! engine takes. Parsing is strict about meaning (every rule has its own
//! [`RequestError`]) and lenient about form (unknown fields are ignored, as
//! the OpenAI and DeepSeek APIs do).

use serde::Deserialize;
use serde_json::Value;
use whale_engine::serving::sampler::SamplerConfig;
use whale_engine::text::chat_template::ChatMessage;
use whale_engine::text::tool_calls::ToolFormat;

use super::errors::RequestError;

/// Most stop strings per request (DeepSeek's limit).
pub const MAX_STOPS: usize = 16;
/// Longest stop string, in bytes: the engine thread matches every stop
/// string against the tail of every stream at every token.
pub const MAX_STOP_BYTES: usize = 256;
/// Most messages per request.
pub const MAX_MESSAGES: usize = 2048;
/// Most tools per request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// Largest JSON schema (`response_format` or a tool's parameters), as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;

/// Tokens the penalties look back over (llama.cpp's default window).
const PENALTY_WINDOW: usize = 64;

/// `stop`: one string or a list.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `response_format`: `{"type": "text" | "json_object" | "json_schema"}`.
#[derive(Deserialize, Debug)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: OpenAI's `{"name", "schema", "strict", "description"}`.
    pub json_schema: Option<JsonSchemaFormat>,
}

/// `name`, `description` and `strict` are accepted and not needed: the
/// output is held to the schema whether `strict` is set or not.
#[derive(Deserialize, Debug)]
pub struct JsonSchemaFormat {
    /// The schema; none means any JSON value.
    pub schema: Option<Value>,
}

/// One entry of `tools`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    /// The arguments' JSON schema, if given.
    pub parameters: Option<Value>,
    /// `function.strict: true`: the arguments must match `parameters`.
    pub strict: bool,
}

/// Fields `/chat/completions` and `/completions` share. `model` is accepted
/// whatever it names (one server runs one model; responses name it).
#[derive(Deserialize, Debug, Default)]
pub struct CommonFields {
    pub max_tokens: Option<i64>,
    /// OpenAI's newer name for `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub stop: Option<StopField>,
    pub seed: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
}

/// `POST /chat/completions`.
#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub common: CommonFields,
    /// Kept as JSON to report a bad message with its index.
    pub messages: Vec<Value>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
}

/// `prompt` of `/completions`: text, or token ids, or a list of one of them.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

/// `POST /completions` (and `/beta/completions`).
#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub common: CommonFields,
    pub prompt: PromptField,
    /// Text after the gap: fill-in-the-middle.
    pub suffix: Option<String>,
    pub echo: Option<bool>,
    /// Alternatives per token (0: only the chosen token's log-probability).
    pub logprobs: Option<i64>,
}

/// Parse a JSON body into `T`, with serde's message on failure.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|e| RequestError::Body(e.to_string()))
}

/// What the common fields resolve to.
#[derive(Clone, Debug)]
pub struct Common {
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Check the shared fields; `ctx` is the per-sequence context.
pub fn validate_common(c: &CommonFields, ctx: usize) -> Result<Common, RequestError> {
    if let Some(n) = c.n.filter(|&n| n != 1) {
        return Err(RequestError::UnsupportedN(n));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(RequestError::Temperature(temperature));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(RequestError::TopP(top_p));
    }
    let penalty = |name, v: Option<f64>| match v.unwrap_or(0.0) {
        v if (-2.0..=2.0).contains(&v) => Ok(v as f32),
        value => Err(RequestError::Penalty { name, value }),
    };
    let frequency_penalty = penalty("frequency_penalty", c.frequency_penalty)?;
    let presence_penalty = penalty("presence_penalty", c.presence_penalty)?;
    let max_tokens = match c.max_tokens.or(c.max_completion_tokens) {
        None => None,
        Some(m) if m < 1 => return Err(RequestError::MaxTokensZero(m)),
        Some(m) if m as u64 > ctx as u64 => {
            return Err(RequestError::MaxTokensBeyondContext { max_tokens: m as usize, ctx })
        }
        Some(m) => Some(m as usize),
    };
    let stop = match &c.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOPS {
        return Err(RequestError::TooManyStops(stop.len()));
    }
    if stop.iter().any(String::is_empty) {
        return Err(RequestError::EmptyStop);
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(RequestError::StopTooLong(long.len()));
    }
    let sampler = SamplerConfig {
        temperature: temperature as f32,
        top_k: 0,
        top_p: top_p as f32,
        min_p: 0.0,
        repeat_penalty: 1.0,
        penalty_last_n: PENALTY_WINDOW,
        presence_penalty,
        frequency_penalty,
        seed: c.seed.map(|s| s as u64),
    };
    Ok(Common {
        max_tokens,
        sampler,
        stop,
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// The generation budget for a prompt of `prompt` tokens: `max_tokens` if it
/// fits, else the rest of the context when it was not given (at most
/// `default_max` when that is set).
pub fn budget(
    prompt: usize,
    max_tokens: Option<usize>,
    default_max: Option<usize>,
    ctx: usize,
) -> Result<usize, RequestError> {
    if prompt == 0 {
        return Err(RequestError::EmptyPrompt);
    }
    if prompt >= ctx {
        return Err(RequestError::PromptTooLong { prompt, ctx });
    }
    match max_tokens {
        Some(m) if prompt + m > ctx => Err(RequestError::ContextExceeded { prompt, max_tokens: m, ctx }),
        Some(m) => Ok(m),
        None => Ok(default_max.map_or(ctx - prompt, |d| d.min(ctx - prompt))),
    }
}

/// The messages, checked, with the prefix-completion message (the last
/// assistant message with `"prefix": true`) set apart.
#[derive(Debug)]
pub struct Conversation {
    pub messages: Vec<ChatMessage>,
    pub prefix: Option<ChatMessage>,
}

pub fn parse_messages(raw: &[Value], tool_format: Option<ToolFormat>) -> Result<Conversation, RequestError> {
    if raw.is_empty() {
        return Err(RequestError::EmptyMessages);
    }
    if raw.len() > MAX_MESSAGES {
        return Err(RequestError::TooMany { what: "messages", found: raw.len(), max: MAX_MESSAGES });
    }
    let mut messages = Vec::with_capacity(raw.len());
    let mut prefix = None;
    for (index, v) in raw.iter().enumerate() {
        let bad = |message: &str| RequestError::BadMessage { index, message: message.to_string() };
        let obj = v.as_object().ok_or_else(|| bad("a message must be a JSON object"))?;
        let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| bad("the message has no \"role\""))?;
        let role = match role {
            "system" | "user" | "assistant" | "tool" => role,
            // OpenAI's newer name for the system role.
            "developer" => "system",
            other => return Err(RequestError::UnknownRole { index, role: other.to_string() }),
        };
        let mut msg: ChatMessage = serde_json::from_value(v.clone())
            .map_err(|e| RequestError::BadMessage { index, message: e.to_string() })?;
        msg.role = role.to_string();
        if let Some(calls) = &mut msg.tool_calls {
            normalize_tool_calls(calls, tool_format).map_err(|m| bad(&m))?;
        }
        if obj.get("prefix").and_then(Value::as_bool).unwrap_or(false) {
            if index + 1 != raw.len() {
                return Err(RequestError::PrefixNotLast { index });
            }
            if role != "assistant" {
                return Err(RequestError::PrefixNotAssistant { index });
            }
            prefix = Some(msg);
        } else {
            messages.push(msg);
        }
    }
    Ok(Conversation { messages, prefix })
}

/// Give `tool_calls[i].function.arguments` the form the template expects: a
/// JSON string for DeepSeek templates, an object for the others.
fn normalize_tool_calls(calls: &mut Value, format: Option<ToolFormat>) -> Result<(), String> {
    let list = calls.as_array_mut().ok_or("tool_calls must be a list")?;
    let as_string = format.is_some_and(ToolFormat::arguments_as_string);
    for (i, call) in list.iter_mut().enumerate() {
        // Templates index these fields: check their shapes before they do.
        let call = call.as_object_mut().ok_or(format!("tool_calls[{i}] must be an object"))?;
        match call.entry("type").or_insert_with(|| Value::String("function".into())) {
            Value::String(t) if t == "function" => {}
            _ => return Err(format!("tool_calls[{i}].type must be \"function\"")),
        }
        let f = call.get_mut("function").and_then(Value::as_object_mut);
        let f = f.ok_or(format!("tool_calls[{i}].function must be an object with a \"name\""))?;
        if !f.get("name").is_some_and(Value::is_string) {
            return Err(format!("tool_calls[{i}].function.name must be a string"));
        }
        if call.get("id").is_some_and(|id| !id.is_string()) {
            return Err(format!("tool_calls[{i}].id must be a string"));
        }
        let Some(args) = call.get_mut("function").and_then(|f| f.get_mut("arguments")) else { continue };
        match (as_string, &*args) {
            (true, Value::String(_)) | (false, Value::Object(_)) => {}
            (true, other) => *args = Value::String(other.to_string()),
            (false, Value::String(s)) => {
                if let Ok(v) = serde_json::from_str::<Value>(s) {
                    *args = v;
                }
            }
            (false, _) => {}
        }
    }
    Ok(())
}

/// Size of a schema as JSON text.
pub fn schema_bytes(schema: &Value) -> usize {
    serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len())
}

/// What `tool_choice` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Named(String),
}

/// Check `tools` and `tool_choice`; returns the tools and the choice.
pub fn parse_tools(tools: &[Value], choice: Option<&Value>) -> Result<(Vec<ToolSpec>, ToolChoice), RequestError> {
    if tools.len() > MAX_TOOLS {
        return Err(RequestError::TooMany { what: "tools", found: tools.len(), max: MAX_TOOLS });
    }
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(tools.len());
    for (index, t) in tools.iter().enumerate() {
        let bad = |message: &str| RequestError::BadTool { index, message: message.to_string() };
        match t.get("type").and_then(Value::as_str) {
            Some("function") | None => {}
            Some(other) => return Err(bad(&format!("type {other:?} is not supported; use \"function\""))),
        }
        let f = t.get("function").ok_or_else(|| bad("has no \"function\""))?;
        let name = f.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| bad("the function has no \"name\""))?;
        let parameters = f.get("parameters").cloned();
        if parameters.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(bad("\"parameters\" must be a JSON schema object"));
        }
        if let Some(n) = parameters.as_ref().map(schema_bytes).filter(|&n| n > MAX_SCHEMA_BYTES) {
            return Err(bad(&format!("\"parameters\" is {n} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed")));
        }
        let strict = match f.get("strict") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("\"strict\" must be true or false")),
        };
        specs.push(ToolSpec { name: name.to_string(), parameters, strict });
    }
    let choice = match choice {
        None | Some(Value::Null) => {
            if tools.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(RequestError::ToolChoice(format!(
                    "{other:?} is not a choice; use \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )))
            }
        },
        Some(v) => {
            let name = v.pointer("/function/name").and_then(Value::as_str);
            let name = name.ok_or_else(|| RequestError::ToolChoice("an object choice needs function.name".into()))?;
            if !specs.iter().any(|t| t.name == name) {
                return Err(RequestError::ToolChoice(format!("{name:?} is not one of the tools")));
            }
            ToolChoice::Named(name.to_string())
        }
    };
    if tools.is_empty() && choice != ToolChoice::None {
        return Err(RequestError::ToolChoice("a tool choice needs \"tools\"".into()));
    }
    Ok((specs, choice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(v: Value) -> Result<Common, RequestError> {
        validate_common(&serde_json::from_value(v).unwrap(), 100)
    }

    #[test]
    fn message_count_and_schema_size_are_bounded() {
        let many: Vec<Value> = vec![json!({"role": "user", "content": "x"}); MAX_MESSAGES + 1];
        assert!(matches!(parse_messages(&many, None), Err(RequestError::TooMany { what: "messages", .. })));
        assert!(parse_messages(&many[..MAX_MESSAGES], None).is_ok());
        let big: serde_json::Map<String, Value> =
            (0..4000).map(|i| (format!("field_{i:05}"), json!({"type": "string"}))).collect();
        let schema = json!({"type": "object", "properties": big});
        assert!(schema_bytes(&schema) > MAX_SCHEMA_BYTES);
        let tool = json!({"type": "function", "function": {"name": "f", "parameters": schema}});
        let e = parse_tools(&[tool], None).unwrap_err().to_string();
        assert!(e.contains("at most 65536 are allowed"), "{e}");
    }

    #[test]
    fn each_rule_has_its_error() {
        assert!(matches!(common(json!({"temperature": 2.5})), Err(RequestError::Temperature(_))));
        assert!(matches!(common(json!({"top_p": 0})), Err(RequestError::TopP(_))));
        assert!(matches!(
            common(json!({"presence_penalty": -3})),
            Err(RequestError::Penalty { name: "presence_penalty", .. })
        ));
        assert!(matches!(common(json!({"max_tokens": 0})), Err(RequestError::MaxTokensZero(0))));
        assert!(matches!(common(json!({"max_tokens": 101})), Err(RequestError::MaxTokensBeyondContext { .. })));
        assert!(matches!(common(json!({"stop": ["a", ""]})), Err(RequestError::EmptyStop)));
        assert!(matches!(common(json!({"n": 2})), Err(RequestError::UnsupportedN(2))));
        let c = common(json!({"stop": "x", "temperature": 0, "seed": 5, "stream": true, "stream_options": {"include_usage": true}})).unwrap();
        assert_eq!(
            (c.stop, c.sampler.temperature, c.sampler.seed, c.stream, c.include_usage),
            (vec!["x".to_string()], 0.0, Some(5), true, true)
        );
    }

    #[test]
    fn budgets() {
        assert_eq!(budget(10, None, None, 100).unwrap(), 90);
        assert_eq!(budget(10, None, Some(16), 100).unwrap(), 16);
        assert!(matches!(budget(100, None, None, 100), Err(RequestError::PromptTooLong { .. })));
        assert!(matches!(budget(60, Some(50), None, 100), Err(RequestError::ContextExceeded { .. })));
    }

    #[test]
    fn messages_and_prefix() {
        let m = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel", "prefix": true}]);
        let c = parse_messages(m.as_array().unwrap(), None).unwrap();
        assert_eq!((c.messages.len(), c.prefix.unwrap().content), (1, "Hel".to_string()));
        let bad = json!([{"role": "wizard", "content": "x"}]);
        assert!(matches!(
            parse_messages(bad.as_array().unwrap(), None),
            Err(RequestError::UnknownRole { index: 0, .. })
        ));
        let bad = json!([{"role": "assistant", "content": "x", "prefix": true}, {"role": "user", "content": "y"}]);
        assert!(matches!(parse_messages(bad.as_array().unwrap(), None), Err(RequestError::PrefixNotLast { index: 0 })));
        let bad = json!([{"role": "user", "content": "x", "prefix": true}]);
        assert!(matches!(
            parse_messages(bad.as_array().unwrap(), None),
            Err(RequestError::PrefixNotAssistant { index: 0 })
        ));
        assert!(matches!(parse_messages(&[], None), Err(RequestError::EmptyMessages)));
    }

    #[test]
    fn tool_call_arguments_follow_the_template() {
        let m = json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}]);
        let c = parse_messages(m.as_array().unwrap(), Some(ToolFormat::Hermes)).unwrap();
        assert_eq!(c.messages[0].tool_calls.as_ref().unwrap()[0]["function"]["arguments"], json!({"a": 1}));
        let c = parse_messages(m.as_array().unwrap(), Some(ToolFormat::DeepSeek { typed: true })).unwrap();
        let call = &c.messages[0].tool_calls.as_ref().unwrap()[0];
        assert_eq!((&call["function"]["arguments"], &call["type"]), (&json!("{\"a\": 1}"), &json!("function")));
    }

    #[test]
    fn tools_and_choices() {
        let tools =
            vec![json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}})];
        assert_eq!(parse_tools(&tools, None).unwrap().1, ToolChoice::Auto);
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(parse_tools(&tools, Some(&named)).unwrap().1, ToolChoice::Named("get_weather".into()));
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert!(matches!(parse_tools(&tools, Some(&unknown)), Err(RequestError::ToolChoice(_))));
        assert!(matches!(
            parse_tools(&[json!({"type": "function"})], None),
            Err(RequestError::BadTool { index: 0, .. })
        ));
        assert!(matches!(parse_tools(&[], Some(&json!("required"))), Err(RequestError::ToolChoice(_))));
    }
}
