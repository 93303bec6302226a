//! Known-answer vectors: `specs/vectors/qr/*.txt`, read and checked byte for byte.
//!
//! Each file gives a payload's fields, its link, the QR version it needs, and the frame
//! as annotated hex; or, for an `error-*` file, an input and the error it must produce.
//! The files were written by `write_vectors` below (run it with
//! `PETREL_WRITE_VECTORS=1 cargo test -p petrel-qr --test vectors -- --ignored`) and
//! checked by hand against `specs/qr.md`; the checks here never regenerate them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Vector, vectors_dir};
use petrel_federation::{Host, QueueId, RelayAddress};
use petrel_qr::payload::{CHECKSUM_CONTEXT, checksum};
use petrel_qr::{Invitation, Payload, PayloadError, Purpose, QrCode};

fn payload_of(v: &Vector) -> Payload {
    let relay: RelayAddress = v.field("relay").parse().unwrap();
    match v.field("kind") {
        "relay-address" => Payload::RelayAddress(relay),
        "invitation" => Payload::Invitation(Invitation {
            purpose: match v.field("purpose") {
                "connect" => Purpose::Connect,
                "rekey" => Purpose::Rekey,
                other => panic!("unknown purpose {other}"),
            },
            relay,
            sender_id: QueueId(hex(v.field("sender_id")).try_into().unwrap()),
            dh_key: hex(v.field("dh_key")).try_into().unwrap(),
        }),
        other => panic!("unknown kind {other}"),
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn error_name(e: &PayloadError) -> &'static str {
    match e {
        PayloadError::NotPetrel { .. } => "not-petrel",
        PayloadError::BadCharacter { .. } => "bad-character",
        PayloadError::Truncated { .. } => "truncated",
        PayloadError::ChecksumMismatch => "checksum-mismatch",
        PayloadError::UnsupportedVersion { .. } => "unsupported-version",
        PayloadError::Malformed(_) => "malformed",
        PayloadError::BadRelayAddress(_) => "bad-relay-address",
        _ => "other",
    }
}

fn vector_files() -> Vec<(String, Vector)> {
    let mut files: Vec<_> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, Vector::parse(&std::fs::read_to_string(&p).unwrap()))
        })
        .collect()
}

#[test]
fn payload_vectors_match_byte_for_byte() {
    let files = vector_files();
    let mut checked = 0;
    for (name, v) in files.iter().filter(|(n, _)| !n.starts_with("error-")) {
        let payload = payload_of(v);
        assert_eq!(payload.to_bytes().unwrap(), v.bytes, "{name}: encoding");
        assert_eq!(
            Payload::from_bytes(&v.bytes).unwrap(),
            payload,
            "{name}: decoding"
        );
        assert_eq!(payload.to_link().unwrap(), v.field("link"), "{name}: link");
        assert_eq!(
            Payload::from_link(v.field("link")).unwrap(),
            payload,
            "{name}"
        );
        let code = QrCode::new(&payload).unwrap();
        assert_eq!(
            code.version().to_string(),
            v.field("qr_version"),
            "{name}: QR version"
        );
        // The checksum is what the specification says it is.
        let (covered, check) = v.bytes.split_at(v.bytes.len() - 4);
        let mut expected = [0u8; 4];
        expected.copy_from_slice(&blake3::derive_key(CHECKSUM_CONTEXT, covered)[..4]);
        assert_eq!(check, expected, "{name}: checksum");
        assert_eq!(checksum(covered), expected);
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the payload vectors in {:?}",
        vectors_dir()
    );
}

#[test]
fn error_vectors_give_their_errors() {
    let mut checked = 0;
    for (name, v) in vector_files()
        .iter()
        .filter(|(n, _)| n.starts_with("error-"))
    {
        let result = match v.fields.iter().find(|(k, _)| k == "link") {
            Some((_, link)) => Payload::from_link(link),
            None => Payload::from_bytes(&v.bytes),
        };
        let err = result.expect_err(name);
        assert_eq!(error_name(&err), v.field("expect"), "{name}: {err}");
        checked += 1;
    }
    assert!(checked >= 5);
}

