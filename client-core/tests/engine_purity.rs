//! The engine is sans-IO: it takes time and randomness as inputs and does no I/O of its
//! own. This test reads every file in `src/engine/` and fails if its code (comments and
//! string literals aside) names a runtime, a network stack, the system clock, the file
//! system or a randomness source of its own, or if a file does not open with a `//!`
//! header saying what it is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// Words that must not appear as identifiers in engine code.
const WORDS: &[&str] = &[
    "tokio",
    "libp2p",
    "SystemTime",
    "thread_rng",
    "OsRng",
    "getrandom",
];

/// Paths that must not appear in engine code (whitespace removed first).
const PATHS: &[&str] = &["std::net", "std::fs", "Instant::now", "rand::rng("];

/// Modules of `std` that must not be named in a grouped import (`use std::{fs, ...}`).
const STD_MODULES: &[&str] = &["net", "fs"];

/// `source` without its comments and the contents of its string and char literals (each
/// literal is left as an empty `""`), so that documentation may name what code must not.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match (c, next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            ('r', Some('"' | '#')) if !ident_char(out.chars().last()) => {
                // A raw string: r"…", r#"…"#, …
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            ('"', _) => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            ('\'', Some(_)) => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                let end = if next == Some('\\') {
                    // Past the escaped character, which may itself be a quote.
                    (i + 3..chars.len()).find(|&j| chars[j] == '\'')
                } else if chars.get(i + 2) == Some(&'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        out.push_str("''");
                        i = end + 1;
                    }
                    None => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// What `source` names that engine code must not, one finding per line.
fn violations(source: &str) -> Vec<String> {
    let code = code_only(source);
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        for w in WORDS {
            if words.contains(w) {
                found.push(format!("line {}: `{w}`", n + 1));
            }
        }
    }
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    for p in PATHS {
        if compact.contains(p) {
            found.push(format!("`{p}`"));
        }
    }
    // Grouped imports: `std::{fs, io}`, `std::{net::TcpStream, ...}`.
    let mut rest = compact.as_str();
    while let Some(at) = rest.find("std::{") {
        let group = &rest[at + "std::{".len()..];
        let mut depth = 1;
        let end = group
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(group.len(), |(i, _)| i);
        for item in group[..end].split([',', '{']) {
            let first = item.split("::").next().unwrap_or("");
            if STD_MODULES.contains(&first) {
                found.push(format!("`std::{{{first}…}}`"));
            }
        }
        rest = &group[end..];
    }
    found
}

#[test]
fn the_checker_finds_what_it_must_and_ignores_comments_and_strings() {
    for bad in [
        "use tokio::sync::mpsc;",
        "let t = std::time::SystemTime::now();",
        "let t = std :: time :: Instant :: now();",
        "use std::net::TcpStream;",
        "use std::{io, fs};",
        "use std::{collections::BTreeMap, net::{TcpStream}};",
        "let x: u8 = rand::rng().random();",
        "let mut r = rand::thread_rng();",
        "fn f() { libp2p::swarm(); }",
    ] {
        assert!(!violations(bad).is_empty(), "not found in {bad:?}");
    }
    for fine in [
        "//! Nothing here imports tokio or libp2p.",
        "/// Uses no `std::fs` and no SystemTime.",
        "/* tokio /* nested */ std::net */ let a = 1;",
        r#"let s = "tokio std::fs petrel://x"; let c = '"'; let d = '\''; let e = "\"std::fs";"#,
        r"let q = '\''; let t = '\u{7f}'; // std::net",
        "let s = r#\"thread_rng \"quoted\" std::net\"#;",
        "fn f<'a>(x: &'a str) -> &'a str { x } // Instant::now",
        "use std::{collections::BTreeMap, fmt};",
        "let tokio_like = 1; let net = 2;",
    ] {
        assert_eq!(violations(fine), Vec::<String>::new(), "{fine:?}");
    }
}

#[test]
fn engine_code_takes_time_and_randomness_as_inputs_and_does_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|p| p.ends_with("mod.rs")) && files.len() >= 5,
        "the engine's files were not found in {}",
        dir.display()
    );
    let mut problems = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        if !source.starts_with("//!") {
            problems.push(format!("{name}: does not open with a `//!` header"));
        }
        for v in violations(&source) {
            problems.push(format!("{name}: {v}"));
        }
    }
    assert!(
        problems.is_empty(),
        "the engine must stay sans-IO:\n{}",
        problems.join("\n")
    );
}
