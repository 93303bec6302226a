//! `petrel-relay`: run a Petrel relay, or print the address of an existing one.
//!
//! With no arguments the relay creates its identity and store in `./petrel-relay-data`,
//! listens on TCP port 5223 (and on `$PORT` over WebSocket when a PaaS sets it), and prints
//! one line, `relay address: petrel://…`, that clients pin as it is. Logs go to stderr.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use petrel_relay::clock::Clock;
use petrel_relay::config::{self, Config, FileConfig, Limits};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "petrel-relay",
    version,
    about = "Run a Petrel relay: a store-and-forward node for private messages.",
    long_about = "Run a Petrel relay: a store-and-forward node for private messages.\n\n\
        With no arguments it creates its identity and store in ./petrel-relay-data, listens on \
        TCP port 5223, and prints `relay address: petrel://…` on stdout. Give that address to \
        the people who will pin this relay. The relay stores only hashes of queue keys and \
        messages until they are acknowledged or expire; it never logs queue IDs, keys or \
        addresses at the default log level.",
    after_help = "Examples:\n  \
        petrel-relay                                   # start with defaults\n  \
        petrel-relay --listen 127.0.0.1:0              # any free port on loopback\n  \
        petrel-relay --announce wss/relay.example.org:443 --create-password secret\n  \
        petrel-relay address --data-dir /data          # print the address, don't start"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the address of an existing relay without starting it.
    Address {
        /// The relay's data directory.
        #[arg(long, env = "PETREL_RELAY_DATA", default_value = "petrel-relay-data")]
        data_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Data directory: identity key, sealing key and the redb store.
    #[arg(long, env = "PETREL_RELAY_DATA", global = true)]
    data_dir: Option<PathBuf>,
    /// A TOML config file (same keys as these flags; flags and env override it).
    #[arg(long, env = "PETREL_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Where to listen: host:port (TCP), ws/host:port, or a multiaddr. Repeatable.
    /// Default 0.0.0.0:5223. Port 0 picks a free port; the printed address shows it.
    #[arg(long, env = "PETREL_RELAY_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// Public endpoints to put in the printed address, e.g. wss/relay.example.org:443.
    /// Repeatable. Default: the addresses actually bound.
    #[arg(long, env = "PETREL_RELAY_ANNOUNCE", value_delimiter = ',')]
    announce: Vec<String>,
    /// Operations HTTP endpoint (/health, /metrics), or `off`. Default 127.0.0.1:8080.
    #[arg(long, env = "PETREL_RELAY_HTTP")]
    http: Option<String>,
    /// Also serve WebSocket, /health and /metrics on this port (PaaS platforms set PORT).
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    /// Require this password to create queues.
    #[arg(long, env = "PETREL_RELAY_CREATE_PASSWORD", hide_env_values = true)]
    create_password: Option<String>,
    /// Messages a queue may hold before senders get QUOTA. Default 128.
    #[arg(long)]
    queue_quota: Option<u32>,
    /// Seconds an unacknowledged message is kept. Default 1209600 (14 days).
    #[arg(long)]
    message_ttl: Option<u64>,
    /// Established connections in total. Default 10000.
    #[arg(long)]
    max_connections: Option<u32>,
    /// Connections from one IP address. Default 64.
    #[arg(long)]
    max_connections_per_ip: Option<u32>,
    /// Commands per second per session (sustained). Default 2000.
    #[arg(long)]
    rate: Option<u32>,
    /// Commands per session in a burst. Default 4000.
    #[arg(long)]
    burst: Option<u32>,
    /// Seconds a silent session is kept. Default 120.
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Forwarding (2-hop routing): open (default), off, or peers (only to and from
    /// --forward-peer relays).
    #[arg(long, env = "PETREL_RELAY_FORWARDING")]
    forwarding: Option<String>,
    /// A relay (address or key) allowed with --forwarding peers. Repeatable.
    #[arg(
        long = "forward-peer",
        env = "PETREL_RELAY_FORWARD_PEERS",
        value_delimiter = ','
    )]
    forward_peers: Vec<String>,
    /// Also forward to relays with a loopback, private or link-local endpoint. Off by
    /// default, so that clients cannot make a public relay probe its own network; needed
    /// when the relays run on one machine or a LAN.
    #[arg(long)]
    forward_to_private: bool,
    /// TESTING ONLY: first outbox retry delay in milliseconds (default 1000).
    #[arg(long, hide = true)]
    forward_retry_min_ms: Option<u64>,
    /// Log filter (error, warn, info, debug, trace).
    #[arg(long, env = "PETREL_LOG", default_value = "info")]
    log: String,
    /// TESTING ONLY: read the current Unix time from this file instead of the clock.
    #[arg(long, hide = true)]
    dangerous_clock_file: Option<PathBuf>,
}

