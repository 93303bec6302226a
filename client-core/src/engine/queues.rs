//! New queues this profile will read: CREATE (subscribed at once) → SECURE with a sender
//! key minted for the contact → RESTRICT when the profile asks that contacts reach it
//! only through its pinned relays → whoever asked for the queue.
//!
//! An invitation queue stops after CREATE: it is secured later, with the key its first
//! answer brings (`pairing`). Each step is one request; its continuation carries the keys
//! made so far, so an answer that never comes (the session ended) only reports the
//! failure to whoever asked — a half-made queue on the relay expires unused.

use super::{Engine, Error, OpId, Pending};
use crate::contact::{OwnQueue, Secret};
use crate::payload::QueueRef;
use petrel_federation::client::{Command, Response};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::{ErrorCode, KeyHash, RelayAddress, RelayKey};
use petrel_qr::{Invitation, Provenance};
use rand_core::CryptoRng;

/// Who asked for a queue.
pub(super) enum Purpose {
    Invite {
        op: OpId,
        alias: Option<String>,
    },
    ConnectReply {
        op: OpId,
        invitation: Invitation,
        provenance: Provenance,
        alias: Option<String>,
    },
    Rotation {
        op: Option<OpId>,
        contact: [u8; 16],
    },
}

/// Where a queue's set-up stands.
pub(super) enum Step {
    Create {
        relay: RelayAddress,
        recipient_key: Secret,
        dh: x25519_dalek::StaticSecret,
        recipient_dh: [u8; 32],
        purpose: Purpose,
    },
    Secure {
        queue: OwnQueue,
        sender: Secret,
        purpose: Purpose,
    },
    Restrict {
        queue: OwnQueue,
        sender: Secret,
        purpose: Purpose,
    },
}

impl Step {
    fn purpose(self) -> Purpose {
        match self {
            Step::Create { purpose, .. }
            | Step::Secure { purpose, .. }
            | Step::Restrict { purpose, .. } => purpose,
        }
    }
}

pub(super) fn random_secret<R: CryptoRng + ?Sized>(rng: &mut R) -> Secret {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    Secret(b)
}

impl Engine {
    /// Starts a queue on `relay` for `purpose`; an error if the relay has no session.
    pub(super) fn start_queue<R: CryptoRng + ?Sized>(
        &mut self,
        relay: RelayAddress,
        purpose: Purpose,
        rng: &mut R,
    ) -> Result<(), Error> {
        let recipient_key = random_secret(rng);
        let dh = x25519_dalek::StaticSecret::from(random_secret(rng).0);
        let recipient_dh = x25519_dalek::PublicKey::from(&dh).to_bytes();
        let command = Command::Create {
            recipient_key: recipient_key.signing_key().verifying_key().to_bytes(),
            recipient_dh,
            subscribe: true,
            password: None,
        };
        let key = *relay.key();
        let step = Step::Create {
            relay: relay.clone(),
            recipient_key: recipient_key.clone(),
            dh,
            recipient_dh,
            purpose,
        };
        if self.transmit(
            &key,
            Some(recipient_key),
            command,
            Pending::Queue(Box::new(step)),
        ) {
            Ok(())
        } else {
            Err(Error::RelayUnreachable {
                relay: relay.to_string(),
                reason: "no session with it now".into(),
            })
        }
    }

