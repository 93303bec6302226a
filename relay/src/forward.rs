//! 2-hop routing: this relay as a forwarding relay (towards other relays) and as a
//! destination (for envelopes other relays bring).
//!
//! Forwarding: a client hands a [`SealedEnvelope`] for a destination relay. The envelope
//! is sealed to the destination's key, so this relay learns neither the queue nor the
//! contents. It dials the destination by the key in its address (one peer session per
//! destination, shared by all clients), forwards, and hands back the destination's sealed
//! answer. When the destination cannot be reached in time, the envelope goes into a
//! durable, bounded outbox and the client gets `ACCEPTED` with a forward ID; a worker
//! retries with exponential backoff until the destination answers or
//! [`OUTBOX_TTL`](crate::config::Limits::outbox_ttl_secs) passes, and FORWARD_STATUS
//! reports the outcome (long-polling if asked).
//!
//! Destination: an envelope is opened with the sealing key, its age checked, and its SEND
//! executed like a direct one but bound to the envelope's ephemeral key. The replay tag is
//! written in the same commit as the message, so a replayed envelope is answered `OK` from
//! the tag and never stored twice.

use crate::service::{Effect, Origin, Prepared, Relay, SessionLimits};
use petrel_federation::address::Host;
use petrel_federation::client::{Command, Response};
use petrel_federation::limits::{FORWARD_MAX_AGE_SECS, FORWARD_MAX_SKEW_SECS};
use petrel_federation::seal::{self, SealedEnvelope, SealedResponse};
use petrel_federation::transport::Node;
use petrel_federation::transport::peer_conn::{ForwardReply, PeerConnection};
use petrel_federation::{ErrorCode, KeyHash, MsgId, RelayAddress, RelayKey, SessionId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};

/// Who this relay forwards for and to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardingMode {
    /// Any client, any destination, any forwarding peer.
    Open,
    /// Only to and from the listed relays.
    Peers(Vec<RelayKey>),
    /// No forwarding in either direction (direct SENDs only).
    Off,
}

/// How long a finished forward's result is kept for FORWARD_STATUS.
pub const RESULT_TTL_SECS: u64 = 24 * 3600;

/// The dial gate of each destination being dialed (a plain mutex: never held across an
/// await).
type DialGates = std::sync::Mutex<HashMap<RelayKey, Arc<Mutex<()>>>>;

/// A forward's place at its destination's dial gate. Dropping it — when the forward is
/// done, or cancelled by its timeout — forgets the gate once nobody else holds it, so
/// destinations named once do not stay in the map.
struct DialTicket<'a> {
    gates: &'a DialGates,
    key: RelayKey,
    gate: Arc<Mutex<()>>,
}

impl<'a> DialTicket<'a> {
    fn take(gates: &'a DialGates, key: RelayKey) -> Self {
        let gate = gates
            .lock()
            .map(|mut map| map.entry(key).or_default().clone())
            // A poisoned map (a panic elsewhere) leaves this forward with a gate of its
            // own: it dials alone rather than not at all.
            .unwrap_or_default();
        DialTicket { gates, key, gate }
    }
}

impl Drop for DialTicket<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.gates.lock()
            && Arc::strong_count(&self.gate) == 2
            && map
                .get(&self.key)
                .is_some_and(|g| Arc::ptr_eq(g, &self.gate))
        {
            map.remove(&self.key);
        }
    }
}

