//! toolgate — a sandboxed tool-execution runtime for AI agents.
//!
//! An agent emits a tool call; toolgate parses it ([`ToolCall`]), decides
//! on it from a policy ([`Policy::evaluate`] → [`Verdict`]), asks a human
//! when the verdict is `ask` ([`gate`]), prepares a [`Plan`] (backend,
//! limits, network, mounts), runs it in a sandbox ([`sandbox`]), filters the
//! output ([`filter`]), records it ([`audit`]) and returns an [`Outcome`].
//! [`Executor`] ties the steps together; [`Executor::check`] is the dry
//! run: every step but the last.
//!
//! | part | module | what it owns |
//! |---|---|---|
//! | tool calls | [`call`] | toolgate / OpenAI / Anthropic shapes, typed arguments, size caps |
//! | tool definitions | [`tools`] | JSON Schemas for agent frameworks |
//! | policy | [`policy`] | TOML rules, path rules, shell parsing, input flags, limits; pure |
//! | workspace paths | [`workpath`] | agent paths → workspace components; shared by policy and sandboxes |
//! | host lists | [`hosts`] | `network.allow_hosts` entries; shared by policy, egress proxy and output filter |
//! | units | [`units`] | sizes and durations as people write them |
//! | plan | [`plan`] | the per-call profile a backend enforces: backend, limits, network, mounts |
//! | gate | [`gate`] | pending confirmations, approvers (terminal, callback, HTTP), expiry that denies |
//! | sandboxes | [`sandbox`] | one [`Backend`](sandbox::Backend) trait: host file tools (cap-std), [`wasm`](sandbox::wasm) (Wasmtime + WASI; python pre-initialised with numpy/pandas, sessions), [`docker`](sandbox::docker) (bollard; sessions keep one container), `native` (namespaces, Landlock, seccomp; Linux); warm pools; the [`egress`](sandbox::egress) proxy under a host allowlist |
//! | output filter | [`filter`] | secret rules, host secrets, URL allowlist; pure |
//! | audit | [`audit`] | hash-chained, fsynced JSON lines; `verify` |
//! | pipeline | [`Executor`] | decide → confirm → prepare → execute → filter → audit |
//! | budgets | [`budget`] | rate limits and totals per principal: one judgement for every store |
//! | state | [`state`] | what services share: confirmations, call records, budgets, the audit chain; embedded (memory + file) or PostgreSQL |
//! | metrics | [`metrics`] | counters and stage latencies, Prometheus text |
//! | assembly | [`service`] | the executor with its backends and audit log, for services and the CLI |
//! | servers | [`server`] | HTTP API (`serve`) and MCP over stdio (`mcp`) |
//! | doctor | [`doctor`] | probes that prove each promised limit binds |
//!
//! Which part may use which is written down in `docs/architecture.md` and
//! checked by a test.
//!
//! ```no_run
//! # async fn demo() -> Result<(), toolgate::Error> {
//! use toolgate::{Executor, Policy, ToolCall};
//! let exec = Executor::builder(Policy::builtin_default()).workspace(".").build()?;
//! let call = ToolCall::parse(r#"{"tool":"run_code","args":{"language":"python","code":"print(6*7)"}}"#)?;
//! let outcome = exec.run(&call).await?;
//! assert_eq!(outcome.stdout, "42\n");
//! # Ok(()) }
//! ```

pub mod audit;
pub mod budget;
pub mod call;
pub mod doctor;
mod error;
mod executor;
pub mod filter;
pub mod gate;
pub mod hosts;
pub mod metrics;
mod outcome;
pub mod plan;
pub mod policy;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod state;
pub mod tools;
pub mod units;
pub mod workpath;

pub use call::{CallError, Language, Tool, ToolCall};
pub use error::{Error, exit};
pub use executor::{DryRun, Executor, ExecutorBuilder};
pub use gate::{Answer, Approver, ConfirmationRequest};
pub use outcome::{Artifact, Inline, LimitHit, Outcome, Status, Truncation};
pub use plan::Plan;
pub use policy::{BackendKind, Decision, Limits, NetworkMode, Policy, PolicyError, Verdict};
pub use sandbox::SandboxError;
pub use sandbox::SessionInfo;
pub use sandbox::wasm::{WasmBackend, WasmConfig};
