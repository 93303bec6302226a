//! `petrel-bench`: measure a real `petrel-relay` on this machine and print the figures.
//!
//! ```text
//! cargo build --release -p petrel-relay -p petrel-client -p petrel-tests
//! cargo run --release -p petrel-tests --bin petrel-bench            # full run
//! cargo run --release -p petrel-tests --bin petrel-bench -- --quick # under two minutes
//! ```
//!
//! Progress goes to stderr; the markdown table (or `--json`) to stdout. The exit status is
//! non-zero when a sanity check failed (a message lost or duplicated, a scenario that could
//! not run), never because a figure missed its target.

use anyhow::Context;
use clap::Parser;
use petrel_tests::bench::plan::{Mode, Scenario};
use petrel_tests::bench::{Options, relay, run};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "petrel-bench",
    about = "Benchmark real petrel-relays on loopback: throughput and latency (one relay and \
             two), memory, disk, start-up, wire cost, client crypto, baselines (primitives, \
             vodozemac's Olm, mosquitto) and the network simulator.",
    after_help = "Build the relay first, with the same profile:\n  \
                  cargo build --release -p petrel-relay -p petrel-client -p petrel-tests\n  \
                  cargo run --release -p petrel-tests --bin petrel-bench -- --quick"
)]
struct Cli {
    /// Smaller sizes; finishes in under two minutes.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// Tiny sizes for the CI smoke test (checks the bench works, not speed).
    #[arg(long)]
    smoke: bool,
    /// Print JSON instead of the markdown table.
    #[arg(long)]
    json: bool,
    /// The petrel-relay binary. Default: next to this executable.
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// The petrel client binary (the serve scenario). Default: next to the relay binary.
    #[arg(long)]
    petrel_bin: Option<PathBuf>,
    /// Run only these scenarios (comma-separated): crypto, throughput, forwarding, broker,
    /// storage, clients, wire, network, serve.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Put the temporary relay directories here (default: the system's temp directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directory (relay data and logs) after the run.
    #[arg(long)]
    keep: bool,
    /// Throughput: active queue counts to measure instead of the mode's (comma-separated).
    #[arg(long, value_delimiter = ',')]
    queues: Vec<usize>,
    /// Throughput: messages in flight between SEND and ACK OK, in total. Default: 4 per
    /// queue, at least 16 and at most 1,024.
    #[arg(long)]
    in_flight: Option<usize>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("petrel-bench: a sanity check failed (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("petrel-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    let mode = if cli.smoke {
        Mode::Smoke
    } else if cli.quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    let only = cli
        .only
        .iter()
        .map(|name| {
            Scenario::parse(name).with_context(|| {
                format!(
                    "unknown scenario `{name}`: use crypto, throughput, forwarding, broker, \
                     storage, clients, wire, network or serve"
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = Options {
        mode,
        relay_bin: relay::locate_relay(cli.relay_bin.as_deref())?,
        petrel_bin: cli.petrel_bin,
        work_dir: cli.work_dir,
        only,
        keep: cli.keep,
        queues: cli.queues,
        in_flight: cli.in_flight,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run(&options))?;
    if cli.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(report.sane())
}
