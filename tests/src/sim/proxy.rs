//! The TCP path from one forwarding relay to one destination relay, as a proxy that the
//! simulator can cut and restore.
//!
//! Senders name their contact's relay by its key at the proxy's port
//! (`petrel://<destination key>@127.0.0.1:<proxy port>`), so the forwarding relay reaches
//! the destination only through this proxy and still checks the key it proves. A path is in
//! one of three modes ([`PathMode`]):
//!
//! * **open** — bytes pass both ways;
//! * **refuse** — every spliced connection is closed, and new ones are closed as soon as
//!   they are accepted (a route that answers with resets: dials fail at once);
//! * **blackhole** — connections stay open but every byte is read and dropped, and new
//!   connections are accepted and treated the same (a route that silently loses packets:
//!   the forwarding relay learns nothing until its own forward timeout). When the path is
//!   restored, those connections are closed.
//!
//! The upstream port is read for every new connection from a cell shared by all proxies in
//! front of one relay: a restarted relay listens on a fresh port (it binds 127.0.0.1:0 like
//! everything else here), and the proxies follow it. Port 0 means the relay is down; a
//! connection accepted then is closed at once.

use anyhow::Context;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The current port of one relay (0 while it is down), shared by the proxies in front of it.
pub type Upstream = Arc<AtomicU16>;

/// What a path does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMode {
    /// Bytes pass.
    Open,
    /// Connections are closed.
    Refuse,
    /// Bytes are dropped; connections stay open.
    Blackhole,
}

/// What a path turned away: traffic that tried to cross while it was not open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Connections closed at once (path refusing, or the relay down).
    pub refused: u64,
    /// Bytes read and dropped (path blackholed).
    pub swallowed: u64,
}

impl Activity {
    /// Refused connections plus swallowed bytes: grows whenever traffic is turned away.
    pub fn total(&self) -> u64 {
        self.refused + self.swallowed
    }
}

/// A cuttable proxy on 127.0.0.1.
#[derive(Debug)]
pub struct PathProxy {
    port: u16,
    mode: Arc<watch::Sender<PathMode>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    activity: Arc<watch::Sender<Activity>>,
    accept: JoinHandle<()>,
}

impl PathProxy {
    /// Listens on 127.0.0.1 (any port) in front of the relay whose port is in `upstream`.
    pub async fn start(upstream: Upstream) -> anyhow::Result<PathProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a path proxy")?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(watch::channel(PathMode::Open).0);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let activity = Arc::new(watch::channel(Activity::default()).0);
        let accept = {
            let (mode, connections, activity) =
                (mode.clone(), connections.clone(), activity.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let now = *mode.borrow();
                    let task = match now {
                        PathMode::Refuse => None,
                        PathMode::Blackhole => Some(tokio::spawn(hold(
                            client,
                            mode.subscribe(),
                            activity.clone(),
                        ))),
                        PathMode::Open => {
                            let port = upstream.load(Ordering::SeqCst);
                            match (port, TcpStream::connect(("127.0.0.1", port)).await) {
                                (1.., Ok(server)) => {
                                    let _ = client.set_nodelay(true);
                                    let _ = server.set_nodelay(true);
                                    Some(tokio::spawn(splice(
                                        client,
                                        server,
                                        mode.subscribe(),
                                        activity.clone(),
                                    )))
                                }
                                _ => None,
                            }
                        }
                    };
                    match task {
                        Some(task) => {
                            if let Ok(mut c) = connections.lock() {
                                c.retain(|t| !t.is_finished());
                                c.push(task);
                            }
                        }
                        None => activity.send_modify(|a| a.refused += 1),
                    }
                }
            })
        };
        Ok(PathProxy {
            port,
            mode,
            connections,
            activity,
            accept,
        })
    }

    /// The port relays dial.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches the path's mode. When it starts refusing, returns once every spliced
    /// connection is closed.
    pub async fn set(&self, mode: PathMode) {
        self.mode.send_replace(mode);
        if mode != PathMode::Refuse {
            return;
        }
        let closing = self
            .connections
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        for task in closing {
            let _ = task.await;
        }
    }

    /// Traffic turned away so far.
    pub fn activity(&self) -> watch::Receiver<Activity> {
        self.activity.subscribe()
    }
}

