//! Command rules: judge every program a command would run.
//!
//! A shell string is parsed (`shell`), every simple command is resolved to
//! the program it really runs — unwrapping `env`, `sudo`, `xargs`,
//! `find -exec`, `sh -c '…'` and friends, with a depth bound — and each is
//! matched against the rules. Redirection targets go through the path
//! rules. What cannot be resolved statically gets `unresolved` (never allow).

use super::fileargs::{self, PathArg};
use super::shell::{self, RedirKind, Script, SimpleCommand, Word};
use super::{Decision, MatchedRule, paths::Access};
use regex::Regex;

#[derive(Debug, Clone)]
pub struct CommandRule {
    pub id: String,
    /// Program basenames; empty means any program.
    pub programs: Vec<String>,
    /// Searched in the arguments joined by single spaces.
    pub args: Option<Regex>,
    /// The rule does not apply when this matches the joined arguments.
    pub except_args: Option<Regex>,
    /// Searched in the whole command text (and in nested `sh -c` strings).
    pub pattern: Option<Regex>,
    pub decision: Decision,
    pub reason: String,
}

impl CommandRule {
    /// Pattern-only rules judge text; the others judge each program run.
    fn is_text_rule(&self) -> bool {
        self.programs.is_empty() && self.args.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct CommandPolicy {
    pub default: Decision,
    pub unresolved: Decision,
    /// For programs named by a relative path (`./build.sh`,
    /// `scripts/test`) that no rule covers: the workspace's own scripts.
    pub workspace_scripts: Decision,
    pub rules: Vec<CommandRule>,
}

/// One program the command would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub program: String,
    pub args: Vec<String>,
    /// Run by a relative path: a script of the workspace.
    pub workspace_script: bool,
}

/// What a command string resolves to.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub execs: Vec<Exec>,
    /// Texts judged by pattern rules: the command and any nested script strings.
    pub texts: Vec<String>,
    pub unresolved: Vec<String>,
    /// Files named by redirections and by file arguments, for the path rules.
    pub paths: Vec<PathArg>,
}

const WRAPPERS_NO_ARG: &[&str] = &[
    "nohup", "builtin", "setsid", "unbuffer", "time", "command", "exec", "nocache",
];

/// Shells whose `-c` argument is a script.
const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "zsh",
    "dash",
    "ksh",
    "ash",
    "mksh",
    "yash",
    "fish",
    "busybox-sh",
    "rbash",
];

/// Interpreters and the flags that hand them inline code.
const INTERPRETERS: &[(&str, &[&str])] = &[
    ("python", &["-c"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("node", &["-e", "--eval", "-p", "--print"]),
    ("nodejs", &["-e", "--eval", "-p", "--print"]),
    ("deno", &["eval"]),
    ("bun", &["-e", "--eval"]),
    ("php", &["-r"]),
    ("lua", &["-e"]),
    ("tclsh", &[]),
    ("Rscript", &["-e"]),
    ("osascript", &["-e"]),
    ("awk", &[]),
    ("gawk", &[]),
    ("jshell", &[]),
    ("irb", &[]),
    (
        "pwsh",
        &["-c", "-command", "-Command", "-EncodedCommand", "-e"],
    ),
];

/// Programs that run their argument list as another command, with the
/// options that take a value (so the value is not mistaken for the program).
fn wrapper_value_opts(prog: &str) -> Option<&'static [&'static str]> {
    Some(match prog {
        "env" => &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"],
        "sudo" | "doas" => &[
            "-u", "-g", "-h", "-p", "-C", "-r", "-t", "-U", "-D", "--user", "--group",
        ],
        "nice" => &["-n", "--adjustment"],
        "ionice" => &["-c", "-n", "-p", "-t"],
        "timeout" => &["-s", "--signal", "-k", "--kill-after"],
        "stdbuf" => &["-i", "-o", "-e"],
        "xargs" => &[
            "-I",
            "-L",
            "-n",
            "-P",
            "-d",
            "-E",
            "-s",
            "-a",
            "--arg-file",
            "--delimiter",
            "--max-args",
            "--max-procs",
            "--replace",
        ],
        "chrt" | "taskset" => &["-p"],
        "watch" => &["-n", "--interval", "-d"],
        "strace" | "ltrace" => &["-e", "-o", "-p", "-s", "-u"],
        "flock" => &["-w", "-E"],
        "su" => &["-s", "--shell", "-g", "-G"],
        "runuser" => &["-u", "-g", "-G", "-s"],
        _ if WRAPPERS_NO_ARG.contains(&prog) => &[],
        _ => return None,
    })
}

/// Basename of a program word, as rules name programs.
pub fn program_name(word: &str) -> String {
    let base = word.rsplit('/').next().unwrap_or(word);
    base.to_string()
}

/// Versioned interpreter names (`python3.12`) judged as their family.
fn family(prog: &str) -> &str {
    let trimmed = prog.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if trimmed.is_empty() { prog } else { trimmed }
}

/// Analyses a shell command string.
pub fn analyse_shell(src: &str) -> Analysis {
    let mut a = Analysis::default();
    analyse_text(src, 0, &mut a);
    a
}

/// Analyses an argv list run without a shell.
pub fn analyse_argv(argv: &[String]) -> Analysis {
    let mut a = Analysis::default();
    let words: Vec<Word> = argv
        .iter()
        .map(|s| Word {
            text: s.clone(),
            quoted: true,
            ..Word::default()
        })
        .collect();
    if words.is_empty() {
        a.unresolved.push("empty command".into());
    } else {
        resolve(&words, false, 0, &mut a);
    }
    a
}

fn analyse_text(src: &str, depth: usize, a: &mut Analysis) {
    a.texts.push(shell::mask_quoted(src));
    let script: Script = shell::parse_at(src, depth);
    a.unresolved.extend(script.problems.iter().cloned());
    let loops = loop_bindings(src, &script);
    for cmd in &script.commands {
        for c in bind_loop_variables(cmd, &loops) {
            analyse_simple(&c, depth, a);
        }
    }
}

/// Most values a loop variable is judged with, one command each.
const MAX_LOOP_VALUES: usize = 16;

/// Variables of `for NAME in WORDS` loops whose words are all static, and
/// whose name the script sets nowhere else: every `$NAME` in the script is
/// then one of those words (globs stay globs and are judged as such). A
/// name that also occurs outside a `$NAME` reference (`f=…`, `read f`,
/// `${f:=…}`, a second loop) is not bound and stays unresolved.
fn loop_bindings(src: &str, script: &Script) -> Vec<(String, Vec<Word>)> {
    let mut out: Vec<(String, Vec<Word>)> = Vec::new();
    let mut headers: Vec<String> = Vec::new();
    for cmd in &script.commands {
        let words: Vec<&Word> = cmd
            .words
            .iter()
            .skip_while(|w| {
                !w.quoted && matches!(w.text.as_str(), "do" | "then" | "else" | "{" | "!")
            })
            .collect();
        let [f, name, kw, items @ ..] = words.as_slice() else {
            continue;
        };
        if f.quoted || f.text != "for" || kw.quoted || kw.text != "in" || name.quoted {
            continue;
        }
        headers.push(name.text.clone());
        if !items.is_empty()
            && items.len() <= MAX_LOOP_VALUES
            && items.iter().all(|w| !w.dynamic && !w.assign)
        {
            out.push((
                name.text.clone(),
                items.iter().map(|w| (*w).clone()).collect(),
            ));
        }
    }
    out.retain(|(name, _)| {
        headers.iter().filter(|h| *h == name).count() == 1 && only_referenced(src, name) == 1
    });
    out
}

/// How many times `name` occurs in `src` as a word of its own that is not
/// a plain `$name` / `${name}` reference.
fn only_referenced(src: &str, name: &str) -> usize {
    let b = src.as_bytes();
    // `-f`, `f.txt`, `src/f`: part of another word, which sets nothing.
    let joined = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/');
    src.match_indices(name)
        .filter(|&(i, _)| {
            let end = i + name.len();
            let before = i.checked_sub(1).map(|j| b[j]);
            if before.is_some_and(joined) || b.get(end).copied().is_some_and(joined) {
                return false;
            }
            let plain = before == Some(b'$')
                || (before == Some(b'{')
                    && i >= 2
                    && b[i - 2] == b'$'
                    && b.get(end) == Some(&b'}'));
            !plain
        })
        .count()
}

/// `cmd` once per value of the loop variables it uses (just `cmd` when it
/// uses none). An unquoted reference to a value with blanks would split
/// into several words: that stays unresolved.
fn bind_loop_variables<'c>(
    cmd: &'c SimpleCommand,
    loops: &[(String, Vec<Word>)],
) -> Vec<std::borrow::Cow<'c, SimpleCommand>> {
    let mut out = vec![std::borrow::Cow::Borrowed(cmd)];
    for (name, values) in loops {
        let bound = |w: &Word| w.var.as_deref() == Some(name);
        if !cmd
            .words
            .iter()
            .chain(cmd.redirects.iter().map(|r| &r.target))
            .any(bound)
        {
            continue;
        }
        let mut next = Vec::new();
        for c in &out {
            for v in values {
                let mut c = c.clone().into_owned();
                let SimpleCommand {
                    words, redirects, ..
                } = &mut c;
                let targets = redirects.iter_mut().map(|r| &mut r.target);
                for w in words.iter_mut().chain(targets).filter(|w| bound(w)) {
                    if !w.quoted && v.text.contains(char::is_whitespace) {
                        continue;
                    }
                    *w = Word {
                        text: v.text.clone(),
                        glob: v.glob,
                        quoted: true,
                        ..Word::default()
                    };
                }
                next.push(std::borrow::Cow::Owned(c));
            }
        }
        if next.len() > MAX_LOOP_VALUES {
            return vec![std::borrow::Cow::Borrowed(cmd)];
        }
        out = next;
    }
    out
}

