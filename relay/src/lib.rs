//! The Petrel relay: a store-and-forward node anyone can run with one command.
//!
//! Start-up ([`run`]): load or create the identity and sealing keys ([`keys`]), open the
//! redb store ([`store`]), start the libp2p node, print the relay address, then serve:
//!
//! * client sessions (`/petrel/client/1`), one actor each ([`session`]), executing the
//!   queue commands of [`service`] against the store;
//! * relay peers (`/petrel/relay/1`), which today can fetch this relay's signed info;
//!   forwarding arrives with the federation work and is refused by policy until then;
//! * the operations HTTP endpoint (`/health`, `/metrics`) and, on a PaaS (`$PORT`), the
//!   front door that serves those paths next to the WebSocket transport ([`http`]);
//! * a sweeper that deletes expired messages and refreshes the gauges.
//!
//! Shutdown (SIGTERM/SIGINT, or the `shutdown` future): new sessions are refused, every
//! session finishes the commands it has in flight, the store's last commit completes, and
//! the process exits 0.

#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod forward;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod service;
pub mod session;
pub mod store;

use config::Config;
use futures::StreamExt;
use keys::RelayKeys;
use metrics::Metrics;
use petrel_federation::address::{Endpoint, Host, RelayAddress, TransportKind};
use petrel_federation::limits::{MAX_ENDPOINTS, MAX_FRAME_LEN};
use petrel_federation::peer::{self, PeerReply, PeerRequest};
use petrel_federation::transport::io::{read_message, write_message};
use petrel_federation::transport::{Node, TransportLimits, endpoint_of};
use petrel_federation::{ErrorCode, client};
use service::Relay;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the relay could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The store could not be opened (damaged, or in use by another relay).
    #[error("cannot open the store {path}: {source}")]
    Store {
        /// The redb file.
        path: std::path::PathBuf,
        /// Why.
        source: store::StoreError,
    },
    /// The network could not start.
    #[error(transparent)]
    Transport(#[from] petrel_federation::transport::TransportError),
    /// A listener for HTTP or `$PORT` could not be bound.
    #[error(
        "cannot listen on {addr} for {what}: {error}{}",
        bind_hint(error, flag)
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the listener is for.
        what: &'static str,
        /// The flag that sets this address.
        flag: &'static str,
        /// Why.
        error: std::io::Error,
    },
    /// The announced endpoints do not form a valid address.
    #[error("cannot build the relay address: {0}")]
    Address(#[from] petrel_federation::AddressError),
}

/// Refuses a listen port another process already holds. libp2p binds its listeners with
/// `SO_REUSEPORT`, so a second relay started on a taken port would start "fine" and share
/// the port with the first, each getting some of the connections; a plain bind (without
/// that option) fails instead, and is released at once.
fn check_ports_free(listen: &[libp2p::Multiaddr]) -> Result<(), RelayError> {
    use libp2p::multiaddr::Protocol;
    for address in listen {
        let mut parts = address.iter();
        let ip: IpAddr = match parts.next() {
            Some(Protocol::Ip4(ip)) => ip.into(),
            Some(Protocol::Ip6(ip)) => ip.into(),
            _ => continue,
        };
        let Some(Protocol::Tcp(port)) = parts.next() else {
            continue;
        };
        if port == 0 {
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        std::net::TcpListener::bind(addr).map_err(|error| RelayError::Bind {
            addr,
            what: "relay sessions",
            flag: "--listen port",
            error,
        })?;
    }
    Ok(())
}

/// What to do about a listener that cannot be bound.
fn bind_hint(error: &std::io::Error, flag: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (another program, or another relay on this machine, has it: give each relay its \
             own {flag}{})",
            if flag == "--http" {
                ", or --http off"
            } else {
                ""
            }
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!(" (ports below 1024 need privileges: choose a higher one with {flag})")
        }
        _ => String::new(),
    }
}

/// The store file's name inside the data directory.
pub const STORE_FILE: &str = "relay.redb";
/// The file the relay writes its address to at every start.
pub const ADDRESS_FILE: &str = "address.txt";

fn create_data_dir(dir: &std::path::Path) -> Result<(), RelayError> {
    let err = |source| RelayError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A mounted volume may belong to someone else; the key files are 0600 either way.
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(error = %e, "cannot restrict the data directory to its owner");
        }
    }
    Ok(())
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Ipv4(b) => Ipv4Addr::from(*b).is_loopback(),
        Host::Ipv6(b) => std::net::Ipv6Addr::from(*b).is_loopback(),
        Host::Name(_) => false,
    }
}

