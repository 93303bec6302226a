//! A client's session with one relay: dial by key, hello, then commands matched by `corr`.
//!
//! Each [`RelayConnection`] starts its own libp2p node with a fresh random identity, so two
//! sessions — of one profile or of two — cannot be linked by their transport key. A reader
//! task routes [`RelayFrame::Reply`]s to the waiting [`RelayConnection::request`] call and
//! everything else (deliveries, subscription ends, session errors with `corr = 0`) to
//! [`RelayConnection::next_event`].

use super::io::read_message;
use super::session::{ClientSession, HelloError, client_hello};
use super::{DialFailed, Keypair, Node, OpenError, TransportError, TransportLimits};
use crate::address::RelayAddress;
use crate::auth::Auth;
use crate::client::{self, ClientFrame, Command, RelayFrame, Response};
use crate::frame::FrameError;
use crate::ids::SessionId;
use crate::limits::MAX_FRAME_LEN;
use ed25519_dalek::SigningKey;
use futures::{AsyncReadExt, AsyncWriteExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Why a session could not be opened or a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The local node could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The relay could not be dialed (or proved another key).
    #[error(transparent)]
    Dial(#[from] DialFailed),
    /// The relay does not speak the client protocol.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The hello exchange failed.
    #[error(transparent)]
    Hello(#[from] HelloError),
    /// A frame could not be sent.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The command could not be signed.
    #[error("could not sign the command")]
    Sign,
    /// The session ended before the answer arrived.
    #[error("the relay closed the session")]
    Closed,
}

type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<Response>>>>;

/// Attempts at opening a session stream before giving up.
const OPEN_ATTEMPTS: u32 = 5;

/// Opens the session stream and runs the hello. libp2p-stream hands inbound streams to the
/// relay through a channel without a buffer and drops a stream that arrives while the
/// previous one is still being taken, so under a burst of new sessions a stream can be
/// closed before its hello; the stream (not the connection) is then opened again after a
/// short back-off. A refusal by the relay (`Reject`) is final and not retried.
async fn open_session(
    node: &Node,
    peer: libp2p::PeerId,
) -> Result<(super::Stream, ClientSession), ConnectionError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut stream = node.open(peer, client::PROTOCOL).await?;
        match client_hello(&mut stream).await {
            Ok(session) => return Ok((stream, session)),
            Err(HelloError::Frame(FrameError::Io(_))) if attempt < OPEN_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An open session with a relay.
pub struct RelayConnection {
    node: Option<Node>,
    session: ClientSession,
    out: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    events: mpsc::UnboundedReceiver<RelayFrame>,
    next_corr: AtomicU32,
}

impl std::fmt::Debug for RelayConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConnection").finish_non_exhaustive()
    }
}

impl RelayConnection {
    /// Connects with a fresh transport identity and opens a session.
    pub async fn connect(relay: &RelayAddress) -> Result<Self, ConnectionError> {
        let node =
            Node::start(Keypair::generate_ed25519(), &[], TransportLimits::default()).await?;
        let peer = node.connect(relay).await?;
        let (stream, session) = open_session(&node, peer).await?;
        let version = session.version as u8;
        let (mut reader, mut writer) = stream.split();
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let reader_waiters = waiters.clone();
        tokio::spawn(async move {
            while let Ok(frame) =
                read_message::<RelayFrame, _>(&mut reader, version, MAX_FRAME_LEN).await
            {
                match frame {
                    RelayFrame::Reply { corr, response } if corr != 0 => {
                        let waiter = reader_waiters.lock().ok().and_then(|mut w| w.remove(&corr));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(response);
                        }
                    }
                    other => {
                        let _ = events_tx.send(other);
                    }
                }
            }
            // Dropping the waiters wakes every pending request with `Closed`.
            if let Ok(mut w) = reader_waiters.lock() {
                w.clear();
            }
        });
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            let _ = writer.close().await;
        });
        Ok(Self {
            node: Some(node),
            session,
            out,
            waiters,
            events,
            next_corr: AtomicU32::new(1),
        })
    }

    /// The session ID commands are bound to.
    pub fn session_id(&self) -> SessionId {
        self.session.session_id
    }

    /// The relay's clock at hello.
    pub fn relay_time(&self) -> u64 {
        self.session.relay_time
    }

    /// Sends a command, signed by `key` when given, and waits for its response.
    pub async fn request(
        &self,
        key: Option<&SigningKey>,
        command: Command,
    ) -> Result<Response, ConnectionError> {
        let auth = match key {
            Some(k) => Some(
                Auth::sign(k, &self.session.session_id.0, &command)
                    .map_err(|_| ConnectionError::Sign)?,
            ),
            None => None,
        };
        self.request_with_auth(auth, command).await
    }

    /// Sends a command with a given authenticator (or none) and waits for its response.
    pub async fn request_with_auth(
        &self,
        auth: Option<Auth>,
        command: Command,
    ) -> Result<Response, ConnectionError> {
        let rx = self.submit(auth, command).await?;
        rx.await.map_err(|_| ConnectionError::Closed)
    }

    /// Sends a command without waiting: the returned receiver gets the response. Commands
    /// submitted in order reach the relay in order.
    pub async fn submit(
        &self,
        auth: Option<Auth>,
        command: Command,
    ) -> Result<oneshot::Receiver<Response>, ConnectionError> {
        let mut corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        if corr == 0 {
            corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = crate::frame::encode(
            self.session.version as u8,
            &ClientFrame {
                corr,
                auth,
                command,
            },
        )?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(corr, tx);
        }
        self.out
            .send(bytes)
            .await
            .map_err(|_| ConnectionError::Closed)?;
        Ok(rx)
    }

    /// Sends raw bytes on the session (tests of malformed input).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), ConnectionError> {
        self.out
            .send(bytes)
            .await
            .map_err(|_| ConnectionError::Closed)
    }

    /// The next pushed frame: a delivery, a subscription end, or a session error
    /// (`Reply` with `corr = 0`). `None` once the session has ended.
    pub async fn next_event(&mut self) -> Option<RelayFrame> {
        self.events.recv().await
    }

    /// Closes the session and the local node.
    pub async fn close(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}