fn analyse_simple(cmd: &SimpleCommand, depth: usize, a: &mut Analysis) {
    for r in &cmd.redirects {
        match r.kind {
            RedirKind::Dup => {}
            kind => {
                let access = if kind == RedirKind::Read {
                    Access::Read
                } else {
                    Access::Write
                };
                if r.target.dynamic || r.target.glob {
                    a.unresolved.push("redirection target is not static".into());
                } else if !matches!(
                    r.target.text.as_str(),
                    "/dev/null" | "/dev/stdout" | "/dev/stderr"
                ) {
                    a.paths.push(PathArg {
                        path: r.target.text.clone(),
                        access,
                        glob: false,
                    });
                }
            }
        }
    }
    // Expanding a credential's variable reads it (`echo $AWS_SECRET_ACCESS_KEY`,
    // `printf %s "$NPM_TOKEN" | base64`), as `printenv NAME` does.
    for w in cmd
        .words
        .iter()
        .chain(cmd.redirects.iter().map(|r| &r.target))
    {
        for name in &w.refs {
            if name == "!" {
                a.unresolved.push(
                    "an indirect expansion (`${!name}`) reads a variable named at run time".into(),
                );
            } else if secret_name(name) {
                a.unresolved.push(format!(
                    "expands `${name}`, whose name says it holds a credential"
                ));
            }
        }
    }
    // Leading assignments (`A=1 cmd`) and reserved words are not the program.
    let mut words: &[Word] = &cmd.words;
    while let Some(w) = words.first() {
        let t = w.text.as_str();
        let is_assign = w.assign;
        let reserved = !w.quoted
            && matches!(
                t,
                "if" | "then"
                    | "else"
                    | "elif"
                    | "fi"
                    | "do"
                    | "done"
                    | "while"
                    | "until"
                    | "!"
                    | "{"
                    | "}"
                    | "time"
                    | "esac"
            );
        if is_assign {
            check_assignment(t, a);
            words = &words[1..];
        } else if reserved {
            words = &words[1..];
        } else {
            break;
        }
    }
    let Some(first) = words.first() else { return };
    if !first.quoted && matches!(first.text.as_str(), "for" | "case" | "select" | "function") {
        if first.text != "for" {
            a.unresolved
                .push(format!("`{}` constructs are not analysed", first.text));
        }
        return;
    }
    resolve(words, cmd.stdin_pipe || cmd.stdin_data, depth, a);
}

