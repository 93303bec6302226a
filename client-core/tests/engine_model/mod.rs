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
    Effect, Engine, Event, LinkFailure, OpId, Reply, Request, RequestId, Snapshot,
};
use petrel_client::profile::Profile;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::{MsgId, RelayKey};
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
        let op = self.clients[c].engine.request(request, now, &mut self.rng);
        self.effects(c);
        op
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
                Effect::Event(e) => self.clients[c].events.push(e),
                Effect::Done { op, result } => {
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
        if self.relays.values().any(|r| !r.forwards.is_empty()) {
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
                if let Some(id) = client.failed.pop_front() {
                    client
                        .engine
                        .handle_response(id, Err(LinkFailure::Closed), now, &mut self.rng);
                } else if let Some((relay, down)) = client.net.pop_front() {
                    match down {
                        None => client.engine.relay_up(&relay, now, &mut self.rng),
                        Some(reason) => {
                            client
                                .engine
                                .relay_down(&relay, &reason, now, &mut self.rng)
                        }
                    }
                }
                self.effects(c);
            }
            1 => {
                let s = self.sessions.get_mut(&index).unwrap();
                let (id, signer, command) = s.to_relay.pop_front().unwrap();
                let relay_key = s.relay;
                if let Command::ForwardStatus { forward_id, .. } = &command
                    && !self.relays[&relay_key].parked_done(&forward_id.0)
                {
                    self.parked.push((index, id, relay_key, forward_id.0));
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
                for key in keys {
                    let mut relay = self.relays.remove(&key).unwrap();
                    let pushes = relay.forward_pending(&mut self.relays, &mut self.rng);
                    self.relays.insert(key, relay);
                    for (dest, o) in pushes {
                        self.route(dest, 0, vec![o], RequestId(0));
                    }
                }
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
        self.release_parked(true);
        let now = self.now_ms;
        for c in 0..self.clients.len() {
            if self.clients[c]
                .engine
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[c].engine.handle_timeout(now, &mut self.rng);
                self.effects(c);
            }
        }
    }

    /// Runs until nothing is left to do and no engine deadline falls within `horizon_ms`.
    pub fn settle(&mut self, horizon_ms: u64) {
        let end = self.now_ms + horizon_ms;
        let mut guard = 0u64;
        loop {
            while self.step() {
                guard += 1;
                assert!(guard < 2_000_000, "the network does not settle");
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
            guard += 1;
        }
    }
}