/// Writes the vector files. Ignored: run by hand when the format changes (never silently).
#[test]
#[ignore = "writes specs/vectors/qr; run by hand"]
fn write_vectors() {
    if std::env::var_os("PETREL_WRITE_VECTORS").is_none() {
        return;
    }
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (file, title, payload) in [
        (
            "invitation-connect-ipv4.txt",
            "invitation (connect) through a relay with one IPv4 endpoint; the default invitation",
            common::default_invitation(),
        ),
        (
            "invitation-connect-wss.txt",
            "invitation (connect) through a relay behind a PaaS router (one wss host name)",
            common::paas_invitation(),
        ),
        (
            "invitation-rekey-two-endpoints.txt",
            "invitation (rekey) through a relay with an IPv4 and an IPv6 QUIC endpoint",
            common::samples()[2].1.clone(),
        ),
        (
            "relay-address.txt",
            "relay address with one IPv4 endpoint",
            common::samples()[3].1.clone(),
        ),
        (
            "relay-address-three-endpoints.txt",
            "relay address with tcp IPv4, ws IPv6 and wss host-name endpoints",
            common::samples()[4].1.clone(),
        ),
    ] {
        std::fs::write(dir.join(file), annotate(title, &payload)).unwrap();
    }
    let link = common::default_invitation().to_link().unwrap();
    let bytes = common::default_invitation().to_bytes().unwrap();
    let mut flipped = bytes.clone();
    flipped[40] ^= 0x04;
    let mut newer = vec![0x12, 0x00];
    let check = checksum(&newer);
    newer.extend_from_slice(&check);
    let mut trailing = bytes.clone();
    trailing.push(0);
    let errors: [(&str, &str, String); 6] = [
        (
            "error-truncated-link.txt",
            "truncated",
            format!("link = {}", &link[..link.len() - 20]),
        ),
        (
            "error-checksum-mismatch.txt",
            "checksum-mismatch",
            hex_lines(
                &flipped,
                "the default invitation with bit 2 of byte 40 flipped",
            ),
        ),
        (
            "error-unsupported-version.txt",
            "unsupported-version",
            hex_lines(
                &newer,
                "tag 0x12 (invitation version 2), empty body, valid checksum",
            ),
        ),
        (
            "error-not-petrel.txt",
            "not-petrel",
            "link = https://example.org/login".into(),
        ),
        (
            "error-bad-character.txt",
            "bad-character",
            format!("link = {}1{}", &link[..20], &link[21..]),
        ),
        (
            "error-trailing-byte.txt",
            "malformed",
            hex_lines(
                &trailing,
                "the default invitation and one stray byte after the checksum",
            ),
        ),
    ];
    for (file, expect, input) in errors {
        let text = format!(
            "# Petrel QR error vector: the input below must be refused with `{expect}`.\n\
             # Format: specs/qr.md. Tests: qr/tests/vectors.rs.\nexpect = {expect}\n{input}\n"
        );
        std::fs::write(dir.join(file), text).unwrap();
    }
}

