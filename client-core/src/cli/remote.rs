//! The CLI as a client of `petrel serve`. When a server runs for the home, it holds the
//! store's lock and the relay sessions, so every command becomes a JSON-RPC call
//! (`specs/api.md`): the answer is printed the way the offline commands print theirs.
//! `listen` and `chat` follow the server's notifications over the WebSocket; `sync` has
//! nothing to do (the server is always in sync) beyond waiting for a message when asked.

use crate::{Command, ProfileCommand, RelayCommand, show_invitation};
use anyhow::Context;
use petrel_client::api::{ApiClient, Notification};
use petrel_qr::Purpose;
use serde_json::{Value, json};
use std::time::Duration;

/// Runs `command` through the server `api`; `profile` is `--profile`.
pub(crate) async fn run(
    api: ApiClient,
    profile: Option<String>,
    command: Command,
) -> anyhow::Result<()> {
    let with = |mut params: Value| {
        if let (Some(p), Some(map)) = (&profile, params.as_object_mut()) {
            map.insert("profile".into(), json!(p));
        }
        params
    };
    match command {
        Command::Serve { .. } => anyhow::bail!("petrel serve already runs for this home"),
        Command::Profile(cmd) => profile_command(&api, profile.as_deref(), cmd).await?,
        Command::Relay(cmd) => match cmd {
            RelayCommand::Pin { address } => {
                api.call("relay.pin", with(json!({"address": address.to_string()})))
                    .await?;
                println!("pinned");
            }
            RelayCommand::Unpin { address } => {
                api.call("relay.unpin", with(json!({"address": address.to_string()})))
                    .await?;
                println!("unpinned");
            }
            RelayCommand::List { json } => {
                let rows = api.call("relay.list", with(json!({}))).await?;
                if json {
                    println!("{rows}");
                } else {
                    for r in array(&rows) {
                        println!("{}", r.as_str().unwrap_or_default());
                    }
                }
            }
        },
        Command::Invite {
            png,
            svg,
            alias,
            rekey,
            no_terminal,
        } => {
            let answer = match rekey {
                Some(contact) => {
                    api.call("invite.rekey", with(json!({"contact": contact})))
                        .await?
                }
                None => {
                    api.call("invite.create", with(json!({"alias": alias})))
                        .await?
                }
            };
            let link = text(&answer, "link");
            let decoded = petrel_qr::parse_pasted(&link).context("the server sent a bad link")?;
            let invitation = decoded
                .invitation()
                .context("the server sent a link that is not an invitation")?;
            show_invitation(invitation, png, svg, !no_terminal)?;
            match invitation.purpose {
                Purpose::Connect => eprintln!(
                    "one-time invitation: show it to one contact; petrel serve completes the pairing"
                ),
                Purpose::Rekey => eprintln!(
                    "re-key code: your contact scans it with `petrel connect --image FILE`"
                ),
            }
        }
        Command::Connect { link, image, alias } => {
            let params = match (link, image) {
                (_, Some(path)) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    json!({"image_base64": data_encoding::BASE64.encode(&bytes), "alias": alias})
                }
                (Some(text), None) => json!({"link": text, "alias": alias}),
                (None, None) => anyhow::bail!("give a link or --image FILE"),
            };
            let answer = api.call("connect", with(params)).await?;
            let contact = text(&answer, "contact");
            if answer["rekeyed"].as_bool() == Some(true) {
                println!("re-keying with {contact}: it completes with the next messages");
            } else {
                println!(
                    "invitation answered: contact {contact} ({})",
                    text(&answer, "trust")
                );
                eprintln!("petrel serve completes the connection (`petrel listen` shows it)");
            }
        }
        Command::Contacts { json } => {
            let rows = api.call("contacts.list", with(json!({}))).await?;
            if json {
                println!("{rows}");
            } else if array(&rows).is_empty() {
                println!("no contacts yet: `petrel invite` or `petrel connect LINK`");
            } else {
                for c in array(&rows) {
                    let verified = if c["verified"].as_bool() == Some(true) {
                        ", verified"
                    } else {
                        ""
                    };
                    let name = c["display_name"]
                        .as_str()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default();
                    println!(
                        "{}{name}  {}, {}{verified}",
                        text(c, "alias"),
                        text(c, "state").replace('_', " "),
                        text(c, "trust")
                    );
                }
            }
        }
        Command::Verify { contact, mark } => {
            let answer = api
                .call(
                    "contact.verify",
                    with(json!({"contact": contact, "mark": mark})),
                )
                .await?;
            println!("security code with {contact}:");
            println!("{}", text(&answer, "code"));
            if mark {
                eprintln!("{contact} marked as verified");
            } else {
                eprintln!(
                    "compare it with {contact}'s screen; if it matches, run `petrel verify {contact} --mark`"
                );
            }
        }
        Command::Rotate { contact } => {
            api.call("contact.rotate", with(json!({"contact": contact})))
                .await?;
            println!("rotation started: petrel serve completes it with {contact}'s client");
        }
        Command::Send {
            contact,
            text: body,
        } => {
            let answer = api
                .call(
                    "message.send",
                    with(json!({"contact": contact, "text": body})),
                )
                .await?;
            print_sent(&contact, &text(&answer, "state"));
        }
        Command::History { contact, json } => {
            let rows = api
                .call("message.history", with(json!({"contact": contact})))
                .await?;
            if json {
                println!("{rows}");
            } else {
                for m in array(&rows) {
                    println!("{}", history_line(m));
                }
            }
        }
        Command::Sync { wait } => {
            eprintln!("petrel serve is running: it keeps this home in sync");
            if let Some(secs) = wait {
                let mut sub = api.subscribe().await?;
                let first = tokio::time::timeout(Duration::from_secs(secs), async {
                    while let Some(n) = sub.next_notification().await {
                        if n.method == "event.message" && in_profile(&n, profile.as_deref()) {
                            return Some(n);
                        }
                    }
                    None
                })
                .await;
                match first {
                    Ok(Some(n)) => print_notification(&n),
                    Ok(None) => anyhow::bail!("petrel serve stopped"),
                    Err(_) => eprintln!("nothing new"),
                }
            }
        }
        Command::Listen => {
            let mut sub = api.subscribe().await?;
            eprintln!("listening to petrel serve (Ctrl-C to stop)");
            loop {
                tokio::select! {
                    n = sub.next_notification() => match n {
                        Some(n) if in_profile(&n, profile.as_deref()) => print_notification(&n),
                        Some(_) => {}
                        None => anyhow::bail!("petrel serve stopped"),
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        Command::Chat { contact } => chat(&api, profile, contact).await?,
    }
    Ok(())
}

async fn chat(api: &ApiClient, profile: Option<String>, contact: String) -> anyhow::Result<()> {
    let mut params = json!({"contact": contact});
    if let Some(p) = &profile {
        params["profile"] = json!(p);
    }
    let history = api.call("message.history", params.clone()).await?;
    let rows = array(&history);
    for m in rows.iter().skip(rows.len().saturating_sub(10)) {
        println!("{}", history_line(m));
    }
    eprintln!("chatting with {contact} — type a line and press Enter; Ctrl-D to quit");
    let mut sub = api.subscribe().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.trim().is_empty() && tx.send(line).await.is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    let mut p = params.clone();
                    p["text"] = json!(line);
                    let answer = sub.call("message.send", p).await?;
                    if text(&answer, "state") == "queued" {
                        eprintln!("(queued: your relay did not answer; it is sent when it does)");
                    }
                }
                None => break,
            },
            n = sub.next_notification() => match n {
                Some(n) if in_profile(&n, profile.as_deref())
                    && n.params["contact"].as_str() == Some(contact.as_str()) =>
                {
                    print_notification(&n)
                }
                Some(_) => {}
                None => anyhow::bail!("petrel serve stopped"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

async fn profile_command(
    api: &ApiClient,
    selected: Option<&str>,
    cmd: ProfileCommand,
) -> anyhow::Result<()> {
    let mut with_profile = json!({});
    if let Some(p) = selected {
        with_profile["profile"] = json!(p);
    }
    match cmd {
        ProfileCommand::Create {
            name,
            relays,
            display_name,
            bio,
            require_pinned_forwarding,
            rotate_every,
        } => {
            let relays: Vec<String> = relays.iter().map(ToString::to_string).collect();
            api.call(
                "profile.create",
                json!({
                    "name": name,
                    "relays": relays,
                    "display_name": display_name,
                    "bio": bio,
                    "require_pinned_forwarding": require_pinned_forwarding,
                    "rotation_secs": rotate_every,
                }),
            )
            .await?;
            println!("created profile {name}; petrel serve runs it now");
        }
        ProfileCommand::Edit { display_name, bio } => {
            with_profile["display_name"] = json!(display_name);
            with_profile["bio"] = json!(bio);
            let answer = api.call("profile.edit", with_profile).await?;
            println!(
                "updated the profile; sent to {} contact(s)",
                answer["announced"].as_u64().unwrap_or(0)
            );
        }
        ProfileCommand::Rotation { period } => {
            with_profile["period_secs"] = json!(period);
            api.call("profile.rotation", with_profile).await?;
            println!("queues rotate every {period} s");
        }
        ProfileCommand::List { json } => {
            let rows = api.call("profile.list", json!({})).await?;
            if json {
                println!("{rows}");
            } else if array(&rows).is_empty() {
                println!("no profiles yet: petrel profile create NAME --relay ADDRESS");
            } else {
                for p in array(&rows) {
                    let mark = if p["current"].as_bool() == Some(true) {
                        "*"
                    } else {
                        " "
                    };
                    let relays = p["relays"].as_array().map_or(0, Vec::len);
                    println!("{mark} {}  ({relays} relay(s))", text(p, "name"));
                }
            }
        }
        ProfileCommand::Use { name } => {
            api.call("profile.use", json!({"name": name})).await?;
            println!("now using profile {name}");
        }
        ProfileCommand::Delete { name } => {
            let answer = api.call("profile.delete", json!({"name": name})).await?;
            println!(
                "deleted profile {name} ({} record(s) of its contacts and messages)",
                answer["removed"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(())
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn in_profile(n: &Notification, profile: Option<&str>) -> bool {
    profile.is_none_or(|p| n.params["profile"].as_str() == Some(p))
}

fn print_sent(contact: &str, state: &str) {
    match state {
        "stored" => eprintln!("sent"),
        "at_relay" => {
            eprintln!("sent to your relay: it delivers it when {contact}'s relay answers")
        }
        _ => eprintln!("queued: your relay did not answer; petrel serve sends it when it does"),
    }
}

fn history_line(m: &Value) -> String {
    let from = text(m, "from");
    let mark = if from != "you" {
        ""
    } else if m["delivered"].as_bool() == Some(true) {
        " ✓✓"
    } else if m["sent"].as_bool() == Some(true) {
        " ✓"
    } else {
        " (queued)"
    };
    format!("{from}: {}{mark}", text(m, "text"))
}

/// One notification as the offline `listen` prints events: messages on stdout as
/// `CONTACT: TEXT`, the rest on stderr.
fn print_notification(n: &Notification) {
    let p = &n.params;
    let contact = text(p, "contact");
    match n.method.as_str() {
        "event.message" => println!("{contact}: {}", text(p, "text")),
        "event.contact_connected" => eprintln!("connected with {contact}"),
        "event.receipt" => eprintln!(
            "{contact} received {} message(s)",
            p["seqs"].as_array().map_or(0, Vec::len)
        ),
        "event.rotation_done" => eprintln!("queue rotation with {contact} done"),
        "event.relay_up" => eprintln!("relay up: {}", text(p, "relay")),
        "event.relay_down" => {
            eprintln!("relay down: {} ({})", text(p, "relay"), text(p, "reason"))
        }
        "event.notice" => eprintln!("{}", text(p, "text")),
        "event.lagged" => eprintln!("(some events were missed: the terminal was too slow)"),
        _ => {}
    }
}