fn is_unspecified(host: &Host) -> bool {
    match host {
        Host::Ipv4(b) => Ipv4Addr::from(*b).is_unspecified(),
        Host::Ipv6(b) => std::net::Ipv6Addr::from(*b).is_unspecified(),
        Host::Name(_) => false,
    }
}

/// The endpoints to print: announced ones if given, else what the node bound (reachable
/// interfaces first, loopback last), plus `ws/<ip>:$PORT` for the front door.
fn address_endpoints(
    config: &Config,
    bound: &[libp2p::Multiaddr],
    internal_ws: Option<&libp2p::Multiaddr>,
    front_door_port: Option<u16>,
) -> Vec<Endpoint> {
    if !config.announce.is_empty() {
        return config.announce.clone();
    }
    let mut endpoints: Vec<Endpoint> = bound
        .iter()
        .filter(|a| Some(*a) != internal_ws)
        .filter_map(endpoint_of)
        .filter(|e| !is_unspecified(&e.host))
        .collect();
    if let Some(port) = front_door_port {
        let hosts: Vec<Host> = endpoints.iter().map(|e| e.host.clone()).collect();
        for host in hosts {
            endpoints.push(Endpoint {
                transport: TransportKind::Ws,
                host,
                port,
            });
        }
    }
    endpoints.sort_by_key(|e| is_loopback(&e.host));
    endpoints.dedup();
    endpoints.truncate(MAX_ENDPOINTS);
    endpoints
}

