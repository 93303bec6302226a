//! Relay configuration: defaults, an optional TOML file, environment and flags.
//!
//! Precedence, lowest first: built-in defaults, the TOML file (`--config`), environment
//! variables, command-line flags. Every limit the relay enforces is here with its default,
//! and `specs/protocol.md` §Limits lists the same numbers.

use crate::clock::Clock;
use petrel_federation::address::Endpoint;
use petrel_federation::limits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Operational limits. Defaults are in [`Limits::default`].
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Messages a queue may hold before SEND answers QUOTA.
    pub queue_quota: u32,
    /// Seconds an unacknowledged message is kept.
    pub message_ttl_secs: u64,
    /// Queues one session may create.
    pub max_queues_per_session: u32,
    /// Queues one session may be subscribed to.
    pub max_subscriptions_per_session: u32,
    /// Commands per second a session may send (sustained); 0 means no refill after the burst.
    pub commands_per_sec: u32,
    /// Commands a session may send in a burst.
    pub command_burst: u32,
    /// Established connections in total.
    pub max_connections: u32,
    /// Connections from one IP address (pending and established).
    pub max_connections_per_ip: u32,
    /// Sessions (streams) open at once across all connections.
    pub max_sessions: u32,
    /// Seconds for the transport handshake and again for the protocol hello.
    pub handshake_timeout_secs: u64,
    /// Seconds a session may stay silent before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds the forwarding outbox keeps trying (at most the protocol's 48 hours).
    pub outbox_ttl_secs: u64,
    /// Envelopes the outbox may hold in total.
    pub max_outbox: usize,
    /// Envelopes the outbox may hold for one destination.
    pub max_outbox_per_destination: usize,
    /// Seconds a synchronous forward (dial + answer) may take before it goes to the outbox.
    pub forward_timeout_secs: u64,
    /// First outbox retry delay, in milliseconds (doubles per attempt).
    pub forward_retry_min_ms: u64,
    /// Longest outbox retry delay, in seconds.
    pub forward_retry_max_secs: u64,
    /// Forwards per second one peer relay may send (sustained).
    pub peer_forwards_per_sec: u32,
    /// Forwards one peer relay may send in a burst.
    pub peer_forward_burst: u32,
    /// Bad forwards (undecodable, unopenable or stale) after which a peer session is
    /// closed.
    pub peer_max_bad_forwards: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue_quota: limits::DEFAULT_QUEUE_QUOTA,
            message_ttl_secs: limits::DEFAULT_MESSAGE_TTL_SECS,
            max_queues_per_session: 1_000,
            max_subscriptions_per_session: 10_000,
            commands_per_sec: 2_000,
            command_burst: 4_000,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            max_sessions: 20_000,
            handshake_timeout_secs: limits::HANDSHAKE_TIMEOUT_SECS,
            idle_timeout_secs: limits::IDLE_TIMEOUT_SECS,
            outbox_ttl_secs: limits::FORWARD_MAX_AGE_SECS,
            max_outbox: 100_000,
            max_outbox_per_destination: 10_000,
            forward_timeout_secs: 5,
            forward_retry_min_ms: 1_000,
            forward_retry_max_secs: 60,
            peer_forwards_per_sec: 5_000,
            peer_forward_burst: 10_000,
            peer_max_bad_forwards: 100,
        }
    }
}

impl Limits {
    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }
    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
    /// The synchronous forward timeout.
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_secs(self.forward_timeout_secs.max(1))
    }
    /// The first retry delay.
    pub fn forward_retry_min(&self) -> Duration {
        Duration::from_millis(self.forward_retry_min_ms.max(1))
    }
    /// The longest retry delay.
    pub fn forward_retry_max(&self) -> Duration {
        Duration::from_secs(self.forward_retry_max_secs.max(1))
    }
}

/// Everything the relay needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the identity, sealing key and store live.
    pub data_dir: PathBuf,
    /// Addresses to listen on (libp2p multiaddrs).
    pub listen: Vec<libp2p::Multiaddr>,
    /// Endpoints to put in the printed address instead of the bound ones.
    pub announce: Vec<Endpoint>,
    /// `$PORT`: serve WebSocket and the HTTP paths on this port (PaaS).
    pub port: Option<u16>,
    /// The operations HTTP listener (`/health`, `/metrics`); `None` disables it.
    pub http: Option<SocketAddr>,
    /// Password required to create queues.
    pub create_password: Option<String>,
    /// Limits.
    pub limits: Limits,
    /// Forwarding policy.
    pub forwarding: crate::forward::ForwardingMode,
    /// Forward to relays whose endpoints are all loopback or private addresses (off by
    /// default, so clients cannot make the relay probe its own network).
    pub forward_to_private: bool,
    /// Where time comes from.
    pub clock: Clock,
}

