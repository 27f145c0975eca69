//! Structured outputs: a token mask that keeps generated text inside a
//! grammar (a JSON object, a JSON schema, or a Lark grammar), computed by
//! the `llguidance` library, the engine behind llama.cpp's and vLLM's
//! grammar support.
//!
//! # Design
//!
//! [`ConstraintEnv`] is built once per model: every token's bytes in a
//! token trie, with control and user-defined tokens (`<|im_end|>`,
//! `<tool_call>`, `<think>`) spelled behind llguidance's special-token
//! marker byte so that no grammar *text* can match them, only a grammar that
//! names them (`<[id]>`). The end-of-generation ids are the trie's EOS set:
//! the mask allows them exactly when the grammar is complete.
//!
//! [`ConstraintEnv::compile`] turns a [`Grammar`] into a [`Constraint`], or
//! a [`ConstraintError`] that says what is wrong with the grammar (the
//! server answers 400 with it). Compiling happens where the request is
//! prepared, never on the engine thread; llguidance bounds the work of each
//! compile and of each mask ([`llguidance::api::ParserLimits`]), so one
//! request's grammar cannot stall the others.
//!
//! A [`Constraint`] goes with its request to the engine. Per token:
//! [`Constraint::prepare_mask`] (the expensive part: the engine runs it on
//! another thread while the batch's forward pass runs), [`Constraint::apply`]
//! to the logits before sampling, then [`Constraint::commit`] of the drawn
//! token (cheap).
//!
//! A constraint may wait for a *trigger* token before it applies (lazy
//! grammars, as llama.cpp's grammar triggers): strict tool calls under
//! `tool_choice: "auto"` leave the text free until the model opens a call
//! with its tool-call token, constrain the call, and free the text again
//! after it.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::text::tokenizer::{TokenKind, Tokenizer};

/// Why a grammar cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    #[error("the vocabulary cannot drive a grammar: {0}")]
    Vocabulary(String),
    #[error("{0}")]
    Grammar(String),
}

/// What generated text must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON object of any shape (OpenAI's `{"type": "json_object"}`).
    JsonObject,
    /// A JSON value that matches this schema (`{"type": "json_schema"}`).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax (the tool-call formats).
    Lark(String),
}

impl Grammar {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"})),
            Grammar::JsonSchema(s) => TopLevelGrammar::from_json_schema(s.clone()),
            Grammar::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}

/// The model's vocabulary as llguidance sees it, built once per model.
pub struct ConstraintEnv {
    factory: ParserFactory,
}

impl std::fmt::Debug for ConstraintEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintEnv").field("vocab", &self.factory.tok_env().tok_trie().vocab_size()).finish()
    }
}

impl ConstraintEnv {
    /// The token trie of `tok` (tens of milliseconds for a 150k vocabulary).
    pub fn new(tok: &Tokenizer) -> Result<ConstraintEnv, ConstraintError> {
        let eog = tok.eog_ids();
        let Some(&first_eog) = eog.first() else {
            return Err(ConstraintError::Vocabulary("it has no end-of-generation token".into()));
        };
        let words: Vec<Vec<u8>> = (0..tok.vocab_size() as u32).map(|id| trie_word(tok, id)).collect();
        let info = TokRxInfo::new(words.len() as u32, first_eog);
        // The trie builder asserts on malformed input; a vocabulary is not a
        // request, but a bad file must still give an error, not a panic.
        let built = std::panic::catch_unwind(|| {
            let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
            let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
            ParserFactory::new_simple(&env)
        });
        let mut factory = match built {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(ConstraintError::Vocabulary(e.to_string())),
            Err(_) => return Err(ConstraintError::Vocabulary("the token trie could not be built".into())),
        };
        factory.quiet();
        Ok(ConstraintEnv { factory })
    }

    /// Compile `grammar`, to apply from the first generated token on, or,
    /// with a `trigger`, from the token after each time the model writes the
    /// trigger token until the grammar is complete.
    pub fn compile(&self, grammar: &Grammar, trigger: Option<u32>) -> Result<Constraint, ConstraintError> {
        let parser =
            self.factory.create_parser(grammar.top_level()).map_err(|e| ConstraintError::Grammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Grammar(e));
        }
        let vocab = self.factory.tok_env().tok_trie().vocab_size();
        Ok(Constraint { matcher, trigger, active: trigger.is_none(), mask: None, vocab })
    }
}