fn build_config(args: RunArgs) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("petrel-relay-data"));
    let listen_text = if !args.listen.is_empty() {
        args.listen
    } else {
        file.listen
            .unwrap_or_else(|| vec!["0.0.0.0:5223".to_string()])
    };
    let listen = listen_text
        .iter()
        .map(|l| config::parse_listen(l))
        .collect::<Result<Vec<_>, _>>()?;
    let announce_text = if !args.announce.is_empty() {
        args.announce
    } else {
        file.announce.unwrap_or_default()
    };
    let mut announce = announce_text
        .iter()
        .map(|a| config::parse_announce(a))
        .collect::<Result<Vec<_>, _>>()?;
    // On a known PaaS the public endpoint is the platform's HTTPS host name.
    if announce.is_empty() && args.port.is_some() {
        let host = std::env::var("FLY_APP_NAME")
            .ok()
            .map(|app| format!("{app}.fly.dev"))
            .or_else(|| std::env::var("RENDER_EXTERNAL_HOSTNAME").ok());
        if let Some(host) = host {
            announce.push(config::parse_announce(&format!("wss/{host}:443"))?);
        }
    }
    // With PORT set (a PaaS), /health and /metrics are served on that port; a separate
    // listener is opened only when asked for.
    let http = match args.http.or(file.http) {
        Some(text) => config::parse_http(&text)?,
        None if args.port.is_some() => None,
        None => config::parse_http("127.0.0.1:8080")?,
    };
    let mut limits: Limits = file.limits.unwrap_or_default();
    if let Some(v) = args.queue_quota {
        limits.queue_quota = v;
    }
    if let Some(v) = args.message_ttl {
        limits.message_ttl_secs = v;
    }
    if let Some(v) = args.max_connections {
        limits.max_connections = v;
    }
    if let Some(v) = args.max_connections_per_ip {
        limits.max_connections_per_ip = v;
    }
    if let Some(v) = args.rate {
        limits.commands_per_sec = v;
    }
    if let Some(v) = args.burst {
        limits.command_burst = v;
    }
    if let Some(v) = args.idle_timeout {
        limits.idle_timeout_secs = v;
    }
    if let Some(v) = args.forward_retry_min_ms {
        limits.forward_retry_min_ms = v;
    }
    limits.outbox_ttl_secs = limits
        .outbox_ttl_secs
        .min(petrel_federation::limits::FORWARD_MAX_AGE_SECS);
    let forward_peers = if args.forward_peers.is_empty() {
        file.forward_peers.unwrap_or_default()
    } else {
        args.forward_peers
    };
    let forwarding = config::parse_forwarding(
        args.forwarding
            .or(file.forwarding)
            .as_deref()
            .unwrap_or("open"),
        &forward_peers,
    )?;
    let forward_to_private = args.forward_to_private || file.forward_to_private.unwrap_or(false);
    let create_password = args
        .create_password
        .or(file.create_password)
        .filter(|p| !p.is_empty());
    if create_password
        .as_ref()
        .is_some_and(|p| p.len() > petrel_federation::limits::MAX_PASSWORD_LEN)
    {
        anyhow::bail!(
            "--create-password is longer than {} bytes",
            petrel_federation::limits::MAX_PASSWORD_LEN
        );
    }
    Ok(Config {
        data_dir,
        listen,
        announce,
        port: args.port,
        http,
        create_password,
        limits,
        forwarding,
        forward_to_private,
        clock: match args.dangerous_clock_file {
            Some(path) => Clock::File(path),
            None => Clock::System,
        },
    })
}

/// The shutdown signal (SIGTERM or SIGINT), registered at once — before the relay prints
/// its address — so that a signal sent right after the address line drains the relay
/// instead of killing it. Call inside the runtime.
fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn print_address(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let identity = petrel_relay::keys::RelayKeys::load_identity(data_dir)?;
    let path = data_dir.join(petrel_relay::ADDRESS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no address recorded in {}; start the relay once",
            path.display()
        )
    })?;
    let address: petrel_federation::RelayAddress = text
        .trim()
        .parse()
        .with_context(|| format!("{} is damaged", path.display()))?;
    if address.key().0 != identity.verifying_key().to_bytes() {
        anyhow::bail!(
            "{} does not match the identity key in {}; start the relay to rewrite it",
            path.display(),
            data_dir.display()
        );
    }
    println!("relay address: {address}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // libp2p's own info lines (peer IDs, listen addresses) stay out of the default log.
    let directives = format!("{},libp2p_swarm=warn,libp2p_tcp=warn", cli.run.log);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Some(Command::Address { data_dir }) => {
            print_address(cli.run.data_dir.as_deref().unwrap_or(&data_dir))
        }
        None => run(cli.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "petrel-relay: {}",
                petrel_federation::error::describe(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = build_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown = {
        let _enter = runtime.enter();
        shutdown_signal()
    };
    let store_writer = runtime.block_on(petrel_relay::run(config, shutdown, |address| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "relay address: {address}");
        let _ = out.flush();
    }))?;
    // Dropping the runtime drops every task and with them every handle on the store; the
    // writer then makes its last commit and closes the file, and only then do we exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    store_writer.join();
    Ok(())
}
