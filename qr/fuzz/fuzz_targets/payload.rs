//! Fuzz target: arbitrary bytes into the payload decoder, and (when they are UTF-8) into
//! the text parser. Nothing may panic; whatever decodes must be canonical (re-encode to
//! the same bytes) and survive a trip through its link.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_qr::{Payload, parse_pasted};

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = Payload::from_bytes(data) {
        let bytes = payload.to_bytes().expect("a decoded payload encodes");
        assert_eq!(bytes, data, "decoded payloads are canonical");
        let link = payload.to_link().expect("a decoded payload has a link");
        assert_eq!(
            Payload::from_link(&link).expect("its link decodes"),
            payload
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(decoded) = parse_pasted(text) {
            let link = decoded
                .payload
                .to_link()
                .expect("a parsed payload has a link");
            assert_eq!(
                Payload::from_link(&link).expect("its link decodes"),
                decoded.payload
            );
        }
    }
});
