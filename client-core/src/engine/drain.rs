//! Reading every queue to its end, and knowing when nothing is under way: what a one-shot
//! `petrel` command needs (`petrel sync` reads what waits and exits; `petrel send` exits
//! once its message is at a relay). `petrel serve` needs neither: it is always
//! subscribed and never ends.
//!
//! ```text
//!  Request::Sync ──► receiving on: SUB every queue on every up session
//!                    GET every queue read now ──► Empty ────────────► drained
//!                                             └─► Message ──► (its push is processed,
//!                                                              ACKed) ──ACK answered──► GET again
//! ```
//!
//! A subscription alone cannot tell an empty queue from a delivery still on its way (the
//! push follows SUB's `Ok`); a GET can: it answers from the relay's store, `Empty` or the
//! queue's current message. The message itself is taken from its push (a subscribed
//! session always gets it), so it is processed once; after its ACK is answered the queue
//! is asked again. While draining, every new subscription (a rotation's next queue) and
//! every answered ACK is followed by a GET, so a message that arrives meanwhile is read
//! too.
//!
//! [`Engine::is_settled`] says when nothing more can happen without new input: no
//! command waits for an answer (keep-alive PINGs and FORWARD_STATUS long polls aside), no
//! session is being opened, no queue is being drained, no receipt or housekeeping is due.

use super::{Engine, Pending};
use crate::contact::OwnQueue;
use petrel_federation::QueueId;
use petrel_federation::client::{Command, Response};

/// A queue being drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// Its GET is in flight.
    Asked,
    /// The GET found a message; the queue is asked again once a delivery from it has
    /// been acknowledged.
    AwaitingAck,
    /// An ACK was answered while the GET was in flight: its answer may name the message
    /// just acknowledged (replies come in any order), so the queue is asked again
    /// whatever it says.
    Stale,
}

impl Engine {
    /// `Request::Sync`: receive from now on, and read every queue until it is empty.
    pub(super) fn start_sync(&mut self) {
        self.receiving = true;
        self.draining = true;
        let up: Vec<_> = self
            .links
            .status()
            .into_iter()
            .filter(|(_, up)| *up)
            .map(|(r, _)| *r.key())
            .collect();
        for relay in &up {
            self.subscribe_all(relay);
        }
        for queue in self.read_now() {
            self.probe(&queue);
        }
    }

    /// Every queue whose messages are read now: the invitations', and each contact's
    /// oldest inbound queue (`inbound`).
    fn read_now(&self) -> Vec<OwnQueue> {
        let mut queues: Vec<OwnQueue> =
            self.invitations.values().map(|i| i.queue.clone()).collect();
        queues.extend(
            self.contacts
                .values()
                .filter_map(|c| c.inbound.first().cloned()),
        );
        queues
    }

    /// GETs `queue`, if the engine is draining and the queue is read now.
    pub(super) fn probe(&mut self, queue: &OwnQueue) {
        if !self.draining {
            return;
        }
        if let Some(state @ (Probe::Asked | Probe::Stale)) =
            self.probing.get_mut(&queue.recipient_id)
        {
            // One GET at a time per queue; a request to ask again while one is in flight
            // makes its answer stale.
            *state = Probe::Stale;
            return;
        }
        if !self.is_read_now(&queue.recipient_id) {
            return;
        }
        let command = Command::Get {
            recipient_id: queue.recipient_id,
        };
        let sent = self.transmit(
            queue.relay.key(),
            Some(queue.recipient_key.clone()),
            command,
            Pending::Probe {
                recipient_id: queue.recipient_id,
            },
        );
        if sent {
            self.probing.insert(queue.recipient_id, Probe::Asked);
        } else {
            self.probing.remove(&queue.recipient_id);
        }
    }

    fn is_read_now(&self, recipient_id: &QueueId) -> bool {
        self.invitations.contains_key(recipient_id)
            || self
                .contacts
                .values()
                .any(|c| c.inbound.first().map(|q| &q.recipient_id) == Some(recipient_id))
    }

    /// Forgets the drain of queues no longer read (a rotation retired the queue, with what
    /// it still held; an invitation became a contact's queue keeps its ID and its drain).
    pub(super) fn forget_unread_probes(&mut self) {
        if self.probing.is_empty() {
            return;
        }
        let gone: Vec<QueueId> = self
            .probing
            .keys()
            .filter(|id| !self.is_read_now(id))
            .copied()
            .collect();
        for id in gone {
            self.probing.remove(&id);
        }
    }

    /// A GET's answer: `Empty` ends the queue's drain, a message waits for its push.
    pub(super) fn probe_answered(&mut self, recipient_id: QueueId, response: Response) {
        let stale = self.probing.remove(&recipient_id) == Some(Probe::Stale);
        if stale {
            if let Some((queue, _)) = self.find_queue(&recipient_id) {
                self.probe(&queue);
            }
            return;
        }
        if let Response::Message(_) = response {
            self.probing.insert(recipient_id, Probe::AwaitingAck);
        }
        // Empty, or the queue is gone (AUTH, reported by its SUB): drained.
    }

    /// A GET that got no answer: the session ended, so there is nothing more to read there
    /// now (the relay is reported down).
    pub(super) fn probe_failed(&mut self, recipient_id: QueueId) {
        self.probing.remove(&recipient_id);
    }

    /// An ACK of a delivery from `recipient_id` was answered: while draining, ask the
    /// queue again (the next message, if any, is its current one now).
    pub(super) fn ack_done(&mut self, recipient_id: QueueId) {
        if !self.draining {
            return;
        }
        match self.find_queue(&recipient_id) {
            Some((queue, _)) => self.probe(&queue),
            None => {
                self.probing.remove(&recipient_id);
            }
        }
    }

    /// Whether nothing is under way that would end on its own: see the module
    /// documentation. A one-shot command may stop the engine then without cutting short
    /// anything it started.
    pub fn is_settled(&self, now_ms: u64) -> bool {
        self.effects.is_empty()
            && self.held.is_empty()
            && self.probing.is_empty()
            && self.rotating.is_empty()
            && self.receipt_due.is_none()
            && self.housekeeping_due > now_ms
            && !self.links.any_connecting()
            && self
                .pending
                .values()
                .all(|(_, p)| matches!(p, Pending::Ping | Pending::ForwardStatus { .. }))
    }
}
