//! Wire cost of one 100-character text message, per hop.
//!
//! Two ways. Computed: the real encoder (`petrel_federation::frame::encode`) gives the
//! bytes of each Petrel frame a message causes — SEND and its OK on the sender's hop;
//! Deliver, ACK and its OK on the recipient's hop — and a stated estimate adds the
//! transport framing per frame (Yamux header 12 bytes, Noise length 2 + tag 16). Measured:
//! the same exchange through byte-counting TCP proxies in front of a real relay, one
//! message at a time as a chat would send them, counting everything above TCP.

use super::proxy::CountingProxy;
use super::queues::{QueueKeys, create_secured};
use super::relay::{RelayProcess, RelaySpec, connect};
use super::report::Row;
use super::throughput::{BODY_CLASS, TEXT_LEN};
use anyhow::{Context, bail};
use petrel_federation::auth::Auth;
use petrel_federation::client::{ClientFrame, Command, Delivery, RelayFrame, Response};
use petrel_federation::delivery::{DeliveryBody, DeliveryKey, DeliveryKind};
use petrel_federation::{
    Endpoint, Host, MsgId, QueueId, RelayAddress, SessionId, TransportKind, frame, padding,
};

/// Target per text message per hop (issues 3 and 7): 2.5 KiB.
pub const TARGET_BYTES_PER_HOP: f64 = 2_560.0;
/// Yamux data-frame header.
pub const YAMUX_HEADER: usize = 12;
/// Noise transport message: 2-byte length and 16-byte AEAD tag.
pub const NOISE_OVERHEAD: usize = 2 + 16;
/// A correlation number as a busy session has them (a 2-byte varint).
const CORR: u32 = 1_000;

/// The byte counts of the frames one text message causes.
#[derive(Clone, Copy, Debug)]
pub struct FrameSizes {
    /// SEND, signed, with a 2,048-byte body.
    pub send: usize,
    /// The relay's OK to a SEND or an ACK.
    pub ok: usize,
    /// The Deliver frame pushed to the recipient.
    pub deliver: usize,
    /// The recipient's ACK, unsigned on the session that proved the queue.
    pub ack: usize,
}

impl FrameSizes {
    /// Frames on the sender's hop: SEND and OK.
    pub fn sender_hop(&self) -> usize {
        self.send + self.ok
    }
    /// Frames on the recipient's hop: Deliver, ACK and OK.
    pub fn recipient_hop(&self) -> usize {
        self.deliver + self.ack + self.ok
    }
}

/// Encodes the frames of one 100-character text message with the real encoder.
pub fn frame_sizes() -> anyhow::Result<FrameSizes> {
    let keys = QueueKeys::derive(0);
    let session = SessionId([7; 32]);
    let text = vec![b'a'; TEXT_LEN];
    let body = padding::pad(&text, BODY_CLASS)?;
    let signed = |command: Command| -> anyhow::Result<usize> {
        let auth = Auth::sign(&keys.sender, &session.0, &command)
            .map_err(|_| anyhow::anyhow!("cannot sign"))?;
        Ok(frame::encode(
            1,
            &ClientFrame {
                corr: CORR,
                auth: Some(auth),
                command,
            },
        )?
        .len())
    };
    let send = signed(Command::Send {
        sender_id: QueueId([1; 16]),
        body: body.clone(),
    })?;
    // Unsigned: the recipient ACKs on the session that proved the queue (protocol §11).
    let ack = frame::encode(
        1,
        &ClientFrame {
            corr: CORR,
            auth: None,
            command: Command::Ack {
                recipient_id: QueueId([2; 16]),
                msg_id: MsgId([3; 16]),
            },
        },
    )?
    .len();
    let ok = frame::encode(
        1,
        &RelayFrame::Reply {
            corr: CORR,
            response: Response::Ok,
        },
    )?
    .len();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1_800_000_000, |d| d.as_secs());
    let ciphertext = DeliveryKey::from_bytes([4; 32]).seal(
        &QueueId([2; 16]),
        &MsgId([3; 16]),
        &DeliveryBody {
            received_at: now,
            kind: DeliveryKind::Message,
            body,
        },
    );
    let deliver = frame::encode(
        1,
        &RelayFrame::Deliver(Delivery {
            recipient_id: QueueId([2; 16]),
            msg_id: MsgId([3; 16]),
            ciphertext,
        }),
    )?
    .len();
    Ok(FrameSizes {
        send,
        ok,
        deliver,
        ack,
    })
}

