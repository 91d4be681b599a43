//! What the CLI prints and how: JSON on stdout, one-line errors, log lines
//! on stderr; the async runtime and signals of long-running commands.

use super::args::LogFormat;
use std::io::Write;

pub fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim_start_matches("error: ")
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// One line to stderr, or a JSON error object to stdout with `--json`.
pub fn report(json: bool, kind: &str, detail: &str, message: &str) {
    // Error text can quote input; it goes through the pattern rules first.
    let message = match toolgate::filter::Redactor::new() {
        Ok(r) => r.redact(message).0,
        Err(_) => message.to_string(),
    };
    let message = message.replace('\n', " ");
    if json {
        let detail = (!detail.is_empty()).then_some(detail);
        let v = serde_json::json!({"error": {"kind": kind, "message": message, "detail": detail}});
        outln!("{v}");
    } else {
        eprintln!("toolgate: error: {message}");
    }
}

pub fn tokio_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Spans and events of a long-running command to stderr.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests in one process) keeps the first.
    let _ = match format {
        LogFormat::Human => logs.with_ansi(false).try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `exit::OK` when a helper succeeded, else "unavailable".
pub fn ok_or(success: bool) -> i32 {
    if success {
        toolgate::exit::OK
    } else {
        toolgate::exit::UNAVAILABLE
    }
}
