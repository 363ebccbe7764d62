//! Any byte string through the pickle scan (plain pickles, legacy torch files, zip
//! checkpoints): it must return, never panic, and whatever it accepts must account for
//! its streams inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trojanscan::provenance::pickle::{scan_pickle_bytes, PickleScanOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = scan_pickle_bytes(data, &PickleScanOptions::default()) else {
        return;
    };
    assert!(!report.streams.is_empty(), "a scan without streams");
    for s in &report.streams {
        let end = s.offset.checked_add(s.len).expect("stream end overflows");
        assert!(end <= data.len() as u64, "stream `{}` outside the input", s.member);
        assert!(s.opcodes >= 1 && s.opcodes <= s.len);
    }
    if report.container == "pickle" {
        // A plain file is pickles and storage records back to back, to its last byte.
        let covered: u64 = report.streams.iter().map(|s| s.len).sum::<u64>()
            + report.storage.as_ref().map_or(0, |st| st.len);
        assert_eq!(covered, data.len() as u64, "bytes left unaccounted for");
    }
});