/// Runs the relay until `shutdown` resolves. `on_ready` gets the relay address once every
/// listener is bound. The returned [`store::StoreWriter`] should be joined after the async
/// runtime has shut down, so the store is closed cleanly before the process exits.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    on_ready: impl FnOnce(&RelayAddress),
) -> Result<store::StoreWriter, RelayError> {
    create_data_dir(&config.data_dir)?;
    let keys = RelayKeys::load_or_create(&config.data_dir, &mut rand::rng())?;
    let store_path = config.data_dir.join(STORE_FILE);
    let store = store::Store::open(&store_path).map_err(|source| RelayError::Store {
        path: store_path.clone(),
        source,
    })?;
    let store_writer = store.writer_handle();
    let metrics = Metrics::new();
    let Some(keypair) = keys.libp2p_keypair() else {
        return Err(RelayError::Keys(keys::KeyError::Damaged {
            path: config.data_dir.join("identity.key"),
            len: 32,
        }));
    };
    let limits = &config.limits;
    let transport_limits = TransportLimits {
        max_connections: limits.max_connections,
        max_pending: 256,
        max_per_ip: limits.max_connections_per_ip,
        // Front-door clients all arrive from loopback; the front door caps them itself.
        per_ip_exempt_loopback: config.port.is_some(),
        handshake_timeout: limits.handshake_timeout(),
        // Sessions enforce their own idle timeout; the connection lingers a little longer.
        idle_timeout: limits.idle_timeout() + Duration::from_secs(5),
    };
    let mut listen = config.listen.clone();
    let internal_ws: Option<libp2p::Multiaddr> = config.port.map(|_| {
        "/ip4/127.0.0.1/tcp/0/ws"
            .parse()
            .unwrap_or_else(|_| libp2p::Multiaddr::empty())
    });
    if let Some(ws) = &internal_ws {
        listen.push(ws.clone());
    }
    check_ports_free(&config.listen)?;
    let node = Arc::new(Node::start(keypair, &listen, transport_limits).await?);
    let bound = node.listen_addrs();
    // The internal WebSocket listener's real address (port 0 was replaced).
    let internal_ws_bound = internal_ws.as_ref().and_then(|_| {
        bound
            .iter()
            .find(|a| {
                a.to_string().starts_with("/ip4/127.0.0.1/tcp/") && a.to_string().ends_with("/ws")
            })
            .cloned()
    });
    // The front door on $PORT (port 0 picks a free one; the address shows the real port).
    let front_door = match config.port {
        Some(port) => {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|error| RelayError::Bind {
                        addr,
                        what: "the $PORT front door (WebSocket, /health, /metrics)",
                        flag: "--port",
                        error,
                    })?;
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
            Some((listener, port))
        }
        None => None,
    };
    let endpoints = address_endpoints(
        &config,
        &bound,
        internal_ws_bound.as_ref(),
        front_door.as_ref().map(|(_, port)| *port),
    );
    let address = RelayAddress::new(keys.relay_key(), endpoints)?;

    let relay = Arc::new(Relay::new(store, keys, config.clone(), metrics.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let forwarder = Arc::new(forward::Forwarder::new(node.clone(), &relay));
    relay.set_forwarder(forwarder.clone());
    tasks.spawn(forwarder.clone().run_outbox(relay.clone(), stop_rx.clone()));

    // Operations HTTP.
    let health_relay = relay.clone();
    let health: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || !health_relay.is_draining());
    if let Some(addr) = config.http {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| RelayError::Bind {
                    addr,
                    what: "the operations endpoint (/health, /metrics)",
                    flag: "--http",
                    error,
                })?;
        let serve = http::serve_http(
            listener,
            metrics.clone(),
            health.clone(),
            wait_stop(stop_rx.clone()),
        );
        tasks.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP endpoint stopped");
            }
        });
    }
    if let (Some((listener, _)), Some(ws)) =
        (front_door, internal_ws_bound.as_ref().and_then(endpoint_of))
    {
        let backend = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), ws.port);
        let serve = http::serve_front_door(
            listener,
            backend,
            metrics.clone(),
            health.clone(),
            limits.max_connections as usize,
            wait_stop(stop_rx.clone()),
        );
        tasks.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "front door stopped");
            }
        });
    }

    // Register the protocols before announcing the address, so a client that connects at
    // once finds them.
    let mut incoming = node.accept(client::PROTOCOL)?;
    let mut peers = node.accept(peer::PROTOCOL)?;
    let _ = std::fs::write(config.data_dir.join(ADDRESS_FILE), format!("{address}\n"));
    on_ready(&address);
    tracing::info!("relay started");

    // Client sessions. libp2p-stream drops an inbound stream that arrives while the
    // previous one has not been taken yet (its channel has no buffer), so a dedicated task
    // does nothing but move streams into a buffered channel; sessions start from there.
    let (stream_tx, mut stream_rx) = tokio::sync::mpsc::channel(1024);
    tasks.spawn(async move {
        while let Some(next) = incoming.next().await {
            if stream_tx.send(next).await.is_err() {
                break;
            }
        }
    });
    let session_relay = relay.clone();
    let session_stop = stop_rx.clone();
    let max_sessions = limits.max_sessions as usize;
    let accept = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        let mut stop = session_stop.clone();
        loop {
            tokio::select! {
                next = stream_rx.recv() => {
                    let Some((_peer, stream)) = next else { break };
                    while sessions.try_join_next().is_some() {}
                    if sessions.len() >= max_sessions {
                        tracing::warn!("session limit reached; refusing a session");
                        continue;
                    }
                    sessions.spawn(session::run(session_relay.clone(), stream, session_stop.clone()));
                }
                _ = stop.changed() => break,
            }
        }
        // Let every session answer what it has in flight (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
    });

    // Relay peers: forwards other relays bring, and requests for this relay's info.
    let peer_relay = relay.clone();
    tasks.spawn(async move {
        while let Some((peer_id, stream)) = peers.next().await {
            tokio::spawn(serve_peer(peer_relay.clone(), peer_id, stream));
        }
    });

    // Sweeper.
    let sweep_relay = relay.clone();
    let mut sweep_stop = stop_rx.clone();
    tasks.spawn(async move {
        loop {
            match sweep_relay.sweep_expired(10_000).await {
                Ok(n) if n > 0 => tracing::debug!(count = n, "expired messages deleted"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "sweep failed"),
            }
            let now = sweep_relay.clock().now();
            let purged = sweep_relay
                .store
                .write(move |t| t.purge_forwarding(now, forward::RESULT_TTL_SECS))
                .await;
            if let Err(e) = purged {
                tracing::error!(error = %e, "purging replay tags failed");
            }
            if let Ok((queues, messages)) = sweep_relay.store.counts() {
                sweep_relay.metrics.set_queues(queues);
                sweep_relay.metrics.set_messages(messages);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = sweep_stop.changed() => break,
            }
        }
    });

    shutdown.await;
    tracing::info!("shutting down: draining sessions");
    drop(forwarder);
    relay.start_draining();
    let _ = stop_tx.send(true);
    let _ = accept.await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    node.stop().await;
    tracing::info!("relay stopped");
    Ok(store_writer)
}

