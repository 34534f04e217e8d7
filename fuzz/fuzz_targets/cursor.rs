//! Cursors, from text and from any two numbers: parse, print, parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| protocol_fuzz::cursor(bytes));