/// Resolves the program a word list runs, unwrapping wrappers recursively.
fn resolve(words: &[Word], stdin_is_data: bool, depth: usize, a: &mut Analysis) {
    if depth > shell::MAX_DEPTH {
        a.unresolved
            .push("wrappers nest too deeply to analyse".into());
        return;
    }
    let Some(first) = words.first() else { return };
    // `[` and `[[` are the test command, not a glob.
    if first.dynamic || (first.glob && !matches!(first.text.as_str(), "[" | "[[")) {
        a.unresolved.push(
            "the program name is computed at run time (variable, substitution or expansion)".into(),
        );
        return;
    }
    let prog = program_name(&first.text);
    if prog.is_empty() {
        a.unresolved.push("empty program name".into());
        return;
    }
    let args: Vec<String> = words[1..].iter().map(|w| w.text.clone()).collect();
    let workspace_script = first.text.contains('/') && !first.text.starts_with(['/', '~']);
    if workspace_script {
        // The script itself is a file the command reads (`../x` escapes).
        a.paths.push(PathArg {
            path: first.text.clone(),
            access: Access::Read,
            glob: false,
        });
    }
    a.execs.push(Exec {
        program: prog.clone(),
        args: args.clone(),
        workspace_script,
    });
    let rest = &words[1..];
    let unresolved = fileargs::collect(&prog, rest, &mut a.paths);
    a.unresolved.extend(unresolved);

    if matches!(
        prog.as_str(),
        "export" | "declare" | "typeset" | "local" | "readonly"
    ) {
        for w in rest {
            check_assignment(&w.text, a);
        }
    }
    let p = prog.as_str();
    let fam = family(p);
    code_options(p, rest, a);
    if env_dump(p, rest) {
        a.unresolved.push(ENV_DUMP.into());
    }
    if p == "eval" {
        if rest.iter().any(|w| w.dynamic) {
            a.unresolved
                .push("`eval` of a string built at run time".into());
        } else {
            analyse_text(&args.join(" "), depth + 1, a);
        }
    } else if p == "busybox" || p == "toybox" {
        resolve(rest, stdin_is_data, depth + 1, a);
    } else if SHELLS.contains(&p) {
        resolve_shell(p, rest, stdin_is_data, depth, a);
    } else if let Some((_, flags)) = INTERPRETERS.iter().find(|(n, _)| *n == fam || *n == p) {
        resolve_interpreter(p, fam, flags, rest, stdin_is_data, a);
    } else if matches!(p, "sed" | "gsed") {
        resolve_sed(p, rest, a);
    } else if p == "find" || p == "fd" {
        resolve_find(rest, depth, a);
    } else if let Some(value_opts) = wrapper_value_opts(p) {
        resolve_wrapper(p, value_opts, rest, stdin_is_data, depth, a);
    }
}

/// A shell: the script after `-c` (possibly combined, `-ec`) is analysed
/// on its own; a script from a pipe or named at run time is unresolved.
fn resolve_shell(prog: &str, rest: &[Word], stdin_is_data: bool, depth: usize, a: &mut Analysis) {
    let mut i = 0;
    while i < rest.len() {
        let t = &rest[i].text;
        if t == "--" || !t.starts_with('-') && !t.starts_with('+') {
            break;
        }
        if t.starts_with('-') && !t.starts_with("--") && t.contains('c') {
            match rest.get(i + 1) {
                Some(s) if s.dynamic => a
                    .unresolved
                    .push(format!("`{prog} -c` with a script built at run time")),
                Some(s) => analyse_text(&s.text, depth + 1, a),
                None => a.unresolved.push(format!("`{prog} -c` without a script")),
            }
            return;
        }
        if matches!(t.as_str(), "-o" | "+o" | "--rcfile" | "--init-file") {
            i += 1;
        }
        i += 1;
    }
    if i >= rest.len() && stdin_is_data {
        a.unresolved.push(format!(
            "`{prog}` runs a script read from a pipe or here-document"
        ));
    } else if i >= rest.len() && !asks_only_about_itself(rest) {
        a.unresolved.push(format!(
            "`{prog}` without a script reads commands from its input"
        ));
    } else if rest.get(i).is_some_and(|w| w.dynamic) {
        a.unresolved
            .push(format!("`{prog}` runs a script named at run time"));
    }
}

/// An interpreter: inline code (`-c`, `-cCODE`, clusters such as `-Ic` or
/// `-ne`) is not analysed, except awk programs, which are.
fn resolve_interpreter(
    prog: &str,
    fam: &str,
    flags: &[&str],
    rest: &[Word],
    stdin_is_data: bool,
    a: &mut Analysis,
) {
    let inline = rest.iter().any(|w| {
        let t = w.text.as_str();
        flags.iter().any(|f| {
            t == *f
                || (f.len() == 2
                    && t.starts_with('-')
                    && !t.starts_with("--")
                    && f[1..].chars().all(|c| t[1..].contains(c)))
        })
    });
    let program = rest.iter().find(|w| !w.text.starts_with('-'));
    if matches!(fam, "awk" | "gawk" | "mawk" | "nawk") {
        // Printing and arithmetic are fine; running commands, writing
        // files or reading the environment is not resolved.
        match program {
            Some(p) if p.dynamic => a
                .unresolved
                .push(format!("`{prog}` program is built at run time")),
            Some(p) if awk_escapes(&p.text) => a.unresolved.push(format!(
                "`{prog}` program runs commands, writes files or reads the environment"
            )),
            _ => {}
        }
    } else if inline {
        a.unresolved.push(format!(
            "`{prog}` is given inline code, which is not analysed"
        ));
    } else if program.is_some_and(|w| w.dynamic) {
        a.unresolved
            .push(format!("`{prog}` runs a program named at run time"));
    } else if stdin_is_data && program.is_none() {
        a.unresolved.push(format!(
            "`{prog}` runs a program read from a pipe or here-document"
        ));
    } else if program.is_none() && !asks_only_about_itself(rest) && !runs_module(rest) {
        if matches!(fam, "node" | "nodejs" | "perl") && rest.iter().any(|w| w.text == "-v") {
            // `-v` is their `--version`.
            return;
        }
        a.unresolved.push(format!(
            "`{prog}` without a program reads code from its input"
        ));
    }
}

