//! A sender's outbox: every message it has sealed and not yet seen confirmed, and what to do
//! with each answer. No I/O here — [`super::client`] submits the commands this hands out and
//! feeds the answers back, so the rules below are tested without a relay.
//!
//! The rules are a careful client's (§14.2: "`Accepted` is not delivery: the client keeps
//! the message in its own outbox until it holds a sealed `Ok`"):
//!
//! * a message is sealed **once**; every resubmission sends the identical envelope, so the
//!   destination recognises it by its replay tag and never stores it twice;
//! * `Forwarded` → open the sealed answer: `Ok` confirms; `QUOTA` (or another transient
//!   refusal) is retried after a pause; anything else is a final refusal (`rejected`);
//! * `Accepted { forward_id }` → long-poll FORWARD_STATUS until the outcome is known;
//! * a transient error from the forwarding relay (rate limit, full outbox, shutting down,
//!   internal, unreachable) → retry after a pause;
//! * FORWARD_STATUS `NO_MESSAGE` or `EXPIRED` → the forwarding relay forgot the forward, so
//!   forward the envelope again;
//! * no answer (the session ended) → after reconnecting, poll what was accepted and
//!   resubmit everything else ([`Outbox::resume`]);
//! * no answer in time on a live session → ask again.
//!
//! Every submission gets a fresh token; an answer carrying an older token (an answer from a
//! dead session, or to a command since superseded) is ignored.

use super::message::{Kind, Message};
use ed25519_dalek::SigningKey;
use petrel_federation::auth::Auth;
use petrel_federation::client::{Command, Response};
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener, SealedEnvelope};
use petrel_federation::{ErrorCode, MsgId, QueueId, RelayAddress};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Seconds a FORWARD_STATUS may wait for the outcome (long poll).
pub const STATUS_WAIT_SECS: u8 = 20;

/// How a submitted command ended, as far as the client can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The relay's answer.
    Response(Response),
    /// The session ended first.
    Closed,
    /// No answer within the client's patience, on a session that is still open.
    TimedOut,
    /// A retry pause ended.
    Timer,
}

/// What the client should do next for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Submit the envelope (again).
    Forward(u64),
    /// Ask the forwarding relay how the accepted forward ended.
    Status(u64),
    /// Wait a moment, then forward again.
    RetryLater(u64),
    /// Nothing (confirmed, refused, or a stale answer).
    Nothing,
}

/// Tallies of one sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderCounts {
    /// Messages sealed (Hello and data; not the end marker).
    pub sent: u64,
    /// Messages the destination confirmed with a sealed `Ok`.
    pub confirmed: u64,
    /// Forwards the forwarding relay answered `Accepted` (went to its outbox).
    pub outboxed: u64,
    /// Envelopes submitted again.
    pub resubmitted: u64,
    /// Final refusals.
    pub rejected: u64,
    /// FORWARD_STATUS polls.
    pub status_polls: u64,
}

struct Outgoing {
    end: bool,
    envelope: SealedEnvelope,
    opener: ResponseOpener,
    forward_id: Option<MsgId>,
    token: u64,
    submissions: u32,
}

/// One sender's unconfirmed messages.
pub struct Outbox {
    stream: u32,
    key: SigningKey,
    sender_id: QueueId,
    destination: RelayAddress,
    sealing: [u8; 32],
    next_seq: u64,
    next_token: u64,
    unconfirmed: BTreeMap<u64, Outgoing>,
    end_confirmed: bool,
    counts: SenderCounts,
    /// Why messages were refused (the first few).
    pub refusals: Vec<String>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("stream", &self.stream)
            .field("unconfirmed", &self.unconfirmed.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refusals worth retrying: nothing was stored, and the same envelope may succeed later.
fn transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Quota
            | ErrorCode::RateLimited
            | ErrorCode::OutboxFull
            | ErrorCode::Busy
            | ErrorCode::Internal
            | ErrorCode::Unreachable
    )
}

impl Outbox {
    /// An empty outbox for `stream`, writing to the queue `sender_id` at `destination`
    /// (whose sealing key is `sealing`), signing with `key` once the queue is secured.
    pub fn new(
        stream: u32,
        key: SigningKey,
        sender_id: QueueId,
        destination: RelayAddress,
        sealing: [u8; 32],
    ) -> Outbox {
        Outbox {
            stream,
            key,
            sender_id,
            destination,
            sealing,
            next_seq: 0,
            next_token: 0,
            unconfirmed: BTreeMap::new(),
            end_confirmed: false,
            counts: SenderCounts::default(),
            refusals: Vec::new(),
        }
    }

