//! The driver: runs one profile's [`Engine`] over real relay sessions.
//!
//! ```text
//!  API / CLI ──Call──► driver loop ──Effect::Connect──► connect task ──► connection actor
//!                        ▲    │ Persist: store.commit (before anything later)
//!                        │    │ Transmit ─────────────────────────────► actor (signs, submits)
//!                        └────┴── NetEvent::{Up, Down, Answer, Push} ◄── actors, answer waits
//! ```
//!
//! Each relay session is one actor task that owns its [`RelayConnection`]: it signs and
//! submits the commands the engine transmits (bound to its session ID), forwards pushed
//! frames, and reports its end. An answer that does not come within
//! [`ANSWER_TIMEOUT`] closes the session (a network that went away without a word), so
//! the engine sees the relay down and retries with backoff. Events go to every subscriber
//! of the broadcast channel (the API's notifications, the CLI's printer). A failed store
//! commit stops the driver: nothing polled after it may be transmitted.

use crate::contact::{
    CONTACTS, Contact, Direction, INVITATIONS, MESSAGES, Message, OUTBOX, OutboxEntry,
    PendingInvitation,
};
use crate::engine::{
    Effect, Engine, Error, Event, LinkFailure, OpId, Reply, Request, RequestId, Snapshot,
};
use crate::profile::Profile;
use crate::store::{Store, StoreError};
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{Auth, RelayAddress, RelayKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Longest wait for a relay's answer (beyond a long poll's own wait) before the session
/// counts as dead.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a session to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// An event of one profile.
#[derive(Debug, Clone)]
pub struct ProfileEvent {
    /// The profile's name.
    pub profile: String,
    /// What happened.
    pub event: Event,
}

type Reader = Box<dyn FnOnce(&Engine) + Send>;

enum Call {
    Request(Request, oneshot::Sender<Result<Reply, Error>>),
    Read(Reader),
    Settle(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

/// How a driver runs its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `petrel serve`: every session opened at once, every queue subscribed.
    Serve,
    /// One `petrel` command: no session is opened until the first request (reads of the
    /// engine's state need none), and queues are read only after `Request::Sync`.
    OneShot,
}

enum NetEvent {
    Up {
        relay: RelayKey,
        generation: u64,
        actor: mpsc::UnboundedSender<(RequestId, Option<crate::contact::Secret>, Command)>,
    },
    Down {
        relay: RelayKey,
        generation: u64,
        reason: String,
    },
    Answer {
        id: RequestId,
        outcome: Result<Response, LinkFailure>,
    },
    Push {
        relay: RelayKey,
        generation: u64,
        frame: RelayFrame,
    },
}

/// A handle on a running profile driver.
#[derive(Clone, Debug)]
pub struct ProfileHandle {
    name: String,
    calls: mpsc::Sender<Call>,
}

/// Why a call to a driver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver has stopped (shutting down, or its store failed).
    #[error("the profile `{0}` is not running (shutting down?)")]
    Stopped(String),
    /// The engine refused or failed the request.
    #[error(transparent)]
    Engine(#[from] Error),
}

impl ProfileHandle {
    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a request to its end.
    pub async fn request(&self, request: Request) -> Result<Reply, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(Call::Request(request, tx))
            .await
            .map_err(|_| DriverError::Stopped(self.name.clone()))?;
        Ok(rx
            .await
            .map_err(|_| DriverError::Stopped(self.name.clone()))??)
    }

