//! The recipient's books: every delivery of its inbound stream, classified.
//!
//! A delivery names a relay message ID; its body names the stream and the sender's message
//! number (see [`super::message`]). Together they tell apart what the protocol allows from
//! what it forbids:
//!
//! * **new** — a message number not delivered before;
//! * **redelivery** — the same relay message ID again. §8 allows it while the ACK is not
//!   confirmed (a new subscription gets the current message pushed again, for example after
//!   the relay restarted or the recipient reconnected), and forbids it once the relay has
//!   answered the ACK `OK` (**redelivered after ACK**);
//! * **stored twice** — the same message number under another relay message ID: the relay
//!   stored one message twice. Senders resubmit only the identical envelope, which the
//!   destination must recognise by its replay tag, so this is always a relay's duplicate.
//!
//! "Duplicated" in the report is the number of distinct messages stored twice (or more);
//! every extra delivery, whatever its cause, is counted separately as a duplicate delivery.
//! "Reordered" counts messages delivered for the first time after a higher-numbered one of
//! the same sender.

use super::message::{Kind, Message};
use petrel_federation::MsgId;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Totals over one or many ledgers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct messages delivered (the Hello and data messages; not the end marker).
    pub distinct: u64,
    /// Deliveries of a message number already delivered, for any reason.
    pub duplicate_deliveries: u64,
    /// Deliveries of a relay message ID already delivered whose ACK was not yet confirmed.
    pub redeliveries: u64,
    /// Deliveries of a relay message ID whose ACK the relay had confirmed (a relay fault).
    pub redelivered_after_ack: u64,
    /// Distinct messages delivered under two or more relay message IDs (a relay fault).
    pub stored_twice: u64,
    /// Messages delivered for the first time after a higher-numbered one.
    pub reordered: u64,
    /// Deliveries that could not be opened or read, or belong to another stream.
    pub foreign: u64,
}

impl Counts {
    /// Adds another ledger's counts.
    pub fn add(&mut self, other: &Counts) {
        self.distinct += other.distinct;
        self.duplicate_deliveries += other.duplicate_deliveries;
        self.redeliveries += other.redeliveries;
        self.redelivered_after_ack += other.redelivered_after_ack;
        self.stored_twice += other.stored_twice;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
    }
}

/// How a delivery was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A message not delivered before.
    New(Message),
    /// A message delivered before (see [`Counts`] for which kind of repeat).
    Again,
    /// Not a message of this stream.
    Foreign,
}

/// One recipient's record of its inbound stream.
#[derive(Debug)]
pub struct Ledger {
    stream: u32,
    /// Message number → the relay message IDs it was delivered under.
    ids: HashMap<u64, Vec<MsgId>>,
    /// Message IDs whose ACK the relay answered `OK`.
    acked: HashSet<MsgId>,
    highest: Option<u64>,
    end: Option<u64>,
    counts: Counts,
    /// (message, the higher one delivered before it), the first few.
    reorders: Vec<(u64, u64)>,
}

impl Ledger {
    /// An empty ledger for `stream`.
    pub fn new(stream: u32) -> Ledger {
        Ledger {
            stream,
            ids: HashMap::new(),
            acked: HashSet::new(),
            highest: None,
            end: None,
            counts: Counts::default(),
            reorders: Vec::new(),
        }
    }

    /// Records one delivery.
    pub fn record(&mut self, msg_id: MsgId, message: Message) -> Seen {
        if message.stream != self.stream {
            self.counts.foreign += 1;
            return Seen::Foreign;
        }
        let ids = self.ids.entry(message.seq).or_default();
        if ids.is_empty() {
            ids.push(msg_id);
            if let Some(h) = self.highest.filter(|&h| h > message.seq) {
                self.counts.reordered += 1;
                if self.reorders.len() < 3 {
                    self.reorders.push((message.seq, h));
                }
            }
            self.highest = self.highest.max(Some(message.seq));
            match message.kind {
                Kind::End => self.end = Some(message.seq),
                Kind::Hello(_) | Kind::Data => self.counts.distinct += 1,
            }
            return Seen::New(message);
        }
        self.counts.duplicate_deliveries += 1;
        if ids.contains(&msg_id) {
            if self.acked.contains(&msg_id) {
                self.counts.redelivered_after_ack += 1;
            } else {
                self.counts.redeliveries += 1;
            }
        } else {
            if ids.len() == 1 {
                self.counts.stored_twice += 1;
            }
            ids.push(msg_id);
        }
        Seen::Again
    }

    /// A delivery that could not be opened or read.
    pub fn unreadable(&mut self) {
        self.counts.foreign += 1;
    }

    /// The relay answered `OK` to the ACK of `msg_id`.
    pub fn acked(&mut self, msg_id: MsgId) {
        self.acked.insert(msg_id);
    }

    /// True once the sender's end marker arrived.
    pub fn has_end(&self) -> bool {
        self.end.is_some()
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The first few reorders: (message, the higher-numbered one delivered before it).
    pub fn reorders(&self) -> &[(u64, u64)] {
        &self.reorders
    }

    /// Message numbers below `sent` (the sender's count, end marker excluded) never
    /// delivered.
    pub fn missing(&self, sent: u64) -> Vec<u64> {
        (0..sent)
            .filter(|seq| self.end != Some(*seq) && !self.ids.contains_key(seq))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(n: u8) -> MsgId {
        MsgId([n; 16])
    }

    fn data(seq: u64) -> Message {
        Message {
            stream: 3,
            seq,
            kind: Kind::Data,
        }
    }

    #[test]
    fn classifies_repeats() {
        let mut l = Ledger::new(3);
        assert!(matches!(l.record(id(1), data(0)), Seen::New(_)));
        // Pushed again before the ACK was confirmed: allowed.
        assert_eq!(l.record(id(1), data(0)), Seen::Again);
        l.acked(id(1));
        // Pushed again after: a relay fault.
        assert_eq!(l.record(id(1), data(0)), Seen::Again);
        // Stored twice, then a third time: one distinct duplicate.
        assert!(matches!(l.record(id(2), data(1)), Seen::New(_)));
        l.record(id(3), data(1));
        l.record(id(4), data(1));
        // Another stream's message.
        let other = Message {
            stream: 4,
            ..data(9)
        };
        assert_eq!(l.record(id(5), other), Seen::Foreign);
        let c = l.counts();
        assert_eq!(c.distinct, 2);
        assert_eq!(c.duplicate_deliveries, 4);
        assert_eq!(c.redeliveries, 1);
        assert_eq!(c.redelivered_after_ack, 1);
        assert_eq!(c.stored_twice, 1);
        assert_eq!(c.foreign, 1);
    }

    #[test]
    fn counts_reorders_and_missing_and_end() {
        let mut l = Ledger::new(3);
        for (n, seq) in [0, 1, 3, 2, 5].into_iter().enumerate() {
            l.record(id(n as u8), data(seq));
        }
        assert_eq!(l.counts().reordered, 1);
        assert_eq!(l.reorders(), &[(2, 3)]);
        assert!(!l.has_end());
        l.record(
            id(9),
            Message {
                stream: 3,
                seq: 6,
                kind: Kind::End,
            },
        );
        assert!(l.has_end());
        assert_eq!(l.counts().distinct, 5);
        assert_eq!(l.missing(6), vec![4]);
    }
}
