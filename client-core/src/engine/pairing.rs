//! Pairing and re-keying (`specs/protocol.md` §15.4, §15.7).
//!
//! Bob invites: a fresh queue (`queues`) and a fresh invitation key become a
//! [`PendingInvitation`] and a QR code. Alice answers: a reply queue of her own, the
//! ratchet started from Bob's invitation key, and an unsigned confirmation (`Hello`: the
//! sender key Bob must SECURE his queue with, her reply queue, her card) in the outbox; the
//! answer to `connect` comes when that first SEND is answered (`outbox`). Bob's engine gets
//! the confirmation pushed on the invitation queue, opens it with the invitation key,
//! SECUREs the queue with Alice's sender key (one answer per invitation: after SECURE the
//! relay refuses every unsigned SEND), and only then stores the contact, queues its
//! `HelloReply` and ACKs. Alice is connected when the `HelloReply` arrives (`inbound`).
//!
//! A re-key code names an existing contact's queue and carries a fresh key: the side
//! that scans it mixes the new secret in at once and answers with its own fresh key
//! (`Rekey`), which the showing side mixes in when it arrives.

use super::queues::{Purpose, random_secret};
use super::{Connected, Engine, Error, OpId, Pending, Reply};
use crate::contact::{
    CONTACTS, Contact, ContactState, INVITATIONS, OUTBOX, OutboxEntry, OwnQueue, PendingInvitation,
    Trust, seq_key,
};
use crate::payload::{Payload, ProfileCard, QueueRef};
use crate::ratchet::{QrKey, RekeyRole, Session};
use crate::store::Batch;
use petrel_federation::client::{Command, Response};
use petrel_federation::{ErrorCode, MsgId, QueueId, RelayKey};
use petrel_qr::{Invitation, Provenance, Purpose as CodePurpose};
use rand_core::CryptoRng;

/// A confirmation opened and being accepted: SECURE (then RESTRICT) before the contact
/// is stored.
pub(super) struct Accepting {
    restricting: bool,
    recipient_id: QueueId,
    msg_id: MsgId,
    session: Session,
    reply: QueueRef,
    card: ProfileCard,
}

/// A printable alias from a display name: control characters dropped, trimmed, at most
/// 64 bytes, never empty.
fn clean_alias(name: &str) -> String {
    let mut out: String = name.chars().filter(|c| !c.is_control()).collect();
    out = out.trim().to_string();
    while out.len() > 64 {
        out.pop();
    }
    if out.is_empty() {
        "contact".into()
    } else {
        out
    }
}

impl Engine {
    pub(super) fn unique_alias(&self, wanted: &str) -> String {
        let taken = |a: &str| self.contacts.values().any(|c| c.alias == a);
        let base = clean_alias(wanted);
        if !taken(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}-{n}"))
            .find(|candidate| !taken(candidate))
            .unwrap_or(base)
    }

    pub(super) fn invite<R: CryptoRng + ?Sized>(
        &mut self,
        op: OpId,
        alias: Option<String>,
        rng: &mut R,
    ) -> Result<Option<Reply>, Error> {
        let relay = self.own_relay().clone();
        self.start_queue(relay, Purpose::Invite { op, alias }, rng)?;
        Ok(None)
    }

    pub(super) fn finish_invite<R: CryptoRng + ?Sized>(
        &mut self,
        op: OpId,
        alias: Option<String>,
        queue: OwnQueue,
        rng: &mut R,
    ) {
        let key = QrKey::generate(rng);
        let invitation = Invitation {
            purpose: CodePurpose::Connect,
            relay: queue.relay.clone(),
            sender_id: queue.sender_id,
            dh_key: key.public(),
        };
        let pending = PendingInvitation {
            profile: self.profile.name.clone(),
            key,
            alias,
            created_at: self.app_secs(),
            queue,
        };
        let mut batch = Batch::new();
        if let Err(e) = batch.put(INVITATIONS, pending.queue.recipient_id.as_bytes(), &pending) {
            return self.done(op, Err(e.into()));
        }
        self.persist(batch);
        self.invitations.insert(pending.queue.recipient_id, pending);
        self.done(op, Ok(Reply::Invitation(invitation)));
    }