impl Drop for PathProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(c) = self.connections.lock() {
            for task in c.iter() {
                task.abort();
            }
        }
    }
}

async fn pipe(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) {
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

/// Reads and drops everything, counting it, until the other side closes.
async fn swallow(from: &mut OwnedReadHalf, activity: &watch::Sender<Activity>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => activity.send_modify(|a| a.swallowed += n as u64),
        }
    }
}

/// A connection accepted while blackholed: swallowed until the mode changes, then closed.
async fn hold(
    client: TcpStream,
    mut mode: watch::Receiver<PathMode>,
    activity: Arc<watch::Sender<Activity>>,
) {
    let (mut read, _write) = client.into_split();
    tokio::select! {
        biased;
        _ = mode.wait_for(|m| *m != PathMode::Blackhole) => {}
        _ = swallow(&mut read, &activity) => {}
    }
}

/// Passes bytes both ways while the path is open, swallows them while it is blackholed,
/// and closes both sockets when it refuses, when it is restored after a blackhole, or when
/// either side closes.
async fn splice(
    client: TcpStream,
    server: TcpStream,
    mut mode: watch::Receiver<PathMode>,
    activity: Arc<watch::Sender<Activity>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::select! {
        biased;
        _ = mode.wait_for(|m| *m != PathMode::Open) => {}
        _ = pipe(&mut client_read, &mut server_write) => return,
        _ = pipe(&mut server_read, &mut client_write) => return,
    }
    if *mode.borrow() == PathMode::Blackhole {
        tokio::select! {
            biased;
            _ = mode.wait_for(|m| *m != PathMode::Blackhole) => {}
            _ = swallow(&mut client_read, &activity) => {}
            _ = swallow(&mut server_read, &activity) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn echo_server() -> Upstream {
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
        upstream
    }

    async fn ping(s: &mut TcpStream) -> std::io::Result<[u8; 4]> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.map(|_| buf)
    }

    async fn connect(port: u16) -> TcpStream {
        TcpStream::connect(("127.0.0.1", port)).await.unwrap()
    }

    #[tokio::test]
    async fn refuse_closes_and_restore_reopens() {
        let upstream = echo_server().await;
        let proxy = PathProxy::start(upstream.clone()).await.unwrap();
        let mut live = connect(proxy.port()).await;
        assert_eq!(&ping(&mut live).await.unwrap(), b"ping");
        proxy.set(PathMode::Refuse).await;
        let mut rest = Vec::new();
        assert_eq!(live.read_to_end(&mut rest).await.unwrap_or(0), 0);
        assert!(ping(&mut connect(proxy.port()).await).await.is_err());
        let mut activity = proxy.activity();
        activity.wait_for(|a| a.refused >= 1).await.unwrap();
        proxy.set(PathMode::Open).await;
        assert_eq!(
            &ping(&mut connect(proxy.port()).await).await.unwrap(),
            b"ping"
        );
        // The relay is down: refused too.
        upstream.store(0, Ordering::SeqCst);
        assert!(ping(&mut connect(proxy.port()).await).await.is_err());
    }

    #[tokio::test]
    async fn blackhole_swallows_then_closes_on_restore() {
        let proxy = PathProxy::start(echo_server().await).await.unwrap();
        let mut live = connect(proxy.port()).await;
        assert_eq!(&ping(&mut live).await.unwrap(), b"ping");
        proxy.set(PathMode::Blackhole).await;
        let mut fresh = connect(proxy.port()).await;
        // Both connections stay open and every byte disappears.
        live.write_all(b"lost").await.unwrap();
        fresh.write_all(b"gone").await.unwrap();
        let mut activity = proxy.activity();
        activity.wait_for(|a| a.swallowed >= 8).await.unwrap();
        assert_eq!(activity.borrow().refused, 0);
        proxy.set(PathMode::Open).await;
        let mut rest = Vec::new();
        assert_eq!(live.read_to_end(&mut rest).await.unwrap_or(0), 0);
        assert_eq!(fresh.read_to_end(&mut rest).await.unwrap_or(0), 0);
        assert_eq!(
            &ping(&mut connect(proxy.port()).await).await.unwrap(),
            b"ping"
        );
    }
}