/// The optional TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen endpoints, as in `--listen`.
    pub listen: Option<Vec<String>>,
    /// Announced endpoints, as in `--announce`.
    pub announce: Option<Vec<String>>,
    /// HTTP address or "off".
    pub http: Option<String>,
    /// Queue-creation password.
    pub create_password: Option<String>,
    /// Limits.
    pub limits: Option<Limits>,
    /// Forwarding: "open", "off", or "peers".
    pub forwarding: Option<String>,
    /// Relay addresses or keys allowed with forwarding = "peers".
    pub forward_peers: Option<Vec<String>>,
    /// Allow forwarding to loopback and private addresses.
    pub forward_to_private: Option<bool>,
}

/// A configuration error, with what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said.
        message: String,
    },
    /// A listen address is neither an endpoint (`ws/0.0.0.0:80`) nor a multiaddr.
    #[error(
        "bad listen address `{0}`: use host:port, ws/host:port, or a multiaddr like /ip4/0.0.0.0/tcp/5223"
    )]
    Listen(String),
    /// An announce endpoint could not be parsed.
    #[error("bad announce endpoint `{value}`: {reason}")]
    Announce {
        /// The text.
        value: String,
        /// Why.
        reason: String,
    },
    /// The HTTP address is not `host:port` or `off`.
    #[error("bad --http address `{0}`: use host:port (like 127.0.0.1:8080) or `off`")]
    Http(String),
    /// The forwarding mode is not open, off or peers.
    #[error("bad --forwarding `{0}`: use open, off or peers")]
    Forwarding(String),
    /// A forwarding peer is neither a relay address nor a relay key.
    #[error(
        "bad --forward-peer `{0}`: give a relay address (petrel://...) or its 52-character key"
    )]
    ForwardPeer(String),
}

/// Parses the forwarding mode and its peer list.
pub fn parse_forwarding(
    mode: &str,
    peers: &[String],
) -> Result<crate::forward::ForwardingMode, ConfigError> {
    use crate::forward::ForwardingMode;
    match mode.to_ascii_lowercase().as_str() {
        "open" => Ok(ForwardingMode::Open),
        "off" => Ok(ForwardingMode::Off),
        "peers" => peers
            .iter()
            .map(|p| parse_relay_key(p).ok_or_else(|| ConfigError::ForwardPeer(p.clone())))
            .collect::<Result<Vec<_>, _>>()
            .map(ForwardingMode::Peers),
        _ => Err(ConfigError::Forwarding(mode.to_string())),
    }
}

fn parse_relay_key(text: &str) -> Option<petrel_federation::RelayKey> {
    if let Ok(addr) = text.parse::<petrel_federation::RelayAddress>() {
        return Some(*addr.key());
    }
    // A bare key: reuse the address parser with a placeholder endpoint.
    let addr: petrel_federation::RelayAddress =
        format!("petrel://{text}@127.0.0.1:1").parse().ok()?;
    Some(*addr.key())
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Parses a listen address: an endpoint (`0.0.0.0:5223`, `ws/0.0.0.0:8080`, `[::]:5223`)
/// or a multiaddr starting with `/`.
pub fn parse_listen(text: &str) -> Result<libp2p::Multiaddr, ConfigError> {
    if text.starts_with('/') {
        return text
            .parse()
            .map_err(|_| ConfigError::Listen(text.to_string()));
    }
    let endpoint: Endpoint = text
        .parse()
        .map_err(|_| ConfigError::Listen(text.to_string()))?;
    if matches!(endpoint.host, petrel_federation::Host::Name(_)) {
        return Err(ConfigError::Listen(text.to_string()));
    }
    Ok(petrel_federation::transport::multiaddr_of(&endpoint))
}

/// Parses an announced endpoint.
pub fn parse_announce(text: &str) -> Result<Endpoint, ConfigError> {
    text.parse()
        .map_err(|e: petrel_federation::AddressError| ConfigError::Announce {
            value: text.to_string(),
            reason: e.to_string(),
        })
}

/// Parses `--http`: `host:port` or `off`.
pub fn parse_http(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ConfigError::Http(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("0.0.0.0:5223").unwrap().to_string(),
            "/ip4/0.0.0.0/tcp/5223"
        );
        assert_eq!(
            parse_listen("ws/127.0.0.1:0").unwrap().to_string(),
            "/ip4/127.0.0.1/tcp/0/ws"
        );
        assert_eq!(parse_listen("[::]:1").unwrap().to_string(), "/ip6/::/tcp/1");
        assert!(parse_listen("example.org:1").is_err());
        assert!(parse_listen("nonsense").is_err());
        assert!(parse_http("off").unwrap().is_none());
        assert!(parse_http("localhost").is_err());
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        let ok: FileConfig =
            toml::from_str("data_dir = \"/d\"\n[limits]\nqueue_quota = 5\n").unwrap();
        assert_eq!(ok.limits.unwrap().queue_quota, 5);
        assert!(toml::from_str::<FileConfig>("datadir = 1").is_err());
    }
}