    pub(super) fn queue_step<R: CryptoRng + ?Sized>(
        &mut self,
        relay: RelayKey,
        step: Step,
        response: Response,
        rng: &mut R,
    ) {
        let address = self
            .links
            .address(&relay)
            .map_or_else(|| relay.to_hex(), ToString::to_string);
        match (step, response) {
            (
                Step::Create {
                    relay,
                    recipient_key,
                    dh,
                    recipient_dh,
                    purpose,
                },
                Response::Created(created),
            ) => {
                let Ok(delivery) =
                    DeliveryKey::derive(&dh, &recipient_dh, &created.relay_dh, &created.relay_dh)
                else {
                    return self.queue_refused(purpose, &address, "CREATE", ErrorCode::Malformed);
                };
                let queue = OwnQueue {
                    relay,
                    recipient_id: created.recipient_id,
                    sender_id: created.sender_id,
                    recipient_key,
                    delivery_key: Secret(*delivery.as_bytes()),
                    created_at: self.app_secs(),
                };
                if let Purpose::Invite { op, alias } = purpose {
                    return self.finish_invite(op, alias, queue, rng);
                }
                let sender = random_secret(rng);
                let command = Command::Secure {
                    recipient_id: queue.recipient_id,
                    sender_key_hash: KeyHash::of(&sender.signing_key().verifying_key().to_bytes()),
                };
                let signer = queue.recipient_key.clone();
                let next = Step::Secure {
                    queue,
                    sender,
                    purpose,
                };
                if !self.transmit(
                    &relay_key(&next),
                    Some(signer),
                    command,
                    Pending::Queue(Box::new(next)),
                ) {
                    // Only reachable if the session vanished between two inputs; the
                    // continuation is gone with it.
                    self.notice("a new queue could not be secured: its relay went away");
                }
            }
            (
                Step::Secure {
                    queue,
                    sender,
                    purpose,
                },
                Response::Ok | Response::Error(ErrorCode::Duplicate),
            ) => {
                if self.profile.require_pinned_forwarding {
                    let command = Command::Restrict {
                        recipient_id: queue.recipient_id,
                        forwarders: self
                            .profile
                            .relays
                            .iter()
                            .map(|r| *r.key())
                            .take(8)
                            .collect(),
                    };
                    let signer = queue.recipient_key.clone();
                    let next = Step::Restrict {
                        queue,
                        sender,
                        purpose,
                    };
                    self.transmit(
                        &relay_key(&next),
                        Some(signer),
                        command,
                        Pending::Queue(Box::new(next)),
                    );
                } else {
                    self.queue_ready(queue, sender, purpose, rng);
                }
            }
            (
                Step::Restrict {
                    queue,
                    sender,
                    purpose,
                },
                Response::Ok,
            ) => self.queue_ready(queue, sender, purpose, rng),
            (step, Response::Error(code)) => {
                let command = match step {
                    Step::Create { .. } => "CREATE",
                    Step::Secure { .. } => "SECURE",
                    Step::Restrict { .. } => "RESTRICT",
                };
                self.queue_refused(step.purpose(), &address, command, code);
            }
            (step, _) => {
                let error = Error::Unexpected {
                    relay: address,
                    command: "CREATE",
                };
                self.queue_error(step.purpose(), error);
            }
        }
    }

    /// The queue is made, secured (and restricted): hand it over.
    fn queue_ready<R: CryptoRng + ?Sized>(
        &mut self,
        queue: OwnQueue,
        sender: Secret,
        purpose: Purpose,
        rng: &mut R,
    ) {
        let reference = QueueRef {
            relay: queue.relay.clone(),
            sender_id: queue.sender_id,
            sender_key: sender.0,
            direct: self.profile.require_pinned_forwarding,
        };
        match purpose {
            Purpose::Invite { op, alias } => self.finish_invite(op, alias, queue, rng),
            Purpose::ConnectReply {
                op,
                invitation,
                provenance,
                alias,
            } => self.finish_connect(op, invitation, provenance, alias, queue, reference, rng),
            Purpose::Rotation { op, contact } => {
                self.finish_rotation(op, contact, queue, reference, rng)
            }
        }
    }

    pub(super) fn queue_failed(&mut self, relay: RelayKey, step: Step, reason: &str) {
        let error = Error::RelayUnreachable {
            relay: self
                .links
                .address(&relay)
                .map_or_else(|| relay.to_hex(), ToString::to_string),
            reason: reason.to_string(),
        };
        self.queue_error(step.purpose(), error);
    }

    fn queue_refused(
        &mut self,
        purpose: Purpose,
        relay: &str,
        command: &'static str,
        code: ErrorCode,
    ) {
        let error = Error::RelayRefused {
            relay: relay.to_string(),
            command,
            code,
        };
        self.queue_error(purpose, error);
    }

    fn queue_error(&mut self, purpose: Purpose, error: Error) {
        match purpose {
            Purpose::Invite { op, .. } | Purpose::ConnectReply { op, .. } => {
                self.done(op, Err(error))
            }
            Purpose::Rotation { op, contact } => {
                self.rotating.remove(&contact);
                match op {
                    Some(op) => self.done(op, Err(error)),
                    None => self.notice(format!("a queue rotation is postponed: {error}")),
                }
            }
        }
    }
}

fn relay_key(step: &Step) -> RelayKey {
    match step {
        Step::Create { relay, .. } => *relay.key(),
        Step::Secure { queue, .. } | Step::Restrict { queue, .. } => *queue.relay.key(),
    }
}
