#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzzing::document_names(data));
