//! The `toolgate` CLI: parses flags, calls the library, prints JSON, and
//! maps errors to the documented exit codes (`toolgate::exit`). Anything a
//! service or an embedding program would also need lives in the library.

/// `println!` that does not panic when stdout is closed (`toolgate … | head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod cli;

use cli::admin;
use cli::args::*;
use cli::output::{
    first_line, init_logging, is_broken_pipe, ok_or, print_json, report, shutdown_signal, tokio_rt,
};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use toolgate::gate::ApproveMode;
use toolgate::service::{self, Options};
use toolgate::{BackendKind, Decision, Error, Policy, ToolCall, exit};

fn main() {
    use clap::Parser;
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
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => match e.downcast_ref::<Error>() {
            Some(err) => {
                report(json, err.kind(), "", &err.to_string());
                err.exit_code()
            }
            None => {
                report(json, "internal", "", &format!("{e:#}"));
                exit::INTERNAL
            }
        },
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Check(a) => check(a),
        Cmd::Run(a) => run_call(a),
        Cmd::Exec(a) => exec(a),
        Cmd::Notebook(a) => notebook(a),
        Cmd::Tools { format } => {
            let f = match format {
                ToolFormat::Openai => toolgate::tools::Format::Openai,
                ToolFormat::Anthropic => toolgate::tools::Format::Anthropic,
                ToolFormat::JsonSchema => toolgate::tools::Format::JsonSchema,
            };
            print_json(&toolgate::tools::render(f))?;
            Ok(exit::OK)
        }
        Cmd::Runtimes(r) => admin::runtimes(r),
        Cmd::Redact { policy, json } => admin::redact(&policy, json),
        Cmd::Audit(a) => admin::audit(a),
        Cmd::Images(ImagesCmd::Build { image, packages }) => {
            Ok(ok_or(toolgate::sandbox::images::build(&image, &packages)?))
        }
        Cmd::Images(ImagesCmd::List) => Ok(ok_or(toolgate::sandbox::images::list()?)),
        Cmd::Gc { all } => tokio_rt()?.block_on(async {
            let n = toolgate::sandbox::docker::DockerBackend::connect(Default::default())
                .await
                .map_err(Error::from)?
                .gc(all)
                .await
                .map_err(Error::from)?;
            eprintln!("toolgate: removed {n} container(s)");
            Ok(exit::OK)
        }),
        Cmd::Bench(b) => cli::bench::run(b),
        Cmd::Doctor {
            policy,
            json,
            require,
            backends,
        } => admin::doctor(&policy, json, &require, &backends),
        Cmd::Serve(a) => serve(a),
        Cmd::Mcp(a) => mcp(a),
    }
}

fn approve_mode(a: Option<ApproveArg>) -> Option<ApproveMode> {
    a.map(|a| match a {
        ApproveArg::Prompt => ApproveMode::Prompt,
        ApproveArg::Deny => ApproveMode::Deny,
        ApproveArg::Allow => ApproveMode::Allow,
    })
}

/// The library's options from the flags every call-taking command shares.
fn options(c: &Common, policy: Policy, mode: ApproveMode) -> Options {
    Options {
        workspace: c.workspace.clone(),
        audit: c.audit.clone(),
        approver: mode.approver(),
        ..Options::new(policy)
    }
}

fn read_call(a: &CallArgs) -> Result<ToolCall, Error> {
    let limit = toolgate::call::MAX_CALL_BYTES as u64 + 1;
    let read = |r: &mut dyn Read, what: &str| {
        let mut s = String::new();
        r.take(limit)
            .read_to_string(&mut s)
            .map(|_| s)
            .map_err(|e| toolgate::CallError::Read(format!("{what}: {e}")))
    };
    let text = match (&a.call, a.file.as_deref()) {
        (Some(c), _) => c.clone(),
        (None, Some("-")) => read(&mut std::io::stdin(), "stdin")?,
        (None, Some(path)) => read(
            &mut std::fs::File::open(path)
                .map_err(|e| toolgate::CallError::Read(format!("{path}: {e}")))?,
            path,
        )?,
        (None, None) => {
            return Err(toolgate::CallError::Shape(
                "no call given: pass FILE, `-` for stdin, or --call JSON".into(),
            )
            .into());
        }
    };
    Ok(ToolCall::parse(&text)?)
}

