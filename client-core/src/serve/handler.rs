//! The API's methods (`specs/api.md` §Methods): JSON-RPC calls mapped onto the profile
//! drivers, and engine events mapped onto notifications (§Events).
//!
//! Every method takes an optional `profile` (default: the home's current profile). Calls
//! that change a profile go to its driver and wait for the engine's answer; history is
//! read from the store directly (the driver commits before it reports anything).

use super::driver::{DriverError, ProfileEvent, ProfileHandle};
use crate::api::errors as codes;
use crate::api::{Handler, Notification, RpcError};
use crate::contact::{ContactState, Direction, MESSAGES, Message};
use crate::engine::{Connected, Error, Event, Reply, Request};
use crate::store::Store;
use futures::FutureExt;
use futures::future::BoxFuture;
use petrel_qr::{Payload as QrPayload, Purpose, QrCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The profiles a `petrel serve` runs, as the API sees them.
#[derive(Debug)]
pub struct Methods {
    store: Arc<Store>,
    profiles: BTreeMap<String, ProfileHandle>,
    current: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// The JSON-RPC error for an engine error, with its stable code.
pub fn rpc_error(e: &Error) -> RpcError {
    let code = match e {
        Error::NoContact(_) => codes::NO_CONTACT,
        Error::NotConnected(_) => codes::NOT_CONNECTED,
        Error::InvitationUsed => codes::INVITATION_USED,
        Error::UnknownRekey => codes::UNKNOWN_REKEY,
        Error::Busy(_) => codes::BUSY,
        Error::TooLong { .. } => codes::TOO_LONG,
        Error::RelayUnreachable { .. } => codes::RELAY_UNREACHABLE,
        Error::RelayRefused { .. } | Error::Unexpected { .. } => codes::RELAY_REFUSED,
        Error::Store(_) => codes::STORE,
        _ => codes::INTERNAL_ERROR,
    };
    RpcError::new(code, e.to_string())
}

fn driver_error(e: DriverError) -> RpcError {
    match e {
        DriverError::Engine(e) => rpc_error(&e),
        DriverError::Stopped(_) => RpcError::new(codes::SHUTTING_DOWN, e.to_string()),
    }
}

fn text_param(params: &Value, name: &str) -> Result<String, RpcError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| RpcError::invalid_params(format!("`{name}` (a string) is required")))
}

fn opt_text(params: &Value, name: &str) -> Option<String> {
    params.get(name).and_then(Value::as_str).map(str::to_string)
}

fn invitation_json(invitation: &petrel_qr::Invitation) -> Result<Value, RpcError> {
    let payload = QrPayload::Invitation(invitation.clone());
    let link = payload
        .to_link()
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let svg = QrCode::new(&payload)
        .map(|c| c.to_svg(8))
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(json!({
        "link": link,
        "svg": svg,
        "purpose": match invitation.purpose { Purpose::Connect => "connect", Purpose::Rekey => "rekey" },
        "one_time": true,
        "expires_in_secs": crate::client::INVITATION_TTL_SECS,
    }))
}

/// An event as a notification: `(method, params)`.
pub fn notification(event: &ProfileEvent) -> Notification {
    let profile = &event.profile;
    let (method, params) = match &event.event {
        Event::Message(m) => (
            "event.message",
            json!({"profile": profile, "contact": m.contact, "seq": m.seq, "id": hex(&m.id), "text": m.text, "at": m.at}),
        ),
        Event::Connected { contact } => (
            "event.contact_connected",
            json!({"profile": profile, "contact": contact}),
        ),
        Event::MessageState {
            contact,
            seq,
            state,
        } => (
            "event.message_state",
            json!({"profile": profile, "contact": contact, "seq": seq, "state": state.name()}),
        ),
        Event::Delivered { contact, seqs } => (
            "event.receipt",
            json!({"profile": profile, "contact": contact, "seqs": seqs}),
        ),
        Event::RotationDone { contact } => (
            "event.rotation_done",
            json!({"profile": profile, "contact": contact}),
        ),
        Event::Outbox(state) => (
            "event.outbox",
            json!({"profile": profile, "waiting": state.waiting, "at_relay": state.at_relay}),
        ),
        Event::RelayUp { relay } => (
            "event.relay_up",
            json!({"profile": profile, "relay": relay}),
        ),
        Event::RelayDown { relay, reason } => (
            "event.relay_down",
            json!({"profile": profile, "relay": relay, "reason": reason}),
        ),
        Event::Notice(text) => ("event.notice", json!({"profile": profile, "text": text})),
    };
    Notification {
        method: method.to_string(),
        params,
    }
}

