//! Any byte string as a `tokenizer.json`, through the validation and the `tokenizers`
//! library: it must return, never panic (libfuzzer-sys aborts on a panic even when
//! trojanscan catches it, so a file that gets past validation and then panics the library
//! is reported), and a tokenizer it accepts must encode and decode without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trojanscan::model::tokenizer::{decode, encode, from_json_bytes};

const TEXTS: &[&str] = &["", " ", "Hello, world! 123", "ﬁ 𝔾 ड़ी 日本語 é́", "a\u{0}b\t\n  c"];

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = from_json_bytes(data) else {
        return;
    };
    for text in TEXTS {
        for special in [false, true] {
            if let Ok(ids) = encode(&tok, text, special) {
                let _ = decode(&tok, &ids, special);
            }
        }
    }
    let ids: Vec<u32> = (0..64).collect();
    let _ = decode(&tok, &ids, false);
});
