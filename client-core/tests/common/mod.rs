//! Real `petrel-relay` processes for the client's end-to-end tests.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// `petrel-relay`, built next to this test's target directory (`cargo nextest run
/// --workspace` builds it; alone: `cargo build -p petrel-relay`).
pub fn relay_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!("petrel-relay{}", std::env::consts::EXE_SUFFIX);
    [deps.parent().map(|p| p.join(&name)), Some(deps.join(&name))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "petrel-relay is not built next to {}: build it first with \
                 `cargo build -p petrel-relay`",
                deps.display()
            )
        })
}

/// A relay child process on loopback (forwarding to private addresses allowed, outbox
/// retries from 50 ms), killed on drop.
pub struct Relay {
    pub child: Child,
    /// Its address as printed.
    pub address: String,
    pub data_dir: PathBuf,
}

impl Relay {
    /// Starts a relay with its data in `data_dir`, listening on `listen` (`127.0.0.1:0`,
    /// or a fixed port to come back on after a kill).
    pub fn start(data_dir: &Path, listen: &str) -> Relay {
        let mut child = Command::new(relay_bin())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--http", "off", "--log", "warn"])
            .args(["--forward-to-private", "--forward-retry-min-ms", "50"])
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn petrel-relay");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("relay address: ")
            .unwrap_or_else(|| panic!("unexpected first line from petrel-relay: {line:?}"))
            .to_string();
        Relay {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The parsed address.
    pub fn address(&self) -> petrel_federation::RelayAddress {
        self.address.parse().unwrap()
    }

    /// `host:port` it listens on.
    pub fn listen(&self) -> String {
        self.address.rsplit_once('@').unwrap().1.to_string()
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A binary of this workspace built next to the test (`petrel`, `petrel-relay`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    [deps.parent().map(|p| p.join(&name)), Some(deps.join(&name))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not built next to {}", deps.display()))
}

/// The test passphrase of every home the serve harness makes.
pub const SERVE_PASSPHRASE: &str = "serve-test";

/// `petrel --home HOME ARGS` with the test passphrase and cheap store keys; panics with
/// its output unless it succeeds; returns (stdout, stderr).
pub fn petrel_run(home: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(workspace_bin("petrel"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env("PETREL_PASSPHRASE", SERVE_PASSPHRASE)
        .env("PETREL_DANGEROUS_TEST_KDF", "1")
        .env_remove("PETREL_HOME")
        .env_remove("PETREL_DANGEROUS_CLOCK_SKIP_SECS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "petrel {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// [`petrel_run`]'s stdout.
pub fn petrel_ok(home: &Path, args: &[&str]) -> String {
    petrel_run(home, args).0
}

/// A `petrel serve` child process for one home, killed on drop unless stopped.
pub struct Serve {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub home: PathBuf,
}

impl Serve {
    /// Starts `petrel --home HOME serve` and waits for its ready line.
    pub fn start(home: &Path) -> Serve {
        let mut child = Command::new(workspace_bin("petrel"))
            .arg("--home")
            .arg(home)
            .arg("serve")
            .env("PETREL_PASSPHRASE", SERVE_PASSPHRASE)
            .env("PETREL_DANGEROUS_TEST_KDF", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "petrel serve: API at http://ADDR/api/v1, token in PATH"
        let rest = line
            .trim()
            .strip_prefix("petrel serve: API at http://")
            .unwrap_or_else(|| panic!("unexpected first line from petrel serve: {line:?}"));
        let (addr, token_file) = rest.split_once("/api/v1, token in ").unwrap();
        let token = std::fs::read_to_string(token_file).unwrap();
        Serve {
            child,
            addr: addr.parse().unwrap(),
            token: token.trim().to_string(),
            home: home.to_path_buf(),
        }
    }

    /// A client of its API.
    pub fn api(&self) -> petrel_client::api::ApiClient {
        petrel_client::api::ApiClient::new(self.addr, self.token.clone())
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
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
