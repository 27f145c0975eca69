//! Tool calls in the model's own format: recognising the format a chat
//! template uses, describing tools to templates that do not, forcing a call,
//! and parsing calls out of generated text.
//!
//! Two formats are known:
//! - **DeepSeek** (V3, R1 and their distills), with dedicated tokens:
//!   `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`
//!   (R1 and V3), or `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>`
//!   (V3.1 and later); the parser takes both.
//! - **Hermes** (Qwen2.5 and many others): `<tool_call>\n{"name": NAME, "arguments": ARGS}\n</tool_call>`.
//!
//! The format is read from the template's source: it spells out how an
//! assistant turn with `tool_calls` is rendered, which is how the model was
//! trained to write them.

use serde_json::{json, Value};

use crate::text::constraint::lark_literal;
use crate::text::tokenizer::Tokenizer;

pub const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
pub const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
pub const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
pub const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
pub const DS_SEP: &str = "<｜tool▁sep｜>";
pub const HERMES_BEGIN: &str = "<tool_call>";
pub const HERMES_END: &str = "</tool_call>";

/// How a model writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// DeepSeek's tokens; `typed` is the R1/V3 layout with a `function` type
    /// and the arguments in a ```json block.
    DeepSeek {
        typed: bool,
    },
    Hermes,
}

/// One parsed call: the function's name and its arguments as JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

impl ToolFormat {
    /// The format a chat template renders tool calls in, if any.
    pub fn detect(template: &str) -> Option<ToolFormat> {
        if template.contains(DS_CALLS_BEGIN) {
            Some(ToolFormat::DeepSeek { typed: template.contains("```json") })
        } else if template.contains(HERMES_BEGIN) {
            Some(ToolFormat::Hermes)
        } else {
            None
        }
    }

