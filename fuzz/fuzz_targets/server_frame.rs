//! A server frame as a client library decodes it, tried as JSON and as MessagePack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| protocol_fuzz::server_frame(bytes));
