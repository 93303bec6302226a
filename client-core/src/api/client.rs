//! The client of the local API, for the `petrel` CLI and for bots.
//!
//! ```text
//! ApiClient::discover(home) ── HOME/serve.json? ── no ─▶ None (no server)
//!        │ yes                  GET /api/v1/health ── no answer ─▶ None (stale file)
//!        ▼                      read token_file
//! ApiClient ── call(method, params) ── POST /api/v1/rpc (one HTTP/1.1 connection per call)
//!        └──── subscribe() ─────────── GET /api/v1 WebSocket ─▶ Subscription
//!                                      next_notification() / call() on the same socket
//! ```
//!
//! HTTP is spoken with hyper's low-level HTTP/1.1 connection: axum is built on hyper, so
//! it adds no crate to the tree, while a full client (reqwest, or hyper-util's pooling
//! client) would bring a pool, TLS options and more that a loopback call does not need.
//! WebSocket uses tokio-tungstenite, the generation that axum's server side uses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
use zeroize::Zeroizing;

use super::ApiError;
use super::auth::SUBPROTOCOL;
use super::rpc::{Incoming, Notification, RpcError, parse_incoming};
use super::server::{SERVE_FILE, ServeFile};

/// The largest answer the client reads (the server's own limit is on requests).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How long discovery waits for the health endpoint before taking the file as stale.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on a running `petrel serve`: its address and token.
pub struct ApiClient {
    addr: SocketAddr,
    token: Zeroizing<String>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// The server of the profile home `home`, if one is running: `None` when there is no
    /// `serve.json`, or when the server it names does not answer (a file left by a crash).
    pub async fn discover(home: &Path) -> Result<Option<ApiClient>, ApiError> {
        let path = home.join(SERVE_FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ApiError::File { path, source }),
        };
        let serve: ServeFile = serde_json::from_slice(&bytes).map_err(|e| ApiError::Discovery {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let addr = parse_url(&serve.url).ok_or_else(|| ApiError::Discovery {
            path: path.clone(),
            reason: format!("{:?} is not an http://IP:PORT address", serve.url),
        })?;
        let probe = ApiClient {
            addr,
            token: Zeroizing::new(String::new()),
            next_id: AtomicU64::new(1),
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, probe.healthy()).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return Ok(None),
        }
        let token = tokio::fs::read_to_string(&serve.token_file)
            .await
            .map_err(|source| ApiError::File {
                path: serve.token_file.clone(),
                source,
            })?;
        Ok(Some(ApiClient::new(addr, token.trim().to_owned())))
    }

    /// A client of the server at `addr` using `token` (when the address is known otherwise).
    pub fn new(addr: SocketAddr, token: String) -> ApiClient {
        ApiClient {
            addr,
            token: Zeroizing::new(token),
            next_id: AtomicU64::new(1),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the health endpoint answers `{"ok":true}`.
    pub async fn healthy(&self) -> bool {
        match self.http(Method::GET, "/api/v1/health", None).await {
            Ok((StatusCode::OK, body)) => {
                serde_json::from_slice::<Value>(&body).ok() == Some(json!({"ok": true}))
            }
            _ => false,
        }
    }

    /// One call over `POST /api/v1/rpc`: the result, or [`ApiError::Rpc`] with the error
    /// the server answered.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ApiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = request_frame(id, method, params);
        let (status, body) = self
            .http(Method::POST, "/api/v1/rpc", Some(request.to_string()))
            .await?;
        if status != StatusCode::OK {
            return Err(refusal(status, &body));
        }
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Protocol(format!("the answer is not JSON: {e}")))?;
        match parse_incoming(answer) {
            Some(Incoming::Response { id: got, outcome }) if got == json!(id) || got.is_null() => {
                outcome.map_err(ApiError::Rpc)
            }
            _ => Err(ApiError::Protocol(
                "the answer is not the JSON-RPC response to the call".into(),
            )),
        }
    }

