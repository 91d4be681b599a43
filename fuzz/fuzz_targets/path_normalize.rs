//! Whatever path an agent sends, normalization either refuses it or yields
//! plain components inside the workspace: no `..`, no separators, no NUL.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parts) = toolgate::workpath::normalize(Path::new("/work/space"), input) {
        for p in &parts {
            assert!(
                !p.is_empty() && p != ".." && p != ".",
                "{input:?} -> {parts:?}"
            );
            assert!(
                !p.contains('/') && !p.contains('\0') && !p.contains('\\'),
                "{input:?} -> {parts:?}"
            );
        }
    }
});
