//! A deterministic in-memory network for the sans-IO engine: model relays
//! (`relay.rs`), sessions as two FIFO pipes each, engines driven exactly as the real
//! driver drives them, a hand-advanced clock and one seeded RNG for everything.
//!
//! A step takes one frame off one pipe (chosen by the RNG), so frames of different
//! sessions interleave in every order while each session keeps TCP's order. Faults are
//! steps too: a session killed with frames in flight both ways, a relay restarted (every
//! session ends, its store stays), a delivery pushed twice.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod relay;

use petrel_client::contact::Secret;
use petrel_client::engine::{
    Connected, Effect, Engine, Event, LinkFailure, OpId, Reply, Request, RequestId, Snapshot,
};
use petrel_client::profile::Profile;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::{MsgId, RelayAddress, RelayKey};
use petrel_qr::{Invitation, Provenance};
use rand::RngExt as _;
use rand_chacha::ChaCha8Rng;
use relay::{ModelRelay, Out};
use std::collections::{BTreeMap, VecDeque};

pub struct Session {
    pub client: usize,
    pub relay: RelayKey,
    to_relay: VecDeque<(RequestId, Option<Secret>, Command)>,
    to_client: VecDeque<ToClient>,
}

enum ToClient {
    Answer(RequestId, Response),
    Push(RelayFrame),
}

pub struct Client {
    pub name: String,
    /// Requests answered with a failure because the client had no session for them.
    pub failed_answers: usize,
    pub engine: Engine,
    /// Up/down news for the engine, in order.
    net: VecDeque<(RelayKey, Option<String>)>,
    /// Answers to give at once (no session).
    failed: VecDeque<RequestId>,
    pub sessions: BTreeMap<RelayKey, u64>,
    pub done: BTreeMap<OpId, Result<Reply, String>>,
    pub events: Vec<Event>,
    pub persisted: usize,
}

pub struct Net {
    pub rng: ChaCha8Rng,
    pub now_ms: u64,
    pub relays: BTreeMap<RelayKey, ModelRelay>,
    pub sessions: BTreeMap<u64, Session>,
    next_session: u64,
    pub clients: Vec<Client>,
    /// FORWARD_STATUS held until its forward resolves: (session, request, relay, id).
    parked: Vec<(u64, RequestId, RelayKey, [u8; 16])>,
    /// What the last steps did, while a diagnosis is being taken (see `settle`).
    trace: Option<Vec<String>>,
    /// `PETREL_ENGINE_TRACE` set: every step, event and outcome goes to stderr.
    verbose: bool,
}

/// Steps one `settle` may take before it is declared livelocked. The longest settle of
/// the property test's 20 seeds takes under 1,000; a network that needs 20 times that
/// keeps doing the same thing over and over, and the panic says what.
pub const SETTLE_BUDGET: u64 = 20_000;

/// Steps traced for the panic message of a settle that ran out of budget.
const TRACE_STEPS: usize = 60;

/// A profile pinning `relays` (the first is its own), rotating every hour of the model's
/// clock.
pub fn profile(name: &str, relays: Vec<RelayAddress>) -> Profile {
    Profile {
        name: name.into(),
        display_name: name.into(),
        bio: None,
        relays,
        require_pinned_forwarding: false,
        rotation_secs: 3_600,
    }
}

fn short(key: &RelayKey) -> String {
    key.to_hex().chars().take(6).collect()
}

fn response_name(r: &Response) -> String {
    match r {
        Response::Error(code) => format!("ERROR({code:?})"),
        Response::Accepted { .. } => "ACCEPTED".into(),
        Response::Forwarded(_) => "FORWARDED".into(),
        other => {
            let text = format!("{other:?}");
            text.split(['(', ' ', '{'])
                .next()
                .unwrap_or("")
                .to_uppercase()
        }
    }
}

impl Net {
    pub fn new(rng: ChaCha8Rng, now_ms: u64) -> Self {
        Net {
            rng,
            now_ms,
            relays: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
            clients: Vec::new(),
            parked: Vec::new(),
            trace: None,
            verbose: std::env::var_os("PETREL_ENGINE_TRACE").is_some(),
        }
    }

    pub fn add_relay(&mut self, port: u16) -> petrel_federation::RelayAddress {
        let relay = ModelRelay::new(&mut self.rng, port);
        let address = relay.address.clone();
        self.relays.insert(relay.key, relay);
        address
    }

