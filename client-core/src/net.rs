//! Talking to relays: one session per relay per run, each from a fresh transport key.
//!
//! Everything here is a thin, typed layer over [`RelayConnection`]: queue commands signed
//! with the queue's key, and the three ways a SEND leaves the client (`specs/protocol.md`
//! §15.3): straight to the profile's own relay, straight to the contact's relay when the
//! contact asked for it, or sealed and forwarded through the profile's own relay.

use crate::contact::{OwnQueue, Secret};
use crate::payload::QueueRef;
use petrel_federation::client::{Command, Delivery, Response};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{Auth, ErrorCode, KeyHash, MsgId, QueueId, RelayAddress, RelayKey};
use rand_core::CryptoRng;
use std::collections::HashMap;
use std::time::Duration;

/// How long one relay command may take before the relay counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Why talking to a relay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The relay could not be reached or the session broke.
    #[error("relay {relay} is unreachable: {reason}")]
    Unreachable {
        /// The relay's key, abbreviated.
        relay: String,
        /// What failed.
        reason: String,
    },
    /// The relay refused the command.
    #[error("relay {relay} refused {command}: {code:?}")]
    Refused {
        /// The relay's key, abbreviated.
        relay: String,
        /// The command.
        command: &'static str,
        /// The relay's error code.
        code: ErrorCode,
    },
    /// The relay answered something the protocol does not allow here.
    #[error("relay {relay} answered {command} with an unexpected response")]
    Unexpected {
        /// The relay's key, abbreviated.
        relay: String,
        /// The command.
        command: &'static str,
    },
}

impl NetError {
    /// The relay's error code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            NetError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn short(key: &RelayKey) -> String {
    key.to_hex().chars().take(12).collect()
}

/// How a SEND ended at the relay that took it.
#[derive(Debug)]
pub enum SendOutcome {
    /// The destination relay stored it.
    Stored,
    /// The forwarding relay stored it in its outbox and will keep trying.
    Accepted {
        /// For FORWARD_STATUS.
        forward_id: MsgId,
        /// Opens the destination's final answer.
        opener: ResponseOpener,
    },
}

/// A FORWARD_STATUS answer.
#[derive(Debug)]
pub enum ForwardState {
    /// Still in the forwarding relay's outbox.
    Pending,
    /// The destination answered; `Ok(())` means stored.
    Done(Result<(), ErrorCode>),
}

/// The sessions of one run.
#[derive(Default)]
pub struct Relays {
    sessions: HashMap<RelayKey, RelayConnection>,
    sealing: HashMap<RelayKey, [u8; 32]>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

async fn timed<T>(
    relay: &RelayAddress,
    fut: impl std::future::Future<
        Output = Result<T, petrel_federation::transport::connection::ConnectionError>,
    >,
) -> Result<T, NetError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(NetError::Unreachable {
            relay: short(relay.key()),
            reason: e.to_string(),
        }),
        Err(_) => Err(NetError::Unreachable {
            relay: short(relay.key()),
            reason: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        }),
    }
}

fn refused(relay: &RelayAddress, command: &'static str, response: Response) -> NetError {
    match response {
        Response::Error(code) => NetError::Refused {
            relay: short(relay.key()),
            command,
            code,
        },
        _ => NetError::Unexpected {
            relay: short(relay.key()),
            command,
        },
    }
}

impl Relays {
    /// No sessions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session with `relay`, opened (with a fresh transport key) on first use.
    pub async fn session(
        &mut self,
        relay: &RelayAddress,
    ) -> Result<&mut RelayConnection, NetError> {
        if !self.sessions.contains_key(relay.key()) {
            let conn = timed(relay, RelayConnection::connect(relay)).await?;
            self.sessions.insert(*relay.key(), conn);
        }
        self.sessions
            .get_mut(relay.key())
            .ok_or_else(|| NetError::Unexpected {
                relay: short(relay.key()),
                command: "hello",
            })
    }

    /// Forgets a session (after it broke).
    pub fn drop_session(&mut self, relay: &RelayAddress) {
        self.sessions.remove(relay.key());
    }

    /// Open sessions.
    pub fn sessions_mut(&mut self) -> impl Iterator<Item = (&RelayKey, &mut RelayConnection)> {
        self.sessions.iter_mut()
    }

    /// Closes every session.
    pub async fn close(self) {
        for (_, conn) in self.sessions {
            conn.close().await;
        }
    }

    async fn request(
        &mut self,
        relay: &RelayAddress,
        key: Option<&ed25519_dalek::SigningKey>,
        command: Command,
    ) -> Result<Response, NetError> {
        let conn = self.session(relay).await?;
        let result = timed(relay, conn.request(key, command)).await;
        if result.is_err() {
            self.drop_session(relay);
        }
        result
    }

