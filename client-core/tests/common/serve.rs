//! Real `petrel serve` processes for the API's end-to-end tests: a home made with the CLI,
//! the server started on `127.0.0.1:0`, its first stdout line read for the API's address
//! and token file, and calls, raw JSON-RPC posts and a notification log over it.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use petrel_client::api::{ApiClient, ApiError};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;
use tokio::sync::watch;

/// Failure guard for waits on the network: nothing waits for it to pass.
pub const GUARD: Duration = Duration::from_secs(60);

/// The passphrase of every home the harness makes.
pub const PASSPHRASE: &str = "pw";

/// `petrel`, as cargo built it for this test.
pub fn petrel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_petrel"))
}

/// The `petrel` CLI on `home`, with the test passphrase and cheap key derivation.
pub fn petrel(home: &Path) -> Command {
    let mut cmd = Command::new(petrel_bin());
    cmd.arg("--home")
        .arg(home)
        .env("PETREL_PASSPHRASE", PASSPHRASE)
        .env("PETREL_DANGEROUS_TEST_KDF", "1")
        .env_remove("PETREL_HOME")
        .env_remove("PETREL_DANGEROUS_CLOCK_SKIP_SECS")
        .env_remove("PETREL_DANGEROUS_CAPTURE_DIR")
        .stdin(Stdio::null());
    cmd
}

/// Runs the CLI; fails the test with its output unless it succeeds; returns (stdout,
/// stderr).
pub fn petrel_run(home: &Path, args: &[&str]) -> (String, String) {
    let out: Output = petrel(home).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "petrel {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// Runs the CLI and returns its stdout; fails the test if it fails.
pub fn petrel_ok(home: &Path, args: &[&str]) -> String {
    petrel_run(home, args).0
}

/// A home with one profile, made with `petrel profile create`.
pub fn make_home(dir: &Path, profile: &str, display_name: &str, relay: &str) -> PathBuf {
    let home = dir.join(profile);
    petrel_ok(
        &home,
        &[
            "profile",
            "create",
            profile,
            "--display-name",
            display_name,
            "--relay",
            relay,
        ],
    );
    home
}

/// A running `petrel serve`, killed on drop.
pub struct Serve {
    pub child: Child,
    pub home: PathBuf,
    pub addr: SocketAddr,
    pub token: String,
    pub api: ApiClient,
}

impl Serve {
    /// Starts `petrel --home HOME serve` and reads its address line.
    pub fn start(home: &Path) -> Serve {
        let mut child = petrel(home)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // `petrel serve: API at http://127.0.0.1:PORT/api/v1, token in PATH`
        let rest = line
            .trim()
            .strip_prefix("petrel serve: API at http://")
            .unwrap_or_else(|| panic!("unexpected first line from petrel serve: {line:?}"));
        let (url, token_file) = rest.split_once("/api/v1, token in ").unwrap();
        let addr: SocketAddr = url.parse().unwrap();
        let token = std::fs::read_to_string(token_file).unwrap();
        // Keep reading stdout so that the server never writes into a closed pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Serve {
            child,
            home: home.to_path_buf(),
            addr,
            token: token.clone(),
            api: ApiClient::new(addr, token),
        }
    }

    /// Another client of its API (a second program using the same profiles).
    pub fn api(&self) -> ApiClient {
        ApiClient::new(self.addr, self.token.clone())
    }

    /// One call; the result, or the JSON-RPC error.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Value, petrel_client::api::RpcError> {
        match self.api.call(method, params).await {
            Ok(v) => Ok(v),
            Err(ApiError::Rpc(e)) => Err(e),
            Err(other) => panic!("{method}: transport failure: {other}"),
        }
    }

    /// A call that must succeed.
    pub async fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params.clone())
            .await
            .unwrap_or_else(|e| panic!("{method} {params} failed: {} {}", e.code, e.message))
    }

    /// A call that must fail with `code`; returns the message.
    pub async fn fails(&self, method: &str, params: Value, code: i64) -> String {
        match self.call(method, params.clone()).await {
            Ok(v) => panic!("{method} {params} answered {v}, expected error {code}"),
            Err(e) => {
                assert_eq!(e.code, code, "{method} {params}: {}", e.message);
                e.message
            }
        }
    }

    /// POSTs `body` as it is to `/api/v1/rpc` with the token; the answer's JSON (null for
    /// 204).
    pub async fn post_raw(&self, body: &str) -> Value {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/api/v1/rpc")
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    /// A live notification log: every notification this server sends from now on, as
    /// `{"jsonrpc":"2.0","method":…,"params":…}`.
    pub async fn log(&self) -> Log {
        let mut subscription = self.api.subscribe().await.unwrap();
        // An answer on the socket proves it is subscribed.
        subscription.call("profile.list", json!({})).await.unwrap();
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(async move {
            while let Some(n) = subscription.next_notification().await {
                let frame = json!({"jsonrpc": "2.0", "method": n.method, "params": n.params});
                tx.send_modify(|log| log.push(frame));
            }
        });
        Log(rx)
    }

    /// Waits until every relay `relay.status` lists for `profile` has a session.
    pub async fn relays_up(&self, profile: &str) -> Value {
        let log = self.log().await;
        let mut seen = 0;
        tokio::time::timeout(GUARD, async {
            loop {
                let status = self.ok("relay.status", json!({"profile": profile})).await;
                let relays = status["relays"].as_array().unwrap();
                if !relays.is_empty() && relays.iter().all(|r| r["up"] == json!(true)) {
                    return status;
                }
                // Something new from the server (a relay_up, say) before asking again.
                seen = log.wait_len(seen + 1).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the relays of {profile} did not come up"))
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The notifications of one server, as they arrive.
#[derive(Clone)]
pub struct Log(pub watch::Receiver<Vec<Value>>);

impl Log {
    /// Waits until the log holds at least `n` notifications; returns its length.
    pub async fn wait_len(&self, n: usize) -> usize {
        let mut rx = self.0.clone();
        let log = rx.wait_for(|log| log.len() >= n).await.unwrap();
        log.len()
    }

    /// Waits (at most [`GUARD`]) for a notification `accept` takes, and returns it.
    pub async fn wait_for(&self, what: &str, mut accept: impl FnMut(&Value) -> bool) -> Value {
        let mut rx = self.0.clone();
        let found = tokio::time::timeout(GUARD, async {
            let log = rx
                .wait_for(|log| log.iter().any(&mut accept))
                .await
                .unwrap();
            log.iter().find(|n| accept(n)).cloned().unwrap()
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no notification {what} within {GUARD:?}; got: {:#?}",
                self.0.borrow()
            )
        })
    }

    /// Waits for a notification `method` whose params contain every member of `params`.
    pub async fn wait_event(&self, method: &str, params: Value) -> Value {
        let want = params.as_object().unwrap().clone();
        self.wait_for(&format!("{method} {params}"), |n| {
            n["method"] == method && want.iter().all(|(k, v)| &n["params"][k] == v)
        })
        .await
    }
}
