//! Constrained decoding for JSON mode: before each draw, every token whose
//! bytes would make the output stop being a prefix of a valid JSON object is
//! masked out, so the text is valid JSON by construction (not by hope).
//!
//! # Design
//!
//! [`JsonState`] is a byte-level pushdown automaton for RFC 8259 JSON whose
//! top-level value is an object (OpenAI's `{"type": "json_object"}`). It is
//! `Copy` (the container stack is a fixed array), so checking a token is: copy
//! the state, feed the token's bytes, see whether it failed. [`TokenTable`]
//! holds every token's bytes once per model; [`JsonState::mask`] runs the check
//! over the whole vocabulary (about a million byte steps for a 150k vocabulary,
//! a few milliseconds, small beside a forward pass on CPU).
//!
//! What it allows beyond the grammar, and what it limits so generation ends:
//! - the end-of-generation tokens only once the object is complete, and after
//!   that nothing else (no trailing whitespace);
//! - whitespace runs of at most [`MAX_WS_RUN`] bytes, numbers of at most
//!   [`MAX_NUMBER_LEN`] bytes, nesting of at most [`MAX_DEPTH`];
//! - only ordinary and byte tokens (no control or user-defined tokens such as
//!   `<|im_start|>` or `<think>`, whose text would otherwise count as string
//!   bytes);
//! - strings must be UTF-8 (lead and continuation bytes are checked, so a
//!   character may be split across tokens), without raw control characters.

use crate::text::tokenizer::{TokenKind, Tokenizer};

/// Deepest nesting of objects and arrays.
pub const MAX_DEPTH: usize = 32;
/// Longest run of whitespace between tokens of the JSON text.
pub const MAX_WS_RUN: u8 = 32;
/// Longest number literal, in bytes.
pub const MAX_NUMBER_LEN: u8 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    /// After `-`.
    Minus,
    /// A leading `0`: only `.`, `e` or the end may follow.
    Zero,
    Int,
    /// After `.`.
    Dot,
    Frac,
    /// After `e`/`E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    ExpDigits,
}

