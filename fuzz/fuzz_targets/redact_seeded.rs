//! A secret seeded anywhere in arbitrary text never survives the filter,
//! and filtering is idempotent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static R: OnceLock<(toolgate::filter::Redactor, Vec<String>)> = OnceLock::new();
    let (r, secrets) = R.get_or_init(|| {
        let specs = toolgate::filter::rule_specs().expect("rules load");
        let seeds = specs
            .iter()
            .flat_map(|s| s.examples.iter().cloned())
            .collect();
        (
            toolgate::filter::Redactor::new().expect("filter builds"),
            seeds,
        )
    });
    if data.len() < 2 {
        return;
    }
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let secret = &secrets[data[0] as usize % secrets.len()];
    let mut at = (data[1] as usize * text.len()) / 256;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    // The secret's most distinctive token must be gone.
    let core = secret
        .split(|c: char| c.is_whitespace() || "=:'\"".contains(c))
        .max_by_key(|t| t.len())
        .unwrap_or(secret);
    // The property is about the seeded copy. A copy the fuzzer wrote into
    // the text itself may be glued into a longer word (`sASIA…`), where the
    // pattern rules deliberately do not match (word boundaries keep them
    // off base64 and hashes); such inputs prove nothing here.
    if text.contains(core) {
        return;
    }
    let seeded = format!("{}\n{secret}\n{}", &text[..at], &text[at..]);
    let (out, _) = r.redact(&seeded);
    assert!(
        !out.contains(core),
        "seeded secret survived: {secret:?} in {seeded:?}"
    );
    assert_eq!(r.redact(&out).0, out, "not idempotent");
});
