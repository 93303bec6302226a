//! The PaaS mode: with `PORT` set, one port carries the WebSocket transport and the
//! `/health` and `/metrics` paths, and the printed address lists `ws/<host>:<port>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RelayProcess;
use petrel_federation::TransportKind;
use petrel_federation::client::{Command, Response};
use petrel_federation::transport::connection::RelayConnection;
use std::io::{Read, Write};

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn one_port_serves_websocket_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(dir.path(), &["--port", "0"]);
    let ws = relay
        .address
        .endpoints()
        .iter()
        .find(|e| e.transport == TransportKind::Ws)
        .cloned()
        .expect("a ws endpoint in the printed address");

    // Only the WebSocket endpoint: the client must come in through the front door.
    let ws_only =
        petrel_federation::RelayAddress::new(*relay.address.key(), vec![ws.clone()]).unwrap();
    let conn = RelayConnection::connect(&ws_only).await.unwrap();
    assert_eq!(
        conn.request(None, Command::Ping).await.unwrap(),
        Response::Pong
    );

    let health = http_get(ws.port, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(ws.port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("petrel_commands_total"), "{metrics}");
    assert!(metrics.contains("PING"), "{metrics}");
}

#[test]
fn address_subcommand_prints_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(dir.path(), &[]);
    let expected = relay.address.to_string();
    relay.terminate();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
        .args(["address", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("relay address: {expected}\n")
    );
    // An empty directory gives a clear error, not a panic.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
        .args(["address", "--data-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no relay identity"), "{err}");
}

#[test]
fn bad_arguments_and_damaged_keys_give_clear_errors() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "nonsense", "--http", "off"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad listen address"));
    let out = run(&["--http", "localhost", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad --http address"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.key"), b"short").unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", d, "--listen", "127.0.0.1:0", "--http", "off"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("damaged") && err.contains("identity.key"),
        "{err}"
    );
    // A store file that is not redb: a clear error naming the file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.redb"), vec![0x42; 4096]).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", d, "--listen", "127.0.0.1:0", "--http", "off"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("relay.redb"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn default_logs_name_no_queue_key_or_address() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--http", "off"])
        .env_remove("PETREL_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address: petrel_federation::RelayAddress = line
        .trim()
        .strip_prefix("relay address: ")
        .unwrap()
        .parse()
        .unwrap();

    // Some traffic, including errors.
    let conn = RelayConnection::connect(&address).await.unwrap();
    let q = common::Owner::create(&conn, 5, true).await;
    let send = Command::Send {
        sender_id: q.created.sender_id,
        body: common::body(b"hi"),
    };
    assert_eq!(conn.request(None, send).await.unwrap(), Response::Ok);
    let bad = Command::Get {
        recipient_id: petrel_federation::QueueId([3; 16]),
    };
    assert!(matches!(
        conn.request(Some(&q.key), bad).await.unwrap(),
        Response::Error(_)
    ));
    conn.close().await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("relay started"),
        "the log is being written: {log}"
    );
    let rid = q.created.recipient_id;
    let sid = q.created.sender_id;
    let key_hex = hex::encode(q.key.verifying_key().to_bytes());
    for needle in [
        rid.to_hex(),
        sid.to_hex(),
        key_hex,
        address.key_text(),
        "127.0.0.1".to_string(),
    ] {
        assert!(
            !log.contains(&needle),
            "the default log contains {needle}: {log}"
        );
    }
}

#[tokio::test]
async fn a_toml_config_file_sets_limits_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "create_password = \"from-file\"\n[limits]\nqueue_quota = 1\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let relay = RelayProcess::start(&dir.path().join("data"), &["--config", cfg]);
    let conn = RelayConnection::connect(&relay.address).await.unwrap();
    let q = common::Owner::create_with_password(&conn, 9, false, Some(b"from-file"))
        .await
        .unwrap();
    let send = |t: &[u8]| Command::Send {
        sender_id: q.created.sender_id,
        body: common::body(t),
    };
    assert_eq!(conn.request(None, send(b"1")).await.unwrap(), Response::Ok);
    assert_eq!(
        conn.request(None, send(b"2")).await.unwrap(),
        Response::Error(petrel_federation::ErrorCode::Quota)
    );
    drop(relay);
    // A flag wins over the file.
    let relay = RelayProcess::start(
        &dir.path().join("data2"),
        &[
            "--config",
            cfg,
            "--create-password",
            "from-flag",
            "--queue-quota",
            "2",
        ],
    );
    let conn = RelayConnection::connect(&relay.address).await.unwrap();
    assert!(
        common::Owner::create_with_password(&conn, 9, false, Some(b"from-file"))
            .await
            .is_err()
    );
    let q = common::Owner::create_with_password(&conn, 9, false, Some(b"from-flag"))
        .await
        .unwrap();
    let send = |t: &[u8]| Command::Send {
        sender_id: q.created.sender_id,
        body: common::body(t),
    };
    assert_eq!(conn.request(None, send(b"1")).await.unwrap(), Response::Ok);
    assert_eq!(conn.request(None, send(b"2")).await.unwrap(), Response::Ok);
    // An unknown key in the file is a clear error.
    std::fs::write(&config, "queue_qouta = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
        .args([
            "--config",
            cfg,
            "--http",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("relay.toml") && err.contains("queue_qouta"),
        "{err}"
    );
}

#[test]
fn on_a_paas_the_printed_address_is_the_platforms_https_host() {
    use std::io::BufRead;
    for (var, value, expected) in [
        ("FLY_APP_NAME", "my-relay", "wss/my-relay.fly.dev:443"),
        (
            "RENDER_EXTERNAL_HOSTNAME",
            "petrel-x.onrender.com",
            "wss/petrel-x.onrender.com:443",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--port", "0", "--log", "warn"])
            .env_remove("FLY_APP_NAME")
            .env_remove("RENDER_EXTERNAL_HOSTNAME")
            .env_remove("PETREL_RELAY_ANNOUNCE")
            .env(var, value)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            line.trim().ends_with(&format!("@{expected}")),
            "{var}: {line}"
        );
    }
}
