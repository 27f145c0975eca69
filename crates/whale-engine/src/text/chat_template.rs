//! Chat templates: the Jinja program a model ships (`tokenizer.chat_template`
//! in a GGUF, `chat_template` in `tokenizer_config.json`) that turns a list of
//! messages into the exact prompt text the model was trained on.
//!
//! # Design
//!
//! The templates are written for Python's `jinja2` as Hugging Face
//! `transformers` sets it up (`apply_chat_template`), so that is the behaviour
//! reproduced here with `minijinja`:
//!
//! * `trim_blocks` and `lstrip_blocks` on, a single trailing newline of the
//!   template dropped (jinja2's `keep_trailing_newline=False`), no HTML escaping;
//! * Python methods on values (`content.split('</think>')[-1]`, `.strip()`,
//!   `.startswith()`, `.items()`, …) through `minijinja_contrib`'s pycompat
//!   callback;
//! * `raise_exception(msg)` aborts rendering with [`TemplateError::Raised`];
//! * `tojson` is Python's `json.dumps(x, ensure_ascii=False)`: `", "` and `": "`
//!   separators, keys in insertion order, non-ASCII kept, no HTML escaping, and
//!   the `indent`, `separators`, `sort_keys` and `ensure_ascii` arguments;
//! * values print as Python's `str()` does: `True`, `False`, `None`, lists and
//!   dicts as `['a', 1]` / `{'k': 'v'}` (undefined prints as nothing);
//! * `strftime_now(fmt)` (used by Llama 3.x templates) formats the current UTC time;
//! * the variables are `messages`, `add_generation_prompt`, `bos_token`,
//!   `eos_token`, `tools` (none when there are no tools) and `documents` (none).
//!
//! A message is serialized with only the fields it has, in declaration order, so
//! `message.tool_calls is defined` behaves as with a Python dict. An assistant
//! message with tool calls and empty content is given `content = none`, the way
//! OpenAI-style clients send it and templates test for it
//! (`message['content'] is none`).
//!
//! The template is parsed once in [`ChatTemplate::new`]; [`ChatTemplate::render`]
//! can then be called any number of times, from several threads.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind, Output, State, Value};

use crate::text::tokenizer::Tokenizer;

/// A chat message as the template sees it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// The text. Deserialization also accepts `null` (read as "") and an array
    /// of OpenAI content parts, whose `text` fields are joined.
    #[serde(default, deserialize_with = "content_from_json")]
    pub content: String,
    /// The reasoning ("thinking") of an assistant turn, for templates that use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// OpenAI-style tool calls of an assistant turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// [`Tokenizer::guard_text`] on every string inside `v` (a request's tools or
/// tool calls), keys included.
pub fn guard_json(tok: &Tokenizer, v: &mut serde_json::Value, user_defined_too: bool) {
    use serde_json::Value;
    match v {
        Value::String(s) => *s = tok.guard_text(s, user_defined_too),
        Value::Array(a) => a.iter_mut().for_each(|x| guard_json(tok, x, user_defined_too)),
        Value::Object(o) => {
            let entries: Vec<(String, Value)> = std::mem::take(o).into_iter().collect();
            for (k, mut x) in entries {
                guard_json(tok, &mut x, user_defined_too);
                o.insert(tok.guard_text(&k, user_defined_too), x);
            }
        }
        _ => {}
    }
}

impl ChatMessage {
    /// Break every spelling of `tok`'s control tokens in the message's text
    /// (content, reasoning, name, tool-call names and arguments) so that the
    /// rendered prompt, encoded with [`Tokenizer::encode_guarded`], has
    /// control ids only where the template wrote them. User and system
    /// messages and tool results also lose user-defined tokens
    /// (`<tool_call>`, `<think>`); an assistant turn keeps those, since
    /// templates read them (R1's drops what precedes `</think>`).
    pub fn guard(&mut self, tok: &Tokenizer) {
        let user_defined_too = self.role != "assistant";
        let g = |s: &mut String| *s = tok.guard_text(s, user_defined_too);
        g(&mut self.content);
        self.reasoning_content.iter_mut().for_each(g);
        self.name.iter_mut().for_each(g);
        self.tool_call_id.iter_mut().for_each(g);
        if let Some(calls) = &mut self.tool_calls {
            guard_json(tok, calls, true);
        }
    }

    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into(), ..ChatMessage::default() }
    }

    /// The dict the template receives (see the module docs).
    fn template_value(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if self.content.is_empty() && self.tool_calls.is_some() {
            v["content"] = serde_json::Value::Null;
        }
        v
    }
}

fn content_from_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error as _;
    use serde::Deserialize as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Array(parts) => {
            let mut out = String::new();
            for p in &parts {
                match p.get("text").and_then(serde_json::Value::as_str) {
                    Some(t) => out.push_str(t),
                    None => return Err(D::Error::custom("a content part has no \"text\"")),
                }
            }
            Ok(out)
        }
        other => {
            Err(D::Error::custom(format!("message content must be a string, null or a list of parts, not {other}")))
        }
    }
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template syntax error{}: {message}", at_line(*line))]
    Syntax { line: Option<usize>, message: String },
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("chat template failed{}: {message}", at_line(*line))]
    Render { line: Option<usize>, message: String },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// Marks errors made by `raise_exception`, to tell them from minijinja's own.