/// One peer relay's session: hello, then forwards and info requests until it ends or
/// misbehaves too often. Like a client session, forwards are checked and handed to the
/// store in the order they are read, many are in flight at once (so they share commits),
/// and each is answered by `corr` when its commit is done.
async fn serve_peer(
    relay: Arc<Relay>,
    peer_id: libp2p::PeerId,
    mut stream: petrel_federation::transport::Stream,
) {
    use forward::ForwardingMode;
    use futures::{AsyncReadExt, StreamExt, stream::FuturesUnordered};
    use petrel_federation::frame::FrameError;
    let Some(peer_key) = petrel_federation::transport::relay_key_of_peer(&peer_id) else {
        return;
    };
    let Ok(Ok(version)) = tokio::time::timeout(
        relay.config.limits.handshake_timeout(),
        petrel_federation::transport::session::accept_peer_hello(&mut stream),
    )
    .await
    else {
        return;
    };
    let version = version as u8;
    let allowed = match &relay.config.forwarding {
        ForwardingMode::Open => true,
        ForwardingMode::Peers(list) => list.contains(&peer_key),
        ForwardingMode::Off => false,
    };
    let via = petrel_federation::KeyHash::of_forwarder(&peer_key);
    let limits = relay.config.limits.clone();
    let mut bucket = session::Bucket::new(limits.peer_forward_burst, limits.peer_forwards_per_sec);
    let mut bad = 0u32;

    let (mut reader, mut writer) = stream.split();
    let (tx, mut requests) = tokio::sync::mpsc::channel::<Result<PeerRequest, FrameError>>(256);
    let reader_task = tokio::spawn(async move {
        loop {
            let next = read_message::<PeerRequest, _>(&mut reader, version, MAX_FRAME_LEN).await;
            let fatal = matches!(
                next,
                Err(FrameError::Io(_)
                    | FrameError::TooLarge { .. }
                    | FrameError::Truncated { .. }
                    | FrameError::Empty)
            );
            if tx.send(next).await.is_err() || fatal {
                break;
            }
        }
    });
    let mut pending = FuturesUnordered::new();
    let mut closing = false;
    loop {
        if closing && pending.is_empty() {
            break;
        }
        let reply = tokio::select! {
            Some((corr, sealed)) = pending.next(), if !pending.is_empty() => {
                PeerReply::Forwarded { corr, response: sealed }
            }
            next = requests.recv(), if !closing => match next {
                Some(Ok(PeerRequest::Info { corr })) => PeerReply::Info { corr, info: relay.relay_info() },
                Some(Ok(PeerRequest::Forward { corr, envelope })) => {
                    if !allowed {
                        PeerReply::Error { corr, code: ErrorCode::ForwardDenied }
                    } else if !bucket.take() {
                        PeerReply::Error { corr, code: ErrorCode::RateLimited }
                    } else {
                        match forward::begin_forwarded(&relay, via, &envelope) {
                            Ok(job) => {
                                let relay = relay.clone();
                                pending.push(async move { (corr, forward::finish_forwarded(&relay, job).await) });
                                continue;
                            }
                            Err(code) => {
                                bad += 1;
                                PeerReply::Error { corr, code }
                            }
                        }
                    }
                }
                // The same rules as a client session (§3): a whole but wrong frame is told
                // and counted; an empty frame or an over-long prefix is told and closes.
                Some(Err(e)) => match e.notice_code() {
                    Some(code) => {
                        if matches!(e, FrameError::TooLarge { .. } | FrameError::Empty) {
                            closing = true;
                        } else {
                            bad += 1;
                        }
                        PeerReply::Error { corr: 0, code }
                    }
                    None => {
                        closing = true;
                        continue;
                    }
                },
                None => {
                    closing = true;
                    continue;
                }
            },
        };
        if write_message(&mut writer, version, &reply).await.is_err() {
            break;
        }
        if bad >= limits.peer_max_bad_forwards && !closing {
            tracing::warn!("closing a peer session after too many bad forwards");
            closing = true;
        }
    }
    reader_task.abort();
}

async fn wait_stop(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
}
