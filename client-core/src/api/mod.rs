//! The local API that `petrel serve` exposes (`specs/api.md`): JSON-RPC 2.0 over HTTP and
//! WebSocket on a loopback address, authorised by a token kept in the profile home.
//!
//! This module is the transport only and knows nothing of the engine:
//!
//! * [`server`] — [`ApiServer`]: binds, writes `api-token` and `serve.json`, serves the
//!   routes until shut down; the engine plugs in as a [`Handler`] and pushes
//!   [`Notification`]s into a broadcast channel.
//! * [`auth`] — the token, `Host` and `Origin` checks every request passes.
//! * [`rpc`] — JSON-RPC framing: requests, batches, notifications, [`RpcError`].
//! * [`client`] — [`ApiClient`] and [`Subscription`], for the CLI and bots.
//! * [`errors`] — the stable error codes.

use std::net::SocketAddr;
use std::path::PathBuf;

pub mod auth;
pub mod client;
pub mod errors;
pub mod rpc;
pub mod server;

pub use client::{ApiClient, Subscription};
pub use rpc::{Handler, MAX_BATCH, Notification, RpcError};
pub use server::{ApiConfig, ApiServer, DEFAULT_MAX_REQUEST_BYTES, SERVE_FILE};

/// What can go wrong in the API's server or client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The listen address is not loopback and `allow_remote` is off.
    #[error(
        "{addr} is not a loopback address: pass --allow-remote to expose the API beyond this \
         machine (anyone who can reach it and has the token controls the profile)"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file of the profile home (token, discovery file) cannot be read or written.
    #[error("cannot use {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
    /// `serve.json` exists but cannot be understood.
    #[error("{} is not a valid discovery file ({reason}): remove it if no petrel serve is running", path.display())]
    Discovery {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server cannot be reached.
    #[error("cannot reach petrel serve at {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed after connecting.
    #[error("the HTTP exchange with petrel serve failed: {0}")]
    Transport(Box<dyn std::error::Error + Send + Sync>),
    /// The WebSocket failed.
    #[error("the WebSocket to petrel serve failed: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server refused the request before running it (token, `Origin`, `Host`, size).
    #[error("petrel serve refused the request (HTTP {status}, error {code}): {message}")]
    Refused {
        /// The HTTP status (401, 403, 413).
        status: u16,
        /// The transport error code ([`errors::MISSING_TOKEN`] …), 0 if the body had none.
        code: i64,
        /// The server's message.
        message: String,
    },
    /// The method ran (or could not be called) and answered with a JSON-RPC error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The server's answer is not what the protocol says.
    #[error("unexpected answer from petrel serve: {0}")]
    Protocol(String),
    /// The WebSocket was closed.
    #[error("the WebSocket to petrel serve was closed")]
    Closed,
}