    pub fn add_client(&mut self, profile: Profile) -> usize {
        let name = profile.name.clone();
        let engine = Engine::new(profile, Snapshot::default(), self.now_ms, 0);
        self.clients.push(Client {
            name,
            failed_answers: 0,
            engine,
            net: VecDeque::new(),
            failed: VecDeque::new(),
            sessions: BTreeMap::new(),
            done: BTreeMap::new(),
            events: Vec::new(),
            persisted: 0,
        });
        let c = self.clients.len() - 1;
        self.effects(c);
        c
    }

    pub fn request(&mut self, c: usize, request: Request) -> OpId {
        let now = self.now_ms;
        self.note(|net| format!("{}: {request:?}", net.clients[c].name));
        let op = self.clients[c].engine.request(request, now, &mut self.rng);
        self.effects(c);
        op
    }

    /// The outcome of a finished request of client `c`.
    pub fn take_done(&mut self, c: usize, op: OpId) -> Result<Reply, String> {
        let name = self.clients[c].name.clone();
        self.clients[c]
            .done
            .remove(&op)
            .unwrap_or_else(|| panic!("{name}: request {op:?} did not finish"))
    }

    /// An invitation from `a`, for `b`.
    pub fn invite(&mut self, a: usize, b: usize) -> Invitation {
        let alias = Some(self.clients[b].name.clone());
        let op = self.request(a, Request::Invite { alias });
        self.settle(1_000);
        match self.take_done(a, op) {
            Ok(Reply::Invitation(i)) => i,
            other => panic!("invite: {other:?}"),
        }
    }

    /// `a` invites, `b` answers; both are connected after.
    pub fn pair(&mut self, a: usize, b: usize) {
        let invitation = self.invite(a, b);
        let (na, nb) = (self.clients[a].name.clone(), self.clients[b].name.clone());
        let op = self.request(
            b,
            Request::Connect {
                invitation,
                provenance: Provenance::Scanned,
                alias: Some(na.clone()),
            },
        );
        self.settle(5_000);
        match self.take_done(b, op) {
            Ok(Reply::Connected(Connected::Contact { alias, .. })) => assert_eq!(alias, na),
            other => panic!("connect: {other:?}"),
        }
        for (x, other) in [(a, &nb), (b, &na)] {
            let connected = self.clients[x]
                .events
                .iter()
                .any(|e| matches!(e, Event::Connected { contact } if contact == other));
            assert!(
                connected,
                "{} is not connected with {other}",
                self.clients[x].name
            );
        }
    }

    /// Client `c`'s contact called `alias`.
    pub fn engine_contact(&self, c: usize, alias: &str) -> &petrel_client::contact::Contact {
        self.clients[c].engine.contact(alias).unwrap()
    }

