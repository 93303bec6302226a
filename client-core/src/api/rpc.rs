//! JSON-RPC 2.0 framing: what the server does with the bytes of one request.
//!
//! ```text
//! bytes ──parse──▶ JSON ──┬─ object ──▶ one call      ──▶ response | nothing (notification)
//!   │ not JSON            ├─ array  ──▶ ≤ MAX_BATCH calls, in order ──▶ array | nothing
//!   ▼                     └─ other  ──▶ -32600
//! -32700 (id null)
//! ```
//!
//! Each call is checked strictly (`"jsonrpc":"2.0"`, a string `method`, `params` absent or
//! an object or array, `id` absent or a string, number or null, no other members) before
//! the [`Handler`] sees it; a call that fails the check is answered with -32600 and the
//! `id` if one could be read. A call without `id` is a notification: it runs, but nothing
//! is answered; a request or batch of notifications only has no answer at all (HTTP 204).
//! Calls of a batch run one after the other in the order given, so that a batch
//! "send, then list" sees its own send.
//!
//! The [`Handler`] is the engine's side of the contract: it gets the method name and the
//! `params` and returns a result or an [`RpcError`], which is passed through unchanged.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::errors;

/// The most calls one batch may hold; a longer batch is answered with one -32600 error.
pub const MAX_BATCH: usize = 100;

/// The method name of the notification a subscriber gets in place of the ones it was too
/// slow to take; its params are `{"missed": N}`.
pub const LAGGED_EVENT: &str = "event.lagged";

/// The engine's side of the API: one JSON-RPC call in, one result or error out.
///
/// Object safe, so the server holds an `Arc<dyn Handler>`; the returned future owns what
/// it needs (`'static`), so the server may run it on any task.
pub trait Handler: Send + Sync + 'static {
    /// One JSON-RPC call; params is the request's `params` (Value::Null when absent).
    fn call(&self, method: String, params: Value) -> BoxFuture<'static, Result<Value, RpcError>>;
}

/// An event pushed to every WebSocket subscriber as a JSON-RPC notification
/// `{"jsonrpc":"2.0","method":…,"params":…}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The event's name, such as `message.received`.
    pub method: String,
    /// The event's data.
    pub params: Value,
}

/// A JSON-RPC error object: a code from [`errors`], a message for a person, optional data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (error {code})")]
pub struct RpcError {
    /// The error code; see [`errors`] for the stable ones.
    pub code: i64,
    /// What went wrong, written to be shown as it is.
    pub message: String,
    /// Anything a program may want besides the code (omitted when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with this code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// -32700: the request is not JSON.
    pub fn parse_error(detail: impl std::fmt::Display) -> RpcError {
        RpcError::new(
            errors::PARSE_ERROR,
            format!("the request is not valid JSON: {detail}"),
        )
    }

    /// -32600: the JSON is not a valid JSON-RPC 2.0 request.
    pub fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(errors::INVALID_REQUEST, message)
    }

    /// -32601: the handler knows no method of this name.
    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(
            errors::METHOD_NOT_FOUND,
            format!("there is no method {method:?}"),
        )
    }

    /// -32602: the method's params are not what it takes.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(errors::INVALID_PARAMS, message)
    }

    /// -32603: the server failed while handling the call.
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(errors::INTERNAL_ERROR, message)
    }
}

/// One request of a batch, once checked.
enum Call {
    /// A well-formed call; `id` is `None` for a notification.
    Valid {
        id: Option<Value>,
        method: String,
        params: Value,
    },
    /// Not a valid request: answered with this error and `id` (null if unreadable).
    Invalid { id: Value, error: RpcError },
}

