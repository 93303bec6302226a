//! The API's methods (`specs/api.md` §Methods): JSON-RPC calls mapped onto the profile
//! drivers and the store, and engine events mapped onto notifications (§Events).
//!
//! Every method that acts on one profile takes an optional `profile` (default: the current
//! one, which `profile.use` sets). Calls that change a profile's engine go to its driver
//! and wait for the engine's answer; history is read from the store directly (the driver
//! commits before it reports anything).
//!
//! Profile and relay management changes the store through [`Profiles`], as the CLI does
//! when no server runs. A profile whose relays or rotation period change gets a new
//! driver: the old one is stopped (its store write finishes, its sessions close) before
//! the new one starts from the store, so two engines never run one profile.
//!
//! Locks: `admin` serialises the management calls; `state` (the running drivers and the
//! current profile) is only held to look a driver up or to swap one, never across a
//! request that may wait on a relay.

use super::driver::{self, DriverError, ProfileEvent, ProfileHandle};
use crate::api::errors as codes;
use crate::api::{Handler, Notification, RpcError};
use crate::contact::{ContactState, Direction, MESSAGES, Message, Trust};
use crate::engine::{Connected, Error, Event, Reply, Request};
use crate::payload::ProfileCard;
use crate::profile::{Profile, ProfileError, Profiles};
use crate::store::{Store, StoreError};
use futures::FutureExt;
use futures::future::BoxFuture;
use petrel_federation::RelayAddress;
use petrel_qr::{Payload as QrPayload, Purpose, QrCode};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, RwLock, broadcast};

/// The rotation period of a profile created without `rotation_secs` (7 days, as the CLI).
pub const DEFAULT_ROTATION_SECS: u64 = 7 * 86_400;

/// The profiles a `petrel serve` runs, as the API sees them.
#[derive(Debug)]
pub struct Methods {
    store: Arc<Store>,
    app_skew_secs: u64,
    events: broadcast::Sender<ProfileEvent>,
    state: RwLock<State>,
    admin: Mutex<()>,
    mode: driver::Mode,
}

#[derive(Debug, Default)]
struct State {
    drivers: BTreeMap<String, ProfileHandle>,
    current: Option<String>,
    stopping: bool,
}

type Params = Map<String, Value>;

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

/// The JSON-RPC error for a failed profile operation.
pub fn profile_error(e: &ProfileError) -> RpcError {
    let code = match e {
        ProfileError::NotFound(_) | ProfileError::NoneSelected => codes::NO_PROFILE,
        ProfileError::Exists(_) => codes::PROFILE_EXISTS,
        ProfileError::Store(_) => codes::STORE,
        _ => codes::INVALID_ARGUMENT,
    };
    let message = match e {
        ProfileError::NoRelay => "a profile needs at least one pinned relay".to_string(),
        ProfileError::NoneSelected => "no profile selected: call `profile.use`".to_string(),
        other => other.to_string(),
    };
    RpcError::new(code, message)
}

fn store_error(e: &StoreError) -> RpcError {
    RpcError::new(codes::STORE, e.to_string())
}

fn driver_error(e: DriverError) -> RpcError {
    match e {
        DriverError::Engine(e) => rpc_error(&e),
        DriverError::Stopped(_) => RpcError::new(codes::SHUTTING_DOWN, e.to_string()),
    }
}

fn unexpected(reply: &Reply) -> RpcError {
    RpcError::internal(format!("unexpected reply {reply:?}"))
}

// --- parameters ------------------------------------------------------------------------

/// The call's params as an object, refusing members the method does not take (a typo in
/// a parameter's name would otherwise be ignored silently).
fn params(value: Value, allowed: &[&str]) -> Result<Params, RpcError> {
    let map = match value {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        _ => return Err(RpcError::invalid_params("`params` must be an object")),
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(RpcError::invalid_params(if allowed.is_empty() {
            format!("unknown parameter `{unknown}`: this method takes none")
        } else {
            format!(
                "unknown parameter `{unknown}`: this method takes {}",
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }));
    }
    Ok(map)
}

fn opt_text(p: &Params, name: &str) -> Result<Option<String>, RpcError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`{name}` must be a string"
        ))),
    }
}

fn text(p: &Params, name: &str) -> Result<String, RpcError> {
    opt_text(p, name)?
        .ok_or_else(|| RpcError::invalid_params(format!("`{name}` (a string) is required")))
}

