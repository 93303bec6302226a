//! The plaintext broker baseline: Debian's `mosquitto`, MQTT 3.1.1, QoS 1, persistence on.
//!
//! The same work as the relay's 100-queue figure, without Petrel's crypto: publisher
//! connections PUBLISH 2,048-byte payloads at QoS 1 round-robin over 100 topics, the broker
//! answers PUBACK and pushes each message to the one subscriber connection subscribed to
//! its topic (QoS 1, persistent session: `clean session` off, so the broker queues for it),
//! which answers PUBACK. The load is a closed loop with as many messages in flight as the
//! relay's run; the figure is subscriber PUBACKs per second after a warm-up, and latency is
//! from just before a PUBLISH is written to its arrival at the subscriber.
//!
//! What differs, stated in the rows' note: mosquitto's persistence is a snapshot of its
//! in-memory database written every `autosave_interval` seconds (1 here, the shortest
//! time-based setting) and at exit — a PUBACK never waits for the disk, where the relay's
//! OK waits for an fsync'd commit; and a subscriber's PUBACK is not confirmed, where the
//! relay's ACK is answered after its own commit.
//!
//! The MQTT client is this module's own, minimal and written for the bench on tokio
//! (CONNECT, SUBSCRIBE, PUBLISH at QoS 1, PUBACK), rather than a client crate: the bench
//! needs only these four packets, and owning the loop keeps the measurement the same shape
//! as the relay's. When no `mosquitto` binary is found the scenario says so and adds no
//! rows.

use super::plan::ThroughputPlan;
use super::report::{Row, format_value};
use super::stats::summarize;
use super::traffic::BODY_CLASS;
use anyhow::{Context, bail};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, watch};

/// How long mosquitto may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Packet types of MQTT 3.1.1 (the high nibble of the first byte).
mod packet {
    pub(super) const CONNECT: u8 = 1;
    pub(super) const CONNACK: u8 = 2;
    pub(super) const PUBLISH: u8 = 3;
    pub(super) const PUBACK: u8 = 4;
    pub(super) const SUBSCRIBE: u8 = 8;
    pub(super) const SUBACK: u8 = 9;
}

/// Appends MQTT's variable-length "remaining length" (7 bits a byte, low first).
fn put_length(out: &mut Vec<u8>, mut len: usize) -> anyhow::Result<()> {
    if len > 268_435_455 {
        bail!("an MQTT packet of {len} bytes is too long");
    }
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

/// Appends a length-prefixed UTF-8 string.
fn put_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    let len = u16::try_from(s.len()).context("an MQTT string longer than 65,535 bytes")?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// A whole packet: first byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_length(&mut out, body.len())?;
    out.extend_from_slice(body);
    Ok(out)
}

/// CONNECT, protocol level 4 (3.1.1), no keep-alive; `clean` sets clean session.
fn connect_packet(client_id: &str, clean: bool) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT")?;
    body.push(4);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&0u16.to_be_bytes());
    put_str(&mut body, client_id)?;
    frame(packet::CONNECT << 4, &body)
}

/// PUBLISH at QoS 1.
fn publish_packet(topic: &str, id: u16, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(topic.len() + 4 + payload.len());
    put_str(&mut body, topic)?;
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    frame((packet::PUBLISH << 4) | 0x02, &body)
}

/// PUBACK for packet `id`.
fn puback_packet(id: u16) -> [u8; 4] {
    let [hi, lo] = id.to_be_bytes();
    [packet::PUBACK << 4, 2, hi, lo]
}

/// SUBSCRIBE to `topics` at QoS 1.
fn subscribe_packet(id: u16, topics: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut body = id.to_be_bytes().to_vec();
    for topic in topics {
        put_str(&mut body, topic)?;
        body.push(1);
    }
    frame((packet::SUBSCRIBE << 4) | 0x02, &body)
}