    pub(super) fn invite_rekey<R: CryptoRng + ?Sized>(
        &mut self,
        alias: &str,
        rng: &mut R,
    ) -> Result<Invitation, Error> {
        let mut contact = self.contact(alias)?.clone();
        if contact.state != ContactState::Connected {
            return Err(Error::NotConnected(contact.alias));
        }
        if contact.session.rekey_pending() {
            return Err(Error::Busy(format!(
                "a re-key with `{}` is still under way: exchange a message first",
                contact.alias
            )));
        }
        let queue = contact
            .inbound
            .last()
            .ok_or_else(|| Error::NotConnected(contact.alias.clone()))?;
        // A code shown before and not answered yet is shown again, never replaced: the
        // contact may have scanned it already, and its `Rekey` answer is mixed with the key
        // of the code it scanned. Replacing the key split the two root keys for good (every
        // later message "did not authenticate"; found by the property test).
        if let Some(key) = &contact.pending_rekey {
            return Ok(Invitation {
                purpose: CodePurpose::Rekey,
                relay: queue.relay.clone(),
                sender_id: queue.sender_id,
                dh_key: key.public(),
            });
        }
        let key = QrKey::generate(rng);
        let invitation = Invitation {
            purpose: CodePurpose::Rekey,
            relay: queue.relay.clone(),
            sender_id: queue.sender_id,
            dh_key: key.public(),
        };
        contact.pending_rekey = Some(key);
        let mut batch = Batch::new();
        self.keep_contact(contact, &mut batch)?;
        self.persist(batch);
        Ok(invitation)
    }

    pub(super) fn connect<R: CryptoRng + ?Sized>(
        &mut self,
        op: OpId,
        invitation: Invitation,
        provenance: Provenance,
        alias: Option<String>,
        rng: &mut R,
    ) -> Result<Option<Reply>, Error> {
        if invitation.purpose == CodePurpose::Rekey {
            return self.answer_rekey(&invitation, rng).map(Some);
        }
        let used = self.contacts.values().any(|c| {
            c.outbound.sender_id == invitation.sender_id
                || c.inbound
                    .iter()
                    .any(|q| q.sender_id == invitation.sender_id)
        }) || self
            .invitations
            .values()
            .any(|i| i.queue.sender_id == invitation.sender_id);
        if used {
            return Err(Error::InvitationUsed);
        }
        let own = self.own_relay().clone();
        let purpose = Purpose::ConnectReply {
            op,
            invitation,
            provenance,
            alias,
        };
        self.start_queue(own, purpose, rng)?;
        Ok(None)
    }

