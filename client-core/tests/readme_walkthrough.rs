//! The README's "Talking to someone" walkthrough, replayed as written on one machine.
//!
//! The test reads the first `sh` block of that section and runs its lines in order in an
//! empty directory: `petrel-relay` lines start real relay processes (with their ports
//! swapped for free ones, the only change), `export PETREL_HOME=…` switches person,
//! `$(cat FILE)` is read from the directory, and every `petrel` line runs the real CLI
//! with the home of the person its comment names (`# Alice…`, `# Bob…`; lines under
//! `# both` run for each). `cargo build` and `export PATH` are what the harness already
//! did; `petrel chat` is interactive and is left out. What each step must print is
//! checked as the README promises it: "connected with …", "Alice: hello", a security code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The first ```sh block after "## Talking to someone".
fn walkthrough() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = &readme[readme.find("## Talking to someone").expect("the section")..];
    let block = &section[section.find("```sh\n").expect("an sh block") + 6..];
    let block = &block[..block.find("```").unwrap()];
    block.lines().map(str::to_string).collect()
}

/// Splits a shell line into words: single and double quotes, `$(cat FILE)` inside double
/// quotes, and a trailing `# comment` (returned separately).
fn words(line: &str, dir: &Path) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => return (out, chars.collect::<String>().trim().to_string()),
            ' ' | '\t' => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                let mut quoted = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    quoted.push(c);
                }
                while let Some(start) = quoted.find("$(cat ") {
                    let end = start + quoted[start..].find(')').expect("closing )");
                    let file = &quoted[start + 6..end];
                    let text = std::fs::read_to_string(dir.join(file))
                        .unwrap_or_else(|e| panic!("$(cat {file}): {e}"));
                    quoted.replace_range(start..=end, text.trim());
                }
                word.push_str(&quoted);
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    (out, String::new())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relay started by a README line; killed at the end.
struct RelayChild(Child);

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn petrel(dir: &Path, home: &str, args: &[String]) -> (String, String) {
    let out = Command::new(common::serve::petrel_bin())
        .current_dir(dir)
        .args(args)
        .env("PETREL_HOME", home)
        .env("PETREL_PASSPHRASE", common::PASSPHRASE)
        .env("PETREL_DANGEROUS_TEST_KDF", "1")
        .env_remove("PETREL_DANGEROUS_CLOCK_SKIP_SECS")
        .env_remove("PETREL_DANGEROUS_CAPTURE_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "README line `petrel {}` failed (home {home}):\n{stdout}\n{stderr}",
        args.join(" ")
    );
    (stdout, stderr)
}

