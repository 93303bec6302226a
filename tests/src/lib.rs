//! Petrel's cross-crate test support.
//!
//! Today this is the benchmark harness behind the `petrel-bench` binary ([`bench`]): it
//! starts real `petrel-relay` processes, drives them with simulated clients on loopback and
//! prints the figures operators check before running a relay. The network simulator and the
//! cross-crate end-to-end helpers will live next to it.

pub mod bench;
pub mod sim;