/// One packet read off the wire: its first byte and its body.
async fn read_packet(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<(u8, Vec<u8>)> {
    let first = reader.read_u8().await?;
    let mut len: usize = 0;
    let mut shift = 0;
    loop {
        let byte = reader.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            bail!("a malformed MQTT remaining length");
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok((first, body))
}

/// A PUBLISH body's packet ID and payload (QoS 1: topic, ID, payload).
fn parse_publish(body: &[u8]) -> anyhow::Result<(u16, &[u8])> {
    let topic_len = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .context("a short PUBLISH")?;
    let id = body
        .get(2 + topic_len..4 + topic_len)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .context("a short PUBLISH")?;
    let payload = body.get(4 + topic_len..).context("a short PUBLISH")?;
    Ok((id, payload))
}

/// Connects and completes CONNECT/CONNACK.
async fn mqtt_connect(
    port: u16,
    client_id: &str,
    clean: bool,
) -> anyhow::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    write.write_all(&connect_packet(client_id, clean)?).await?;
    let (first, body) = read_packet(&mut reader).await?;
    if first >> 4 != packet::CONNACK || body.get(1) != Some(&0) {
        bail!("mosquitto refused CONNECT: {first:#x} {body:?}");
    }
    Ok((reader, write))
}

/// The `mosquitto` binary: on `PATH`, or where Debian puts it.
pub fn find_mosquitto() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A mosquitto process on 127.0.0.1, killed on drop.
struct Mosquitto {
    child: tokio::process::Child,
    port: u16,
}

impl Mosquitto {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\nmax_inflight_messages 0\n\
             max_queued_messages 1000000\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            dir.display()
        );
        if running_as_root() {
            // Otherwise it drops to the `mosquitto` user, who cannot write our directory.
            text.push_str("user root\n");
        }
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))?;
        let child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Mosquitto { child, port });
            }
            if started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
                bail!("mosquitto did not listen within {START_TIMEOUT:?}; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("mosquitto has exited")?;
        super::proc::cpu_seconds(Some(pid))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("mosquitto did not exit within 20 s of SIGTERM")
            }
        }
    }
}

/// State shared by publishers, subscribers and the orchestrator.
struct Shared {
    epoch: Instant,
    windows: Vec<Semaphore>,
    budget: AtomicI64,
    published: AtomicU64,
    pubacked: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    measuring: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
    seen: Mutex<HashSet<u64>>,
}

/// The payload: (publisher, sequence, send time), padded with zeros to 2,048 bytes.
fn payload(publisher: u16, seq: u64, sent_us: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(BODY_CLASS);
    p.extend_from_slice(&publisher.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&sent_us.to_le_bytes());
    p.resize(BODY_CLASS, 0);
    p
}

fn parse_payload(p: &[u8]) -> anyhow::Result<(u16, u64, u64)> {
    let field = |r: std::ops::Range<usize>| p.get(r).context("a short payload");
    Ok((
        u16::from_le_bytes(field(0..2)?.try_into()?),
        u64::from_le_bytes(field(2..10)?.try_into()?),
        u64::from_le_bytes(field(10..18)?.try_into()?),
    ))
}

async fn publisher(
    index: usize,
    port: u16,
    topics: Arc<Vec<String>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut reader, mut writer) =
        mqtt_connect(port, &format!("petrel-bench-pub-{index}"), true).await?;
    let window = shared.windows.get(index).context("publisher index")?;
    let pubacked = shared.clone();
    // The broker's PUBACKs come back on the read half.
    let acks: tokio::task::JoinHandle<anyhow::Result<()>> = tokio::spawn(async move {
        loop {
            let (first, _) = read_packet(&mut reader).await?;
            if first >> 4 != packet::PUBACK {
                bail!("a publisher got packet type {}", first >> 4);
            }
            pubacked.pubacked.fetch_add(1, Ordering::Relaxed);
        }
    });
    let senders = shared.windows.len();
    let mut next = index;
    let mut seq: u64 = 0;
    let mut id: u16 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            permit = window.acquire() => {
                let Ok(permit) = permit else { break };
                permit.forget();
                if shared.budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
                let topic = topics.get(next % topics.len()).context("no topic")?;
                next = next.wrapping_add(senders);
                id = id.checked_add(1).unwrap_or(1);
                let sent_us = shared.epoch.elapsed().as_micros() as u64;
                let packet = publish_packet(topic, id, &payload(index as u16, seq, sent_us))?;
                seq += 1;
                writer.write_all(&packet).await?;
                shared.published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Let the last PUBACKs arrive before the connection closes.
    let settle = Instant::now();
    while shared.pubacked.load(Ordering::Relaxed) < shared.published.load(Ordering::Relaxed)
        && settle.elapsed() < Duration::from_secs(10)
        && !acks.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acks.abort();
    Ok(())
}

async fn subscriber(
    index: usize,
    port: u16,
    topics: Vec<String>,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut reader, mut writer) =
        mqtt_connect(port, &format!("petrel-bench-sub-{index}"), false).await?;
    writer.write_all(&subscribe_packet(1, &topics)?).await?;
    let (first, body) = read_packet(&mut reader).await?;
    if first >> 4 != packet::SUBACK || body.iter().skip(2).any(|&code| code != 1) {
        bail!("mosquitto refused SUBSCRIBE: {first:#x} {body:?}");
    }
    let _ = ready.send(());
    loop {
        let (first, body) = tokio::select! {
            _ = stop.changed() => break,
            p = read_packet(&mut reader) => p?,
        };
        if first >> 4 != packet::PUBLISH {
            bail!("a subscriber got packet type {}", first >> 4);
        }
        let arrived = shared.epoch.elapsed().as_micros() as u64;
        let (id, payload) = parse_publish(&body)?;
        let (publisher, seq, sent_us) = parse_payload(payload)?;
        writer.write_all(&puback_packet(id)).await?;
        let fresh = shared
            .seen
            .lock()
            .map(|mut s| s.insert((u64::from(publisher) << 48) | seq))
            .unwrap_or(true);
        if fresh {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(window) = shared.windows.get(usize::from(publisher)) {
                window.add_permits(1);
            }
        } else {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        if shared.measuring.load(Ordering::Relaxed)
            && let Ok(mut l) = shared.latencies_us.lock()
        {
            l.push(u32::try_from(arrived.saturating_sub(sent_us)).unwrap_or(u32::MAX));
        }
    }
    Ok(())
}

