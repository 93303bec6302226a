//! Relay addresses: a relay's Ed25519 key plus the endpoints it listens on.
//!
//! The key is the relay's identity; the endpoints are only hints where to find it. A host
//! name is allowed (for a relay behind a PaaS router) but never trusted: whatever answers
//! must prove the key in the Noise handshake, so a DNS or network attacker can make a relay
//! unreachable but cannot impersonate it.
//!
//! Text form (`specs/protocol.md` §"Relay addresses"):
//!
//! ```text
//! petrel://<key: 52 chars of lower-case base32, no padding>@<endpoint>[,<endpoint>...]
//! endpoint = [<transport>/]<host>:<port>    transport = tcp | ws | wss | quic (default tcp)
//! host     = IPv4 literal | [IPv6 literal] | DNS name
//! ```

use crate::ids::RelayKey;
use crate::limits::{MAX_ENDPOINTS, MAX_HOST_NAME_LEN};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The scheme that starts a relay address's text form.
pub const SCHEME: &str = "petrel://";

/// Base32 (RFC 4648) lower case without padding: case-insensitive on input, survives chat
/// apps and terminals, and has no characters that a URI or shell treats specially.
fn key_encoding() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    // The specification is a constant and valid; failure would be a bug caught by tests.
    spec.encoding()
        .unwrap_or_else(|_| data_encoding::BASE32_NOPAD.clone())
}

/// How an endpoint is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportKind {
    /// TCP, then Noise and Yamux. Wire value 0.
    Tcp,
    /// WebSocket over plain HTTP, then Noise and Yamux. Wire value 1.
    Ws,
    /// WebSocket over TLS (a PaaS router terminating HTTPS), then Noise and Yamux. Wire value 2.
    Wss,
    /// QUIC (its own TLS 1.3 handshake carries the libp2p identity). Wire value 3.
    Quic,
}

impl TransportKind {
    fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
            TransportKind::Quic => "quic",
        }
    }
}

/// Where an endpoint is: an IP literal (no DNS needed) or a host name (resolved, never trusted).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Host {
    /// An IPv4 address. Wire value 0, then 4 bytes.
    Ipv4([u8; 4]),
    /// An IPv6 address. Wire value 1, then 16 bytes.
    Ipv6([u8; 16]),
    /// A DNS name. Wire value 2, then a length-prefixed string.
    Name(String),
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Host::Ipv4(v4.octets()),
            IpAddr::V6(v6) => Host::Ipv6(v6.octets()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ipv4(b) => write!(f, "{}", Ipv4Addr::from(*b)),
            Host::Ipv6(b) => write!(f, "[{}]", Ipv6Addr::from(*b)),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// One network endpoint of a relay.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Transport to use.
    pub transport: TransportKind,
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.transport != TransportKind::Tcp {
            write!(f, "{}/", self.transport.as_str())?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A relay's address: its identity key and where to reach it.
///
/// Always valid once constructed: at least one and at most [`MAX_ENDPOINTS`] endpoints,
/// every host name well formed. Decoding from bytes or text checks the same rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawAddress")]
pub struct RelayAddress {
    key: RelayKey,
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct RawAddress {
    key: RelayKey,
    endpoints: Vec<Endpoint>,
}

impl TryFrom<RawAddress> for RelayAddress {
    type Error = AddressError;
    fn try_from(raw: RawAddress) -> Result<Self, AddressError> {
        RelayAddress::new(raw.key, raw.endpoints)
    }
}

/// Why a relay address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The text does not start with `petrel://`.
    #[error("a relay address starts with `petrel://`")]
    MissingScheme,
    /// There is no `@` between the key and the endpoints.
    #[error("a relay address needs `@` between the key and the endpoints")]
    MissingAt,
    /// The key is not 52 base32 characters.
    #[error("the relay key is not valid base32 of 32 bytes: {0}")]
    BadKey(String),
    /// The key bytes are not a valid Ed25519 public key.
    #[error("the relay key is not a valid Ed25519 public key")]
    InvalidKey,
    /// The address lists no endpoint.
    #[error("a relay address needs at least one endpoint")]
    NoEndpoints,
    /// The address lists more than [`MAX_ENDPOINTS`] endpoints.
    #[error("a relay address may list at most {MAX_ENDPOINTS} endpoints, this one has {0}")]
    TooManyEndpoints(usize),
    /// An endpoint could not be parsed.
    #[error("bad endpoint `{endpoint}`: {reason}")]
    BadEndpoint {
        /// The endpoint as written.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host name is empty, too long or has characters a DNS name cannot have.
    #[error(
        "bad host name `{0}`: lower-case letters, digits, `-` and `.` only, not all digits in the last label, at most {MAX_HOST_NAME_LEN} bytes"
    )]
    BadHostName(String),
    /// An endpoint's port is 0 (an address must name a real port).
    #[error("an endpoint in a relay address needs a port from 1 to 65535")]
    ZeroPort,
    /// The same endpoint is listed twice.
    #[error("endpoint `{0}` is listed twice")]
    DuplicateEndpoint(String),
    /// The text is longer than any valid address.
    #[error("a relay address is at most {MAX_ADDRESS_TEXT_LEN} characters")]
    TooLong,
}

/// Longest text form accepted, checked before any parsing.
pub const MAX_ADDRESS_TEXT_LEN: usize = 2_400;

impl RelayAddress {
    /// Builds an address, checking the endpoint rules.
    pub fn new(key: RelayKey, endpoints: Vec<Endpoint>) -> Result<Self, AddressError> {
        // A small-order key could never sign anything that verifies strictly.
        if key.verifying_key().is_none_or(|k| k.is_weak()) {
            return Err(AddressError::InvalidKey);
        }
        if endpoints.is_empty() {
            return Err(AddressError::NoEndpoints);
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(AddressError::TooManyEndpoints(endpoints.len()));
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            if let Host::Name(name) = &endpoint.host {
                check_host_name(name)?;
            }
            if endpoint.port == 0 {
                return Err(AddressError::ZeroPort);
            }
            if endpoints[..i].contains(endpoint) {
                return Err(AddressError::DuplicateEndpoint(endpoint.to_string()));
            }
        }
        Ok(Self { key, endpoints })
    }

    /// The relay's identity key.
    pub fn key(&self) -> &RelayKey {
        &self.key
    }

    /// The endpoints, in the order the relay listed them (preferred first).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The key's text form (52 base32 characters), as used in the address.
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

/// A relay key's text form (52 lower-case base32 characters).
pub fn key_text(key: &RelayKey) -> String {
    key_encoding().encode(&key.0)
}

fn check_host_name(name: &str) -> Result<(), AddressError> {
    // The canonical form is lower case; a last label of digits only would look like (or
    // be) a mistyped IPv4 literal, so it is refused rather than resolved.
    let ok = !name.is_empty()
        && name.len() <= MAX_HOST_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && name
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(AddressError::BadHostName(name.chars().take(80).collect()))
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}@", self.key_text())?;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{endpoint}")?;
        }
        Ok(())
    }
}

