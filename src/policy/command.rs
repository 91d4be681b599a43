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
    for cmd in &script.commands {
        analyse_simple(cmd, depth, a);
    }
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
    // Leading assignments (`A=1 cmd`) and reserved words are not the program.
    let mut words: &[Word] = &cmd.words;
    while let Some(w) = words.first() {
        let t = w.text.as_str();
        let is_assign = !w.quoted
            && t.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !n.starts_with(|c: char| c.is_ascii_digit())
            });
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
    }
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
    }
}

/// Variables whose value changes what later commands run.
fn check_assignment(t: &str, a: &mut Analysis) {
    let name = t.split('=').next().unwrap_or("");
    if t.contains('=')
        && matches!(
            name,
            "IFS"
                | "PATH"
                | "LD_PRELOAD"
                | "LD_LIBRARY_PATH"
                | "LD_AUDIT"
                | "BASH_ENV"
                | "ENV"
                | "PROMPT_COMMAND"
                | "PYTHONPATH"
                | "PYTHONSTARTUP"
                | "NODE_OPTIONS"
                | "PERL5OPT"
                | "RUBYOPT"
                | "GIT_SSH_COMMAND"
                | "GIT_EXEC_PATH"
                | "SHELLOPTS"
                | "BASHOPTS"
                | "PS4"
                | "HISTFILE"
        )
    {
        a.unresolved
            .push(format!("assignment to {name} changes what runs"));
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