#[test]
fn talking_to_someone_works_as_written_on_one_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut relays = Vec::new();
    let mut ports: HashMap<String, String> = HashMap::new();
    let mut home = String::new();
    let mut homes: Vec<String> = Vec::new();
    let mut both = false;
    let mut said: Vec<(String, String, String)> = Vec::new();
    for line in walkthrough() {
        let (words, comment) = words(&line, dir);
        if words.is_empty() {
            // A comment line: "# both" switches to running each line for everyone.
            both = comment.starts_with("both");
            continue;
        }
        match words[0].as_str() {
            "cargo" => assert_eq!(words[1], "build", "the only cargo line builds"),
            "export" => {
                let (name, value) = words[1].split_once('=').unwrap();
                match name {
                    "PATH" => {}
                    "PETREL_HOME" => {
                        home = value.to_string();
                        if !homes.contains(&home) {
                            homes.push(home.clone());
                        }
                    }
                    other => panic!("the README exports {other}: teach this test"),
                }
            }
            "petrel-relay" => {
                let mut args = words[1..].to_vec();
                for arg in &mut args {
                    if let Some((host, port)) = arg.rsplit_once(':')
                        && host == "127.0.0.1"
                    {
                        let free = ports
                            .entry(port.to_string())
                            .or_insert_with(|| free_port().to_string());
                        *arg = format!("127.0.0.1:{free}");
                    }
                }
                let mut child = Command::new(common::relay_bin())
                    .current_dir(dir)
                    .args(&args)
                    .env_remove("PORT")
                    .env("PETREL_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap();
                let mut first = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut first)
                    .unwrap();
                assert!(
                    first.starts_with("relay address: petrel://"),
                    "`{line}` printed {first:?}"
                );
                relays.push(RelayChild(child));
            }
            "petrel" if words.get(1).map(String::as_str) == Some("chat") => {}
            "petrel" => {
                // The person a line's comment names; else everyone under "# both"; else
                // whoever was exported last.
                let who: Vec<String> = if comment.starts_with("Alice") {
                    vec!["alice-home".to_string()]
                } else if comment.starts_with("Bob") {
                    vec!["bob-home".to_string()]
                } else if both {
                    homes.clone()
                } else {
                    vec![home.clone()]
                };
                for h in who {
                    let (out, err) = petrel(dir, &h, &words[1..]);
                    said.push((h, words[1..].join(" "), format!("{out}{err}")));
                }
            }
            other => panic!("the README runs `{other}`: teach this test"),
        }
    }
    assert_eq!(relays.len(), 2, "two relays");
    assert_eq!(homes, ["bob-home", "alice-home"], "two people");
    let output = |home: &str, command: &str| -> String {
        said.iter()
            .filter(|(h, c, _)| h == home && c.starts_with(command))
            .map(|(_, _, text)| text.clone())
            .collect()
    };
    // The pairing completed on both sides: one of the syncs (or the verify that follows)
    // said so, and both can compute the code.
    let bob_sync = output("bob-home", "sync");
    let alice_sync = output("alice-home", "sync");
    assert!(
        bob_sync.contains("connected with Alice"),
        "Bob's sync: {bob_sync}"
    );
    assert!(
        alice_sync.contains("connected with Bob"),
        "Alice's sync: {alice_sync}"
    );
    assert!(output("alice-home", "send").contains("sent"));
    // "Bob sees 'Alice: hello' on his next sync."
    let (out, err) = petrel(
        dir,
        "bob-home",
        &["sync".to_string(), "--wait".into(), "60".into()],
    );
    assert!(
        format!("{out}{err}").contains("Alice: hello"),
        "Bob's next sync: {out}{err}"
    );
    let code = output("bob-home", "verify");
    let digits = code.chars().filter(char::is_ascii_digit).count();
    assert!(digits >= 60, "a 60-digit security code: {code}");
}

/// Starts `petrel-relay` with `args` in `dir` and returns it with its printed address.
fn relay(dir: &Path, args: &[&str]) -> (RelayChild, String) {
    let mut child = Command::new(common::relay_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("PORT")
        .env("PETREL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let address = first
        .trim()
        .strip_prefix("relay address: ")
        .unwrap()
        .to_string();
    (RelayChild(child), address)
}

/// The mistake the walkthrough's flag prevents: two relays on one machine without
/// `--forward-to-private`. The person connecting is told which relay refused, why and
/// what to change, and the answer waits in the outbox instead of being lost.
#[test]
fn relays_that_refuse_private_destinations_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plain = ["--listen", "127.0.0.1:0", "--http", "off"];
    let (_bob_relay, bob_address) = relay(dir, &[&["--data-dir", "b"][..], &plain].concat());
    let (_alice_relay, alice_address) = relay(dir, &[&["--data-dir", "a"][..], &plain].concat());
    let run = |home: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        petrel(dir, home, &args)
    };
    run(
        "bob-home",
        &["profile", "create", "bob", "--relay", &bob_address],
    );
    let (link, _) = run("bob-home", &["invite", "--no-terminal"]);
    let link = link
        .split_whitespace()
        .find(|w| w.starts_with("PETREL:"))
        .expect("a PETREL: link")
        .to_string();
    run(
        "alice-home",
        &["profile", "create", "alice", "--relay", &alice_address],
    );
    let (out, err) = run("alice-home", &["connect", &link]);
    let said = format!("{out}{err}");
    assert!(said.contains("refused to forward"), "{said}");
    assert!(said.contains("FORWARD_DENIED"), "{said}");
    assert!(said.contains("--forward-to-private"), "{said}");
    assert!(said.contains("waits in the outbox"), "{said}");
    let (status, _) = run("alice-home", &["relay", "status"]);
    assert!(status.contains("outbox: 1 waiting"), "{status}");
}