/// Runs the broker baseline when mosquitto is installed, appending rows.
pub async fn run(
    plan: &ThroughputPlan,
    env: &super::Env,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let Some(bin) = find_mosquitto() else {
        eprintln!(
            "broker: no `mosquitto` binary on PATH or in /usr/sbin: skipped (Debian: apt-get \
             install mosquitto)"
        );
        return Ok(());
    };
    let topics = plan.queue_counts.first().copied().unwrap_or(100).max(1);
    let dir = env.work_dir.join("broker");
    let broker = Mosquitto::start(&bin, &dir).await?;
    eprintln!(
        "broker: {} listening on 127.0.0.1:{}",
        bin.display(),
        broker.port
    );
    let result = measure(plan, topics, &broker, rows).await;
    let stopped = broker.stop().await;
    result?;
    stopped?;
    env.discard(&dir);
    Ok(())
}

async fn measure(
    plan: &ThroughputPlan,
    topics: usize,
    broker: &Mosquitto,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let label = format!("{} topics", format_value(topics as f64));
    let n_pub = plan.senders.max(1);
    let n_sub = plan.recipients.clamp(1, topics);
    let in_flight = plan
        .in_flight
        .unwrap_or_else(|| super::traffic::total_window(topics));
    let per_pub = (in_flight / n_pub).max(1);
    let names: Vec<String> = (0..topics).map(|t| format!("petrel-bench/{t}")).collect();
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        windows: (0..n_pub).map(|_| Semaphore::new(per_pub)).collect(),
        budget: AtomicI64::new(
            plan.max_messages
                .map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX)),
        ),
        published: AtomicU64::new(0),
        pubacked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
        seen: Mutex::new(HashSet::new()),
    });
    eprintln!("broker, {label}: {n_sub} subscriber and {n_pub} publisher connections");
    let (stop_subs, subs_stop) = watch::channel(false);
    let mut subscribers = Vec::new();
    for s in 0..n_sub {
        let mine: Vec<String> = names.iter().skip(s).step_by(n_sub).cloned().collect();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        subscribers.push(tokio::spawn(subscriber(
            s,
            broker.port,
            mine,
            shared.clone(),
            ready_tx,
            subs_stop.clone(),
        )));
        if ready_rx.await.is_err() {
            let task = subscribers.pop().context("no subscriber task")?;
            task.await.context("a subscriber panicked")??;
            bail!("a subscriber ended before subscribing");
        }
    }
    let (stop_pubs, pubs_stop) = watch::channel(false);
    let names = Arc::new(names);
    let publishers: Vec<_> = (0..n_pub)
        .map(|p| {
            tokio::spawn(publisher(
                p,
                broker.port,
                names.clone(),
                shared.clone(),
                pubs_stop.clone(),
            ))
        })
        .collect();
    let count_mode = plan.max_messages.is_some();
    eprintln!(
        "broker, {label}: QoS 1, closed loop, {} in flight; {}",
        per_pub * n_pub,
        if count_mode {
            format!(
                "until {} messages arrive",
                plan.max_messages.unwrap_or_default()
            )
        } else {
            format!(
                "{:.0} s warm-up, {:.0} s measured",
                plan.warmup.as_secs_f64(),
                plan.measure.as_secs_f64()
            )
        }
    );
    let failed = || {
        publishers.iter().any(|t| t.is_finished()) || subscribers.iter().any(|t| t.is_finished())
    };
    tokio::time::sleep(plan.warmup).await;
    let t0 = Instant::now();
    let delivered0 = shared.delivered.load(Ordering::Relaxed);
    let cpu0 = broker.cpu_seconds()?;
    let bench_cpu0 = super::proc::cpu_seconds(None)?;
    shared.measuring.store(true, Ordering::Relaxed);
    let mut last_print = Instant::now();
    let mut last = delivered0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if count_mode && delivered >= plan.max_messages.unwrap_or(0) {
            break;
        }
        if t0.elapsed() >= plan.measure || failed() {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let rate = (delivered - last) as f64 / last_print.elapsed().as_secs_f64();
            eprintln!(
                "broker, {label}: {:.0} s, {} msg/s",
                t0.elapsed().as_secs_f64(),
                format_value(rate)
            );
            last_print = Instant::now();
            last = delivered;
        }
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let measured = shared.delivered.load(Ordering::Relaxed) - delivered0;
    let broker_cpu = broker.cpu_seconds()? - cpu0;
    let bench_cpu = super::proc::cpu_seconds(None)? - bench_cpu0;

    let _ = stop_pubs.send(true);
    for task in publishers {
        task.await.context("a publisher panicked")??;
    }
    let drain = Instant::now();
    while shared.delivered.load(Ordering::Relaxed) + shared.duplicates.load(Ordering::Relaxed)
        < shared.published.load(Ordering::Relaxed)
        && drain.elapsed() < plan.drain_timeout
        && !subscribers.iter().any(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_subs.send(true);
    for task in subscribers {
        task.await.context("a subscriber panicked")??;
    }

    let published = shared.published.load(Ordering::Relaxed);
    let pubacked = shared.pubacked.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let duplicates = shared.duplicates.load(Ordering::Relaxed);
    let rate = measured as f64 / elapsed;
    eprintln!(
        "broker, {label}: {} msg/s; published {published}, PUBACKed {pubacked}, delivered {delivered}, duplicates {duplicates}",
        format_value(rate)
    );
    let key = format!("broker.t{topics}");
    let scenario = "baseline";
    rows.push(
        Row::info(
            &format!("{key}.rate"),
            scenario,
            &format!("mosquitto, publish → deliver → PUBACK, QoS 1, persistence on, {label}"),
            rate,
            "msg/s",
        )
        .note(
            "Plaintext MQTT 3.1.1, 2,048-byte payloads, the relay run's in-flight count. \
             mosquitto's persistence is a snapshot of its memory every second and at exit: a \
             PUBACK never waits for the disk (the relay's OK waits for an fsync'd commit), \
             and the subscriber's PUBACK is not answered (the relay's ACK is, after a commit).",
        ),
    );
    let mut samples = shared
        .latencies_us
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    if let Some(s) = summarize(&mut samples) {
        for (name, v) in [("p50", s.p50), ("p99", s.p99)] {
            rows.push(Row::info(
                &format!("{key}.latency_{name}"),
                scenario,
                &format!("mosquitto publish → deliver latency {name} at peak, {label}"),
                v / 1_000.0,
                "ms",
            ));
        }
    }
    if measured > 0 && broker_cpu > 0.0 {
        rows.push(Row::info(
            &format!("{key}.cpu_per_msg"),
            scenario,
            &format!("mosquitto CPU per message, {label}"),
            broker_cpu * 1e6 / measured as f64,
            "µs",
        ));
    }
    rows.push(Row::info(
        &format!("{key}.bench_cores"),
        scenario,
        &format!("MQTT clients' CPU use, {label}"),
        bench_cpu / elapsed,
        "cores",
    ));
    rows.push(
        Row::info(
            &format!("{key}.delivered"),
            scenario,
            &format!("mosquitto, delivered exactly once, {label}"),
            delivered as f64,
            "msgs",
        )
        .sanity(
            published > 0 && pubacked == published && delivered == published && duplicates == 0,
            &format!("= {published} published, 0 dup"),
        )
        .note(format!(
            "published {published}, PUBACKed by the broker {pubacked}, delivered {delivered}, \
             duplicates {duplicates}"
        )),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn remaining_length_encoding() {
        for (len, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (268_435_455, vec![0xff, 0xff, 0xff, 0x7f]),
        ] {
            let mut out = Vec::new();
            put_length(&mut out, len).unwrap();
            assert_eq!(out, bytes, "{len}");
        }
        assert!(put_length(&mut Vec::new(), 268_435_456).is_err());
    }

    #[test]
    fn packets_as_the_spec_lays_them_out() {
        assert_eq!(
            connect_packet("c", false).unwrap(),
            [
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 0, 0, 1, b'c'
            ]
        );
        assert_eq!(
            publish_packet("t", 0x0102, b"hi").unwrap(),
            [0x32, 7, 0, 1, b't', 1, 2, b'h', b'i']
        );
        assert_eq!(puback_packet(0x0102), [0x40, 2, 1, 2]);
        assert_eq!(
            subscribe_packet(1, &["a".to_string()]).unwrap(),
            [0x82, 6, 0, 1, 0, 1, b'a', 1]
        );
        let body = &publish_packet("t", 7, b"xyz").unwrap()[2..];
        let (id, inner) = parse_publish(body).unwrap();
        assert_eq!((id, inner), (7, &b"xyz"[..]));
        assert!(parse_publish(&[0, 9, b'x']).is_err());
        let p = payload(3, 9, 12_345);
        assert_eq!(p.len(), BODY_CLASS);
        assert_eq!(parse_payload(&p).unwrap(), (3, 9, 12_345));
    }
}
