//! The maintenance subcommands: `doctor`, `audit`, `redact`, `runtimes`.
//! Each parses its flags, calls the library and prints.

use super::args::{AuditCmd, RuntimesCmd};
use super::output::{ok_or, print_json, tokio_rt};
use std::io::Write;
use toolgate::sandbox::wasm::manage as runtimes;
use toolgate::{BackendKind, Error, Policy, exit};

pub fn doctor(
    policy: &str,
    json: bool,
    require: &[String],
    only: &[String],
) -> anyhow::Result<i32> {
    let policy = Policy::load(policy).map_err(Error::from)?;
    let kinds = |names: &[String]| -> Result<Vec<BackendKind>, Error> {
        names
            .iter()
            .map(|b| {
                BackendKind::parse(b).ok_or_else(|| {
                    Error::Usage(format!("unknown backend `{b}` (wasm, docker, native)"))
                })
            })
            .collect()
    };
    let (require, only) = (kinds(require)?, kinds(only)?);
    let report = tokio_rt()?.block_on(toolgate::doctor::run_on(&policy, &only))?;
    let missing: Vec<&str> = require
        .iter()
        .map(|k| k.as_str())
        .filter(|b| report.unavailable(b))
        .collect();
    let ok = report.ok() && missing.is_empty();
    if json {
        print_json(&serde_json::json!({"ok": ok, "rows": report.rows}))?;
    } else {
        print!("{}", report.table());
    }
    for b in &missing {
        eprintln!("toolgate: doctor: backend {b} is required but unavailable");
    }
    if !report.ok() {
        eprintln!("toolgate: doctor: a limit the policy promises does not bind (FAILED rows)");
    }
    Ok(if ok { exit::OK } else { exit::TOOL_FAILED })
}

pub fn audit(a: AuditCmd) -> anyhow::Result<i32> {
    use toolgate::audit;
    let read = |f: &std::path::Path| {
        audit::read_entries(f).map_err(|e| Error::from(toolgate::CallError::Read(e.to_string())))
    };
    let (file, query, tail) = match a {
        AuditCmd::Export { state } => {
            let lines = store_lines(&state)?;
            let mut out = std::io::stdout().lock();
            for l in lines {
                writeln!(out, "{l}")?;
            }
            return Ok(exit::OK);
        }
        AuditCmd::Verify { files, state, json } => {
            let key = audit::AuditLog::key_from_env();
            let checked = match state {
                Some(url) => {
                    let mut text = store_lines(&url)?.join("\n");
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    let name = toolgate::state::postgres::without_password(&url);
                    audit::verify_contents(&[(name, text.into_bytes())], key.as_deref())
                }
                None => audit::verify(&files, key.as_deref()),
            };
            let (ok, v, line) = match checked {
                Ok(v) => (
                    true,
                    serde_json::json!({"ok": true, "verified": v}),
                    v.to_string(),
                ),
                Err(f) => (
                    false,
                    serde_json::json!({"ok": false, "failure": f}),
                    f.to_string(),
                ),
            };
            if json {
                print_json(&v)?;
            } else {
                outln!("{line}");
            }
            return Ok(if ok { exit::OK } else { exit::TOOL_FAILED });
        }
        AuditCmd::Tail { file, lines } => (file, audit::Query::default(), Some(lines)),
        AuditCmd::Query {
            file,
            since,
            tool,
            decision,
            principal,
        } => {
            let since_ms = since
                .as_deref()
                .map(audit::since_ms)
                .transpose()
                .map_err(Error::Usage)?;
            let q = audit::Query {
                since_ms,
                tool,
                decision,
                principal,
                ..Default::default()
            };
            (file, q, None)
        }
    };
    let entries = read(&file)?;
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    let mut out = std::io::stdout().lock();
    for e in entries.iter().skip(skip).filter(|e| query.matches(e)) {
        writeln!(out, "{e}")?;
    }
    Ok(exit::OK)
}

/// A shared store's audit chain, oldest first.
fn store_lines(url: &str) -> anyhow::Result<Vec<String>> {
    let lines = tokio_rt()?.block_on(async {
        let store = toolgate::state::connect(url).await?;
        store.audit_lines().await
    });
    Ok(lines.map_err(Error::State)?.unwrap_or_default())
}

/// Streams stdin through the policy's filter to stdout (or one JSON object).
pub fn redact(policy: &str, json: bool) -> anyhow::Result<i32> {
    let p = Policy::load(policy).map_err(Error::from)?;
    let r = toolgate::Executor::redactor_for(&p)?;
    let input = std::io::stdin().lock();
    if json {
        let mut text = Vec::new();
        let report = r.stream().copy(input, &mut text)?;
        let text = String::from_utf8_lossy(&text);
        outln!("{}", serde_json::json!({"text": text, "report": report}));
    } else {
        let report = r.stream().copy(input, &mut std::io::stdout().lock())?;
        if !report.is_empty() {
            let what = serde_json::to_string(&report)?;
            eprintln!("toolgate: redacted {} item(s): {what}", report.total());
        }
    }
    Ok(exit::OK)
}

pub fn runtimes(r: RuntimesCmd) -> anyhow::Result<i32> {
    let err = |e: toolgate::sandbox::wasm::WasmError| Error::from(toolgate::SandboxError::from(e));
    match r {
        RuntimesCmd::Install {
            names,
            from,
            sha256,
            json,
        } => {
            if from.is_some() && names.len() != 1 {
                return Err(Error::Usage("--from installs one runtime: name it".into()).into());
            }
            let progress = |m: &str| eprintln!("toolgate: {m}");
            let done = runtimes::install(&names, from.as_deref(), sha256.as_deref(), &progress)
                .map_err(err)?;
            if json {
                print_json(&done)?;
            }
            Ok(exit::OK)
        }
        RuntimesCmd::List { json } => {
            let rows = runtimes::list().map_err(err)?;
            if json {
                print_json(&rows)?;
            }
            for r in rows.iter().filter(|_| !json) {
                let state = if r.installed { "installed" } else { "missing" };
                outln!("{:<11} {state:<8} {}", r.name, r.version);
                outln!(
                    "            {}\n            licence: {}",
                    r.source,
                    r.license
                );
            }
            Ok(exit::OK)
        }
        RuntimesCmd::Verify { json } => {
            let rows = runtimes::verify().map_err(err)?;
            if json {
                print_json(&rows)?;
            }
            for r in rows.iter().filter(|_| !json) {
                outln!("{:<11} {}: {}", r.name, r.status, r.detail);
            }
            Ok(ok_or(rows.iter().all(|r| r.status == "ok")))
        }
    }
}
