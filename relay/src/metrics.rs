//! Placeholder metrics (replaced by the Prometheus implementation).
#![allow(missing_docs)]
use petrel_federation::ErrorCode;
#[derive(Clone, Debug, Default)]
pub struct Metrics;
impl Metrics {
    pub fn new() -> Self {
        Self
    }
    pub fn command(&self, _name: &'static str) {}
    pub fn error(&self, _code: ErrorCode) {}
    pub fn delivery(&self) {}
    pub fn message_stored(&self) {}
    pub fn connection_opened(&self) {}
    pub fn connection_closed(&self) {}
    pub fn set_queues(&self, _n: u64) {}
    pub fn set_messages(&self, _n: u64) {}
    pub fn encode(&self) -> String {
        String::new()
    }
}
