//! The `petrel` CLI as a user runs it: profiles and pinned relays in an encrypted home.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

const R1: &str = "petrel://v4scezty67cu7iiuy5citmjvp6ywetkyeznssllrxw5xjfzahxja@203.0.113.5:5223";

fn relay(seed: u8) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes();
    let addr = petrel_federation::RelayAddress::new(
        petrel_federation::RelayKey(key),
        vec!["198.51.100.7:5223".parse().unwrap()],
    )
    .unwrap();
    addr.to_string()
}

fn petrel(home: &std::path::Path, pass: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env("PETREL_PASSPHRASE", pass)
        .env("PETREL_DANGEROUS_TEST_KDF", "1")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn profiles_and_relays_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let r2 = relay(2);
    ok(petrel(
        home,
        "pw",
        &["profile", "create", "work", "--relay", R1],
    ));
    ok(petrel(
        home,
        "pw",
        &[
            "profile",
            "create",
            "home",
            "--relay",
            &r2,
            "--display-name",
            "Me",
        ],
    ));
    let list = ok(petrel(home, "pw", &["profile", "list"]));
    assert!(list.contains("* work") && list.contains("  home"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(petrel(home, "pw", &["profile", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["name"], "home");
    assert_eq!(json[0]["display_name"], "Me");
    assert_eq!(json[1]["current"], true);

    ok(petrel(home, "pw", &["profile", "use", "home"]));
    ok(petrel(home, "pw", &["relay", "pin", R1]));
    let relays: Vec<String> =
        serde_json::from_str(&ok(petrel(home, "pw", &["relay", "list", "--json"]))).unwrap();
    assert_eq!(relays, vec![r2.clone(), R1.to_string()]);
    ok(petrel(home, "pw", &["relay", "unpin", &r2]));
    assert_eq!(ok(petrel(home, "pw", &["relay", "list"])).trim(), R1);
    // --profile acts on another profile without switching.
    assert_eq!(
        ok(petrel(home, "pw", &["--profile", "work", "relay", "list"])).trim(),
        R1
    );

    // Clear errors.
    assert!(
        fails(petrel(home, "pw", &["relay", "unpin", R1])).contains("at least one pinned relay")
    );
    assert!(fails(petrel(home, "pw", &["relay", "pin", R1])).contains("already pinned"));
    assert!(
        fails(petrel(
            home,
            "pw",
            &["profile", "create", "work", "--relay", R1]
        ))
        .contains("already exists")
    );
    assert!(fails(petrel(home, "pw", &["profile", "use", "nobody"])).contains("no profile named"));
    assert!(
        fails(petrel(
            home,
            "pw",
            &["relay", "pin", "petrel://nonsense@1.2.3.4:5"]
        ))
        .contains("relay key")
    );
    assert!(fails(petrel(home, "wrong", &["profile", "list"])).contains("wrong passphrase"));

    ok(petrel(home, "pw", &["profile", "delete", "home"]));
    let err = fails(petrel(home, "pw", &["relay", "list"]));
    assert!(err.contains("no profile selected"), "{err}");
    assert!(ok(petrel(home, "pw", &["profile", "list"])).contains("work"));

    // Nothing readable on disk.
    let bytes = std::fs::read(home.join("petrel.redb")).unwrap();
    for needle in [b"work".as_slice(), b"198.51.100.7", b"v4scezty67cu7"] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
}

#[test]
fn no_passphrase_without_a_terminal_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("--home")
        .arg(dir.path())
        .args(["profile", "list"])
        .env_remove("PETREL_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(fails(out).contains("PETREL_PASSPHRASE"));
}

/// A relay address on loopback where nothing listens.
fn dead_relay() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
        .verifying_key()
        .to_bytes();
    petrel_federation::RelayAddress::new(
        petrel_federation::RelayKey(key),
        vec![format!("127.0.0.1:{port}").parse().unwrap()],
    )
    .unwrap()
    .to_string()
}

#[test]
fn client_commands_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let dead = dead_relay();
    ok(petrel(
        home,
        "pw",
        &["profile", "create", "me", "--relay", &dead],
    ));

    let err = fails(petrel(home, "pw", &["connect", "PETREL:NOTACODE"]));
    assert!(err.contains("not a Petrel link"), "{err}");

    let junk = home.join("junk.png");
    std::fs::write(&junk, b"this is not an image").unwrap();
    let err = fails(petrel(
        home,
        "pw",
        &["connect", "--image", junk.to_str().unwrap()],
    ));
    assert!(err.contains("no Petrel code in"), "{err}");
    let err = fails(petrel(
        home,
        "pw",
        &["connect", "--image", "/nonexistent/x.png"],
    ));
    assert!(err.contains("cannot read"), "{err}");

    // A relay-address code is not an invitation.
    let address: petrel_federation::RelayAddress = relay(4).parse().unwrap();
    let link = petrel_qr::Payload::RelayAddress(address).to_link().unwrap();
    let err = fails(petrel(home, "pw", &["connect", &link]));
    assert!(err.contains("relay address, not an invitation"), "{err}");

    for args in [
        &["send", "nobody", "hi"][..],
        &["verify", "nobody"],
        &["rotate", "nobody"],
        &["history", "nobody"],
        &["invite", "--rekey", "nobody"],
    ] {
        let err = fails(petrel(home, "pw", args));
        assert!(err.contains("no contact named `nobody`"), "{args:?}: {err}");
    }

    // The profile's relay does not answer: a clear error naming it, not a hang or panic.
    let err = fails(petrel(home, "pw", &["invite", "--no-terminal"]));
    assert!(err.contains("unreachable"), "{err}");

    let out = ok(petrel(home, "pw", &["contacts", "--json"]));
    assert_eq!(out.trim(), "[]");

    for bad in ["0", "5x", "d", "99999999999999999999w"] {
        let err = fails(petrel(
            home,
            "pw",
            &[
                "profile",
                "create",
                "p2",
                "--relay",
                R1,
                "--rotate-every",
                bad,
            ],
        ));
        assert!(err.contains("rotate-every"), "{bad}: {err}");
    }
    let long = "n".repeat(65);
    let err = fails(petrel(
        home,
        "pw",
        &[
            "profile",
            "create",
            "p3",
            "--relay",
            R1,
            "--display-name",
            &long,
        ],
    ));
    assert!(err.contains("display names are 1 to 64 bytes"), "{err}");
    ok(petrel(home, "pw", &["profile", "rotation", "12h"]));
    let out = ok(petrel(home, "pw", &["profile", "list", "--json"]));
    assert!(out.contains("\"rotation_secs\":43200"), "{out}");
}
