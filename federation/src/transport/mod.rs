//! The libp2p transport every Petrel node uses, and a small handle to drive it.
//!
//! A [`Node`] owns a libp2p swarm running in its own task: TCP + Noise + Yamux, WebSocket
//! (plain `ws`, and `wss` when dialing through a PaaS router that terminates TLS), DNS for
//! host-name endpoints, and QUIC with the `quic` feature. Every connection gets the limits in
//! [`TransportLimits`] — total and per-IP caps, a handshake timeout and an idle timeout —
//! set explicitly rather than left to library defaults.
//!
//! On top of a connection, Petrel opens one stream per session with
//! [`libp2p_stream`]: [`crate::client::PROTOCOL`] for clients and [`crate::peer::PROTOCOL`]
//! for relays. Frames on those streams go through [`io`]; the hello exchanges are in
//! [`session`].
//!
//! A relay is dialed by the key in its [`RelayAddress`]: the peer ID is derived from that
//! key and the Noise handshake must prove it, so a server at the right address with the
//! wrong key is refused with [`DialFailed::WrongKey`].

pub mod connection;
pub mod io;
pub mod peer_conn;
pub mod per_ip;
pub mod session;

use crate::address::{Endpoint, Host, RelayAddress, TransportKind};
use crate::ids::RelayKey;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OrTransport};
use libp2p::core::upgrade;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport, identity, noise, tcp, yamux};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub use libp2p::Stream;
pub use libp2p::identity::Keypair;
pub use libp2p_stream::{Control, IncomingStreams};

/// Connection limits and timeouts, all explicit.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Established connections in total (inbound and outbound).
    pub max_connections: u32,
    /// Inbound connections still in their handshake.
    pub max_pending: u32,
    /// Inbound connections (pending or established) from one IP address.
    pub max_per_ip: u32,
    /// Do not count loopback connections against `max_per_ip` (a relay behind its own
    /// front door sees every WebSocket client as 127.0.0.1).
    pub per_ip_exempt_loopback: bool,
    /// Time allowed for the transport upgrade (Noise + Yamux).
    pub handshake_timeout: Duration,
    /// A connection with no open stream is closed after this long.
    pub idle_timeout: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_pending: 256,
            max_per_ip: 64,
            per_ip_exempt_loopback: false,
            handshake_timeout: Duration::from_secs(crate::limits::HANDSHAKE_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(crate::limits::IDLE_TIMEOUT_SECS),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport stack could not be built.
    #[error("could not build the transport: {0}")]
    Build(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The operating system's or libp2p's reason.
        reason: String,
    },
    /// The node's task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailed {
    /// Something answered at the address but proved a different key.
    #[error(
        "relay key mismatch at {address}: the address says {expected}, the server proved {obtained}; refusing it"
    )]
    WrongKey {
        /// The key the relay address names.
        expected: String,
        /// The peer ID the server proved.
        obtained: String,
        /// Where.
        address: String,
    },
    /// No endpoint of the relay could be reached.
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    /// The relay's key is not usable as a libp2p identity.
    #[error("the relay key is not a valid Ed25519 key")]
    BadKey,
    /// The node's task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The peer does not speak the protocol.
    #[error("the peer does not speak {0}")]
    Unsupported(String),
    /// The connection failed.
    #[error("could not open a stream: {0}")]
    Io(String),
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    per_ip: per_ip::PerIpLimit,
    streams: libp2p_stream::Behaviour,
}

/// The peer ID of a relay key.
pub fn peer_id_of(key: &RelayKey) -> Option<PeerId> {
    let public = identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(identity::PublicKey::from(public).to_peer_id())
}

/// The base32 relay-key text of a peer ID given as a string, when it holds an Ed25519 key.
fn key_text_of_peer(peer: &str) -> Option<String> {
    let peer: PeerId = peer.parse().ok()?;
    let public = identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(crate::address::key_text(&RelayKey(ed.to_bytes())))
}

/// The relay key a peer ID carries, when it is an Ed25519 identity.
pub fn relay_key_of_peer(peer: &PeerId) -> Option<RelayKey> {
    let public = identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(RelayKey(ed.to_bytes()))
}

/// The relay key of an Ed25519 keypair.
pub fn relay_key_of(keypair: &Keypair) -> Option<RelayKey> {
    let ed = keypair.public().try_into_ed25519().ok()?;
    Some(RelayKey(ed.to_bytes()))
}

