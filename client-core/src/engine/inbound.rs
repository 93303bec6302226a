//! What arrives: deliveries pushed on a subscribed queue, opened (layer 3), decrypted by
//! the contact's ratchet (layer 1), acted on, persisted — and only then ACKed, so that the
//! relay's next push is the next message and a crash before the ACK only brings a
//! redelivery that the ratchet recognises as a duplicate.
//!
//! Texts are shown once (the ratchet refuses replays, and recent message IDs catch a
//! message re-sealed by its sender) and confirmed with a receipt, held back for
//! [`RECEIPT_DELAY_MS`](super::RECEIPT_DELAY_MS) so one receipt covers a burst. The
//! other payloads drive the handshake (`HelloReply`), rotation (`NewQueue`, `Switched`),
//! re-keying (`Rekey`) and the contact's card (`Profile`).

use super::{Engine, Event, MessageView, Pending};
use crate::contact::{CONTACTS, ContactState, Direction, MESSAGES, Message, OwnQueue, seq_key};
use crate::payload::Payload;
use crate::ratchet::{Order, RatchetError, RekeyRole};
use crate::store::Batch;
use petrel_federation::client::{Command, Delivery, Response};
use petrel_federation::delivery::DeliveryKind;
use petrel_federation::{ErrorCode, MsgId, QueueId, RelayKey};
use rand_core::CryptoRng;

/// Who reads a queue.
#[derive(Clone, Copy, Debug)]
pub(super) enum Owner {
    Invitation,
    Contact([u8; 16]),
}

impl Engine {
    /// The queue with this recipient ID and who reads it.
    pub(super) fn find_queue(&self, recipient_id: &QueueId) -> Option<(OwnQueue, Owner)> {
        if let Some(i) = self.invitations.get(recipient_id) {
            return Some((i.queue.clone(), Owner::Invitation));
        }
        self.contacts.values().find_map(|c| {
            c.inbound
                .iter()
                .find(|q| q.recipient_id == *recipient_id)
                .map(|q| (q.clone(), Owner::Contact(c.id)))
        })
    }

    /// Whether `recipient_id` is the contact's queue read now: its oldest inbound queue.
    /// During a rotation the contact writes to the old queue up to its `Switched` and to
    /// the new one after it, so the queues are read one after the other, in that order.
    fn reads_now(&self, contact: &[u8; 16], recipient_id: &QueueId) -> bool {
        self.contacts
            .get(contact)
            .and_then(|c| c.inbound.first())
            .is_none_or(|q| q.recipient_id == *recipient_id)
    }

    /// ACKs a delivery on the session that brought it (unsigned: that session proved the
    /// queue with its SUB, `specs/protocol.md` §11).
    pub(super) fn ack(&mut self, recipient_id: &QueueId, msg_id: MsgId) {
        let Some((queue, _)) = self.find_queue(recipient_id) else {
            return;
        };
        let command = Command::Ack {
            recipient_id: *recipient_id,
            msg_id,
        };
        self.transmit(
            queue.relay.key(),
            None,
            command,
            Pending::Ack {
                recipient_id: *recipient_id,
                msg_id,
                signed: false,
            },
        );
    }

    /// An unsigned ACK was refused (the session changed in between): sign it.
    pub(super) fn ack_answered(
        &mut self,
        recipient_id: QueueId,
        msg_id: MsgId,
        signed: bool,
        response: Response,
    ) {
        if signed || response != Response::Error(ErrorCode::Auth) {
            return; // Ok, or NO_MESSAGE: acknowledged before or expired.
        }
        let Some((queue, _)) = self.find_queue(&recipient_id) else {
            return;
        };
        let command = Command::Ack {
            recipient_id,
            msg_id,
        };
        self.transmit(
            queue.relay.key(),
            Some(queue.recipient_key.clone()),
            command,
            Pending::Ack {
                recipient_id,
                msg_id,
                signed: true,
            },
        );
    }

