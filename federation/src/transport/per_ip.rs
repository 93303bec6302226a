//! A libp2p behaviour that caps inbound connections per remote IP address.
//!
//! libp2p's `connection_limits` counts totals and per peer ID, but a client picks a fresh
//! peer ID for every session, so only the IP address can stop one host from taking every
//! slot. Pending (still handshaking) and established connections both count, so a flood of
//! half-open handshakes is capped too.

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint, Multiaddr, multiaddr::Protocol};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// The per-IP limit was reached.
#[derive(Debug, thiserror::Error)]
#[error("too many connections from one IP address (limit {limit})")]
pub struct PerIpLimitExceeded {
    /// The limit in force.
    pub limit: u32,
}

/// Caps inbound connections (pending and established) per remote IP.
#[derive(Debug)]
pub struct PerIpLimit {
    limit: u32,
    exempt_loopback: bool,
    by_connection: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
}

/// The IP address inside a multiaddr, if it has one.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl PerIpLimit {
    /// A cap of `limit` inbound connections per IP address (loopback exempt if asked).
    pub fn new(limit: u32, exempt_loopback: bool) -> Self {
        Self {
            limit,
            exempt_loopback,
            by_connection: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Connections currently counted for `ip`.
    pub fn count(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }

    fn release(&mut self, connection_id: ConnectionId) {
        if let Some(ip) = self.by_connection.remove(&connection_id)
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

impl NetworkBehaviour for PerIpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        if self.exempt_loopback && ip.is_loopback() {
            return Ok(());
        }
        if self.count(&ip) >= self.limit {
            return Err(ConnectionDenied::new(PerIpLimitExceeded {
                limit: self.limit,
            }));
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.by_connection.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => {
                if let ConnectedPoint::Listener { .. } = closed.endpoint {
                    self.release(closed.connection_id);
                }
            }
            FromSwarm::ListenFailure(failure) => self.release(failure.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
