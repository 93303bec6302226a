//! Placeholder HTTP (replaced by the real implementation).
#![allow(missing_docs)]
use crate::metrics::Metrics;
use std::sync::Arc;
pub async fn serve_http(
    _l: tokio::net::TcpListener,
    _m: Metrics,
    _h: Arc<dyn Fn() -> bool + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}
pub async fn serve_front_door(
    _l: tokio::net::TcpListener,
    _b: std::net::SocketAddr,
    _m: Metrics,
    _h: Arc<dyn Fn() -> bool + Send + Sync>,
    _max: usize,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}