/// The forwarding side's state.
pub struct Forwarder {
    node: Arc<Node>,
    peers: Mutex<HashMap<RelayKey, Arc<PeerConnection>>>,
    /// One dial at a time per destination: a burst of forwards to a destination with no
    /// live session waits for one connection attempt and then shares that session, so
    /// they reach the destination in order on one stream.
    dialing: DialGates,
    outbox_changed: Notify,
    results: watch::Sender<u64>,
    outbox_counts: std::sync::Mutex<(usize, HashMap<RelayKey, usize>)>,
    next_seq: std::sync::atomic::AtomicU64,
    /// Whether the operator was told once (at the default log level) why forwards to
    /// private destinations are refused.
    private_refusal_told: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

fn is_private(host: &Host) -> bool {
    match host {
        Host::Ipv4(b) => {
            let ip = std::net::Ipv4Addr::from(*b);
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Host::Ipv6(b) => {
            let ip = std::net::Ipv6Addr::from(*b);
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_private(&Host::Ipv4(v4.octets()));
            }
            ip.is_loopback()
                || ip.is_unspecified()
                || (b[0] & 0xfe) == 0xfc
                || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        }
        Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
    }
}

impl Forwarder {
    /// Builds the forwarder and counts what the outbox already holds.
    pub fn new(node: Arc<Node>, relay: &Relay) -> Self {
        let mut counts = (0usize, HashMap::new());
        let mut max_seq = 0;
        if let Ok(entries) = relay.store.read(|t| t.outbox()) {
            for (_, e) in entries {
                counts.0 += 1;
                max_seq = max_seq.max(e.seq);
                *counts.1.entry(*e.destination.key()).or_insert(0) += 1;
            }
        }
        Self {
            node,
            peers: Mutex::new(HashMap::new()),
            dialing: DialGates::default(),
            outbox_changed: Notify::new(),
            results: watch::channel(0).0,
            outbox_counts: std::sync::Mutex::new(counts),
            next_seq: std::sync::atomic::AtomicU64::new(max_seq + 1),
            private_refusal_told: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn policy_allows(&self, relay: &Relay, dest: &RelayAddress) -> Result<(), ErrorCode> {
        match &relay.config.forwarding {
            ForwardingMode::Off => return Err(ErrorCode::ForwardDenied),
            ForwardingMode::Peers(list) if !list.contains(dest.key()) => {
                return Err(ErrorCode::ForwardDenied);
            }
            _ => {}
        }
        // Every endpoint is dialled, so one private endpoint is enough to refuse. (A host
        // name is checked as written, not after resolution.)
        if !relay.config.forward_to_private && dest.endpoints().iter().any(|e| is_private(&e.host))
        {
            // Told once, without the address (addresses are never logged at info).
            if !self
                .private_refusal_told
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(
                    "refused to forward to a relay on a loopback, private or link-local \
                     address (FORWARD_DENIED); relays on one machine or a LAN need \
                     --forward-to-private"
                );
            }
            return Err(ErrorCode::ForwardDenied);
        }
        Ok(())
    }

    /// The live peer session to `dest`, if there is one.
    async fn live_peer(&self, dest: &RelayAddress) -> Option<Arc<PeerConnection>> {
        let peers = self.peers.lock().await;
        peers.get(dest.key()).filter(|p| p.is_alive()).cloned()
    }

    /// A peer session to `dest`: the live one, or a new one. `timeout` bounds the whole
    /// wait, the turn at the destination's dial gate included, so a burst of forwards to a
    /// destination that swallows dials is answered after one timeout, not one per forward.
    async fn peer(
        &self,
        dest: &RelayAddress,
        timeout: Duration,
    ) -> Result<Arc<PeerConnection>, ErrorCode> {
        if let Some(p) = self.live_peer(dest).await {
            return Ok(p);
        }
        tokio::time::timeout(timeout, self.dial_in_turn(dest))
            .await
            .map_err(|_| ErrorCode::Unreachable)?
    }

    /// Waits for the destination's dial gate (forwards queue behind one dial, first come
    /// first served, and then share its session), then dials unless a session is live by
    /// then. The map is not locked across a dial, so one slow destination does not stall
    /// forwards to the others.
    async fn dial_in_turn(&self, dest: &RelayAddress) -> Result<Arc<PeerConnection>, ErrorCode> {
        let ticket = DialTicket::take(&self.dialing, *dest.key());
        let _turn = ticket.gate.lock().await;
        if let Some(p) = self.live_peer(dest).await {
            return Ok(p);
        }
        let conn = PeerConnection::open(&self.node, dest)
            .await
            .map_err(|e| match e {
                petrel_federation::transport::connection::ConnectionError::Dial(
                    petrel_federation::transport::DialFailed::WrongKey { .. },
                ) => ErrorCode::KeyMismatch,
                other => {
                    tracing::debug!(error = %other, "peer session failed");
                    ErrorCode::Unreachable
                }
            })?;
        let conn = Arc::new(conn);
        self.peers.lock().await.insert(*dest.key(), conn.clone());
        Ok(conn)
    }

    async fn try_forward(
        &self,
        relay: &Arc<Relay>,
        dest: &RelayAddress,
        envelope: &SealedEnvelope,
    ) -> Result<ForwardReply, ErrorCode> {
        if dest.key() == &relay.keys.relay_key() {
            let via = relay.own_forwarder_hash();
            return Ok(match handle_forwarded(relay, via, envelope).await {
                Ok(sealed) => ForwardReply::Sealed(sealed),
                Err(code) => ForwardReply::Refused(code),
            });
        }
        let timeout = relay.config.limits.forward_timeout();
        let peer = self.peer(dest, timeout).await?;
        match tokio::time::timeout(timeout, peer.forward(envelope.clone())).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => Err(ErrorCode::Unreachable),
        }
    }