/// Sends `messages` one at a time through counting proxies; returns bytes per message on
/// (the sender's hop, the recipient's hop), both directions each.
async fn measure(relay: &RelayProcess, messages: usize) -> anyhow::Result<(f64, f64, usize)> {
    let upstream = relay.tcp_addr()?;
    let sender_proxy = CountingProxy::start(upstream).await?;
    let recipient_proxy = CountingProxy::start(upstream).await?;
    let via = |proxy: &CountingProxy| {
        RelayAddress::new(
            *relay.address().key(),
            vec![Endpoint {
                transport: TransportKind::Tcp,
                host: Host::Ipv4([127, 0, 0, 1]),
                port: proxy.addr().port(),
            }],
        )
    };
    let sender = connect(&via(&sender_proxy)?).await?;
    let mut recipient = connect(&via(&recipient_proxy)?).await?;
    let queue = create_secured(&recipient, QueueKeys::derive(1), true).await?;
    let sent_before = sender_proxy.bytes();
    let received_before = recipient_proxy.bytes();
    let mut delivered = 0;
    let text = vec![b'a'; TEXT_LEN];
    for _ in 0..messages {
        let command = Command::Send {
            sender_id: queue.sender_id,
            body: padding::pad(&text, BODY_CLASS)?,
        };
        match sender.request(Some(&queue.sender), command).await? {
            Response::Ok => {}
            other => bail!("SEND answered {other:?}"),
        }
        let delivery =
            match tokio::time::timeout(std::time::Duration::from_secs(10), recipient.next_event())
                .await
                .context("no delivery within 10 s")?
            {
                Some(RelayFrame::Deliver(d)) => d,
                other => bail!("expected a delivery, got {other:?}"),
            };
        let body = queue.delivery.open(
            &delivery.recipient_id,
            &delivery.msg_id,
            &delivery.ciphertext,
        )?;
        if padding::unpad(&body.body)? == text.as_slice() {
            delivered += 1;
        }
        let ack = Command::Ack {
            recipient_id: delivery.recipient_id,
            msg_id: delivery.msg_id,
        };
        match recipient.request(None, ack).await? {
            Response::Ok => {}
            other => bail!("ACK answered {other:?}"),
        }
    }
    let per = |before: (u64, u64), after: (u64, u64)| {
        ((after.0 - before.0) + (after.1 - before.1)) as f64 / messages.max(1) as f64
    };
    let sender_hop = per(sent_before, sender_proxy.bytes());
    let recipient_hop = per(received_before, recipient_proxy.bytes());
    sender.close().await;
    recipient.close().await;
    Ok((sender_hop, recipient_hop, delivered))
}

/// Runs the wire-cost scenario, appending rows.
pub async fn run(messages: usize, env: &super::Env, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let sizes = frame_sizes()?;
    let scenario = "wire cost";
    let computed = "Computed with petrel_federation::frame::encode: a 100-character text padded to \
                    the 2,048-byte class; corr is a 2-byte varint.";
    for (key, figure, value) in [
        ("wire.send_frame", "SEND frame (signed)", sizes.send),
        ("wire.deliver_frame", "Deliver frame", sizes.deliver),
        (
            "wire.ack_frame",
            "ACK frame (unsigned, proven session)",
            sizes.ack,
        ),
        ("wire.ok_frame", "OK reply frame", sizes.ok),
    ] {
        rows.push(Row::info(key, scenario, figure, value as f64, "B").note(computed));
    }
    let per_frame = YAMUX_HEADER + NOISE_OVERHEAD;
    let estimate = format!(
        "Estimate, not measured: the frames plus {per_frame} B of transport framing per frame \
         (Yamux header {YAMUX_HEADER} B, Noise length 2 B + tag 16 B); TCP/IP headers (about \
         52 B per segment, two segments per 2 KiB at MTU 1500) come on top."
    );
    rows.push(
        Row::info(
            "wire.sender_hop_estimate",
            scenario,
            "per message, sender ↔ relay (SEND + OK), estimated",
            (sizes.sender_hop() + 2 * per_frame) as f64,
            "B",
        )
        .at_most(TARGET_BYTES_PER_HOP, "≤ 2,560 B")
        .note(estimate.clone()),
    );
    rows.push(
        Row::info(
            "wire.recipient_hop_estimate",
            scenario,
            "per message, relay ↔ recipient (Deliver + ACK + OK), estimated",
            (sizes.recipient_hop() + 3 * per_frame) as f64,
            "B",
        )
        .at_most(TARGET_BYTES_PER_HOP, "≤ 2,560 B")
        .note(estimate),
    );

    let dir = env.work_dir.join("wire");
    let spec = RelaySpec::in_dir(&env.relay_bin, &dir)?;
    let relay = RelayProcess::start(&spec).await?;
    eprintln!("wire: sending {messages} messages one at a time through counting proxies");
    let result = measure(&relay, messages).await;
    let stopped = relay.stop().await;
    let (sender_hop, recipient_hop, delivered) = result?;
    stopped?;
    env.discard(&dir);
    let measured = format!(
        "Measured: TCP payload both ways through a counting proxy (Noise, Yamux and window \
         updates included, TCP/IP headers not), averaged over {messages} messages sent one at a \
         time."
    );
    rows.push(
        Row::info(
            "wire.sender_hop_measured",
            scenario,
            "per message, sender ↔ relay, measured",
            sender_hop,
            "B",
        )
        .at_most(TARGET_BYTES_PER_HOP, "≤ 2,560 B")
        .note(measured.clone()),
    );
    rows.push(
        Row::info(
            "wire.recipient_hop_measured",
            scenario,
            "per message, relay ↔ recipient, measured",
            recipient_hop,
            "B",
        )
        .at_most(TARGET_BYTES_PER_HOP, "≤ 2,560 B")
        .note(measured),
    );
    rows.push(
        Row::info(
            "wire.delivered",
            scenario,
            "messages delivered intact through the proxies",
            delivered as f64,
            "msgs",
        )
        .sanity(delivered == messages, &format!("= {messages}")),
    );
    Ok(())
}
