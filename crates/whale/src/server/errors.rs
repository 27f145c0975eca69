//! Every error the server answers with, in the OpenAI/DeepSeek shape
//! `{"error": {"message", "type", "param", "code"}}`, and the one mapping from
//! error to HTTP status.
//!
//! [`RequestError`] has one variant per validation rule, each with its own
//! message; they are all 400s. [`ApiError`] adds what is not the request
//! body's fault (authentication, routing, size, load, the engine).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use whale_engine::serving::engine::SubmitError;

/// A request body that breaks a rule. Always a 400.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    Body(String),
    /// A field of the wrong shape, named by its path (`messages[1].content`).
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    #[error("logit_bias: {0}")]
    LogitBias(String),
    #[error("messages must hold at least one message")]
    EmptyMessages,
    #[error("messages[{index}]: unknown role {role:?}; the roles are system, user, assistant and tool")]
    UnknownRole { index: usize, role: String },
    #[error("messages[{index}]: {message}")]
    BadMessage { index: usize, message: String },
    #[error("messages[{index}]: only the last message may have \"prefix\": true")]
    PrefixNotLast { index: usize },
    #[error("messages[{index}]: \"prefix\": true is only for an assistant message")]
    PrefixNotAssistant { index: usize },
    #[error("temperature must be between 0 and 2, got {0}")]
    Temperature(f64),
    #[error("top_p must be greater than 0 and at most 1, got {0}")]
    TopP(f64),
    #[error("{name} must be between -2 and 2, got {value}")]
    Penalty { name: &'static str, value: f64 },
    #[error("max_tokens must be at least 1, got {0}")]
    MaxTokensZero(i64),
    #[error("max_tokens ({max_tokens}) is beyond the context of {ctx} tokens")]
    MaxTokensBeyondContext { max_tokens: usize, ctx: usize },
    #[error("the prompt is too long: {prompt} tokens, and the context holds {ctx} (at least one token must be left to generate)")]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error(
        "the prompt ({prompt} tokens) and max_tokens ({max_tokens}) exceed the context of {ctx} tokens; \
         lower max_tokens to at most {}", ctx.saturating_sub(*prompt)
    )]
    ContextExceeded { prompt: usize, max_tokens: usize, ctx: usize },
    #[error("stop holds {0} strings; at most {max} are allowed", max = super::request::MAX_STOPS)]
    TooManyStops(usize),
    #[error("stop strings must not be empty")]
    EmptyStop,
    #[error("a stop string is {0} bytes long; at most {max} are allowed", max = super::request::MAX_STOP_BYTES)]
    StopTooLong(usize),
    #[error("{what} holds {found} entries; at most {max} are allowed")]
    TooMany { what: &'static str, found: usize, max: usize },
    #[error("the schema is {0} bytes of JSON; at most {max} are allowed", max = super::request::MAX_SCHEMA_BYTES)]
    SchemaTooLarge(usize),
    #[error("n must be 1 (whale returns one choice), got {0}")]
    UnsupportedN(i64),
    #[error("top_logprobs must be between 0 and {max}, got {0}", max = whale_engine::serving::engine::MAX_TOP_LOGPROBS)]
    TopLogprobs(i64),
    #[error("top_logprobs needs \"logprobs\": true")]
    TopLogprobsWithoutLogprobs,
    #[error("logprobs must be between 0 and {max}, got {0}", max = whale_engine::serving::engine::MAX_TOP_LOGPROBS)]
    CompletionLogprobs(i64),
    #[error("response_format type {0:?} is not supported; use \"text\", \"json_object\" or \"json_schema\"")]
    ResponseFormat(String),
    #[error(
        "response_format type \"json_schema\" needs a \"json_schema\" object: {{\"name\": ..., \"schema\": {{...}}}}"
    )]
    NoJsonSchema,
    #[error("{param}: the schema or grammar cannot be used: {message}")]
    Grammar { param: &'static str, message: String },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the model has no chat template: use /completions with a raw prompt, or start the server with --chat-template-file")]
    NoChatTemplate,
    /// An image the request sent that cannot be read, or one too many.
    #[error("messages: {0}")]
    Image(String),
    #[error("messages: this model does not read images: serve a Janus-Pro model to send image_url parts")]
    NoVision,
    #[error("the chat template rejected the messages: {0}")]
    Template(String),
    #[error("this model has no fill-in-the-middle tokens, so \"suffix\" is not supported")]
    NoFim,
    #[error("this model's chat template has no tool-call format, so \"tools\" are not supported")]
    NoToolFormat,
    #[error("tools[{index}]: {message}")]
    BadTool { index: usize, message: String },
    #[error("tool_choice: {0}")]
    ToolChoice(String),
    #[error("echo is not supported")]
    Echo,
    #[error("prompt: {0}")]
    BadPrompt(String),
    #[error("the prompt is empty: give some text")]
    EmptyPrompt,
    #[error("prompt token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("the text could not be tokenized: {0}")]
    Tokenize(String),
}

