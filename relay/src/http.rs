//! The relay's operations HTTP endpoint and its PaaS front door.
//!
//! Two servers share the code here; both take a bound listener and a shutdown future.
//!
//! * [`serve_http`] is the operations endpoint (`--http`, `127.0.0.1:8080` by default):
//!   `GET /health` answers `200 ok` while the relay's health check passes and `503`
//!   otherwise, `GET /metrics` answers the Prometheus text of [`Metrics`].
//! * [`serve_front_door`] exists because PaaS routers (Fly.io, Render, ...) forward exactly
//!   one HTTP port, `$PORT`, to an app, yet the relay needs two things on it: the libp2p
//!   WebSocket transport for clients and `/health` for the platform's health checks (plus
//!   `/metrics`). The front door owns `$PORT`, reads the first request head of each
//!   connection, answers `/health` and `/metrics` itself, and splices every other
//!   connection byte for byte, head included, to the relay's internal WebSocket listener
//!   on `127.0.0.1`. libp2p then performs the WebSocket upgrade, Noise and Yamux exactly as
//!   on a direct connection: the front door never parses or alters anything past the head,
//!   so it cannot weaken the transport's security.
//!
//! Each connection goes through the same steps:
//!
//! 1. wait for a connection slot (a semaphore; at capacity, new connections wait in the
//!    kernel's accept queue instead of costing memory);
//! 2. read the request head, bounded to [`MAX_HEAD_BYTES`] and [`HEAD_TIMEOUT`] in total,
//!    so a slow or endless head cannot hold a slot;
//! 3. decide with pure functions (`parse_head`, then routing) that do no I/O;
//! 4. write one response with `Connection: close` and close gracefully, or splice.
//!
//! Nothing here panics on input: malformed heads get `400`, oversized ones `431`, heads
//! that do not arrive in time `408`, and an unreachable backend `502`; then the connection
//! closes. Logs are at debug level and never contain a peer's address.

use crate::metrics::Metrics;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// The largest request head accepted, in bytes; a longer one is answered `431`.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The time a client has to send its whole request head; after it, `408`.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The most headers a request head may carry; more are answered `431`.
const MAX_HEADERS: usize = 64;

/// Concurrent connections on the operations endpoint. It answers two tiny resources and is
/// normally bound to loopback, so a small fixed cap is plenty and bounds its memory.
const MAX_OPS_CONNECTIONS: usize = 64;

/// The time allowed for writing one response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// After answering, the server sends FIN and then reads and discards what the client still
/// sends, for at most this long and [`LINGER_MAX_BYTES`]. Closing a socket with unread
/// input makes the kernel send RST, which can destroy the response before the client has
/// read it (a `POST` body, or the rest of an oversized head).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// The time allowed for connecting to the internal WebSocket listener.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Once one direction of a splice has ended cleanly, the other gets this long to finish
/// (the WebSocket close handshake) before both are dropped, so a peer that never closes
/// its half cannot hold a slot forever.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The most bytes a splice moves per read. The buffer is allocated only while data is
/// moving, so an idle spliced connection holds no buffer at all.
const SPLICE_CHUNK: usize = 16 * 1024;