    /// CREATEs a queue with fresh keys (subscribed when `subscribe`) and, when
    /// `sender_key_hash` is given, SECUREs it at once.
    pub async fn create_queue<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        relay: &RelayAddress,
        now: u64,
    ) -> Result<OwnQueue, NetError> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let recipient_key = Secret(seed);
        seed.fill(0);
        let mut dh = [0u8; 32];
        rng.fill_bytes(&mut dh);
        let dh = x25519_dalek::StaticSecret::from(dh);
        let recipient_dh = x25519_dalek::PublicKey::from(&dh).to_bytes();
        let signing = recipient_key.signing_key();
        let command = Command::Create {
            recipient_key: signing.verifying_key().to_bytes(),
            recipient_dh,
            subscribe: false,
            password: None,
        };
        match self.request(relay, Some(&signing), command).await? {
            Response::Created(created) => {
                let delivery =
                    DeliveryKey::derive(&dh, &recipient_dh, &created.relay_dh, &created.relay_dh)
                        .map_err(|_| NetError::Unexpected {
                        relay: short(relay.key()),
                        command: "CREATE",
                    })?;
                Ok(OwnQueue {
                    relay: relay.clone(),
                    recipient_id: created.recipient_id,
                    sender_id: created.sender_id,
                    recipient_key,
                    delivery_key: Secret(*delivery.as_bytes()),
                    created_at: now,
                })
            }
            other => Err(refused(relay, "CREATE", other)),
        }
    }

    /// A recipient command that answers `Ok`.
    async fn owner_command(&mut self, queue: &OwnQueue, command: Command) -> Result<(), NetError> {
        let name = command.name();
        match self
            .request(
                &queue.relay,
                Some(&queue.recipient_key.signing_key()),
                command,
            )
            .await?
        {
            Response::Ok => Ok(()),
            other => Err(refused(&queue.relay, name, other)),
        }
    }

    /// SECUREs `queue` for the holder of `sender_public`. A queue this client already
    /// secured answers `DUPLICATE`, which counts as done (only this client holds the
    /// recipient key).
    pub async fn secure(
        &mut self,
        queue: &OwnQueue,
        sender_public: &[u8; 32],
    ) -> Result<(), NetError> {
        let command = Command::Secure {
            recipient_id: queue.recipient_id,
            sender_key_hash: KeyHash::of(sender_public),
        };
        match self.owner_command(queue, command).await {
            Err(e) if e.code() == Some(ErrorCode::Duplicate) => Ok(()),
            other => other,
        }
    }

    /// RESTRICTs `queue` to SENDs that come through one of `relays`.
    pub async fn restrict(
        &mut self,
        queue: &OwnQueue,
        relays: &[RelayAddress],
    ) -> Result<(), NetError> {
        let forwarders = relays.iter().map(|r| *r.key()).take(8).collect();
        self.owner_command(
            queue,
            Command::Restrict {
                recipient_id: queue.recipient_id,
                forwarders,
            },
        )
        .await
    }

    /// DELETEs `queue`.
    pub async fn delete(&mut self, queue: &OwnQueue) -> Result<(), NetError> {
        self.owner_command(
            queue,
            Command::Delete {
                recipient_id: queue.recipient_id,
            },
        )
        .await
    }

    /// SUBscribes this run's session to `queue`.
    pub async fn subscribe(&mut self, queue: &OwnQueue) -> Result<(), NetError> {
        self.owner_command(
            queue,
            Command::Subscribe {
                recipient_id: queue.recipient_id,
            },
        )
        .await
    }

    /// GETs the queue's current message.
    pub async fn get(&mut self, queue: &OwnQueue) -> Result<Option<Delivery>, NetError> {
        let command = Command::Get {
            recipient_id: queue.recipient_id,
        };
        match self
            .request(
                &queue.relay,
                Some(&queue.recipient_key.signing_key()),
                command,
            )
            .await?
        {
            Response::Message(d) => Ok(Some(d)),
            Response::Empty => Ok(None),
            other => Err(refused(&queue.relay, "GET", other)),
        }
    }

    /// ACKs a message: unsigned, since this run's session proved the queue with the GET
    /// or SUB that brought the message (protocol.md §11); signed if the session was
    /// replaced in between. `NO_MESSAGE` (acknowledged before, or expired) counts as done.
    pub async fn ack(&mut self, queue: &OwnQueue, msg_id: MsgId) -> Result<(), NetError> {
        let command = Command::Ack {
            recipient_id: queue.recipient_id,
            msg_id,
        };
        let result = match self.request(&queue.relay, None, command.clone()).await? {
            Response::Ok => Ok(()),
            Response::Error(ErrorCode::Auth) => self.owner_command(queue, command).await,
            other => Err(refused(&queue.relay, "ACK", other)),
        };
        match result {
            Err(e) if e.code() == Some(ErrorCode::NoMessage) => Ok(()),
            other => other,
        }
    }

    /// The destination's sealing key, fetched through `own` and verified against the
    /// destination's address key (cached for the run).
    async fn sealing_key(
        &mut self,
        own: &RelayAddress,
        destination: &RelayAddress,
        now: u64,
    ) -> Result<[u8; 32], NetError> {
        if let Some(key) = self.sealing.get(destination.key()) {
            return Ok(*key);
        }
        let command = Command::RelayInfo {
            relay: destination.clone(),
        };
        let info = match self.request(own, None, command).await? {
            Response::RelayInfo(info) => info,
            other => return Err(refused(own, "RELAY_INFO", other)),
        };
        let key = info
            .verify(destination.key(), now)
            .map_err(|e| NetError::Unreachable {
                relay: short(destination.key()),
                reason: format!("its relay info does not verify: {e}"),
            })?
            .sealing_key;
        self.sealing.insert(*destination.key(), key);
        Ok(key)
    }

    /// Sends `body` into the queue `target` names: directly when the queue is on `own` or
    /// asks for it, else sealed and forwarded through `own`. `now` is the network clock
    /// (the envelope's `sent_at`).
    pub async fn send<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        own: &RelayAddress,
        target: &QueueRef,
        signed: bool,
        body: Vec<u8>,
        now: u64,
    ) -> Result<SendOutcome, NetError> {
        let send = Command::Send {
            sender_id: target.sender_id,
            body,
        };
        let signer = ed25519_dalek::SigningKey::from_bytes(&target.sender_key);
        if target.relay.key() == own.key() || target.direct {
            let relay = if target.direct { &target.relay } else { own };
            let key = signed.then_some(&signer);
            return match self.request(relay, key, send).await? {
                Response::Ok => Ok(SendOutcome::Stored),
                other => Err(refused(relay, "SEND", other)),
            };
        }
        let sealing = self.sealing_key(own, &target.relay, now).await?;
        let ephemeral = EnvelopeKey::generate(rng);
        let auth = if signed {
            Some(
                Auth::sign(&signer, &ephemeral.public(), &send).map_err(|_| {
                    NetError::Unexpected {
                        relay: short(target.relay.key()),
                        command: "SEND",
                    }
                })?,
            )
        } else {
            None
        };
        let request = ForwardedRequest {
            sent_at: now,
            auth,
            command: send,
        };
        let (envelope, opener) =
            ephemeral
                .seal(&sealing, &request)
                .map_err(|_| NetError::Unexpected {
                    relay: short(target.relay.key()),
                    command: "FORWARD",
                })?;
        let forward = Command::Forward {
            destination: target.relay.clone(),
            envelope,
        };
        capture(&forward);
        match self.request(own, None, forward).await? {
            Response::Forwarded(sealed) => match opener.open(&sealed) {
                Ok(Response::Ok) => Ok(SendOutcome::Stored),
                Ok(other) => Err(refused(&target.relay, "SEND", other)),
                Err(_) => Err(NetError::Unexpected {
                    relay: short(target.relay.key()),
                    command: "FORWARD",
                }),
            },
            Response::Accepted { forward_id } => Ok(SendOutcome::Accepted { forward_id, opener }),
            other => Err(refused(own, "FORWARD", other)),
        }
    }

    /// Asks `own` how an accepted forward ended, waiting up to `wait_secs`.
    pub async fn forward_status(
        &mut self,
        own: &RelayAddress,
        forward_id: MsgId,
        opener: &ResponseOpener,
        wait_secs: u8,
    ) -> Result<ForwardState, NetError> {
        let command = Command::ForwardStatus {
            forward_id,
            wait_secs,
        };
        match self.request(own, None, command).await? {
            Response::Pending => Ok(ForwardState::Pending),
            Response::Forwarded(sealed) => match opener.open(&sealed) {
                Ok(Response::Ok) => Ok(ForwardState::Done(Ok(()))),
                Ok(Response::Error(code)) => Ok(ForwardState::Done(Err(code))),
                _ => Err(NetError::Unexpected {
                    relay: short(own.key()),
                    command: "FORWARD_STATUS",
                }),
            },
            Response::Error(code) => Ok(ForwardState::Done(Err(code))),
            other => Err(refused(own, "FORWARD_STATUS", other)),
        }
    }
}

/// Test hook: with `PETREL_DANGEROUS_CAPTURE_DIR` set, every FORWARD command this client
/// sends is also written there (postcard) so that an end-to-end test can replay it.
pub(crate) fn capture(command: &Command) {
    let Some(dir) = std::env::var_os("PETREL_DANGEROUS_CAPTURE_DIR") else {
        return;
    };
    let Ok(bytes) = postcard::to_stdvec(command) else {
        return;
    };
    let name = format!("forward-{}.bin", blake3::hash(&bytes).to_hex());
    let _ = std::fs::write(std::path::Path::new(&dir).join(name), bytes);
}

/// The queue ID type, re-exported for callers matching deliveries to queues.
pub type RecipientId = QueueId;
