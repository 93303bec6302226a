//! Who may use the API: the token, and the `Host` and `Origin` rules.
//!
//! Every request but `GET /api/v1/health` passes the gate before anything else is
//! read, in this order:
//!
//! 1. `Host` must name this server (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`, any
//!    loopback IP literal on PORT, and with `--allow-remote` the listen address; any IP
//!    literal when that is unspecified). A page that rebinds its own DNS name to 127.0.0.1
//!    still sends its own name as `Host`, so the check stops DNS rebinding. → 403 / 1004.
//! 2. `Origin`, when present, must be `http://` + one of those hosts. Browsers set it on
//!    every cross-origin request and WebSocket, so a web page the user happens to visit
//!    cannot drive the profile. Programs send no `Origin` and pass. → 403 / 1003.
//! 3. The token: `Authorization: Bearer TOKEN`, or for a WebSocket a
//!    `Sec-WebSocket-Protocol` entry `bearer.TOKEN` (browsers cannot set headers on a
//!    WebSocket). Compared in constant time. Missing → 401 / 1001, wrong → 401 / 1002.
//!
//! A refusal is answered with the status and the body `{"error":{"code":…,"message":…}}`.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::errors;

/// The prefix of the `Sec-WebSocket-Protocol` entry that carries the token.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The subprotocol the server answers when the client lists it (browsers require an answer
/// once they offered a subprotocol, and the server never echoes the token).
pub const SUBPROTOCOL: &str = "petrel.v1";

/// Why a request was refused before any method ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token at all.
    MissingToken,
    /// A token that is not ours (or an `Authorization` header of another kind).
    WrongToken,
    /// An `Origin` that is not the server's own.
    ForeignOrigin(String),
    /// A `Host` that does not name this server (or none).
    WrongHost(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::MissingToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::ForeignOrigin(_) | Refusal::WrongHost(_) => StatusCode::FORBIDDEN,
        }
    }

    fn code(&self) -> i64 {
        match self {
            Refusal::MissingToken => errors::MISSING_TOKEN,
            Refusal::WrongToken => errors::WRONG_TOKEN,
            Refusal::ForeignOrigin(_) => errors::FOREIGN_ORIGIN,
            Refusal::WrongHost(_) => errors::WRONG_HOST,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::MissingToken => "no API token: send \"Authorization: Bearer TOKEN\" with \
                the token from the api-token file of the profile home"
                .into(),
            Refusal::WrongToken => "wrong API token: read it again from the api-token file \
                (it changes each time petrel serve starts)"
                .into(),
            Refusal::ForeignOrigin(origin) => format!(
                "requests from the web page at {origin:?} are refused: only programs on this \
                 machine may use the API"
            ),
            Refusal::WrongHost(host) => format!(
                "Host {host:?} does not name this server: connect to it by its loopback \
                 address, as written in serve.json"
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code(), "message": self.message()}});
        (self.status(), axum::Json(body)).into_response()
    }
}

/// The token and the hosts of one server.
pub(crate) struct Gate {
    token: Zeroizing<String>,
    port: u16,
    /// `Some(ip)`: with `--allow-remote`, the address the server listens on (unspecified
    /// meaning any IP literal); `None`: loopback only.
    remote: Option<IpAddr>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("port", &self.port)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// The gate of a server listening on `local`, with `allow_remote` as configured.
    pub(crate) fn new(token: Zeroizing<String>, local: SocketAddr, allow_remote: bool) -> Gate {
        Gate {
            token,
            port: local.port(),
            remote: allow_remote.then_some(local.ip()),
        }
    }

    /// Checks one request's headers (`websocket`: the token may come as a subprotocol).
    pub(crate) fn check(&self, headers: &HeaderMap, websocket: bool) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.is_own_host(host) {
            return Err(Refusal::WrongHost(host.to_owned()));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            let own = origin
                .strip_prefix("http://")
                .is_some_and(|rest| self.is_own_host(rest));
            if !own {
                return Err(Refusal::ForeignOrigin(origin));
            }
        }
        let given = match headers.get(header::AUTHORIZATION) {
            Some(value) => {
                let value = value.to_str().map_err(|_| Refusal::WrongToken)?;
                let (scheme, token) = value.split_once(' ').ok_or(Refusal::WrongToken)?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(Refusal::WrongToken);
                }
                token.trim().to_owned()
            }
            None if websocket => subprotocol_token(headers).ok_or(Refusal::MissingToken)?,
            None => return Err(Refusal::MissingToken),
        };
        if bool::from(given.as_bytes().ct_eq(self.token.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }

    /// Whether `authority` (`host[:port]`, as in `Host` or after `http://` in `Origin`)
    /// names this server.
    fn is_own_host(&self, authority: &str) -> bool {
        let Some((name, port)) = split_authority(authority) else {
            return false;
        };
        let port_ok = match port {
            Some(port) => port == self.port,
            None => self.port == 80,
        };
        if !port_ok {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        // Only IP literals beyond `localhost`: a DNS name is what a rebinding page sends.
        let Ok(ip) = name.parse::<IpAddr>() else {
            return false;
        };
        match self.remote {
            _ if ip.is_loopback() => true,
            Some(listen) if listen.is_unspecified() => true,
            Some(listen) => ip == listen,
            None => false,
        }
    }
}

/// Splits `host[:port]` / `[v6][:port]`; `None` when malformed.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['/', '@', ' ']) {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        return match after {
            "" => Some((name, None)),
            _ => Some((name, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => Some((name, Some(port.parse().ok()?))),
        Some(_) => None, // an unbracketed IPv6 literal is not a valid authority
        None => Some((authority, None)),
    }
}

/// The token from a `Sec-WebSocket-Protocol` entry `bearer.TOKEN`, if any.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|entry| entry.trim().strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(listen: &str, allow_remote: bool) -> Gate {
        Gate::new(
            Zeroizing::new("t".into()),
            listen.parse().unwrap(),
            allow_remote,
        )
    }

    #[test]
    fn hosts() {
        let g = gate("127.0.0.1:4000", false);
        for ok in [
            "127.0.0.1:4000",
            "localhost:4000",
            "LocalHost:4000",
            "[::1]:4000",
        ] {
            assert!(g.is_own_host(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:4001",
            "127.0.0.1",
            "evil.example:4000",
            "192.168.1.2:4000",
            "",
            "::1:4000",
            "localhost:4000/x",
        ] {
            assert!(!g.is_own_host(bad), "{bad}");
        }
        let any = gate("0.0.0.0:4000", true);
        assert!(any.is_own_host("192.168.1.2:4000"));
        assert!(!any.is_own_host("evil.example:4000"));
        let one = gate("10.0.0.5:4000", true);
        assert!(one.is_own_host("10.0.0.5:4000"));
        assert!(!one.is_own_host("10.0.0.6:4000"));
    }
}