    /// The text that opens the tool calls of a turn.
    pub fn opener(self) -> &'static str {
        match self {
            ToolFormat::DeepSeek { .. } => DS_CALLS_BEGIN,
            ToolFormat::Hermes => HERMES_BEGIN,
        }
    }

    /// Whether the template expects `tool_calls[i].function.arguments` as a
    /// JSON string (DeepSeek templates concatenate it) rather than an object
    /// (Hermes templates apply `tojson`).
    pub fn arguments_as_string(self) -> bool {
        matches!(self, ToolFormat::DeepSeek { .. })
    }

    /// Text to append to the prompt so that the model must call `name`: the
    /// opener and everything up to the arguments, which then come as a JSON
    /// object. [`ToolFormat::closing`] is what follows the object.
    pub fn forced_call_prefix(self, name: &str) -> String {
        match self {
            ToolFormat::DeepSeek { typed: true } => {
                format!("{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}{name}\n```json\n")
            }
            ToolFormat::DeepSeek { typed: false } => format!("{DS_CALLS_BEGIN}{DS_CALL_BEGIN}{name}{DS_SEP}"),
            ToolFormat::Hermes => {
                format!("{HERMES_BEGIN}\n{{\"name\": {}, \"arguments\": ", Value::String(name.to_string()))
            }
        }
    }

    /// What closes a forced call after its arguments object.
    pub fn closing(self) -> String {
        match self {
            ToolFormat::DeepSeek { typed: true } => format!("\n```{DS_CALL_END}{DS_CALLS_END}"),
            ToolFormat::DeepSeek { typed: false } => format!("{DS_CALL_END}{DS_CALLS_END}"),
            ToolFormat::Hermes => format!("}}\n{HERMES_END}"),
        }
    }

    /// The token text that opens each call: where a lazy grammar for strict
    /// tool calls switches on.
    pub fn call_trigger(self) -> &'static str {
        match self {
            ToolFormat::DeepSeek { .. } => DS_CALL_BEGIN,
            ToolFormat::Hermes => HERMES_BEGIN,
        }
    }

    /// A Lark grammar (llguidance's syntax) for one call written after
    /// [`ToolFormat::call_trigger`] (or, with `with_trigger`, from the
    /// trigger on): one of `tools` by name, its arguments matching its JSON
    /// schema (`None`: any object), up to the call's closing token. Fixed
    /// text that is one control token of the vocabulary is written as that
    /// token, since grammar text never matches a control token.
    pub fn call_grammar(self, tok: &Tokenizer, tools: &[(String, Option<Value>)], with_trigger: bool) -> String {
        let lit = |t: &str| lark_literal(tok, t);
        let args = |schema: &Option<Value>| schema.clone().unwrap_or_else(|| json!({"type": "object"}));
        let calls: Vec<String> = match self {
            ToolFormat::Hermes => {
                // One JSON object: {"name": NAME, "arguments": ARGS}, for any of the tools.
                let any: Vec<Value> = tools
                    .iter()
                    .map(|(name, schema)| {
                        json!({
                            "type": "object",
                            "properties": {"name": {"const": name}, "arguments": args(schema)},
                            "required": ["name", "arguments"],
                            "additionalProperties": false,
                        })
                    })
                    .collect();
                let body = json!({"anyOf": any});
                vec![format!("\"\\n\" %json {body} \"\\n\" {}", lit(HERMES_END))]
            }
            ToolFormat::DeepSeek { typed } => tools
                .iter()
                .map(|(name, schema)| {
                    let (sep, end, schema) = (lit(DS_SEP), lit(DS_CALL_END), args(schema));
                    let name = serde_json::to_string(name).unwrap_or_default();
                    if typed {
                        format!("\"function\" {sep} {name} \"\\n```json\\n\" %json {schema} \"\\n```\" {end}")
                    } else {
                        format!("{name} {sep} %json {schema} {end}")
                    }
                })
                .collect(),
        };
        let trigger = if with_trigger { format!("{} ", lit(self.call_trigger())) } else { String::new() };
        format!("start: {trigger}call\ncall: {}\n", calls.join("\n    | "))
    }

    /// A system-prompt section describing `tools` and the call format, for
    /// templates that render tool calls but not the tool list (R1's).
    pub fn describe_tools(self, tools: &[Value]) -> String {
        let mut s = String::from(
            "## Tools\n\nYou can call these functions. Call one only when it helps to answer; \
             otherwise answer directly.\n",
        );
        for t in tools {
            let f = &t["function"];
            s.push_str(&format!("\n### {}\n", f["name"].as_str().unwrap_or_default()));
            if let Some(d) = f["description"].as_str() {
                s.push_str(&format!("Description: {d}\n"));
            }
            if let Some(p) = f.get("parameters") {
                s.push_str(&format!("Parameters (JSON schema): {p}\n"));
            }
        }
        let example = self.forced_call_prefix("FUNCTION_NAME") + "{\"argument\": \"value\"}" + &self.closing();
        s.push_str(&format!("\nTo call a function, write exactly:\n{example}\n"));
        s
    }

    /// Split generated text into the content before the calls and the calls.
    /// `None` if the text has no opener; `Err` if the calls are malformed.
    ///
    /// Hermes models sometimes leave out the `<tool_call>` tags and answer
    /// with the bare object; an answer that is nothing but
    /// `{"name": ..., "arguments": ...}` counts as a call too, also in a
    /// Markdown fence (```` ```json ````), as Qwen2.5-Coder writes it at
    /// times and as llama.cpp's Hermes parser accepts it.
    pub fn parse(self, text: &str) -> Option<Result<(String, Vec<ToolCall>), String>> {
        let bare = unfenced(text.trim());
        if self == ToolFormat::Hermes && !text.contains(HERMES_BEGIN) && bare.starts_with('{') {
            let v: Value = serde_json::from_str(bare).ok()?;
            v.get("name")?.as_str()?;
            return Some(parse_hermes(&format!("{HERMES_BEGIN}{bare}{HERMES_END}")).map(|c| (String::new(), c)));
        }
        let at = text.find(self.opener())?;
        let content = text[..at].trim_end().to_string();
        let rest = &text[at..];
        let calls = match self {
            ToolFormat::DeepSeek { .. } => parse_deepseek(rest),
            ToolFormat::Hermes => parse_hermes(rest),
        };
        Some(calls.map(|c| (content, c)))
    }
}

