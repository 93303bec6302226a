//! `petrel-bench --smoke`: the bench runs end to end against real relays and its numbers
//! are sane — finite, positive where they must be, every message delivered exactly once,
//! every decryption equal to its plaintext.
//! It never checks that anything is fast (this is usually a debug build on a busy machine).
//!
//! The relay binary is the one `cargo nextest run --workspace` (or `cargo build`) put in the
//! same target directory; this test does not build it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// `petrel-relay` in this test's target directory (`target/<profile>/`, one level above
/// `deps/` where test executables live).
fn relay_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!("petrel-relay{}", std::env::consts::EXE_SUFFIX);
    let candidates = [deps.parent().map(|p| p.join(&name)), Some(deps.join(&name))];
    candidates
        .iter()
        .flatten()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "petrel-relay is not built next to {}: build it first with \
                 `cargo build -p petrel-relay` (cargo nextest run --workspace builds it)",
                deps.display()
            )
        })
}

#[test]
fn smoke_run_is_sane() {
    let output = Command::new(env!("CARGO_BIN_EXE_petrel-bench"))
        .args(["--smoke", "--json", "--relay-bin"])
        .arg(relay_bin())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "petrel-bench --smoke failed ({}):\n{stderr}",
        output.status
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{stderr}"));
    let rows = report["rows"].as_array().unwrap();
    for row in rows {
        assert!(
            row["value"].as_f64().is_some_and(f64::is_finite),
            "not a finite figure: {row}"
        );
        assert_ne!(row["verdict"], "fail", "a sanity check failed: {row}");
    }
    let value = |key: &str| -> f64 {
        rows.iter()
            .find(|r| r["key"] == key)
            .and_then(|r| r["value"].as_f64())
            .unwrap_or_else(|| panic!("no figure {key} in:\n{report:#}"))
    };

    // Throughput: 200 messages through one queue in the peak phase, then the paced latency
    // phases on the same queue; every stored message delivered once (the sanity verdict).
    assert!(value("throughput.q1.rate") > 0.0);
    assert!(value("throughput.q1.delivered") >= 200.0);
    let (p50, p99, p999) = (
        value("throughput.q1.latency_p50"),
        value("throughput.q1.latency_p99"),
        value("throughput.q1.latency_p999"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{p50} {p99} {p999}");
    assert!(value("throughput.q1.relay_cpu_per_msg") >= 0.0);

    // Latency at low and at 80 % load, one relay and two; forwarding through two relays.
    for path in ["direct", "forwarded"] {
        for load in ["low", "p80"] {
            let key = format!("latency.{path}.{load}");
            let (p50, p99, p999) = (
                value(&format!("{key}.p50")),
                value(&format!("{key}.p99")),
                value(&format!("{key}.p999")),
            );
            assert!(
                0.0 < p50 && p50 <= p99 && p99 <= p999,
                "{key}: {p50} {p99} {p999}"
            );
            assert!(value(&format!("{key}.samples")) > 0.0, "{key}");
            assert!(value(&format!("{key}.offered")) > 0.0, "{key}");
            let late = value(&format!("{key}.late"));
            assert!((0.0..=100.0).contains(&late), "{key}: {late} % late");
        }
    }
    assert!(value("forwarding.q2.rate") > 0.0);
    assert!(value("forwarding.q2.delivered") >= 100.0);
    assert!(value("forwarding.q2.forwarding_relay_cpu_per_msg") >= 0.0);
    assert!(value("forwarding.q2.destination_relay_cpu_per_msg") >= 0.0);

    // Crypto: every primitive, ratchet and (with the default olm-baseline feature) Olm
    // figure is a positive rate; every decryption matched.
    for key in [
        "crypto.base.x25519",
        "crypto.base.ed25519_sign",
        "crypto.base.ed25519_verify",
        "crypto.base.xchacha_seal",
        "crypto.base.blake3",
        "crypto.base.mlkem_encaps",
        "crypto.base.mlkem_decaps",
        "crypto.ratchet.pairing",
        "crypto.ratchet.chain_100",
        "crypto.ratchet.pingpong_100",
        "crypto.ratchet.chain_4096",
        "crypto.ratchet.pingpong_4096",
    ] {
        assert!(value(key) > 0.0, "{key}");
    }
    if cfg!(feature = "olm-baseline") {
        for key in [
            "crypto.olm.setup",
            "crypto.olm.chain_100",
            "crypto.olm.pingpong_100",
            "crypto.olm.chain_4096",
            "crypto.olm.pingpong_4096",
        ] {
            assert!(value(key) > 0.0, "{key}");
        }
    }
    assert!(value("crypto.roundtrips") > 0.0);

    // The broker baseline runs only where mosquitto is installed; when it ran, 200
    // messages were each delivered once.
    if rows.iter().any(|r| r["key"] == "broker.t10.rate") {
        assert!(value("broker.t10.rate") > 0.0);
        assert_eq!(value("broker.t10.delivered"), 200.0);
    }

    // Storage: 0 and 1,000 idle queues.
    for step in [0, 1_000] {
        assert!(value(&format!("storage.q{step}.rss")) > 1.0);
        assert!(value(&format!("storage.q{step}.startup")) > 0.0);
        assert!(
            value(&format!("storage.q{step}.spawn_to_address"))
                <= value(&format!("storage.q{step}.startup"))
        );
    }
    assert!(value("storage.q1000.create_rate") > 0.0);
    let per_queue = value("storage.q1000.disk_per_queue");
    assert!(per_queue > 64.0, "{per_queue} bytes per queue");

    // Idle clients: every session still open; the per-client figure is noisy at 20 clients,
    // so only its finiteness (checked above) is required.
    assert_eq!(value("clients.answering"), 20.0);
    assert!(value("clients.rss_with") > 1.0);

    // Wire: the frames carry the 2,048-byte body, and the wire carries the frames.
    let send = value("wire.send_frame");
    let deliver = value("wire.deliver_frame");
    assert!(send > 2_048.0 && deliver > 2_048.0, "{send} {deliver}");
    assert!(value("wire.sender_hop_measured") > send);
    assert!(value("wire.recipient_hop_measured") > deliver);
    assert_eq!(value("wire.delivered"), 20.0);
}
