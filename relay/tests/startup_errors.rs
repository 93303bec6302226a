//! What a second relay on one machine is told when it collides with the first: its
//! listen port, its operations port, or its data directory is taken. Each is a clear error
//! and a non-zero exit, never a relay that starts and silently shares a port (libp2p binds
//! with `SO_REUSEPORT`, so without the relay's own check it would).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RelayProcess;
use std::process::{Command, Stdio};

/// Runs a second `petrel-relay` to completion; returns its exit success and stderr.
fn second_relay(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_petrel-relay"))
        .args(args)
        .args(["--log", "warn"])
        .env_remove("PORT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_taken_listen_port_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let first = RelayProcess::start(&tmp.path().join("a"), &[]);
    let port = first.address.endpoints()[0].port;
    let listen = format!("127.0.0.1:{port}");
    let data = tmp.path().join("b");
    let (ok, stderr) = second_relay(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--http",
        "off",
    ]);
    assert!(!ok, "the second relay must not start");
    assert!(
        stderr.contains(&format!("cannot listen on {listen} for relay sessions"))
            && stderr.contains("its own --listen port"),
        "{stderr}"
    );
}

#[test]
fn a_taken_http_port_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    // Another program (the first relay's operations endpoint, say) holds the port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = holder.local_addr().unwrap().to_string();
    let data = tmp.path().join("b");
    let (ok, stderr) = second_relay(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--http",
        &http,
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("for the operations endpoint") && stderr.contains("or --http off"),
        "{stderr}"
    );
    // Said once, not repeated by the error chain.
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn a_data_directory_in_use_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a");
    let _first = RelayProcess::start(&data, &[]);
    let (ok, stderr) = second_relay(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--http",
        "off",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("another relay process is using it") && stderr.contains("--data-dir"),
        "{stderr}"
    );
}