fn check(a: CallArgs) -> anyhow::Result<i32> {
    let policy = Policy::load(&a.common.policy).map_err(Error::from)?;
    let call = read_call(&a)?;
    let exec = service::for_check(options(&a.common, policy, ApproveMode::Deny))?;
    let dry = exec.check(&call)?;
    print_json(&dry)?;
    Ok(match dry.verdict.decision {
        Decision::Allow => exit::OK,
        Decision::Ask => exit::ASK,
        Decision::Deny => exit::DENIED,
    })
}

fn run_call(a: CallArgs) -> anyhow::Result<i32> {
    let policy = Policy::load(&a.common.policy).map_err(Error::from)?;
    let call = read_call(&a)?;
    let mode = ApproveMode::or_default(approve_mode(a.common.approve));
    let o = tokio_rt()?.block_on(service::run_once(options(&a.common, policy, mode), &call))?;
    print_json(&o)?;
    Ok(exit::for_outcome(&o))
}

fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let usage = |m: String| Error::Usage(m);
    let size = |s: &Option<String>| s.as_deref().map(toolgate::units::parse_size).transpose();
    let dur = |s: &Option<String>| {
        s.as_deref()
            .map(toolgate::units::parse_duration)
            .transpose()
    };
    let (memory, cpu, wall) = (
        size(&a.memory).map_err(usage)?,
        dur(&a.cpu_time).map_err(usage)?,
        dur(&a.timeout).map_err(usage)?,
    );
    let backend = a.backend.map(|b| match b {
        BackendArg::Wasm => BackendKind::Wasm,
        BackendArg::Docker => BackendKind::Docker,
        BackendArg::Native => BackendKind::Native,
    });
    // The overrides go through the policy's own validation.
    let policy = Policy::load(&a.common.policy)
        .map_err(Error::from)?
        .with(|s| {
            let l = &mut s.limits;
            l.memory_bytes = memory.unwrap_or(l.memory_bytes);
            l.cpu_time = cpu.unwrap_or(l.cpu_time);
            l.wall_time = wall.unwrap_or(l.wall_time);
            if let Some(k) = backend {
                *s.backends.for_language_mut(a.lang) = k;
            }
        })
        .map_err(|e| usage(e.to_string()))?;
    let code = if a.code == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(policy.max_arg_bytes() as u64 + 1)
            .read_to_string(&mut s)
            .map_err(|e| toolgate::CallError::Read(format!("stdin: {e}")))?;
        s
    } else {
        a.code.clone()
    };
    let call = ToolCall::run_code(a.lang, code);
    let mode = ApproveMode::or_default(approve_mode(a.common.approve));
    let o = tokio_rt()?.block_on(service::run_once(options(&a.common, policy, mode), &call))?;
    if a.common.json {
        print_json(&o)?;
    } else {
        print_program_output(&o)?;
    }
    Ok(exit::for_exec(&o))
}

/// A program's output as a terminal shows it: stdout, stderr, then what
/// toolgate has to say about the run.
fn print_program_output(o: &toolgate::Outcome) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(o.stdout.as_bytes())?;
    out.flush()?;
    eprint!("{}", o.stderr);
    for line in o.notes() {
        eprintln!("toolgate: {line}");
    }
    Ok(())
}