/// Whether an environment variable's name looks like it holds a
/// credential (`AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`, `DB_PASSWORD`, …).
/// Not the policy's `redaction.secret_env`: commands are analysed without a
/// policy, and reading a credential-looking name is worth a confirmation
/// even where a policy redacts fewer host values.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    const MARKS: &[&str] = &[
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSW",
        "PASSPHRASE",
        "CRED",
        "AUTH",
        "PRIVATE",
        "SESSION",
        "COOKIE",
        "SIGNATURE",
        "DSN",
        "DATABASE_URL",
        "CONNECTION",
    ];
    MARKS.iter().any(|m| n.contains(m)) || n.ends_with("_PAT") || n.ends_with("_PWD")
}

/// `--version`, `--help` and the like: the program prints and exits.
fn asks_only_about_itself(rest: &[Word]) -> bool {
    rest.iter().any(|w| {
        matches!(
            w.text.as_str(),
            "--version" | "-V" | "--help" | "-version" | "-help"
        )
    })
}

/// `python -m module`: the module is the program.
fn runs_module(rest: &[Word]) -> bool {
    rest.iter()
        .any(|w| w.text == "-m" || (w.text.starts_with("-m") && w.text.len() > 2))
}

/// Commands that print the environment: `printenv`, `env` alone (see
/// `resolve_wrapper`), and the shell's `export`, `set`, `declare`/
/// `typeset` listing forms.
fn env_dump(prog: &str, rest: &[Word]) -> bool {
    let only_flags = rest.iter().all(|w| w.text.starts_with('-'));
    match prog {
        // `printenv PATH` is fine; all of it, or a credential, is not.
        "printenv" => only_flags || rest.iter().any(|w| w.dynamic || secret_name(&w.text)),
        "export" => rest.is_empty() || (only_flags && rest.iter().any(|w| w.text == "-p")),
        "set" => rest.is_empty(),
        "declare" | "typeset" => {
            rest.is_empty()
                || (only_flags
                    && rest
                        .iter()
                        .any(|w| matches!(w.text.as_str(), "-p" | "-x" | "-px" | "-xp")))
        }
        "compgen" => rest.iter().any(|w| w.text == "-v" || w.text == "-e"),
        // jq's `env` and `$ENV` are the environment.
        "jq" | "gojq" | "jaq" => rest.iter().any(|w| jq_reads_env(&w.text)),
        _ => false,
    }
}

/// Whether a jq filter names `env` or `$ENV` (not `.env`, `$environ`, `env_x`).
fn jq_reads_env(filter: &str) -> bool {
    let b = filter.as_bytes();
    filter.match_indices("env").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + 3).copied();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        !before.is_some_and(|c| word(c) || c == b'.' || c == b'$') && !after.is_some_and(word)
    }) || filter.contains("$ENV")
}

/// sed: scripts that run commands or touch other files (e, r, w) are unresolved.
fn resolve_sed(prog: &str, rest: &[Word], a: &mut Analysis) {
    let scripts = sed_scripts(rest);
    if scripts.iter().any(|(_, dynamic)| *dynamic) {
        a.unresolved
            .push(format!("`{prog}` script is built at run time"));
    } else if scripts.iter().any(|(s, _)| sed_escapes(s)) {
        a.unresolved.push(format!(
            "`{prog}` script runs commands or reads or writes other files (e, r, w)"
        ));
    }
}

/// find / fd: what `-exec` and friends run is resolved like any command.
fn resolve_find(rest: &[Word], depth: usize, a: &mut Analysis) {
    let mut i = 0;
    while i < rest.len() {
        let t = rest[i].text.as_str();
        if matches!(
            t,
            "-exec" | "-execdir" | "-ok" | "-okdir" | "-x" | "--exec" | "-X" | "--exec-batch"
        ) {
            let start = i + 1;
            let mut end = start;
            while end < rest.len() && !matches!(rest[end].text.as_str(), ";" | "+") {
                end += 1;
            }
            if start < end {
                resolve(&rest[start..end], false, depth + 1, a);
            }
            i = end;
        }
        i += 1;
    }
}