    /// Reads the engine's state.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, DriverError> {
        let (tx, rx) = oneshot::channel();
        let reader: Reader = Box::new(move |engine| {
            let _ = tx.send(f(engine));
        });
        self.calls
            .send(Call::Read(reader))
            .await
            .map_err(|_| DriverError::Stopped(self.name.clone()))?;
        rx.await
            .map_err(|_| DriverError::Stopped(self.name.clone()))
    }

    /// Waits until the engine is settled ([`Engine::is_settled`]): whatever the requests
    /// so far started has ended, or waits for a relay that is down.
    pub async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        if self.calls.send(Call::Settle(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the driver: the store write in progress finishes, sessions close.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.calls.send(Call::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What the store holds for `profile`.
pub fn load_snapshot(store: &Store, profile: &str) -> Result<Snapshot, StoreError> {
    let contacts: Vec<Contact> = store
        .list::<Contact>(CONTACTS)?
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.profile == profile)
        .collect();
    let invitations = store
        .list::<PendingInvitation>(INVITATIONS)?
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| i.profile == profile)
        .collect();
    let ours = |key: &[u8]| contacts.iter().any(|c| key.starts_with(&c.id));
    let outbox = store
        .list::<OutboxEntry>(OUTBOX)?
        .into_iter()
        .filter(|(k, _)| ours(k))
        .collect();
    let unsettled = store
        .list::<Message>(MESSAGES)?
        .into_iter()
        .filter(|(k, m)| ours(k) && m.direction == Direction::Out && !m.delivered)
        .collect();
    Ok(Snapshot {
        contacts,
        invitations,
        outbox,
        unsettled,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the driver of `profile` on the current runtime.
pub fn spawn(
    store: Arc<Store>,
    profile: Profile,
    app_skew_secs: u64,
    events: broadcast::Sender<ProfileEvent>,
    mode: Mode,
) -> Result<ProfileHandle, StoreError> {
    let snapshot = load_snapshot(&store, &profile.name)?;
    let name = profile.name.clone();
    let mut engine = Engine::new(profile, snapshot, now_ms(), app_skew_secs);
    if mode == Mode::OneShot {
        engine = engine.send_only();
    }
    let (calls, rx) = mpsc::channel(64);
    let driver = Driver {
        engine,
        store,
        events,
        waiters: HashMap::new(),
        actors: HashMap::new(),
        generation: 0,
        net: mpsc::unbounded_channel(),
        rng: <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng()),
        deferred: (mode == Mode::OneShot).then(Vec::new),
        settling: Vec::new(),
    };
    tokio::spawn(driver.run(rx));
    Ok(ProfileHandle { name, calls })
}

type ActorTx = mpsc::UnboundedSender<(RequestId, Option<crate::contact::Secret>, Command)>;

struct Driver {
    engine: Engine,
    store: Arc<Store>,
    events: broadcast::Sender<ProfileEvent>,
    waiters: HashMap<OpId, oneshot::Sender<Result<Reply, Error>>>,
    actors: HashMap<RelayKey, (u64, ActorTx)>,
    generation: u64,
    net: (
        mpsc::UnboundedSender<NetEvent>,
        mpsc::UnboundedReceiver<NetEvent>,
    ),
    rng: rand::rngs::StdRng,
    /// Sessions not opened yet (`Mode::OneShot` before its first request).
    deferred: Option<Vec<RelayAddress>>,
    /// Waiting for the engine to settle.
    settling: Vec<oneshot::Sender<()>>,
}

impl Driver {
    /// Opens the sessions a one-shot driver put off.
    fn activate(&mut self) {
        if let Some(relays) = self.deferred.take() {
            for relay in relays {
                self.connect(relay);
            }
        }
    }

    async fn run(mut self, mut calls: mpsc::Receiver<Call>) {
        loop {
            if let Err(e) = self.execute() {
                eprintln!(
                    "petrel: profile {}: the store failed ({e}); stopping this profile",
                    self.engine.profile().name
                );
                break;
            }
            if !self.settling.is_empty()
                && (self.deferred.is_some() || self.engine.is_settled(now_ms()))
            {
                for waiter in self.settling.drain(..) {
                    let _ = waiter.send(());
                }
            }
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                call = calls.recv() => match call {
                    Some(Call::Request(request, reply)) => {
                        self.activate();
                        let op = self.engine.request(request, now_ms(), &mut self.rng);
                        self.waiters.insert(op, reply);
                    }
                    Some(Call::Read(f)) => f(&self.engine),
                    Some(Call::Settle(done)) => self.settling.push(done),
                    Some(Call::Stop(done)) => {
                        self.close().await;
                        let _ = done.send(());
                        return;
                    }
                    None => break,
                },
                Some(event) = self.net.1.recv() => self.on_net(event),
                () = sleep => self.engine.handle_timeout(now_ms(), &mut self.rng),
            }
        }
        self.close().await;
    }

    /// Sessions end when their actors' senders are dropped.
    async fn close(&mut self) {
        self.actors.clear();
        // Let each actor see its closed channel and close its session.
        tokio::task::yield_now().await;
    }

    fn on_net(&mut self, event: NetEvent) {
        let now = now_ms();
        match event {
            NetEvent::Up {
                relay,
                generation,
                actor,
            } => {
                self.actors.insert(relay, (generation, actor));
                self.engine.relay_up(&relay, now, &mut self.rng);
            }
            NetEvent::Down {
                relay,
                generation,
                reason,
            } => {
                let current = self.actors.get(&relay).map(|(g, _)| *g);
                // A connect that failed has no actor; an old session's end is stale.
                if current.is_none() || current == Some(generation) {
                    self.actors.remove(&relay);
                    self.engine.relay_down(&relay, &reason, now, &mut self.rng);
                }
            }
            NetEvent::Answer { id, outcome } => {
                self.engine.handle_response(id, outcome, now, &mut self.rng)
            }
            NetEvent::Push {
                relay,
                generation,
                frame,
            } => {
                if self.actors.get(&relay).map(|(g, _)| *g) == Some(generation) {
                    self.engine.handle_push(&relay, frame, now, &mut self.rng);
                }
            }
        }
    }

    /// Executes every queued effect, in order.
    fn execute(&mut self) -> Result<(), StoreError> {
        while let Some(effect) = self.engine.poll_effect() {
            match effect {
                Effect::Connect { relay } => match &mut self.deferred {
                    Some(later) => later.push(relay),
                    None => self.connect(relay),
                },
                Effect::Transmit {
                    relay,
                    id,
                    signer,
                    command,
                } => match self.actors.get(&relay) {
                    Some((_, actor)) => {
                        if matches!(command, Command::Forward { .. }) {
                            capture(&command);
                        }
                        if actor.send((id, signer, command)).is_err() {
                            self.answer_now(id, LinkFailure::Closed);
                        }
                    }
                    None => self.answer_now(id, LinkFailure::Closed),
                },
                Effect::Persist(batch) => self.store.commit(&mut self.rng, batch)?,
                Effect::Event(event) => {
                    let _ = self.events.send(ProfileEvent {
                        profile: self.engine.profile().name.clone(),
                        event,
                    });
                }
                Effect::Done { op, result } => {
                    if let Some(waiter) = self.waiters.remove(&op) {
                        let _ = waiter.send(result);
                    }
                }
            }
        }
        Ok(())
    }

    fn answer_now(&self, id: RequestId, failure: LinkFailure) {
        let _ = self.net.0.send(NetEvent::Answer {
            id,
            outcome: Err(failure),
        });
    }

    fn connect(&mut self, relay: RelayAddress) {
        self.generation += 1;
        let generation = self.generation;
        let net = self.net.0.clone();
        tokio::spawn(async move {
            let key = *relay.key();
            let conn =
                tokio::time::timeout(CONNECT_TIMEOUT, RelayConnection::connect(&relay)).await;
            match conn {
                Ok(Ok(conn)) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let _ = net.send(NetEvent::Up {
                        relay: key,
                        generation,
                        actor: tx,
                    });
                    actor(key, generation, conn, rx, net).await;
                }
                Ok(Err(e)) => {
                    let _ = net.send(NetEvent::Down {
                        relay: key,
                        generation,
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    let _ = net.send(NetEvent::Down {
                        relay: key,
                        generation,
                        reason: format!("no session within {} s", CONNECT_TIMEOUT.as_secs()),
                    });
                }
            }
        });
    }
}

/// One relay session: signs and submits commands, forwards pushes, reports its end.
async fn actor(
    relay: RelayKey,
    generation: u64,
    mut conn: RelayConnection,
    mut commands: mpsc::UnboundedReceiver<(RequestId, Option<crate::contact::Secret>, Command)>,
    net: mpsc::UnboundedSender<NetEvent>,
) {
    let (dead_tx, mut dead) = mpsc::unbounded_channel::<()>();
    let reason = loop {
        tokio::select! {
            frame = conn.next_event() => match frame {
                Some(frame) => {
                    let _ = net.send(NetEvent::Push { relay, generation, frame });
                }
                None => break "the relay closed the session".to_string(),
            },
            command = commands.recv() => {
                let Some((id, signer, command)) = command else {
                    break "closed".to_string();
                };
                let extra = match &command {
                    Command::ForwardStatus { wait_secs, .. } => u64::from(*wait_secs),
                    _ => 0,
                };
                let auth = match signer {
                    Some(secret) => match Auth::sign(&secret.signing_key(), &conn.session_id().0, &command) {
                        Ok(auth) => Some(auth),
                        Err(_) => {
                            let _ = net.send(NetEvent::Answer { id, outcome: Err(LinkFailure::Closed) });
                            continue;
                        }
                    },
                    None => None,
                };
                match conn.submit(auth, command).await {
                    Ok(rx) => {
                        let net = net.clone();
                        let dead = dead_tx.clone();
                        tokio::spawn(async move {
                            let limit = ANSWER_TIMEOUT + Duration::from_secs(extra);
                            let outcome = match tokio::time::timeout(limit, rx).await {
                                Ok(Ok(response)) => Ok(response),
                                Ok(Err(_)) => Err(LinkFailure::Closed),
                                Err(_) => {
                                    let _ = dead.send(());
                                    Err(LinkFailure::Timeout)
                                }
                            };
                            let _ = net.send(NetEvent::Answer { id, outcome });
                        });
                    }
                    Err(_) => {
                        let _ = net.send(NetEvent::Answer { id, outcome: Err(LinkFailure::Closed) });
                        break "the session broke".to_string();
                    }
                }
            },
            Some(()) = dead.recv() => break format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()),
        }
    };
    let _ = net.send(NetEvent::Down {
        relay,
        generation,
        reason,
    });
    conn.close().await;
}

/// Test hook: with `PETREL_DANGEROUS_CAPTURE_DIR` set, every FORWARD command this process
/// sends is also written there (postcard, one file per command) so that an end-to-end test
/// can replay it. Unset, it does nothing.
fn capture(command: &Command) {
    let Some(dir) = std::env::var_os("PETREL_DANGEROUS_CAPTURE_DIR") else {
        return;
    };
    let Ok(bytes) = postcard::to_stdvec(command) else {
        return;
    };
    let name = format!("forward-{}.bin", blake3::hash(&bytes).to_hex());
    let _ = std::fs::write(std::path::Path::new(&dir).join(name), bytes);
}