/// The cells of a notebook file: the text between lines `# %%` (or `%%`).
fn cells(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in text.lines() {
        if matches!(line.trim_end(), "# %%" | "%%") || line.starts_with("# %% ") {
            out.push(String::new());
        } else if let Some(c) = out.last_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    out.retain(|c| !c.trim().is_empty());
    out
}

fn notebook(a: NotebookArgs) -> anyhow::Result<i32> {
    let policy = Policy::load(&a.common.policy).map_err(Error::from)?;
    let max = policy.max_arg_bytes() as u64 * 16;
    let mut text = String::new();
    let read = if a.file == "-" {
        std::io::stdin().take(max + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(&a.file).and_then(|f| f.take(max + 1).read_to_string(&mut text))
    };
    read.map_err(|e| toolgate::CallError::Read(format!("{}: {e}", a.file)))?;
    let name = format!("notebook-{}", std::process::id());
    let calls = cells(&text)
        .into_iter()
        .map(|code| {
            ToolCall::parse(
                &serde_json::json!({"tool": "run_code", "args": {"language": "python", "code": code, "session": name}})
                    .to_string(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = calls.first() else {
        return Err(Error::Usage(format!("{}: no cells", a.file)).into());
    };
    let mode = ApproveMode::or_default(approve_mode(a.common.approve));
    let rt = tokio_rt()?;
    let exec = rt.block_on(service::for_call(options(&a.common, policy, mode), first))?;
    let mut outcomes = Vec::new();
    let mut code = exit::OK;
    for call in &calls {
        let o = rt.block_on(exec.run(call))?;
        if !a.common.json {
            print_program_output(&o)?;
        }
        // The first cell that failed says how the notebook went.
        if code == exit::OK {
            code = exit::for_exec(&o);
        }
        // A denied cell or one that ended the session ends the notebook.
        let ended = o.reasons.iter().any(|r| r.starts_with("the session ended"));
        let stop = o.status == toolgate::Status::Denied || ended;
        outcomes.push(o);
        if stop {
            break;
        }
    }
    // Closing the executor closes its sessions.
    rt.block_on(exec.close());
    if a.common.json {
        print_json(&outcomes)?;
    }
    Ok(code)
}

fn serve(a: ServeArgs) -> anyhow::Result<i32> {
    use toolgate::server::http;
    init_logging(a.log_format);
    let policy = Policy::load(&a.common.policy).map_err(Error::from)?;
    let settings = http::Settings {
        listen: a.listen,
        allow_non_loopback: a.allow_non_loopback,
        tokens_file: a.tokens.clone(),
        max_concurrent: a.max_concurrent,
        max_body: a.max_body.clone(),
        requests_per_minute: a.rate_per_minute,
        requests_per_hour: a.rate_per_hour,
        drain: Duration::from_secs(a.drain),
        max_wait: Duration::from_secs(a.max_wait),
    };
    let (tokens, cfg) = settings.resolve()?;
    let mut opts = options(&a.common, policy, ApproveMode::Deny);
    // Confirmations are answered over HTTP by id.
    opts.approver = Arc::new(toolgate::gate::External);
    opts.confirmation_ttl = Duration::from_secs(a.confirmation_ttl);
    opts.max_running = Some(cfg.max_concurrent);
    opts.state = a.state.clone();
    opts.budgets = toolgate::budget::Budgets {
        per_minute: a.calls_per_minute,
        per_hour: a.calls_per_hour,
        calls: a.budget_calls,
        wall_seconds: a.budget_wall_seconds,
        cpu_seconds: a.budget_cpu_seconds,
    };
    tokio_rt()?.block_on(async move {
        let svc = service::start(opts).await?;
        tracing::info!(at = %svc.audit, instance = toolgate::state::instance(), "audit chain");
        let app = http::App::new(svc.executor, tokens, cfg);
        http::serve(
            app,
            a.listen,
            a.allow_non_loopback,
            shutdown_signal(),
            |addr| {
                tracing::info!(%addr, "listening on http://{addr}");
            },
        )
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
        tracing::info!("stopped");
        Ok(exit::OK)
    })
}

fn mcp(a: McpArgs) -> anyhow::Result<i32> {
    init_logging(a.log_format);
    let policy = Policy::load(&a.common.policy).map_err(Error::from)?;
    // stdin carries the protocol: nobody can be prompted there.
    let mode = match approve_mode(a.common.approve) {
        Some(ApproveMode::Allow) => ApproveMode::Allow,
        _ => ApproveMode::Deny,
    };
    let mut opts = options(&a.common, policy, mode);
    opts.confirmation_ttl = Duration::from_secs(a.confirmation_ttl);
    tokio_rt()?.block_on(async move {
        let ttl = opts.confirmation_ttl;
        let svc = service::start(opts).await?;
        tracing::info!(at = %svc.audit, "audit chain");
        toolgate::server::mcp::McpServer::new(svc.executor, a.principal, ttl)
            .serve_stdio()
            .await
            .map_err(|e| Error::Internal {
                op: "mcp",
                detail: e.to_string(),
            })?;
        Ok(exit::OK)
    })
}
