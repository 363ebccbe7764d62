//! Any byte string through the validating GGUF reader: it must return, never panic, and
//! whatever it accepts must describe tensors that lie inside the input.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use trojanscan::model::gguf::{GgufFile, GgufLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::read(&mut Cursor::new(data), &GgufLimits::default()) else {
        return;
    };
    for t in &file.tensors {
        let end = t.offset.checked_add(t.len).expect("validated tensor end overflows");
        assert!(end <= data.len() as u64, "validated tensor `{}` outside the file", t.name);
        let bytes = file
            .tensor_bytes(&mut Cursor::new(data), t)
            .expect("validated tensor unreadable");
        assert_eq!(bytes.len() as u64, t.len);
    }
});
