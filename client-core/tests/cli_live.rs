//! `petrel listen` and `petrel chat` as long-running processes against two real relays:
//! messages pushed by the relay are printed as they arrive, lines typed into `chat` are
//! sent, and both exit cleanly (Ctrl-C for `listen`, end of input for `chat`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Relay;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Failure guard only: nothing waits for it to pass.
const GUARD: Duration = Duration::from_secs(60);

fn petrel(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_petrel"));
    cmd.arg("--home")
        .arg(home)
        .env("PETREL_PASSPHRASE", "pw")
        .env("PETREL_DANGEROUS_TEST_KDF", "1")
        .env_remove("PETREL_HOME");
    cmd
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out: Output = petrel(home).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "petrel {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `petrel` whose stdout lines arrive on a channel.
struct Live {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Live {
    fn start(home: &Path, args: &[&str]) -> Live {
        let mut child = petrel(home)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Live { child, lines }
    }

    /// Waits for the line `expected` (other lines before it are skipped).
    fn expect_line(&self, expected: &str) {
        loop {
            match self.lines.recv_timeout(GUARD) {
                Ok(line) if line == expected => return,
                Ok(_) => continue,
                Err(e) => panic!("no line {expected:?}: {e}"),
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pair(root: &Path, a1: &str, a2: &str) -> (PathBuf, PathBuf) {
    let (alice, bob) = (root.join("alice"), root.join("bob"));
    ok(
        &alice,
        &[
            "profile",
            "create",
            "a",
            "--relay",
            a1,
            "--display-name",
            "Alice",
        ],
    );
    ok(
        &bob,
        &[
            "profile",
            "create",
            "b",
            "--relay",
            a2,
            "--display-name",
            "Bob",
        ],
    );
    let invite = ok(&bob, &["invite", "--no-terminal"]);
    let link = invite.lines().last().unwrap().trim().to_string();
    ok(&alice, &["connect", &link]);
    ok(&bob, &["sync", "--wait", "30"]);
    ok(&alice, &["sync", "--wait", "30"]);
    (alice, bob)
}

#[test]
fn listen_and_chat_print_and_send_as_messages_come() {
    let dir = tempfile::tempdir().unwrap();
    let r1 = Relay::start(&dir.path().join("r1"), "127.0.0.1:0");
    let r2 = Relay::start(&dir.path().join("r2"), "127.0.0.1:0");
    let (alice, bob) = pair(dir.path(), &r1.address, &r2.address);

    // Bob listens; Alice sends twice; both lines appear as they are pushed.
    let mut listen = Live::start(&bob, &["listen"]);
    ok(&alice, &["send", "Bob", "live one"]);
    listen.expect_line("Alice: live one");
    ok(&alice, &["send", "Bob", "live two"]);
    listen.expect_line("Alice: live two");
    // Ctrl-C stops it cleanly.
    let pid = listen.child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = listen.child.wait().unwrap();
    assert!(status.success(), "listen exited with {status}");
    // What listen printed was stored: a sync shows nothing again.
    let again = ok(&bob, &["sync"]);
    assert!(again.is_empty(), "{again}");

    // Alice chats: a typed line is sent, Bob's reply is printed.
    let mut chat = Live::start(&alice, &["chat", "Bob"]);
    let mut stdin = chat.child.stdin.take().unwrap();
    writeln!(stdin, "typed in chat").unwrap();
    stdin.flush().unwrap();
    let got = ok(&bob, &["sync", "--wait", "30"]);
    assert_eq!(got.lines().collect::<Vec<_>>(), ["Alice: typed in chat"]);
    ok(&bob, &["send", "Alice", "reply to chat"]);
    chat.expect_line("Bob: reply to chat");
    // End of input ends the chat.
    drop(stdin);
    let status = chat.child.wait().unwrap();
    assert!(status.success(), "chat exited with {status}");

    let history = ok(&alice, &["history", "Bob"]);
    assert!(history.contains("you: typed in chat"), "{history}");
    assert!(history.contains("Bob: reply to chat"), "{history}");
}
