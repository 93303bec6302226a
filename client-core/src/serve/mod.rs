//! `petrel serve`: one long-running process per home. Every profile's engine runs on its
//! own driver (`driver`), always connected and subscribed; the local API (`crate::api`)
//! lets the CLI, bots and the app use the profiles at the same time (`handler`).

pub mod driver;