/// A wrapper (`env`, `timeout`, `nice`, `xargs`, …): the command it runs
/// is resolved after its options and positionals.
fn resolve_wrapper(
    prog: &str,
    value_opts: &[&str],
    rest: &[Word],
    stdin_is_data: bool,
    depth: usize,
    a: &mut Analysis,
) {
    let mut i = 0;
    let mut positional_skipped = false;
    while i < rest.len() {
        let t = rest[i].text.as_str();
        if t == "--" {
            i += 1;
            break;
        }
        if prog == "env" && matches!(t, "-S" | "--split-string") {
            match rest.get(i + 1) {
                Some(s) if !s.dynamic => analyse_text(&s.text, depth + 1, a),
                _ => a.unresolved.push("`env -S` with a computed string".into()),
            }
            return;
        }
        if t.starts_with('-') && t.len() > 1 {
            if value_opts.contains(&t) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if prog == "env" && t.contains('=') {
            check_assignment(t, a);
            i += 1;
            continue;
        }
        // `timeout DURATION cmd`, `nice` has no positional, `chrt PRIO cmd`, `taskset MASK cmd`.
        if matches!(prog, "timeout" | "chrt" | "taskset") && !positional_skipped {
            positional_skipped = true;
            i += 1;
            continue;
        }
        break;
    }
    if prog == "command" && rest.iter().any(|w| w.text == "-v" || w.text == "-V") {
        return;
    }
    if i < rest.len() {
        resolve(&rest[i..], stdin_is_data || prog == "xargs", depth + 1, a);
    } else if prog == "env" {
        a.unresolved.push(ENV_DUMP.into());
    }
}

/// Why printing the environment is not allowed outright.
const ENV_DUMP: &str = "prints the environment, where credentials live";

/// Environment variables whose value makes a program run a command, load
/// code, or read its configuration (which can name a command) from
/// elsewhere: setting one (`NAME=… cmd`, `env NAME=…`, `export NAME=…`) is
/// not resolved. A trailing `*` matches a prefix. One entry per variable
/// family, with the reason.
const EXEC_ENV: &[(&str, &str)] = &[
    ("PATH", "decides which program a name runs"),
    ("IFS", "changes how the shell splits words"),
    (
        "LD_*",
        "the dynamic loader preloads or finds libraries by it",
    ),
    (
        "BASH_ENV",
        "a script bash runs before any non-interactive script",
    ),
    ("ENV", "a script sh and bash run on start"),
    ("PROMPT_COMMAND", "a command bash runs before each prompt"),
    (
        "PS4",
        "expanded (command substitution included) by `set -x`",
    ),
    ("SHELLOPTS", "turns on shell options in child shells"),
    ("BASHOPTS", "turns on shell options in child shells"),
    ("HISTFILE", "where the shell writes its history"),
    ("BASH_FUNC_*", "exported bash functions, run by name"),
    (
        "PAGER",
        "the program man, git, less-based tools pipe output through",
    ),
    ("MANPAGER", "man's pager, run through a shell"),
    ("GIT_PAGER", "git's pager, run through a shell"),
    ("SYSTEMD_PAGER", "systemd tools' pager"),
    ("LESSOPEN", "less runs it as an input preprocessor"),
    ("LESSCLOSE", "less runs it after a file"),
    ("EDITOR", "the editor git, crontab and others start"),
    ("VISUAL", "the editor git, crontab and others start"),
    ("GIT_EDITOR", "git's editor, run through a shell"),
    ("GIT_SEQUENCE_EDITOR", "git rebase's todo editor"),
    ("FCEDIT", "the shell's `fc` editor"),
    ("BROWSER", "the program that opens URLs"),
    ("GIT_SSH", "the program git runs for ssh transports"),
    ("GIT_SSH_COMMAND", "the command git runs for ssh transports"),
    (
        "GIT_PROXY_COMMAND",
        "the command git runs for git:// connections",
    ),
    ("GIT_EXTERNAL_DIFF", "the program git diff runs"),
    ("GIT_ASKPASS", "the program git runs to ask for credentials"),
    ("SSH_ASKPASS", "the program ssh runs to ask for credentials"),
    (
        "SUDO_ASKPASS",
        "the program sudo runs to ask for a password",
    ),
    ("GIT_EXEC_PATH", "where git finds its subcommands"),
    (
        "GIT_CONFIG*",
        "git configuration given in the environment (core.pager, aliases, hooks)",
    ),
    ("GIT_DIR", "a repository whose config and hooks git uses"),
    ("GIT_TEMPLATE_DIR", "hooks copied into new repositories"),
    (
        "HOME",
        "where programs read their configuration (~/.gitconfig can name a pager or hooks)",
    ),
    ("XDG_CONFIG_HOME", "where programs read their configuration"),
    ("PYTHONPATH", "where python imports from"),
    ("PYTHONSTARTUP", "a file python runs on start"),
    ("PYTHONHOME", "where python finds its standard library"),
    (
        "PYTHONINSPECT",
        "keeps python reading commands after a script",
    ),
    ("PYTHONBREAKPOINT", "a callable python runs at breakpoint()"),
    (
        "NODE_OPTIONS",
        "options node applies (`--require` loads code)",
    ),
    ("NODE_PATH", "where node resolves modules"),
    ("PERL5OPT", "options perl applies (`-M` loads code)"),
    ("PERL5LIB", "where perl loads modules"),
    ("PERLLIB", "where perl loads modules"),
    ("RUBYOPT", "options ruby applies (`-r` loads code)"),
    ("RUBYLIB", "where ruby loads libraries"),
    (
        "JAVA_TOOL_OPTIONS",
        "options every JVM applies (`-javaagent` loads code)",
    ),
    ("_JAVA_OPTIONS", "options every JVM applies"),
    ("JDK_JAVA_OPTIONS", "options the java launcher applies"),
    ("RUSTC_WRAPPER", "the program cargo runs instead of rustc"),
    ("RUSTC", "the compiler cargo runs"),
    ("CARGO_BUILD_RUSTC*", "the compiler or wrapper cargo runs"),
    ("CARGO_TARGET_*", "runners and linkers cargo runs"),
    ("MAKEFLAGS", "options make applies (`--eval` runs code)"),
    ("MFLAGS", "options make applies"),
    ("CC", "the compiler make and build scripts run"),
    ("CXX", "the compiler make and build scripts run"),
    (
        "NPM_CONFIG_*",
        "npm settings (`script-shell`, `node-options`)",
    ),
    (
        "npm_config_*",
        "npm settings (`script-shell`, `node-options`)",
    ),
    (
        "TAR_OPTIONS",
        "options tar applies (`--to-command` runs code)",
    ),
    ("RSYNC_RSH", "the remote shell rsync runs"),
    ("CVS_RSH", "the remote shell cvs runs"),
    ("MANOPT", "options man applies (`-P` names a pager)"),
    ("LESSKEY*", "less key bindings, which can run commands"),
    ("TERMINAL", "the terminal program some tools start"),
];

/// The entry of [`EXEC_ENV`] naming `name`, if any.
fn exec_env(name: &str) -> Option<&'static (&'static str, &'static str)> {
    EXEC_ENV.iter().find(|(n, _)| match n.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *n,
    })
}