    pub(super) fn on_delivery<R: CryptoRng + ?Sized>(
        &mut self,
        relay: RelayKey,
        delivery: Delivery,
        rng: &mut R,
    ) {
        let Some((queue, owner)) = self.find_queue(&delivery.recipient_id) else {
            return; // A queue retired a moment ago: its DELETE takes the rest.
        };
        if *queue.relay.key() != relay {
            return;
        }
        if let Owner::Contact(id) = owner
            && !self.reads_now(&id, &delivery.recipient_id)
        {
            // A queue a rotation made, while the old one still has messages before the
            // contact's `Switched`: left unacknowledged (and unread) until the old queue
            // is retired, then SUBscribed again, which pushes it once more. Reading both
            // at once showed messages out of order (found by the property test).
            return;
        }
        let opened = queue.delivery().open(
            &delivery.recipient_id,
            &delivery.msg_id,
            &delivery.ciphertext,
        );
        match opened {
            Err(_) => {
                self.notice("a delivery did not decrypt (dropped)");
                self.ack(&delivery.recipient_id, delivery.msg_id);
            }
            Ok(body) if body.kind == DeliveryKind::QuotaReached => {
                self.notice("the relay refused some messages to a full queue of yours");
                self.ack(&delivery.recipient_id, delivery.msg_id);
            }
            Ok(body) => match owner {
                Owner::Invitation => {
                    self.accept_confirmation(delivery.recipient_id, delivery.msg_id, &body.body)
                }
                Owner::Contact(id) => {
                    if let Err(e) = self.receive(id, &queue, delivery.msg_id, &body.body, rng) {
                        self.notice(format!("a message could not be stored: {e}"));
                    }
                }
            },
        }
    }

