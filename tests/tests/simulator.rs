//! The network simulator (issue 7, item 8) in the suite, at its reduced size: 6 relay
//! processes, 24 clients (12 pairs, 24 streams across relays), one relay killed and
//! restarted and one relay pair partitioned mid-run. Every message must arrive exactly
//! once: delivered == sent, nothing lost, nothing duplicated.
//!
//! The relay binary is the debug `petrel-relay` that `cargo build` (or `cargo nextest run
//! --workspace`) put in this test's target directory; build it first with
//! `cargo build -p petrel-relay`.
//!
//! The full size (20 relays, 200 clients) is the ignored test below; run it against release
//! relays:
//!
//! ```text
//! cargo build --release -p petrel-relay -p petrel-tests
//! cargo nextest run --release -p petrel-tests --test simulator --run-ignored only --no-capture
//! ```
//!
//! Nothing here waits on wall-clock time for synchronisation or asserts on it: the run waits
//! on deliveries, answers and end markers, each with a generous limit, and the fault
//! schedule comes from a fixed seed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_tests::sim::{SimConfig, SimReport, run};
use std::path::PathBuf;

/// `petrel-relay` in this test's target directory (`target/<profile>/`, one level above the
/// `deps/` directory test executables live in).
fn relay_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!("petrel-relay{}", std::env::consts::EXE_SUFFIX);
    [deps.parent().map(|p| p.join(&name)), Some(deps.join(&name))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "petrel-relay is not built next to {}: run `cargo build -p petrel-relay` \
                 (with --release for a release test run) first",
                deps.display()
            )
        })
}

async fn simulate(cfg: &SimConfig) -> SimReport {
    let tmp = tempfile::tempdir().unwrap();
    let report = run(&relay_bin(), tmp.path(), cfg, |line| eprintln!("{line}"))
        .await
        .unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    report
}

fn check(cfg: &SimConfig, report: &SimReport) {
    assert_eq!(report.kills, cfg.kills, "{report}");
    assert_eq!(report.partitions, cfg.partitions, "{report}");
    // Real traffic beyond the Hellos.
    assert!(report.sent > 2 * report.streams as u64, "{report}");
    assert!(report.drained, "the drain did not finish:\n{report}");
    assert_eq!(report.delivered, report.sent, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.redelivered_after_ack, 0, "{report}");
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(report.unreadable, 0, "{report}");
    assert_eq!(report.confirmed, report.sent, "{report}");
    assert!(report.passed(), "{report}");
    // The faults interrupted traffic (each lasts until that is seen): sessions on a killed
    // relay ended and were reopened, forwards to it went into outboxes, and forwards that
    // hung in a blackholed path when their forwarding relay was killed were resubmitted.
    assert!(report.reconnects > 0, "{report}");
    assert!(report.outboxed > 0, "{report}");
    assert!(report.resubmitted > 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduced_network_delivers_everything_exactly_once() {
    let cfg = SimConfig::reduced();
    let report = simulate(&cfg).await;
    check(&cfg, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "20 relays and 200 clients for a minute and more: run with --release, see the header"]
async fn full_network_delivers_everything_exactly_once() {
    // Another seed, another network and schedule: PETREL_SIM_SEED=…
    let mut cfg = SimConfig::full();
    if let Some(seed) = std::env::var("PETREL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        cfg.seed = seed;
    }
    let report = simulate(&cfg).await;
    check(&cfg, &report);
}