    /// Seals the next message: the unsigned Hello first (carrying the sender's key), signed
    /// messages after it. Returns its number.
    pub fn create(&mut self, kind: Kind, rng: &mut ChaCha8Rng) -> anyhow::Result<u64> {
        let seq = self.next_seq;
        let kind = match kind {
            Kind::Hello(_) => Kind::Hello(self.key.verifying_key().to_bytes()),
            other => other,
        };
        let message = Message {
            stream: self.stream,
            seq,
            kind,
        };
        let send = Command::Send {
            sender_id: self.sender_id,
            body: message.body()?,
        };
        let eph = EnvelopeKey::generate(rng);
        let auth = match kind {
            Kind::Hello(_) => None,
            Kind::Data | Kind::End => Some(Auth::sign(&self.key, &eph.public(), &send)?),
        };
        let request = ForwardedRequest {
            sent_at: now_unix(),
            auth,
            command: send,
        };
        let (envelope, opener) = eph.seal(&self.sealing, &request)?;
        self.next_seq += 1;
        let end = kind == Kind::End;
        if !end {
            self.counts.sent += 1;
        }
        self.unconfirmed.insert(
            seq,
            Outgoing {
                end,
                envelope,
                opener,
                forward_id: None,
                token: 0,
                submissions: 0,
            },
        );
        Ok(seq)
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The FORWARD for `seq` (the same envelope every time) and its token.
    pub fn forward(&mut self, seq: u64) -> Option<(u64, Command)> {
        let token = self.token();
        let o = self.unconfirmed.get_mut(&seq)?;
        if o.submissions > 0 {
            self.counts.resubmitted += 1;
        }
        o.submissions += 1;
        o.token = token;
        o.forward_id = None;
        Some((
            token,
            Command::Forward {
                destination: self.destination.clone(),
                envelope: o.envelope.clone(),
            },
        ))
    }

    /// The FORWARD_STATUS long poll for an accepted `seq` and its token.
    pub fn status(&mut self, seq: u64) -> Option<(u64, Command)> {
        let token = self.token();
        let o = self.unconfirmed.get_mut(&seq)?;
        let forward_id = o.forward_id?;
        o.token = token;
        self.counts.status_polls += 1;
        Some((
            token,
            Command::ForwardStatus {
                forward_id,
                wait_secs: STATUS_WAIT_SECS,
            },
        ))
    }

    /// A token for a retry pause of `seq` (supersedes whatever was in flight for it).
    pub fn retry_token(&mut self, seq: u64) -> Option<u64> {
        let token = self.token();
        let o = self.unconfirmed.get_mut(&seq)?;
        o.token = token;
        Some(token)
    }

    /// After reconnecting: poll every accepted forward, resubmit every other message, in
    /// order.
    pub fn resume(&self) -> Vec<Action> {
        self.unconfirmed
            .iter()
            .map(|(&seq, o)| match o.forward_id {
                Some(_) => Action::Status(seq),
                None => Action::Forward(seq),
            })
            .collect()
    }

    /// Feeds one answer back; `status` says whether it answers a FORWARD_STATUS (else a
    /// FORWARD or a retry pause).
    pub fn answer(&mut self, seq: u64, token: u64, status: bool, answer: Answer) -> Action {
        let Some(o) = self.unconfirmed.get_mut(&seq) else {
            return Action::Nothing;
        };
        if o.token != token {
            return Action::Nothing;
        }
        let response = match answer {
            Answer::Closed => return Action::Nothing,
            Answer::Timer => return Action::Forward(seq),
            Answer::TimedOut if status => return Action::Status(seq),
            Answer::TimedOut => return Action::Forward(seq),
            Answer::Response(r) => r,
        };
        match response {
            Response::Forwarded(sealed) => match o.opener.open(&sealed) {
                Ok(Response::Ok) => {
                    let end = o.end;
                    self.unconfirmed.remove(&seq);
                    if end {
                        self.end_confirmed = true;
                    } else {
                        self.counts.confirmed += 1;
                    }
                    Action::Nothing
                }
                Ok(Response::Error(code)) if transient(code) => Action::RetryLater(seq),
                Ok(other) => self.refuse(seq, format!("sealed answer {other:?}")),
                Err(e) => self.refuse(seq, format!("cannot open the sealed answer: {e}")),
            },
            Response::Accepted { forward_id } if !status => {
                o.forward_id = Some(forward_id);
                self.counts.outboxed += 1;
                Action::Status(seq)
            }
            Response::Pending if status => Action::Status(seq),
            Response::Error(ErrorCode::NoMessage | ErrorCode::Expired) if status => {
                Action::Forward(seq)
            }
            Response::Error(code) if transient(code) => Action::RetryLater(seq),
            other => self.refuse(seq, format!("answer {other:?}")),
        }
    }

    fn refuse(&mut self, seq: u64, why: String) -> Action {
        self.unconfirmed.remove(&seq);
        self.counts.rejected += 1;
        if self.refusals.len() < 5 {
            self.refusals
                .push(format!("stream {} message {seq}: {why}", self.stream));
        }
        Action::Nothing
    }

    /// Messages not yet confirmed (the end marker included).
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// True once the end marker is sealed.
    pub fn end_created(&self) -> bool {
        self.end_confirmed || self.unconfirmed.values().any(|o| o.end)
    }

    /// True once the destination confirmed the end marker.
    pub fn end_confirmed(&self) -> bool {
        self.end_confirmed
    }

    /// The tallies.
    pub fn counts(&self) -> SenderCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use petrel_federation::seal::open_request;
    use petrel_federation::{Endpoint, Host, RelayKey, TransportKind};
    use rand::SeedableRng;
    use x25519_dalek::{PublicKey, StaticSecret};

    struct Fixture {
        outbox: Outbox,
        sealing: StaticSecret,
        rng: ChaCha8Rng,
    }

    fn fixture() -> Fixture {
        let sealing = StaticSecret::from([9u8; 32]);
        let destination = RelayAddress::new(
            RelayKey([1; 32]),
            vec![Endpoint {
                transport: TransportKind::Tcp,
                host: Host::Ipv4([127, 0, 0, 1]),
                port: 1,
            }],
        )
        .unwrap();
        let outbox = Outbox::new(
            5,
            SigningKey::from_bytes(&[2; 32]),
            QueueId([3; 16]),
            destination,
            PublicKey::from(&sealing).to_bytes(),
        );
        Fixture {
            outbox,
            sealing,
            rng: ChaCha8Rng::seed_from_u64(1),
        }
    }

    /// The destination's sealed answer to the envelope of the last FORWARD.
    fn sealed(f: &Fixture, forward: &Command, response: Response) -> Response {
        let Command::Forward { envelope, .. } = forward else {
            panic!("not a FORWARD: {forward:?}");
        };
        let (request, sealer) = open_request(&f.sealing, envelope).unwrap();
        assert!(matches!(request.command, Command::Send { .. }));
        Response::Forwarded(sealer.seal(&response))
    }

    #[test]
    fn hello_is_unsigned_and_the_rest_signed() {
        let mut f = fixture();
        for kind in [Kind::Hello([0; 32]), Kind::Data, Kind::End] {
            let seq = f.outbox.create(kind, &mut f.rng).unwrap();
            let (_, forward) = f.outbox.forward(seq).unwrap();
            let Command::Forward { envelope, .. } = forward else {
                panic!()
            };
            let (request, _) = open_request(&f.sealing, &envelope).unwrap();
            assert_eq!(request.auth.is_some(), kind != Kind::Hello([0; 32]));
            let Command::Send { body, .. } = request.command else {
                panic!()
            };
            let m = Message::parse(&body).unwrap();
            assert_eq!(m.seq, seq);
            if let Kind::Hello(key) = m.kind {
                assert_eq!(
                    key,
                    SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes()
                );
            }
        }
        assert_eq!(f.outbox.counts().sent, 2);
    }

    #[test]
    fn accepted_then_polled_then_confirmed() {
        let mut f = fixture();
        let seq = f.outbox.create(Kind::Data, &mut f.rng).unwrap();
        let (t, forward) = f.outbox.forward(seq).unwrap();
        let accepted = Answer::Response(Response::Accepted {
            forward_id: MsgId([4; 16]),
        });
        assert_eq!(
            f.outbox.answer(seq, t, false, accepted),
            Action::Status(seq)
        );
        let (t, _) = f.outbox.status(seq).unwrap();
        let pending = Answer::Response(Response::Pending);
        assert_eq!(f.outbox.answer(seq, t, true, pending), Action::Status(seq));
        // The session ends: after reconnecting, the accepted forward is polled, not resent.
        let (t, _) = f.outbox.status(seq).unwrap();
        assert_eq!(
            f.outbox.answer(seq, t, true, Answer::Closed),
            Action::Nothing
        );
        assert_eq!(f.outbox.resume(), vec![Action::Status(seq)]);
        let (t, _) = f.outbox.status(seq).unwrap();
        let ok = sealed(&f, &forward, Response::Ok);
        assert_eq!(
            f.outbox.answer(seq, t, true, Answer::Response(ok)),
            Action::Nothing
        );
        assert_eq!(f.outbox.unconfirmed(), 0);
        let c = f.outbox.counts();
        assert_eq!((c.confirmed, c.outboxed, c.resubmitted), (1, 1, 0));
    }

    #[test]
    fn resubmissions_send_the_identical_envelope_and_stale_answers_are_ignored() {
        let mut f = fixture();
        let seq = f.outbox.create(Kind::Data, &mut f.rng).unwrap();
        let (t1, first) = f.outbox.forward(seq).unwrap();
        // No answer on a live session: forward again, the same bytes.
        assert_eq!(
            f.outbox.answer(seq, t1, false, Answer::TimedOut),
            Action::Forward(seq)
        );
        let (t2, second) = f.outbox.forward(seq).unwrap();
        assert_eq!(first, second);
        // The first submission's answer arrives late: ignored.
        let ok = sealed(&f, &first, Response::Ok);
        assert_eq!(
            f.outbox
                .answer(seq, t1, false, Answer::Response(ok.clone())),
            Action::Nothing
        );
        assert_eq!(f.outbox.unconfirmed(), 1);
        // QUOTA inside the sealed answer: retried later, still the same envelope.
        let quota = sealed(&f, &second, Response::Error(ErrorCode::Quota));
        assert_eq!(
            f.outbox.answer(seq, t2, false, Answer::Response(quota)),
            Action::RetryLater(seq)
        );
        let t3 = f.outbox.retry_token(seq).unwrap();
        assert_eq!(
            f.outbox.answer(seq, t3, false, Answer::Timer),
            Action::Forward(seq)
        );
        let (t4, third) = f.outbox.forward(seq).unwrap();
        assert_eq!(third, first);
        assert_eq!(
            f.outbox.answer(seq, t4, false, Answer::Response(ok)),
            Action::Nothing
        );
        assert_eq!(f.outbox.counts().resubmitted, 2);
        assert_eq!(f.outbox.counts().confirmed, 1);
    }

    #[test]
    fn final_refusals_are_counted_and_forgotten_forwards_resent() {
        let mut f = fixture();
        let a = f.outbox.create(Kind::Data, &mut f.rng).unwrap();
        let (t, forward) = f.outbox.forward(a).unwrap();
        let auth = sealed(&f, &forward, Response::Error(ErrorCode::Auth));
        assert_eq!(
            f.outbox.answer(a, t, false, Answer::Response(auth)),
            Action::Nothing
        );
        assert_eq!(f.outbox.counts().rejected, 1);
        assert_eq!(f.outbox.refusals.len(), 1);

        let b = f.outbox.create(Kind::Data, &mut f.rng).unwrap();
        let (t, _) = f.outbox.forward(b).unwrap();
        let accepted = Answer::Response(Response::Accepted {
            forward_id: MsgId([4; 16]),
        });
        f.outbox.answer(b, t, false, accepted);
        let (t, _) = f.outbox.status(b).unwrap();
        let forgotten = Answer::Response(Response::Error(ErrorCode::NoMessage));
        assert_eq!(f.outbox.answer(b, t, true, forgotten), Action::Forward(b));
        let busy = Answer::Response(Response::Error(ErrorCode::OutboxFull));
        let (t, _) = f.outbox.forward(b).unwrap();
        assert_eq!(f.outbox.answer(b, t, false, busy), Action::RetryLater(b));
    }
}