    /// FORWARD from a client.
    pub async fn forward(
        &self,
        relay: &Arc<Relay>,
        dest: RelayAddress,
        envelope: SealedEnvelope,
    ) -> Response {
        // §14.2's order: forwarding off, then this relay's own key (processed here, never
        // refused as a private destination), then the peer list and the private rule.
        if relay.config.forwarding == ForwardingMode::Off {
            return Response::Error(ErrorCode::ForwardDenied);
        }
        if dest.key() != &relay.keys.relay_key()
            && let Err(code) = self.policy_allows(relay, &dest)
        {
            return Response::Error(code);
        }
        // Arrival order, kept by the outbox if this forward has to wait there.
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // While older forwards to this destination wait in the outbox, newer ones queue
        // behind them instead of overtaking.
        let backlog = self
            .outbox_counts
            .lock()
            .map(|c| c.1.get(dest.key()).copied().unwrap_or(0) > 0)
            .unwrap_or(false);
        if !backlog {
            match self.try_forward(relay, &dest, &envelope).await {
                Ok(ForwardReply::Sealed(sealed)) => return Response::Forwarded(sealed),
                Ok(ForwardReply::Refused(code)) => return Response::Error(code),
                // A relay that proves another key is not the destination: never store for it.
                Err(ErrorCode::KeyMismatch) => return Response::Error(ErrorCode::KeyMismatch),
                Err(_) => {}
            }
        }
        // Unreachable now: keep it and keep trying.
        let limits = &relay.config.limits;
        {
            let Ok(mut counts) = self.outbox_counts.lock() else {
                return Response::Error(ErrorCode::Internal);
            };
            let per_dest = counts.1.get(dest.key()).copied().unwrap_or(0);
            if counts.0 >= limits.max_outbox || per_dest >= limits.max_outbox_per_destination {
                return Response::Error(ErrorCode::OutboxFull);
            }
            counts.0 += 1;
            *counts.1.entry(*dest.key()).or_insert(0) += 1;
        }
        let forward_id = MsgId::random(&mut rand::rng());
        let entry = crate::store::OutboxEntry {
            destination: dest.clone(),
            envelope,
            accepted_at: relay.clock().now(),
            attempts: u32::from(!backlog),
            seq,
        };
        let stored = relay
            .store
            .write(move |t| t.put_outbox(&forward_id, &entry))
            .await;
        if stored.is_err() {
            self.uncount(dest.key());
            return Response::Error(ErrorCode::Internal);
        }
        self.outbox_changed.notify_one();
        Response::Accepted { forward_id }
    }

