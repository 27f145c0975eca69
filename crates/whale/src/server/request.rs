//! Request bodies as clients send them, and their validation into what the
//! engine takes. Every field is read into a typed struct (serde); a value of
//! the wrong shape is a 400 whose message names the field by its path
//! (`messages[2].tool_calls[0].function.name: invalid type: ...`). Parsing is
//! strict about meaning (every rule has its own [`RequestError`]) and
//! lenient about form (unknown fields are ignored, as the OpenAI and
//! DeepSeek APIs do).

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
/// Most `logit_bias` entries per request: each costs an addition per drawn
/// token on the engine thread.
pub const MAX_LOGIT_BIAS: usize = 1024;

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
    /// Token id (as a decimal string, OpenAI's form) → bias in [-100, 100],
    /// added to the logit before sampling.
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
}

/// A request type whose shared fields are read by a second pass over the
/// body (`#[serde(flatten)]` would lose the path of a bad field).
pub trait HasCommon {
    fn common_mut(&mut self) -> &mut CommonFields;
}

/// `POST /chat/completions`.
#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    #[serde(skip)]
    pub common: CommonFields,
    pub messages: Vec<MessageIn>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Vec<ToolIn>>,
    pub tool_choice: Option<ToolChoiceIn>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// vLLM's and SGLang's name for prefix completion: the last (assistant)
    /// message is continued, as with DeepSeek's `"prefix": true` on it.
    pub continue_final_message: Option<bool>,
}

impl HasCommon for ChatRequest {
    fn common_mut(&mut self) -> &mut CommonFields {
        &mut self.common
    }
}

/// One entry of `messages`.
#[derive(Clone, Deserialize, Debug)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Content,
    pub reasoning_content: Option<String>,
    pub name: Option<String>,
    pub tool_call_id: Option<String>,
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// DeepSeek's chat prefix completion (on the last, assistant, message).
    pub prefix: Option<bool>,
}

/// A message's `content`: text, `null`, or a list of OpenAI content parts.
/// Images (`image_url` parts) leave [`IMAGE_MARK`] in the text where they
/// were and their URLs, in order, in the second field; a mark typed by the
/// client is dropped, so only image parts make one.
#[derive(Clone, Debug, Default)]
pub struct Content(pub String, pub Vec<String>);

/// Where an image part sat in a message's text (U+FFFC, the object
/// replacement character).
pub const IMAGE_MARK: char = '\u{FFFC}';

