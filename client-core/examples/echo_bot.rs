//! A bot on the local API: it answers every message with `echo: TEXT`.
//!
//! Run `petrel serve` for the bot's home first, then
//!
//! ```sh
//! cargo run -p petrel-client --example echo_bot -- --home ~/.petrel-bot
//! ```
//!
//! It finds the server through `HOME/serve.json` and the token file, follows the
//! notifications over the WebSocket (`specs/api.md`), and sends each answer on the same
//! socket. Everything it does, any program that can read the token file can do.

use petrel_client::api::ApiClient;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

fn home() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--home" {
            return args.next().map(PathBuf::from);
        }
    }
    std::env::var_os("PETREL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".petrel")))
}

async fn run() -> Result<(), String> {
    let home = home().ok_or("give --home DIR (or set PETREL_HOME)")?;
    let api = ApiClient::discover(&home)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no petrel serve runs for {}: start it first",
                home.display()
            )
        })?;
    let mut socket = api.subscribe().await.map_err(|e| e.to_string())?;
    // The ready line a supervisor (or a test) waits for.
    println!("echo bot: listening on http://{}", api.addr());
    while let Some(n) = socket.next_notification().await {
        if n.method != "event.message" {
            continue;
        }
        let (Some(profile), Some(contact), Some(text)) = (
            n.params["profile"].as_str(),
            n.params["contact"].as_str(),
            n.params["text"].as_str(),
        ) else {
            continue;
        };
        let answer =
            json!({"profile": profile, "contact": contact, "text": format!("echo: {text}")});
        if let Err(e) = socket.call("message.send", answer).await {
            eprintln!("echo bot: cannot answer {contact}: {e}");
        }
    }
    Err("petrel serve closed the connection".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo bot: {e}");
            ExitCode::FAILURE
        }
    }
}
