//! `petrel`: the Petrel command-line client.
//!
//! Today it manages profiles and their pinned relays in the encrypted store; pairing,
//! messaging and rotation arrive with the rest of the client work. The store lives in
//! `--home` (default `~/.petrel`), unlocked with `PETREL_PASSPHRASE` or a prompt.

use anyhow::Context;
use clap::{Parser, Subcommand};
use petrel_client::profile::{Profile, Profiles};
use petrel_client::store::{KdfParams, Store};
use petrel_federation::RelayAddress;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "petrel",
    version,
    about = "Petrel: private messaging with no user identifiers.",
    after_help = "Examples:\n  \
        petrel profile create work --relay petrel://...@203.0.113.5:5223\n  \
        petrel profile list --json\n  \
        petrel relay pin petrel://...@relay.example.org:5223\n\n\
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
            eprintln!("petrel: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = home(cli.home)?;
    let store = open_store(&home)?;
    let profiles = Profiles::new(&store);
    let mut rng = rand::rng();
    match cli.command {
        Command::Profile(ProfileCommand::Create {
            name,
            relays,
            display_name,
            bio,
            require_pinned_forwarding,
        }) => {
            let display_name = display_name.unwrap_or_else(|| name.clone());
            profiles.create(
                &mut rng,
                Profile {
                    name: name.clone(),
                    display_name,
                    bio,
                    relays,
                    require_pinned_forwarding,
                },
            )?;
            println!("created profile {name}");
        }
        Command::Profile(ProfileCommand::List { json }) => {
            let current = profiles.current_name()?;
            let all = profiles.list()?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "display_name": p.display_name,
                            "current": current.as_deref() == Some(p.name.as_str()),
                            "relays": p.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if all.is_empty() {
                println!("no profiles yet: petrel profile create NAME --relay ADDRESS");
            } else {
                for p in all {
                    let mark = if current.as_deref() == Some(p.name.as_str()) {
                        "*"
                    } else {
                        " "
                    };
                    println!("{mark} {}  ({} relay(s))", p.name, p.relays.len());
                }
            }
        }
        Command::Profile(ProfileCommand::Use { name }) => {
            profiles.select(&mut rng, &name)?;
            println!("now using profile {name}");
        }
        Command::Profile(ProfileCommand::Delete { name }) => {
            profiles.delete(&name)?;
            println!("deleted profile {name}");
        }
        Command::Relay(cmd) => {
            let profile = profiles.resolve(cli.profile.as_deref())?;
            match cmd {
                RelayCommand::Pin { address } => {
                    profiles.pin(&mut rng, &profile.name, address)?;
                    println!("pinned to {}", profile.name);
                }
                RelayCommand::Unpin { address } => {
                    profiles.unpin(&mut rng, &profile.name, &address)?;
                    println!("unpinned from {}", profile.name);
                }
                RelayCommand::List { json } => {
                    if json {
                        let rows: Vec<String> =
                            profile.relays.iter().map(ToString::to_string).collect();
                        println!("{}", serde_json::json!(rows));
                    } else {
                        for r in profile.relays {
                            println!("{r}");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
