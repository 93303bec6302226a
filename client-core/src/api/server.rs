//! The server of the local API: binding, discovery files, routes, WebSocket sessions.
//!
//! ```text
//! ApiServer::bind ── loopback unless allow_remote ── TCP listener (port 0 allowed)
//!       │            new 32-byte token ─▶ HOME/api-token (0600)
//!       │            {"url","pid","token_file"} ─▶ HOME/serve.json (0600)
//!       ▼
//! ApiServer::serve(handler, notifications, shutdown)
//!       ├─ GET  /api/v1/health  {"ok":true}, no token (discovery)
//!       ├─ POST /api/v1/rpc     Gate ─▶ body ≤ max_request_bytes (else 413) ─▶ rpc::dispatch
//!       └─ GET  /api/v1         Gate ─▶ WebSocket: text frames ─▶ rpc::dispatch ─▶ same socket
//!                                       broadcast Notification ─▶ JSON-RPC notification
//!       shutdown resolves ─▶ HTTP drains, sockets close (1001) ─▶ both files removed
//! ```
//!
//! A WebSocket session is three parts joined by one channel to the socket's writer: the
//! reader (answers calls in order), the forwarder (turns broadcast notifications into
//! frames; a subscriber that falls behind gets one `event.lagged` with the number missed)
//! and the writer. The files are removed by a guard, so they go also when `serve` fails
//! or the server is dropped unserved.

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt as _, StreamExt as _};
use rand_core::CryptoRng;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use zeroize::Zeroizing;

use super::auth::{Gate, SUBPROTOCOL};
use super::rpc::{self, Handler, LAGGED_EVENT, Notification, RpcError};
use super::{ApiError, errors};

/// The default limit on one request body or WebSocket message: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_048_576;

/// The name of the token file in the profile home.
pub const TOKEN_FILE: &str = "api-token";

/// The name of the discovery file in the profile home.
pub const SERVE_FILE: &str = "serve.json";

/// Frames queued for one WebSocket before the forwarder waits (and, if the wait lasts,
/// the broadcast channel reports the subscriber as lagging).
const OUTGOING_QUEUE: usize = 64;

/// Where and how the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The address to listen on; loopback unless `allow_remote`.
    pub listen: SocketAddr,
    /// Whether a non-loopback `listen` is accepted (`--allow-remote`).
    pub allow_remote: bool,
    /// The largest request body or WebSocket message accepted, in bytes.
    pub max_request_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            allow_remote: false,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// The discovery file's content, `HOME/serve.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ServeFile {
    pub(crate) url: String,
    pub(crate) pid: u32,
    pub(crate) token_file: PathBuf,
}

/// A bound API server that has written its token and discovery file; [`ApiServer::serve`]
/// runs it.
#[derive(Debug)]
pub struct ApiServer {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    config: ApiConfig,
    gate: Arc<Gate>,
    files: DiscoveryFiles,
}

impl ApiServer {
    /// Binds `config.listen`, writes a new token to `home/api-token` and the discovery
    /// file `home/serve.json` (both mode 0600, replacing older ones).
    pub fn bind<R: CryptoRng + ?Sized>(
        config: ApiConfig,
        home: &Path,
        rng: &mut R,
    ) -> Result<ApiServer, ApiError> {
        if !config.listen.ip().is_loopback() && !config.allow_remote {
            return Err(ApiError::NotLoopback {
                addr: config.listen,
            });
        }
        let bind_error = |source| ApiError::Bind {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        let token = Zeroizing::new(data_encoding::HEXLOWER.encode(secret.as_ref()));

        let file_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ApiError::File { path, source }
        };
        let token_file = home.join(TOKEN_FILE);
        let token_file = std::path::absolute(&token_file).map_err(file_error(&token_file))?;
        let serve_file = home.join(SERVE_FILE);
        // The guard exists before the first write, so a failure leaves nothing behind.
        let files = DiscoveryFiles {
            serve_file: serve_file.clone(),
            token_file: token_file.clone(),
        };
        write_private(&token_file, token.as_bytes()).map_err(file_error(&token_file))?;
        let serve = ServeFile {
            url: format!("http://{}", reachable(local_addr)),
            pid: std::process::id(),
            token_file: token_file.clone(),
        };
        let serve_json = serde_json::to_vec(&serve).map_err(|e| ApiError::File {
            path: serve_file.clone(),
            source: std::io::Error::other(e),
        })?;
        write_private(&serve_file, &serve_json).map_err(file_error(&serve_file))?;

        let gate = Arc::new(Gate::new(token, local_addr, config.allow_remote));
        Ok(ApiServer {
            listener,
            local_addr,
            config,
            gate,
            files,
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The absolute path of the token file.
    pub fn token_file(&self) -> &Path {
        &self.files.token_file
    }

    /// Serves until `shutdown` resolves, then closes every WebSocket, lets HTTP requests
    /// in flight finish and removes `serve.json` and the token file.
    pub async fn serve(
        self,
        handler: Arc<dyn Handler>,
        notifications: broadcast::Sender<Notification>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let ApiServer {
            listener,
            local_addr,
            config,
            gate,
            files,
        } = self;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| ApiError::Bind {
                addr: local_addr,
                source,
            })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = Arc::new(Shared {
            handler,
            notifications,
            gate,
            max_request_bytes: config.max_request_bytes,
            stop: stop_rx,
        });
        let app = Router::new()
            .route("/api/v1/health", get(health))
            .route("/api/v1/rpc", post(rpc_post))
            .route("/api/v1", get(websocket))
            .with_state(state);
        let signal = async move {
            shutdown.await;
            // Upgraded sockets are not part of the graceful shutdown: they are told here.
            let _ = stop_tx.send(true);
        };
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await;
        drop(files);
        served.map_err(ApiError::Serve)
    }
}

/// Removes the discovery file and the token when dropped.
#[derive(Debug)]
struct DiscoveryFiles {
    serve_file: PathBuf,
    token_file: PathBuf,
}

impl Drop for DiscoveryFiles {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.serve_file);
        let _ = fs::remove_file(&self.token_file);
    }
}