impl FromStr for RelayAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        if text.len() > MAX_ADDRESS_TEXT_LEN {
            return Err(AddressError::TooLong);
        }
        let rest = text
            .get(..SCHEME.len())
            .filter(|s| s.eq_ignore_ascii_case(SCHEME))
            .map(|_| &text[SCHEME.len()..])
            .ok_or(AddressError::MissingScheme)?;
        let (key_text, endpoints_text) = rest.split_once('@').ok_or(AddressError::MissingAt)?;
        let key_bytes = key_encoding()
            .decode(key_text.as_bytes())
            .map_err(|e| AddressError::BadKey(e.to_string()))?;
        let key: [u8; 32] = key_bytes.try_into().map_err(|v: Vec<u8>| {
            AddressError::BadKey(format!("{} bytes, expected 32", v.len()))
        })?;
        let parts: Vec<&str> = endpoints_text.split(',').collect();
        if parts == [""] {
            return Err(AddressError::NoEndpoints);
        }
        if parts.len() > MAX_ENDPOINTS {
            return Err(AddressError::TooManyEndpoints(parts.len()));
        }
        let endpoints = parts
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<Endpoint>, _>>()?;
        RelayAddress::new(RelayKey(key), endpoints)
    }
}

impl FromStr for Endpoint {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let bad = |reason| AddressError::BadEndpoint {
            endpoint: text.chars().take(80).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(bad("empty endpoint (two commas in a row?)"));
        }
        let (transport, rest) = match text.split_once('/') {
            Some((t, rest)) => {
                let kind = match t.to_ascii_lowercase().as_str() {
                    "tcp" => TransportKind::Tcp,
                    "ws" => TransportKind::Ws,
                    "wss" => TransportKind::Wss,
                    "quic" => TransportKind::Quic,
                    _ => return Err(bad("unknown transport; use tcp, ws, wss or quic")),
                };
                (kind, rest)
            }
            None => (TransportKind::Tcp, text),
        };
        let (host_text, port_text) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("missing `:port`"))?;
        let port: u16 = port_text
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| port_text.parse().ok())
            .flatten()
            .filter(|_| port_text == "0" || !port_text.starts_with('0'))
            .ok_or_else(|| bad("the port is not a number from 0 to 65535"))?;
        let host = if let Some(inner) = host_text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| bad("an IPv6 literal needs a closing `]`"))?;
            let ip: Ipv6Addr = inner.parse().map_err(|_| bad("not an IPv6 address"))?;
            Host::Ipv6(ip.octets())
        } else if let Ok(ip) = host_text.parse::<Ipv4Addr>() {
            Host::Ipv4(ip.octets())
        } else if host_text.contains(':') {
            return Err(bad("write an IPv6 literal in brackets, like [::1]:5223"));
        } else {
            let name = host_text.to_ascii_lowercase();
            check_host_name(&name)?;
            Host::Name(name)
        };
        Ok(Endpoint {
            transport,
            host,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RelayKey {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        RelayKey(sk.verifying_key().to_bytes())
    }

    #[test]
    fn text_round_trip() {
        let addr = RelayAddress::new(
            key(),
            vec![
                "203.0.113.5:5223".parse().unwrap(),
                "wss/relay.example.org:443".parse().unwrap(),
                "quic/[2001:db8::1]:5224".parse().unwrap(),
            ],
        )
        .unwrap();
        let text = addr.to_string();
        assert!(text.starts_with("petrel://"));
        assert!(
            text.ends_with("@203.0.113.5:5223,wss/relay.example.org:443,quic/[2001:db8::1]:5224")
        );
        assert_eq!(text.parse::<RelayAddress>().unwrap(), addr);
        // Upper case (as some QR readers and chat apps produce) parses to the same address.
        assert_eq!(text.to_uppercase().parse::<RelayAddress>().unwrap(), addr);
    }

    #[test]
    fn errors_are_specific() {
        let k = RelayAddress::new(key(), vec!["127.0.0.1:1".parse().unwrap()])
            .unwrap()
            .key_text();
        let cases: Vec<(String, AddressError)> = vec![
            ("relay.example.org:5223".into(), AddressError::MissingScheme),
            (format!("petrel://{k}"), AddressError::MissingAt),
            (format!("petrel://{k}@"), AddressError::NoEndpoints),
            (
                format!("petrel://{}@1.2.3.4:5", &k[..50]),
                AddressError::BadKey("2 bytes short".into()),
            ),
            (
                format!("petrel://{k}@{}", ["1.2.3.4:5"; 9].join(",")),
                AddressError::TooManyEndpoints(9),
            ),
            (
                format!("petrel://{k}@bad_host:5"),
                AddressError::BadHostName("bad_host".into()),
            ),
            (
                format!("petrel://{k}@999.1.1.1:5"),
                AddressError::BadHostName("999.1.1.1".into()),
            ),
            (format!("petrel://{k}@1.2.3.4:0"), AddressError::ZeroPort),
            (
                format!("petrel://{k}@1.2.3.4:5,1.2.3.4:5"),
                AddressError::DuplicateEndpoint("1.2.3.4:5".into()),
            ),
            (
                format!("petrel://{k}@{}", "a".repeat(3000)),
                AddressError::TooLong,
            ),
        ];
        for (text, expected) in cases {
            let got = text.parse::<RelayAddress>().unwrap_err();
            match (&got, &expected) {
                (AddressError::BadKey(_), AddressError::BadKey(_)) => {}
                _ => assert_eq!(got, expected, "{text}"),
            }
        }
        let empty_entry = format!("petrel://{k}@1.2.3.4:5,,1.2.3.4:6");
        assert!(matches!(
            empty_entry.parse::<RelayAddress>(),
            Err(AddressError::BadEndpoint { .. })
        ));
        // The identity point is a valid encoding but a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(
            RelayAddress::new(RelayKey(weak), vec!["1.2.3.4:5".parse().unwrap()]),
            Err(AddressError::InvalidKey)
        );
        // Upper-case names are refused in the binary form (text is lower-cased first).
        let upper = Endpoint {
            transport: TransportKind::Tcp,
            host: Host::Name("Relay.example".into()),
            port: 1,
        };
        assert!(matches!(
            RelayAddress::new(key(), vec![upper]),
            Err(AddressError::BadHostName(_))
        ));
        for bad in [
            "1.2.3.4",
            "1.2.3.4:99999",
            "::1:5",
            "[::1:5",
            "udp/1.2.3.4:5",
        ] {
            let text = format!("petrel://{k}@{bad}");
            assert!(
                matches!(
                    text.parse::<RelayAddress>(),
                    Err(AddressError::BadEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }
}
