//! The local API's transport (`specs/api.md`) over real sockets on 127.0.0.1.
//!
//! Each test starts an [`ApiServer`] on port 0 in a temporary home with a mock handler
//! (`test.echo` returns its params, `test.fail` an application error, anything else is
//! -32601), then speaks to it with [`ApiClient`] or with hand-made HTTP and WebSocket
//! requests where a test needs headers the client never sends. The tests run on one
//! thread (`#[tokio::test]`), so nothing is synchronised by time: a WebSocket answer proves
//! the subscription is live, and notifications sent without an await between them reach
//! the forwarder together.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use petrel_client::api::{
    ApiClient, ApiConfig, ApiError, ApiServer, Handler, MAX_BATCH, Notification, RpcError, errors,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _};

struct Mock;

impl Handler for Mock {
    fn call(&self, method: String, params: Value) -> BoxFuture<'static, Result<Value, RpcError>> {
        async move {
            match method.as_str() {
                "test.echo" => Ok(params),
                "test.fail" => Err(RpcError::new(errors::INVALID_ARGUMENT, "no such thing")
                    .with_data(json!({"field": "x"}))),
                other => Err(RpcError::method_not_found(other)),
            }
        }
        .boxed()
    }
}

struct Running {
    addr: SocketAddr,
    home: tempfile::TempDir,
    token: String,
    events: broadcast::Sender<Notification>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiError>>,
}

impl Running {
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
        self.task.await.unwrap().unwrap();
        self.home
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(self.addr, self.token.clone())
    }
}

fn config(max_request_bytes: usize) -> ApiConfig {
    ApiConfig {
        max_request_bytes,
        ..ApiConfig::default()
    }
}

async fn start(config: ApiConfig, events_capacity: usize) -> Running {
    let home = tempfile::tempdir().unwrap();
    let server = ApiServer::bind(config, home.path(), &mut rand::rng()).unwrap();
    let addr = server.local_addr();
    let token = std::fs::read_to_string(server.token_file()).unwrap();
    let (events, _) = broadcast::channel(events_capacity);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(Arc::new(Mock), events.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        home,
        token,
        events,
        stop: Some(stop),
        task,
    }
}

/// One raw HTTP/1.1 exchange with exactly the headers given (`Host` defaults to `addr`).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (u16, Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", addr.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

/// POST /api/v1/rpc with the right token.
async fn post(run: &Running, body: impl Into<Bytes>) -> (u16, Value) {
    let bearer = format!("Bearer {}", run.token);
    http(
        run.addr,
        "POST",
        "/api/v1/rpc",
        &[("authorization", &bearer)],
        body,
    )
    .await
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket upgrade with these extra headers: the socket, or the refusal's status and body.
async fn websocket(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<(Socket, Option<String>), (u16, Value)> {
    let mut request = format!("ws://{addr}/api/v1").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((socket, protocol))
        }
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap(),
            ))
        }
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn refusal_code(body: &Value) -> i64 {
    body["error"]["code"].as_i64().unwrap()
}

// --- refusals ------------------------------------------------------------------------

#[tokio::test]
async fn no_token_is_401_1001() {
    let run = start(config(1 << 20), 16).await;
    let (status, body) = http(run.addr, "POST", "/api/v1/rpc", &[], "{}").await;
    assert_eq!(status, 401);
    assert_eq!(refusal_code(&body), errors::MISSING_TOKEN);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api-token")
    );
    let (status, body) = websocket(run.addr, &[]).await.unwrap_err();
    assert_eq!((status, refusal_code(&body)), (401, errors::MISSING_TOKEN));
    run.stop().await;
}