/// Options that make a program run a command or load code given in its
/// arguments: `(programs, option, reason)`. An option matches as a word,
/// as `--opt=value`, and short ones with the value attached (`-eCMD`).
const CODE_OPTIONS: &[(&[&str], &str, &str)] = &[
    (
        &["make", "gmake"],
        "--eval",
        "evaluates a makefile fragment (`$(shell …)` runs commands)",
    ),
    (&["make", "gmake"], "-E", "evaluates a makefile fragment"),
    (&["make", "gmake"], "--file", "reads a makefile named here"),
    (
        &["tar", "gtar", "bsdtar"],
        "--to-command",
        "pipes each file to a command",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "--checkpoint-action",
        "`exec=` runs a command",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "--use-compress-program",
        "runs a program as the compressor",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "-I",
        "runs a program as the compressor",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "--rsh-command",
        "runs a remote shell",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "--info-script",
        "runs a script at each volume",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "--new-volume-script",
        "runs a script at each volume",
    ),
    (
        &["tar", "gtar", "bsdtar"],
        "-F",
        "runs a script at each volume",
    ),
    (&["rsync"], "-e", "the remote shell rsync runs"),
    (&["rsync"], "--rsh", "the remote shell rsync runs"),
    (
        &["rsync"],
        "--rsync-path",
        "the program run on the other side",
    ),
    (&["scp"], "-S", "the program scp runs as ssh"),
    (
        &["git"],
        "--upload-pack",
        "the command git runs for the remote side",
    ),
    (
        &["git"],
        "--receive-pack",
        "the command git runs for the remote side",
    ),
    (
        &["git"],
        "--exec",
        "the command git runs for the remote side",
    ),
    (
        &["git"],
        "-u",
        "the command git runs for the remote side (clone, ls-remote)",
    ),
    (
        &["git"],
        "--config-env",
        "git configuration from the environment",
    ),
    (&["git"], "--exec-path", "where git finds its subcommands"),
    (&["man"], "-P", "the pager man runs"),
    (&["man"], "--pager", "the pager man runs"),
    (&["man"], "-H", "the browser man runs"),
    (&["man"], "--html", "the browser man runs"),
    (&["zip"], "--unzip-command", "the command zip runs to test"),
    (&["zip"], "-TT", "the command zip runs to test"),
    (
        &["sort"],
        "--compress-program",
        "runs a program on temporary files",
    ),
    (
        &["git"],
        "--ext-diff",
        "runs the configured external diff program",
    ),
    (
        &["git"],
        "--textconv",
        "runs the configured text conversion programs",
    ),
    (
        &["vim", "vi", "nvim", "view", "ex", "gvim"],
        "-c",
        "runs an editor command (`:!` runs a shell)",
    ),
    (
        &["vim", "vi", "nvim", "view", "ex", "gvim"],
        "--cmd",
        "runs an editor command",
    ),
    (
        &["vim", "vi", "nvim", "view", "ex", "gvim"],
        "-S",
        "sources an editor script",
    ),
    (
        &["less", "more"],
        "-k",
        "reads key bindings, which can run commands",
    ),
    (&["nmap"], "--script", "runs NSE scripts"),
    (&["script"], "-c", "runs a command in a new terminal"),
    (&["script"], "--command", "runs a command in a new terminal"),
    (&["flock"], "-c", "runs a shell command"),
    (&["flock"], "--command", "runs a shell command"),
    (
        &["su", "runuser"],
        "-c",
        "runs a shell command as another user",
    ),
    (
        &["su", "runuser"],
        "--command",
        "runs a shell command as another user",
    ),
    (
        &["npm", "pnpm", "yarn"],
        "--script-shell",
        "the shell package scripts run in",
    ),
    (
        &["ssh", "scp", "sftp", "autossh"],
        "-o",
        "ssh options can run commands (ProxyCommand, LocalCommand, KnownHostsCommand)",
    ),
    (
        &["ssh", "autossh"],
        "-F",
        "reads an ssh config, which can run commands",
    ),
];

/// ssh `-o` keys that run a local command.
const SSH_EXEC_KEYS: &[&str] = &[
    "proxycommand",
    "localcommand",
    "permitlocalcommand",
    "knownhostscommand",
    "remotecommand",
    "match",
];

/// git configuration keys that name a command, load code or another
/// config (`git -c KEY=VALUE`), lower-case, `*` for one component.
const GIT_EXEC_KEYS: &[&str] = &[
    "core.pager",
    "core.editor",
    "core.sshcommand",
    "core.fsmonitor",
    "core.hookspath",
    "core.askpass",
    "core.gitproxy",
    "core.alternaterefscommand",
    "core.worktree",
    "sequence.editor",
    "diff.external",
    "diff.*.textconv",
    "diff.*.command",
    "merge.*.driver",
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "credential.helper",
    "credential.*.helper",
    "gpg.program",
    "gpg.*.program",
    "pager.*",
    "include.path",
    "includeif.*.path",
    "uploadpack.packobjectshook",
    "remote.*.uploadpack",
    "remote.*.receivepack",
    "protocol.ext.allow",
    "protocol.allow",
    "web.browser",
    "browser.*.cmd",
    "browser.*.path",
    "man.viewer",
    "man.*.cmd",
    "man.*.path",
    "difftool.*.cmd",
    "mergetool.*.cmd",
    "sendemail.smtpserver",
    "sendemail.tocmd",
    "sendemail.cccmd",
];

/// Whether `key` (lower-cased) matches a pattern of [`GIT_EXEC_KEYS`].
fn git_exec_key(key: &str) -> bool {
    let k: Vec<&str> = key.split('.').collect();
    GIT_EXEC_KEYS.iter().any(|p| {
        let p: Vec<&str> = p.split('.').collect();
        match (p.len(), k.len()) {
            // `diff.*.textconv` also matches subsections holding dots.
            (3, n) if n >= 3 => {
                p[0] == k[0] && p[2] == k[n - 1] && (p[1] == "*" || k[1..n - 1].join(".") == p[1])
            }
            (2, 2) => p[0] == k[0] && (p[1] == "*" || p[1] == k[1]),
            _ => false,
        }
    })
}

/// Arguments that make `prog` run code given in them (see
/// [`CODE_OPTIONS`], `git -c`, `git ext::` URLs, make `$(shell …)`).
fn code_options(prog: &str, rest: &[Word], a: &mut Analysis) {
    let p = prog;
    let mut i = 0;
    while i < rest.len() {
        let t = rest[i].text.as_str();
        let next = rest.get(i + 1).map(|w| w.text.as_str());
        i += 1;
        if t == "--" && p != "git" {
            break;
        }
        if matches!(p, "git") && t == "-c" {
            if let Some(kv) = next {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let k = k.to_ascii_lowercase();
                if git_exec_key(&k) || (k.starts_with("alias.") && v.trim_start().starts_with('!'))
                {
                    a.unresolved
                        .push(format!("`git -c {k}` names a command or code git runs"));
                }
            }
            i += 1;
            continue;
        }
        if p == "git" && t.starts_with("ext::") {
            a.unresolved.push("a git `ext::` URL runs a command".into());
            continue;
        }
        if matches!(p, "make" | "gmake") && (t.contains("$(shell") || t.contains("${shell")) {
            a.unresolved
                .push("`make` is given a `$(shell …)` to evaluate".into());
            continue;
        }
        for (progs, opt, reason) in CODE_OPTIONS {
            if !progs.contains(&p) {
                continue;
            }
            let long = opt.starts_with("--");
            // GNU and git options may be shortened to any unambiguous
            // prefix (`--to-com=sh` is `--to-command=sh`).
            // Options that are prefixes of another yet options of their own
            // (`tar --checkpoint=N` only prints progress) are not shortenings.
            let name = t.split('=').next().unwrap_or(t);
            let own = name == "--checkpoint";
            let exact = t == *opt || (long && !own && name.len() >= 5 && opt.starts_with(name));
            let joined = if long {
                t.strip_prefix(opt).is_some_and(|r| r.starts_with('='))
            } else {
                // `-eCMD`, `-oProxyCommand=…`; not a longer long option.
                !t.starts_with("--") && t.len() > opt.len() && t.starts_with(opt)
            };
            if !(exact || joined) {
                continue;
            }
            if *opt == "-o" {
                let v = if exact { next.unwrap_or("") } else { &t[2..] };
                let key = v
                    .split(['=', ' ', '\t'])
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !SSH_EXEC_KEYS.contains(&key.as_str()) {
                    continue;
                }
            }
            a.unresolved.push(format!("`{p} {opt}`: {reason}"));
        }
    }
}