    /// The reply queue is ready: start the ratchet and queue the confirmation.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_connect<R: CryptoRng + ?Sized>(
        &mut self,
        op: OpId,
        invitation: Invitation,
        provenance: Provenance,
        alias: Option<String>,
        reply_queue: OwnQueue,
        reply: QueueRef,
        rng: &mut R,
    ) {
        let result = (|| -> Result<(), Error> {
            let invitation_sender = random_secret(rng);
            let mut session = Session::initiate(rng, &invitation.dh_key)?;
            let hello = Payload::Hello {
                sender_key: invitation_sender.signing_key().verifying_key().to_bytes(),
                reply,
                profile: self.card(),
            };
            let body = session.encrypt(rng, &hello.encode()?)?;
            let trust = match provenance {
                Provenance::Scanned => Trust::Scanned,
                Provenance::Pasted => Trust::Pasted,
            };
            let alias = self.unique_alias(alias.as_deref().unwrap_or("new contact"));
            let mut id = [0u8; 16];
            rng.fill_bytes(&mut id);
            let now = self.app_secs();
            let mut contact = Contact {
                id,
                profile: self.profile.name.clone(),
                alias: alias.clone(),
                peer: None,
                trust,
                verified: false,
                state: ContactState::AwaitingReply,
                session,
                inbound: vec![reply_queue],
                outbound: QueueRef {
                    relay: invitation.relay.clone(),
                    sender_id: invitation.sender_id,
                    sender_key: invitation_sender.0,
                    direct: false,
                },
                pending_rekey: None,
                retired: Vec::new(),
                next_seq: 0,
                recent_ids: Default::default(),
                gaps: 0,
                created_at: now,
            };
            let seq = contact.take_seq();
            let entry = OutboxEntry {
                contact: contact.id,
                seq,
                target: contact.outbound.clone(),
                signed: false,
                body,
                message_seq: None,
                accepted: None,
                created_at: now,
            };
            let key = seq_key(&contact.id, seq);
            let mut batch = Batch::new();
            batch.put(OUTBOX, &key, &entry)?;
            self.keep_contact(contact, &mut batch)?;
            self.persist(batch);
            self.outbox.insert(key.clone(), entry);
            self.outbox_state.replies.insert(
                key,
                super::outbox::Waiter::Connect {
                    op,
                    alias,
                    trust,
                    contact: id,
                },
            );
            Ok(())
        })();
        if let Err(e) = result {
            self.done(op, Err(e));
        }
    }

    /// Deletes a contact that never connected, its outbox and its reply queue.
    pub(super) fn forget_contact(&mut self, id: &[u8; 16]) {
        let Some(contact) = self.contacts.remove(id) else {
            return;
        };
        let mut batch = Batch::new();
        batch.delete(CONTACTS, &contact.id);
        let keys: Vec<Vec<u8>> = self
            .outbox
            .keys()
            .filter(|k| k.starts_with(&contact.id))
            .cloned()
            .collect();
        for key in keys {
            batch.delete(OUTBOX, &key);
            self.outbox.remove(&key);
        }
        self.persist(batch);
        for queue in &contact.inbound {
            self.delete_queue(queue, Pending::DeleteAbandoned);
        }
    }

    fn answer_rekey<R: CryptoRng + ?Sized>(
        &mut self,
        invitation: &Invitation,
        rng: &mut R,
    ) -> Result<Reply, Error> {
        let mut contact = self
            .contacts
            .values()
            .find(|c| {
                c.outbound.sender_id == invitation.sender_id
                    && c.outbound.relay.key() == invitation.relay.key()
            })
            .cloned()
            .ok_or(Error::UnknownRekey)?;
        if contact.state != ContactState::Connected {
            return Err(Error::NotConnected(contact.alias));
        }
        if contact.session.rekey_pending() {
            return Err(Error::Busy(format!(
                "a re-key with `{}` is still under way: exchange a message first",
                contact.alias
            )));
        }
        // Both sides showed a code and both scanned: each would lead with its own secret
        // and the root keys would split. One re-key at a time: the code this side showed
        // is answered first.
        if contact.pending_rekey.is_some() {
            return Err(Error::Busy(format!(
                "you showed `{}` a re-key code of your own that was not answered yet: let \
                 them scan that one",
                contact.alias
            )));
        }
        let own = QrKey::generate(rng);
        contact
            .session
            .rekey(&own, &invitation.dh_key, RekeyRole::Follow)?;
        let mut batch = Batch::new();
        self.queue_payload(
            rng,
            &mut contact,
            &Payload::Rekey { key: own.public() },
            None,
            &mut batch,
        )?;
        let alias = contact.alias.clone();
        self.keep_contact(contact, &mut batch)?;
        self.persist(batch);
        Ok(Reply::Connected(Connected::Rekeyed { alias }))
    }

    /// The first message on an invitation queue: open it and SECURE the queue.
    pub(super) fn accept_confirmation(
        &mut self,
        recipient_id: QueueId,
        msg_id: MsgId,
        body: &[u8],
    ) {
        let Some(invitation) = self.invitations.get(&recipient_id) else {
            return;
        };
        let now = self.app_secs();
        let (session, decrypted) = match Session::respond(&invitation.key, body, now) {
            Ok(ok) => ok,
            Err(e) => {
                self.notice(format!("an answer to your invitation was unreadable: {e}"));
                return self.ack(&recipient_id, msg_id);
            }
        };
        let (sender_key, reply, card) = match Payload::decode(&decrypted.plaintext) {
            Ok(Payload::Hello {
                sender_key,
                reply,
                profile,
            }) => (sender_key, reply, profile),
            _ => {
                self.notice("an answer to your invitation was not a confirmation (dropped)");
                return self.ack(&recipient_id, msg_id);
            }
        };
        let queue = invitation.queue.clone();
        let command = Command::Secure {
            recipient_id,
            sender_key_hash: petrel_federation::KeyHash::of(&sender_key),
        };
        let accepting = Accepting {
            restricting: false,
            recipient_id,
            msg_id,
            session,
            reply,
            card,
        };
        self.transmit(
            queue.relay.key(),
            Some(queue.recipient_key.clone()),
            command,
            Pending::Confirmation(Box::new(accepting)),
        );
    }

    pub(super) fn confirmation_step<R: CryptoRng + ?Sized>(
        &mut self,
        relay: RelayKey,
        mut accepting: Accepting,
        response: Response,
        rng: &mut R,
    ) {
        let ok = matches!(response, Response::Ok)
            || (!accepting.restricting
                && matches!(response, Response::Error(ErrorCode::Duplicate)));
        if !ok {
            self.notice(format!(
                "an answer to your invitation could not be accepted: its relay answered {response:?}"
            ));
            return;
        }
        if !accepting.restricting && self.profile.require_pinned_forwarding {
            let Some(invitation) = self.invitations.get(&accepting.recipient_id) else {
                return;
            };
            let signer = invitation.queue.recipient_key.clone();
            let command = Command::Restrict {
                recipient_id: accepting.recipient_id,
                forwarders: self
                    .profile
                    .relays
                    .iter()
                    .map(|r| *r.key())
                    .take(8)
                    .collect(),
            };
            accepting.restricting = true;
            self.transmit(
                &relay,
                Some(signer),
                command,
                Pending::Confirmation(Box::new(accepting)),
            );
            return;
        }
        if let Err(e) = self.finish_acceptance(accepting, rng) {
            self.notice(format!(
                "an answer to your invitation could not be stored: {e}"
            ));
        }
    }

    /// The invitation queue is secured: the contact is stored with its first reply queued,
    /// then the confirmation is ACKed.
    fn finish_acceptance<R: CryptoRng + ?Sized>(
        &mut self,
        accepting: Accepting,
        rng: &mut R,
    ) -> Result<(), Error> {
        let Some(invitation) = self.invitations.remove(&accepting.recipient_id) else {
            return Ok(());
        };
        let wanted = invitation
            .alias
            .clone()
            .unwrap_or_else(|| accepting.card.display_name.clone());
        let alias = self.unique_alias(&wanted);
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let direct = self.profile.require_pinned_forwarding;
        let mut contact = Contact {
            id,
            profile: self.profile.name.clone(),
            alias: alias.clone(),
            peer: Some(accepting.card),
            trust: Trust::Invited,
            verified: false,
            state: ContactState::Connected,
            session: accepting.session,
            inbound: vec![invitation.queue.clone()],
            outbound: accepting.reply,
            pending_rekey: None,
            retired: Vec::new(),
            next_seq: 0,
            recent_ids: Default::default(),
            gaps: 0,
            created_at: self.app_secs(),
        };
        let mut batch = Batch::new();
        let card = self.card();
        self.queue_payload(
            rng,
            &mut contact,
            &Payload::HelloReply {
                profile: card,
                direct,
            },
            None,
            &mut batch,
        )?;
        batch.delete(INVITATIONS, accepting.recipient_id.as_bytes());
        self.keep_contact(contact, &mut batch)?;
        self.persist(batch);
        self.event(super::Event::Connected { contact: alias });
        self.ack(&accepting.recipient_id, accepting.msg_id);
        Ok(())
    }
}
