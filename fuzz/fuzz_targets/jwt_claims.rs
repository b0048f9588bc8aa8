#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzzing::jwt_claims(data));