/// The bytes of an image sent as a data URL (`data:image/png;base64,...`):
/// the server fetches nothing from the network on a client's behalf.
pub fn data_url_bytes(url: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(
            "remote image URLs are not fetched; send the image inline as a data URL (data:image/png;base64,...)".into(),
        );
    };
    let (meta, data) = rest.split_once(',').ok_or("a data URL needs a comma before its data")?;
    let Some(mime) = meta.strip_suffix(";base64") else {
        return Err("only base64 data URLs are read (data:image/png;base64,...)".into());
    };
    if !mime.starts_with("image/") {
        return Err(format!("{mime:?} is not an image type"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("the base64 data cannot be decoded: {e}"))
}

fn without_marks(s: &str) -> String {
    s.replace(IMAGE_MARK, "")
}

/// One OpenAI content part. A text model reads the text of `text` (and
/// `input_text`) parts, or of any part with a `text` string, and an
/// assistant's `refusal`; `image_url` parts are images (refused later by a
/// model that reads none); audio and files are refused by name.
#[derive(Deserialize, Debug)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    refusal: Option<String>,
    image_url: Option<Value>,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Content, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, null, or a list of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content(without_marks(s), Vec::new()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Content, E> {
                Ok(Content(without_marks(&s), Vec::new()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let (mut text, mut images) = (String::new(), Vec::new());
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    match part {
                        ContentPart { text: Some(t), .. } | ContentPart { refusal: Some(t), .. } => {
                            text.push_str(&without_marks(&t))
                        }
                        ContentPart { image_url: Some(u), .. } => {
                            // {"url": "..."} as OpenAI sends it, or a bare string.
                            let url = u.get("url").unwrap_or(&u).as_str().ok_or_else(|| {
                                serde::de::Error::custom(
                                    "an image_url part needs \"image_url\": {\"url\": \"data:image/png;base64,...\"}",
                                )
                            })?;
                            text.push(IMAGE_MARK);
                            images.push(url.to_string());
                        }
                        ContentPart { kind, .. } => {
                            let kind = kind.as_deref().unwrap_or("(none)");
                            return Err(serde::de::Error::custom(format!(
                                "a content part of type {kind:?} is not supported by this model: only text parts are"
                            )));
                        }
                    }
                }
                Ok(Content(text, images))
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of an assistant message's `tool_calls`.
#[derive(Clone, Deserialize, Debug)]
pub struct ToolCallIn {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
}

#[derive(Clone, Deserialize, Debug)]
pub struct FunctionCallIn {
    pub name: String,
    /// A JSON text (OpenAI's form) or a JSON value.
    pub arguments: Option<Value>,
}

/// One entry of `tools`. The entry's JSON goes to the chat template as the
/// client sent it (`raw`); the typed fields are what the server reads.
#[derive(Clone, Debug)]
pub struct ToolIn {
    pub def: ToolDef,
    pub raw: Value,
}

#[derive(Clone, Deserialize, Debug)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: FunctionDef,
}

#[derive(Clone, Deserialize, Debug)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub strict: Option<bool>,
}

impl<'de> Deserialize<'de> for ToolIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ToolIn, D::Error> {
        let raw = Value::deserialize(d)?;
        let def = serde_path_to_error::deserialize::<_, ToolDef>(&raw).map_err(|e| {
            let path = e.path().to_string();
            serde::de::Error::custom(format!("{path}: {}", e.into_inner()))
        })?;
        Ok(ToolIn { def, raw })
    }
}

/// `tool_choice`: `"none" | "auto" | "required"` or `{"type": "function", "function": {"name": ...}}`.
#[derive(Clone, Debug)]
pub enum ToolChoiceIn {
    Mode(String),
    Named(String),
}

#[derive(Deserialize)]
struct NamedChoice {
    function: NamedFunction,
}

#[derive(Deserialize)]
struct NamedFunction {
    name: String,
}

impl<'de> Deserialize<'de> for ToolChoiceIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ToolChoiceIn, D::Error> {
        let expected =
            "a string (\"none\", \"auto\", \"required\") or {\"type\": \"function\", \"function\": {\"name\": ...}}";
        match Value::deserialize(d)? {
            Value::String(s) => Ok(ToolChoiceIn::Mode(s)),
            v @ Value::Object(_) => NamedChoice::deserialize(v)
                .map(|c| ToolChoiceIn::Named(c.function.name))
                .map_err(|e| serde::de::Error::custom(format!("{e}; expected {expected}"))),
            other => {
                let kind = match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    _ => "a list",
                };
                Err(serde::de::Error::custom(format!("expected {expected}, got {kind}")))
            }
        }
    }
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
    #[serde(skip)]
    pub common: CommonFields,
    pub prompt: PromptField,
    /// Text after the gap: fill-in-the-middle.
    pub suffix: Option<String>,
    pub echo: Option<bool>,
    /// Alternatives per token (0: only the chosen token's log-probability).
    pub logprobs: Option<i64>,
}

impl HasCommon for CompletionRequest {
    fn common_mut(&mut self) -> &mut CommonFields {
        &mut self.common
    }
}

