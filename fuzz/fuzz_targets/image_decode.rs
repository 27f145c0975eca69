//! Fuzz what a request's image goes through before any model: the data URL
//! (`data:image/png;base64,...`), the PNG/JPEG decoder with its pixel limit,
//! and Janus's preprocessing (PIL-bicubic resize, pad, normalise). Any bytes
//! must give Ok or an error, never a panic or an allocation past the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whale::server::request::data_url_bytes;
use whale_engine::vision::image::{decode, Preprocess};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the entry: a data URL's text, or raw image bytes.
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 0 {
        match std::str::from_utf8(rest).ok().map(data_url_bytes) {
            Some(Ok(b)) => b,
            _ => return,
        }
    } else {
        rest.to_vec()
    };
    if let Ok(img) = decode(&bytes) {
        assert_eq!(img.data.len(), img.width * img.height * 3);
        // Preprocess small images only, so each run stays fast.
        if img.width * img.height <= 1 << 16 {
            let px = Preprocess::default().pixel_values(&img);
            assert_eq!(px.len(), 3 * 384 * 384);
        }
    }
});
