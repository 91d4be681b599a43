//! Reading what a request asks for: query strings and call bodies into
//! typed values, with every rejection a message for a 400. Pure (no I/O,
//! no executor), so the fuzz target `http_request` runs exactly what the
//! handlers run.

use crate::ToolCall;
use crate::audit;
use crate::call::CallError;
use serde::Deserialize;
use std::time::Duration;

/// The longest `?wait` a service allows unless configured lower.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Most audit entries one `GET /v1/audit` returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// Why a request cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The query string (400 `invalid_query`).
    #[error("{0}")]
    Query(String),
    /// The body is not UTF-8 (400 `invalid_call`).
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The body is not a valid call.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// `POST /v1/calls`, read.
#[derive(Debug)]
pub struct CallRequest {
    pub dry_run: bool,
    /// How long to hold the answer for a call that needs confirmation.
    pub wait: Option<Duration>,
    pub call: ToolCall,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallQuery {
    #[serde(default)]
    dry_run: bool,
    wait: Option<f64>,
}

/// Reads a call request (unknown query parameters are refused, not
/// ignored: a misspelt `dry_run` must not run the call): its query (`dry_run`, `wait` in seconds, at most
/// `max_wait`) and its body (a call in any accepted shape). The query is
/// judged first, so a bad query is reported whatever the body.
pub fn call_request(
    query: Option<&str>,
    body: &[u8],
    max_wait: Duration,
) -> Result<CallRequest, RequestError> {
    let q: CallQuery = parse_query(query)?;
    let wait = match q.wait {
        None => None,
        // NaN, infinities and negatives fail this test too.
        Some(w) if (0.0..=max_wait.as_secs_f64()).contains(&w) => Some(Duration::from_secs_f64(w)),
        Some(_) => {
            return Err(RequestError::Query(format!(
                "wait is a number of seconds, 0 to {}",
                max_wait.as_secs()
            )));
        }
    };
    let text = std::str::from_utf8(body).map_err(|_| RequestError::NotUtf8)?;
    let call = ToolCall::parse(text)?;
    Ok(CallRequest {
        dry_run: q.dry_run,
        wait,
        call,
    })
}

/// `GET /v1/audit`, read: the filter and how many of the newest to return.
#[derive(Debug)]
pub struct AuditRequest {
    pub query: audit::Query,
    pub limit: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    // u64: the query decoder has no u128.
    since_ms: Option<u64>,
    tool: Option<String>,
    decision: Option<String>,
    principal: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

/// Reads an audit query. `limit` defaults to 100, at most
/// [`MAX_AUDIT_LIMIT`]; a `decision` other than allow/ask/deny is refused
/// (it could never match, which would read as "no such entries").
pub fn audit_request(query: Option<&str>) -> Result<AuditRequest, RequestError> {
    let q: AuditQuery = parse_query(query)?;
    if q.limit.is_some_and(|l| l > MAX_AUDIT_LIMIT) {
        return Err(RequestError::Query(format!(
            "limit is at most {MAX_AUDIT_LIMIT}"
        )));
    }
    if let Some(d) = &q.decision
        && !matches!(d.as_str(), "allow" | "ask" | "deny")
    {
        return Err(RequestError::Query(
            "decision is one of allow, ask, deny".into(),
        ));
    }
    Ok(AuditRequest {
        query: audit::Query {
            since_ms: q.since_ms.map(u128::from),
            tool: q.tool,
            decision: q.decision,
            principal: q.principal,
            kind: q.kind,
        },
        limit: q.limit.unwrap_or(100),
    })
}

fn parse_query<T: for<'de> Deserialize<'de>>(query: Option<&str>) -> Result<T, RequestError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| RequestError::Query(format!("query string: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &[u8] = br#"{"tool":"read_file","args":{"path":"a.txt"}}"#;

    #[test]
    fn wait_must_be_a_finite_number_within_the_bound() {
        let max = Duration::from_secs(10);
        for bad in [
            "wait=NaN",
            "wait=inf",
            "wait=-1",
            "wait=10.5",
            "wait=x",
            "wait=1e400",
        ] {
            assert!(
                matches!(
                    call_request(Some(bad), CALL, max),
                    Err(RequestError::Query(_))
                ),
                "{bad} accepted"
            );
        }
        let r = call_request(Some("wait=2.5&dry_run=true"), CALL, max).unwrap();
        assert_eq!(r.wait, Some(Duration::from_millis(2500)));
        assert!(r.dry_run);
    }

    #[test]
    fn a_misspelt_or_unknown_parameter_is_refused_not_ignored() {
        // `dryrun=true` ignored would run the call for real.
        let e = call_request(Some("dryrun=true"), CALL, MAX_WAIT).unwrap_err();
        assert!(e.to_string().contains("dryrun"), "{e}");
        assert!(audit_request(Some("sinc_ms=1")).is_err());
    }

    #[test]
    fn the_query_is_judged_before_the_body() {
        let e = call_request(Some("wait=NaN"), b"\xff", MAX_WAIT).unwrap_err();
        assert!(matches!(e, RequestError::Query(_)));
        let e = call_request(None, b"\xff", MAX_WAIT).unwrap_err();
        assert!(matches!(e, RequestError::NotUtf8));
    }

    #[test]
    fn audit_limit_and_decision_are_checked() {
        assert!(audit_request(Some("limit=1001")).is_err());
        let r = audit_request(Some("limit=1000&since_ms=1")).unwrap();
        assert_eq!(r.limit, MAX_AUDIT_LIMIT);
        assert_eq!(r.query.since_ms, Some(1));
        assert_eq!(audit_request(None).unwrap().limit, 100);
        assert!(audit_request(Some("decision=maybe")).is_err());
        assert!(audit_request(Some("since_ms=-1")).is_err());
    }
}
