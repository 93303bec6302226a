//! `petrel serve`: one long-running process per home. Every profile's engine runs on its
//! own driver (`driver`), always connected and subscribed, pushing messages the moment
//! they arrive; the local API (`crate::api`, `specs/api.md`) lets the CLI, bots and apps
//! use the profiles at the same time (`handler`), and manage them: profiles created,
//! edited or deleted and relays pinned through the API take effect at once (the CLI
//! cannot open the locked store while the server runs). SIGTERM or SIGINT: every driver
//! finishes the store write in progress and closes its sessions, the API closes, exit 0.

pub mod driver;
pub mod handler;
pub mod local;

use crate::api::{ApiConfig, ApiServer, Notification};
use crate::store::Store;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many notifications a slow API subscriber may fall behind before it is told it
/// missed some (`event.lagged`).
pub const NOTIFICATION_BUFFER: usize = 4096;

/// Runs `petrel serve` until `shutdown` resolves. `ready` gets the API's address and
/// token file once it listens.
pub async fn run(
    home: &Path,
    store: Store,
    config: ApiConfig,
    app_skew_secs: u64,
    ready: impl FnOnce(std::net::SocketAddr, &Path),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let methods = Arc::new(handler::Methods::start(
        store,
        app_skew_secs,
        driver::Mode::Serve,
    )?);
    let events = methods.events().clone();
    let (notifications, _) = broadcast::channel::<Notification>(NOTIFICATION_BUFFER);
    // Engine events become API notifications.
    let mut rx = events.subscribe();
    let tx = notifications.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let _ = tx.send(handler::notification(&event));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let server = ApiServer::bind(config, home, &mut rand::rng())?;
    ready(server.local_addr(), server.token_file());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(server.serve(
        Arc::new(handler::ApiHandler(methods.clone())),
        notifications,
        async move {
            let _ = stop_rx.await;
        },
    ));
    shutdown.await;
    // Drivers first (each finishes its store write, closes its sessions), then the API:
    // calls that arrive in between are answered `SHUTTING_DOWN`.
    methods.stop_all().await;
    let _ = stop_tx.send(());
    api.await??;
    Ok(())
}
