//! A client frame in a text message of a JSON session: decode, round trip, validate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Encoding;

fuzz_target!(|bytes: &[u8]| protocol_fuzz::client_frame(Encoding::Json, bytes));