/// An assignment (`NAME=value`) to a variable of [`EXEC_ENV`].
fn check_assignment(t: &str, a: &mut Analysis) {
    let Some((name, _)) = t.split_once('=') else {
        return;
    };
    if let Some((_, why)) = exec_env(name) {
        a.unresolved
            .push(format!("assignment to {name} changes what runs: {why}"));
    }
}

/// Whether an awk program can do more than transform its input.
fn awk_escapes(program: &str) -> bool {
    [
        "system", "|", ">", "getline", "ENVIRON", "PROCINFO", "@load", "close(",
    ]
    .iter()
    .any(|k| program.contains(k))
}

/// The sed scripts of an argument list as (text, dynamic): `-e` values, or
/// the first positional when there are none. A script file (`-f FILE`)
/// cannot be read here, so it counts as dynamic.
fn sed_scripts(args: &[Word]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut first_positional = None;
    let mut i = 0;
    while i < args.len() {
        let w = &args[i];
        let t = w.text.as_str();
        i += 1;
        if matches!(t, "-f" | "--file") || t.starts_with("--file=") {
            return vec![(String::new(), true)];
        }
        if matches!(t, "-e" | "--expression") {
            if let Some(v) = args.get(i) {
                out.push((v.text.clone(), v.dynamic));
                i += 1;
            }
        } else if let Some(v) = t.strip_prefix("--expression=") {
            out.push((v.to_string(), w.dynamic));
        } else if !t.starts_with('-') && first_positional.is_none() {
            first_positional = Some((t.to_string(), w.dynamic));
        }
    }
    if out.is_empty() {
        out.extend(first_positional);
    }
    out
}

