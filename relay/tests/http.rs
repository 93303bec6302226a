//! The operations endpoint and the PaaS front door over real sockets on 127.0.0.1.
//!
//! The front door exists because a PaaS router forwards one HTTP port to the app: it must
//! answer the platform's `/health` check itself and hand the libp2p WebSocket upgrade,
//! untouched, to the relay's internal listener. A fake backend that echoes every byte
//! stands in for that listener, so the tests see exactly what reached it.
//!
//! Each test binds port 0, starts the server on its own task with a shutdown channel, and
//! talks raw HTTP/1.1 to it. Nothing sleeps: a client reads until the server closes, and
//! the one timeout test runs on tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_federation::ErrorCode;
use petrel_relay::http::{HealthCheck, MAX_HEAD_BYTES, serve_front_door, serve_http};
use petrel_relay::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server: its address, and how to stop it.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
        // The listener is gone with the server.
        assert!(TcpStream::connect(self.addr).await.is_err());
    }
}

fn health_flag(initial: bool) -> (Arc<AtomicBool>, HealthCheck) {
    let flag = Arc::new(AtomicBool::new(initial));
    let check = Arc::clone(&flag);
    (flag, Arc::new(move || check.load(Ordering::SeqCst)))
}

async fn start_ops(metrics: Metrics, health: HealthCheck) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_http(listener, metrics, health, async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

async fn start_front_door(
    backend: SocketAddr,
    metrics: Metrics,
    health: HealthCheck,
    max_connections: usize,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_front_door(
        listener,
        backend,
        metrics,
        health,
        max_connections,
        async move {
            let _ = stopped.await;
        },
    ));
    Running { addr, stop, task }
}

/// Sends `raw` and reads until the server closes the connection.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: relay.test\r\n\r\n").as_bytes(),
    )
    .await
}

