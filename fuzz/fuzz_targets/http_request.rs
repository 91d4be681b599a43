//! What the HTTP handlers read from a request — the query string and the
//! call body of `POST /v1/calls`, the filter of `GET /v1/audit` — never
//! panics; what is accepted is within the documented bounds; a call the
//! service accepts is one the policy can judge.
//! Input: the query string, a newline, the body.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run http_request` (stable toolchain).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;
use toolgate::server::request;

fuzz_target!(|data: &[u8]| {
    static POLICY: OnceLock<toolgate::Policy> = OnceLock::new();
    let (query, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // A query string arrives as bytes; the router hands it on as text.
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let max = Duration::from_secs(60);
    if let Ok(r) = request::call_request(Some(query), body, max) {
        assert!(
            r.wait.is_none_or(|w| w <= max),
            "wait {:?} over {max:?}",
            r.wait
        );
        let id = &r.call.id;
        assert!(
            (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
            "accepted call id {id:?} breaks the id rule"
        );
        let policy = POLICY.get_or_init(toolgate::Policy::builtin_default);
        let v = policy.evaluate(&r.call, std::path::Path::new("/nonexistent-fuzz-ws"));
        assert!(
            v.decision == toolgate::Decision::Allow || !v.reasons.is_empty(),
            "{:?} without a reason",
            v.decision
        );
    }
    if let Ok(a) = request::audit_request(Some(query)) {
        assert!(a.limit <= request::MAX_AUDIT_LIMIT);
        assert!(
            a.query
                .decision
                .as_deref()
                .is_none_or(|d| ["allow", "ask", "deny"].contains(&d))
        );
    }
});
