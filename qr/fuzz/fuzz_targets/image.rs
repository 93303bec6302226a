//! Fuzz target: arbitrary bytes into the image scanner (PNG and JPEG decoding under
//! limits, the detection passes, rqrr, the payload decoder). Nothing may panic; the
//! scanner's own containment of a dependency's panic (`ScanError::DecoderFault`) counts
//! as a crash here, and libFuzzer's panic hook aborts on the panic itself anyway.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_qr::{ImageLimits, Payload, ScanError, scan_image_with_limits};

fuzz_target!(|data: &[u8]| {
    // Smaller than the defaults so that each run stays fast; the limit checks are the
    // same code either way.
    let limits = ImageLimits {
        max_width: 2048,
        max_height: 2048,
        max_alloc: 64 << 20,
        ..ImageLimits::default()
    };
    match scan_image_with_limits(data, &limits) {
        Err(ScanError::DecoderFault { stage }) => panic!("contained panic while {stage}"),
        Ok(decoded) => {
            let link = decoded
                .payload
                .to_link()
                .expect("a scanned payload has a link");
            assert_eq!(
                Payload::from_link(&link).expect("its link decodes"),
                decoded.payload
            );
        }
        Err(_) => {}
    }
});