/// Splits a response into its status code, its head and its body.
fn parts(response: &str) -> (u16, &str, &str) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {response:?}"));
    let code = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    (code, head, body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn health_follows_the_check() {
    let (flag, health) = health_flag(true);
    let server = start_ops(Metrics::new(), health).await;

    let response = get(server.addr, "/health").await;
    let (code, head, body) = parts(&response);
    assert_eq!(code, 200);
    assert_eq!(body, "ok\n");
    assert_eq!(header(head, "content-length"), Some("3"));
    assert_eq!(header(head, "connection"), Some("close"));

    flag.store(false, Ordering::SeqCst);
    let (code, _, _) = parts(&get(server.addr, "/health").await);
    assert_eq!(code, 503);

    flag.store(true, Ordering::SeqCst);
    let response = get(server.addr, "/health?from=probe").await;
    let (code, _, body) = parts(&response);
    assert_eq!((code, body), (200, "ok\n"));

    server.stop().await;
}

#[tokio::test]
async fn metrics_show_what_was_recorded() {
    let metrics = Metrics::new();
    let (_, health) = health_flag(true);
    let server = start_ops(metrics.clone(), health).await;

    metrics.command("CREATE");
    metrics.command("SEND");
    metrics.command("SEND");
    metrics.error(ErrorCode::Auth);
    metrics.error(ErrorCode::TooLarge);
    metrics.delivery();
    metrics.message_stored();
    metrics.connection_opened();
    metrics.connection_opened();
    metrics.connection_closed();
    metrics.set_queues(7);
    metrics.set_messages(42);

    let response = get(server.addr, "/metrics").await;
    let (code, head, body) = parts(&response);
    assert_eq!(code, 200);
    assert_eq!(
        header(head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for expected in [
        "# TYPE petrel_commands_total counter",
        "petrel_commands_total{command=\"CREATE\"} 1",
        "petrel_commands_total{command=\"SEND\"} 2",
        "# TYPE petrel_errors_total counter",
        "petrel_errors_total{kind=\"auth\"} 1",
        "petrel_errors_total{kind=\"too_large\"} 1",
        "petrel_errors_total{kind=\"quota\"} 0",
        "petrel_deliveries_total 1",
        "petrel_messages_accepted_total 1",
        "# TYPE petrel_connections gauge",
        "petrel_connections 1",
        "petrel_queues 7",
        "petrel_messages_stored 42",
    ] {
        assert!(
            body.lines().any(|line| line == expected),
            "missing {expected:?} in\n{body}"
        );
    }
    assert!(!body.contains("# EOF"));

    server.stop().await;
}

#[tokio::test]
async fn metrics_in_openmetrics_when_asked() {
    let metrics = Metrics::new();
    metrics.delivery();
    let (_, health) = health_flag(true);
    let server = start_ops(metrics, health).await;

    let request = "GET /metrics HTTP/1.1\r\nHost: relay.test\r\nAccept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n\r\n";
    let response = exchange(server.addr, request.as_bytes()).await;
    let (code, head, body) = parts(&response);
    assert_eq!(code, 200);
    assert_eq!(
        header(head, "content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        body.contains("# TYPE petrel_deliveries counter\n"),
        "{body}"
    );
    assert!(body.contains("petrel_deliveries_total 1\n"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");

    server.stop().await;
}

#[tokio::test]
async fn other_paths_and_methods() {
    let (_, health) = health_flag(true);
    let server = start_ops(Metrics::new(), health).await;

    let (code, _, _) = parts(&get(server.addr, "/").await);
    assert_eq!(code, 404);
    let (code, _, _) = parts(&get(server.addr, "/health/extra").await);
    assert_eq!(code, 404);

    // A body the server never reads must not turn the answer into a reset.
    let post = b"POST /metrics HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 5\r\n\r\nhello";
    let response = exchange(server.addr, post).await;
    let (code, head, _) = parts(&response);
    assert_eq!(code, 405);
    assert_eq!(header(head, "allow"), Some("GET, HEAD"));

    let response = exchange(
        server.addr,
        b"HEAD /health HTTP/1.1\r\nHost: relay.test\r\n\r\n",
    )
    .await;
    let (code, head, body) = parts(&response);
    assert_eq!(code, 200);
    assert_eq!(header(head, "content-length"), Some("3"));
    assert_eq!(body, "");

    server.stop().await;
}

#[tokio::test]
async fn malformed_heads_get_400() {
    let (_, health) = health_flag(true);
    let server = start_ops(Metrics::new(), health).await;

    for raw in [
        &b"GET /health HTTP/7.0\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
        b"G\xffT /health HTTP/1.1\r\n\r\n",
    ] {
        let response = exchange(server.addr, raw).await;
        let (code, _, _) = parts(&response);
        assert_eq!(code, 400, "for {raw:?}");
    }

    // A client that leaves without finishing its head gets nothing, and the server goes on.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /hea").await.unwrap();
    drop(stream);
    let (code, _, _) = parts(&get(server.addr, "/health").await);
    assert_eq!(code, 200);

    server.stop().await;
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let (_, health) = health_flag(true);
    let server = start_ops(Metrics::new(), health).await;

    let mut long = b"GET /health HTTP/1.1\r\nHost: relay.test\r\nX-Pad: ".to_vec();
    long.resize(MAX_HEAD_BYTES + 1000, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    let (code, _, _) = parts(&exchange(server.addr, &long).await);
    assert_eq!(code, 431);

    let mut many = b"GET /health HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (code, _, _) = parts(&exchange(server.addr, &many).await);
    assert_eq!(code, 431);

    server.stop().await;
}

/// The head timeout, on tokio's paused clock: the runtime jumps to the deadline as soon as
/// every task is waiting.
#[tokio::test(start_paused = true)]
async fn slow_heads_get_408() {
    let (_, health) = health_flag(true);
    let server = start_ops(Metrics::new(), health).await;

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let (code, _, _) = parts(std::str::from_utf8(&response).unwrap());
    assert_eq!(code, 408);

    server.stop().await;
}

/// A fake internal WebSocket listener: echoes every byte of each connection it accepts and
/// reports how many connections it saw.
async fn echo_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = seen.send(());
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, seen_rx)
}

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: myrelay.example:443\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n";

#[tokio::test]
async fn front_door_splices_websocket_and_answers_health_locally() {
    let (backend, mut seen) = echo_backend().await;
    let metrics = Metrics::new();
    metrics.set_queues(3);
    let (_, health) = health_flag(true);
    let door = start_front_door(backend, metrics, health, 16).await;

    // The upgrade and the bytes sent with it reach the backend exactly as sent; the echo
    // proves it, and that the return direction works.
    let mut ws = TcpStream::connect(door.addr).await.unwrap();
    let mut first = UPGRADE.to_vec();
    first.extend_from_slice(b"\x00\x01binary after the head");
    ws.write_all(&first).await.unwrap();
    let mut echoed = vec![0; first.len()];
    ws.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, first);
    seen.recv().await.unwrap();

    // Later traffic on the same connection flows both ways, byte for byte.
    let frame: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.write_all(&frame).await.unwrap();
    let mut echoed = vec![0; frame.len()];
    ws.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, frame);

    // On the same port, /health and /metrics are answered here, not by the backend.
    let response = get(door.addr, "/health").await;
    let (code, _, body) = parts(&response);
    assert_eq!((code, body), (200, "ok\n"));
    let response = get(door.addr, "/metrics").await;
    let (code, _, body) = parts(&response);
    assert_eq!(code, 200);
    assert!(body.lines().any(|l| l == "petrel_queues 3"), "{body}");
    let (code, _, _) = parts(&exchange(door.addr, b"DELETE /health HTTP/1.1\r\n\r\n").await);
    assert_eq!(code, 405);
    assert!(
        seen.try_recv().is_err(),
        "a local answer reached the backend"
    );

    // Closing the client ends the splice: the backend's echo closes back.
    ws.shutdown().await.unwrap();
    let mut rest = Vec::new();
    ws.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    door.stop().await;
}

#[tokio::test]
async fn front_door_rejects_bad_heads_without_touching_the_backend() {
    let (backend, mut seen) = echo_backend().await;
    let (_, health) = health_flag(false);
    let door = start_front_door(backend, Metrics::new(), health, 4).await;

    let (code, _, _) = parts(&get(door.addr, "/health").await);
    assert_eq!(code, 503);
    let (code, _, _) = parts(&exchange(door.addr, b"NOT HTTP AT ALL\x00\r\n\r\n").await);
    assert_eq!(code, 400);
    let mut long = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nX-Pad: ".to_vec();
    long.resize(MAX_HEAD_BYTES * 2, b'a');
    let (code, _, _) = parts(&exchange(door.addr, &long).await);
    assert_eq!(code, 431);
    assert!(
        seen.try_recv().is_err(),
        "a rejected head reached the backend"
    );

    door.stop().await;
}

#[tokio::test]
async fn front_door_reports_an_unreachable_backend() {
    // A port that was just free: nothing listens there any more.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = gone.local_addr().unwrap();
    drop(gone);
    let (_, health) = health_flag(true);
    let door = start_front_door(backend, Metrics::new(), health, 4).await;

    let (code, _, _) = parts(&exchange(door.addr, UPGRADE).await);
    assert_eq!(code, 502);
    let (code, _, _) = parts(&get(door.addr, "/health").await);
    assert_eq!(code, 200);

    door.stop().await;
}

#[tokio::test]
async fn front_door_frees_its_slot_when_a_splice_ends() {
    let (backend, mut seen) = echo_backend().await;
    let (_, health) = health_flag(true);
    let door = start_front_door(backend, Metrics::new(), health, 1).await;

    for round in 0..3 {
        let mut ws = TcpStream::connect(door.addr).await.unwrap();
        ws.write_all(UPGRADE).await.unwrap();
        let mut echoed = vec![0; UPGRADE.len()];
        ws.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, UPGRADE, "round {round}");
        seen.recv().await.unwrap();

        // A second client waits in the backlog while the only slot is taken; it is
        // answered once the splice has ended and given the slot back.
        let mut waiting = TcpStream::connect(door.addr).await.unwrap();
        waiting
            .write_all(b"GET /health HTTP/1.1\r\nHost: relay.test\r\n\r\n")
            .await
            .unwrap();
        drop(ws);
        let mut response = Vec::new();
        waiting.read_to_end(&mut response).await.unwrap();
        let (code, _, _) = parts(std::str::from_utf8(&response).unwrap());
        assert_eq!(code, 200, "round {round}");
    }

    door.stop().await;
}

#[tokio::test]
async fn front_door_needs_a_connection_slot() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_, health) = health_flag(true);
    let backend = listener.local_addr().unwrap();
    let result = serve_front_door(listener, backend, Metrics::new(), health, 0, async {}).await;
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}
