//! A POSIX-shell parser sufficient to judge a command string: it splits
//! lists, pipelines, subshells, command and process substitutions,
//! redirections and here-documents into simple commands, removing quotes
//! and backslashes the way the shell would.
//!
//! It never guesses: any part whose value is only known at run time
//! (a parameter expansion, a substitution, a glob or brace expansion) is
//! marked `dynamic`, and constructs it does not analyse are reported as
//! `problems`. The policy treats both as "cannot resolve", never as allow.

/// Deepest nesting of substitutions/subshells/`sh -c` strings analysed.
pub const MAX_DEPTH: usize = 12;

/// One word after quote removal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word {
    pub text: String,
    /// Contains an expansion or substitution: the value is not static.
    pub dynamic: bool,
    /// Contains an unquoted glob character (`*`, `?`, `[`).
    pub glob: bool,
    /// Any part of it was quoted or escaped (so it cannot be a keyword).
    pub quoted: bool,
    /// An unquoted `NAME=` starts it: an assignment when it leads a
    /// command, whatever quoting its value has (`PAGER='sh -c x' git`).
    pub assign: bool,
    /// The whole word is one plain parameter reference (`$f`, `"${f}"`):
    /// its value is the variable's, whatever that is bound to.
    pub var: Option<String>,
    /// Every parameter the word expands (`x$A"${B:-c}"` has `A`, `B`);
    /// `!` for an indirect one (`${!name}`), whose target is unknown.
    pub refs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirKind {
    Read,
    Write,
    /// `>&N` / `<&N`: duplicates a descriptor, no file.
    Dup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub kind: RedirKind,
    pub target: Word,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimpleCommand {
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
    /// Standard input is another command's output.
    pub stdin_pipe: bool,
    /// Standard input is a here-document or here-string.
    pub stdin_data: bool,
}

/// Everything a command string would run, flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub commands: Vec<SimpleCommand>,
    /// Constructs that could not be analysed, as reasons.
    pub problems: Vec<String>,
}

/// `NAME` when `raw` (a word as written) is exactly `$NAME` or `${NAME}`,
/// alone or in double quotes.
fn plain_reference(raw: &str) -> Option<String> {
    let r = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let r = r.strip_prefix('$')?;
    let name = r
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(r);
    let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then(|| name.to_string())
}

