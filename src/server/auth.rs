//! Bearer tokens and what each principal may do.
//!
//! Tokens come from `TOOLGATE_TOKEN` (the agent's: every tool, no
//! approvals) with an optional `TOOLGATE_APPROVER_TOKEN` (a human's), or a
//! TOML file of `[[tokens]]`. No principal may answer its own call's
//! confirmation, whatever its rights. Only SHA-256 digests are kept in memory and compared in
//! constant time, so neither timing nor a memory dump gives a token away.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("tokens file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("no tokens: set TOOLGATE_TOKEN or pass --tokens FILE")]
    None,
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// Tools this principal may call; `None` means every tool.
    pub tools: Option<Vec<String>>,
    /// May list and answer confirmations and read the audit log.
    pub approve: bool,
}

impl Principal {
    pub fn may_call(&self, tool: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x == tool))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    principal: String,
    /// The token itself (keep the file private), or its digest.
    token: Option<String>,
    token_sha256: Option<String>,
    tools: Option<Vec<String>>,
    #[serde(default)]
    approve: bool,
}

/// The accepted tokens.
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

/// Shortest token accepted: guessing must stay out of reach.
pub const MIN_TOKEN_LEN: usize = 16;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// The tokens of `TOOLGATE_TOKEN` (principal `agent`: every tool, no
    /// approvals) and, when given, `TOOLGATE_APPROVER_TOKEN` (principal
    /// `approver`: answers confirmations and reads the audit log, calls no
    /// tool). The two must differ: whoever submits a call never approves it.
    pub fn from_env(agent: &str, approver: Option<&str>) -> Result<Tokens, AuthError> {
        let short = |var: &str| AuthError::File {
            path: var.into(),
            detail: format!("a token needs at least {MIN_TOKEN_LEN} characters"),
        };
        if agent.len() < MIN_TOKEN_LEN {
            return Err(short("TOOLGATE_TOKEN"));
        }
        let mut entries = vec![(
            digest(agent),
            Principal {
                name: "agent".into(),
                tools: None,
                approve: false,
            },
        )];
        if let Some(a) = approver {
            if a.len() < MIN_TOKEN_LEN {
                return Err(short("TOOLGATE_APPROVER_TOKEN"));
            }
            if digest(a) == digest(agent) {
                return Err(AuthError::File {
                    path: "TOOLGATE_APPROVER_TOKEN".into(),
                    detail:
                        "must differ from TOOLGATE_TOKEN: an agent may not approve its own calls"
                            .into(),
                });
            }
            entries.push((
                digest(a),
                Principal {
                    name: "approver".into(),
                    tools: Some(Vec::new()),
                    approve: true,
                },
            ));
        }
        Ok(Tokens { entries })
    }

    pub fn from_toml(text: &str, path: &str) -> Result<Tokens, AuthError> {
        let err = |detail: String| AuthError::File {
            path: path.into(),
            detail,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let mut entries = Vec::new();
        for (i, t) in raw.tokens.into_iter().enumerate() {
            let d = match (&t.token, &t.token_sha256) {
                (Some(tok), None) if tok.len() >= MIN_TOKEN_LEN => digest(tok),
                (Some(_), None) => {
                    return Err(err(format!(
                        "tokens[{i}]: a token needs at least {MIN_TOKEN_LEN} characters"
                    )));
                }
                (None, Some(h)) => {
                    let b = hex::decode(h)
                        .ok()
                        .filter(|b| b.len() == 32)
                        .ok_or_else(|| {
                            err(format!("tokens[{i}].token_sha256: not 64 hex digits"))
                        })?;
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&b);
                    d
                }
                _ => {
                    return Err(err(format!(
                        "tokens[{i}]: give exactly one of token, token_sha256"
                    )));
                }
            };
            if t.principal.trim().is_empty() {
                return Err(err(format!("tokens[{i}].principal is empty")));
            }
            entries.push((
                d,
                Principal {
                    name: t.principal,
                    tools: t.tools,
                    approve: t.approve,
                },
            ));
        }
        if entries.is_empty() {
            return Err(AuthError::None);
        }
        Ok(Tokens { entries })
    }

    /// The principal of an `Authorization` header value, if any. Every
    /// entry is compared, always, in constant time.
    pub fn authenticate(&self, header: Option<&str>) -> Option<Principal> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        let d = digest(token);
        let mut found = None;
        for (e, p) in &self.entries {
            if bool::from(e.ct_eq(&d)) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file() {
        let h = hex::encode(digest("agent-token-0123456789"));
        let t = Tokens::from_toml(
            &format!(
                r#"
[[tokens]]
principal = "operator"
token = "operator-token-0123456789"
approve = true

[[tokens]]
principal = "agent"
token_sha256 = "{h}"
tools = ["run_code"]
"#
            ),
            "t.toml",
        )
        .unwrap();
        let op = t
            .authenticate(Some("Bearer operator-token-0123456789"))
            .unwrap();
        assert!(op.approve && op.may_call("run_command"));
        let ag = t
            .authenticate(Some("Bearer agent-token-0123456789"))
            .unwrap();
        assert_eq!(ag.name, "agent");
        assert!(!ag.approve && ag.may_call("run_code") && !ag.may_call("write_file"));
        assert!(
            t.authenticate(Some("Bearer agent-token-012345678"))
                .is_none()
        );
        assert!(t.authenticate(Some("agent-token-0123456789")).is_none());
        assert!(t.authenticate(None).is_none());
        assert!(Tokens::from_toml("[[tokens]]\nprincipal='x'\ntoken='short'\n", "f").is_err());
        assert!(Tokens::from_toml("tokens = []\n", "f").is_err());
    }

    /// Issue 12: the agent's token from the environment approves nothing;
    /// approvals need a token of their own.
    #[test]
    fn environment_tokens_separate_calling_from_approving() {
        let t = Tokens::from_env("agent-token-0123456789", None).unwrap();
        let ag = t
            .authenticate(Some("Bearer agent-token-0123456789"))
            .unwrap();
        assert_eq!((ag.name.as_str(), ag.approve), ("agent", false));
        assert!(ag.may_call("run_command"));
        let t = Tokens::from_env("agent-token-0123456789", Some("human-token-0123456789")).unwrap();
        let hu = t
            .authenticate(Some("Bearer human-token-0123456789"))
            .unwrap();
        assert_eq!((hu.name.as_str(), hu.approve), ("approver", true));
        assert!(!hu.may_call("run_code"), "the approver calls no tool");
        let same = Tokens::from_env("agent-token-0123456789", Some("agent-token-0123456789"));
        assert!(same.is_err());
        assert!(Tokens::from_env("agent-token-0123456789", Some("short")).is_err());
    }
}