impl Methods {
    /// The methods over these running profiles.
    pub fn new(
        store: Arc<Store>,
        profiles: BTreeMap<String, ProfileHandle>,
        current: Option<String>,
    ) -> Self {
        Self {
            store,
            profiles,
            current,
        }
    }

    fn profile(&self, params: &Value) -> Result<ProfileHandle, RpcError> {
        let name = opt_text(params, "profile")
            .or_else(|| self.current.clone())
            .or_else(|| self.profiles.keys().next().cloned())
            .ok_or_else(|| {
                RpcError::new(codes::NO_PROFILE, "no profile yet: `petrel profile create`")
            })?;
        self.profiles.get(&name).cloned().ok_or_else(|| {
            RpcError::new(
                codes::NO_PROFILE,
                format!("no profile named `{name}` runs here"),
            )
        })
    }

    async fn call(self: Arc<Self>, method: String, params: Value) -> Result<Value, RpcError> {
        match method.as_str() {
            "profile.list" => Ok(json!(
                self.profiles
                    .keys()
                    .map(|n| json!({"name": n, "current": self.current.as_deref() == Some(n.as_str())}))
                    .collect::<Vec<_>>()
            )),
            "contacts.list" => {
                let handle = self.profile(&params)?;
                handle
                    .read(|engine| {
                        engine
                            .contacts()
                            .iter()
                            .map(|c| {
                                json!({
                                    "alias": c.alias,
                                    "display_name": c.peer.as_ref().map(|p| p.display_name.clone()),
                                    "bio": c.peer.as_ref().and_then(|p| p.bio.clone()),
                                    "state": match c.state {
                                        ContactState::Connected => "connected",
                                        ContactState::AwaitingReply => "awaiting_reply",
                                    },
                                    "trust": match c.trust {
                                        crate::contact::Trust::Scanned => "scanned",
                                        crate::contact::Trust::Pasted => "pasted",
                                        crate::contact::Trust::Invited => "invited",
                                    },
                                    "verified": c.verified,
                                    "inbound_queues": c.inbound.len(),
                                    "gaps": c.gaps,
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                    .await
                    .map(Value::Array)
                    .map_err(driver_error)
            }
            "message.send" => {
                let handle = self.profile(&params)?;
                let request = Request::Send {
                    contact: text_param(&params, "contact")?,
                    text: text_param(&params, "text")?,
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Sent { seq, id, sent, .. } => {
                        Ok(json!({"seq": seq, "id": hex(&id), "state": sent.name()}))
                    }
                    other => Err(RpcError::internal(format!("unexpected reply {other:?}"))),
                }
            }
            "message.history" => {
                let handle = self.profile(&params)?;
                let alias = text_param(&params, "contact")?;
                let after = params.get("after_seq").and_then(Value::as_u64);
                let id = handle
                    .read(move |engine| engine.contact(&alias).map(|c| (c.id, c.alias.clone())))
                    .await
                    .map_err(driver_error)?
                    .map_err(|e| rpc_error(&e))?;
                let store = self.store.clone();
                let rows = store
                    .list::<Message>(MESSAGES)
                    .map_err(|e| RpcError::new(codes::STORE, e.to_string()))?;
                let mut rows: Vec<(Vec<u8>, Message)> = rows
                    .into_iter()
                    .filter(|(k, m)| k.starts_with(&id.0) && after.is_none_or(|a| m.seq > a))
                    .collect();
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(json!(rows.iter().map(|(_, m)| json!({
                    "seq": m.seq,
                    "from": match m.direction { Direction::In => id.1.as_str(), Direction::Out => "you" },
                    "text": m.text,
                    "at": m.at,
                    "sent": m.sent,
                    "delivered": m.delivered,
                })).collect::<Vec<_>>()))
            }
            "invite.create" => {
                let handle = self.profile(&params)?;
                let request = Request::Invite {
                    alias: opt_text(&params, "alias"),
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Invitation(i) => invitation_json(&i),
                    other => Err(RpcError::internal(format!("unexpected reply {other:?}"))),
                }
            }
            "invite.rekey" => {
                let handle = self.profile(&params)?;
                let request = Request::InviteRekey {
                    contact: text_param(&params, "contact")?,
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Invitation(i) => invitation_json(&i),
                    other => Err(RpcError::internal(format!("unexpected reply {other:?}"))),
                }
            }
            "connect" => {
                let handle = self.profile(&params)?;
                let decoded = match (opt_text(&params, "link"), opt_text(&params, "image_base64")) {
                    (Some(link), _) => petrel_qr::parse_pasted(&link)
                        .map_err(|e| RpcError::new(codes::BAD_LINK, format!("not a Petrel link: {e}")))?,
                    (None, Some(image)) => {
                        let bytes = data_encoding::BASE64.decode(image.as_bytes()).map_err(|e| {
                            RpcError::new(codes::BAD_IMAGE, format!("`image_base64` is not base64: {e}"))
                        })?;
                        petrel_qr::scan_image(&bytes)
                            .map_err(|e| RpcError::new(codes::BAD_IMAGE, format!("no Petrel code in the image: {e}")))?
                    }
                    (None, None) => {
                        return Err(RpcError::invalid_params("give `link` or `image_base64`"));
                    }
                };
                let invitation = decoded.invitation().cloned().ok_or_else(|| {
                    RpcError::new(
                        codes::NOT_AN_INVITATION,
                        "this code is a relay address, not an invitation",
                    )
                })?;
                let request = Request::Connect {
                    invitation,
                    provenance: decoded.provenance,
                    alias: opt_text(&params, "alias"),
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Connected(Connected::Contact {
                        alias,
                        trust,
                        delivered,
                    }) => Ok(json!({"contact": alias, "trust": trust.name(), "delivered": delivered})),
                    Reply::Connected(Connected::Rekeyed { alias }) => {
                        Ok(json!({"contact": alias, "rekeyed": true}))
                    }
                    other => Err(RpcError::internal(format!("unexpected reply {other:?}"))),
                }
            }
            "contact.verify" => {
                let handle = self.profile(&params)?;
                let alias = text_param(&params, "contact")?;
                let mark = params.get("mark").and_then(Value::as_bool).unwrap_or(false);
                let lookup = alias.clone();
                let (code, verified) = handle
                    .read(move |engine| {
                        engine
                            .contact(&lookup)
                            .map(|c| (c.session.safety_code(), c.verified))
                    })
                    .await
                    .map_err(driver_error)?
                    .map_err(|e| rpc_error(&e))?;
                if mark {
                    handle
                        .request(Request::MarkVerified { contact: alias })
                        .await
                        .map_err(driver_error)?;
                }
                Ok(json!({"code": code, "verified": verified || mark}))
            }
            "contact.rotate" => {
                let handle = self.profile(&params)?;
                let request = Request::Rotate {
                    contact: text_param(&params, "contact")?,
                };
                handle.request(request).await.map_err(driver_error)?;
                Ok(json!({"started": true}))
            }
            "relay.status" => {
                let handle = self.profile(&params)?;
                handle
                    .read(|engine| {
                        let outbox = engine.outbox_state();
                        json!({
                            "relays": engine.relay_status().iter().map(|(r, up)| json!({"relay": r.to_string(), "up": up})).collect::<Vec<_>>(),
                            "outbox": {"waiting": outbox.waiting, "at_relay": outbox.at_relay},
                        })
                    })
                    .await
                    .map_err(driver_error)
            }
            other => Err(RpcError::method_not_found(other)),
        }
    }
}

/// The handler the API server calls.
#[derive(Debug, Clone)]
pub struct ApiHandler(pub Arc<Methods>);

impl Handler for ApiHandler {
    fn call(&self, method: String, params: Value) -> BoxFuture<'static, Result<Value, RpcError>> {
        self.0.clone().call(method, params).boxed()
    }
}