    /// The texts client `c` was shown from `from`, in order.
    pub fn shown(&self, c: usize, from: &str) -> Vec<String> {
        self.clients[c]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) if m.contact == from => Some(m.text.clone()),
                _ => None,
            })
            .collect()
    }

    /// Executes a client's effects, as the driver does.
    pub fn effects(&mut self, c: usize) {
        while let Some(effect) = self.clients[c].engine.poll_effect() {
            match effect {
                Effect::Connect { relay } => {
                    let key = *relay.key();
                    if self.relays[&key].up {
                        let id = self.next_session;
                        self.next_session += 1;
                        self.sessions.insert(
                            id,
                            Session {
                                client: c,
                                relay: key,
                                to_relay: VecDeque::new(),
                                to_client: VecDeque::new(),
                            },
                        );
                        self.clients[c].sessions.insert(key, id);
                        self.clients[c].net.push_back((key, None));
                    } else {
                        self.clients[c]
                            .net
                            .push_back((key, Some("connection refused".into())));
                    }
                }
                Effect::Transmit {
                    relay,
                    id,
                    signer,
                    command,
                } => match self.clients[c].sessions.get(&relay) {
                    Some(s) => self
                        .sessions
                        .get_mut(s)
                        .unwrap()
                        .to_relay
                        .push_back((id, signer, command)),
                    None => self.clients[c].failed.push_back(id),
                },
                Effect::Persist(_) => self.clients[c].persisted += 1,
                Effect::Event(e) => {
                    if !matches!(e, Event::Outbox(_)) {
                        self.note(|net| format!("{}: {e:?}", net.clients[c].name));
                    }
                    self.clients[c].events.push(e)
                }
                Effect::Done { op, result } => {
                    self.note(|net| format!("{}: done {op:?} {result:?}", net.clients[c].name));
                    self.clients[c]
                        .done
                        .insert(op, result.map_err(|e| e.to_string()));
                }
                _ => {}
            }
        }
    }

    /// Ends a session: frames in flight either way are lost.
    pub fn kill_session(&mut self, id: u64) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        self.note(|net| {
            format!(
                "kill session {id} ({} ↔ {})",
                net.clients[s.client].name,
                short(&s.relay)
            )
        });
        if let Some(r) = self.relays.get_mut(&s.relay) {
            r.session_ended(id);
        }
        self.parked.retain(|p| p.0 != id);
        let client = &mut self.clients[s.client];
        if client.sessions.get(&s.relay) == Some(&id) {
            client.sessions.remove(&s.relay);
            client
                .net
                .push_back((s.relay, Some("session ended".into())));
        }
    }

    pub fn set_relay_up(&mut self, key: RelayKey, up: bool) {
        self.note(|_| format!("relay {} {}", short(&key), if up { "up" } else { "down" }));
        if !up {
            let ids: Vec<u64> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.relay == key)
                .map(|(i, _)| *i)
                .collect();
            for id in ids {
                self.kill_session(id);
            }
            self.relays.get_mut(&key).unwrap().restart();
        }
        self.relays.get_mut(&key).unwrap().up = up;
    }

    fn route(&mut self, relay: RelayKey, session: u64, outs: Vec<Out>, id: RequestId) {
        let _ = relay;
        for o in outs {
            match o {
                Out::Answer(r) => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.to_client.push_back(ToClient::Answer(id, r));
                    }
                }
                Out::Push(target, frame) => {
                    if let Some(s) = self.sessions.get_mut(&target) {
                        s.to_client.push_back(ToClient::Push(frame));
                    }
                }
            }
        }
    }

    /// Routes pushes a relay made outside a command.
    pub fn route_pushes(&mut self, outs: Vec<Out>) {
        self.route(RelayKey([0; 32]), 0, outs, RequestId(0));
    }

    /// Something left to do without advancing the clock.
    pub fn busy(&self) -> bool {
        self.clients
            .iter()
            .any(|c| !c.net.is_empty() || !c.failed.is_empty())
            || self
                .sessions
                .values()
                .any(|s| !s.to_relay.is_empty() || !s.to_client.is_empty())
    }

    /// Records what a step did, while a diagnosis is being taken.
    fn note(&mut self, what: impl FnOnce(&Self) -> String) {
        if self.trace.is_some() || self.verbose {
            let line = format!("t={} {}", self.now_ms, what(self));
            if self.verbose {
                eprintln!("{line}");
            }
            if let Some(t) = self.trace.as_mut() {
                t.push(line);
            }
        }
    }

    /// One unit of work, chosen by the RNG among those possible. False if none.
    pub fn step(&mut self) -> bool {
        // Candidates: (kind, index)
        let mut work: Vec<(u8, u64)> = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            if !c.net.is_empty() || !c.failed.is_empty() {
                work.push((0, i as u64));
            }
        }
        for (id, s) in &self.sessions {
            if !s.to_relay.is_empty() {
                work.push((1, *id));
            }
            if !s.to_client.is_empty() {
                work.push((2, *id));
            }
        }
        let up = |k: &RelayKey| self.relays.get(k).is_some_and(|r| r.up);
        if self.relays.values().any(|r| r.can_forward(up)) {
            work.push((3, 0));
        }
        if work.is_empty() {
            return false;
        }
        let (kind, index) = work[self.rng.random_range(0..work.len())];
        let now = self.now_ms;
        match kind {
            0 => {
                let c = index as usize;
                let client = &mut self.clients[c];
                let name = client.name.clone();
                if let Some(id) = client.failed.pop_front() {
                    client.failed_answers += 1;
                    client
                        .engine
                        .handle_response(id, Err(LinkFailure::Closed), now, &mut self.rng);
                    self.note(|_| format!("{name}: request {} failed (no session)", id.0));
                } else if let Some((relay, down)) = client.net.pop_front() {
                    match &down {
                        None => client.engine.relay_up(&relay, now, &mut self.rng),
                        Some(reason) => {
                            client.engine.relay_down(&relay, reason, now, &mut self.rng)
                        }
                    }
                    self.note(|_| format!("{name}: relay {} {down:?}", short(&relay)));
                }
                self.effects(c);
            }
            1 => {
                let s = self.sessions.get_mut(&index).unwrap();
                let (id, signer, command) = s.to_relay.pop_front().unwrap();
                let (relay_key, c) = (s.relay, s.client);
                self.note(|net| {
                    format!(
                        "{} → {} (session {index}): request {} {}",
                        net.clients[c].name,
                        short(&relay_key),
                        id.0,
                        command.name()
                    )
                });
                if let Command::ForwardStatus { forward_id, .. } = &command
                    && !self.relays[&relay_key].parked_done(&forward_id.0)
                {
                    self.parked.push((index, id, relay_key, forward_id.0));
                    self.note(|_| "  parked".into());
                    return true;
                }
                let mut relay = self.relays.remove(&relay_key).unwrap();
                let outs = relay.command(
                    index,
                    signer,
                    command,
                    now / 1000,
                    &mut self.relays,
                    &mut self.rng,
                );
                self.relays.insert(relay_key, relay);
                self.route(relay_key, index, outs, id);
            }
            2 => {
                let s = self.sessions.get_mut(&index).unwrap();
                let frame = s.to_client.pop_front().unwrap();
                let (c, relay) = (s.client, s.relay);
                let what = match &frame {
                    ToClient::Answer(id, r) => format!("answer {} {}", id.0, response_name(r)),
                    ToClient::Push(RelayFrame::Deliver(_)) => "push DELIVER".into(),
                    ToClient::Push(f) => format!("push {f:?}"),
                };
                self.note(|net| {
                    format!(
                        "{} → {} (session {index}): {what}",
                        short(&relay),
                        net.clients[c].name
                    )
                });
                let engine = &mut self.clients[c].engine;
                match frame {
                    ToClient::Answer(id, r) => {
                        engine.handle_response(id, Ok(r), now, &mut self.rng)
                    }
                    ToClient::Push(f) => engine.handle_push(&relay, f, now, &mut self.rng),
                }
                self.effects(c);
            }
            _ => {
                let keys: Vec<RelayKey> = self.relays.keys().copied().collect();
                let mut resolved = 0;
                for key in keys {
                    let mut relay = self.relays.remove(&key).unwrap();
                    let (n, pushes) = relay.forward_pending(&mut self.relays, &mut self.rng);
                    resolved += n;
                    self.relays.insert(key, relay);
                    for (dest, o) in pushes {
                        self.route(dest, 0, vec![o], RequestId(0));
                    }
                }
                self.note(|_| format!("relays forward: {resolved} resolved"));
                self.release_parked(false);
            }
        }
        true
    }

    /// Answers parked FORWARD_STATUS requests whose forward resolved (all of them with
    /// `timeout`, as a long poll's end does).
    pub fn release_parked(&mut self, timeout: bool) {
        let parked = std::mem::take(&mut self.parked);
        for (session, id, relay_key, fid) in parked {
            if !timeout && !self.relays[&relay_key].parked_done(&fid) {
                self.parked.push((session, id, relay_key, fid));
                continue;
            }
            let command = Command::ForwardStatus {
                forward_id: MsgId(fid),
                wait_secs: 0,
            };
            let mut relay = self.relays.remove(&relay_key).unwrap();
            let outs = relay.command(
                session,
                None,
                command,
                self.now_ms / 1000,
                &mut self.relays,
                &mut self.rng,
            );
            self.relays.insert(relay_key, relay);
            self.route(relay_key, session, outs, id);
        }
    }

    /// Moves the clock to the next engine deadline (at most `max_ms` ahead) and fires it.
    pub fn advance(&mut self, max_ms: u64) {
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.engine.poll_timeout())
            .min()
            .unwrap_or(self.now_ms + max_ms);
        self.now_ms = next.clamp(self.now_ms, self.now_ms + max_ms);
        self.fire_timeouts();
    }

    /// Moves the clock `ms` ahead at once, past any deadline (a machine waking from sleep),
    /// and fires what is due: periodic rotations and expiries happen in a run this way.
    pub fn jump(&mut self, ms: u64) {
        self.now_ms += ms;
        self.note(|_| format!("clock jumps {ms} ms"));
        self.fire_timeouts();
    }

    /// Ends the parked long polls and hands every engine whose deadline passed its timeout.
    fn fire_timeouts(&mut self) {
        self.release_parked(true);
        let now = self.now_ms;
        for c in 0..self.clients.len() {
            if self.clients[c]
                .engine
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[c].engine.handle_timeout(now, &mut self.rng);
                self.note(|net| format!("{}: timeout", net.clients[c].name));
                self.effects(c);
            }
        }
    }

    /// Runs until nothing is left to do and no engine deadline falls within `horizon_ms`.
    ///
    /// Every step and every clock advance counts against [`SETTLE_BUDGET`]; past it the
    /// network is livelocked (something keeps producing work without progress), and the
    /// panic shows what the next steps do, so a livelock fails at once instead of hanging.
    pub fn settle(&mut self, horizon_ms: u64) {
        let end = self.now_ms + horizon_ms;
        let mut spent = 0u64;
        loop {
            while self.step() {
                spent += 1;
                self.check_budget(spent);
            }
            let next = self
                .clients
                .iter()
                .filter_map(|c| c.engine.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => self.advance(t.saturating_sub(self.now_ms).max(1)),
                _ => break,
            }
            spent += 1;
            self.check_budget(spent);
        }
    }

    fn check_budget(&mut self, spent: u64) {
        if spent < SETTLE_BUDGET || self.trace.is_some() {
            return;
        }
        // Take a diagnosis: trace the next steps (advancing the clock as settle would).
        self.trace = Some(Vec::new());
        let mut n = 0;
        while n < TRACE_STEPS {
            if !self.step() {
                self.advance(1);
            }
            n += 1;
        }
        let trace = self.trace.take().unwrap_or_default();
        let outboxes: Vec<String> = self
            .clients
            .iter()
            .map(|c| format!("{} {:?}", c.name, c.engine.outbox_state()))
            .collect();
        let deadlines: Vec<String> = self
            .clients
            .iter()
            .map(|c| format!("{} {:?}", c.name, c.engine.poll_timeout()))
            .collect();
        panic!(
            "the network does not settle: {SETTLE_BUDGET} steps at t={} ms and still busy \
             (outboxes: {}; deadlines: {}; {} parked FORWARD_STATUS; forwards held: {}). \
             The next {TRACE_STEPS} steps:\n{}",
            self.now_ms,
            outboxes.join(", "),
            deadlines.join(", "),
            self.parked.len(),
            self.relays
                .values()
                .map(|r| r.forwards.len().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            trace.join("\n")
        );
    }

    /// The end state, for the message of a failed check: outboxes, contacts and their
    /// queues, the last notices, what every relay holds.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for c in &self.clients {
            let links: Vec<String> = c
                .engine
                .relay_status()
                .iter()
                .map(|(a, up)| format!("{}{}", short(a.key()), if *up { "↑" } else { "↓" }))
                .collect();
            out += &format!(
                "{}: {:?}, links {}\n",
                c.name,
                c.engine.outbox_state(),
                links.join(" ")
            );
            for k in c.engine.contacts() {
                let q = |qs: &[petrel_client::contact::OwnQueue]| {
                    qs.iter()
                        .map(|q| format!("{}@{}", hex(&q.recipient_id.0), short(q.relay.key())))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                out += &format!(
                    "  {} {:?}: inbound [{}] retired [{}] outbound {}@{}\n",
                    k.alias,
                    k.state,
                    q(&k.inbound),
                    q(&k.retired),
                    hex(&k.outbound.sender_id.0),
                    short(k.outbound.relay.key()),
                );
            }
            let notices: Vec<&String> = c
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Notice(n) => Some(n),
                    _ => None,
                })
                .collect();
            for n in notices.iter().skip(notices.len().saturating_sub(8)) {
                out += &format!("  notice: {n}\n");
            }
        }
        for r in self.relays.values() {
            out += &format!("relay {}: {}\n", short(&r.key), r.describe());
        }
        out
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().take(3).map(|x| format!("{x:02x}")).collect()
}
