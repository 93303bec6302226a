//! `petrel`: the Petrel command-line client.
//!
//! Profiles and their pinned relays, invitations by QR code or link, pairing through the
//! relays, messages, receipts, queue rotation and re-keying. The store lives in `--home`
//! (default `~/.petrel`), unlocked with `PETREL_PASSPHRASE` or a prompt.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::commands::Backend;
use petrel_client::api::{ApiClient, ApiConfig};
use petrel_client::serve::local::Local;
use petrel_client::store::{KdfParams, Store};
use petrel_federation::RelayAddress;
use petrel_qr::{Invitation, Payload as QrPayload, QrCode, TerminalStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "petrel",
    version,
    about = "Petrel: private messaging with no user identifiers.",
    long_about = "Petrel: private messaging with no user identifiers.\n\n\
        Each profile is a separate identity with its own relays. Contacts pair by QR code:\n\
        one side shows `petrel invite`, the other runs `petrel connect --image FILE` (or\n\
        pastes the link), then both run `petrel sync`. After that, `send`, `sync`, `listen`\n\
        and `chat` carry messages end-to-end encrypted, and queues rotate by themselves.",
    after_help = "Examples:\n  \
        petrel profile create work --relay petrel://...@203.0.113.5:5223\n  \
        petrel invite --png invite.png          # show it to your contact\n  \
        petrel connect --image invite.png --alias bob\n  \
        petrel sync --wait 30                   # complete the pairing\n  \
        petrel send bob 'hello'\n  \
        petrel chat bob\n\n\
        The passphrase comes from PETREL_PASSPHRASE, or is asked for on the terminal."
)]
struct Cli {
    /// Where the encrypted store lives.
    #[arg(long, env = "PETREL_HOME", global = true)]
    home: Option<PathBuf>,
    /// The profile to act on (default: the current one, see `profile use`).
    #[arg(long, global = true)]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, select and delete profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Pin, list and unpin the current profile's relays.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Make a one-time invitation: prints a link and a QR code to show a new contact.
    Invite {
        /// Also write the QR code as a PNG image.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
        /// Also write the QR code as an SVG image.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// The name to give whoever answers it (default: the display name they send).
        #[arg(long)]
        alias: Option<String>,
        /// Instead of a new contact, re-key this existing contact: they scan it with
        /// `petrel connect`, and fresh key material enters the connection.
        #[arg(long, value_name = "CONTACT")]
        rekey: Option<String>,
        /// Do not print the QR code on the terminal (the link is still printed).
        #[arg(long)]
        no_terminal: bool,
    },
    /// Answer an invitation (or a contact's re-key code), from a link or a QR image.
    Connect {
        /// The link (PETREL:...), as pasted.
        #[arg(required_unless_present = "image", conflicts_with = "image")]
        link: Option<String>,
        /// A photo of the QR code on your contact's screen (PNG or JPEG). The contact is
        /// recorded as "scanned"; for a code that reached you through another app, paste
        /// its link instead (recorded as "pasted link").
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
        /// The name to give the contact (default: the display name they send).
        #[arg(long)]
        alias: Option<String>,
    },
    /// List the profile's contacts.
    Contacts {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the security code to compare with a contact in person.
    Verify {
        /// The contact.
        contact: String,
        /// Record that the codes matched.
        #[arg(long)]
        mark: bool,
    },
    /// Move a contact's inbound queue to a new one now (it also happens periodically).
    Rotate {
        /// The contact.
        contact: String,
    },
    /// Send a text message.
    Send {
        /// The contact.
        contact: String,
        /// The text.
        text: String,
    },
    /// Talk to the relays once: finish handshakes, send the outbox, print new messages as
    /// `CONTACT: TEXT` lines, then exit.
    Sync {
        /// If nothing new arrived, wait up to this many seconds for the first news (a message,
        /// an answer to an invitation, a receipt), then read on.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Stay connected and print messages as they arrive (Ctrl-C to stop). With `petrel
    /// serve` running, it follows the server's events; otherwise it locks the home while
    /// it runs (use `chat` to send at the same time).
    Listen,
    /// Run the client engine for this home: every profile stays connected to its relays,
    /// messages arrive the moment they are sent, the outbox drains as soon as a relay
    /// answers, queues rotate on schedule, and a local JSON-RPC API (specs/api.md) lets
    /// other programs use the profiles. While it runs, the other `petrel` commands go
    /// through it. SIGTERM or Ctrl-C stops it cleanly.
    #[command(after_help = "Examples:\n  \
        petrel serve                           # API on a free loopback port\n  \
        petrel serve --listen 127.0.0.1:7070\n\n\
        It prints the API's URL and the path of the bearer token file (mode 0600), and\n\
        writes both to HOME/serve.json for other programs to find.")]
    Serve {
        /// Where the API listens; a non-loopback address also needs `--allow-remote`.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Accept a non-loopback `--listen` address (anyone who can reach it still needs
        /// the token).
        #[arg(long)]
        allow_remote: bool,
    },
    /// Talk with one contact: lines you type are sent, messages arriving are printed.
    Chat {
        /// The contact.
        contact: String,
    },
    /// Show the conversation with a contact.
    History {
        /// The contact.
        contact: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// Create a profile with one or more pinned relays.
    Create {
        /// A local name for the profile (never sent anywhere).
        name: String,
        /// A relay address to pin (repeatable; the first is preferred).
        #[arg(long = "relay", required = true)]
        relays: Vec<RelayAddress>,
        /// The name contacts see (default: the profile name).
        #[arg(long)]
        display_name: Option<String>,
        /// A short bio, sent only to accepted contacts.
        #[arg(long)]
        bio: Option<String>,
        /// Contacts must reach this profile through one of its pinned relays.
        #[arg(long)]
        require_pinned_forwarding: bool,
        /// How often inbound queues rotate, e.g. 7d, 12h, 30m, 90s.
        #[arg(long, value_name = "PERIOD", default_value = "7d", value_parser = parse_period)]
        rotate_every: u64,
    },
    /// Change the display name or bio, and send them to every contact.
    Edit {
        /// The new display name.
        #[arg(long)]
        display_name: Option<String>,
        /// The new bio ("" removes it).
        #[arg(long)]
        bio: Option<String>,
    },
    /// Change how often the profile's inbound queues rotate, e.g. 7d, 12h, 30m, 90s.
    Rotation {
        /// The period.
        #[arg(value_parser = parse_period)]
        period: u64,
    },
    /// List profiles (the current one is marked with *).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make a profile the current one.
    Use {
        /// The profile.
        name: String,
    },
    /// Delete a profile.
    Delete {
        /// The profile.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// Pin a relay to the profile.
    Pin {
        /// The relay address, as its operator printed it.
        address: RelayAddress,
    },
    /// List the profile's pinned relays.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Unpin a relay (the last one cannot be unpinned).
    Unpin {
        /// The relay address (only its key is compared).
        address: RelayAddress,
    },
    /// Show which relays answer (the pinned ones and those of contacts' queues) and what
    /// waits in the outbox. Without `petrel serve`, it connects to them first.
    Status {
        /// Machine-readable output (the API's `relay.status` result).
        #[arg(long)]
        json: bool,
    },
}

fn home(cli_home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(h) = cli_home {
        return Ok(h);
    }
    let base =
        std::env::var_os("HOME").context("no --home given, PETREL_HOME unset and HOME unset")?;
    Ok(PathBuf::from(base).join(".petrel"))
}

fn passphrase() -> anyhow::Result<zeroize::Zeroizing<String>> {
    if let Ok(p) = std::env::var("PETREL_PASSPHRASE") {
        return Ok(zeroize::Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no passphrase: set PETREL_PASSPHRASE or run petrel in a terminal");
    }
    let p =
        rpassword::prompt_password("Petrel passphrase: ").context("cannot read the passphrase")?;
    Ok(zeroize::Zeroizing::new(p))
}

fn open_store(home: &std::path::Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    // Tests create stores with cheap Argon2id costs; real stores never should.
    let kdf = if std::env::var_os("PETREL_DANGEROUS_TEST_KDF").is_some() {
        KdfParams::DANGEROUS_TESTING
    } else {
        KdfParams::DEFAULT
    };
    let pass = passphrase()?;
    Ok(Store::open(
        &home.join("petrel.redb"),
        pass.as_bytes(),
        kdf,
        &mut rand::rng(),
    )?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("petrel: {}", petrel_federation::error::describe(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A period like `7d`, `12h`, `30m`, `90s` or plain seconds.
fn parse_period(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a period: use e.g. 7d, 12h, 30m or 90s"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("unknown unit in `{text}`: use s, m, h, d or w")),
    };
    let secs = n
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long"))?;
    if secs == 0 {
        return Err("the period must be at least one second".into());
    }
    Ok(secs)
}

/// Seconds added to the application clock: tests of periodic rotation move it forward;
/// relays still see the real time.
fn clock_skip_secs() -> u64 {
    std::env::var("PETREL_DANGEROUS_CLOCK_SKIP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = home(cli.home)?;
    if let Command::Serve {
        listen,
        allow_remote,
    } = cli.command
    {
        return serve(&home, listen, allow_remote);
    }
    let rt = runtime()?;
    if home.join(petrel_client::api::SERVE_FILE).exists()
        && let Some(api) = rt.block_on(ApiClient::discover(&home))?
    {
        return rt.block_on(cli::commands::run(
            Backend::Remote(api),
            cli.profile,
            cli.command,
        ));
    }
    let store = open_store(&home)?;
    rt.block_on(async {
        let local = Local::start(store, clock_skip_secs())?;
        cli::commands::run(Backend::Local(local), cli.profile, cli.command).await
    })
}

/// `petrel serve`: refuses to start next to a live server of the same home (the store's
/// lock would refuse too, with a less helpful message).
fn serve(
    home: &std::path::Path,
    listen: std::net::SocketAddr,
    allow_remote: bool,
) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        if let Some(api) = ApiClient::discover(home).await? {
            anyhow::bail!(
                "petrel serve already runs for {} (API at http://{}/api/v1); stop it first",
                home.display(),
                api.addr()
            );
        }
        let store = open_store(home)?;
        let config = ApiConfig {
            listen,
            allow_remote,
            ..ApiConfig::default()
        };
        let shutdown = shutdown_signal();
        petrel_client::serve::run(
            home,
            store,
            config,
            clock_skip_secs(),
            |addr, token| {
                println!(
                    "petrel serve: API at http://{addr}/api/v1, token in {}",
                    token.display()
                );
                eprintln!("serving {} (Ctrl-C to stop)", home.display());
            },
            shutdown,
        )
        .await?;
        eprintln!("petrel serve stopped");
        Ok(())
    })
}

/// SIGTERM or SIGINT, registered before the API's address is printed so that a signal
/// sent right after it stops the server cleanly.
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

fn show_invitation(
    invitation: &Invitation,
    png: Option<PathBuf>,
    svg: Option<PathBuf>,
    terminal: bool,
) -> anyhow::Result<()> {
    let payload = QrPayload::Invitation(invitation.clone());
    let code = QrCode::new(&payload).context("cannot encode the invitation as a QR code")?;
    if terminal {
        println!(
            "{}",
            code.to_terminal(if std::io::stdout().is_terminal() {
                TerminalStyle::default()
            } else {
                TerminalStyle::PlainDarkOnLight
            })
        );
    }
    if let Some(path) = png {
        let bytes = code.to_png(8).context("cannot render the PNG")?;
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("QR code written to {}", path.display());
    }
    if let Some(path) = svg {
        std::fs::write(&path, code.to_svg(8))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("QR code written to {}", path.display());
    }
    println!("{}", payload.to_link().context("cannot encode the link")?);
    Ok(())
}