/// After an accept error that is not about one connection (out of file descriptors, ...),
/// the accept loop pauses this long rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The relay's health check, as the HTTP servers take it: true while the relay can serve.
pub type HealthCheck = Arc<dyn Fn() -> bool + Send + Sync>;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /health` (`200 "ok\n"` while `health()` is true, `503` otherwise) and
/// `GET /metrics` (`text/plain; version=0.0.4`, or OpenMetrics when the scraper's `Accept`
/// asks for it) on `listener` until `shutdown` resolves. `HEAD` works like `GET` without a
/// body; another method on those paths gets `405`, any other path `404`.
///
/// When `shutdown` resolves the listener is closed at once; requests already being answered
/// finish on their own tasks (each is bounded by the head and write timeouts).
///
/// # Errors
///
/// Only if the listener is unusable from the start (its local address cannot be read).
/// Accept errors while running are logged and retried.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Metrics,
    health: HealthCheck,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    tracing::debug!(%local, "operations HTTP endpoint listening");
    let ops = Arc::new(Ops { metrics, health });
    let slots = Arc::new(Semaphore::new(MAX_OPS_CONNECTIONS));
    accept_loop(
        listener,
        slots,
        shutdown,
        "operations endpoint",
        move |stream| {
            let ops = Arc::clone(&ops);
            async move { answer_ops(stream, &ops).await }
        },
    )
    .await
}

/// The PaaS front door on `$PORT`. It reads the first request head of each connection
/// (bounded: [`MAX_HEAD_BYTES`], [`HEAD_TIMEOUT`]); `/health` and `/metrics` are answered
/// here exactly as [`serve_http`] answers them, and anything else (the libp2p WebSocket
/// upgrade) is spliced byte for byte, including the already-read head, to `ws_backend`,
/// the relay's internal WebSocket listener on `127.0.0.1`.
///
/// At most `max_connections` connections are handled at once (spliced ones included);
/// further ones wait in the listener's backlog. When `shutdown` resolves the listener is
/// closed at once and this returns; spliced connections keep running on their own tasks
/// until either side closes them, so the relay's own drain decides when sessions end and
/// the front door never cuts a frame in half.
///
/// # Errors
///
/// `InvalidInput` if `max_connections` is 0; otherwise only if the listener is unusable
/// from the start.
pub async fn serve_front_door(
    listener: TcpListener,
    ws_backend: SocketAddr,
    metrics: Metrics,
    health: HealthCheck,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    if max_connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the front door needs max_connections >= 1",
        ));
    }
    let local = listener.local_addr()?;
    tracing::debug!(%local, max_connections, "front door listening");
    let ops = Arc::new(Ops { metrics, health });
    let slots = Arc::new(Semaphore::new(max_connections));
    accept_loop(listener, slots, shutdown, "front door", move |stream| {
        let ops = Arc::clone(&ops);
        async move { front_door(stream, ws_backend, &ops).await }
    })
    .await
}

/// What the operations resources need.
struct Ops {
    metrics: Metrics,
    health: HealthCheck,
}

/// Accepts connections until `shutdown`, running `handle` on its own task for each one
/// while it holds one of `slots`.
async fn accept_loop<H, F>(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    shutdown: impl Future<Output = ()> + Send,
    what: &'static str,
    handle: H,
) -> io::Result<()>
where
    H: Fn(TcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting: at capacity, connections queue in the kernel's
        // backlog rather than as tasks and buffers here.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed; stop rather than spin if it ever is.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let task = handle(stream);
                tokio::spawn(async move {
                    task.await;
                    drop(slot);
                });
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(what, error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                // Typically out of file descriptors: worth an operator's attention, and it
                // carries no address.
                tracing::warn!(what, error = %e, "accept failed; pausing");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracing::debug!(what, "stopped accepting connections");
    Ok(())
}

/// Accept errors that concern one connection only (the client gave up during the
/// handshake), as opposed to the process or the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

// ---------------------------------------------------------------------------------------
// The decisions, without I/O.

/// A request method, as far as these servers care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// The parts of a complete request head that the routing looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RequestHead {
    method: Method,
    /// The request target's path, without the query.
    path: String,
    /// The client's `Accept` names OpenMetrics (Prometheus does, with a preference).
    wants_openmetrics: bool,
}

/// The outcome of parsing the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A complete, well-formed head.
    Complete(RequestHead),
    /// The head can never become acceptable: answer with this status and close.
    Reject(Status),
}

/// Parses a request head from the start of `buf`. Never panics, whatever the bytes.
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            Parsed::Reject(Status::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            Parsed::Reject(Status::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(_)) => {
            let method = match request.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                _ => Method::Other,
            };
            let target = request.path.unwrap_or("/");
            let path = target.split(['?', '#']).next().unwrap_or(target).to_owned();
            let wants_openmetrics = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && std::str::from_utf8(h.value).is_ok_and(|v| {
                        v.to_ascii_lowercase()
                            .contains("application/openmetrics-text")
                    })
            });
            Parsed::Complete(RequestHead {
                method,
                path,
                wants_openmetrics,
            })
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Reject(Status::HeadTooLarge),
        Err(_) => Parsed::Reject(Status::BadRequest),
    }
}

/// The statuses these servers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    BadGateway,
    Unavailable,
}

impl Status {
    fn code_and_reason(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::RequestTimeout => (408, "Request Timeout"),
            Status::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Status::BadGateway => (502, "Bad Gateway"),
            Status::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// One complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Response {
    status: Status,
    content_type: &'static str,
    body: String,
    /// Send the headers only (the answer to `HEAD`).
    head_only: bool,
}

impl Response {
    /// A short plain-text response whose body is the status line's reason.
    fn plain(status: Status) -> Self {
        let (_, reason) = status.code_and_reason();
        Self {
            status,
            content_type: TEXT_PLAIN,
            body: format!("{}\n", reason.to_ascii_lowercase()),
            head_only: false,
        }
    }

    /// The response's bytes. Every response closes the connection: these servers answer
    /// one request per connection, which health checkers and scrapers handle fine.
    fn to_bytes(&self) -> Vec<u8> {
        let (code, reason) = self.status.code_and_reason();
        let allow = if self.status == Status::MethodNotAllowed {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.content_type,
            self.body.len(),
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The two operations resources.
fn is_ops_path(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// The answer of the operations endpoint to a complete head.
fn ops_response(head: &RequestHead, ops: &Ops) -> Response {
    if !is_ops_path(&head.path) {
        return Response::plain(Status::NotFound);
    }
    if head.method == Method::Other {
        return Response::plain(Status::MethodNotAllowed);
    }
    let mut response = if head.path == "/health" {
        if (ops.health)() {
            Response {
                status: Status::Ok,
                content_type: TEXT_PLAIN,
                body: "ok\n".to_owned(),
                head_only: false,
            }
        } else {
            Response::plain(Status::Unavailable)
        }
    } else if head.wants_openmetrics {
        Response {
            status: Status::Ok,
            content_type: OPENMETRICS_TEXT,
            body: ops.metrics.encode_openmetrics(),
            head_only: false,
        }
    } else {
        Response {
            status: Status::Ok,
            content_type: PROMETHEUS_TEXT,
            body: ops.metrics.encode(),
            head_only: false,
        }
    };
    response.head_only = head.method == Method::Head;
    response
}

// ---------------------------------------------------------------------------------------
// The I/O around them.

/// How reading a request head ended.
enum HeadRead {
    /// A complete head; `buf[..filled]` holds it and possibly bytes that followed it.
    Complete(RequestHead, usize),
    /// Answer with this status and close.
    Reject(Status),
    /// The client closed the connection or failed before a full head.
    Gone,
}

/// Reads until `buf` holds a complete head, within [`HEAD_TIMEOUT`] in total.
async fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> HeadRead {
    let read = async {
        let mut filled = 0;
        loop {
            let Some(free) = buf.get_mut(filled..).filter(|free| !free.is_empty()) else {
                return HeadRead::Reject(Status::HeadTooLarge);
            };
            match stream.read(free).await {
                Ok(0) => return HeadRead::Gone,
                Ok(n) => filled += n,
                Err(e) => {
                    tracing::debug!(error = %e, "connection failed while reading a request head");
                    return HeadRead::Gone;
                }
            }
            match parse_head(buf.get(..filled).unwrap_or_default()) {
                Parsed::Partial => {}
                Parsed::Complete(head) => return HeadRead::Complete(head, filled),
                Parsed::Reject(status) => return HeadRead::Reject(status),
            }
        }
    };
    timeout(HEAD_TIMEOUT, read)
        .await
        .unwrap_or(HeadRead::Reject(Status::RequestTimeout))
}

/// One connection to the operations endpoint.
async fn answer_ops(mut stream: TcpStream, ops: &Ops) {
    let mut buf = vec![0; MAX_HEAD_BYTES];
    let response = match read_head(&mut stream, &mut buf).await {
        HeadRead::Complete(head, _) => ops_response(&head, ops),
        HeadRead::Reject(status) => Response::plain(status),
        HeadRead::Gone => return,
    };
    drop(buf);
    respond(stream, &response).await;
}

/// One connection to the front door.
async fn front_door(mut stream: TcpStream, ws_backend: SocketAddr, ops: &Ops) {
    let mut buf = vec![0; MAX_HEAD_BYTES];
    match read_head(&mut stream, &mut buf).await {
        HeadRead::Complete(head, _) if is_ops_path(&head.path) => {
            tracing::debug!(path = %head.path, "front door: answering locally");
            let response = ops_response(&head, ops);
            drop(buf);
            respond(stream, &response).await;
        }
        HeadRead::Complete(_, filled) => {
            buf.truncate(filled);
            splice(stream, buf, ws_backend).await;
        }
        HeadRead::Reject(status) => {
            tracing::debug!(?status, "front door: rejecting a request head");
            drop(buf);
            respond(stream, &Response::plain(status)).await;
        }
        HeadRead::Gone => {}
    }
}

/// Writes `response`, then closes gracefully: FIN first, then read and discard what the
/// client still sends for a moment, so that the kernel does not answer unread input with
/// an RST that could destroy the response.
async fn respond(mut stream: TcpStream, response: &Response) {
    let bytes = response.to_bytes();
    match timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "could not write a response");
            return;
        }
        Err(_) => {
            tracing::debug!("timed out writing a response");
            return;
        }
    }
    if stream.shutdown().await.is_err() {
        return;
    }
    let linger = async {
        let mut sink = [0u8; 1024];
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = timeout(LINGER, linger).await;
}

/// Connects to the internal WebSocket listener, sends it the head already read (and any
/// bytes that came with it), then copies both directions until they end.
async fn splice(client: TcpStream, head: Vec<u8>, ws_backend: SocketAddr) {
    let backend = match timeout(BACKEND_CONNECT_TIMEOUT, TcpStream::connect(ws_backend)).await {
        Ok(Ok(backend)) => backend,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "front door: the WebSocket listener is unreachable");
            respond(client, &Response::plain(Status::BadGateway)).await;
            return;
        }
        Err(_) => {
            tracing::debug!("front door: timed out connecting to the WebSocket listener");
            respond(client, &Response::plain(Status::BadGateway)).await;
            return;
        }
    };
    // Frames are small and interactive; do not let Nagle hold them back on either leg.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    tracing::debug!("front door: splicing a connection to the WebSocket listener");

    let (client_read, client_write) = client.into_split();
    let (backend_read, mut backend_write) = backend.into_split();
    let upstream = async move {
        backend_write.write_all(&head).await?;
        let sent = head.len() as u64;
        drop(head);
        Ok::<u64, io::Error>(sent + pump(client_read, &mut backend_write).await?)
    };
    let downstream = async move {
        let mut client_write = client_write;
        pump(backend_read, &mut client_write).await
    };
    tokio::pin!(upstream, downstream);

    // When one direction ends cleanly, give the other a grace period to finish its close
    // handshake; when one fails, the connection is dead and both halves are dropped.
    let (up, down) = tokio::select! {
        up = &mut upstream => {
            let down = match up {
                Ok(_) => timeout(HALF_CLOSE_GRACE, downstream).await.ok(),
                Err(_) => None,
            };
            (Some(up), down)
        }
        down = &mut downstream => {
            let up = match down {
                Ok(_) => timeout(HALF_CLOSE_GRACE, upstream).await.ok(),
                Err(_) => None,
            };
            (up, Some(down))
        }
    };
    tracing::debug!(
        bytes_up = ?up.as_ref().and_then(|r| r.as_ref().ok()),
        bytes_down = ?down.as_ref().and_then(|r| r.as_ref().ok()),
        "front door: splice ended"
    );
}

/// Copies `from` to `to` until end of stream, then shuts `to` down for writing. A buffer
/// exists only while a chunk is in flight; waiting for data holds none, which matters with
/// thousands of idle clients.
async fn pump(from: OwnedReadHalf, to: &mut OwnedWriteHalf) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let mut chunk = Vec::with_capacity(SPLICE_CHUNK);
        match from.try_read_buf(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                to.write_all(&chunk).await?;
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    to.shutdown().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> RequestHead {
        match parse_head(buf) {
            Parsed::Complete(head) => head,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn parses_method_path_and_accept() {
        let head = complete(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n");
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/metrics");
        assert!(head.wants_openmetrics);

        let head = complete(b"HEAD /health HTTP/1.0\r\n\r\n");
        assert_eq!(head.method, Method::Head);
        assert!(!head.wants_openmetrics);

        let head = complete(b"POST /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(head.method, Method::Other);
    }

    #[test]
    fn partial_malformed_and_oversized_heads() {
        assert_eq!(parse_head(b""), Parsed::Partial);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        );
        assert_eq!(
            parse_head(b"GET / HTTP/9.9\r\n\r\n"),
            Parsed::Reject(Status::BadRequest)
        );
        assert_eq!(
            parse_head(b"\x00\x01\x02\x03\r\n\r\n"),
            Parsed::Reject(Status::BadRequest)
        );
        let mut long = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        long.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(parse_head(&long), Parsed::Reject(Status::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Parsed::Reject(Status::HeadTooLarge));
    }

    #[test]
    fn parse_never_panics_on_truncated_or_bit_flipped_heads() {
        let valid: &[u8] = b"GET /health?probe=1 HTTP/1.1\r\nHost: relay.example\r\nAccept: */*\r\nUpgrade: websocket\r\n\r\n";
        for end in 0..=valid.len() {
            let _ = parse_head(&valid[..end]);
        }
        for byte in 0..valid.len() {
            for bit in 0..8 {
                let mut flipped = valid.to_vec();
                flipped[byte] ^= 1 << bit;
                let _ = parse_head(&flipped);
            }
        }
    }

    #[test]
    fn responses_are_well_formed() {
        let bytes = Response::plain(Status::MethodNotAllowed).to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));

        let mut head_only = Response::plain(Status::Ok);
        head_only.head_only = true;
        let text = String::from_utf8(head_only.to_bytes()).unwrap();
        assert!(text.ends_with("\r\n\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
    }
}