impl Num {
    fn can_end(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After a backslash.
    Backslash,
    /// Hex digits still expected after `\u`.
    Hex(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the top-level object.
    Start,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// A value is expected (after `:` or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    String {
        key: bool,
        escape: Escape,
        utf8_left: u8,
    },
    Number(Num),
    /// Inside `true`, `false` or `null`: the bytes still expected.
    Literal(&'static [u8]),
    /// The top-level object is complete.
    Done,
}

/// Where a JSON text stands after the bytes fed so far.
#[derive(Clone, Copy, Debug)]
pub struct JsonState {
    state: State,
    stack: [Container; MAX_DEPTH],
    depth: usize,
    ws_run: u8,
    num_len: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        JsonState::new()
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonState {
    pub fn new() -> JsonState {
        JsonState { state: State::Start, stack: [Container::Object; MAX_DEPTH], depth: 0, ws_run: 0, num_len: 0 }
    }

    /// Whether a complete top-level object has been read.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Feed bytes; `false` (and an unspecified state) if they cannot continue
    /// a valid JSON object.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.push(b))
    }

    /// Feed one byte; `false` if it cannot continue a valid JSON object.
    pub fn push(&mut self, b: u8) -> bool {
        if let State::Number(n) = self.state {
            return self.number_byte(b, n);
        }
        if is_ws(b) && self.allows_ws() {
            self.ws_run += 1;
            return self.ws_run <= MAX_WS_RUN;
        }
        self.ws_run = 0;
        match self.state {
            State::Start => b == b'{' && self.open(Container::Object),
            State::KeyOrClose => match b {
                b'"' => self.start_string(true),
                b'}' => self.close(Container::Object),
                _ => false,
            },
            State::Key => b == b'"' && self.start_string(true),
            State::Colon => {
                if b != b':' {
                    return false;
                }
                self.state = State::Value;
                true
            }
            State::Value => self.start_value(b),
            State::ValueOrClose => {
                if b == b']' {
                    self.close(Container::Array)
                } else {
                    self.start_value(b)
                }
            }
            State::AfterValue => match (b, self.stack[self.depth - 1]) {
                (b',', Container::Object) => {
                    self.state = State::Key;
                    true
                }
                (b',', Container::Array) => {
                    self.state = State::Value;
                    true
                }
                (b'}', Container::Object) => self.close(Container::Object),
                (b']', Container::Array) => self.close(Container::Array),
                _ => false,
            },
            State::String { key, escape, utf8_left } => self.string_byte(b, key, escape, utf8_left),
            State::Number(n) => self.number_byte(b, n),
            State::Literal(rest) => {
                if rest.first() != Some(&b) {
                    return false;
                }
                if rest.len() == 1 {
                    self.end_value();
                } else {
                    self.state = State::Literal(&rest[1..]);
                }
                true
            }
            State::Done => false,
        }
    }

    fn allows_ws(&self) -> bool {
        !matches!(self.state, State::String { .. } | State::Literal(_) | State::Number(_) | State::Done)
    }

    fn open(&mut self, c: Container) -> bool {
        if self.depth == MAX_DEPTH {
            return false;
        }
        self.stack[self.depth] = c;
        self.depth += 1;
        self.state = match c {
            Container::Object => State::KeyOrClose,
            Container::Array => State::ValueOrClose,
        };
        true
    }

    fn close(&mut self, c: Container) -> bool {
        if self.depth == 0 || self.stack[self.depth - 1] != c {
            return false;
        }
        self.depth -= 1;
        self.end_value();
        true
    }

    /// A value (or key) just ended.
    fn end_value(&mut self) {
        self.state = if self.depth == 0 { State::Done } else { State::AfterValue };
    }

    fn start_string(&mut self, key: bool) -> bool {
        self.state = State::String { key, escape: Escape::None, utf8_left: 0 };
        true
    }

    fn start_value(&mut self, b: u8) -> bool {
        match b {
            b'{' => self.open(Container::Object),
            b'[' => self.open(Container::Array),
            b'"' => self.start_string(false),
            b't' => self.literal(b"rue"),
            b'f' => self.literal(b"alse"),
            b'n' => self.literal(b"ull"),
            b'-' => self.number(Num::Minus),
            b'0' => self.number(Num::Zero),
            b'1'..=b'9' => self.number(Num::Int),
            _ => false,
        }
    }

    fn literal(&mut self, rest: &'static [u8]) -> bool {
        self.state = State::Literal(rest);
        true
    }

    fn number(&mut self, n: Num) -> bool {
        self.num_len = 1;
        self.state = State::Number(n);
        true
    }

    fn string_byte(&mut self, b: u8, key: bool, escape: Escape, utf8_left: u8) -> bool {
        let set = |s: &mut JsonState, escape, utf8_left| {
            s.state = State::String { key, escape, utf8_left };
            true
        };
        if utf8_left > 0 {
            return (0x80..=0xBF).contains(&b) && set(self, Escape::None, utf8_left - 1);
        }
        match escape {
            Escape::Backslash => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => set(self, Escape::None, 0),
                b'u' => set(self, Escape::Hex(4), 0),
                _ => false,
            },
            Escape::Hex(n) => {
                b.is_ascii_hexdigit() && set(self, if n == 1 { Escape::None } else { Escape::Hex(n - 1) }, 0)
            }
            Escape::None => match b {
                b'"' => {
                    if key {
                        self.state = State::Colon;
                    } else {
                        self.end_value();
                    }
                    true
                }
                b'\\' => set(self, Escape::Backslash, 0),
                0x00..=0x1F | 0x7F => false,
                0x20..=0x7E => set(self, Escape::None, 0),
                0xC2..=0xDF => set(self, Escape::None, 1),
                0xE0..=0xEF => set(self, Escape::None, 2),
                0xF0..=0xF4 => set(self, Escape::None, 3),
                _ => false, // a stray continuation byte, or never valid in UTF-8
            },
        }
    }

    fn number_byte(&mut self, b: u8, n: Num) -> bool {
        let next = match (n, b) {
            (Num::Minus, b'0') => Some(Num::Zero),
            (Num::Minus, b'1'..=b'9') => Some(Num::Int),
            (Num::Int, b'0'..=b'9') => Some(Num::Int),
            (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
            (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
            (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Some(Num::ExpDigits),
            _ => None,
        };
        match next {
            Some(n) => {
                self.num_len += 1;
                self.state = State::Number(n);
                self.num_len <= MAX_NUMBER_LEN
            }
            // The number ended; the byte belongs to what follows it.
            None if n.can_end() && self.depth > 0 => {
                self.end_value();
                self.push(b)
            }
            None => false,
        }
    }

    /// Set the logit of every token that cannot come next to −∞. `logits` is
    /// `[vocab]`; ids past the table are masked too.
    pub fn mask(&self, table: &TokenTable, logits: &mut [f32]) {
        for (id, l) in logits.iter_mut().enumerate() {
            if !self.allows(table, id as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Whether token `id` may come next.
    pub fn allows(&self, table: &TokenTable, id: u32) -> bool {
        match table.entries.get(id as usize) {
            Some(Entry::Eog) => self.is_complete(),
            Some(Entry::Text(bytes)) => {
                let mut probe = *self;
                probe.push_bytes(bytes)
            }
            Some(Entry::Never) | None => false,
        }
    }

    /// Advance by token `id` (after it was drawn); `false` if it was not allowed.
    pub fn advance(&mut self, table: &TokenTable, id: u32) -> bool {
        match table.entries.get(id as usize) {
            Some(Entry::Eog) => self.is_complete(),
            Some(Entry::Text(bytes)) => self.push_bytes(bytes),
            Some(Entry::Never) | None => false,
        }
    }
}

#[derive(Clone, Debug)]
enum Entry {
    /// Ordinary or byte token: its bytes.
    Text(Box<[u8]>),
    /// End of generation: allowed once the text is complete.
    Eog,
    /// Control, user-defined, unused and empty tokens.
    Never,
}

/// Each token's bytes, computed once per model.
#[derive(Clone, Debug)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

impl TokenTable {
    pub fn new(tok: &Tokenizer) -> TokenTable {
        let entries = (0..tok.vocab_size() as u32)
            .map(|id| {
                if tok.is_eog(id) {
                    return Entry::Eog;
                }
                match tok.token_kind(id) {
                    Some(TokenKind::Normal | TokenKind::Byte) => {
                        let b = tok.token_bytes(id);
                        if b.is_empty() {
                            Entry::Never
                        } else {
                            Entry::Text(b.into_boxed_slice())
                        }
                    }
                    _ => Entry::Never,
                }
            })
            .collect();
        TokenTable { entries }
    }

    /// A table from explicit token texts (for tests); `eog` ids end generation.
    pub fn from_texts(texts: &[&str], eog: &[u32]) -> TokenTable {
        let entries = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if eog.contains(&(i as u32)) {
                    Entry::Eog
                } else if t.is_empty() {
                    Entry::Never
                } else {
                    Entry::Text(t.as_bytes().into())
                }
            })
            .collect();
        TokenTable { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        JsonState::new().push_bytes(text.as_bytes())
    }

    fn complete(text: &str) -> bool {
        let mut s = JsonState::new();
        s.push_bytes(text.as_bytes()) && s.is_complete()
    }

    #[test]
    fn valid_objects_are_complete() {
        for t in [
            "{}",
            " {\"a\": 1}",
            "{\"a\":[1,2.5,-0.1e+3,true,false,null,{\"b\":\"c\"}],\"d\":{}}",
            "{\"s\": \"esc \\\" \\\\ \\n \\u00e9 é 東京 🐋\"}",
            "{\n  \"x\": [ ]\n}",
            "{\"n\": 0}",
            "{\"n\": 12E-7}",
        ] {
            assert!(complete(t), "{t}");
            assert!(serde_json::from_str::<serde_json::Value>(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn prefixes_are_accepted_but_not_complete() {
        let t = "{\"a\": [1, {\"b\": \"x";
        assert!(accepts(t));
        let mut s = JsonState::new();
        s.push_bytes(t.as_bytes());
        assert!(!s.is_complete());
    }

    #[test]
    fn invalid_text_is_rejected() {
        for t in [
            "[]",          // top level must be an object
            "{a: 1}",      // unquoted key
            "{\"a\" 1}",   // missing colon
            "{\"a\": 01}", // leading zero
            "{\"a\": 1,}", // trailing comma
            "{\"a\": tru ",
            "{\"a\": \"\x01\"}",
            "{\"a\": \"\\x\"}",
            "{\"a\": 1]",
            "{} x",
            "{\"a\": -}",
            "{\"a\": 1 2}",
            "{\"a\": 1.}",
        ] {
            assert!(!complete(t), "{t:?} should not be valid");
        }
        // Bytes that are not UTF-8 inside a string.
        assert!(!JsonState::new().push_bytes(b"{\"a\": \"\xff"));
        assert!(!JsonState::new().push_bytes(b"{\"a\": \"\x80"));
        assert!(JsonState::new().push_bytes(b"{\"a\": \"\xe6\x9d"));
    }

    #[test]
    fn limits_end_runaway_output() {
        assert!(!accepts(&format!("{{{}", " ".repeat(MAX_WS_RUN as usize + 1))));
        assert!(!accepts(&format!("{{\"a\": {}", "1".repeat(MAX_NUMBER_LEN as usize + 1))));
        assert!(!accepts(&format!("{{\"a\": {}", "[".repeat(MAX_DEPTH))));
        assert!(accepts(&format!("{{\"a\": {}", "[".repeat(MAX_DEPTH - 1))));
    }

    #[test]
    fn mask_allows_exactly_the_valid_tokens() {
        // ids: 0 eog, 1 "{", 2 "}", 3 "\"a\"", 4 ":", 5 " 1", 6 "x", 7 "", 8 "1}", 9 ","
        let table = TokenTable::from_texts(&["</s>", "{", "}", "\"a\"", ":", " 1", "x", "", "1}", ","], &[0]);
        let mut s = JsonState::new();
        let allowed = |s: &JsonState| (0..10).filter(|&i| s.allows(&table, i)).collect::<Vec<_>>();
        assert_eq!(allowed(&s), [1]);
        assert!(s.advance(&table, 1));
        assert_eq!(allowed(&s), [2, 3]);
        assert!(s.advance(&table, 3));
        assert_eq!(allowed(&s), [4]);
        assert!(s.advance(&table, 4));
        assert_eq!(allowed(&s), [1, 3, 5, 8]);
        assert!(s.advance(&table, 8));
        assert!(s.is_complete());
        assert_eq!(allowed(&s), [0]);
        let mut logits = vec![1.0; 12];
        s.mask(&table, &mut logits);
        assert_eq!(logits.iter().filter(|l| l.is_finite()).count(), 1);
        assert!(logits[0].is_finite());
    }
}
