//! User, group, client message, gateway and conversation ids, and ULIDs: parse, print, parse
//! back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| protocol_fuzz::ids(bytes));
