//! A forwarding relay's session with a destination relay (`/petrel/relay/1`).
//!
//! Opened over the relay's own node, so the destination sees the forwarding relay's key
//! (and can apply its policy) but never a client. One session per destination is reused
//! for every client's forwards; requests are matched to replies by `corr`, so forwards of
//! many clients are in flight on it at once, mixed.

use super::io::{read_message, write_message};
use super::session::peer_hello;
use super::{Node, Stream};
use crate::address::RelayAddress;
use crate::error::ErrorCode;
use crate::limits::MAX_FRAME_LEN;
use crate::peer::{self, PeerReply, PeerRequest, SignedRelayInfo};
use crate::seal::{SealedEnvelope, SealedResponse};
use futures::AsyncReadExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

use super::connection::ConnectionError;

type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<PeerReply>>>>;

/// An open peer session.
pub struct PeerConnection {
    out: mpsc::Sender<PeerRequest>,
    waiters: Waiters,
    next_corr: AtomicU32,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection").finish_non_exhaustive()
    }
}

/// What a forward came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardReply {
    /// The destination's sealed answer.
    Sealed(SealedResponse),
    /// The destination refused at the relay level.
    Refused(ErrorCode),
}

impl PeerConnection {
    /// Dials `destination` by its key from `node` and opens a peer session.
    pub async fn open(node: &Node, destination: &RelayAddress) -> Result<Self, ConnectionError> {
        let peer_id = node.connect(destination).await?;
        let mut stream: Stream = node.open(peer_id, peer::PROTOCOL).await?;
        let version = peer_hello(&mut stream).await? as u8;
        let (mut reader, mut writer) = stream.split();
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (reader_waiters, reader_alive) = (waiters.clone(), alive.clone());
        tokio::spawn(async move {
            while let Ok(reply) =
                read_message::<PeerReply, _>(&mut reader, version, MAX_FRAME_LEN).await
            {
                let corr = match &reply {
                    PeerReply::Forwarded { corr, .. }
                    | PeerReply::Info { corr, .. }
                    | PeerReply::Error { corr, .. } => *corr,
                };
                let waiter = reader_waiters.lock().ok().and_then(|mut w| w.remove(&corr));
                if let Some(w) = waiter {
                    let _ = w.send(reply);
                }
            }
            reader_alive.store(false, Ordering::SeqCst);
            if let Ok(mut w) = reader_waiters.lock() {
                w.clear();
            }
        });
        let (out, mut rx) = mpsc::channel::<PeerRequest>(1024);
        let writer_alive = alive.clone();
        tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                if write_message(&mut writer, version, &request).await.is_err() {
                    break;
                }
            }
            writer_alive.store(false, Ordering::SeqCst);
            let _ = futures::AsyncWriteExt::close(&mut writer).await;
        });
        Ok(Self {
            out,
            waiters,
            next_corr: AtomicU32::new(1),
            alive,
        })
    }

    /// False once the session has failed; open a new one.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !self.out.is_closed()
    }

    async fn call(
        &self,
        make: impl FnOnce(u32) -> PeerRequest,
    ) -> Result<PeerReply, ConnectionError> {
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed).max(1);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(corr, tx);
        }
        // The reader may have died between the caller's liveness check and the insert;
        // then nobody would ever answer this waiter.
        if !self.is_alive() {
            if let Ok(mut w) = self.waiters.lock() {
                w.remove(&corr);
            }
            return Err(ConnectionError::Closed);
        }
        self.out
            .send(make(corr))
            .await
            .map_err(|_| ConnectionError::Closed)?;
        rx.await.map_err(|_| ConnectionError::Closed)
    }

    /// Forwards a sealed envelope and waits for the destination's answer.
    pub async fn forward(&self, envelope: SealedEnvelope) -> Result<ForwardReply, ConnectionError> {
        match self
            .call(|corr| PeerRequest::Forward { corr, envelope })
            .await?
        {
            PeerReply::Forwarded { response, .. } => Ok(ForwardReply::Sealed(response)),
            PeerReply::Error { code, .. } => Ok(ForwardReply::Refused(code)),
            PeerReply::Info { .. } => Ok(ForwardReply::Refused(ErrorCode::Malformed)),
        }
    }

    /// Asks for the destination's signed info.
    pub async fn info(&self) -> Result<Result<SignedRelayInfo, ErrorCode>, ConnectionError> {
        match self.call(|corr| PeerRequest::Info { corr }).await? {
            PeerReply::Info { info, .. } => Ok(Ok(info)),
            PeerReply::Error { code, .. } => Ok(Err(code)),
            PeerReply::Forwarded { .. } => Ok(Err(ErrorCode::Malformed)),
        }
    }
}