/// The multiaddr to dial for an endpoint (without the `/p2p` suffix).
pub fn multiaddr_of(endpoint: &Endpoint) -> Multiaddr {
    let mut addr = Multiaddr::empty();
    match &endpoint.host {
        Host::Ipv4(b) => addr.push(Protocol::Ip4(Ipv4Addr::from(*b))),
        Host::Ipv6(b) => addr.push(Protocol::Ip6(Ipv6Addr::from(*b))),
        Host::Name(name) => addr.push(Protocol::Dns(name.clone().into())),
    }
    match endpoint.transport {
        TransportKind::Tcp => addr.push(Protocol::Tcp(endpoint.port)),
        TransportKind::Ws => {
            addr.push(Protocol::Tcp(endpoint.port));
            addr.push(Protocol::Ws("/".into()));
        }
        TransportKind::Wss => {
            addr.push(Protocol::Tcp(endpoint.port));
            addr.push(Protocol::Tls);
            addr.push(Protocol::Ws("/".into()));
        }
        TransportKind::Quic => {
            addr.push(Protocol::Udp(endpoint.port));
            addr.push(Protocol::QuicV1);
        }
    }
    addr
}

/// The endpoint a listen multiaddr corresponds to, if it is one Petrel can express.
pub fn endpoint_of(addr: &Multiaddr) -> Option<Endpoint> {
    let mut host = None;
    let mut port = None;
    let mut transport = TransportKind::Tcp;
    let mut tls = false;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) => host = Some(Host::from(IpAddr::V4(ip))),
            Protocol::Ip6(ip) => host = Some(Host::from(IpAddr::V6(ip))),
            Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n) => {
                host = Some(Host::Name(n.to_string()))
            }
            Protocol::Tcp(p) => port = Some(p),
            Protocol::Udp(p) => port = Some(p),
            Protocol::QuicV1 => transport = TransportKind::Quic,
            Protocol::Tls => tls = true,
            Protocol::Ws(_) => {
                transport = if tls {
                    TransportKind::Wss
                } else {
                    TransportKind::Ws
                }
            }
            Protocol::Wss(_) => transport = TransportKind::Wss,
            Protocol::P2p(_) => {}
            _ => return None,
        }
    }
    Some(Endpoint {
        transport,
        host: host?,
        port: port?,
    })
}

fn build_transport(
    keypair: &Keypair,
    limits: &TransportLimits,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, TransportError> {
    let build = |e: &dyn std::fmt::Display| TransportError::Build(e.to_string());
    let tcp_config = tcp::Config::new().nodelay(true);
    let ws = libp2p::websocket::Config::new(
        libp2p::dns::tokio::Transport::system(tcp::tokio::Transport::new(tcp_config.clone()))
            .map_err(|e| build(&e))?,
    );
    let tcp_dns = libp2p::dns::tokio::Transport::system(tcp::tokio::Transport::new(tcp_config))
        .map_err(|e| build(&e))?;
    let noise = noise::Config::new(keypair).map_err(|e| build(&e))?;
    let mut yamux = yamux::Config::default();
    yamux.set_max_num_streams(1024);
    let stream_transport = OrTransport::new(ws, tcp_dns)
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux)
        .timeout(limits.handshake_timeout)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    #[cfg(feature = "quic")]
    {
        let mut quic_config = libp2p::quic::Config::new(keypair);
        quic_config.handshake_timeout = limits.handshake_timeout;
        let quic = libp2p::quic::tokio::Transport::new(quic_config)
            .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
        Ok(OrTransport::new(quic, stream_transport)
            .map(|either, _| either.into_inner())
            .boxed())
    }
    #[cfg(not(feature = "quic"))]
    Ok(stream_transport.boxed())
}

enum NodeCommand {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), DialFailed>>,
    },
    Shutdown,
}

/// A running libp2p node.
pub struct Node {
    peer_id: PeerId,
    control: Control,
    commands: mpsc::Sender<NodeCommand>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node with `keypair`, listening on `listen` (empty for a client). Returns once
    /// every listener is bound, so [`Self::listen_addrs`] shows real ports for port 0.
    pub async fn start(
        keypair: Keypair,
        listen: &[Multiaddr],
        limits: TransportLimits,
    ) -> Result<Node, TransportError> {
        let peer_id = keypair.public().to_peer_id();
        let transport = build_transport(&keypair, &limits)?;
        let behaviour = Behaviour {
            limits: libp2p::connection_limits::Behaviour::new(
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(limits.max_connections))
                    .with_max_pending_incoming(Some(limits.max_pending)),
            ),
            per_ip: per_ip::PerIpLimit::new(limits.max_per_ip, limits.per_ip_exempt_loopback),
            streams: libp2p_stream::Behaviour::new(),
        };
        let control = behaviour.streams.new_control();
        let config = libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(limits.idle_timeout);
        let mut swarm = Swarm::new(transport, behaviour, peer_id, config);

