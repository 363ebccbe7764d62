//! Any byte string through the `safetensors` crate's header validation, which trojanscan
//! relies on for safetensors files: it must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safetensors::SafeTensors;

fuzz_target!(|data: &[u8]| {
    let _ = SafeTensors::read_metadata(data);
    if let Ok(st) = SafeTensors::deserialize(data) {
        for (_name, view) in st.tensors() {
            let _ = view.data().len();
        }
    }
});