fn hex_lines(bytes: &[u8], note: &str) -> String {
    let mut out = format!("# {note}\n");
    for chunk in bytes.chunks(16) {
        out.push_str(&to_hex(chunk));
        out.push('\n');
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The frame of `payload`, one field per line, each with its meaning.
fn annotate(title: &str, payload: &Payload) -> String {
    let bytes = payload.to_bytes().unwrap();
    let mut lines: Vec<(Vec<u8>, String)> = Vec::new();
    let mut at = 0;
    let mut take = |n: usize, note: String, lines: &mut Vec<(Vec<u8>, String)>| {
        lines.push((bytes[at..at + n].to_vec(), note));
        at += n;
    };
    let tag = bytes[0];
    let kind = if tag >> 4 == 1 {
        "invitation"
    } else {
        "relay address"
    };
    take(
        1,
        format!("tag: kind {} ({kind}), version {}", tag >> 4, tag & 15),
        &mut lines,
    );
    let len_bytes = if bytes[1] < 0x80 { 1 } else { 2 };
    let body_len = bytes.len() - 1 - len_bytes - 4;
    take(
        len_bytes,
        format!("body length: {body_len} (LEB128)"),
        &mut lines,
    );
    let relay = match payload {
        Payload::Invitation(inv) => {
            let p = match inv.purpose {
                Purpose::Connect => "0 = connect",
                _ => "1 = rekey",
            };
            take(1, format!("purpose: {p}"), &mut lines);
            &inv.relay
        }
        Payload::RelayAddress(relay) => relay,
        _ => unreachable!(),
    };
    take(
        32,
        "relay key (Ed25519 public key, 32 bytes)".into(),
        &mut lines,
    );
    take(
        1,
        format!("endpoint count: {}", relay.endpoints().len()),
        &mut lines,
    );
    for (i, e) in relay.endpoints().iter().enumerate() {
        let transport = format!("{:?}", e.transport).to_lowercase();
        let t = e.transport as u8;
        take(
            1,
            format!("endpoint {}: transport {t} = {transport}", i + 1),
            &mut lines,
        );
        match &e.host {
            Host::Ipv4(_) => {
                take(1, "  host: 0 = IPv4".into(), &mut lines);
                take(4, format!("  {}", e.host), &mut lines);
            }
            Host::Ipv6(_) => {
                take(1, "  host: 1 = IPv6".into(), &mut lines);
                take(16, format!("  {}", e.host), &mut lines);
            }
            Host::Name(n) => {
                take(1, "  host: 2 = DNS name".into(), &mut lines);
                take(1, format!("  name length: {}", n.len()), &mut lines);
                take(n.len(), format!("  \"{n}\""), &mut lines);
            }
        }
        let port_len = if e.port < 0x80 {
            1
        } else if e.port < 0x4000 {
            2
        } else {
            3
        };
        take(port_len, format!("  port {} (LEB128)", e.port), &mut lines);
    }
    if let Payload::Invitation(_) = payload {
        take(16, "sender ID (16 bytes)".into(), &mut lines);
        take(
            32,
            "invitation key (X25519 public key, 32 bytes)".into(),
            &mut lines,
        );
    }
    take(
        4,
        format!("checksum: BLAKE3 derive_key(\"{CHECKSUM_CONTEXT}\", all bytes above)[..4]"),
        &mut lines,
    );
    assert_eq!(at, bytes.len(), "annotation covers every byte");

    let mut out = format!(
        "# Petrel QR payload vector: {title}.\n\
         # Format: specs/qr.md. Fields are the inputs; the hex lines are the frame, one field\n\
         # per line (long fields wrap), '#' starts an annotation. Tests: qr/tests/vectors.rs.\n"
    );
    let kind_field = if tag >> 4 == 1 {
        "invitation"
    } else {
        "relay-address"
    };
    out.push_str(&format!("kind = {kind_field}\n"));
    if let Payload::Invitation(inv) = payload {
        let p = if inv.purpose == Purpose::Connect {
            "connect"
        } else {
            "rekey"
        };
        out.push_str(&format!("purpose = {p}\n"));
        out.push_str(&format!("relay = {}\n", inv.relay));
        out.push_str(&format!("sender_id = {}\n", inv.sender_id.to_hex()));
        out.push_str(&format!(
            "dh_key = {}\n",
            to_hex(&inv.dh_key).replace(' ', "")
        ));
    } else {
        out.push_str(&format!("relay = {relay}\n"));
    }
    out.push_str(&format!("link = {}\n", payload.to_link().unwrap()));
    out.push_str(&format!(
        "qr_version = {}\n\n",
        QrCode::new(payload).unwrap().version()
    ));
    for (chunk, note) in lines {
        for (i, part) in chunk.chunks(16).enumerate() {
            let note = if i == 0 {
                note.as_str()
            } else {
                "  (continued)"
            };
            out.push_str(&format!("{:<48} # {note}\n", to_hex(part)));
        }
    }
    out
}
