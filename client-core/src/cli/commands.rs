//! Every `petrel` command, as calls of the API's methods (`specs/api.md`). When
//! `petrel serve` runs for the home, it holds the store's lock and the relay sessions, and
//! the calls go to it (JSON-RPC over HTTP, its notifications over the WebSocket). When it
//! does not, the same methods run in this process over the same engine
//! (`petrel_client::serve::local`) for as long as the command lasts: a command that
//! changed something waits until the engine has settled (the message is at a relay, the
//! rotation is set up, the queues are read), printing what happened meanwhile. One
//! implementation either way; the output differs only where the server finishes what a
//! one-shot command leaves to the next `petrel sync`.
//!
//! ```text
//!  petrel CMD ──► Backend::Remote(ApiClient) ──HTTP/WS──► petrel serve ──► engines
//!             └─► Backend::Local(Local) ───────in process──────────────► engines
//! ```

use crate::{Command, ProfileCommand, RelayCommand, show_invitation};
use anyhow::Context;
use petrel_client::api::{ApiClient, Notification, Subscription};
use petrel_client::serve::local::{Events, Local};
use petrel_qr::Purpose;
use serde_json::{Value, json};
use std::time::Duration;

/// Where the commands' calls go.
pub(crate) enum Backend {
    /// A running `petrel serve`.
    Remote(ApiClient),
    /// This process, for this command.
    Local(Local),
}

impl Backend {
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        match self {
            Backend::Remote(api) => Ok(api.call(method, params).await?),
            Backend::Local(local) => local
                .call(method, params)
                .await
                .map_err(|e| anyhow::anyhow!(e.message)),
        }
    }

    fn served(&self) -> bool {
        matches!(self, Backend::Remote(_))
    }

    async fn subscribe(&self) -> anyhow::Result<Feed> {
        Ok(match self {
            Backend::Remote(api) => Feed::Remote(Box::new(api.subscribe().await?)),
            Backend::Local(local) => Feed::Local(local.subscribe()),
        })
    }
}

/// Notifications, from the server or from this process's engines.
enum Feed {
    Remote(Box<Subscription>),
    Local(Events),
}

impl Feed {
    async fn next(&mut self) -> Option<Notification> {
        match self {
            Feed::Remote(sub) => sub.next_notification().await,
            Feed::Local(events) => events.next().await,
        }
    }

    /// A notification already there (in-process events only).
    fn try_next(&mut self) -> Option<Notification> {
        match self {
            Feed::Remote(_) => None,
            Feed::Local(events) => events.try_next(),
        }
    }
}

/// What a one-shot command saw happen.
#[derive(Default)]
struct Seen {
    /// News from contacts: messages, completed connections, receipts, rotations,
    /// re-keys and other notices (what ends `sync --wait`).
    received: usize,
    /// Notices already printed: a one-shot command that opens its sessions more than once
    /// would otherwise repeat the same explanation.
    notices: std::collections::HashSet<String>,
}

impl Seen {
    fn show(&mut self, n: &Notification, profile: Option<&str>) {
        if !in_profile(n, profile) {
            return;
        }
        if matches!(
            n.method.as_str(),
            "event.message"
                | "event.contact_connected"
                | "event.receipt"
                | "event.rotation_done"
                | "event.notice"
        ) {
            self.received += 1;
        }
        if n.method == "event.notice" && !self.notices.insert(text(&n.params, "text")) {
            return;
        }
        // A one-shot command's sessions come and go with it: not news.
        if !matches!(n.method.as_str(), "event.relay_up" | "event.relay_down") {
            print_notification(n);
        }
    }
}

