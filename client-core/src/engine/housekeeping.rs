//! What happens while nobody types: periodic queue rotation, invitation expiry, and the
//! deletion of queues a rotation retired (`specs/protocol.md` §15.6).
//!
//! A rotation makes a new inbound queue (on the next pinned relay when there are several,
//! `queues`), announces it over the ratchet (`NewQueue`) and keeps reading the old one
//! until the contact's `Switched` arrives there — the contact's last message on it; the
//! old queue is then DELETEd with whatever it still holds, and the new one is read from
//! then on (`inbound` holds its deliveries back until then, so that the order of the
//! contact's messages survives the switch). Invitations nobody answered
//! are deleted after [`INVITATION_TTL_SECS`](crate::contact::INVITATION_TTL_SECS).

use super::queues::Purpose;
use super::{Engine, Error, OpId, Pending, Reply};
use crate::contact::INVITATION_TTL_SECS;
use crate::contact::{ContactState, INVITATIONS, OwnQueue};
use crate::payload::{Payload, QueueRef};
use crate::store::Batch;
use petrel_federation::client::{Command, Response};
use petrel_federation::{ErrorCode, QueueId, RelayAddress};
use rand_core::CryptoRng;

impl Engine {
    /// The next pinned relay after `current` (for rotation), or the only one.
    fn next_relay(&self, current: &RelayAddress) -> RelayAddress {
        let relays = &self.profile.relays;
        match relays.iter().position(|r| r.key() == current.key()) {
            Some(i) => relays[(i + 1) % relays.len()].clone(),
            None => relays[0].clone(),
        }
    }

    /// Starts a rotation now (a user request).
    pub(super) fn rotate<R: CryptoRng + ?Sized>(
        &mut self,
        op: OpId,
        alias: &str,
        rng: &mut R,
    ) -> Result<Option<Reply>, Error> {
        let id = self.contact(alias)?.id;
        self.start_rotation(Some(op), id, rng)?;
        Ok(None)
    }

    fn start_rotation<R: CryptoRng + ?Sized>(
        &mut self,
        op: Option<OpId>,
        id: [u8; 16],
        rng: &mut R,
    ) -> Result<(), Error> {
        let Some(contact) = self.contacts.get(&id) else {
            return Ok(());
        };
        if contact.state != ContactState::Connected {
            return Err(Error::NotConnected(contact.alias.clone()));
        }
        if contact.inbound.len() > 1 || self.rotating.contains(&id) {
            return Err(Error::Busy(format!(
                "a rotation with `{}` is under way: it ends when {} next reads its messages",
                contact.alias, contact.alias
            )));
        }
        let current = contact
            .inbound
            .last()
            .map(|q| q.relay.clone())
            .unwrap_or_else(|| self.own_relay().clone());
        let relay = self.next_relay(&current);
        self.start_queue(relay, Purpose::Rotation { op, contact: id }, rng)?;
        self.rotating.insert(id);
        Ok(())
    }

    /// The new queue is ready: announce it.
    pub(super) fn finish_rotation<R: CryptoRng + ?Sized>(
        &mut self,
        op: Option<OpId>,
        id: [u8; 16],
        queue: OwnQueue,
        reference: QueueRef,
        rng: &mut R,
    ) {
        self.rotating.remove(&id);
        let Some(mut contact) = self.contacts.get(&id).cloned() else {
            return;
        };
        contact.inbound.push(queue);
        let mut batch = Batch::new();
        let announced = self
            .queue_payload(
                rng,
                &mut contact,
                &Payload::NewQueue { queue: reference },
                None,
                &mut batch,
            )
            .and_then(|_| {
                let alias = contact.alias.clone();
                self.keep_contact(contact, &mut batch)?;
                Ok(alias)
            });
        match announced {
            Ok(alias) => {
                self.persist(batch);
                self.notice(format!("rotating the queue of {alias}"));
                if let Some(op) = op {
                    self.done(op, Ok(Reply::Done));
                }
            }
            Err(e) => match op {
                Some(op) => self.done(op, Err(e)),
                None => self.notice(format!("a queue rotation failed: {e}")),
            },
        }
    }

