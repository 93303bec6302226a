//! The stable error codes of the local API (`specs/api.md`, "Error codes").
//!
//! Three ranges, never renumbered once released:
//!
//! * the JSON-RPC 2.0 codes (`-32700` … `-32603`), for requests the framing rejects;
//! * the transport codes `1001`–`1005`, for requests refused before any method runs
//!   (sent as the body `{"error":{"code":…,"message":…}}` of an HTTP 401/403/413, or as a
//!   JSON-RPC error on a WebSocket);
//! * the application codes `2001`–`2016`, which the engine returns from its methods so that
//!   a program can react to a failure without parsing its message.
//!
//! A client that meets a code it does not know shows the message: every error carries
//! one written for a person.

// JSON-RPC 2.0 (https://www.jsonrpc.org/specification#error_object).

/// The body is not JSON (the answer's `id` is `null`).
pub const PARSE_ERROR: i64 = -32700;
/// The JSON is not a JSON-RPC 2.0 request or batch, or the batch is empty or too long.
pub const INVALID_REQUEST: i64 = -32600;
/// No method of that name.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The method exists, but its `params` are not what it takes.
pub const INVALID_PARAMS: i64 = -32602;
/// The server failed while handling the call; the call may or may not have taken effect.
pub const INTERNAL_ERROR: i64 = -32603;

// Transport: the request was refused before any method ran.

/// No token: neither an `Authorization: Bearer` header nor (WebSocket) a `bearer.` subprotocol.
pub const MISSING_TOKEN: i64 = 1001;
/// A token was given but it is not the one in `api-token`.
pub const WRONG_TOKEN: i64 = 1002;
/// The request carries an `Origin` that is not the server's own: a web page tried to use it.
pub const FOREIGN_ORIGIN: i64 = 1003;
/// The `Host` header names another host (a DNS-rebinding attempt, or a wrong URL).
pub const WRONG_HOST: i64 = 1004;
/// The request body or WebSocket message is larger than the server accepts.
pub const TOO_LARGE: i64 = 1005;

// Application: returned by the engine's methods.

/// No profile is open (or the named profile does not exist).
pub const NO_PROFILE: i64 = 2001;
/// No contact of that name or id.
pub const NO_CONTACT: i64 = 2002;
/// The contact is known but the pairing has not completed, so it cannot be messaged yet.
pub const NOT_CONNECTED: i64 = 2003;
/// The invitation has already been used (each one pairs once).
pub const INVITATION_USED: i64 = 2004;
/// The link or QR code decodes, but it is not a Petrel invitation.
pub const NOT_AN_INVITATION: i64 = 2005;
/// The link is malformed (bad encoding, truncated, wrong version).
pub const BAD_LINK: i64 = 2006;
/// The image cannot be read, or holds no readable QR code.
pub const BAD_IMAGE: i64 = 2007;
/// No relay of the profile (or the one named) could be reached.
pub const RELAY_UNREACHABLE: i64 = 2008;
/// A relay was reached but refused the operation (quota, unknown queue, policy).
pub const RELAY_REFUSED: i64 = 2009;
/// Another operation that excludes this one is running; retry once it has finished.
pub const BUSY: i64 = 2010;
/// The message or field is longer than the protocol carries.
pub const TOO_LONG: i64 = 2011;
/// The encrypted store failed (disk, corruption, wrong passphrase).
pub const STORE: i64 = 2012;
/// A re-key answer or request names a re-key this profile does not know.
pub const UNKNOWN_REKEY: i64 = 2013;
/// An argument is well-formed JSON of the right type but not an acceptable value.
pub const INVALID_ARGUMENT: i64 = 2014;
/// A profile of that name already exists.
pub const PROFILE_EXISTS: i64 = 2015;
/// The server is shutting down and takes no new work.
pub const SHUTTING_DOWN: i64 = 2016;
