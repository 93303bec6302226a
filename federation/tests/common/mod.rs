//! Shared test helpers: the annotated-hex vector format and a tiny independent encoder.
//!
//! Vector files (`specs/vectors/*.hex`) are text: `#` starts a comment, `## vector: NAME`
//! starts a vector, every other token is hex. The [`Layout`] builder writes the bytes the
//! spec describes field by field, without postcard, so a test can check that the real
//! encoder produces exactly the documented layout.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs/vectors")
}

/// Parses an annotated hex file into named vectors.
pub fn parse_hex_file(text: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("## vector:") {
            current = Some(name.trim().to_string());
            out.insert(name.trim().to_string(), Vec::new());
            continue;
        }
        let code = line.split('#').next().unwrap_or("");
        for token in code.split_whitespace() {
            let name = current.as_ref().expect("hex before the first `## vector:`");
            let bytes = hex::decode(token).unwrap_or_else(|e| panic!("bad hex {token}: {e}"));
            out.get_mut(name).unwrap().extend(bytes);
        }
    }
    out
}

/// Builds an annotated byte layout.
#[derive(Default, Clone)]
pub struct Layout {
    pub rows: Vec<(Vec<u8>, String)>,
}

impl Layout {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn raw(mut self, bytes: &[u8], note: &str) -> Self {
        self.rows.push((bytes.to_vec(), note.to_string()));
        self
    }
    pub fn byte(self, b: u8, note: &str) -> Self {
        self.raw(&[b], note)
    }
    pub fn varint(self, mut v: u64, note: &str) -> Self {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        self.raw(&out, note)
    }
    /// Length-prefixed bytes: varint length, then the bytes.
    pub fn bytes(self, data: &[u8], note: &str) -> Self {
        self.varint(data.len() as u64, &format!("{note}: length {}", data.len()))
            .raw(data, note)
    }
    pub fn extend(mut self, other: Layout) -> Self {
        self.rows.extend(other.rows);
        self
    }
    pub fn body(&self) -> Vec<u8> {
        self.rows.iter().flat_map(|(b, _)| b.clone()).collect()
    }
    /// Wraps the layout as a frame: u32 BE length, version byte, then the rows.
    pub fn framed(&self, version: u8) -> Layout {
        let len = self.body().len() + 1;
        Layout::new()
            .raw(
                &(len as u32).to_be_bytes(),
                &format!("frame length = {len} (u32 big-endian)"),
            )
            .byte(version, "wire version")
            .extend(self.clone())
    }
    /// Renders the rows as annotated hex; long fields are wrapped 32 bytes a line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (bytes, note) in &self.rows {
            if bytes.is_empty() {
                s.push_str(&format!("              # {note} (empty)\n"));
                continue;
            }
            let chunks: Vec<&[u8]> = bytes.chunks(32).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let hex = chunk
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                if i == 0 {
                    s.push_str(&format!("{hex:<12}  # {note}\n"));
                } else {
                    s.push_str(&format!("{hex}\n"));
                }
            }
        }
        s
    }
}

/// Either checks `file` against the rendered vectors or, with `PETREL_WRITE_VECTORS=1`,
/// writes it. Returns the parsed vectors from disk.
pub fn check_or_write(
    file: &str,
    header: &str,
    vectors: &[(&str, Layout)],
) -> BTreeMap<String, Vec<u8>> {
    let path = vectors_dir().join(file);
    if std::env::var_os("PETREL_WRITE_VECTORS").is_some() {
        let mut text = String::new();
        for line in header.lines() {
            text.push_str(&format!("# {line}\n"));
        }
        for (name, layout) in vectors {
            text.push_str(&format!("\n## vector: {name}\n"));
            text.push_str(&layout.render());
        }
        std::fs::create_dir_all(vectors_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with PETREL_WRITE_VECTORS=1 to create)",
            path.display()
        )
    });
    let parsed = parse_hex_file(&text);
    assert_eq!(parsed.len(), vectors.len(), "{file}: vector count");
    for (name, layout) in vectors {
        let on_disk = parsed
            .get(*name)
            .unwrap_or_else(|| panic!("{file}: missing vector {name}"));
        assert_eq!(
            hex::encode(on_disk),
            hex::encode(layout.body()),
            "{file}/{name}: the file differs from the layout the spec describes"
        );
    }
    parsed
}

/// Parses `name = hex` lines (crypto vectors).
pub fn parse_kv_file(text: &str) -> BTreeMap<String, Vec<u8>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("`name = hex`");
            (
                k.trim().to_string(),
                hex::decode(v.trim()).expect("hex value"),
            )
        })
        .collect()
}