    /// Due rotations and expired invitations.
    pub(super) fn housekeeping<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) {
        let now = self.app_secs();
        let period = self.profile.rotation_secs;
        let due: Vec<([u8; 16], String)> = self
            .contacts
            .values()
            .filter(|c| {
                c.state == ContactState::Connected
                    && c.inbound.len() == 1
                    && !self.rotating.contains(&c.id)
                    && c.inbound
                        .first()
                        .is_some_and(|q| now.saturating_sub(q.created_at) >= period)
            })
            .map(|c| (c.id, c.alias.clone()))
            .collect();
        for (id, alias) in due {
            if let Err(e) = self.start_rotation(None, id, rng) {
                self.notice(format!("the rotation for {alias} is postponed: {e}"));
            }
        }
        let expired: Vec<OwnQueue> = self
            .invitations
            .values()
            .filter(|i| now.saturating_sub(i.created_at) >= INVITATION_TTL_SECS)
            .map(|i| i.queue.clone())
            .collect();
        for queue in expired {
            if self.deleting(&queue.recipient_id) {
                continue;
            }
            let pending = Pending::DeleteInvitation {
                recipient_id: queue.recipient_id,
            };
            self.delete_queue(&queue, pending);
        }
    }

    /// DELETEs one of this profile's queues (signed by its recipient key).
    pub(super) fn delete_queue(&mut self, queue: &OwnQueue, pending: Pending) {
        let command = Command::Delete {
            recipient_id: queue.recipient_id,
        };
        self.transmit(
            queue.relay.key(),
            Some(queue.recipient_key.clone()),
            command,
            pending,
        );
    }

    fn deleting(&self, recipient_id: &QueueId) -> bool {
        self.pending.values().any(|(_, p)| match p {
            Pending::DeleteRetired {
                recipient_id: r, ..
            }
            | Pending::DeleteInvitation { recipient_id: r } => r == recipient_id,
            _ => false,
        })
    }

    /// DELETEs the queues rotations retired (those whose relay has a session).
    pub(super) fn delete_retired(&mut self) {
        let retired: Vec<([u8; 16], OwnQueue)> = self
            .contacts
            .values()
            .flat_map(|c| c.retired.iter().map(|q| (c.id, q.clone())))
            .collect();
        for (contact, queue) in retired {
            if self.deleting(&queue.recipient_id) {
                continue;
            }
            let pending = Pending::DeleteRetired {
                contact,
                recipient_id: queue.recipient_id,
            };
            self.delete_queue(&queue, pending);
        }
    }

    pub(super) fn retired_deleted(
        &mut self,
        contact: [u8; 16],
        recipient_id: QueueId,
        response: Response,
    ) {
        // AUTH: already gone (deleted by an earlier run whose commit was lost).
        if !matches!(response, Response::Ok | Response::Error(ErrorCode::Auth)) {
            return self.notice(format!(
                "an old queue could not be deleted yet ({response:?}): tried again later"
            ));
        }
        let Some(mut c) = self.contacts.get(&contact).cloned() else {
            return;
        };
        c.retired.retain(|q| q.recipient_id != recipient_id);
        let mut batch = Batch::new();
        if self.keep_contact(c, &mut batch).is_ok() {
            self.persist(batch);
        }
    }

    pub(super) fn invitation_deleted(&mut self, recipient_id: QueueId, response: Response) {
        if !matches!(response, Response::Ok | Response::Error(ErrorCode::Auth)) {
            return;
        }
        if self.invitations.remove(&recipient_id).is_some() {
            let mut batch = Batch::new();
            batch.delete(INVITATIONS, recipient_id.as_bytes());
            self.persist(batch);
            self.notice("an invitation nobody answered expired and was deleted");
        }
    }
}