/// Whether a sed script runs commands (`e`, `s///e`) or touches files other
/// than its operands (`r`, `R`, `w`, `W`, `s///w`).
fn sed_escapes(script: &str) -> bool {
    let s: Vec<char> = script.chars().collect();
    let mut i = 0;
    while i < s.len() {
        // Skip separators, addresses and negation before a command letter.
        match s[i] {
            ';' | '\n' | ' ' | '\t' | '{' | '}' | '!' | ',' | '$' | '0'..='9' | '~' | '+' => {
                i += 1;
                continue;
            }
            '/' | '\\' => {
                // A regex address: `/re/` or `\cREc`.
                let d = if s[i] == '\\' {
                    i += 1;
                    s.get(i).copied().unwrap_or('/')
                } else {
                    '/'
                };
                i += 1;
                while i < s.len() && s[i] != d {
                    i += if s[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        let cmd = s[i];
        i += 1;
        match cmd {
            'e' | 'r' | 'R' | 'w' | 'W' => return true,
            's' | 'y' => {
                let Some(&d) = s.get(i) else { return false };
                i += 1;
                for _ in 0..2 {
                    while i < s.len() && s[i] != d {
                        i += if s[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                let flags_start = i;
                while i < s.len() && !matches!(s[i], ';' | '\n' | '}') {
                    i += 1;
                }
                let flags: String = s[flags_start.min(s.len())..i.min(s.len())].iter().collect();
                if cmd == 's' && flags.contains(['e', 'w', 'W']) {
                    return true;
                }
            }
            'a' | 'i' | 'c' | ':' | 'b' | 't' | 'T' | 'q' | 'Q' | 'l' | 'L' => {
                // Text or label to the end of the command.
                while i < s.len()
                    && s[i] != '\n'
                    && !(matches!(cmd, 'b' | 't' | 'T' | ':') && s[i] == ';')
                {
                    i += 1;
                }
            }
            _ => {}
        }
    }
    false
}

impl CommandPolicy {
    /// Judges an analysis; path checks are done by the caller. `unnamed`
    /// rises with what no named rule explains (defaults, unresolved).
    pub fn judge(
        &self,
        an: &Analysis,
        matched: &mut Vec<MatchedRule>,
        reasons: &mut Vec<String>,
        unnamed: &mut Decision,
    ) -> Decision {
        let mut decision = Decision::Allow;
        for e in &an.execs {
            let (d, named) = self.judge_exec(e, matched, reasons);
            decision = decision.max(d);
            if !named {
                *unnamed = (*unnamed).max(d);
            }
        }
        for rule in self.rules.iter().filter(|r| r.is_text_rule()) {
            let Some(re) = &rule.pattern else { continue };
            if let Some(t) = an.texts.iter().find(|t| re.is_match(t)) {
                decision = decision.max(rule.decision);
                matched.push(MatchedRule {
                    id: rule.id.clone(),
                    decision: rule.decision,
                    reason: rule.reason.clone(),
                    subject: t.clone(),
                });
                if rule.decision > Decision::Allow {
                    reasons.push(rule.reason.clone());
                }
            }
        }
        if !an.unresolved.is_empty() {
            decision = decision.max(self.unresolved);
            *unnamed = (*unnamed).max(self.unresolved);
            for u in &an.unresolved {
                reasons.push(format!("cannot resolve statically: {u}"));
            }
        }
        decision
    }

    /// The decision on one program, and whether a named rule gave it.
    fn judge_exec(
        &self,
        e: &Exec,
        matched: &mut Vec<MatchedRule>,
        reasons: &mut Vec<String>,
    ) -> (Decision, bool) {
        let joined = e.args.join(" ");
        let mut best: Option<Decision> = None;
        for rule in self.rules.iter().filter(|r| !r.is_text_rule()) {
            let prog_ok = rule.programs.is_empty()
                || rule
                    .programs
                    .iter()
                    .any(|p| *p == e.program || *p == family(&e.program));
            if !prog_ok {
                continue;
            }
            if let Some(re) = &rule.args
                && !re.is_match(&joined)
            {
                continue;
            }
            if let Some(re) = &rule.except_args
                && re.is_match(&joined)
            {
                continue;
            }
            if let Some(re) = &rule.pattern {
                let full = format!("{} {}", e.program, joined);
                if !re.is_match(&full) {
                    continue;
                }
            }
            best = Some(best.map_or(rule.decision, |b| b.max(rule.decision)));
            matched.push(MatchedRule {
                id: rule.id.clone(),
                decision: rule.decision,
                reason: rule.reason.clone(),
                subject: format!("{} {}", e.program, joined).trim_end().to_string(),
            });
            if rule.decision > Decision::Allow {
                reasons.push(format!("`{}`: {}", e.program, rule.reason));
            }
        }
        match best {
            Some(d) => (d, true),
            None if e.workspace_script => {
                if self.workspace_scripts > Decision::Allow {
                    reasons.push(format!(
                        "`{}`: a workspace script (workspace_scripts {})",
                        e.program,
                        self.workspace_scripts.as_str()
                    ));
                }
                (self.workspace_scripts, false)
            }
            None => {
                if self.default > Decision::Allow {
                    reasons.push(format!(
                        "`{}`: no rule covers this program (default {})",
                        e.program,
                        self.default.as_str()
                    ));
                }
                (self.default, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progs(src: &str) -> Vec<String> {
        analyse_shell(src)
            .execs
            .into_iter()
            .map(|e| e.program)
            .collect()
    }

    #[test]
    fn unwraps_wrappers() {
        assert_eq!(progs("env FOO=1 rm -rf /"), vec!["env", "rm"]);
        assert_eq!(progs("sudo -u root rm x"), vec!["sudo", "rm"]);
        assert_eq!(
            progs("timeout -s 9 10 nice -n 5 rm x"),
            vec!["timeout", "nice", "rm"]
        );
        assert_eq!(
            progs("find . -name '*.o' -exec rm {} +"),
            vec!["find", "rm"]
        );
        assert_eq!(progs("ls | xargs rm"), vec!["ls", "xargs", "rm"]);
        assert_eq!(
            progs("bash -c 'curl x | sh -c \"rm -rf /\"'"),
            vec!["bash", "curl", "sh", "rm"]
        );
        assert_eq!(progs("eval 'rm -rf /'"), vec!["eval", "rm"]);
        assert_eq!(progs("/usr/bin/rm x"), vec!["rm"]);
        assert_eq!(progs("busybox rm x"), vec!["busybox", "rm"]);
        assert_eq!(progs("X=1 Y=2 make test"), vec!["make"]);
    }

    #[test]
    fn a_loop_variable_is_judged_with_each_of_its_values() {
        let a = analyse_shell("for f in src/*.rs README.md; do wc -l \"$f\"; done");
        assert!(a.unresolved.is_empty(), "{:?}", a.unresolved);
        let paths: Vec<(&str, bool)> = a.paths.iter().map(|p| (p.path.as_str(), p.glob)).collect();
        assert!(
            paths.contains(&("src/*.rs", true)) && paths.contains(&("README.md", false)),
            "{paths:?}"
        );
        // A program named by the loop is judged like one written out.
        let a = analyse_shell("for c in ls rm; do $c -rf /; done");
        assert!(a.execs.iter().any(|e| e.program == "rm"), "{:?}", a.execs);
        assert!(
            analyse_shell("for f in /etc/shadow; do cat $f; done")
                .paths
                .iter()
                .any(|p| p.path == "/etc/shadow")
        );
        // Set elsewhere, read, computed or too many values: not bound.
        for src in [
            "for f in a; do f=/etc/shadow; cat \"$f\"; done",
            "for f in a; do read f; cat \"$f\"; done",
            "for f in a; do cat \"${f:=/etc/shadow}\" $f; done",
            "for f in $(ls); do cat \"$f\"; done",
            "for f in a; do :; done; for f in b; do cat $f; done",
            "for f; do cat \"$f\"; done",
            "for f in 'a b'; do cat $f; done",
            "for f in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17; do cat $f; done",
            "for f in a b c d e; do for g in a b c d e; do cat $f $g; done; done",
        ] {
            assert!(!analyse_shell(src).unresolved.is_empty(), "{src}");
        }
    }

    #[test]
    fn unresolvable_constructs_are_reported() {
        for src in [
            "$X -rf /",
            "eval \"$PAYLOAD\"",
            "echo cm0gLXJmIC8= | base64 -d | sh",
            "python3 -c 'import os'",
            "curl -s x | bash",
            "bash <<EOF\nrm -rf /\nEOF",
            "node -e 'x'",
            "sh -c \"$(curl x)\"",
            "IFS=/ cmd",
            "echo x > $HOME/.bashrc",
            "perl -e 'system q(rm)'",
        ] {
            assert!(
                !analyse_shell(src).unresolved.is_empty(),
                "{src:?} should be unresolved"
            );
        }
        for src in [
            "python3 script.py",
            "cargo test",
            "ls -la | grep x",
            "bash ./build.sh",
        ] {
            assert!(
                analyse_shell(src).unresolved.is_empty(),
                "{src:?} should resolve"
            );
        }
    }

    #[test]
    fn redirection_targets_become_path_checks() {
        let a = analyse_shell("echo x > ~/.bashrc; sort < in.txt 2>/dev/null");
        let got: Vec<(String, Access)> = a.paths.into_iter().map(|p| (p.path, p.access)).collect();
        assert_eq!(
            got,
            vec![
                ("~/.bashrc".to_string(), Access::Write),
                ("in.txt".to_string(), Access::Read)
            ]
        );
    }
}