#[tokio::test]
async fn wrong_token_is_401_1002() {
    let run = start(config(1 << 20), 16).await;
    let wrong = format!("Bearer {}", "0".repeat(64));
    let (status, body) = http(
        run.addr,
        "POST",
        "/api/v1/rpc",
        &[("authorization", &wrong)],
        "{}",
    )
    .await;
    assert_eq!((status, refusal_code(&body)), (401, errors::WRONG_TOKEN));
    let subprotocol = format!("bearer.{}, petrel.v1", "0".repeat(64));
    let (status, body) = websocket(run.addr, &[("sec-websocket-protocol", &subprotocol)])
        .await
        .unwrap_err();
    assert_eq!((status, refusal_code(&body)), (401, errors::WRONG_TOKEN));
    // Through the client, the refusal keeps its code and message.
    let client = ApiClient::new(run.addr, "0".repeat(64));
    match client.call("test.echo", json!({})).await {
        Err(ApiError::Refused { status, code, .. }) => {
            assert_eq!((status, code), (401, errors::WRONG_TOKEN));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match client.subscribe().await {
        Err(ApiError::Refused { status, code, .. }) => {
            assert_eq!((status, code), (401, errors::WRONG_TOKEN));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    run.stop().await;
}

#[tokio::test]
async fn foreign_origin_is_403_1003_on_post_and_websocket() {
    let run = start(config(1 << 20), 16).await;
    let bearer = format!("Bearer {}", run.token);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"test.echo"}"#;
    for origin in ["http://evil.example", "null", "https://127.0.0.1:1"] {
        let headers = [("authorization", bearer.as_str()), ("origin", origin)];
        let (status, body) = http(run.addr, "POST", "/api/v1/rpc", &headers, call).await;
        assert_eq!((status, refusal_code(&body)), (403, errors::FOREIGN_ORIGIN));
        let (status, body) = websocket(run.addr, &headers).await.unwrap_err();
        assert_eq!((status, refusal_code(&body)), (403, errors::FOREIGN_ORIGIN));
    }
    // The server's own origin is accepted.
    let own = format!("http://localhost:{}", run.addr.port());
    let headers = [("authorization", bearer.as_str()), ("origin", own.as_str())];
    let (status, body) = http(run.addr, "POST", "/api/v1/rpc", &headers, call).await;
    assert_eq!(status, 200, "{body}");
    assert!(websocket(run.addr, &headers).await.is_ok());
    run.stop().await;
}

#[tokio::test]
async fn wrong_host_is_403_1004() {
    let run = start(config(1 << 20), 16).await;
    let bearer = format!("Bearer {}", run.token);
    let rebound = format!("evil.example:{}", run.addr.port());
    for host in [rebound.as_str(), "127.0.0.1:1"] {
        let headers = [("authorization", bearer.as_str()), ("host", host)];
        let (status, body) = http(run.addr, "POST", "/api/v1/rpc", &headers, "{}").await;
        assert_eq!((status, refusal_code(&body)), (403, errors::WRONG_HOST));
        let (status, body) = websocket(run.addr, &headers).await.unwrap_err();
        assert_eq!((status, refusal_code(&body)), (403, errors::WRONG_HOST));
    }
    run.stop().await;
}

#[tokio::test]
async fn non_loopback_bind_needs_allow_remote() {
    let home = tempfile::tempdir().unwrap();
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = ApiServer::bind(
        ApiConfig {
            listen: any,
            ..ApiConfig::default()
        },
        home.path(),
        &mut rand::rng(),
    )
    .unwrap_err();
    assert!(
        matches!(refused, ApiError::NotLoopback { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(message.contains("not a loopback address"), "{message}");
    assert!(message.contains("--allow-remote"), "{message}");
    assert!(!home.path().join("serve.json").exists());
    assert!(!home.path().join("api-token").exists());

    let server = ApiServer::bind(
        ApiConfig {
            listen: any,
            allow_remote: true,
            ..ApiConfig::default()
        },
        home.path(),
        &mut rand::rng(),
    )
    .unwrap();
    assert!(server.local_addr().ip().is_unspecified());
    assert_ne!(server.local_addr().port(), 0);
    let serve: Value =
        serde_json::from_slice(&std::fs::read(home.path().join("serve.json")).unwrap()).unwrap();
    let url = format!("http://127.0.0.1:{}", server.local_addr().port());
    assert_eq!(serve["url"], json!(url));
    drop(server);
    assert!(!home.path().join("serve.json").exists());
}

#[tokio::test]
async fn malformed_json_is_32700() {
    let run = start(config(1 << 20), 16).await;
    let (status, body) = post(&run, r#"{"jsonrpc":"2.0","#).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], json!(errors::PARSE_ERROR));
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["jsonrpc"], json!("2.0"));
    run.stop().await;
}

#[tokio::test]
async fn not_a_request_is_32600() {
    let run = start(config(1 << 20), 16).await;
    let cases = [
        ("42", Value::Null),
        ("[]", Value::Null),
        (r#"{"jsonrpc":"1.0","id":7,"method":"test.echo"}"#, json!(7)),
        (r#"{"jsonrpc":"2.0","id":"a","method":3}"#, json!("a")),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"test.echo","params":5}"#,
            json!(8),
        ),
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"test.echo","param":{}}"#,
            json!(9),
        ),
        (
            r#"{"jsonrpc":"2.0","id":{},"method":"test.echo"}"#,
            Value::Null,
        ),
    ];
    for (request, id) in cases {
        let (status, body) = post(&run, request).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["error"]["code"],
            json!(errors::INVALID_REQUEST),
            "{request}"
        );
        assert_eq!(body["id"], id, "{request}");
    }
    // In a batch, each bad member gets its own error.
    let (_, body) = post(
        &run,
        r#"[1, {"jsonrpc":"2.0","id":2,"method":"test.echo"}]"#,
    )
    .await;
    assert_eq!(body[0]["error"]["code"], json!(errors::INVALID_REQUEST));
    assert_eq!(body[1]["result"], Value::Null);
    run.stop().await;
}

#[tokio::test]
async fn unknown_method_is_32601_and_handler_errors_pass_through() {
    let run = start(config(1 << 20), 16).await;
    let client = run.client();
    match client.call("no.such", json!({})).await {
        Err(ApiError::Rpc(error)) => {
            assert_eq!(error.code, errors::METHOD_NOT_FOUND);
            assert!(error.message.contains("no.such"));
        }
        other => panic!("expected -32601, got {other:?}"),
    }
    match client.call("test.fail", Value::Null).await {
        Err(ApiError::Rpc(error)) => {
            assert_eq!(error.code, errors::INVALID_ARGUMENT);
            assert_eq!(error.message, "no such thing");
            assert_eq!(error.data, Some(json!({"field": "x"})));
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    run.stop().await;
}

#[tokio::test]
async fn oversized_post_is_413_1005() {
    let run = start(config(1024), 16).await;
    let padding = "x".repeat(2000);
    let request = json!({"jsonrpc":"2.0","id":1,"method":"test.echo","params":[padding]});
    let (status, body) = post(&run, request.to_string()).await;
    assert_eq!((status, refusal_code(&body)), (413, errors::TOO_LARGE));
    // Just under the limit passes.
    let small = json!({"jsonrpc":"2.0","id":1,"method":"test.echo","params":["x".repeat(900)]});
    let (status, _) = post(&run, small.to_string()).await;
    assert_eq!(status, 200);
    run.stop().await;
}

#[tokio::test]
async fn oversized_chunked_post_is_413_1005() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // No Content-Length: the limit is found while reading the body.
    let run = start(config(1024), 16).await;
    let mut stream = TcpStream::connect(run.addr).await.unwrap();
    let chunk = "x".repeat(2000);
    let request = format!(
        "POST /api/v1/rpc HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        run.addr,
        run.token,
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(refusal_code(&body), errors::TOO_LARGE);
    run.stop().await;
}

#[tokio::test]
async fn oversized_websocket_message_is_1005_then_close() {
    let run = start(config(1024), 16).await;
    let bearer = format!("Bearer {}", run.token);
    let (mut socket, _) = websocket(run.addr, &[("authorization", &bearer)])
        .await
        .unwrap();
    let request = json!({"jsonrpc":"2.0","id":1,"method":"test.echo","params":["x".repeat(2000)]});
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    let answer = next_json(&mut socket).await;
    assert_eq!(
        answer["error"]["code"],
        json!(errors::TOO_LARGE),
        "{answer}"
    );
    assert_eq!(answer["id"], Value::Null);
    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a close frame, got {other:?}"),
    }
    run.stop().await;
}

#[tokio::test]
async fn batch_limit_is_32600() {
    let run = start(config(1 << 20), 16).await;
    let call = |id: usize| json!({"jsonrpc":"2.0","id":id,"method":"test.echo","params":[id]});
    let too_many: Vec<Value> = (0..=MAX_BATCH).map(call).collect();
    let (status, body) = post(&run, Value::Array(too_many).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["error"]["code"],
        json!(errors::INVALID_REQUEST),
        "{body}"
    );
    let most: Vec<Value> = (0..MAX_BATCH).map(call).collect();
    let (_, body) = post(&run, Value::Array(most).to_string()).await;
    assert_eq!(body.as_array().unwrap().len(), MAX_BATCH);
    run.stop().await;
}

// --- what works ----------------------------------------------------------------------

#[tokio::test]
async fn post_call_works() {
    let run = start(config(1 << 20), 16).await;
    let client = run.client();
    let params = json!({"text": "hello", "n": [1, 2, 3]});
    assert_eq!(
        client.call("test.echo", params.clone()).await.unwrap(),
        params
    );
    assert_eq!(
        client.call("test.echo", Value::Null).await.unwrap(),
        Value::Null
    );
    let (status, body) = http(run.addr, "GET", "/api/v1/health", &[], Bytes::new()).await;
    assert_eq!((status, body), (200, json!({"ok": true})));
    run.stop().await;
}

#[tokio::test]
async fn batch_works_and_notifications_are_not_answered() {
    let run = start(config(1 << 20), 16).await;
    let batch = json!([
        {"jsonrpc":"2.0","id":"first","method":"test.echo","params":["a"]},
        {"jsonrpc":"2.0","method":"test.echo","params":["not answered"]},
        {"jsonrpc":"2.0","id":2,"method":"no.such"},
        {"jsonrpc":"2.0","id":null,"method":"test.echo","params":{"b":1}},
    ]);
    let (status, body) = post(&run, batch.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([
            {"jsonrpc":"2.0","id":"first","result":["a"]},
            {"jsonrpc":"2.0","id":2,"error":{"code":errors::METHOD_NOT_FOUND,"message":"there is no method \"no.such\""}},
            {"jsonrpc":"2.0","id":null,"result":{"b":1}},
        ])
    );
    let (status, body) = post(&run, r#"{"jsonrpc":"2.0","method":"test.echo"}"#).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = post(&run, r#"[{"jsonrpc":"2.0","method":"test.echo"}]"#).await;
    assert_eq!(status, 204);
    run.stop().await;
}

#[tokio::test]
async fn websocket_call_and_notifications() {
    let run = start(config(1 << 20), 16).await;
    let mut subscription = run.client().subscribe().await.unwrap();
    // The answer proves the server has subscribed this socket to the notifications.
    assert_eq!(
        subscription.call("test.echo", json!([1])).await.unwrap(),
        json!([1])
    );
    let event = Notification {
        method: "message.received".into(),
        params: json!({"from": "alice", "text": "hi"}),
    };
    run.events.send(event.clone()).unwrap();
    // A call made meanwhile is answered; the notification waits in the queue.
    let error = subscription.call("no.such", Value::Null).await.unwrap_err();
    assert!(matches!(
        error,
        ApiError::Rpc(RpcError {
            code: errors::METHOD_NOT_FOUND,
            ..
        })
    ));
    assert_eq!(subscription.next_notification().await, Some(event));
    // Shutting down closes the socket.
    let home = run.stop().await;
    assert_eq!(subscription.next_notification().await, None);
    drop(home);
}

#[tokio::test]
async fn lagging_subscriber_is_told_how_many_it_missed() {
    let run = start(config(1 << 20), 1).await;
    let mut subscription = run.client().subscribe().await.unwrap();
    subscription.call("test.echo", Value::Null).await.unwrap();
    // One thread, no await: the forwarder finds three sent into a channel of one.
    for n in 0..3 {
        run.events
            .send(Notification {
                method: "tick".into(),
                params: json!(n),
            })
            .unwrap();
    }
    let lagged = subscription.next_notification().await.unwrap();
    assert_eq!(lagged.method, "event.lagged");
    assert_eq!(lagged.params, json!({"missed": 2}));
    let last = subscription.next_notification().await.unwrap();
    assert_eq!((last.method.as_str(), last.params), ("tick", json!(2)));
    run.stop().await;
}

#[tokio::test]
async fn token_as_websocket_subprotocol_works() {
    let run = start(config(1 << 20), 16).await;
    let offered = format!("bearer.{}, petrel.v1", run.token);
    let (mut socket, protocol) = websocket(run.addr, &[("sec-websocket-protocol", &offered)])
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("petrel.v1"));
    let request = json!([{"jsonrpc":"2.0","id":5,"method":"test.echo","params":{"ok":true}}]);
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!([{"jsonrpc":"2.0","id":5,"result":{"ok":true}}])
    );
    // A binary frame is not JSON-RPC, but the socket stays open.
    socket
        .send(Message::Binary(Bytes::from_static(b"{}")))
        .await
        .unwrap();
    let answer = next_json(&mut socket).await;
    assert_eq!(answer["error"]["code"], json!(errors::INVALID_REQUEST));
    run.stop().await;
}

// --- files and discovery -------------------------------------------------------------

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn token_file_and_serve_json_are_0600() {
    let home = tempfile::tempdir().unwrap();
    // An old, world-readable token is replaced.
    std::fs::write(home.path().join("api-token"), "old").unwrap();
    std::fs::set_permissions(
        home.path().join("api-token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let server = ApiServer::bind(config(1 << 20), home.path(), &mut rand::rng()).unwrap();
    let token_file = server.token_file().to_owned();
    assert!(token_file.is_absolute());
    assert_eq!(token_file, home.path().join("api-token"));
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let serve_file = home.path().join("serve.json");
    assert_eq!(mode(&serve_file), 0o600);
    let serve: Value = serde_json::from_slice(&std::fs::read(&serve_file).unwrap()).unwrap();
    let url = format!("http://127.0.0.1:{}", server.local_addr().port());
    assert_eq!(serve["url"], json!(url));
    assert_eq!(serve["pid"], json!(std::process::id()));
    assert_eq!(serve["token_file"], json!(token_file));
}

#[tokio::test]
async fn shutdown_removes_serve_json_and_token() {
    let run = start(config(1 << 20), 16).await;
    let serve_file = run.home.path().join("serve.json");
    let token_file = run.home.path().join("api-token");
    assert!(serve_file.exists() && token_file.exists());
    let home = run.stop().await;
    assert!(!serve_file.exists());
    assert!(!token_file.exists());
    drop(home);
}

#[tokio::test]
async fn discover_finds_a_live_server_and_ignores_missing_or_stale_files() {
    let empty = tempfile::tempdir().unwrap();
    assert!(ApiClient::discover(empty.path()).await.unwrap().is_none());

    let run = start(config(1 << 20), 16).await;
    let client = ApiClient::discover(run.home.path()).await.unwrap().unwrap();
    assert_eq!(client.addr(), run.addr);
    assert_eq!(
        client.call("test.echo", json!([7])).await.unwrap(),
        json!([7])
    );

    // A crash leaves serve.json behind, naming a port nobody answers on.
    let serve = std::fs::read(run.home.path().join("serve.json")).unwrap();
    let token = run.token.clone();
    let home = run.stop().await;
    std::fs::write(home.path().join("serve.json"), serve).unwrap();
    std::fs::write(home.path().join("api-token"), token).unwrap();
    assert!(ApiClient::discover(home.path()).await.unwrap().is_none());

    // A file that is not a discovery file is an error that says so.
    std::fs::write(home.path().join("serve.json"), "not json").unwrap();
    let error = ApiClient::discover(home.path()).await.unwrap_err();
    assert!(matches!(error, ApiError::Discovery { .. }), "{error:?}");
}