/// Runs `command` on `backend`; `profile` is `--profile`.
pub(crate) async fn run(
    backend: Backend,
    profile: Option<String>,
    command: Command,
) -> anyhow::Result<()> {
    let Backend::Local(local) = &backend else {
        return match command {
            Command::Chat { contact } => {
                let mut feed = backend.subscribe().await?;
                chat(&backend, &mut feed, profile, contact).await
            }
            other => execute(&backend, profile, other).await,
        };
    };
    // Subscribed before the command, so that nothing it causes is missed.
    let mut feed = Feed::Local(local.subscribe());
    let mut seen = Seen::default();
    let p = profile.as_deref();
    let result = match command {
        Command::Sync { wait } => sync(local, &mut feed, &mut seen, p, wait).await,
        Command::Listen => {
            local
                .sync(p)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            eprintln!("listening (Ctrl-C to stop)");
            loop {
                tokio::select! {
                    n = feed.next() => match n {
                        Some(n) if in_profile(&n, p) => print_notification(&n),
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            Ok(())
        }
        Command::Chat { contact } => {
            local
                .sync(p)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            chat(&backend, &mut feed, profile.clone(), contact).await
        }
        connect @ Command::Connect { .. } if is_rekey_code(&connect) => {
            // A re-key code names the contact's newest queue, which a rotation may have
            // announced in a message not read yet: read first.
            local
                .sync(p)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            settle(local, &mut feed, &mut seen, p).await;
            execute(&backend, profile.clone(), connect).await
        }
        status @ Command::Relay(RelayCommand::Status { .. }) => {
            // Which relays answer is known once the sessions were tried.
            local
                .sync(p)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            settle(local, &mut feed, &mut seen, p).await;
            execute(&backend, profile.clone(), status).await
        }
        other => execute(&backend, profile.clone(), other).await,
    };
    settle(local, &mut feed, &mut seen, p).await;
    local.stop().await;
    while let Some(n) = feed.try_next() {
        seen.show(&n, p);
    }
    result
}

/// Whether `petrel connect` was given a re-key code (an unreadable one is left to the
/// `connect` method to refuse).
fn is_rekey_code(command: &Command) -> bool {
    let Command::Connect { link, image, .. } = command else {
        return false;
    };
    let decoded = match (link, image) {
        (_, Some(path)) => std::fs::read(path)
            .ok()
            .and_then(|bytes| petrel_qr::scan_image(&bytes).ok()),
        (Some(text), None) => petrel_qr::parse_pasted(text).ok(),
        (None, None) => None,
    };
    decoded
        .as_ref()
        .and_then(|d| d.invitation())
        .is_some_and(|i| i.purpose == Purpose::Rekey)
}

/// Waits until the in-process engines are settled, printing what happens meanwhile.
async fn settle(local: &Local, feed: &mut Feed, seen: &mut Seen, profile: Option<&str>) {
    let settled = local.settle();
    tokio::pin!(settled);
    loop {
        tokio::select! {
            () = &mut settled => break,
            n = feed.next() => match n {
                Some(n) => seen.show(&n, profile),
                None => break,
            },
        }
    }
    while let Some(n) = feed.try_next() {
        seen.show(&n, profile);
    }
}

/// `petrel sync` without a server: reads every queue until it is empty (handshakes
/// completed, messages shown, receipts sent), sends what waits in the outbox, and runs
/// what is due (rotation, expiry). With `wait` and nothing new, waits that long for the
/// first message, then reads on.
async fn sync(
    local: &Local,
    feed: &mut Feed,
    seen: &mut Seen,
    profile: Option<&str>,
    wait: Option<u64>,
) -> anyhow::Result<()> {
    local
        .sync(profile)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    settle(local, feed, seen, profile).await;
    if seen.received == 0
        && let Some(secs) = wait
    {
        let first = tokio::time::timeout(Duration::from_secs(secs), async {
            while let Some(n) = feed.next().await {
                seen.show(&n, profile);
                if seen.received > 0 {
                    break;
                }
            }
        })
        .await;
        if first.is_ok() {
            settle(local, feed, seen, profile).await;
        }
    }
    let mut params = json!({});
    if let Some(p) = profile {
        params["profile"] = json!(p);
    }
    let status = local
        .call("relay.status", params)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let waiting = status["outbox"]["waiting"].as_u64().unwrap_or(0);
    if waiting > 0 {
        eprintln!("{waiting} message(s) wait in the outbox");
    }
    if seen.received == 0 {
        eprintln!("nothing new");
    }
    Ok(())
}

async fn execute(
    backend: &Backend,
    profile: Option<String>,
    command: Command,
) -> anyhow::Result<()> {
    let api = backend;
    let with = |mut params: Value| {
        if let (Some(p), Some(map)) = (&profile, params.as_object_mut()) {
            map.insert("profile".into(), json!(p));
        }
        params
    };
    match command {
        Command::Serve { .. } => anyhow::bail!("petrel serve already runs for this home"),
        Command::Profile(cmd) => profile_command(api, profile.as_deref(), cmd).await?,
        Command::Relay(cmd) => match cmd {
            RelayCommand::Status { json } => {
                let status = api.call("relay.status", with(json!({}))).await?;
                if json {
                    println!("{status}");
                } else {
                    for r in array(&status["relays"]) {
                        let state = if r["up"] == true { "up  " } else { "down" };
                        println!("{state}  {}", text(r, "relay"));
                    }
                    println!(
                        "outbox: {} waiting for a relay, {} at your relay to forward",
                        status["outbox"]["waiting"].as_u64().unwrap_or(0),
                        status["outbox"]["at_relay"].as_u64().unwrap_or(0)
                    );
                }
            }
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
                Purpose::Connect if api.served() => eprintln!(
                    "one-time invitation: show it to one contact; petrel serve completes the pairing"
                ),
                Purpose::Connect => eprintln!(
                    "one-time invitation: show it to one contact, then run `petrel sync --wait 60`"
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
                let trust_text = text(&answer, "trust");
                let trust = trust_label(&trust_text);
                let delivered = answer["delivered"].as_bool() == Some(true);
                if delivered || api.served() {
                    println!("invitation answered: contact \"{contact}\" ({trust})");
                } else {
                    println!(
                        "invitation scanned: contact \"{contact}\" ({trust}); the answer waits \
                         in the outbox (why: above)"
                    );
                }
                if api.served() {
                    eprintln!("petrel serve completes the connection (`petrel listen` shows it)");
                } else if delivered {
                    eprintln!("run `petrel sync --wait 60` to complete the connection");
                } else {
                    eprintln!(
                        "`petrel sync` (or `petrel serve`) sends it once your relay can; \
                         `petrel relay status` shows what waits"
                    );
                }
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
                        trust_label(&text(c, "trust"))
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
            if api.served() {
                println!("rotation started: petrel serve completes it with {contact}'s client");
            } else {
                println!("rotation started: it completes when {contact} next syncs");
            }
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
            print_sent(&contact, &text(&answer, "state"), api.served());
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
                    while let Some(n) = sub.next().await {
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
                    n = sub.next() => match n {
                        Some(n) if in_profile(&n, profile.as_deref()) => print_notification(&n),
                        Some(_) => {}
                        None => anyhow::bail!("petrel serve stopped"),
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        Command::Chat { .. } => anyhow::bail!("chat runs in `run`"),
    }
    Ok(())
}

async fn chat(
    api: &Backend,
    sub: &mut Feed,
    profile: Option<String>,
    contact: String,
) -> anyhow::Result<()> {
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
                    let answer = api.call("message.send", p).await?;
                    if text(&answer, "state") == "queued" {
                        eprintln!("(queued: your relay did not answer; it is sent when it does)");
                    }
                }
                None => break,
            },
            n = sub.next() => match n {
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
    api: &Backend,
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
            if api.served() {
                println!("created profile {name}; petrel serve runs it now");
            } else {
                println!("created profile {name}");
            }
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

/// How a contact's code arrived, in words (the API's `trust` values are single words).
fn trust_label(trust: &str) -> &str {
    match trust {
        "pasted" => "pasted link",
        other => other,
    }
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

fn print_sent(contact: &str, state: &str, served: bool) {
    match state {
        "stored" => eprintln!("sent"),
        "at_relay" => {
            eprintln!("sent to your relay: it delivers it when {contact}'s relay answers")
        }
        _ if served => {
            eprintln!("queued: your relay did not answer; petrel serve sends it when it does")
        }
        _ => eprintln!(
            "queued: your relay did not answer; the next `petrel sync` (or `petrel serve`) \
             sends it"
        ),
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
