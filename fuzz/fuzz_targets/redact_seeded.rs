//! A secret seeded anywhere in arbitrary text never survives the filter,
//! and filtering is idempotent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static R: OnceLock<(toolgate::filter::Redactor, Vec<(String, String)>)> = OnceLock::new();
    let (r, secrets) = R.get_or_init(|| {
        let specs = toolgate::filter::rule_specs().expect("rules load");
        let r = toolgate::filter::Redactor::new().expect("filter builds");
        // Each example with its secret's part: the longest token the filter
        // removes from the example on its own (`registry.example` in a
        // `docker login` line stays; the password must go in any context).
        let seeds = specs
            .iter()
            .flat_map(|s| s.examples.iter().cloned())
            .map(|secret| {
                let alone = r.redact(&secret).0;
                let core = secret
                    .split(|c: char| c.is_whitespace() || "=:'\"".contains(c))
                    .filter(|t| !t.is_empty() && !alone.contains(t))
                    .max_by_key(|t| t.len())
                    .expect("every example is redacted on its own")
                    .to_string();
                (secret, core)
            })
            .collect();
        (r, seeds)
    });
    if data.len() < 2 {
        return;
    }
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let (secret, core) = &secrets[data[0] as usize % secrets.len()];
    let core = core.as_str();
    let mut at = (data[1] as usize * text.len()) / 256;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
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