fn opt_u64(p: &Params, name: &str) -> Result<Option<u64>, RpcError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            RpcError::invalid_params(format!("`{name}` must be a non-negative integer"))
        }),
    }
}

fn opt_bool(p: &Params, name: &str) -> Result<Option<bool>, RpcError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`{name}` must be true or false"
        ))),
    }
}

fn relay_address(text: &str) -> Result<RelayAddress, RpcError> {
    text.parse().map_err(|e| {
        RpcError::new(
            codes::INVALID_ARGUMENT,
            format!("`{text}` is not a relay address: {e}"),
        )
    })
}

fn relay_list(p: &Params, name: &str) -> Result<Vec<RelayAddress>, RpcError> {
    let required =
        || RpcError::invalid_params(format!("`{name}` (an array of strings) is required"));
    let items = p.get(name).and_then(Value::as_array).ok_or_else(required)?;
    items
        .iter()
        .map(|item| item.as_str().ok_or_else(required).and_then(relay_address))
        .collect()
}

// --- results ---------------------------------------------------------------------------

fn trust_name(trust: Trust) -> &'static str {
    match trust {
        Trust::Scanned => "scanned",
        Trust::Pasted => "pasted",
        Trust::Invited => "invited",
    }
}

fn relays_json(profile: &Profile) -> Value {
    json!(
        profile
            .relays
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    )
}

