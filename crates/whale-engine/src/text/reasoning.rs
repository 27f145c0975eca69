//! Splitting a reasoning model's output into thinking and answer, as it
//! streams.
//!
//! DeepSeek-R1 (and its distills) write `<think> … </think>` before the
//! answer. Their newer templates pre-fill `<think>\n` at the end of the prompt,
//! so the output then has no opening tag and starts inside the thinking. The
//! parser takes text pieces of any size (a tag may arrive split across tokens)
//! and returns [`Segment`]s; text that might be the start of a tag is held
//! until it is decided. What it does, following the DeepSeek API's
//! `reasoning_content` / `content` split:
//! - the tags themselves belong to neither part;
//! - whitespace right after `<think>` and right after `</think>` is dropped
//!   (R1 writes `\n` and `\n\n` there), as is whitespace just before `</think>`;
//! - output with no tags at all (and a prompt that did not open thinking) is
//!   all answer.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// A piece of output, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Reasoning(String),
    Content(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace seen yet; an opening tag may still come.
    Start,
    Thinking,
    Answer,
}

pub struct ReasoningParser {
    state: State,
    /// Text not yet classified (a possible tag prefix, or pending whitespace).
    held: String,
    /// Drop leading whitespace of the next emitted text.
    skip_ws: bool,
}

/// Whether a rendered prompt leaves the model inside `<think>` (the template
/// pre-filled the opening tag).
pub fn prompt_opens_thinking(prompt: &str) -> bool {
    prompt.trim_end().ends_with(OPEN)
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_tag_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| s.len() >= n && s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

impl ReasoningParser {
    /// `in_thinking`: the prompt already opened `<think>` (see
    /// [`prompt_opens_thinking`]).
    pub fn new(in_thinking: bool) -> ReasoningParser {
        ReasoningParser {
            state: if in_thinking { State::Thinking } else { State::Start },
            held: String::new(),
            skip_ws: in_thinking,
        }
    }

    /// Whether the parser is currently inside the thinking part.
    pub fn in_thinking(&self) -> bool {
        self.state == State::Thinking
    }

    fn emit(&mut self, out: &mut Vec<Segment>, mut text: &str, reasoning: bool) {
        if self.skip_ws {
            text = text.trim_start();
            if text.is_empty() {
                return;
            }
            self.skip_ws = false;
        }
        if text.is_empty() {
            return;
        }
        match (out.last_mut(), reasoning) {
            (Some(Segment::Reasoning(s)), true) | (Some(Segment::Content(s)), false) => s.push_str(text),
            _ => out.push(if reasoning { Segment::Reasoning(text.into()) } else { Segment::Content(text.into()) }),
        }
    }

    /// Feed the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> Vec<Segment> {
        let mut out = Vec::new();
        self.held.push_str(piece);
        loop {
            match self.state {
                State::Start => {
                    let t = self.held.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Thinking;
                        self.skip_ws = true;
                        continue;
                    }
                    if !t.is_empty() && !OPEN.starts_with(t) {
                        // Not a thinking model's output: all answer from here.
                        self.state = State::Answer;
                        continue;
                    }
                    return out; // only whitespace or a prefix of "<think>" so far
                }
                State::Thinking => {
                    if let Some(i) = self.held.find(CLOSE) {
                        let before = self.held[..i].trim_end().to_string();
                        let after = self.held[i + CLOSE.len()..].to_string();
                        self.emit(&mut out, &before, true);
                        self.held = after;
                        self.state = State::Answer;
                        self.skip_ws = true;
                        continue;
                    }
                    // Hold a possible partial "</think>" and trailing whitespace
                    // (it is dropped if the closing tag follows).
                    let keep_tag = partial_tag_suffix(&self.held, CLOSE);
                    let body_end = self.held.len() - keep_tag;
                    let ws_start = self.held[..body_end].trim_end().len();
                    let text = self.held[..ws_start].to_string();
                    self.emit(&mut out, &text, true);
                    self.held.drain(..ws_start);
                    return out;
                }
                State::Answer => {
                    let text = std::mem::take(&mut self.held);
                    self.emit(&mut out, &text, false);
                    return out;
                }
            }
        }
    }

    /// End of output: classify whatever is still held.
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Thinking => self.emit(&mut out, held.trim_end(), true),
            State::Start | State::Answer => self.emit(&mut out, &held, false),
        }
        out
    }
}

/// Split a complete output at once.
pub fn split(text: &str, in_thinking: bool) -> (String, String) {
    let mut p = ReasoningParser::new(in_thinking);
    let mut segs = p.push(text);
    segs.extend(p.finish());
    let (mut r, mut c) = (String::new(), String::new());
    for s in segs {
        match s {
            Segment::Reasoning(t) => r.push_str(&t),
            Segment::Content(t) => c.push_str(&t),
        }
    }
    (r, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `text` in pieces of every size from 1 to 7 characters; the joined
    /// result must not depend on how the text was cut.
    fn all_cuts(text: &str, in_thinking: bool) -> (String, String) {
        let whole = split(text, in_thinking);
        let chars: Vec<char> = text.chars().collect();
        for size in 1..=7 {
            let mut p = ReasoningParser::new(in_thinking);
            let mut segs = Vec::new();
            for chunk in chars.chunks(size) {
                segs.extend(p.push(&chunk.iter().collect::<String>()));
            }
            segs.extend(p.finish());
            let (mut r, mut c) = (String::new(), String::new());
            for s in segs {
                match s {
                    Segment::Reasoning(t) => r.push_str(&t),
                    Segment::Content(t) => c.push_str(&t),
                }
            }
            assert_eq!((r, c), whole, "cut into pieces of {size}");
        }
        whole
    }

    #[test]
    fn explicit_tags() {
        let (r, c) = all_cuts("<think>\nLet me add: 2+2=4.\n</think>\n\nThe answer is 4.", false);
        assert_eq!(r, "Let me add: 2+2=4.");
        assert_eq!(c, "The answer is 4.");
    }

    #[test]
    fn template_prefilled_think() {
        let (r, c) = all_cuts("Hmm, 2+2 is 4.\n</think>\n\n**4**", true);
        assert_eq!(r, "Hmm, 2+2 is 4.");
        assert_eq!(c, "**4**");
    }

    #[test]
    fn no_tags_is_all_answer() {
        assert_eq!(
            all_cuts("Paris is the capital. <b>bold</b>", false),
            (String::new(), "Paris is the capital. <b>bold</b>".into())
        );
        // A look-alike of the tag at the start is not a tag.
        assert_eq!(all_cuts("<thinking> is not a tag", false), (String::new(), "<thinking> is not a tag".into()));
    }

    #[test]
    fn unfinished_thinking_stays_reasoning() {
        assert_eq!(all_cuts("<think>still going </th", false), ("still going </th".into(), String::new()));
    }

    #[test]
    fn tags_inside_answer_are_text() {
        let (r, c) = all_cuts("<think>a</think>b <think>c</think>", false);
        assert_eq!((r.as_str(), c.as_str()), ("a", "b <think>c</think>"));
    }

    #[test]
    fn multibyte_text_split_anywhere() {
        let (r, c) = all_cuts("<think>思考中…🤔</think>答え：東京", false);
        assert_eq!((r.as_str(), c.as_str()), ("思考中…🤔", "答え：東京"));
    }

    #[test]
    fn detects_prefilled_prompt() {
        assert!(prompt_opens_thinking("<｜User｜>hi<｜Assistant｜><think>\n"));
        assert!(!prompt_opens_thinking("<｜User｜>hi<｜Assistant｜>"));
    }
}