const RAISED: &str = "raise_exception: ";

impl TemplateError {
    fn from_minijinja(e: Error) -> TemplateError {
        if e.kind() == ErrorKind::InvalidOperation {
            if let Some(msg) = e.detail().and_then(|d| d.strip_prefix(RAISED)) {
                return TemplateError::Raised(msg.to_owned());
            }
        }
        let message = match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        if e.kind() == ErrorKind::SyntaxError {
            TemplateError::Syntax { line: e.line(), message }
        } else {
            TemplateError::Render { line: e.line(), message }
        }
    }
}

const NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Parses `source`; a syntax error is reported with its line.
    pub fn new(source: &str) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(TemplateError::from_minijinja)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned()).map_err(TemplateError::from_minijinja)?;
        Ok(ChatTemplate { env })
    }

    /// Renders the conversation. `tools` is a JSON array of tool definitions
    /// (passed to the template as is).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let tmpl = self.env.get_template(NAME).map_err(TemplateError::from_minijinja)?;
        let messages: Vec<serde_json::Value> = messages.iter().map(ChatMessage::template_value).collect();
        let ctx = context! {
            messages => Value::from(Serde(&messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
            tools => tools.map(|t| Value::from(Serde(t))).unwrap_or(Value::from(())),
            documents => Value::from(()),
        };
        tmpl.render(ctx).map_err(TemplateError::from_minijinja)
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{message}")))
}

// ---------------------------------------------------------------------------
// Printing values as Python's str() does

fn python_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    let pythonic = match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => true,
        ValueKind::Number => value.as_i64().is_none(),
        _ => false,
    };
    if !pythonic {
        return minijinja::escape_formatter(out, state, value);
    }
    let mut s = String::new();
    python_repr(value, &mut s)?;
    out.write_str(&s).map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
}

/// Python's `repr()` of a value (strings quoted), as it appears inside a printed list or dict.
fn python_repr(v: &Value, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => match v.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => out.push_str(&python_float(f64::try_from(v.clone())?)),
        },
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, out)?;
                out.push_str(": ");
                python_repr(&v.get_item(&key)?, out)?;
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// tojson, as Python's json.dumps

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.kind() {
            ValueKind::Number => Some(" ".repeat(i64::try_from(v)?.max(0) as usize)),
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be a number or a string")),
        },
    };
    let (item_sep, key_sep) = match separators.filter(|s| !s.is_none()) {
        Some(s) => {
            let parts: Vec<String> = s.try_iter()?.map(|p| p.as_str().unwrap_or_default().to_owned()).collect();
            match <[String; 2]>::try_from(parts) {
                Ok([a, b]) => (a, b),
                Err(_) => {
                    return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings"))
                }
            }
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from(out))
}

fn newline_indent(style: &JsonStyle, depth: usize, out: &mut String) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(ind);
        }
    }
}

fn write_json(v: &Value, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(v.clone())?));
            }
        }
        ValueKind::String => write_json_str(v.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline_indent(style, depth + 1, out);
                write_json(item, style, depth + 1, out)?;
            }
            newline_indent(style, depth, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline_indent(style, depth + 1, out);
                match key.as_str() {
                    Some(k) => write_json_str(k, style.ensure_ascii, out),
                    None => write_json_str(&key.to_string(), style.ensure_ascii, out),
                }
                out.push_str(&style.key_sep);
                write_json(&v.get_item(key)?, style, depth + 1, out)?;
            }
            newline_indent(style, depth, out);
            out.push('}');
        }
        _ => write_json_str(&v.to_string(), style.ensure_ascii, out),
    }
    Ok(())
}

fn write_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as `json.dumps` writes it.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let a = f.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{f}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    // Scientific: Rust writes "1e-5", Python "1e-05"; Rust "1.5e20", Python "1.5e+20".
    let s = format!("{f:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

// ---------------------------------------------------------------------------
// strftime_now

fn strftime_now(format: String) -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    strftime(&format, secs)
}

/// A small strftime over UTC: %Y %y %m %d %e %B %b %A %a %H %M %S %j %p %I %%.
fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", if hh % 12 == 0 { 12 } else { hh % 12 })),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %b %j", 0), "1970-01-01 00:00:00 Thu Jan 001");
        // 2024-02-29 12:34:56 UTC, a Thursday, day 60.
        assert_eq!(strftime("%d %B %Y, %A %I%p %j %%", 1_709_210_096), "29 February 2024, Thursday 12PM 060 %");
        for days in [-1000, 0, 59, 365, 11_016, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(1.5e20), "1.5e+20");
        assert_eq!(python_float(-2.25), "-2.25");
    }

    #[test]
    fn content_parts_and_null() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content, "ab");
        let m: ChatMessage = serde_json::from_str(r#"{"role":"assistant","content":null,"tool_calls":[]}"#).unwrap();
        assert_eq!(m.content, "");
        let m: ChatMessage = serde_json::from_str(r#"{"role":"assistant"}"#).unwrap();
        assert_eq!(m.content, "");
    }
}