impl RequestError {
    /// The request field the error is about.
    pub fn param(&self) -> Option<&str> {
        use RequestError::*;
        Some(match self {
            Body(_) | Tokenize(_) => return None,
            // The top-level field the path starts with.
            Field { path, .. } => return Some(top_field(path)),
            LogitBias(_) => "logit_bias",
            EmptyMessages
            | UnknownRole { .. }
            | BadMessage { .. }
            | PrefixNotLast { .. }
            | PrefixNotAssistant { .. } => "messages",
            Temperature(_) => "temperature",
            TopP(_) => "top_p",
            Penalty { name, .. } => name,
            MaxTokensZero(_) | MaxTokensBeyondContext { .. } | ContextExceeded { .. } => "max_tokens",
            PromptTooLong { .. } | EmptyPrompt | BadPrompt(_) | TokenOutOfRange { .. } => "prompt",
            TooManyStops(_) | EmptyStop | StopTooLong(_) => "stop",
            TooMany { what, .. } => what,
            SchemaTooLarge(_) => "response_format",
            UnsupportedN(_) => "n",
            TopLogprobs(_) | TopLogprobsWithoutLogprobs => "top_logprobs",
            CompletionLogprobs(_) => "logprobs",
            ResponseFormat(_) | NoJsonSchema => "response_format",
            Grammar { param, .. } => param,
            Unsupported(_) => return None,
            NoChatTemplate | Template(_) | Image(_) | NoVision => "messages",
            NoFim => "suffix",
            NoToolFormat | BadTool { .. } => "tools",
            ToolChoice(_) => "tool_choice",
            Echo => "echo",
        })
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use RequestError::*;
        match self {
            Body(_) => "invalid_json",
            Field { .. } => "invalid_type",
            PromptTooLong { .. } | ContextExceeded { .. } | MaxTokensBeyondContext { .. } => "context_length_exceeded",
            NoChatTemplate | NoFim | NoToolFormat | Echo | UnsupportedN(_) | ResponseFormat(_) | Unsupported(_)
            | NoVision => "unsupported_value",
            Grammar { .. } => "invalid_schema",
            _ => "invalid_value",
        }
    }
}

/// `messages` of `messages[1].content`.
fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// Everything the server can answer with instead of a completion.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("authentication failed: send a valid API key as \"Authorization: Bearer KEY\"")]
    Unauthorized,
    #[error("no route for {method} {path}; see GET /models, POST /chat/completions, POST /completions")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the model {0:?} does not exist here; GET /models lists the served model")]
    ModelNotFound(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the model failed on this request: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Request(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code, param) = match self {
            ApiError::Request(e) => ("invalid_request_error", e.code(), e.param()),
            ApiError::Unauthorized => ("authentication_error", "invalid_api_key", None),
            ApiError::NotFound { .. } => ("invalid_request_error", "not_found", None),
            ApiError::MethodNotAllowed { .. } => ("invalid_request_error", "method_not_allowed", None),
            ApiError::ModelNotFound(_) => ("invalid_request_error", "model_not_found", Some("model")),
            ApiError::TooLarge(_) => ("invalid_request_error", "request_too_large", None),
            ApiError::BodyTimeout(_) => ("invalid_request_error", "request_timeout", None),
            ApiError::Busy(_) => ("rate_limit_error", "queue_full", None),
            ApiError::Unavailable(_) => ("server_error", "unavailable", None),
            ApiError::Internal(_) => ("server_error", "internal_error", None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::QueueFull { .. } => ApiError::Busy(e.to_string()),
            SubmitError::Stopped => ApiError::Unavailable(e.to_string()),
            SubmitError::EmptyPrompt => RequestError::EmptyPrompt.into(),
            SubmitError::NoTokens => RequestError::MaxTokensZero(0).into(),
            SubmitError::TooLong { prompt, max_tokens, ctx } => {
                RequestError::ContextExceeded { prompt, max_tokens, ctx }.into()
            }
            SubmitError::TokenOutOfRange { id, vocab } => RequestError::TokenOutOfRange { id, vocab }.into(),
            SubmitError::TooManyLogprobs(n) => RequestError::TopLogprobs(n as i64).into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!("{self}");
        }
        (self.status(), axum::Json(self.body())).into_response()
    }
}