/// Parse a JSON body into `T` and its shared fields; a bad field's error
/// names it by its path.
pub fn parse_body<T: serde::de::DeserializeOwned + HasCommon>(body: &[u8]) -> Result<T, RequestError> {
    let mut req: T = parse_json(body)?;
    *req.common_mut() = parse_json(body)?;
    Ok(req)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    // serde would also read a struct from a list of its fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return Err(RequestError::Body("the body must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // Broken JSON is the body's fault wherever it breaks.
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        let message = e.into_inner().to_string();
        // "." is the body itself, "?" a place with no field name (a bad key).
        if syntax || path == "." || path.starts_with('?') {
            RequestError::Body(message)
        } else {
            RequestError::Field { path, message }
        }
    })?;
    // Nothing but white space may follow the value.
    de.end().map_err(|e| RequestError::Body(e.to_string()))?;
    Ok(value)
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

/// Check the shared fields; `ctx` is the per-sequence context and `vocab`
/// the vocabulary size (for `logit_bias`).
pub fn validate_common(c: &CommonFields, ctx: usize, vocab: usize) -> Result<Common, RequestError> {
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
    let logit_bias = logit_bias(c.logit_bias.as_ref(), vocab)?;
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
        logit_bias,
    };
    Ok(Common {
        max_tokens,
        sampler,
        stop,
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// `logit_bias` as (token id, bias) pairs: at most [`MAX_LOGIT_BIAS`]
/// entries, ids inside the vocabulary, biases in [-100, 100] (OpenAI's rules).
fn logit_bias(
    bias: Option<&std::collections::BTreeMap<String, f64>>,
    vocab: usize,
) -> Result<Vec<(u32, f32)>, RequestError> {
    let Some(bias) = bias else { return Ok(Vec::new()) };
    if bias.len() > MAX_LOGIT_BIAS {
        return Err(RequestError::TooMany { what: "logit_bias", found: bias.len(), max: MAX_LOGIT_BIAS });
    }
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(bias.len());
    for (key, &value) in bias {
        let bad = |m: String| RequestError::LogitBias(format!("{key:?}: {m}"));
        // Canonical decimal only: "05" and " 5" would bias token 5 twice.
        let id = key.parse::<u32>().ok().filter(|id| id.to_string() == *key);
        let id = id.ok_or_else(|| bad("keys are token ids, as decimal strings".into()))?;
        if id as usize >= vocab {
            return Err(bad(format!("the vocabulary has {vocab} tokens")));
        }
        if !(-100.0..=100.0).contains(&value) {
            return Err(bad(format!("a bias must be between -100 and 100, got {value}")));
        }
        out.push((id, value as f32));
    }
    Ok(out)
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
    /// The URLs of the images, in the order of their marks in the messages.
    pub images: Vec<String>,
}

pub fn parse_messages(raw: Vec<MessageIn>, tool_format: Option<ToolFormat>) -> Result<Conversation, RequestError> {
    if raw.is_empty() {
        return Err(RequestError::EmptyMessages);
    }
    if raw.len() > MAX_MESSAGES {
        return Err(RequestError::TooMany { what: "messages", found: raw.len(), max: MAX_MESSAGES });
    }
    let count = raw.len();
    let mut messages = Vec::with_capacity(count);
    let mut prefix = None;
    let mut images = Vec::new();
    for (index, m) in raw.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "user" | "assistant" | "tool" => m.role,
            // OpenAI's newer name for the system role.
            "developer" => "system".to_string(),
            _ => return Err(RequestError::UnknownRole { index, role: m.role }),
        };
        let calls = m.tool_calls.iter().flatten();
        if let Some(i) = calls.clone().position(|c| c.kind.as_deref().is_some_and(|k| k != "function")) {
            let message = format!("tool_calls[{i}].type must be \"function\"");
            return Err(RequestError::BadMessage { index, message });
        }
        let tool_calls = m.tool_calls.map(|calls| tool_calls_for_template(calls, tool_format));
        images.extend(m.content.1);
        let msg = ChatMessage {
            role,
            content: m.content.0,
            reasoning_content: m.reasoning_content,
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
        };
        if m.prefix == Some(true) {
            if index + 1 != count {
                return Err(RequestError::PrefixNotLast { index });
            }
            if msg.role != "assistant" {
                return Err(RequestError::PrefixNotAssistant { index });
            }
            prefix = Some(msg);
        } else {
            messages.push(msg);
        }
    }
    Ok(Conversation { messages, prefix, images })
}