fn profile_json(profile: &Profile, current: Option<&str>) -> Value {
    json!({
        "name": profile.name,
        "display_name": profile.display_name,
        "bio": profile.bio,
        "current": current == Some(profile.name.as_str()),
        "relays": relays_json(profile),
        "rotation_secs": profile.rotation_secs,
    })
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
        "expires_in_secs": crate::contact::INVITATION_TTL_SECS,
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

// --- the methods -------------------------------------------------------------------------

impl Methods {
    /// Starts a driver (in `mode`) for every profile of `store`, and the methods over
    /// them; every driver, and those started later (`profile.create`, restarts), sends
    /// its events to [`events`](Self::events).
    pub fn start(
        store: Store,
        app_skew_secs: u64,
        mode: driver::Mode,
    ) -> Result<Self, ProfileError> {
        let store = Arc::new(store);
        let (profiles, current) = {
            let p = Profiles::new(&store);
            (p.list()?, p.current_name()?)
        };
        let (events, _) = broadcast::channel(super::NOTIFICATION_BUFFER);
        let mut drivers = BTreeMap::new();
        for profile in profiles {
            let name = profile.name.clone();
            let handle =
                driver::spawn(store.clone(), profile, app_skew_secs, events.clone(), mode)?;
            drivers.insert(name, handle);
        }
        Ok(Self {
            store,
            app_skew_secs,
            events,
            state: RwLock::new(State {
                drivers,
                current,
                stopping: false,
            }),
            admin: Mutex::new(()),
            mode,
        })
    }

    /// Where every driver's events go.
    pub fn events(&self) -> &broadcast::Sender<ProfileEvent> {
        &self.events
    }

    /// `Request::Sync` for the profile named (or the current one): its queues are read
    /// until they are empty (see [`settle_all`](Self::settle_all)).
    pub async fn sync(&self, profile: Option<&str>) -> Result<(), RpcError> {
        let mut p = Params::new();
        if let Some(name) = profile {
            p.insert("profile".into(), json!(name));
        }
        let handle = self.target(&p).await?;
        handle.request(Request::Sync).await.map_err(driver_error)?;
        Ok(())
    }

    /// Waits until every profile's engine is settled (`Engine::is_settled`).
    pub async fn settle_all(&self) {
        let drivers: Vec<ProfileHandle> =
            self.state.read().await.drivers.values().cloned().collect();
        for handle in drivers {
            handle.settle().await;
        }
    }

    /// Stops every driver; later calls are refused with `SHUTTING_DOWN`.
    pub async fn stop_all(&self) {
        let _admin = self.admin.lock().await;
        let drivers = {
            let mut state = self.state.write().await;
            state.stopping = true;
            std::mem::take(&mut state.drivers)
        };
        for handle in drivers.values() {
            handle.stop().await;
        }
    }

    fn profiles(&self) -> Profiles<'_> {
        Profiles::new(&self.store)
    }

    fn shutting_down() -> RpcError {
        RpcError::new(codes::SHUTTING_DOWN, "petrel serve is shutting down")
    }

    /// The profile a call acts on (`profile`, else the current one) and its driver.
    async fn target(&self, p: &Params) -> Result<ProfileHandle, RpcError> {
        let named = opt_text(p, "profile")?;
        let state = self.state.read().await;
        if state.stopping {
            return Err(Self::shutting_down());
        }
        let name = named
            .or_else(|| state.current.clone())
            .ok_or_else(|| profile_error(&ProfileError::NoneSelected))?;
        state.drivers.get(&name).cloned().ok_or_else(|| {
            RpcError::new(
                codes::NO_PROFILE,
                format!("no profile named `{name}` runs here"),
            )
        })
    }

    /// Replaces the driver of `name` with one started from the store's profile. The caller
    /// holds `admin`.
    async fn restart(&self, name: &str) -> Result<(), RpcError> {
        let profile = self.profiles().get(name).map_err(|e| profile_error(&e))?;
        let mut state = self.state.write().await;
        if state.stopping {
            return Err(Self::shutting_down());
        }
        // A stop is answered as soon as the driver has read it: requests before it in its
        // queue only start engine work, they do not wait for a relay.
        if let Some(old) = state.drivers.remove(name) {
            old.stop().await;
        }
        let handle = driver::spawn(
            self.store.clone(),
            profile,
            self.app_skew_secs,
            self.events.clone(),
            self.mode,
        )
        .map_err(|e| store_error(&e))?;
        state.drivers.insert(name.to_string(), handle);
        Ok(())
    }

    async fn call(self: Arc<Self>, method: String, params_value: Value) -> Result<Value, RpcError> {
        match method.as_str() {
            "profile.list" => {
                params(params_value, &[])?;
                self.profile_list().await
            }
            "profile.create" => {
                let p = params(
                    params_value,
                    &[
                        "name",
                        "relays",
                        "display_name",
                        "bio",
                        "require_pinned_forwarding",
                        "rotation_secs",
                    ],
                )?;
                self.profile_create(&p).await
            }
            "profile.use" => {
                let p = params(params_value, &["name"])?;
                self.profile_use(&p).await
            }
            "profile.edit" => {
                let p = params(params_value, &["profile", "display_name", "bio"])?;
                self.profile_edit(&p).await
            }
            "profile.rotation" => {
                let p = params(params_value, &["profile", "period_secs"])?;
                self.profile_rotation(&p).await
            }
            "profile.delete" => {
                let p = params(params_value, &["name"])?;
                self.profile_delete(&p).await
            }
            "relay.list" => {
                let p = params(params_value, &["profile"])?;
                let handle = self.target(&p).await?;
                let profile = self
                    .profiles()
                    .get(handle.name())
                    .map_err(|e| profile_error(&e))?;
                Ok(relays_json(&profile))
            }
            "relay.pin" | "relay.unpin" => {
                let p = params(params_value, &["profile", "address"])?;
                self.relay_change(&p, method == "relay.pin").await
            }
            "relay.status" => {
                let p = params(params_value, &["profile"])?;
                let handle = self.target(&p).await?;
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
            "contacts.list" => {
                let p = params(params_value, &["profile"])?;
                let handle = self.target(&p).await?;
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
                                    "trust": trust_name(c.trust),
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
                let p = params(params_value, &["profile", "contact", "text"])?;
                let handle = self.target(&p).await?;
                let request = Request::Send {
                    contact: text(&p, "contact")?,
                    text: text(&p, "text")?,
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Sent { seq, id, sent, .. } => {
                        Ok(json!({"seq": seq, "id": hex(&id), "state": sent.name()}))
                    }
                    other => Err(unexpected(&other)),
                }
            }
            "message.history" => {
                let p = params(params_value, &["profile", "contact", "after_seq"])?;
                self.message_history(&p).await
            }
            "invite.create" => {
                let p = params(params_value, &["profile", "alias"])?;
                let handle = self.target(&p).await?;
                let request = Request::Invite {
                    alias: opt_text(&p, "alias")?,
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Invitation(i) => invitation_json(&i),
                    other => Err(unexpected(&other)),
                }
            }
            "invite.rekey" => {
                let p = params(params_value, &["profile", "contact"])?;
                let handle = self.target(&p).await?;
                let request = Request::InviteRekey {
                    contact: text(&p, "contact")?,
                };
                match handle.request(request).await.map_err(driver_error)? {
                    Reply::Invitation(i) => invitation_json(&i),
                    other => Err(unexpected(&other)),
                }
            }
            "connect" => {
                let p = params(params_value, &["profile", "link", "image_base64", "alias"])?;
                self.connect(&p).await
            }
            "contact.verify" => {
                let p = params(params_value, &["profile", "contact", "mark"])?;
                let handle = self.target(&p).await?;
                let alias = text(&p, "contact")?;
                let mark = opt_bool(&p, "mark")?.unwrap_or(false);
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
                let p = params(params_value, &["profile", "contact"])?;
                let handle = self.target(&p).await?;
                let request = Request::Rotate {
                    contact: text(&p, "contact")?,
                };
                handle.request(request).await.map_err(driver_error)?;
                Ok(json!({"started": true}))
            }
            other => Err(RpcError::method_not_found(other)),
        }
    }

    async fn profile_list(&self) -> Result<Value, RpcError> {
        let current = self.state.read().await.current.clone();
        let all = self.profiles().list().map_err(|e| profile_error(&e))?;
        Ok(json!(
            all.iter()
                .map(|p| profile_json(p, current.as_deref()))
                .collect::<Vec<_>>()
        ))
    }

    async fn profile_create(&self, p: &Params) -> Result<Value, RpcError> {
        let name = text(p, "name")?;
        let display_name = opt_text(p, "display_name")?.unwrap_or_else(|| name.clone());
        let bio = opt_text(p, "bio")?.filter(|b| !b.is_empty());
        let require_pinned_forwarding = opt_bool(p, "require_pinned_forwarding")?.unwrap_or(false);
        let rotation_secs = opt_u64(p, "rotation_secs")?.unwrap_or(DEFAULT_ROTATION_SECS);
        let profile = Profile {
            relays: relay_list(p, "relays")?,
            name,
            display_name,
            bio,
            require_pinned_forwarding,
            rotation_secs,
        };
        let _admin = self.admin.lock().await;
        if self.state.read().await.stopping {
            return Err(Self::shutting_down());
        }
        let profiles = self.profiles();
        profiles
            .create(&mut rand::rng(), profile.clone())
            .map_err(|e| profile_error(&e))?;
        let current = profiles.current_name().map_err(|e| profile_error(&e))?;
        let handle = driver::spawn(
            self.store.clone(),
            profile.clone(),
            self.app_skew_secs,
            self.events.clone(),
            self.mode,
        )
        .map_err(|e| store_error(&e))?;
        let mut state = self.state.write().await;
        state.drivers.insert(profile.name.clone(), handle);
        state.current = current;
        Ok(profile_json(&profile, state.current.as_deref()))
    }

    async fn profile_use(&self, p: &Params) -> Result<Value, RpcError> {
        let name = text(p, "name")?;
        let _admin = self.admin.lock().await;
        self.profiles()
            .select(&mut rand::rng(), &name)
            .map_err(|e| profile_error(&e))?;
        self.state.write().await.current = Some(name.clone());
        Ok(json!({"current": name}))
    }

    async fn profile_edit(&self, p: &Params) -> Result<Value, RpcError> {
        let display_name = opt_text(p, "display_name")?;
        let bio = opt_text(p, "bio")?;
        // Under `admin`, the driver looked up is not replaced before the announcement.
        let _admin = self.admin.lock().await;
        let handle = self.target(p).await?;
        let profile = self
            .profiles()
            .edit_card(&mut rand::rng(), handle.name(), display_name, bio)
            .map_err(|e| profile_error(&e))?;
        let card = ProfileCard {
            display_name: profile.display_name,
            bio: profile.bio,
        };
        // The engine answers an announcement at once: the cards wait in the outbox.
        match handle
            .request(Request::Announce { card })
            .await
            .map_err(driver_error)?
        {
            Reply::Announced { contacts } => Ok(json!({"announced": contacts})),
            other => Err(unexpected(&other)),
        }
    }

    async fn profile_rotation(&self, p: &Params) -> Result<Value, RpcError> {
        let secs = opt_u64(p, "period_secs")?.ok_or_else(|| {
            RpcError::invalid_params("`period_secs` (a number of seconds) is required")
        })?;
        let _admin = self.admin.lock().await;
        let handle = self.target(p).await?;
        self.profiles()
            .set_rotation(&mut rand::rng(), handle.name(), secs)
            .map_err(|e| profile_error(&e))?;
        self.restart(handle.name()).await?;
        Ok(json!({"rotation_secs": secs}))
    }

    async fn profile_delete(&self, p: &Params) -> Result<Value, RpcError> {
        let name = text(p, "name")?;
        let _admin = self.admin.lock().await;
        let profiles = self.profiles();
        profiles.get(&name).map_err(|e| profile_error(&e))?;
        let old = {
            let mut state = self.state.write().await;
            if state.stopping {
                return Err(Self::shutting_down());
            }
            state.drivers.remove(&name)
        };
        if let Some(old) = old {
            old.stop().await;
        }
        profiles.delete(&name).map_err(|e| profile_error(&e))?;
        let removed = crate::contact::delete_profile_data(&mut rand::rng(), &self.store, &name)
            .map_err(|e| RpcError::new(codes::STORE, e.to_string()))?;
        let current = profiles.current_name().map_err(|e| profile_error(&e))?;
        self.state.write().await.current = current;
        Ok(json!({"removed": removed}))
    }

    async fn relay_change(&self, p: &Params, pin: bool) -> Result<Value, RpcError> {
        let address = text(p, "address")?;
        opt_text(p, "profile")?; // every type error before any value error
        let address = relay_address(&address)?;
        let _admin = self.admin.lock().await;
        let handle = self.target(p).await?;
        let profiles = self.profiles();
        let name = handle.name();
        if pin {
            profiles.pin(&mut rand::rng(), name, address)
        } else {
            profiles.unpin(&mut rand::rng(), name, &address)
        }
        .map_err(|e| profile_error(&e))?;
        self.restart(name).await?;
        let profile = profiles.get(name).map_err(|e| profile_error(&e))?;
        Ok(relays_json(&profile))
    }

    async fn message_history(&self, p: &Params) -> Result<Value, RpcError> {
        let handle = self.target(p).await?;
        let alias = text(p, "contact")?;
        let after = opt_u64(p, "after_seq")?;
        let (id, alias) = handle
            .read(move |engine| engine.contact(&alias).map(|c| (c.id, c.alias.clone())))
            .await
            .map_err(driver_error)?
            .map_err(|e| rpc_error(&e))?;
        let rows = self
            .store
            .list::<Message>(MESSAGES)
            .map_err(|e| store_error(&e))?;
        let mut rows: Vec<(Vec<u8>, Message)> = rows
            .into_iter()
            .filter(|(k, m)| k.starts_with(&id) && after.is_none_or(|a| m.seq > a))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(json!(rows.iter().map(|(_, m)| json!({
            "seq": m.seq,
            "from": match m.direction { Direction::In => alias.as_str(), Direction::Out => "you" },
            "text": m.text,
            "at": m.at,
            "sent": m.sent,
            "delivered": m.delivered,
        })).collect::<Vec<_>>()))
    }

    async fn connect(&self, p: &Params) -> Result<Value, RpcError> {
        let handle = self.target(p).await?;
        let decoded = match (opt_text(p, "link")?, opt_text(p, "image_base64")?) {
            (Some(_), Some(_)) => {
                return Err(RpcError::invalid_params(
                    "give `link` or `image_base64`, not both",
                ));
            }
            (Some(link), None) => petrel_qr::parse_pasted(&link)
                .map_err(|e| RpcError::new(codes::BAD_LINK, format!("not a Petrel link: {e}")))?,
            (None, Some(image)) => {
                let bytes = data_encoding::BASE64
                    .decode(image.as_bytes())
                    .map_err(|e| {
                        RpcError::new(
                            codes::BAD_IMAGE,
                            format!("`image_base64` is not base64: {e}"),
                        )
                    })?;
                petrel_qr::scan_image(&bytes).map_err(|e| {
                    RpcError::new(
                        codes::BAD_IMAGE,
                        format!("no Petrel code in the image: {e}"),
                    )
                })?
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
            alias: opt_text(p, "alias")?,
        };
        match handle.request(request).await.map_err(driver_error)? {
            Reply::Connected(Connected::Contact {
                alias,
                trust,
                delivered,
            }) => Ok(json!({"contact": alias, "trust": trust_name(trust), "delivered": delivered})),
            Reply::Connected(Connected::Rekeyed { alias }) => {
                Ok(json!({"contact": alias, "rekeyed": true}))
            }
            other => Err(unexpected(&other)),
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