/// What follows a Markdown fence opener marked `json` or unmarked
/// (```` ```json ```` or ```` ``` ````, then whitespace), that whitespace
/// trimmed; `None` where `text` does not open so.
fn after_fence(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?;
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.starts_with(char::is_whitespace).then(|| rest.trim_start())
}

/// The inside of `text` if it is one such code block ([`after_fence`]
/// through a closing ```` ``` ````), else `text`.
fn unfenced(text: &str) -> &str {
    after_fence(text).and_then(|r| r.strip_suffix("```")).map_or(text, str::trim)
}

/// Whether `text` (not empty, leading whitespace trimmed) opens as a bare
/// Hermes call may: `{`, or a fence ([`after_fence`]) and then `{`. `None`
/// while `text` is too short to tell.
fn opens_bare_call(text: &str) -> Option<bool> {
    if text.starts_with('{') {
        return Some(true);
    }
    if "```json".starts_with(text) {
        return None;
    }
    match after_fence(text) {
        None => Some(false),
        Some(rest) => rest.chars().next().map(|c| c == '{'),
    }
}

fn parse_deepseek(text: &str) -> Result<Vec<ToolCall>, String> {
    let body = text.strip_prefix(DS_CALLS_BEGIN).unwrap_or(text);
    let body = body.split(DS_CALLS_END).next().unwrap_or(body);
    let mut calls = Vec::new();
    for part in body.split(DS_CALL_BEGIN).skip(1) {
        let part = part.split(DS_CALL_END).next().unwrap_or(part);
        let (head, rest) = part.split_once(DS_SEP).ok_or("a tool call has no <｜tool▁sep｜>")?;
        let (name, args) = if head.trim() == "function" {
            // R1/V3: NAME\n```json\nARGS\n```
            let (name, rest) = rest.split_once('\n').unwrap_or((rest, ""));
            let args = rest.trim();
            let args = args.strip_prefix("```json").or_else(|| args.strip_prefix("```")).unwrap_or(args);
            let args = args.strip_suffix("```").unwrap_or(args);
            (name.trim(), args.trim())
        } else {
            (head.trim(), rest.trim())
        };
        calls.push(ToolCall { name: name.to_string(), arguments: normalize_args(args)? });
    }
    if calls.is_empty() {
        return Err("the tool-call block holds no call".into());
    }
    Ok(calls)
}

fn parse_hermes(text: &str) -> Result<Vec<ToolCall>, String> {
    let mut calls = Vec::new();
    for part in text.split(HERMES_BEGIN).skip(1) {
        let body = part.split(HERMES_END).next().unwrap_or(part).trim();
        let v: Value = serde_json::from_str(body).map_err(|e| format!("a <tool_call> is not JSON: {e}"))?;
        let name = v["name"].as_str().ok_or("a <tool_call> has no \"name\"")?;
        let args = match &v["arguments"] {
            Value::String(s) => normalize_args(s)?,
            Value::Null => "{}".to_string(),
            other => other.to_string(),
        };
        calls.push(ToolCall { name: name.to_string(), arguments: args });
    }
    if calls.is_empty() {
        return Err("no <tool_call> found".into());
    }
    Ok(calls)
}

/// Arguments as compact JSON text; they must be a JSON object.
fn normalize_args(args: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(args).map_err(|e| format!("tool-call arguments are not JSON: {e}"))?;
    if !v.is_object() {
        return Err("tool-call arguments are not a JSON object".into());
    }
    Ok(v.to_string())
}