/// Writes `bytes` to a new file at `path` readable by its owner only. An older file is
/// removed first rather than truncated: its mode may be wider, and it may be a link.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The mode given at creation is narrowed by the umask; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The address a local client dials: the listen address, or loopback for an unspecified one.
fn reachable(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// What every route shares.
struct Shared {
    handler: Arc<dyn Handler>,
    notifications: broadcast::Sender<Notification>,
    gate: Arc<Gate>,
    max_request_bytes: usize,
    stop: watch::Receiver<bool>,
}

async fn health() -> Response {
    axum::Json(json!({"ok": true})).into_response()
}

fn too_large(limit: usize) -> Response {
    let body = json!({"error": {
        "code": errors::TOO_LARGE,
        "message": format!("the request is larger than the {limit} bytes the API accepts"),
    }});
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
}

async fn rpc_post(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(refusal) = shared.gate.check(&headers, false) {
        return refusal.into_response();
    }
    let limit = shared.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                return too_large(limit);
            }
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {inner}"),
            )
                .into_response();
        }
    };
    match rpc::dispatch(shared.handler.as_ref(), &bytes).await {
        Some(answer) => axum::Json(answer).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refusal) = shared.gate.check(&headers, true) {
        return refusal.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = shared.max_request_bytes;
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session(shared, socket))
}

/// One WebSocket: reader (this task), forwarder and writer.
async fn session(shared: Arc<Shared>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<Message>(OUTGOING_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let last = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // Subscribed before the first call is read, so a client that has had an answer knows
    // that every later notification reaches it.
    let forwarder = tokio::spawn(forward(shared.notifications.subscribe(), out.clone()));
    let limit = shared.max_request_bytes;
    let mut stop = shared.stop.clone();
    loop {
        let message = tokio::select! {
            stopped = stop.wait_for(|stopped| *stopped) => {
                drop(stopped);
                None
            }
            message = stream.next() => Some(message),
        };
        let Some(message) = message else {
            let _ = out.send(close(1001, "petrel serve is shutting down")).await;
            break;
        };
        let text = match message {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) if text.len() > limit => {
                refuse_large(&out, limit).await;
                break;
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let error = RpcError::invalid_request(
                    "binary frames are not JSON-RPC: send each request as a text frame",
                );
                let _ = out
                    .send(frame(&rpc::error_response(Value::Null, error)))
                    .await;
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) => {
                if is_capacity(e) {
                    refuse_large(&out, limit).await;
                }
                break;
            }
        };
        if let Some(answer) = rpc::dispatch(shared.handler.as_ref(), text.as_bytes()).await
            && out.send(frame(&answer)).await.is_err()
        {
            break;
        }
    }
    forwarder.abort();
    drop(out);
    let _ = writer.await;
}

/// Broadcast notifications → frames, until the socket or the channel goes.
async fn forward(mut events: broadcast::Receiver<Notification>, out: mpsc::Sender<Message>) {
    loop {
        let notification = match events.recv().await {
            Ok(event) => rpc::notification_frame(&event.method, &event.params),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                rpc::notification_frame(LAGGED_EVENT, &json!({"missed": missed}))
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if out.send(frame(&notification)).await.is_err() {
            break;
        }
    }
}

/// Sends the 1005 error and closes with 1009 (message too big).
async fn refuse_large(out: &mpsc::Sender<Message>, limit: usize) {
    let error = RpcError::new(
        errors::TOO_LARGE,
        format!("the message is larger than the {limit} bytes the API accepts"),
    );
    let _ = out
        .send(frame(&rpc::error_response(Value::Null, error)))
        .await;
    let _ = out.send(close(1009, "message too large")).await;
}

/// Whether a socket error is tungstenite's "message or frame over the limit".
fn is_capacity(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite;
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

fn frame(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