    fn uncount(&self, key: &RelayKey) {
        if let Ok(mut counts) = self.outbox_counts.lock() {
            counts.0 = counts.0.saturating_sub(1);
            if let Some(n) = counts.1.get_mut(key) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// FORWARD_STATUS: the outcome, `PENDING`, or `NO_MESSAGE` for an unknown ID. With
    /// `wait_secs`, holds the answer while the forward is pending.
    pub async fn status(&self, relay: &Relay, forward_id: MsgId, wait_secs: u8) -> Response {
        let wait = Duration::from_secs(u64::from(
            wait_secs.min(petrel_federation::client::MAX_STATUS_WAIT_SECS),
        ));
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.results.subscribe();
        loop {
            let state = relay
                .store
                .read(|t| Ok((t.forward_result(&forward_id)?, t.in_outbox(&forward_id)?)));
            match state {
                Ok((Some(result), _)) => {
                    return match result.outcome {
                        Ok(sealed) => Response::Forwarded(sealed),
                        Err(code) => Response::Error(code),
                    };
                }
                Ok((None, true)) => {}
                Ok((None, false)) => return Response::Error(ErrorCode::NoMessage),
                Err(_) => return Response::Error(ErrorCode::Internal),
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Response::Pending;
            }
        }
    }

    /// RELAY_INFO for another relay: fetched over a peer session, verified by the client.
    pub async fn info(&self, relay: &Arc<Relay>, dest: RelayAddress) -> Response {
        if let Err(code) = self.policy_allows(relay, &dest) {
            return Response::Error(code);
        }
        let timeout = relay.config.limits.forward_timeout();
        let peer = match self.peer(&dest, timeout).await {
            Ok(p) => p,
            Err(code) => return Response::Error(code),
        };
        match tokio::time::timeout(timeout, peer.info()).await {
            Ok(Ok(Ok(info))) => Response::RelayInfo(info),
            Ok(Ok(Err(code))) => Response::Error(code),
            _ => Response::Error(ErrorCode::Unreachable),
        }
    }

    /// Retries the outbox until `stop` turns true. Entries go out per destination in the
    /// order the forwards arrived; the first one that still cannot be delivered holds back
    /// the rest for that destination until its next try, so an outage does not reorder a
    /// queue's messages.
    pub async fn run_outbox(self: Arc<Self>, relay: Arc<Relay>, mut stop: watch::Receiver<bool>) {
        let mut next_try: HashMap<RelayKey, tokio::time::Instant> = HashMap::new();
        let mut attempts: HashMap<RelayKey, u32> = HashMap::new();
        let limits = relay.config.limits.clone();
        loop {
            let mut entries = relay.store.read(|t| t.outbox()).unwrap_or_default();
            entries.sort_by_key(|(_, e)| e.seq);
            let now = tokio::time::Instant::now();
            let mut wake = now + Duration::from_secs(60);
            let mut blocked: std::collections::HashSet<RelayKey> = std::collections::HashSet::new();
            for (id, entry) in entries {
                let dest = *entry.destination.key();
                if blocked.contains(&dest) {
                    continue;
                }
                if let Some(&due) = next_try.get(&dest)
                    && due > now
                {
                    wake = wake.min(due);
                    blocked.insert(dest);
                    continue;
                }
                let clock_now = relay.clock().now();
                let outcome = if clock_now >= entry.accepted_at + limits.outbox_ttl_secs {
                    Some(Err(ErrorCode::Expired))
                } else {
                    match self
                        .try_forward(&relay, &entry.destination, &entry.envelope)
                        .await
                    {
                        Ok(ForwardReply::Sealed(s)) => Some(Ok(s)),
                        Ok(ForwardReply::Refused(code)) => Some(Err(code)),
                        Err(ErrorCode::KeyMismatch) => Some(Err(ErrorCode::KeyMismatch)),
                        Err(_) => None,
                    }
                };
                match outcome {
                    Some(outcome) => {
                        let result = crate::store::ForwardResult {
                            done_at: clock_now,
                            outcome,
                        };
                        if relay
                            .store
                            .write(move |t| t.finish_outbox(&id, &result))
                            .await
                            .is_ok()
                        {
                            self.uncount(&dest);
                            next_try.remove(&dest);
                            attempts.remove(&dest);
                            self.results.send_modify(|n| *n += 1);
                        }
                    }
                    None => {
                        let n = attempts.entry(dest).or_insert(0);
                        *n = n.saturating_add(1);
                        let backoff = limits
                            .forward_retry_min()
                            .saturating_mul(1u32 << (*n).min(16))
                            .min(limits.forward_retry_max());
                        let at = tokio::time::Instant::now() + backoff;
                        next_try.insert(dest, at);
                        wake = wake.min(at);
                        blocked.insert(dest);
                        let mut updated = entry.clone();
                        updated.attempts = updated.attempts.saturating_add(1);
                        let _ = relay
                            .store
                            .write(move |t| t.put_outbox(&id, &updated))
                            .await;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.outbox_changed.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// A forwarded SEND after its synchronous checks: answered already, or waiting for the
/// store commit.
pub enum ForwardJob {
    /// The answer is known (a replay, a refused command, a failed check inside the SEND).
    Ready(SealedResponse),
    /// The SEND is in the store's next commit.
    Pending(
        seal::ResponseSealer,
        std::pin::Pin<Box<dyn std::future::Future<Output = crate::service::Outcome> + Send>>,
    ),
}

impl std::fmt::Debug for ForwardJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForwardJob::Ready(_) => "Ready(..)",
            ForwardJob::Pending(..) => "Pending(..)",
        })
    }
}

fn seal_answer(
    relay: &Relay,
    sealer: &seal::ResponseSealer,
    response: &Response,
) -> SealedResponse {
    if let Response::Error(code) = response {
        relay.metrics.error(*code);
    }
    sealer.seal(response)
}

/// Destination side, synchronous part: opens an envelope, checks its age and replay tag,
/// and hands its SEND to the store (in call order, so forwards read in order are stored in
/// order). `via` is the hash of the relay that brought it.
pub fn begin_forwarded(
    relay: &Arc<Relay>,
    via: KeyHash,
    envelope: &SealedEnvelope,
) -> Result<ForwardJob, ErrorCode> {
    let (request, sealer) =
        seal::open_request(&relay.keys.sealing, envelope).map_err(|_| ErrorCode::Envelope)?;
    let now = relay.clock().now();
    if request.sent_at.saturating_add(FORWARD_MAX_AGE_SECS) < now
        || request.sent_at > now + FORWARD_MAX_SKEW_SECS
    {
        return Err(ErrorCode::Envelope);
    }
    let tag = seal::replay_tag(envelope);
    match relay.store.read(|t| t.replay_seen(&tag, now)) {
        Ok(true) => return Ok(ForwardJob::Ready(sealer.seal(&Response::Ok))),
        Ok(false) => {}
        Err(_) => return Err(ErrorCode::Internal),
    }
    if !matches!(request.command, Command::Send { .. }) {
        let answer = seal_answer(relay, &sealer, &Response::Error(ErrorCode::Prohibited));
        return Ok(ForwardJob::Ready(answer));
    }
    let origin = Origin {
        via,
        replay: Some((
            tag,
            request
                .sent_at
                .saturating_add(FORWARD_MAX_AGE_SECS + FORWARD_MAX_SKEW_SECS),
        )),
    };
    let prepared = relay.prepare(
        &mut SessionLimits::default(),
        &SessionId(envelope.ephemeral),
        request.auth.as_ref(),
        request.command,
        &origin,
    );
    Ok(match prepared {
        Prepared::Reply(r) => ForwardJob::Ready(seal_answer(relay, &sealer, &r)),
        Prepared::Pending(fut) => ForwardJob::Pending(sealer, fut),
        Prepared::Subscribe(_) => ForwardJob::Ready(seal_answer(
            relay,
            &sealer,
            &Response::Error(ErrorCode::Prohibited),
        )),
    })
}

/// Destination side, asynchronous part: waits for the commit and seals the answer.
pub async fn finish_forwarded(relay: &Relay, job: ForwardJob) -> SealedResponse {
    match job {
        ForwardJob::Ready(sealed) => sealed,
        ForwardJob::Pending(sealer, fut) => {
            let outcome = fut.await;
            if let Effect::Stored(rid) = outcome.effect {
                relay.metrics.message_stored();
                relay.wake(&rid);
            }
            seal_answer(relay, &sealer, &outcome.response)
        }
    }
}

/// Destination side, both parts (for a forward addressed to this relay itself).
pub async fn handle_forwarded(
    relay: &Arc<Relay>,
    via: KeyHash,
    envelope: &SealedEnvelope,
) -> Result<SealedResponse, ErrorCode> {
    let job = begin_forwarded(relay, via, envelope)?;
    Ok(finish_forwarded(relay, job).await)
}