/// Tool calls as the template reads them, with `function.arguments` in the
/// form it expects: a JSON string for DeepSeek templates, an object for the
/// others.
fn tool_calls_for_template(calls: Vec<ToolCallIn>, format: Option<ToolFormat>) -> Value {
    let as_string = format.is_some_and(ToolFormat::arguments_as_string);
    let calls = calls.into_iter().map(|call| {
        let arguments = match (as_string, call.function.arguments) {
            (_, None) => None,
            (true, Some(Value::String(s))) => Some(Value::String(s)),
            (true, Some(other)) => Some(Value::String(other.to_string())),
            (false, Some(Value::String(s))) => Some(serde_json::from_str::<Value>(&s).unwrap_or(Value::String(s))),
            (false, Some(other)) => Some(other),
        };
        let mut function = serde_json::Map::new();
        function.insert("name".into(), Value::String(call.function.name));
        if let Some(a) = arguments {
            function.insert("arguments".into(), a);
        }
        let mut out = serde_json::Map::new();
        if let Some(id) = call.id {
            out.insert("id".into(), Value::String(id));
        }
        out.insert("type".into(), Value::String(call.kind.unwrap_or_else(|| "function".into())));
        out.insert("function".into(), Value::Object(function));
        Value::Object(out)
    });
    Value::Array(calls.collect())
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
pub fn parse_tools(
    tools: &[ToolIn],
    choice: Option<&ToolChoiceIn>,
) -> Result<(Vec<ToolSpec>, ToolChoice), RequestError> {
    if tools.len() > MAX_TOOLS {
        return Err(RequestError::TooMany { what: "tools", found: tools.len(), max: MAX_TOOLS });
    }
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(tools.len());
    for (index, t) in tools.iter().enumerate() {
        let bad = |message: &str| RequestError::BadTool { index, message: message.to_string() };
        match t.def.kind.as_deref() {
            Some("function") | None => {}
            Some(other) => return Err(bad(&format!("type {other:?} is not supported; use \"function\""))),
        }
        let f = &t.def.function;
        if f.name.is_empty() {
            return Err(bad("the function has an empty \"name\""));
        }
        let parameters = f.parameters.clone().map(Value::Object);
        if let Some(n) = parameters.as_ref().map(schema_bytes).filter(|&n| n > MAX_SCHEMA_BYTES) {
            return Err(bad(&format!("\"parameters\" is {n} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed")));
        }
        specs.push(ToolSpec { name: f.name.clone(), parameters, strict: f.strict.unwrap_or(false) });
    }
    let choice = match choice {
        None => {
            if tools.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            }
        }
        Some(ToolChoiceIn::Mode(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(RequestError::ToolChoice(format!(
                    "{other:?} is not a choice; use \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )))
            }
        },
        Some(ToolChoiceIn::Named(name)) => {
            if !specs.iter().any(|t| &t.name == name) {
                return Err(RequestError::ToolChoice(format!("{name:?} is not one of the tools")));
            }
            ToolChoice::Named(name.clone())
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
        validate_common(&serde_json::from_value(v).unwrap(), 100, 1000)
    }

    fn messages(v: Value) -> Vec<MessageIn> {
        serde_json::from_value(v).unwrap()
    }

    fn tools(v: Value) -> Vec<ToolIn> {
        serde_json::from_value(v).unwrap()
    }

    fn choice(v: Value) -> ToolChoiceIn {
        serde_json::from_value(v).unwrap()
    }

    /// The error a whole chat body gets, as the client sees its message.
    fn chat_error(body: Value) -> String {
        parse_body::<ChatRequest>(body.to_string().as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_named_by_its_path() {
        let user = json!({"role": "user", "content": "hi"});
        let cases = [
            (json!({"messages": [user, {"role": "assistant", "tool_calls": [1]}]}), "messages[1].tool_calls[0]"),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 5}}]}]}),
                "messages[0].tool_calls[0].function.name",
            ),
            (json!({"messages": [{"role": 7}]}), "messages[0].role"),
            (json!({"messages": [{"role": "user", "content": 3}]}), "messages[0].content"),
            (json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), "messages[0].content"),
            (json!({"messages": [user], "temperature": "hot"}), "temperature"),
            (json!({"messages": [user], "stop": 5}), "stop"),
            (json!({"messages": [user], "tools": [{"function": {"name": "f", "parameters": [1]}}]}), "tools[0]"),
            (json!({"messages": [user], "tool_choice": 5}), "tool_choice"),
            (json!({"messages": [user], "response_format": {"type": 1}}), "response_format.type"),
            (json!({"messages": [user], "logit_bias": {"5": "x"}}), "logit_bias.5"),
            (json!({"messages": [user], "stream_options": {"include_usage": 1}}), "stream_options.include_usage"),
        ];
        for (body, path) in cases {
            let e = chat_error(body.clone());
            assert!(e.starts_with(&format!("{path}: ")), "{body}: {e}");
        }
        // Trailing bytes and a body that is not an object are the body's fault.
        let e = parse_body::<ChatRequest>(b"{\"messages\": []} x").unwrap_err();
        assert!(matches!(e, RequestError::Body(_)), "{e}");
        let e = parse_body::<ChatRequest>(b"[1]").unwrap_err();
        assert!(matches!(e, RequestError::Body(_)), "{e}");
        let e = parse_body::<ChatRequest>(b"{oops").unwrap_err();
        assert!(matches!(e, RequestError::Body(_)), "{e}");
    }

    #[test]
    fn content_parts_join_their_text() {
        let m = messages(json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}, {"type": "input_text", "text": "c"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "prefix": null},
            {"role": "assistant", "content": null, "tool_calls": null}]));
        let c = parse_messages(m, None).unwrap();
        let texts: Vec<&str> = c.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["abc", "no", ""]);
        // Broken JSON inside a message is the body's fault, not a field's.
        let e = parse_body::<ChatRequest>(br#"{"messages":[{"role":"user""#).unwrap_err();
        assert!(matches!(e, RequestError::Body(_)), "{e}");
    }

    #[test]
    fn message_count_and_schema_size_are_bounded() {
        let many = || messages(Value::Array(vec![json!({"role": "user", "content": "x"}); MAX_MESSAGES + 1]));
        assert!(matches!(parse_messages(many(), None), Err(RequestError::TooMany { what: "messages", .. })));
        let mut fewer = many();
        fewer.pop();
        assert!(parse_messages(fewer, None).is_ok());
        let big: serde_json::Map<String, Value> =
            (0..4000).map(|i| (format!("field_{i:05}"), json!({"type": "string"}))).collect();
        let schema = json!({"type": "object", "properties": big});
        assert!(schema_bytes(&schema) > MAX_SCHEMA_BYTES);
        let tool = tools(json!([{"type": "function", "function": {"name": "f", "parameters": schema}}]));
        let e = parse_tools(&tool, None).unwrap_err().to_string();
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
    fn logit_bias_is_checked_and_bounded() {
        let c = common(json!({"logit_bias": {"5": -100, "999": 2.5}})).unwrap();
        assert_eq!(c.sampler.logit_bias, vec![(5, -100.0), (999, 2.5)]);
        for (bias, says) in [
            (json!({"1000": 1}), "the vocabulary has 1000 tokens"),
            (json!({"abc": 1}), "keys are token ids"),
            (json!({"-1": 1}), "keys are token ids"),
            (json!({"05": 1}), "keys are token ids"),
            (json!({" 5": 1}), "keys are token ids"),
            (json!({"5": 101}), "between -100 and 100"),
        ] {
            let e = common(json!({ "logit_bias": bias })).unwrap_err().to_string();
            assert!(e.starts_with("logit_bias: ") && e.contains(says), "{bias}: {e}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_LOGIT_BIAS).map(|i| (i.to_string(), json!(1))).collect();
        let e =
            validate_common(&serde_json::from_value(json!({ "logit_bias": many })).unwrap(), 100, 5000).unwrap_err();
        assert!(matches!(e, RequestError::TooMany { what: "logit_bias", .. }), "{e}");
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
        let m = messages(
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel", "prefix": true}]),
        );
        let c = parse_messages(m, None).unwrap();
        assert_eq!((c.messages.len(), c.prefix.unwrap().content), (1, "Hel".to_string()));
        let bad = messages(json!([{"role": "wizard", "content": "x"}]));
        assert!(matches!(parse_messages(bad, None), Err(RequestError::UnknownRole { index: 0, .. })));
        let bad =
            messages(json!([{"role": "assistant", "content": "x", "prefix": true}, {"role": "user", "content": "y"}]));
        assert!(matches!(parse_messages(bad, None), Err(RequestError::PrefixNotLast { index: 0 })));
        let bad = messages(json!([{"role": "user", "content": "x", "prefix": true}]));
        assert!(matches!(parse_messages(bad, None), Err(RequestError::PrefixNotAssistant { index: 0 })));
        assert!(matches!(parse_messages(Vec::new(), None), Err(RequestError::EmptyMessages)));
        let bad = messages(json!([{"role": "assistant", "tool_calls": [{"type": "x", "function": {"name": "f"}}]}]));
        let e = parse_messages(bad, None).unwrap_err().to_string();
        assert_eq!(e, "messages[0]: tool_calls[0].type must be \"function\"");
    }

    #[test]
    fn tool_call_arguments_follow_the_template() {
        let m = || {
            messages(
                json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}]),
            )
        };
        let c = parse_messages(m(), Some(ToolFormat::Hermes)).unwrap();
        assert_eq!(c.messages[0].tool_calls.as_ref().unwrap()[0]["function"]["arguments"], json!({"a": 1}));
        let c = parse_messages(m(), Some(ToolFormat::DeepSeek { typed: true })).unwrap();
        let call = &c.messages[0].tool_calls.as_ref().unwrap()[0];
        assert_eq!((&call["function"]["arguments"], &call["type"]), (&json!("{\"a\": 1}"), &json!("function")));
    }

    #[test]
    fn tools_and_choices() {
        let t =
            tools(json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]));
        assert_eq!(parse_tools(&t, None).unwrap().1, ToolChoice::Auto);
        let named = choice(json!({"type": "function", "function": {"name": "get_weather"}}));
        assert_eq!(parse_tools(&t, Some(&named)).unwrap().1, ToolChoice::Named("get_weather".into()));
        let unknown = choice(json!({"type": "function", "function": {"name": "nope"}}));
        assert!(matches!(parse_tools(&t, Some(&unknown)), Err(RequestError::ToolChoice(_))));
        assert!(serde_json::from_value::<Vec<ToolIn>>(json!([{"type": "function"}])).is_err());
        let empty = tools(json!([{"function": {"name": ""}}]));
        assert!(matches!(parse_tools(&empty, None), Err(RequestError::BadTool { index: 0, .. })));
        let other = tools(json!([{"type": "retrieval", "function": {"name": "f"}}]));
        assert!(matches!(parse_tools(&other, None), Err(RequestError::BadTool { index: 0, .. })));
        assert!(matches!(parse_tools(&[], Some(&choice(json!("required")))), Err(RequestError::ToolChoice(_))));
        assert!(matches!(parse_tools(&t, Some(&choice(json!("sometimes")))), Err(RequestError::ToolChoice(_))));
    }
}