/// Watches streamed content for the start of tool calls: text before the
/// opener passes through, a possible partial opener is held back, and from the
/// opener on everything is kept for parsing at the end.
#[derive(Debug)]
pub struct ToolCallSplitter {
    opener: &'static str,
    held: String,
    in_calls: bool,
    /// Hermes: an answer starting with `{` (or a ```` ```json ```` fence
    /// and `{`) may be a bare call; hold it all.
    bare_json: bool,
    /// Some content other than whitespace has been passed on.
    started: bool,
}

impl ToolCallSplitter {
    pub fn new(format: ToolFormat) -> ToolCallSplitter {
        ToolCallSplitter {
            opener: format.opener(),
            held: String::new(),
            in_calls: false,
            bare_json: format == ToolFormat::Hermes,
            started: false,
        }
    }

    /// Whether the opener has been seen.
    pub fn in_calls(&self) -> bool {
        self.in_calls
    }

    /// Add content; returns the part that is plain content for sure.
    pub fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.in_calls {
            return String::new();
        }
        if !self.started {
            let t = self.held.trim_start();
            if t.is_empty() {
                return String::new();
            }
            if self.bare_json {
                match opens_bare_call(t) {
                    None => return String::new(),
                    Some(true) => {
                        self.in_calls = true;
                        return String::new();
                    }
                    Some(false) => {}
                }
            }
            self.started = true;
        }
        if let Some(at) = self.held.find(self.opener) {
            self.in_calls = true;
            let out = self.held[..at].to_string();
            self.held.drain(..at);
            return out;
        }
        let keep = (1..self.opener.len())
            .rev()
            .find(|&n| {
                self.held.len() >= n
                    && self.held.is_char_boundary(self.held.len() - n)
                    && self.opener.starts_with(&self.held[self.held.len() - n..])
            })
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        out
    }

    /// End of output: (content still held, the tool-call text if any).
    pub fn finish(&mut self) -> (String, Option<String>) {
        let held = std::mem::take(&mut self.held);
        if self.in_calls {
            (String::new(), Some(held))
        } else {
            (held, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_r1_and_v31_deepseek_calls() {
        let f = ToolFormat::DeepSeek { typed: true };
        let text = "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let (content, calls) = f.parse(text).unwrap().unwrap();
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            [
                ToolCall { name: "get_weather".into(), arguments: "{\"city\":\"Paris\"}".into() },
                ToolCall { name: "get_time".into(), arguments: "{}".into() }
            ]
        );
        let v31 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\":\"Oslo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let (_, calls) = f.parse(v31).unwrap().unwrap();
        assert_eq!(calls[0], ToolCall { name: "get_weather".into(), arguments: "{\"city\":\"Oslo\"}".into() });
        assert!(f.parse("no calls here").is_none());
        assert!(f
            .parse("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{oops\n```")
            .unwrap()
            .is_err());
    }

    #[test]
    fn parses_hermes_calls() {
        let f = ToolFormat::Hermes;
        let text = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>\n<tool_call>\n{\"name\": \"neg\", \"arguments\": \"{\\\"x\\\": 3}\"}\n</tool_call>";
        let (content, calls) = f.parse(text).unwrap().unwrap();
        assert_eq!(content, "");
        assert_eq!(calls[0], ToolCall { name: "add".into(), arguments: "{\"a\":1,\"b\":2}".into() });
        assert_eq!(calls[1], ToolCall { name: "neg".into(), arguments: "{\"x\":3}".into() });
        assert!(f.parse("<tool_call>\nnot json\n</tool_call>").unwrap().is_err());
        // A bare call object, without the tags.
        let (_, calls) = f.parse(" {\"name\": \"add\", \"arguments\": {\"a\": 1}}").unwrap().unwrap();
        assert_eq!(calls[0], ToolCall { name: "add".into(), arguments: "{\"a\":1}".into() });
        assert!(f.parse("{\"not\": \"a call\"}").is_none());
        // The same in a Markdown fence, marked json or not.
        for fenced in [
            "```json\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n```",
            "```\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}```",
        ] {
            let (_, calls) = f.parse(fenced).unwrap().unwrap();
            assert_eq!(calls[0], ToolCall { name: "add".into(), arguments: "{\"a\":1}".into() }, "{fenced}");
        }
        assert!(f.parse("```json\n{\"not\": \"a call\"}\n```").is_none());
        assert!(f.parse("```python\n{\"name\": \"add\"}\n```").is_none());
        assert!(ToolFormat::DeepSeek { typed: true }.parse("```json\n{\"name\": \"add\"}\n```").is_none());
    }

    #[test]
    fn forced_prefix_plus_args_plus_closing_parses() {
        for f in [ToolFormat::DeepSeek { typed: true }, ToolFormat::DeepSeek { typed: false }, ToolFormat::Hermes] {
            let text = f.forced_call_prefix("lookup") + "{\"q\": \"whale\"}" + &f.closing();
            let (_, calls) = f.parse(&text).unwrap().unwrap();
            assert_eq!(calls, [ToolCall { name: "lookup".into(), arguments: "{\"q\":\"whale\"}".into() }], "{f:?}");
            assert!(f.describe_tools(&[]).contains(f.opener()));
        }
    }

    #[test]
    fn detects_the_format_from_the_template() {
        assert_eq!(
            ToolFormat::detect("{{'<｜tool▁calls▁begin｜>' + '```json'}}"),
            Some(ToolFormat::DeepSeek { typed: true })
        );
        assert_eq!(ToolFormat::detect("{{- '\\n<tool_call>\\n' }}"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::detect("{{ message['content'] }}"), None);
    }

    #[test]
    fn splitter_holds_a_partial_opener() {
        let mut s = ToolCallSplitter::new(ToolFormat::Hermes);
        assert_eq!(s.push("Sure <to"), "Sure ");
        assert_eq!(s.push("ol"), "");
        assert_eq!(s.push("_call>\n{"), "");
        assert!(s.in_calls());
        assert_eq!(s.finish(), (String::new(), Some("<tool_call>\n{".into())));
        let mut s = ToolCallSplitter::new(ToolFormat::Hermes);
        assert_eq!(s.push("a <b"), "a <b");
        assert_eq!(s.push("<"), "");
        assert_eq!(s.finish(), ("<".into(), None));
        // A Hermes answer that opens with `{` may be a bare call: held whole.
        let mut s = ToolCallSplitter::new(ToolFormat::Hermes);
        assert_eq!(s.push("\n"), "");
        assert_eq!(s.push("{\"name\""), "");
        assert_eq!(s.finish(), (String::new(), Some("\n{\"name\"".into())));
        let mut s = ToolCallSplitter::new(ToolFormat::DeepSeek { typed: true });
        assert_eq!(s.push("{x}"), "{x}");
        // A fence is held until it shows whether an object follows.
        let mut s = ToolCallSplitter::new(ToolFormat::Hermes);
        for piece in ["``", "`js", "on", "\n"] {
            assert_eq!(s.push(piece), "", "{piece:?}");
        }
        assert!(!s.in_calls());
        assert_eq!(s.push("{\"name\""), "");
        assert!(s.in_calls());
        assert_eq!(s.finish(), (String::new(), Some("```json\n{\"name\"".into())));
        // Code in a fence is content, streamed once the fence says so.
        let mut s = ToolCallSplitter::new(ToolFormat::Hermes);
        assert_eq!(s.push("```"), "");
        assert_eq!(s.push("python\nx = 1"), "```python\nx = 1");
        assert_eq!(s.push("\n```"), "\n```");
        assert_eq!(s.finish(), (String::new(), None));
        let mut s = ToolCallSplitter::new(ToolFormat::Hermes);
        assert_eq!(s.push("Sure"), "Sure");
    }
}