/// Handles the body of one request (HTTP POST or WebSocket text message): the answer to
/// send, or `None` when there is nothing to answer (notifications only).
pub(crate) async fn dispatch(handler: &dyn Handler, body: &[u8]) -> Option<Value> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return Some(error_response(Value::Null, RpcError::parse_error(e))),
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Some(error_response(
                    Value::Null,
                    RpcError::invalid_request("an empty batch: send at least one call"),
                ));
            }
            if items.len() > MAX_BATCH {
                return Some(error_response(
                    Value::Null,
                    RpcError::invalid_request(format!(
                        "a batch of {} calls: at most {MAX_BATCH} are taken in one batch",
                        items.len()
                    )),
                ));
            }
            let mut answers = Vec::new();
            for item in items {
                if let Some(answer) = run(handler, check(item)).await {
                    answers.push(answer);
                }
            }
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        other => run(handler, check(other)).await,
    }
}

/// Runs one checked call: its response, or `None` for a notification.
async fn run(handler: &dyn Handler, call: Call) -> Option<Value> {
    match call {
        Call::Invalid { id, error } => Some(error_response(id, error)),
        Call::Valid { id, method, params } => {
            let outcome = handler.call(method, params).await;
            let id = id?;
            Some(match outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err(error) => error_response(id, error),
            })
        }
    }
}

/// Checks one request object against JSON-RPC 2.0.
fn check(value: Value) -> Call {
    let Value::Object(mut object) = value else {
        return invalid(Value::Null, "a JSON-RPC request must be a JSON object");
    };
    // The id first, so that the other errors can name it.
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => return invalid(Value::Null, "\"id\" must be a string, a number or null"),
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    match object.remove("jsonrpc") {
        Some(Value::String(version)) if version == "2.0" => {}
        _ => return invalid(answer_id, "\"jsonrpc\" must be \"2.0\""),
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return invalid(answer_id, "\"method\" must be a string"),
        None => return invalid(answer_id, "the request has no \"method\""),
    };
    let params = match object.remove("params") {
        None => Value::Null,
        Some(params @ (Value::Object(_) | Value::Array(_))) => params,
        Some(_) => {
            return invalid(
                answer_id,
                "\"params\" must be an object or an array (or be left out)",
            );
        }
    };
    if let Some(member) = object.keys().next() {
        return invalid(
            answer_id,
            format!(
                "unknown member {member:?}: a request has only \"jsonrpc\", \"method\", \"params\" and \"id\""
            ),
        );
    }
    Call::Valid { id, method, params }
}

fn invalid(id: Value, message: impl Into<String>) -> Call {
    Call::Invalid {
        id,
        error: RpcError::invalid_request(message),
    }
}

/// `{"jsonrpc":"2.0","id":…,"error":{…}}`.
pub(crate) fn error_response(id: Value, error: RpcError) -> Value {
    let mut object = Map::new();
    object.insert("jsonrpc".into(), Value::from("2.0"));
    object.insert("id".into(), id);
    object.insert(
        "error".into(),
        serde_json::to_value(error).unwrap_or(Value::Null),
    );
    Value::Object(object)
}

/// `{"jsonrpc":"2.0","method":…,"params":…}`: a notification as sent to subscribers.
pub(crate) fn notification_frame(method: &str, params: &Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// What a client reads in one message from the server.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A notification (no `id`).
    Notification(Notification),
    /// The answer to the call with this `id` (null when the server could not read one).
    Response {
        id: Value,
        outcome: Result<Value, RpcError>,
    },
}

/// Reads one message from the server: a notification or a single response.
pub(crate) fn parse_incoming(value: Value) -> Option<Incoming> {
    let Value::Object(mut object) = value else {
        return None;
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    if let Some(Value::String(method)) = object.remove("method") {
        if object.contains_key("id") {
            return None; // the server sends no requests
        }
        let params = object.remove("params").unwrap_or(Value::Null);
        return Some(Incoming::Notification(Notification { method, params }));
    }
    let id = object.remove("id")?;
    let outcome = match (object.remove("result"), object.remove("error")) {
        (Some(result), None) => Ok(result),
        (None, Some(error)) => Err(serde_json::from_value(error).ok()?),
        _ => return None,
    };
    Some(Incoming::Response { id, outcome })
}
