//! The TCP path from one forwarding relay to one destination relay, as a proxy that the
//! simulator can cut and restore.
//!
//! Senders name their contact's relay by its key at the proxy's port
//! (`petrel://<destination key>@127.0.0.1:<proxy port>`), so the forwarding relay reaches
//! the destination only through this proxy and still checks the key it proves. A cut closes
//! every spliced connection and then closes new ones as soon as they are accepted (the
//! forwarding relay sees its peer session end and its dials fail, as over a broken route);
//! a restore lets bytes through again.
//!
//! The upstream port is read for every new connection from a cell shared by all proxies in
//! front of one relay: a restarted relay listens on a fresh port (it binds 127.0.0.1:0 like
//! everything else here), and the proxies follow it. Port 0 means the relay is down; a
//! connection accepted then is closed at once.

use anyhow::Context;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The current port of one relay (0 while it is down), shared by the proxies in front of it.
pub type Upstream = Arc<AtomicU16>;

/// A cuttable proxy on 127.0.0.1.
#[derive(Debug)]
pub struct PathProxy {
    port: u16,
    passing: Arc<watch::Sender<bool>>,
    splices: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refused: Arc<watch::Sender<u64>>,
    accept: JoinHandle<()>,
}

impl PathProxy {
    /// Listens on 127.0.0.1 (any port) in front of the relay whose port is in `upstream`.
    pub async fn start(upstream: Upstream) -> anyhow::Result<PathProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a path proxy")?;
        let port = listener.local_addr()?.port();
        let passing = Arc::new(watch::channel(true).0);
        let splices: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let refused = Arc::new(watch::channel(0u64).0);
        let accept = {
            let (passing, splices, refused) = (passing.clone(), splices.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let port = upstream.load(Ordering::SeqCst);
                    if !*passing.borrow() || port == 0 {
                        refused.send_modify(|n| *n += 1);
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                        refused.send_modify(|n| *n += 1);
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let task = tokio::spawn(splice(client, server, passing.subscribe()));
                    if let Ok(mut s) = splices.lock() {
                        s.retain(|t| !t.is_finished());
                        s.push(task);
                    }
                }
            })
        };
        Ok(PathProxy {
            port,
            passing,
            splices,
            refused,
            accept,
        })
    }

    /// The port relays dial.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops passing bytes; returns once every spliced connection is closed.
    pub async fn cut(&self) {
        self.passing.send_replace(false);
        let tasks = self
            .splices
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Passes bytes again.
    pub fn restore(&self) {
        self.passing.send_replace(true);
    }

    /// Connections refused so far (while cut, or while the relay was down).
    pub fn refused(&self) -> watch::Receiver<u64> {
        self.refused.subscribe()
    }
}

impl Drop for PathProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(s) = self.splices.lock() {
            for task in s.iter() {
                task.abort();
            }
        }
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Passes bytes both ways until either side closes or the path is cut; then both sockets
/// are dropped (closed).
async fn splice(client: TcpStream, server: TcpStream, mut passing: watch::Receiver<bool>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        biased;
        _ = passing.wait_for(|p| !*p) => {}
        _ = pipe(client_read, server_write) => {}
        _ = pipe(server_read, client_write) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An echo server behind the proxy; a cut closes the live connection and refuses the
    /// next, a restore lets the next one through.
    #[tokio::test]
    async fn cut_and_restore() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream: Upstream = Arc::new(AtomicU16::new(echo.local_addr().unwrap().port()));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = PathProxy::start(upstream.clone()).await.unwrap();
        let echo_once = |port: u16| async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map(|_| (s, buf))
        };
        let (mut live, buf) = echo_once(proxy.port()).await.unwrap();
        assert_eq!(&buf, b"ping");
        proxy.cut().await;
        let mut rest = Vec::new();
        assert_eq!(live.read_to_end(&mut rest).await.unwrap_or(0), 0);
        assert!(echo_once(proxy.port()).await.is_err());
        let mut refused = proxy.refused();
        refused.wait_for(|n| *n >= 1).await.unwrap();
        proxy.restore();
        assert_eq!(&echo_once(proxy.port()).await.unwrap().1, b"ping");
        // The relay is down: refused too.
        upstream.store(0, Ordering::SeqCst);
        assert!(echo_once(proxy.port()).await.is_err());
    }
}