    /// A ratchet message from a contact: act on it, persist, ACK.
    fn receive<R: CryptoRng + ?Sized>(
        &mut self,
        id: [u8; 16],
        queue: &OwnQueue,
        msg_id: MsgId,
        body: &[u8],
        rng: &mut R,
    ) -> Result<(), super::Error> {
        let Some(mut contact) = self.contacts.get(&id).cloned() else {
            return Ok(());
        };
        let now = self.app_secs();
        let decrypted = match contact.session.decrypt(body, now) {
            Ok(d) => d,
            Err(RatchetError::Duplicate) => {
                self.ack(&queue.recipient_id, msg_id);
                return Ok(());
            }
            Err(e) => {
                // Nothing has come from an invited contact yet but its confirmation, on
                // the invitation's own queue: what no key opens is a second answer to the
                // invitation (the link was shared), sent before the queue was secured.
                let second_answer = contact.trust == crate::contact::Trust::Invited
                    && contact.recent_ids.is_empty()
                    && contact.inbound.len() == 1;
                if second_answer {
                    self.notice(
                        "one of your invitations was answered more than once (was it shared?): \
                         only the first answer was accepted",
                    );
                } else {
                    self.notice(format!("a message from {} was dropped: {e}", contact.alias));
                }
                self.ack(&queue.recipient_id, msg_id);
                return Ok(());
            }
        };
        if !matches!(decrypted.order, Order::InOrder) {
            contact.gaps += 1;
        }
        let mut batch = Batch::new();
        let mut events = Vec::new();
        let mut retire = false;
        match Payload::decode(&decrypted.plaintext) {
            Err(e) => events.push(Event::Notice(format!(
                "a message from {} was dropped: {e}",
                contact.alias
            ))),
            Ok(Payload::HelloReply { profile, direct }) => {
                contact.outbound.direct = direct;
                if contact.state == ContactState::AwaitingReply {
                    contact.state = ContactState::Connected;
                    // A placeholder alias takes the contact's display name.
                    if contact.alias.starts_with("new contact") {
                        contact.alias = self.unique_alias(&profile.display_name);
                    }
                    events.push(Event::Connected {
                        contact: contact.alias.clone(),
                    });
                }
                contact.peer = Some(profile);
            }
            Ok(Payload::Text { id: mid, text }) => {
                if contact.remember(mid) {
                    let seq = contact.take_seq();
                    let message = Message {
                        seq,
                        direction: Direction::In,
                        id: mid,
                        text: text.clone(),
                        at: now,
                        sent: true,
                        delivered: true,
                    };
                    batch.put(MESSAGES, &seq_key(&contact.id, seq), &message)?;
                    self.receipts.entry(contact.id).or_default().push(mid);
                    if self.receipt_due.is_none() {
                        self.receipt_due = Some(self.now_ms + super::RECEIPT_DELAY_MS);
                    }
                    events.push(Event::Message(MessageView {
                        contact: contact.alias.clone(),
                        seq,
                        id: mid,
                        text,
                        at: now,
                    }));
                }
            }
            Ok(Payload::Receipt { ids }) => {
                let keys: Vec<Vec<u8>> = self
                    .unsettled
                    .iter()
                    .filter(|(k, m)| k.starts_with(&contact.id) && ids.contains(&m.id))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut seqs = Vec::new();
                for key in keys {
                    if let Some(mut m) = self.unsettled.remove(&key) {
                        m.delivered = true;
                        m.sent = true;
                        batch.put(MESSAGES, &key, &m)?;
                        seqs.push(m.seq);
                    }
                }
                if !seqs.is_empty() {
                    events.push(Event::Delivered {
                        contact: contact.alias.clone(),
                        seqs,
                    });
                }
            }
            Ok(Payload::NewQueue { queue: next }) => {
                // The last message on the old queue says so; everything after goes to the
                // new one.
                self.queue_payload(rng, &mut contact, &Payload::Switched, None, &mut batch)?;
                contact.outbound = next;
                events.push(Event::Notice(format!(
                    "{} moved to a new queue",
                    contact.alias
                )));
            }
            Ok(Payload::Switched) => {
                let newest = contact.inbound.last().map(|q| q.recipient_id);
                if newest != Some(queue.recipient_id) {
                    contact
                        .inbound
                        .retain(|q| q.recipient_id != queue.recipient_id);
                    contact.retired.push(queue.clone());
                    retire = true;
                    events.push(Event::RotationDone {
                        contact: contact.alias.clone(),
                    });
                }
            }
            Ok(Payload::Rekey { key }) => match contact.pending_rekey.take() {
                Some(own) => {
                    contact.session.rekey(&own, &key, RekeyRole::Lead)?;
                    events.push(Event::Notice(format!(
                        "re-keyed the connection with {}: the new key is mixed in with the next message",
                        contact.alias
                    )));
                }
                None => events.push(Event::Notice(format!(
                    "{} sent a re-key answer to no code of yours (ignored)",
                    contact.alias
                ))),
            },
            Ok(Payload::Profile(card)) => {
                events.push(Event::Notice(format!(
                    "{} now shows the name \"{}\"",
                    contact.alias, card.display_name
                )));
                contact.peer = Some(card);
            }
            Ok(Payload::Hello { .. }) => events.push(Event::Notice(format!(
                "{} sent a second confirmation (ignored)",
                contact.alias
            ))),
        }
        batch.put(CONTACTS, &contact.id, &contact)?;
        self.contacts.insert(contact.id, contact);
        self.persist(batch);
        for event in events {
            self.event(event);
        }
        if retire {
            // The contact's last message on a rotated-away queue: the queue and everything
            // left in it go (no ACK needed). The new queue is read from now on: SUB again
            // for the delivery it holds back (`reads_now`).
            self.delete_retired();
            let next = self
                .contacts
                .get(&id)
                .and_then(|c| c.inbound.first())
                .cloned();
            if let Some(next) = next {
                self.subscribe(&next);
            }
        } else {
            self.ack(&queue.recipient_id, msg_id);
        }
        Ok(())
    }

    /// Queues one receipt per contact for the messages stored since the last one.
    pub(super) fn queue_receipts<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) {
        let pending = std::mem::take(&mut self.receipts);
        for (id, ids) in pending {
            let Some(mut contact) = self.contacts.get(&id).cloned() else {
                continue;
            };
            let mut batch = Batch::new();
            let mut ok = true;
            for chunk in ids.chunks(crate::payload::MAX_RECEIPT_IDS) {
                let receipt = Payload::Receipt {
                    ids: chunk.to_vec(),
                };
                if let Err(e) = self.queue_payload(rng, &mut contact, &receipt, None, &mut batch) {
                    self.notice(format!("a receipt could not be queued: {e}"));
                    ok = false;
                    break;
                }
            }
            if ok && self.keep_contact(contact, &mut batch).is_ok() {
                self.persist(batch);
            }
        }
    }
}
