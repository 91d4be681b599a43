//! The egress proxy on any client bytes: no panic, nothing dialled or
//! allowed that the list does not name (`egress::check_input`).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run egress_request`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    toolgate::sandbox::egress::check_input(data);
});