/// The command text with the contents of quoted strings removed, for
/// pattern rules: `grep -rn 'curl x | sh' docs/` is a search, not a pipe
/// into a shell. Double-quoted strings that expand something (`"$HOME"`,
/// `"$(…)"`) are kept, since their expansions are live. Scripts handed to `sh -c` or `eval` are
/// analysed (and masked) on their own.
pub fn mask_quoted(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '\'' => {
                out.push('\'');
                for (_, n) in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                }
                out.push('\'');
            }
            '"' => {
                // Find the closing quote, honouring backslash escapes.
                let rest = &src[i + 1..];
                let mut end = rest.len();
                let mut esc = false;
                for (j, n) in rest.char_indices() {
                    if esc {
                        esc = false;
                    } else if n == '\\' {
                        esc = true;
                    } else if n == '"' {
                        end = j;
                        break;
                    }
                }
                let body = &rest[..end];
                out.push('"');
                if body.contains('$') || body.contains('`') {
                    out.push_str(body);
                }
                out.push('"');
                while chars.peek().is_some_and(|(k, _)| *k <= i + end + 1) {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Parses a command string. Never fails: what it cannot analyse lands in
/// `problems`.
pub fn parse(src: &str) -> Script {
    parse_at(src, 0)
}

pub(crate) fn parse_at(src: &str, depth: usize) -> Script {
    let mut p = Parser {
        s: src.chars().collect(),
        i: 0,
        out: Script::default(),
        depth,
    };
    if depth > MAX_DEPTH {
        p.out
            .problems
            .push("command nests too deeply to analyse".into());
        return p.out;
    }
    p.seq(End::Eof);
    p.out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Paren,
    Backtick,
}

struct Parser {
    s: Vec<char>,
    i: usize,
    out: Script,
    depth: usize,
}

const META: &[char] = &[' ', '\t', '\n', ';', '&', '|', '<', '>', '(', ')'];

impl Parser {
    fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn problem(&mut self, p: impl Into<String>) {
        let p = p.into();
        if !self.out.problems.contains(&p) {
            self.out.problems.push(p);
        }
    }

    /// Parses a command list until `end`; pushes finished simple commands.
    fn seq(&mut self, end: End) {
        let mut cur = SimpleCommand::default();
        let mut pending_heredocs: Vec<(String, bool)> = Vec::new();
        loop {
            let Some(c) = self.peek(0) else {
                if end != End::Eof {
                    self.problem("unterminated substitution or subshell");
                }
                break;
            };
            match c {
                ' ' | '\t' => self.i += 1,
                '\\' if self.peek(1) == Some('\n') => self.i += 2,
                '#' => {
                    while let Some(c) = self.peek(0) {
                        if c == '\n' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                '\n' => {
                    self.i += 1;
                    self.finish(&mut cur, false);
                    for (delim, expand) in std::mem::take(&mut pending_heredocs) {
                        self.heredoc_body(&delim, expand);
                    }
                }
                ';' => {
                    self.i += 1;
                    if self.peek(0) == Some(';') {
                        self.i += 1;
                        self.problem("`case` statements are not analysed");
                    }
                    self.finish(&mut cur, false);
                }
                '&' => {
                    if self.peek(1) == Some('>') {
                        self.i += 2;
                        if self.peek(0) == Some('>') {
                            self.i += 1;
                        }
                        self.redirect_target(&mut cur, RedirKind::Write);
                    } else {
                        self.i += if self.peek(1) == Some('&') { 2 } else { 1 };
                        self.finish(&mut cur, false);
                    }
                }
                '|' => {
                    if self.peek(1) == Some('|') {
                        self.i += 2;
                        self.finish(&mut cur, false);
                    } else {
                        self.i += if self.peek(1) == Some('&') { 2 } else { 1 };
                        self.finish(&mut cur, true);
                    }
                }
                '(' => {
                    self.i += 1;
                    if !cur.words.is_empty() {
                        // `name() { ...; }` or `$(( ))` outside a word.
                        self.problem("function definitions are not analysed");
                    }
                    self.nested(End::Paren);
                }
                ')' => {
                    self.i += 1;
                    if end == End::Paren {
                        break;
                    }
                    self.problem("unbalanced `)` (or a `case` pattern, which is not analysed)");
                }
                '`' if end == End::Backtick => {
                    self.i += 1;
                    break;
                }
                '<' | '>' => self.redirection(&mut cur, &mut pending_heredocs),
                _ => {
                    let w = self.word(end);
                    // `2>file`: digits immediately before a redirection are an fd.
                    if matches!(self.peek(0), Some('<' | '>'))
                        && !w.quoted
                        && !w.text.is_empty()
                        && w.text.chars().all(|c| c.is_ascii_digit())
                    {
                        continue;
                    }
                    cur.words.push(w);
                }
            }
        }
        self.finish(&mut cur, false);
        if !pending_heredocs.is_empty() {
            self.problem("here-document without a body");
        }
    }

    /// Ends the current simple command; `pipe` marks the next as fed by it.
    fn finish(&mut self, cur: &mut SimpleCommand, pipe: bool) {
        let done = std::mem::take(cur);
        if !done.words.is_empty() || !done.redirects.is_empty() {
            self.out.commands.push(done);
        }
        cur.stdin_pipe = pipe;
    }

    /// Parses `(...)`, `$(...)`, `<(...)` or a backtick body as its own
    /// script and merges its commands: they run too.
    fn nested(&mut self, end: End) {
        if self.depth + 1 > MAX_DEPTH {
            self.problem("command nests too deeply to analyse");
        }
        let mut inner = Parser {
            s: std::mem::take(&mut self.s),
            i: self.i,
            out: Script::default(),
            depth: self.depth + 1,
        };
        inner.seq(end);
        self.s = std::mem::take(&mut inner.s);
        self.i = inner.i;
        self.out.commands.extend(inner.out.commands);
        for p in inner.out.problems {
            self.problem(p);
        }
    }

    fn redirection(&mut self, cur: &mut SimpleCommand, heredocs: &mut Vec<(String, bool)>) {
        let c = self.peek(0);
        let n = self.peek(1);
        match (c, n) {
            (Some('<'), Some('(')) | (Some('>'), Some('(')) => {
                // Process substitution: the inner commands run; the word is a path we cannot know.
                self.i += 2;
                self.nested(End::Paren);
                cur.words.push(Word {
                    text: "/dev/fd/?".into(),
                    dynamic: true,
                    ..Word::default()
                });
            }
            (Some('<'), Some('<')) => {
                self.i += 2;
                if self.peek(0) == Some('<') {
                    self.i += 1;
                    let w = self.skip_blank_then_word();
                    if w.dynamic {
                        self.problem("here-string with an expansion");
                    }
                    cur.stdin_data = true;
                    return;
                }
                if self.peek(0) == Some('-') {
                    self.i += 1;
                }
                let w = self.skip_blank_then_word();
                cur.stdin_data = true;
                heredocs.push((w.text, !w.quoted));
            }
            (Some('<'), Some('&')) | (Some('>'), Some('&')) => {
                self.i += 2;
                let w = self.skip_blank_then_word();
                if w.text == "-"
                    || (!w.text.is_empty() && w.text.chars().all(|c| c.is_ascii_digit()))
                {
                    cur.redirects.push(Redirect {
                        kind: RedirKind::Dup,
                        target: w,
                    });
                } else {
                    // `>&file` is bash for `&>file`.
                    cur.redirects.push(Redirect {
                        kind: RedirKind::Write,
                        target: w,
                    });
                }
            }
            (Some('<'), Some('>')) => {
                self.i += 2;
                self.redirect_target(cur, RedirKind::Write);
            }
            (Some('<'), _) => {
                self.i += 1;
                self.redirect_target(cur, RedirKind::Read);
            }
            _ => {
                self.i += 1;
                if matches!(self.peek(0), Some('>' | '|')) {
                    self.i += 1;
                }
                self.redirect_target(cur, RedirKind::Write);
            }
        }
    }

    fn redirect_target(&mut self, cur: &mut SimpleCommand, kind: RedirKind) {
        let w = self.skip_blank_then_word();
        if w.text.is_empty() && !w.dynamic {
            self.problem("redirection without a target");
        }
        cur.redirects.push(Redirect { kind, target: w });
    }

    fn skip_blank_then_word(&mut self) -> Word {
        while matches!(self.peek(0), Some(' ' | '\t')) {
            self.i += 1;
        }
        self.word(End::Eof)
    }

    /// Consumes a here-document body up to its delimiter line.
    fn heredoc_body(&mut self, delim: &str, expands: bool) {
        loop {
            let start = self.i;
            while let Some(c) = self.peek(0) {
                if c == '\n' {
                    break;
                }
                self.i += 1;
            }
            let line: String = self.s[start..self.i].iter().collect();
            let at_end = self.peek(0).is_none();
            self.i = (self.i + 1).min(self.s.len());
            if line.trim_start_matches('\t') == delim {
                return;
            }
            if expands && (line.contains("$(") || line.contains('`')) {
                self.problem("command substitution inside a here-document");
            }
            if at_end {
                self.problem("here-document is not terminated");
                return;
            }
        }
    }

    /// Reads one word, removing quotes; stops at an unquoted metacharacter.
    fn word(&mut self, end: End) -> Word {
        let start = self.i;
        let mut w = self.word_body(end);
        if w.dynamic && w.text.is_empty() {
            let raw: String = self.s[start..self.i].iter().collect();
            w.var = plain_reference(&raw);
        }
        w
    }

    fn word_body(&mut self, end: End) -> Word {
        let mut w = Word::default();
        let mut brace_open = false;
        while let Some(c) = self.peek(0) {
            if META.contains(&c) || (c == '`' && end == End::Backtick) {
                break;
            }
            match c {
                '\'' => {
                    w.quoted = true;
                    self.i += 1;
                    loop {
                        match self.peek(0) {
                            None => {
                                self.problem("unterminated single quote");
                                return w;
                            }
                            Some('\'') => {
                                self.i += 1;
                                break;
                            }
                            Some(ch) => {
                                w.text.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                }
                '"' => {
                    w.quoted = true;
                    self.i += 1;
                    self.double_quoted(&mut w);
                }
                '\\' => {
                    w.quoted = true;
                    match self.peek(1) {
                        Some('\n') => self.i += 2,
                        Some(ch) => {
                            w.text.push(ch);
                            self.i += 2;
                        }
                        None => self.i += 1,
                    }
                }
                '$' => self.dollar(&mut w, false),
                '`' => {
                    self.i += 1;
                    w.dynamic = true;
                    self.nested(End::Backtick);
                }
                '*' | '?' | '[' => {
                    w.glob = true;
                    w.text.push(c);
                    self.i += 1;
                }
                '{' => {
                    brace_open = true;
                    w.text.push(c);
                    self.i += 1;
                }
                '}' => {
                    // `{a,b}` / `{1..3}` expand into several words.
                    if brace_open && !w.text.is_empty() {
                        let inner = w.text.rsplit('{').next().unwrap_or("");
                        if inner.contains(',') || inner.contains("..") {
                            w.dynamic = true;
                        }
                    }
                    w.text.push(c);
                    self.i += 1;
                }
                _ => {
                    if c == '='
                        && !w.quoted
                        && !w.dynamic
                        && !w.glob
                        && !w.assign
                        && w.text
                            .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && w.text
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        w.assign = true;
                    }
                    w.text.push(c);
                    self.i += 1;
                }
            }
        }
        w
    }

    fn double_quoted(&mut self, w: &mut Word) {
        loop {
            match self.peek(0) {
                None => {
                    self.problem("unterminated double quote");
                    return;
                }
                Some('"') => {
                    self.i += 1;
                    return;
                }
                Some('\\') => match self.peek(1) {
                    Some(ch @ ('$' | '`' | '"' | '\\')) => {
                        w.text.push(ch);
                        self.i += 2;
                    }
                    Some('\n') => self.i += 2,
                    _ => {
                        w.text.push('\\');
                        self.i += 1;
                    }
                },
                Some('$') => self.dollar(w, true),
                Some('`') => {
                    self.i += 1;
                    w.dynamic = true;
                    self.nested(End::Backtick);
                }
                Some(ch) => {
                    w.text.push(ch);
                    self.i += 1;
                }
            }
        }
    }

    /// `$…`: substitutions are parsed (their commands run), expansions make
    /// the word dynamic; `$'…'` is decoded, since it is static.
    fn dollar(&mut self, w: &mut Word, in_dq: bool) {
        match self.peek(1) {
            Some('(') if self.peek(2) == Some('(') => {
                // Arithmetic: may contain substitutions, so parse it as a subshell body.
                self.i += 3;
                w.dynamic = true;
                self.nested(End::Paren);
                if self.peek(0) == Some(')') {
                    self.i += 1;
                }
            }
            Some('(') => {
                self.i += 2;
                w.dynamic = true;
                self.nested(End::Paren);
            }
            Some('{') => {
                self.i += 2;
                w.dynamic = true;
                let name: String = self.s[self.i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                if self.peek(0) == Some('!') {
                    w.refs.push("!".into());
                } else if !name.is_empty() {
                    w.refs.push(name);
                }
                let mut level = 1;
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    match c {
                        '{' => level += 1,
                        '}' => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        '$' if self.peek(0) == Some('(') => {
                            self.i += 1;
                            self.nested(End::Paren);
                        }
                        '`' => self.nested(End::Backtick),
                        _ => {}
                    }
                }
            }
            Some('\'') if !in_dq => {
                self.i += 2;
                w.quoted = true;
                self.ansi_c(w);
            }
            Some('"') if !in_dq => {
                self.i += 1; // `$"…"` is a translated string: treat as "…".
            }
            Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
                let start = self.i + 1;
                self.i += 2;
                w.dynamic = true;
                if c.is_ascii_alphabetic() || c == '_' {
                    while matches!(self.peek(0), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                        self.i += 1;
                    }
                    w.refs.push(self.s[start..self.i].iter().collect());
                }
            }
            _ => {
                w.text.push('$');
                self.i += 1;
            }
        }
    }

    fn ansi_c(&mut self, w: &mut Word) {
        loop {
            match self.peek(0) {
                None => {
                    self.problem("unterminated $'…' string");
                    return;
                }
                Some('\'') => {
                    self.i += 1;
                    return;
                }
                Some('\\') => {
                    self.i += 1;
                    let Some(e) = self.peek(0) else { continue };
                    self.i += 1;
                    let simple = match e {
                        'n' => Some('\n'),
                        't' => Some('\t'),
                        'r' => Some('\r'),
                        'a' => Some('\x07'),
                        'b' => Some('\x08'),
                        'e' | 'E' => Some('\x1b'),
                        'f' => Some('\x0c'),
                        'v' => Some('\x0b'),
                        '\\' | '\'' | '"' | '?' => Some(e),
                        _ => None,
                    };
                    if let Some(ch) = simple {
                        w.text.push(ch);
                        continue;
                    }
                    let (radix, max) = match e {
                        'x' => (16, 2),
                        'u' => (16, 4),
                        'U' => (16, 8),
                        '0'..='7' => {
                            self.i -= 1;
                            (8, 3)
                        }
                        _ => {
                            w.text.push('\\');
                            w.text.push(e);
                            continue;
                        }
                    };
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < max {
                        match self.peek(0).and_then(|c| c.to_digit(radix)) {
                            Some(d) => {
                                v = v * radix + d;
                                self.i += 1;
                                n += 1;
                            }
                            None => break,
                        }
                    }
                    match char::from_u32(v) {
                        Some(ch) if n > 0 => w.text.push(ch),
                        _ => w.dynamic = true,
                    }
                }
                Some(ch) => {
                    w.text.push(ch);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<Vec<String>> {
        parse(src)
            .commands
            .iter()
            .map(|c| c.words.iter().map(|w| w.text.clone()).collect())
            .collect()
    }

    #[test]
    fn splits_lists_pipelines_and_substitutions() {
        assert_eq!(
            names("ls; rm -rf ~"),
            vec![vec!["ls"], vec!["rm", "-rf", "~"]]
        );
        assert_eq!(
            names("a && b || c & d"),
            vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"]]
        );
        assert_eq!(
            names("echo $(whoami) `id`"),
            vec![vec!["whoami"], vec!["id"], vec!["echo", "", ""]]
        );
        assert_eq!(
            names("(cd x; make) | tee log"),
            vec![vec!["cd", "x"], vec!["make"], vec!["tee", "log"]]
        );
        assert_eq!(
            names("diff <(ls a) b"),
            vec![vec!["ls", "a"], vec!["diff", "/dev/fd/?", "b"]]
        );
        let s = parse("curl x | sh");
        assert!(s.commands[1].stdin_pipe);
    }

    #[test]
    fn removes_quotes_like_the_shell() {
        assert_eq!(names(r#"r''m -rf "/""#), vec![vec!["rm", "-rf", "/"]]);
        assert_eq!(names(r"\rm x"), vec![vec!["rm", "x"]]);
        assert_eq!(names(r"$'\x72\x6d' x"), vec![vec!["rm", "x"]]);
        assert_eq!(
            names("echo 'a;b' \"c|d\""),
            vec![vec!["echo", "a;b", "c|d"]]
        );
    }

    #[test]
    fn marks_what_is_not_static() {
        let s = parse("$CMD x; r{m,} y; ls *.rs; cat${IFS}/etc/passwd");
        let w: Vec<(bool, bool)> = s
            .commands
            .iter()
            .map(|c| (c.words[0].dynamic, c.words[0].glob))
            .collect();
        assert_eq!(
            w,
            vec![(true, false), (true, false), (false, false), (true, false)]
        );
        assert!(s.commands[2].words[1].glob);
    }

    #[test]
    fn a_word_that_is_one_reference_names_its_variable() {
        let s = parse(r#"x $f "${g}" "$h"x $i$j ${k:-/etc} "$(id)" 'l'"#);
        let v: Vec<Option<&str>> = s
            .commands
            .last()
            .unwrap()
            .words
            .iter()
            .map(|w| w.var.as_deref())
            .collect();
        assert_eq!(
            v,
            [None, Some("f"), Some("g"), None, None, None, None, None]
        );
        let refs: Vec<Vec<String>> = parse(r#"echo x$A"${B:-c}" ${!C} $1"#).commands[0]
            .words
            .iter()
            .map(|w| w.refs.clone())
            .collect();
        assert_eq!(
            refs,
            [
                vec![],
                vec!["A".to_string(), "B".into()],
                vec!["!".into()],
                vec![]
            ]
        );
    }

    #[test]
    fn redirections_and_heredocs() {
        let s = parse("echo x > ~/.bashrc 2>&1; sort < in.txt >> out.txt");
        assert_eq!(s.commands[0].redirects[0].kind, RedirKind::Write);
        assert_eq!(s.commands[0].redirects[0].target.text, "~/.bashrc");
        assert_eq!(s.commands[0].redirects[1].kind, RedirKind::Dup);
        assert_eq!(s.commands[1].redirects.len(), 2);
        let h = parse("cat <<EOF > f\nhello $(id)\nEOF\nls");
        assert_eq!(h.commands.len(), 2);
        assert!(h.commands[0].stdin_data);
        assert!(!h.problems.is_empty());
        assert!(parse("cat <<'EOF'\n$(id)\nEOF").problems.is_empty());
    }

    #[test]
    fn reports_what_it_cannot_analyse() {
        assert!(!parse("echo 'open").problems.is_empty());
        assert!(!parse("echo $(ls").problems.is_empty());
        assert!(!parse("f() { rm -rf /; }; f").problems.is_empty());
        let deep = "$(".repeat(40) + &")".repeat(40);
        assert!(!parse(&deep).problems.is_empty());
    }
}
