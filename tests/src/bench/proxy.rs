//! A byte-counting TCP proxy on loopback, to measure what a session really puts on the
//! wire: Petrel frames inside Yamux frames inside Noise frames, window updates and all.
//!
//! The client dials the proxy as if it were the relay (the relay address names the relay's
//! key, so the Noise handshake still proves the relay behind the proxy); the proxy copies
//! bytes both ways and counts them. TCP/IP headers are below what it can see.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    to_relay: Arc<AtomicU64>,
    from_relay: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump<R, W>(mut from: R, mut to: W, counter: Arc<AtomicU64>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

impl CountingProxy {
    /// Listens on 127.0.0.1 (any port) and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the counting proxy")?;
        let addr = listener.local_addr()?;
        let to_relay = Arc::new(AtomicU64::new(0));
        let from_relay = Arc::new(AtomicU64::new(0));
        let (up, down) = (to_relay.clone(), from_relay.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, up.clone()));
                tokio::spawn(pump(sr, cw, down.clone()));
            }
        });
        Ok(CountingProxy {
            addr,
            to_relay,
            from_relay,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes so far: (client → relay, relay → client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.to_relay.load(Ordering::Relaxed),
            self.from_relay.load(Ordering::Relaxed),
        )
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