/// The bytes the trie holds for token `id`: its text for ordinary and byte
/// tokens; the marker byte and its text for every other token that has text,
/// so grammar text never matches it; nothing for unused ids.
fn trie_word(tok: &Tokenizer, id: u32) -> Vec<u8> {
    match tok.token_kind(id) {
        Some(TokenKind::Normal | TokenKind::Byte) => tok.token_bytes(id),
        Some(TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown) => {
            let text = tok.token_bytes(id);
            if text.is_empty() {
                return text;
            }
            let mut w = Vec::with_capacity(text.len() + 1);
            w.push(TokTrie::SPECIAL_TOKEN_MARKER);
            w.extend_from_slice(&text);
            w
        }
        Some(TokenKind::Unused) | None => Vec::new(),
    }
}

/// What committing a token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Generation goes on.
    Continue,
    /// The grammar is complete and nothing but the end may follow: stop.
    Complete,
}

/// One request's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// Token that switches the grammar on (`None`: on from the start).
    trigger: Option<u32>,
    /// Whether the grammar applies to the next token.
    active: bool,
    /// Allowed tokens for the next draw, once computed.
    mask: Option<SimpleVob>,
    vocab: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("trigger", &self.trigger).field("active", &self.active).finish()
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            trigger: self.trigger,
            active: self.active,
            mask: self.mask.clone(),
            vocab: self.vocab,
        }
    }
}

impl Constraint {
    /// Whether the next draw is constrained (and so needs a mask).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Compute the mask for the next draw if it is needed and not computed
    /// yet. This is the costly step; it touches nothing but `self`.
    pub fn prepare_mask(&mut self) -> Result<(), ConstraintError> {
        if self.active && self.mask.is_none() {
            let m = self.matcher.compute_mask_or_eos().map_err(|e| ConstraintError::Grammar(e.to_string()))?;
            self.mask = Some(m);
        }
        Ok(())
    }

    /// Set every logit the grammar forbids to -inf (computing the mask now
    /// if [`Constraint::prepare_mask`] has not). Returns whether any token is
    /// left.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<bool, ConstraintError> {
        if !self.active {
            return Ok(true);
        }
        self.prepare_mask()?;
        let Some(mask) = &self.mask else { return Ok(true) };
        let mut any = false;
        for (id, l) in logits.iter_mut().enumerate() {
            if id < self.vocab && mask.is_allowed(id as u32) {
                any |= *l != f32::NEG_INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(any)
    }

    /// Advance past the drawn token `id`.
    pub fn commit(&mut self, id: u32) -> Result<Commit, ConstraintError> {
        self.mask = None;
        if !self.active {
            if Some(id) == self.trigger {
                self.active = true;
            }
            return Ok(Commit::Continue);
        }
        if self.matcher.is_stopped() {
            // Only the end could follow (it was allowed by the mask).
            return Ok(Commit::Complete);
        }
        self.matcher.consume_token(id).map_err(|e| ConstraintError::Grammar(e.to_string()))?;
        if !self.matcher.is_stopped() {
            return Ok(Commit::Continue);
        }
        match self.trigger {
            None => Ok(Commit::Complete),
            // A lazy grammar that is complete waits for its trigger again.
            Some(_) => {
                self.matcher.reset().map_err(|e| ConstraintError::Grammar(e.to_string()))?;
                self.active = false;
                Ok(Commit::Continue)
            }
        }
    }
}

/// How a grammar names a piece of fixed text: the token itself (`<[id]>`)
/// when the text is one control or user-defined token of the vocabulary
/// (which grammar text cannot match), else a quoted literal.
pub fn lark_literal(tok: &Tokenizer, text: &str) -> String {
    match tok.token_to_id(text) {
        Some(id) if matches!(tok.token_kind(id), Some(TokenKind::Control | TokenKind::UserDefined)) => {
            format!("<[{id}]>")
        }
        _ => serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()),
    }
}
