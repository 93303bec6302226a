//! `petrel` without a server: the API's methods run in the command's own process, over
//! the same drivers and engines as `petrel serve`, for as long as the command lasts.
//!
//! ```text
//!  petrel send … ──► Local::start (a one-shot driver per profile, no session yet)
//!                ──► call("message.send") ──► driver opens the sessions it needs
//!                ──► finish(): settle (the message is at a relay, or waits in the
//!                    outbox for one that is down) ──► stop, sessions closed
//! ```
//!
//! Drivers run in [`Mode::OneShot`]: a command that only reads the store opens no session,
//! and queues are read only by `sync`, `listen` and `chat` (which is what they are for).
//! So every command has one implementation, whether a server holds the home or not: the
//! CLI turns the same JSON answers into the same output.

use super::driver::{Mode, ProfileEvent};
use super::handler::{ApiHandler, Methods};
use crate::api::{Handler, Notification, RpcError};
use crate::profile::ProfileError;
use crate::store::Store;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The API's methods, in process.
#[derive(Debug)]
pub struct Local {
    methods: Arc<Methods>,
    events: broadcast::Sender<ProfileEvent>,
}

impl Local {
    /// Starts a one-shot driver for every profile of `store` (on the current runtime).
    pub fn start(store: Store, app_skew_secs: u64) -> Result<Local, ProfileError> {
        let methods = Arc::new(Methods::start(store, app_skew_secs, Mode::OneShot)?);
        let events = methods.events().clone();
        Ok(Local { methods, events })
    }

    /// Calls one of the API's methods (`specs/api.md`).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        ApiHandler(self.methods.clone())
            .call(method.to_string(), params)
            .await
    }

    /// Reads the queues of `profile` (or of the current profile) until they are empty;
    /// [`settle`](Self::settle) waits for the reading to end.
    pub async fn sync(&self, profile: Option<&str>) -> Result<(), RpcError> {
        self.methods.sync(profile).await
    }

    /// The events of every profile from now on, as the API's notifications.
    pub fn subscribe(&self) -> Events {
        Events(self.events.subscribe())
    }

    /// Waits until nothing started is under way any more (messages at a relay or waiting
    /// for one that is down, queues read, rotations set up).
    pub async fn settle(&self) {
        self.methods.settle_all().await;
    }

    /// Stops every driver: store writes finish, sessions close.
    pub async fn stop(&self) {
        self.methods.stop_all().await;
    }
}

/// The profiles' events, as notifications.
#[derive(Debug)]
pub struct Events(broadcast::Receiver<ProfileEvent>);

impl Events {
    /// The next notification; `event.lagged` if some were missed, `None` once every
    /// driver has stopped.
    pub async fn next(&mut self) -> Option<Notification> {
        match self.0.recv().await {
            Ok(event) => Some(super::handler::notification(&event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Notification {
                method: "event.lagged".into(),
                params: serde_json::json!({ "missed": missed }),
            }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A notification that is already there, without waiting.
    pub fn try_next(&mut self) -> Option<Notification> {
        loop {
            match self.0.try_recv() {
                Ok(event) => return Some(super::handler::notification(&event)),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}
