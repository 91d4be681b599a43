//! The call parser never panics, and what it accepts survives a round trip.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run call_parse` (sanitizers and coverage
//! on the stable toolchain); CI runs every target on its corpus.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(calls) = toolgate::ToolCall::parse_many(text) {
        for c in calls {
            let v = serde_json::to_value(&c).expect("a parsed call serializes");
            let again = toolgate::ToolCall::from_value(v).expect("a serialized call parses");
            assert_eq!(again[0].tool, c.tool);
        }
    }
});
