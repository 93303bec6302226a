//! Real `petrel-relay` processes for the client's end-to-end tests, and ([`serve`]) real
//! `petrel serve` processes and the `petrel` CLI.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod serve;

pub use serve::{PASSPHRASE, Serve, petrel_ok, petrel_run};
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
