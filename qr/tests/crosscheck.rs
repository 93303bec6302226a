//! Cross-checks with independent QR implementations: Debian's `zbarimg` (zbar-tools)
//! must read the PNGs Petrel renders as exactly the payload's link, and Petrel must read
//! the PNGs `qrencode` makes from a Petrel link.
//!
//! `.ci/run` installs both tools (`apt-get install -y zbar-tools qrencode`). Where a tool
//! is missing the test prints a notice and skips rather than fail, so a developer
//! without them can still run the suite; CI always has them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use petrel_qr::{Provenance, QrCode, scan_image};
use std::path::PathBuf;
use std::process::Command;

/// Prints a notice that stays visible in `cargo test` output: the test harness captures
/// `println!`, not writes to the stderr handle itself.
fn notice(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Whether `tool` can be run; prints the skip notice if not.
fn have(tool: &str, package: &str) -> bool {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => true,
        Err(_) => {
            notice(&format!(
                "SKIPPED: `{tool}` is not installed (apt-get install {package}); \
                 cross-check not run"
            ));
            false
        }
    }
}

/// A scratch file path unique to this process and test.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("petrel-qr-{}-{name}", std::process::id()))
}

#[test]
fn zbarimg_reads_petrel_pngs_as_the_link() {
    if !have("zbarimg", "zbar-tools") {
        return;
    }
    for (i, (name, payload)) in common::samples().into_iter().enumerate() {
        let code = QrCode::new(&payload).unwrap();
        for module_px in [3, 8] {
            let path = scratch(&format!("zbar-{i}-{module_px}.png"));
            std::fs::write(&path, code.to_png(module_px).unwrap()).unwrap();
            let out = Command::new("zbarimg")
                .args(["--raw", "-q"])
                .arg(&path)
                .output()
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            assert!(out.status.success(), "{name}: zbarimg failed: {out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                text.trim_end(),
                payload.to_link().unwrap(),
                "{name} at {module_px} px"
            );
        }
    }
}

#[test]
fn zbarimg_reads_petrel_svgs_where_it_can_read_svg() {
    if !have("zbarimg", "zbar-tools") {
        return;
    }
    let payload = common::default_invitation();
    let path = scratch("zbar.svg");
    std::fs::write(&path, QrCode::new(&payload).unwrap().to_svg(8)).unwrap();
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    // zbarimg exits 4 when it read the image but found no code: that is a failure. Any
    // other error means its ImageMagick has no SVG reader (that comes with
    // libmagickcore-6.q16-6-extra), so the check cannot run here.
    match out.status.code() {
        Some(0) => {
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(text.trim_end(), payload.to_link().unwrap());
        }
        Some(4) => panic!("zbarimg read the SVG but found no QR code"),
        _ => notice(&format!(
            "SKIPPED: this zbarimg cannot read SVG: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[test]
fn petrel_reads_qrencode_pngs() {
    if !have("qrencode", "qrencode") {
        return;
    }
    for (i, (name, payload)) in common::samples().into_iter().enumerate() {
        let link = payload.to_link().unwrap();
        // Every error-correction level, upper case (alphanumeric mode) and lower case
        // (byte mode, as a user retyping the link might produce), 8-bit mode forced.
        let variants: [(&str, &[&str], String); 6] = [
            ("L", &[], link.clone()),
            ("M", &[], link.clone()),
            ("Q", &[], link.clone()),
            ("H", &[], link.clone()),
            ("M", &[], link.to_lowercase()),
            ("M", &["-8"], link.clone()),
        ];
        for (j, (level, extra, text)) in variants.into_iter().enumerate() {
            let path = scratch(&format!("qrencode-{i}-{j}.png"));
            let status = Command::new("qrencode")
                .args(["-l", level, "-s", "4", "-m", "4", "-o"])
                .arg(&path)
                .args(extra)
                .arg(&text)
                .status()
                .unwrap();
            assert!(status.success(), "{name}: qrencode failed");
            let png = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            let decoded =
                scan_image(&png).unwrap_or_else(|e| panic!("{name} level {level} {extra:?}: {e}"));
            assert_eq!(decoded.payload, payload, "{name}");
            assert_eq!(decoded.provenance, Provenance::Scanned);
        }
    }
}

#[test]
fn petrel_and_qrencode_agree_on_the_symbol_size() {
    if !have("qrencode", "qrencode") {
        return;
    }
    // qrencode also picks the smallest version at level M: the same link must give a
    // symbol of the same width (1 pixel per module, no margin).
    for (name, payload) in common::samples() {
        let path = scratch(&format!(
            "size-{}.png",
            name.replace(' ', "-").replace(',', "")
        ));
        let link = payload.to_link().unwrap();
        let status = Command::new("qrencode")
            .args(["-l", "M", "-s", "1", "-m", "0", "-o"])
            .arg(&path)
            .arg(&link)
            .status()
            .unwrap();
        assert!(status.success());
        let (width, _) = image::image_dimensions(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            width as usize,
            QrCode::new(&payload).unwrap().width(),
            "{name}"
        );
    }
}