    /// Opens a WebSocket to receive notifications (and make calls on the same socket).
    pub async fn subscribe(&self) -> Result<Subscription, ApiError> {
        let stream = self.connect().await?;
        let mut request = format!("ws://{}/api/v1", self.addr)
            .into_client_request()
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, self.bearer()?);
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(SUBPROTOCOL),
        );
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_RESPONSE_BYTES))
            .max_frame_size(Some(MAX_RESPONSE_BYTES));
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => {
                        let body = response.body().clone().unwrap_or_default();
                        refusal(response.status(), &body)
                    }
                    other => ApiError::WebSocket(Box::new(other)),
                })?;
        Ok(Subscription {
            socket,
            queued: VecDeque::new(),
            next_id: 1,
        })
    }

    fn bearer(&self) -> Result<header::HeaderValue, ApiError> {
        header::HeaderValue::from_str(&format!("Bearer {}", self.token.as_str()))
            .map_err(|_| ApiError::Protocol("the token is not a valid header value".into()))
    }

    async fn connect(&self) -> Result<TcpStream, ApiError> {
        TcpStream::connect(self.addr)
            .await
            .map_err(|source| ApiError::Connect {
                addr: self.addr,
                source,
            })
    }

    /// One HTTP/1.1 exchange on a new connection: status and body.
    async fn http(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let transport = |e: hyper::Error| ApiError::Transport(Box::new(e));
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(transport)?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if !self.token.is_empty() {
            request = request.header(header::AUTHORIZATION, self.bearer()?);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(transport)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(ApiError::Transport)?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok((status, body))
    }
}

/// A WebSocket to the server: notifications as they come, and calls answered on it.
pub struct Subscription {
    socket: WebSocketStream<TcpStream>,
    queued: VecDeque<Notification>,
    next_id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queued", &self.queued.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next notification; `None` once the socket is closed (or broken).
    pub async fn next_notification(&mut self) -> Option<Notification> {
        if let Some(queued) = self.queued.pop_front() {
            return Some(queued);
        }
        loop {
            match self.read().await.ok()? {
                Incoming::Notification(notification) => return Some(notification),
                Incoming::Response { .. } => continue, // no call is waiting for it
            }
        }
    }

    /// One call on this socket; notifications that arrive meanwhile are kept for
    /// [`Subscription::next_notification`].
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ApiError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = request_frame(id, method, params).to_string();
        self.socket
            .send(tungstenite::Message::Text(text.into()))
            .await
            .map_err(|e| ApiError::WebSocket(Box::new(e)))?;
        loop {
            match self.read().await? {
                Incoming::Notification(notification) => self.queued.push_back(notification),
                Incoming::Response { id: got, outcome } if got == json!(id) || got.is_null() => {
                    return outcome.map_err(ApiError::Rpc);
                }
                Incoming::Response { .. } => continue,
            }
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) -> Result<(), ApiError> {
        self.socket
            .close(None)
            .await
            .map_err(|e| ApiError::WebSocket(Box::new(e)))
    }

    /// The next JSON-RPC message from the server; [`ApiError::Closed`] when the socket ends.
    async fn read(&mut self) -> Result<Incoming, ApiError> {
        loop {
            let message = match self.socket.next().await {
                None => return Err(ApiError::Closed),
                Some(Err(e)) => return Err(ApiError::WebSocket(Box::new(e))),
                Some(Ok(message)) => message,
            };
            match message {
                tungstenite::Message::Text(text) => {
                    let value: Value = serde_json::from_str(text.as_str()).map_err(|e| {
                        ApiError::Protocol(format!("a frame from the server is not JSON: {e}"))
                    })?;
                    if let Some(incoming) = parse_incoming(value) {
                        return Ok(incoming);
                    }
                }
                tungstenite::Message::Close(_) => return Err(ApiError::Closed),
                _ => {}
            }
        }
    }
}

fn request_frame(id: u64, method: &str, params: Value) -> Value {
    match params {
        Value::Null => json!({"jsonrpc": "2.0", "id": id, "method": method}),
        params => json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    }
}

/// An HTTP refusal (401/403/413 with `{"error":{…}}`) as an error.
fn refusal(status: StatusCode, body: &[u8]) -> ApiError {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| serde_json::from_value::<RpcError>(v.get_mut("error")?.take()).ok());
    match error {
        Some(error) => ApiError::Refused {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        },
        None => ApiError::Refused {
            status: status.as_u16(),
            code: 0,
            message: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

/// `http://IP:PORT` → the socket address.
fn parse_url(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}