        let mut waiting = HashMap::new();
        for addr in listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| TransportError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            waiting.insert(id, addr.clone());
        }
        let mut bound = Vec::new();
        while !waiting.is_empty() {
            match swarm.next().await {
                Some(SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                }) => {
                    waiting.remove(&listener_id);
                    bound.push(address);
                }
                Some(SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                }) => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        let reason = match reason {
                            Ok(()) => "listener closed".to_string(),
                            Err(e) => e.to_string(),
                        };
                        return Err(TransportError::Listen { addr, reason });
                    }
                }
                Some(SwarmEvent::ListenerError { listener_id, error }) => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        return Err(TransportError::Listen {
                            addr,
                            reason: error.to_string(),
                        });
                    }
                }
                Some(_) => {}
                None => return Err(TransportError::Stopped),
            }
        }
        let (addrs_tx, listen_addrs) = watch::channel(bound);
        let (commands, rx) = mpsc::channel(64);
        let task = tokio::spawn(drive(swarm, rx, addrs_tx));
        Ok(Node {
            peer_id,
            control,
            commands,
            listen_addrs,
            task,
        })
    }

    /// This node's peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on (real ports, after binding).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.borrow().clone()
    }

    /// A handle for opening and accepting streams.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Accepts inbound streams of `protocol`.
    pub fn accept(&self, protocol: &'static str) -> Result<IncomingStreams, TransportError> {
        self.control
            .clone()
            .accept(StreamProtocol::new(protocol))
            .map_err(|e| TransportError::Build(e.to_string()))
    }

    /// Connects to the relay at `relay`, proving its key. Returns its peer ID.
    pub async fn connect(&self, relay: &RelayAddress) -> Result<PeerId, DialFailed> {
        let peer = peer_id_of(relay.key()).ok_or(DialFailed::BadKey)?;
        let addrs = relay.endpoints().iter().map(multiaddr_of).collect();
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(NodeCommand::Dial { peer, addrs, reply })
            .await
            .map_err(|_| DialFailed::Stopped)?;
        match rx.await.map_err(|_| DialFailed::Stopped)? {
            Ok(()) => Ok(peer),
            Err(DialFailed::WrongKey {
                obtained, address, ..
            }) => Err(DialFailed::WrongKey {
                expected: relay.key_text(),
                obtained: key_text_of_peer(&obtained).unwrap_or(obtained),
                address,
            }),
            Err(other) => Err(other),
        }
    }

    /// Opens a stream of `protocol` to a connected peer.
    pub async fn open(&self, peer: PeerId, protocol: &'static str) -> Result<Stream, OpenError> {
        self.control
            .clone()
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| match e {
                libp2p_stream::OpenStreamError::UnsupportedProtocol(p) => {
                    OpenError::Unsupported(p.to_string())
                }
                other => OpenError::Io(other.to_string()),
            })
    }

    /// Closes every connection and stops the node's task, for a node shared behind an `Arc`.
    pub async fn stop(&self) {
        let _ = self.commands.send(NodeCommand::Shutdown).await;
    }

    /// Closes every connection and stops the node's task.
    pub async fn shutdown(self) {
        let _ = self.commands.send(NodeCommand::Shutdown).await;
        let _ = self.task.await;
    }
}

async fn drive(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<NodeCommand>,
    addrs: watch::Sender<Vec<Multiaddr>>,
) {
    let mut dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), DialFailed>>>> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(NodeCommand::Dial { peer, addrs, reply }) => {
                    if swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    // Endpoints that are all this node's own listen addresses reach this
                    // node, whose key is not the one asked for (libp2p would only say "no
                    // addresses": it never dials its own listeners).
                    let own: Vec<&Multiaddr> = swarm.listeners().collect();
                    if !addrs.is_empty() && addrs.iter().all(|a| own.contains(&a)) {
                        let _ = reply.send(Err(DialFailed::WrongKey {
                            expected: peer.to_string(),
                            obtained: swarm.local_peer_id().to_string(),
                            address: addrs[0].to_string(),
                        }));
                        continue;
                    }
                    let first = !dials.contains_key(&peer);
                    dials.entry(peer).or_default().push(reply);
                    if first {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(addrs)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        if let Err(e) = swarm.dial(opts) {
                            for waiter in dials.remove(&peer).unwrap_or_default() {
                                let _ = waiter.send(Err(DialFailed::Unreachable(e.to_string())));
                            }
                        }
                    }
                }
                Some(NodeCommand::Shutdown) | None => break,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for waiter in dials.remove(&peer_id).unwrap_or_default() {
                        let _ = waiter.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    let failure = match error {
                        libp2p::swarm::DialError::WrongPeerId { obtained, address } => {
                            DialFailed::WrongKey {
                                expected: peer.to_string(),
                                obtained: obtained.to_string(),
                                address: address.to_string(),
                            }
                        }
                        // The endpoints are this node's own: it proved our key, not the
                        // one the address names.
                        libp2p::swarm::DialError::LocalPeerId { address } => {
                            DialFailed::WrongKey {
                                expected: peer.to_string(),
                                obtained: swarm.local_peer_id().to_string(),
                                address: address.to_string(),
                            }
                        }
                        other => DialFailed::Unreachable(other.to_string()),
                    };
                    for waiter in dials.remove(&peer).unwrap_or_default() {
                        let _ = waiter.send(Err(failure.clone()));
                    }
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    addrs.send_modify(|list| list.push(address));
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => {
                    addrs.send_modify(|list| list.retain(|a| a != &address));
                }
                _ => {}
            },
        }
    }
}
