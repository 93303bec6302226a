//! Starts real `petrel-relay` processes for end-to-end tests and talks to them.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use petrel_federation::RelayAddress;
use petrel_federation::client::{Command, QueueCreated, Response};
use petrel_federation::delivery::{DeliveryBody, DeliveryKey};
use petrel_federation::transport::connection::RelayConnection;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

/// The relays' log level: `warn`, or `RELAY_TEST_LOG` (e.g. `debug`) when debugging a test.
fn log_level() -> String {
    std::env::var("RELAY_TEST_LOG").unwrap_or_else(|_| "warn".to_string())
}

/// A relay child process, killed on drop.
pub struct RelayProcess {
    pub child: Child,
    pub address: RelayAddress,
    pub data_dir: PathBuf,
}

impl RelayProcess {
    /// Starts `petrel-relay` on loopback with `data_dir` and extra arguments, and waits for
    /// its address line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> RelayProcess {
        let mut child = Process::new(env!("CARGO_BIN_EXE_petrel-relay"))
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http",
                "off",
                "--log",
                &log_level(),
            ])
            .args(extra)
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn petrel-relay");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let address = line
            .trim()
            .strip_prefix("relay address: ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .unwrap();
        RelayProcess {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// SIGKILL and wait.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Process::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A queue's owner: its recipient key, DH secret, IDs and delivery key.
pub struct Owner {
    pub key: ed25519_dalek::SigningKey,
    pub dh: x25519_dalek::StaticSecret,
    pub created: QueueCreated,
    pub delivery: DeliveryKey,
}

impl Owner {
    /// Creates a queue with fresh keys from `seed`.
    pub async fn create(conn: &RelayConnection, seed: u8, subscribe: bool) -> Owner {
        Self::create_with_password(conn, seed, subscribe, None)
            .await
            .unwrap()
    }

    pub async fn create_with_password(
        conn: &RelayConnection,
        seed: u8,
        subscribe: bool,
        password: Option<&[u8]>,
    ) -> Result<Owner, Response> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let dh = x25519_dalek::StaticSecret::from([seed.wrapping_add(100); 32]);
        let recipient_dh = x25519_dalek::PublicKey::from(&dh).to_bytes();
        let command = Command::Create {
            recipient_key: key.verifying_key().to_bytes(),
            recipient_dh,
            subscribe,
            password: password.map(|p| p.to_vec()),
        };
        match conn.request(Some(&key), command).await.unwrap() {
            Response::Created(created) => {
                let delivery =
                    DeliveryKey::derive(&dh, &recipient_dh, &created.relay_dh, &created.relay_dh)
                        .unwrap();
                Ok(Owner {
                    key,
                    dh,
                    created,
                    delivery,
                })
            }
            other => Err(other),
        }
    }

    pub fn open(&self, d: &petrel_federation::client::Delivery) -> DeliveryBody {
        assert_eq!(d.recipient_id, self.created.recipient_id);
        self.delivery
            .open(&d.recipient_id, &d.msg_id, &d.ciphertext)
            .unwrap()
    }
}

/// A body of the smallest size class carrying `text`.
pub fn body(text: &[u8]) -> Vec<u8> {
    petrel_federation::padding::pad(text, 2048).unwrap()
}

/// Opens a session with the relay at `address`, failing the test with the reason if it
/// cannot.
pub async fn connect(address: &RelayAddress) -> RelayConnection {
    RelayConnection::connect(address)
        .await
        .unwrap_or_else(|e| panic!("cannot open a session with the relay: {e}"))
}

/// Signs `command` with `key` for `conn`'s session.
pub fn auth_for(
    conn: &RelayConnection,
    key: &ed25519_dalek::SigningKey,
    command: &Command,
) -> petrel_federation::Auth {
    petrel_federation::Auth::sign(key, &conn.session_id().0, command).unwrap()
}

/// A client session that hands back the relay's frames as raw bytes (length prefix
/// included), for comparing encodings byte for byte.
pub struct RawSession {
    node: petrel_federation::transport::Node,
    stream: petrel_federation::transport::Stream,
    pub session: petrel_federation::transport::session::ClientSession,
}

impl RawSession {
    /// Dials `address`, opens a client stream and completes the hello.
    pub async fn open(address: &RelayAddress) -> RawSession {
        use petrel_federation::transport::{Keypair, Node};
        let node = Node::start(Keypair::generate_ed25519(), &[], Default::default())
            .await
            .unwrap();
        let peer = node.connect(address).await.unwrap();
        let mut stream = node
            .open(peer, petrel_federation::client::PROTOCOL)
            .await
            .unwrap();
        let session = petrel_federation::transport::session::client_hello(&mut stream)
            .await
            .unwrap();
        RawSession {
            node,
            stream,
            session,
        }
    }

    /// Sends one command with `corr`, signed by `key` when given, and returns the next
    /// frame the relay sends, exactly as it came off the wire.
    pub async fn exchange(
        &mut self,
        corr: u32,
        key: Option<&ed25519_dalek::SigningKey>,
        command: Command,
    ) -> Vec<u8> {
        use petrel_federation::client::ClientFrame;
        use petrel_federation::frame::LEN_PREFIX;
        use petrel_federation::transport::io::{read_body, write_message};
        let version = self.session.version as u8;
        let auth = key.map(|k| {
            petrel_federation::Auth::sign(k, &self.session.session_id.0, &command).unwrap()
        });
        write_message(
            &mut self.stream,
            version,
            &ClientFrame {
                corr,
                auth,
                command,
            },
        )
        .await
        .unwrap();
        let body = read_body(&mut self.stream, petrel_federation::limits::MAX_FRAME_LEN)
            .await
            .unwrap()
            .expect("the relay closed the session");
        let mut frame = Vec::with_capacity(LEN_PREFIX + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    /// Closes the stream and the local node.
    pub async fn close(mut self) {
        let _ = futures::AsyncWriteExt::close(&mut self.stream).await;
        self.node.shutdown().await;
    }
}
