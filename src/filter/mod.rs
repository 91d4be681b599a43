//! The output filter: what reaches the model (stdout, stderr, file contents,
//! error text, reasons) passes through here.
//!
//! - Secrets by pattern (`policies/secrets/rules.toml`): an Aho-Corasick
//!   DFA (`scan`) finds each rule's keywords; only rules whose keywords
//!   occur run their regex, and only on the lines around the hits
//!   (multi-line rules — private keys — on the whole text). Entropy and
//!   placeholder checks keep ordinary hashes, identifiers and `${VARS}` out.
//! - The host's own secrets, by literal value: environment variables whose
//!   names match the policy's `redaction.secret_env` globs, and lines of
//!   `redaction.secret_files`, plus their base64, URL and hex encodings.
//! - URLs whose host is not in the policy's `network.allow_hosts` (links
//!   and markdown images are an exfiltration channel), on the lines that
//!   hold a `://` (one of the keywords).
//!
//! A replacement can make a new match next to it, so the text is filtered
//! until nothing changes; the passes after the first read only the changed
//! lines, with the first pass's keyword hits carried over (`Seen`).
//!
//! Secrets become `[REDACTED:kind]`, blocked URLs `[BLOCKED-URL]`; the
//! report counts kinds and never holds a secret. Redacting twice changes
//! nothing.

pub mod gitleaks;
mod scan;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The embedded rule set.
pub const RULES: &str = include_str!("../../policies/secrets/rules.toml");

/// A secret can be at most this long for the streaming filter to catch it
/// across chunk boundaries (a 4096-bit RSA PEM block is about 3.3 KiB).
pub const MAX_SECRET_SPAN: usize = 16 << 10;

/// Host-secret values shorter than this are not redacted (they would hit
/// ordinary words).
pub const MIN_HOST_SECRET: usize = 8;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    #[error("secret rules: {0}")]
    Rules(String),
    #[error("secret rule {id}: {detail}")]
    Rule { id: String, detail: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub keywords: Vec<String>,
    pub regex: String,
    #[serde(default)]
    pub group: usize,
    pub entropy: Option<f64>,
    /// A keyword-and-assignment rule: also skip values that look like code
    /// or stand-ins (`settings.KEY`, `get_secret(…)`, `changeme`).
    #[serde(default)]
    pub generic: bool,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub negatives: Vec<String>,
    /// The rule runs on the whole text once a keyword occurs, not only on
    /// the keyword's lines (implied by a `[\s\S]` in the regex).
    #[serde(default)]
    pub multiline: bool,
    /// The rule also reads the line after its keyword's line (a `name:`
    /// line and the `value:` line under it).
    #[serde(default)]
    pub next_line: bool,
    /// Regexes over the whole match: a match one of them finds is no
    /// secret (`public_key = …` for a rule on `…_key = …`).
    #[serde(default)]
    pub allow_match: Vec<String>,
    /// Findings these match are not secrets (rules from a gitleaks file).
    #[serde(skip)]
    pub allow: Vec<gitleaks::AllowSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RuleSpec>,
}

pub fn rule_specs() -> Result<Vec<RuleSpec>, FilterError> {
    toml::from_str::<RuleFile>(RULES)
        .map(|f| f.rule)
        .map_err(|e| FilterError::Rules(e.to_string()))
}

#[derive(Debug)]
struct Rule {
    id: String,
    regex: Regex,
    group: usize,
    entropy: Option<f64>,
    generic: bool,
    multiline: bool,
    next_line: bool,
    /// No keywords: the rule runs on all of the text.
    always: bool,
    /// Allowlist regexes with what they are matched against.
    allow: Vec<(Regex, gitleaks::Target)>,
    /// Lower-case words whose presence in a finding makes it no secret.
    stopwords: Vec<String>,
}

/// What the filter did, without the secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Redactions by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redacted: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "is_zero")]
    pub blocked_urls: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.redacted.is_empty() && self.blocked_urls == 0
    }

    pub fn merge(&mut self, o: Report) {
        for (k, v) in o.redacted {
            *self.redacted.entry(k).or_default() += v;
        }
        self.blocked_urls += o.blocked_urls;
    }

    pub fn total(&self) -> usize {
        self.redacted.values().sum::<usize>() + self.blocked_urls
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rule(usize),
    HostSecret,
    Url,
}

/// Keyword hits a pass keeps for the next (a few MiB; a text dense with
/// keywords past this is read again instead).
const KEEP_HITS: usize = 1 << 18;
/// Text read for keywords at a time.
const HIT_BLOCK: usize = 1 << 20;

/// What a pass read of a text, carried into the text it wrote (see
/// [`Redactor::rewrite`]) so that the next pass reads only what changed.
#[derive(Debug, Default)]
struct Seen {
    /// Every keyword hit, sorted by end; `None` when there were more than
    /// [`KEEP_HITS`].
    hits: Option<Vec<scan::Hit>>,
    /// The markers in the text, sorted.
    marks: Vec<(usize, usize)>,
}

/// The compiled filter. Build once per policy; cheap to share.
#[derive(Debug)]
pub struct Redactor {
    rules: Vec<Rule>,
    keywords: scan::Keywords,
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they read all of the text.
    always: Vec<usize>,
    /// Host secret values and their encodings: patterns of `keywords`
    /// after the rules' keywords.
    literals: Vec<String>,
    /// The link pattern, the allowed hosts as written (lowercase) and as
    /// the `hosts` grammar reads them (parsed once).
    url: Option<(Regex, Vec<String>, crate::hosts::HostList)>,
    /// The keyword pattern `://`, which finds the lines links can be on.
    url_keyword: usize,
    /// URLs to this machine pass the URL filter (see [`is_loopback`]).
    loopback_urls: bool,
    /// Rules that read across lines and have no keywords.
    multiline_always: Vec<usize>,
    /// A keyword or host secret holds `[` or `]` (see
    /// [`Redactor::find_again`]).
    brackets: bool,
    /// The markers this redactor writes. Rules never match into one, so
    /// filtering filtered text changes nothing (found by `redact_seeded`:
    /// `-u name[REDACTED:cli-credentials]` read as a new `user:value`).
    markers: AhoCorasick,
    /// What every marker starts with.
    marker_starts: AhoCorasick,
}

impl Redactor {
    /// Pattern rules only: no host secrets, no URL blocking.
    pub fn new() -> Result<Redactor, FilterError> {
        Redactor::with(&[], None)
    }

    /// Pattern rules, plus host secret values, plus URL blocking when
    /// `allow_hosts` is given (an empty list blocks every URL).
    pub fn with(
        host_secrets: &[String],
        allow_hosts: Option<&[String]>,
    ) -> Result<Redactor, FilterError> {
        Redactor::with_rules(host_secrets, allow_hosts, &[])
    }

    /// [`Redactor::with`], plus `extra` rules (from a gitleaks file: see
    /// [`gitleaks::parse`]).
    pub fn with_rules(
        host_secrets: &[String],
        allow_hosts: Option<&[String]>,
        extra: &[RuleSpec],
    ) -> Result<Redactor, FilterError> {
        let builtin = rule_specs()?;
        let specs: Vec<&RuleSpec> = builtin.iter().chain(extra).collect();
        let mut rules = Vec::new();
        let mut kw: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let regex = compile(&s.id, &ascii_word_boundaries(&s.regex), "")?;
            let groups = regex.captures_len() - 1;
            // `usize::MAX`: gitleaks' default, the first group if any.
            let group = if s.group == usize::MAX {
                groups.min(1)
            } else {
                s.group
            };
            let built_in = i < builtin.len();
            if !valid_id(&s.id) {
                return Err(FilterError::Rule {
                    id: s.id.clone(),
                    detail: ID_RULE.into(),
                });
            }
            if group > groups || (built_in && s.keywords.is_empty()) {
                return Err(FilterError::Rule {
                    id: s.id.clone(),
                    detail: "needs keywords and a valid group".into(),
                });
            }
            let mut allow = Vec::new();
            let mut stopwords = Vec::new();
            for r in &s.allow_match {
                allow.push((compile(&s.id, r, "allow_match: ")?, gitleaks::Target::Match));
            }
            for a in &s.allow {
                for r in &a.regexes {
                    allow.push((compile(&s.id, r, "allowlist regex: ")?, a.target));
                }
                stopwords.extend(a.stopwords.iter().cloned());
            }
            for k in &s.keywords {
                let k = k.to_ascii_lowercase();
                match kw.iter().position(|x| *x == k) {
                    Some(j) => keyword_rules[j].push(i),
                    None => {
                        kw.push(k);
                        keyword_rules.push(vec![i]);
                    }
                }
            }
            rules.push(Rule {
                id: s.id.clone(),
                multiline: s.multiline || s.regex.contains("[\\s\\S]"),
                next_line: s.next_line,
                regex,
                group,
                entropy: s.entropy,
                generic: s.generic,
                always: s.keywords.is_empty(),
                allow,
                stopwords,
            });
        }
        // One automaton reads the text once for the rules' keywords and
        // the host's secret values (those compared exactly after a hit).
        // Every link holds `://`: the URL pattern reads only lines with one.
        let url_keyword = kw.iter().position(|k| k == "://").unwrap_or_else(|| {
            kw.push("://".into());
            keyword_rules.push(Vec::new());
            kw.len() - 1
        });
        let literals = encodings(host_secrets);
        let brackets = kw.iter().chain(&literals).any(|k| k.contains(['[', ']']));
        let keywords =
            scan::Keywords::new(kw.iter().chain(&literals)).map_err(FilterError::Rules)?;
        let url = match allow_hosts {
            Some(h) => Some((
                Regex::new(
                    r#"(?i)(?-u:\b)(?:https?|ftp|wss?)://[^\s/?#<>"'\\`)\]]+[^\s<>"'\\`)\]]*"#,
                )
                .map_err(|e| FilterError::Rules(e.to_string()))?,
                h.iter().map(|h| h.to_ascii_lowercase()).collect(),
                // A list that is not the grammar's (no allowlist mode checks
                // it) still works by the plain rule below.
                crate::hosts::HostList::parse(h).unwrap_or_default(),
            )),
            None => None,
        };
        let mut marks: Vec<String> = rules
            .iter()
            .map(|r| format!("[REDACTED:{}]", r.id))
            .collect();
        marks.extend(["[REDACTED:host-secret]".into(), "[BLOCKED-URL]".into()]);
        // Read only where one of the two fixed prefixes is (`marks`).
        let markers = AhoCorasickBuilder::new()
            .start_kind(aho_corasick::StartKind::Anchored)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&marks)
            .map_err(|e| FilterError::Rules(e.to_string()))?;
        let multiline_always = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.multiline && r.always)
            .map(|(i, _)| i)
            .collect();
        let always = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.always)
            .map(|(i, _)| i)
            .collect();
        Ok(Redactor {
            rules,
            keywords,
            keyword_rules,
            always,
            literals,
            url,
            url_keyword,
            loopback_urls: true,
            multiline_always,
            markers,
            marker_starts: AhoCorasick::new(["[REDACTED:", "[BLOCKED-URL]"])
                .map_err(|e| FilterError::Rules(e.to_string()))?,
            brackets,
        })
    }

    /// Whether URLs to this machine (`localhost`, 127.0.0.0/8, `::1`, and
    /// the `0.0.0.0` / `::` servers print when they listen) pass the URL
    /// filter (default: they do; they reach no other host).
    pub fn loopback_urls(mut self, keep: bool) -> Redactor {
        self.loopback_urls = keep;
        self
    }

    /// Finds what to replace: sorted, non-overlapping spans.
    fn find(&self, text: &str) -> Vec<(usize, usize, Kind)> {
        self.find_opt(text, true)
    }

    fn find_opt(&self, text: &str, urls: bool) -> Vec<(usize, usize, Kind)> {
        let mut seen = Seen::default();
        self.first_pass(text, urls, &mut seen)
    }

    /// A full pass; `seen` gets what it read (keyword hits, markers).
    fn first_pass(&self, text: &str, urls: bool, seen: &mut Seen) -> Vec<(usize, usize, Kind)> {
        seen.marks = self.marks(text);
        seen.hits = Some(Vec::new());
        self.find_in(text, &[(0, text.len())], urls, seen, true)
    }

    /// Finds what to replace in the parts `ranges` of `text` (sorted,
    /// disjoint, whole lines), each read as if it were all of the text,
    /// between the markers `seen.marks`. Keyword hits are read from the
    /// text when `read` (and added to `seen.hits` while that is `Some`, up
    /// to [`KEEP_HITS`]), else taken from `seen.hits`.
    fn find_in(
        &self,
        text: &str,
        ranges: &[(usize, usize)],
        urls: bool,
        seen: &mut Seen,
        read: bool,
    ) -> Vec<(usize, usize, Kind)> {
        let mut spans: Vec<(usize, usize, Kind)> = Vec::new();
        // Which rules to run, and where: lines around keyword hits.
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        let mut block = Vec::new();
        let mut link_lines: Vec<(usize, usize)> = Vec::new();
        let urls = urls && self.url.is_some();
        for &(rs, re) in ranges {
            let sub = &text[rs..re];
            link_lines.clear();
            let mut link_at = |start: usize| {
                let b = sub.as_bytes();
                let ls = memchr::memrchr(b'\n', &b[..start]).map_or(0, |p| p + 1);
                if link_lines.last().is_none_or(|&(_, e)| ls > e) {
                    let le = memchr::memchr(b'\n', &b[start..]).map_or(b.len(), |p| start + p);
                    link_lines.push((ls, le));
                }
            };
            if !read {
                let hits = seen.hits.as_deref().unwrap_or_default();
                let first = hits.partition_point(|h| h.end <= rs);
                for h in hits[first..].iter().take_while(|h| h.end <= re) {
                    let start = h.end - self.keywords.len_of(h.pattern);
                    if start >= rs {
                        self.hit(sub, (rs, re), start - rs, h, &mut windows, &mut spans);
                        if urls && h.pattern == self.url_keyword {
                            link_at(start - rs);
                        }
                    }
                }
            } else {
                // In blocks, so that text dense with keywords holds at most
                // a block's hits at a time.
                let mut from = 0;
                while from < sub.len() {
                    let to = (from + HIT_BLOCK).min(sub.len());
                    block.clear();
                    self.keywords.find(sub.as_bytes(), from, to, &mut block);
                    for h in &block {
                        let start = h.end - self.keywords.len_of(h.pattern);
                        self.hit(sub, (rs, re), start, h, &mut windows, &mut spans);
                        if urls && h.pattern == self.url_keyword {
                            link_at(start);
                        }
                    }
                    if let Some(kept) = &mut seen.hits {
                        if kept.len() + block.len() > KEEP_HITS {
                            seen.hits = None;
                        } else {
                            kept.extend(block.iter().map(|h| scan::Hit {
                                end: rs + h.end,
                                pattern: h.pattern,
                            }));
                        }
                    }
                    from = to;
                }
            }
            // A link is on one line (it holds no white space), so reading
            // the lines with `://` finds what reading all of `sub` would.
            if let Some((url, allow, list)) = self.url.as_ref().filter(|_| urls) {
                for &(ls, le) in &link_lines {
                    for all in url.find_iter(&sub[ls..le]) {
                        let host = url_host(all.as_str());
                        let local = self.loopback_urls && is_loopback(host);
                        if !local && !host_allowed(host, allow, list) {
                            spans.push((rs + ls + all.start(), rs + ls + all.end(), Kind::Url));
                        }
                    }
                }
            }
        }
        for &r in &self.always {
            windows[r] = ranges.to_vec();
        }
        for (r, ws) in windows.iter().enumerate() {
            for &w in ws {
                self.run_rule(r, text, w, &seen.marks, &mut spans);
            }
        }
        merge(spans)
    }

    /// One keyword hit at `start` (relative to `sub`, the range `range` of
    /// the text): a host secret is compared exactly; a rule's keyword adds
    /// the lines around it to the rule's windows.
    fn hit(
        &self,
        sub: &str,
        (rs, re): (usize, usize),
        start: usize,
        h: &scan::Hit,
        windows: &mut [Vec<(usize, usize)>],
        spans: &mut Vec<(usize, usize, Kind)>,
    ) {
        let end = start + self.keywords.len_of(h.pattern);
        let p = h.pattern;
        if let Some(lit) = p
            .checked_sub(self.keyword_rules.len())
            .and_then(|i| self.literals.get(i))
        {
            if sub.as_bytes()[start..end] == *lit.as_bytes() {
                spans.push((rs + start, rs + end, Kind::HostSecret));
            }
            return;
        }
        let (ls, le) = line_around(sub, start, end);
        for &r in &self.keyword_rules[p] {
            let rule = &self.rules[r];
            let le = if rule.next_line && le < sub.len() {
                line_around(sub, le + 1, le + 1).1
            } else {
                le
            };
            let (ls, le) = (rs + ls, rs + le);
            let w = &mut windows[r];
            if rule.multiline {
                if w.last() != Some(&(rs, re)) {
                    w.push((rs, re));
                }
            } else if w.last().is_none_or(|&(_, e)| ls > e) {
                w.push((ls, le));
            } else if let Some(last) = w.last_mut() {
                last.1 = last.1.max(le);
            }
        }
    }

    /// The markers this redactor writes that are in `text`, in order: each
    /// starts with one of two fixed strings, found by a vector search
    /// (`marker_starts`), and the marker set is read only there.
    fn marks(&self, text: &str) -> Vec<(usize, usize)> {
        let b = text.as_bytes();
        let mut out: Vec<(usize, usize)> = Vec::new();
        for p in self.marker_starts.find_iter(b).map(|m| m.start()) {
            if out.last().is_some_and(|&(_, e)| p < e) {
                continue;
            }
            let input = aho_corasick::Input::new(b)
                .span(p..b.len())
                .anchored(aho_corasick::Anchored::Yes);
            if let Some(m) = self.markers.find(input) {
                out.push((m.start(), m.end()));
            }
        }
        out
    }

    /// Runs rule `r` on `text[window]`, between the markers `marks`.
    fn run_rule(
        &self,
        r: usize,
        text: &str,
        (w_start, w_end): (usize, usize),
        marks: &[(usize, usize)],
        spans: &mut Vec<(usize, usize, Kind)>,
    ) {
        let rule = &self.rules[r];
        // Rules run on the text between markers, never across one.
        for (ws_start, ws_end) in between(w_start, w_end, marks) {
            let hay = &text[ws_start..ws_end];
            // Groups only where there is a match: most windows have none,
            // and a plain search is several times faster than one for groups.
            for m in rule.regex.find_iter(hay) {
                let Some(caps) = rule.regex.captures_at(hay, m.start()) else {
                    continue;
                };
                let Some(g) = caps.get(rule.group) else {
                    continue;
                };
                let value = g.as_str();
                let next = hay[g.end()..].chars().next();
                if is_placeholder(value, next, rule.generic)
                    || rule.entropy.is_some_and(|min| entropy(value) < min)
                    || rule.allows(value, &caps, hay)
                {
                    continue;
                }
                spans.push((ws_start + g.start(), ws_start + g.end(), Kind::Rule(r)));
            }
        }
    }

    fn marker_len(&self, k: Kind) -> usize {
        match k {
            Kind::Rule(r) => "[REDACTED:]".len() + self.rules[r].id.len(),
            Kind::HostSecret => "[REDACTED:host-secret]".len(),
            Kind::Url => "[BLOCKED-URL]".len(),
        }
    }

    fn marker(&self, k: Kind) -> String {
        match k {
            Kind::Rule(r) => format!("[REDACTED:{}]", self.rules[r].id),
            Kind::HostSecret => "[REDACTED:host-secret]".into(),
            Kind::Url => "[BLOCKED-URL]".into(),
        }
    }

    fn apply(&self, text: &str, spans: &[(usize, usize, Kind)], report: &mut Report) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for &(s, e, k) in spans {
            out.push_str(&text[at..s]);
            out.push_str(&self.marker(k));
            match k {
                Kind::Url => report.blocked_urls += 1,
                Kind::Rule(r) => *report.redacted.entry(self.rules[r].id.clone()).or_default() += 1,
                Kind::HostSecret => *report.redacted.entry("host-secret".into()).or_default() += 1,
            }
            at = e;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Filters `text` until nothing more is found, so that filtering the
    /// result again changes nothing. A replacement can join what was around
    /// it into a new match (`x[REDACTED:…]-u a:b…`: found by the fuzz target
    /// `redact_seeded`); each pass only shrinks the text outside markers,
    /// and the bound is far above the two or three passes that happen.
    fn settle(&self, text: &str, urls: bool, report: &mut Report) -> Option<String> {
        let mut seen = Seen::default();
        let mut spans = self.first_pass(text, urls, &mut seen);
        if spans.is_empty() {
            return None;
        }
        let mut out = self.apply(text, &spans, report);
        for _ in 0..8 {
            let written = self.rewrite(&mut seen, &spans);
            spans = self.find_again(&out, urls, &mut seen, &written);
            if spans.is_empty() {
                break;
            }
            out = self.apply(&out, &spans, report);
        }
        Some(out)
    }

    /// Carries `seen` into the text [`Redactor::apply`] makes of `spans`:
    /// hits and markers inside a replaced span are gone, the rest move by
    /// what the replacements before them changed in length. Returns the
    /// markers written (they are in `seen.marks` too). The text's markers
    /// are then those written and the ones that were there, moved: a
    /// marker has `[` only first and `]` only last (ids hold no bracket),
    /// so one that overlaps a written marker is that marker.
    fn rewrite(&self, seen: &mut Seen, spans: &[(usize, usize, Kind)]) -> Vec<(usize, usize)> {
        // `shift[j]`: the change in length the spans before span j make.
        let mut shift: Vec<isize> = Vec::with_capacity(spans.len() + 1);
        let mut written = Vec::with_capacity(spans.len());
        let mut total: isize = 0;
        for &(s, e, k) in spans {
            shift.push(total);
            let at = s.checked_add_signed(total).unwrap_or(s);
            let len = self.marker_len(k);
            written.push((at, at + len));
            total += len as isize - (e - s) as isize;
        }
        shift.push(total);
        // Where `[s, e)` is after the rewrite, or `None` if a span overlaps
        // it. Spans are sorted and disjoint: only the first one ending after
        // `s` can overlap it, and every span is wholly before or after a
        // kept `[s, e)`, so kept things stay in order.
        let moved = |s: usize, e: usize| {
            let j = spans.partition_point(|sp| sp.1 <= s);
            if spans.get(j).is_some_and(|&(ss, _, _)| ss < e) {
                return None;
            }
            Some(s.checked_add_signed(shift[j]).unwrap_or(s))
        };
        if let Some(hits) = &mut seen.hits {
            hits.retain_mut(|h| {
                let len = self.keywords.len_of(h.pattern);
                match moved(h.end - len, h.end) {
                    Some(ns) => {
                        h.end = ns + len;
                        true
                    }
                    None => false,
                }
            });
        }
        let mut marks: Vec<(usize, usize)> = seen
            .marks
            .iter()
            .filter_map(|&(s, e)| moved(s, e).map(|ns| (ns, ns + (e - s))))
            .collect();
        marks.extend(&written);
        marks.sort_unstable();
        seen.marks = marks;
        written
    }

    /// [`Redactor::find_opt`] on text this filter has just rewritten, with
    /// what the last pass read (`seen`, carried over by
    /// [`Redactor::rewrite`]) and the markers it `written`. Only lines
    /// holding a written marker changed, and single-line rules, literals
    /// and URLs see one line at a time (windows never cross a newline), so
    /// only those lines can match anew; a keyword occurrence that is new
    /// overlaps a written marker, so only the bytes around those are read
    /// for keywords; the rest is read again only when a multi-line rule
    /// could run. Same result as a full pass, without reading megabytes
    /// twice when there is one blocked URL in them.
    fn find_again(
        &self,
        text: &str,
        urls: bool,
        seen: &mut Seen,
        written: &[(usize, usize)],
    ) -> Vec<(usize, usize, Kind)> {
        let b = text.as_bytes();
        // A two-line rule reads a changed line with the one above or below.
        let two_line = self.rules.iter().any(|r| r.next_line);
        let mut regions: Vec<(usize, usize)> = Vec::new();
        for &(ms, me) in written {
            if regions.last().is_some_and(|&(_, e)| ms <= e) {
                continue;
            }
            let line_start = |at: usize| memchr::memrchr(b'\n', &b[..at]).map_or(0, |p| p + 1);
            let line_end = |at: usize| memchr::memchr(b'\n', &b[at..]).map_or(b.len(), |p| at + p);
            let mut ls = line_start(ms);
            let mut le = line_end(me);
            if two_line {
                if ls > 0 {
                    ls = line_start(ls - 1);
                }
                if le < b.len() {
                    le = line_end(le + 1);
                }
            }
            match regions.last_mut() {
                Some(last) if ls <= last.1 + 1 => last.1 = le,
                _ => regions.push((ls, le)),
            }
        }
        // Keyword occurrences that overlap a written marker; any other was
        // in the last text and is in `seen.hits`, moved.
        if let Some(hits) = &mut seen.hits {
            let mut new = Vec::new();
            if self.brackets {
                // A keyword with a bracket can cross a marker's edge: the
                // bytes around each are read.
                let back = self.keywords.longest().saturating_sub(1);
                let mut near: Vec<(usize, usize)> = Vec::new();
                for &(ms, me) in written {
                    let (s, e) = (ms.saturating_sub(back), (me + back).min(b.len()));
                    match near.last_mut() {
                        Some(last) if s <= last.1 => last.1 = e,
                        _ => near.push((s, e)),
                    }
                }
                let mut found = Vec::new();
                for (s, e) in near {
                    found.clear();
                    self.keywords.find(&b[s..e], 0, e - s, &mut found);
                    new.extend(found.iter().map(|h| scan::Hit {
                        end: s + h.end,
                        pattern: h.pattern,
                    }));
                }
            } else {
                // One without lies inside the marker (a marker starts with
                // `[` and ends with `]`): each kind of marker is read once.
                let mut inside: HashMap<&[u8], Vec<scan::Hit>> = HashMap::new();
                for &(ms, me) in written {
                    let m = &b[ms..me];
                    let found = inside.entry(m).or_insert_with(|| {
                        let mut v = Vec::new();
                        self.keywords.find(m, 0, m.len(), &mut v);
                        v
                    });
                    new.extend(found.iter().map(|h| scan::Hit {
                        end: ms + h.end,
                        pattern: h.pattern,
                    }));
                }
            }
            if !new.is_empty() {
                hits.extend(new);
                hits.sort_unstable_by_key(|h| (h.end, h.pattern));
                hits.dedup();
            }
        }
        let read = seen.hits.is_none();
        let mut spans = self.find_in(text, &regions, urls, seen, read);
        // A multi-line rule can match anew anywhere: those rules whose
        // keywords occur (only they) read the whole text again.
        let mut again = self.multiline_always.clone();
        match &seen.hits {
            Some(hits) => {
                for h in hits {
                    again.extend(self.multiline_rules_of(h.pattern));
                }
            }
            None => {
                // Too many hits to keep: the whole text is read for them.
                let mut found = Vec::new();
                let mut from = 0;
                while from < b.len() {
                    let to = (from + HIT_BLOCK).min(b.len());
                    found.clear();
                    self.keywords.find(b, from, to, &mut found);
                    for h in &found {
                        again.extend(self.multiline_rules_of(h.pattern));
                    }
                    from = to;
                }
            }
        }
        again.sort_unstable();
        again.dedup();
        for r in again {
            self.run_rule(r, text, (0, text.len()), &seen.marks, &mut spans);
        }
        merge(spans)
    }

    /// The multi-line rules keyword pattern `p` belongs to.
    fn multiline_rules_of(&self, p: usize) -> impl Iterator<Item = usize> + '_ {
        self.keyword_rules
            .get(p)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&r| self.rules[r].multiline)
    }

    /// Redacts `text`; the report says what was done.
    pub fn redact(&self, text: &str) -> (String, Report) {
        let mut report = Report::default();
        match self.settle(text, true, &mut report) {
            Some(out) => (out, report),
            None => (text.to_string(), report),
        }
    }

    /// Redacts in place, adding to `report`.
    pub fn redact_into(&self, text: &mut String, report: &mut Report) {
        if let Some(out) = self.settle(text, true, report) {
            *text = out;
        }
    }

    /// Redacts secrets only (no URL blocking): for text that quotes the
    /// call itself, such as a verdict's reasons.
    pub fn redact_secrets_into(&self, text: &mut String, report: &mut Report) {
        if let Some(out) = self.settle(text, false, report) {
            *text = out;
        }
    }

    /// A filter for text that arrives in chunks.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            r: self,
            pending: String::new(),
            report: Report::default(),
        }
    }
}

/// Streaming redaction: holds back the last [`MAX_SECRET_SPAN`] bytes so
/// a secret split across chunks is still seen whole.
pub struct Stream<'a> {
    r: &'a Redactor,
    pending: String,
    pub report: Report,
}

impl Stream<'_> {
    /// Adds a chunk; returns the text that is now safe to emit.
    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        if self.pending.len() <= 2 * MAX_SECRET_SPAN {
            return String::new();
        }
        let spans = self.r.find(&self.pending);
        let mut cut = self.pending.len() - MAX_SECRET_SPAN;
        // A match starting before the cut is complete (it is shorter than the
        // held-back tail); emit it whole.
        for &(s, e, _) in &spans {
            if s < cut {
                cut = cut.max(e);
            }
        }
        while !self.pending.is_char_boundary(cut) {
            cut += 1;
        }
        let emit: Vec<_> = spans
            .iter()
            .copied()
            .filter(|&(_, e, _)| e <= cut)
            .collect();
        let mut out = self.r.apply(&self.pending[..cut], &emit, &mut self.report);
        self.pending.drain(..cut);
        if !emit.is_empty()
            && let Some(again) = self.r.settle(&out, true, &mut self.report)
        {
            out = again;
        }
        out
    }

    /// Copies `input` to `out` through the filter: whole UTF-8 characters
    /// only (invalid bytes become U+FFFD), and a secret split across reads
    /// is still caught. Returns what was removed.
    pub fn copy(
        mut self,
        mut input: impl std::io::Read,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<Report> {
        let mut buf = vec![0u8; 1 << 16];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            carry.extend_from_slice(&buf[..n]);
            let valid = match std::str::from_utf8(&carry) {
                Ok(_) => carry.len(),
                // An incomplete character at the end waits for the next read.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => carry.len(),
            };
            let text = String::from_utf8_lossy(&carry[..valid]).into_owned();
            carry.drain(..valid);
            out.write_all(self.push(&text).as_bytes())?;
        }
        let tail = String::from_utf8_lossy(&carry).into_owned();
        out.write_all(self.push(&tail).as_bytes())?;
        let (rest, report) = self.finish();
        out.write_all(rest.as_bytes())?;
        out.flush()?;
        Ok(report)
    }

    /// Flushes the held-back tail.
    pub fn finish(mut self) -> (String, Report) {
        let tail = std::mem::take(&mut self.pending);
        let out = self.r.settle(&tail, true, &mut self.report).unwrap_or(tail);
        (out, self.report)
    }
}

fn line_around(text: &str, start: usize, end: usize) -> (usize, usize) {
    let b = text.as_bytes();
    // Lines longer than this are windowed around the hit instead.
    const MAX: usize = 4096;
    let lo = start.saturating_sub(MAX);
    let ls = memchr::memrchr(b'\n', &b[lo..start]).map_or(lo, |p| lo + p + 1);
    let hi = (end + MAX).min(b.len());
    let le = memchr::memchr(b'\n', &b[end..hi]).map_or(hi, |p| end + p);
    let mut ls = ls;
    while !text.is_char_boundary(ls) {
        ls += 1;
    }
    let mut le = le;
    while !text.is_char_boundary(le) {
        le -= 1;
    }
    (ls, le.max(ls))
}

/// What a rule id may be made of: it names the `[REDACTED:id]` marker,
/// and a marker has no bracket inside (see [`Redactor::rewrite`]).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(crate) const ID_RULE: &str =
    "an id is letters, digits, '-', '_' and '.' (it names the [REDACTED:id] marker)";

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// The parts of `start..end` outside the (sorted, disjoint) `marks`.
fn between(
    start: usize,
    end: usize,
    marks: &[(usize, usize)],
) -> impl Iterator<Item = (usize, usize)> + '_ {
    // `marks` are sorted and do not overlap: the first that ends after
    // `start` is found by bisection (a linear filter per window made
    // marker-dense text quadratic).
    let first = marks.partition_point(|&(_, me)| me <= start);
    let mut inside = marks[first..].iter().take_while(move |&&(ms, _)| ms < end);
    let mut at = start;
    std::iter::from_fn(move || {
        while at < end {
            match inside.next() {
                Some(&(ms, me)) => {
                    let part = (at, ms.min(end));
                    at = at.max(me);
                    if part.0 < part.1 {
                        return Some(part);
                    }
                }
                None => {
                    let part = (at, end);
                    at = end;
                    return Some(part);
                }
            }
        }
        None
    })
}

impl Rule {
    /// Whether the rule's allowlists (a gitleaks file's) clear a finding.
    fn allows(&self, secret: &str, caps: &regex::Captures<'_>, hay: &str) -> bool {
        if self.allow.is_empty() && self.stopwords.is_empty() {
            return false;
        }
        let whole = caps.get(0).map_or(secret, |m| m.as_str());
        let line = caps.get(0).map_or(secret, |m| {
            let (s, e) = line_around(hay, m.start(), m.end());
            &hay[s..e]
        });
        let lower = secret.to_lowercase();
        self.stopwords.iter().any(|w| lower.contains(w.as_str()))
            || self.allow.iter().any(|(re, target)| {
                re.is_match(match target {
                    gitleaks::Target::Secret => secret,
                    gitleaks::Target::Match => whole,
                    gitleaks::Target::Line => line,
                })
            })
    }
}

/// A value whose body (after up to two `prefix_` / `prefix-` parts such as
/// `ghp_` or `sk-proj-`) is at least 80% mask characters (`x`, `X`, `0`,
/// `*`, `•`, `.`).
fn masked(v: &str) -> bool {
    let mut body = v;
    for _ in 0..2 {
        if let Some(i) = body.find(['_', '-']).filter(|&i| (1..=10).contains(&i))
            && body[..i].chars().all(|c| c.is_ascii_alphanumeric())
        {
            body = &body[i + 1..];
        }
    }
    let (mut mask, mut all) = (0usize, 0usize);
    for c in body.chars().filter(|c| !matches!(c, '-' | '_')) {
        all += 1;
        if matches!(c, 'x' | 'X' | '0' | '*' | '•' | '.') {
            mask += 1;
        }
    }
    all >= 6 && mask * 5 >= all * 4
}

/// A rule's regex (or one of its allowlist's), bounded in size; an error
/// names the rule and, after `what`, the regex's complaint.
fn compile(id: &str, regex: &str, what: &str) -> Result<Regex, FilterError> {
    regex::RegexBuilder::new(regex)
        .size_limit(4 << 20)
        .build()
        .map_err(|e| FilterError::Rule {
            id: id.to_string(),
            detail: format!("{what}{e}"),
        })
}

/// `regex` with each `\b` / `\B` made ASCII-only (`(?-u:\b)`), as in
/// gitleaks' RE2. A Unicode word boundary stops the lazy DFA at the first
/// non-ASCII byte, and the regex then falls back to a much slower engine
/// for the whole window (a README with an em dash read at a third of the
/// speed). Token alphabets are ASCII, so nothing is lost.
fn ascii_word_boundaries(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len() + 16);
    let mut chars = regex.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(b @ ('b' | 'B')) => {
                out.push_str("(?-u:\\");
                out.push(b);
                out.push(')');
            }
            Some(n) => {
                out.push(c);
                out.push(n);
            }
            None => out.push(c),
        }
    }
    out
}

/// Sorted, non-overlapping spans: one marker per region, the
/// earliest-starting kind.
fn merge(mut spans: Vec<(usize, usize, Kind)>) -> Vec<(usize, usize, Kind)> {
    spans.sort_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
    let mut out: Vec<(usize, usize, Kind)> = Vec::with_capacity(spans.len());
    for (s, e, k) in spans {
        match out.last_mut() {
            Some(last) if s < last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e, k)),
        }
    }
    out
}

/// `/run/secrets/db`, `./config/app.key`, `~/.pgpass`: a file's name.
/// Base64 (`/TsWF23xz3iW0nb…`) also starts with a slash at times, but is
/// mostly capitals and digits where paths are mostly lower case.
fn path_like(v: &str) -> bool {
    let rest = v
        .strip_prefix("./")
        .or_else(|| v.strip_prefix("~/"))
        .or_else(|| v.strip_prefix('/'));
    let Some(rest) = rest else { return false };
    let dense = v
        .chars()
        .filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        .count();
    !rest.is_empty()
        && rest.split('/').all(|seg| !seg.is_empty())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '~'))
        && dense * 4 <= v.len()
}

/// Values that name or stand for a secret rather than being one.
fn is_placeholder(v: &str, next: Option<char>, generic: bool) -> bool {
    let lower = v.to_ascii_lowercase();
    if v.starts_with("[REDACTED") || v.starts_with("[BLOCKED") {
        return true;
    }
    let first = v.chars().next().unwrap_or('x');
    if v.chars().all(|c| c == first || c == '-' || c == '_') {
        return true;
    }
    // Documented example keys (`AKIAIOSFODNN7EXAMPLE`, AWS's
    // `…/bPxRfiCYEXAMPLEKEY`) and masked values (`ghp_xxxx…`,
    // `glpat-XXXX…`, `xoxb-0000…-xxxx…`, `sk_live_****…`).
    if v.contains("EXAMPLE") || masked(v) {
        return true;
    }
    // Stand-ins written into a token's shape (`sha256~XXXX_PUT_YOUR_TOKEN_HERE`)
    // and values cut short in documentation (`ops_eyJzaWdu...`).
    if [
        "your_",
        "your-",
        "yourtoken",
        "_here",
        "-here",
        "replace_me",
        "replaceme",
    ]
    .iter()
    .any(|w| lower.contains(w))
        || v.ends_with("...")
        || v.ends_with('…')
    {
        return true;
    }
    if !generic {
        return false;
    }
    // A bare word for the thing (`user:pass@host`, `token: token`).
    if matches!(
        lower.as_str(),
        "pass" | "passwd" | "pwd" | "secret" | "token" | "apikey" | "api_key" | "key" | "value"
    ) {
        return true;
    }
    // `%NAME%` is a Windows variable; `%hJAZ…` is a password.
    let windows_var = v.strip_prefix('%').is_some_and(|r| {
        r.split_once('%').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    });
    if v.starts_with('$')
        || windows_var
        || v.starts_with('<')
        || v.starts_with("{{")
        || v.contains("${")
    {
        return true;
    }
    // Code, not a literal: a call, an index, an attribute path (of names:
    // `Lmo!Uz(…` is a literal with a parenthesis in it).
    let name_like = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | ':' | '?'));
    if name_like && matches!(next, Some('(' | '[' | '.')) {
        return true;
    }
    // A URL without credentials in it or a file path: where a secret is,
    // not the secret (`TOKEN_URL=https://…/token`, `PASSWORD_FILE=/run/…`).
    if (v.contains("://") && !v.contains('@')) || path_like(v) {
        return true;
    }
    // A name, not a token: `settings.SECRET_KEY`, `db.password2`; not the
    // `ZC9Ecf4M5g9o34Q6RkzGsj0z` of a legacy Vault token `s.ZC9E…`.
    let ident = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().filter(|c| c.is_ascii_digit()).count() <= 2
    };
    if v.contains('.') && v.split('.').all(ident) {
        return true;
    }
    const WORDS: &[&str] = &[
        "changeme",
        "change_me",
        "placeholder",
        "example",
        "your_",
        "your-",
        "yourpassword",
        "password",
        "secret",
        "redacted",
        "dummy",
        "xxxxxx",
        "******",
        "notreal",
        "not-a-real",
        "fake",
        "sample",
        "todo",
    ];
    WORDS.iter().any(|w| lower.contains(w)) && entropy(v) < 3.6
}

/// Whether a URL's host part (userinfo and port included) names this
/// machine: `localhost`, an IPv4 address in 127.0.0.0/8, `::1` (also
/// IPv4-mapped), or the unspecified `0.0.0.0` / `::`. Strict: anything
/// that does not parse as exactly one of these (`127.1`, a decimal
/// address, `localhost.evil.example`, a zone) is not.
/// The host part of a link the URL pattern matched: what follows `://`
/// up to the first `/`, `?` or `#` (the pattern's group 1, without a
/// second search for groups).
fn url_host(link: &str) -> &str {
    let rest = link.split_once("://").map_or(link, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

fn is_loopback(host: &str) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let host = host.rsplit('@').next().unwrap_or(host);
    if let Some(rest) = host.strip_prefix('[') {
        // The URL pattern stops a host at `]` (markdown), so the bracket
        // and port may lie outside what it captured.
        let (v6, port) = rest.split_once(']').unwrap_or((rest, ""));
        return (port.is_empty() || port.starts_with(':'))
            && v6.parse::<Ipv6Addr>().is_ok_and(|a| {
                a.is_loopback()
                    || a.is_unspecified()
                    || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            });
    }
    let name = host.split(':').next().unwrap_or(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback() || a.is_unspecified())
}

/// A link may point at a listed host, at any port, or below a plain
/// entry (`example.com` lets `docs.example.com` links stay; the egress
/// proxy is stricter: it connects to a plain entry's own name only).
fn host_allowed(host: &str, allow: &[String], list: &crate::hosts::HostList) -> bool {
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = crate::hosts::split_host_port(host).map_or(host, |(h, _)| h);
    let host = crate::hosts::canonical(host);
    allow
        .iter()
        .any(|a| host == *a || host.ends_with(&format!(".{a}")))
        // Entries only the list's own grammar reads (`*.x`, `x:port`, `[v6]`).
        || list.names_host(&host)
}

/// A secret value and the encodings it commonly travels in.
fn encodings(values: &[String]) -> Vec<String> {
    use base64::Engine;
    let mut out: Vec<String> = Vec::new();
    for v in values.iter().filter(|v| v.len() >= MIN_HOST_SECRET) {
        let b = v.as_bytes();
        let forms = [
            v.clone(),
            base64::engine::general_purpose::STANDARD.encode(b),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            percent_encode(v),
            hex::encode(b),
        ];
        for f in forms {
            if f.len() >= MIN_HOST_SECRET && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Values of the host's secrets: environment variables whose names match
/// `globs` (case-insensitive) and non-empty lines of `files`.
pub fn host_secrets(globs: &[String], files: &[String]) -> Vec<String> {
    // Case-insensitive, as the policy loader checks them.
    let set = globs
        .iter()
        .try_fold(globset::GlobSetBuilder::new(), |mut b, g| {
            b.add(
                globset::GlobBuilder::new(g)
                    .case_insensitive(true)
                    .build()?,
            );
            Ok::<_, globset::Error>(b)
        })
        .and_then(|b| b.build())
        .ok();
    let mut out = Vec::new();
    if let Some(set) = set {
        for (k, v) in std::env::vars_os() {
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
                continue;
            };
            if v.len() >= MIN_HOST_SECRET && set.is_match(k) {
                out.push(v.to_string());
            }
        }
    }
    for f in files {
        if let Ok(text) = std::fs::read_to_string(f) {
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= MIN_HOST_SECRET)
                    .map(String::from),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markers are opaque to the rules: filtering filtered text changes
    /// nothing, and a secret that runs into a marker is still cut.
    #[test]
    fn markers_are_opaque_so_filtering_is_idempotent() {
        let r = Redactor::new().unwrap();
        for t in [
            " -u uxapp-irl[REDACTED:cli-credentials]\n",
            "curl -u admin:[REDACTED:cli-credentials] https://h",
            "token=[REDACTED:host-secret][BLOCKED-URL]",
        ] {
            assert_eq!(r.redact(t).0, t);
        }
        // A replacement that joins its surroundings into a new match is
        // filtered again (both found by the fuzz target `redact_seeded`).
        for t in [
            "uth sk_live_4eC39HqLyjWDarjtT1zdp7dc-u u\u{3}\u{10}Au\0://apntmo: B",
            "x -u uxapp-irl -u user:\0\0Gbin:$PATH\n",
        ] {
            let once = r.redact(t).0;
            assert_eq!(r.redact(&once).0, once, "{t:?}");
        }
        let t = "mysql -uroot -pXy3Zk9Lw2Xp7[REDACTED:host-secret] db";
        let out = r.redact(t).0;
        assert!(!out.contains("Xy3Zk9Lw2Xp7"), "{out}");
        assert_eq!(r.redact(&out).0, out);
    }

    #[test]
    fn word_boundaries_become_ascii_and_nothing_else_changes() {
        assert_eq!(
            ascii_word_boundaries(r"\b(sk_[a-f]{4})\B"),
            r"(?-u:\b)(sk_[a-f]{4})(?-u:\B)"
        );
        assert_eq!(ascii_word_boundaries(r"a\\b\.c\\"), r"a\\b\.c\\");
        // Still a boundary next to non-ASCII text, read by the fast engine.
        let re = Regex::new(&ascii_word_boundaries(r"\b(ghp_[a-z]{4})\b")).unwrap();
        assert_eq!(
            re.find("— ghp_abcd —").map(|m| m.as_str()),
            Some("ghp_abcd")
        );
    }

    #[test]
    fn every_rule_redacts_its_examples_and_spares_its_negatives() {
        let r = Redactor::new().unwrap();
        for spec in rule_specs().unwrap() {
            assert!(!spec.examples.is_empty(), "{} has no example", spec.id);
            for ex in &spec.examples {
                let (out, rep) = r.redact(ex);
                assert!(
                    rep.redacted.contains_key(&spec.id),
                    "{}: example not redacted by its rule: {ex:?} -> {out:?} {rep:?}",
                    spec.id
                );
                assert!(out.contains(&format!("[REDACTED:{}]", spec.id)));
            }
            for neg in &spec.negatives {
                let (out, rep) = r.redact(neg);
                assert!(
                    rep.is_empty(),
                    "{}: negative was redacted: {neg:?} -> {out:?}",
                    spec.id
                );
            }
        }
    }

    /// The settle loop with a full pass each time, as reference.
    fn settle_full(r: &Redactor, text: &str) -> String {
        let mut report = Report::default();
        let mut out = text.to_string();
        for _ in 0..9 {
            let spans = r.find_opt(&out, true);
            if spans.is_empty() {
                break;
            }
            out = r.apply(&out, &spans, &mut report);
        }
        out
    }

    /// Neighbours from every rule's examples and negatives glued with
    /// different separators: what one replacement leaves next to another
    /// is where a new match could appear.
    fn glued(extra: &[&str]) -> Vec<String> {
        let specs = rule_specs().unwrap();
        let pieces: Vec<String> = specs
            .iter()
            .flat_map(|s| s.examples.iter().chain(&s.negatives).cloned())
            .chain(
                [
                    "see https://evil.example/x?d=1 and https://ok.example/y",
                    "hunter2-s3cret-value",
                    "-u name",
                    ":Tr0ub4dor-and-3",
                    "plain words, nothing here",
                    "\n",
                ]
                .iter()
                .chain(extra)
                .map(|s| s.to_string()),
            )
            .collect();
        let mut out = Vec::new();
        for (i, a) in pieces.iter().enumerate() {
            let b = &pieces[(i * 7 + 3) % pieces.len()];
            let c = &pieces[(i * 13 + 5) % pieces.len()];
            for sep in ["", " ", "\n", "=", ":"] {
                out.push(format!("{a}{sep}{b}{sep}{c}"));
            }
        }
        out
    }

    #[test]
    fn rereading_only_the_changed_lines_gives_the_full_pass_result() {
        let r = Redactor::with(
            &["hunter2-s3cret-value".into()],
            Some(&["ok.example".into()]),
        )
        .unwrap();
        for text in glued(&[]) {
            assert_eq!(r.redact(&text).0, settle_full(&r, &text), "{text:?}");
        }
    }

    fn spec(id: &str, keyword: &str, regex: &str, multiline: bool) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            keywords: vec![keyword.into()],
            regex: regex.into(),
            group: 1,
            entropy: None,
            generic: false,
            examples: vec![],
            negatives: vec![],
            multiline,
            next_line: false,
            allow_match: vec![],
            allow: vec![],
        }
    }

    /// An id names a marker, which holds no bracket inside.
    #[test]
    fn a_rule_id_with_a_bracket_is_refused() {
        for id in ["x]y", "[x", "", "a b"] {
            let e = Redactor::with_rules(&[], None, &[spec(id, "k", "k(x)", false)]).unwrap_err();
            assert!(e.to_string().contains("an id is"), "{id}: {e}");
        }
        assert!(Redactor::with_rules(&[], None, &[spec("a-b_c.d", "k", "k(x)", false)]).is_ok());
    }

    /// A keyword or host secret with a bracket can cross a written
    /// marker's edge: the bytes around markers are read for keywords then.
    #[test]
    fn keywords_across_a_marker_edge_are_found_again() {
        // The keyword is not in the match: rules never read a marker.
        let rule = spec("bracket-token", "]tok", r"tok([a-z0-9]{12})", false);
        let r = Redactor::with_rules(&["hunter2-s3cret-zz".into()], Some(&[]), &[rule]).unwrap();
        assert!(r.brackets);
        let text = "xhunter2-s3cret-zztokabcdef123456 and https://evil.example/tokabcdef654321";
        for text in glued(&[text, "]tokabcdef123456"]) {
            assert_eq!(r.redact(&text).0, settle_full(&r, &text), "{text:?}");
        }
        // The replacement ends in `]`, which makes `]tok` after it.
        assert_eq!(
            r.redact(text).0,
            "x[REDACTED:host-secret]tok[REDACTED:bracket-token] and [BLOCKED-URL]"
        );
    }

    /// A multi-line rule whose keyword is far from a change runs again
    /// after it: its hit is carried over from the last pass or, past
    /// [`KEEP_HITS`] hits (none kept), found by reading all of the text.
    /// The same result as full passes either way.
    #[test]
    fn a_multiline_rule_runs_again_wherever_its_keyword_is() {
        // Matches at the start of what it reads: a marker's end.
        let rule = spec("after-a-marker", "zmark", r"^tok([a-z0-9]{12})", true);
        let r = Redactor::with_rules(&["hunter2-s3cret-zz".into()], Some(&[]), &[rule]).unwrap();
        let tail = "\nsee https://evil.example/x\nhunter2-s3cret-zztokabcdef123456\n";
        let want = "\nsee [BLOCKED-URL]\n[REDACTED:host-secret]tok[REDACTED:after-a-marker]\n";
        for dense in [0, KEEP_HITS / 3 + 1] {
            let text = format!("zmark\n{}{tail}", "sk key -p ".repeat(dense));
            let mut seen = Seen::default();
            r.first_pass(&text, true, &mut seen);
            assert_eq!(seen.hits.is_none(), dense > 0, "hits kept for {dense}");
            let (out, _) = r.redact(&text);
            assert!(
                out.ends_with(want),
                "{dense}: {}",
                &out[out.len().saturating_sub(100)..]
            );
            assert_eq!(out, settle_full(&r, &text));
        }
    }

    #[test]
    fn a_links_host_is_what_precedes_its_path_query_or_fragment() {
        for (link, host) in [
            ("https://a.example/x", "a.example"),
            ("http://u:p@b.example:8080?q", "u:p@b.example:8080"),
            ("wss://c.example#f", "c.example"),
            ("ftp://d.example", "d.example"),
        ] {
            assert_eq!(url_host(link), host);
        }
    }

    #[test]
    fn redaction_is_idempotent() {
        let r = Redactor::with(&["hunter2-s3cret-value".into()], Some(&[])).unwrap();
        for spec in rule_specs().unwrap() {
            for ex in &spec.examples {
                let (once, _) = r.redact(ex);
                let (twice, rep) = r.redact(&once);
                assert_eq!(once, twice, "{}", spec.id);
                assert!(rep.is_empty(), "{}: {rep:?}", spec.id);
            }
        }
    }

    #[test]
    fn host_secrets_and_their_encodings() {
        use base64::Engine;
        let s = "Zk9Lw2Xp7Vb4Nm1H".to_string();
        let r = Redactor::with(std::slice::from_ref(&s), None).unwrap();
        for form in [
            s.clone(),
            base64::engine::general_purpose::STANDARD.encode(&s),
            hex::encode(&s),
            format!("a%20{}", percent_encode("Zk9Lw2Xp7Vb4Nm1H")),
        ] {
            let (out, rep) = r.redact(&format!("value: {form} end"));
            assert!(
                !out.contains(&s) && rep.redacted.get("host-secret") == Some(&1),
                "{form}: {out}"
            );
        }
    }

    #[test]
    fn loopback_and_relative_links_stay_unless_loopback_urls_are_off() {
        let r = Redactor::with(&[], Some(&[])).unwrap();
        for keep in [
            "Listening on http://127.0.0.1:8080",
            "open http://localhost:3000/app?x=1 now",
            "Serving HTTP on 0.0.0.0 port 8000 (http://0.0.0.0:8000/)",
            "see http://[::1]:9000/metrics and ws://127.0.0.53/",
            "mapped http://[::ffff:127.0.0.1]/ and http://LOCALHOST./",
            "user http://me:pw@127.0.0.1:5432/db",
            "[notes](docs/notes.md) and ![plot](./out/plot.png)",
        ] {
            let (out, rep) = r.redact(keep);
            assert_eq!((out.as_str(), rep.blocked_urls), (keep, 0));
        }
        for block in [
            "http://127.0.0.1.evil.example/x",
            "http://localhost.evil.example/",
            "http://127.0.0.1@evil.example/",
            "http://127.0.0.1:80@evil.example/",
            "![x](http://evil.example/?next=http://127.0.0.1/)",
            "http://2130706433/",
            "http://127.1/",
            "http://[fe80::1%25eth0]/",
            "http://10.0.0.1/",
            "http://x.localhost/",
        ] {
            let (out, rep) = r.redact(block);
            assert_eq!(rep.blocked_urls, 1, "{block} -> {out}");
        }
        let strict = Redactor::with(&[], Some(&[])).unwrap().loopback_urls(false);
        let (out, _) = strict.redact("Listening on http://127.0.0.1:8080");
        assert_eq!(out, "Listening on [BLOCKED-URL]");
    }

    #[test]
    fn links_follow_the_allow_hosts_grammar_too() {
        let allow = ["*.cdn.example".to_string(), "git.example:8443".to_string()];
        let r = Redactor::with(&[], Some(&allow)).unwrap();
        for keep in [
            "https://a.cdn.example/x.tgz",
            "https://git.example:8443/r.git",
        ] {
            let (out, rep) = r.redact(keep);
            assert_eq!((out.as_str(), rep.blocked_urls), (keep, 0));
        }
        for block in [
            "https://cdn.example/",
            "https://evil.example/",
            "https://a.cdn.example.evil/",
        ] {
            assert_eq!(r.redact(block).1.blocked_urls, 1, "{block}");
        }
    }

    #[test]
    fn urls_outside_the_allowlist_are_blocked() {
        let r = Redactor::with(&[], Some(&["docs.example".to_string()])).unwrap();
        let (out, rep) = r.redact("see https://docs.example/a and ![x](https://evil.example/p?d=abc) or http://api.docs.example:8080/x");
        assert_eq!(
            out,
            "see https://docs.example/a and ![x]([BLOCKED-URL]) or http://api.docs.example:8080/x"
        );
        assert_eq!(rep.blocked_urls, 1);
    }

    #[test]
    fn a_secret_split_across_chunks_is_caught() {
        let r = Redactor::new().unwrap();
        let secret = "ghp_3kQ9vZp2Lx7Wm4Rt8Yb1Nc6Hd0Js5Fa2Ue9G";
        let text = format!("{} {secret} {}", "a ".repeat(20_000), "b ".repeat(20_000));
        for chunk in [1usize, 7, 4096, 33_000] {
            let mut s = r.stream();
            let mut out = String::new();
            let bytes = text.as_bytes();
            for c in bytes.chunks(chunk) {
                out.push_str(&s.push(std::str::from_utf8(c).unwrap()));
            }
            let (tail, rep) = s.finish();
            out.push_str(&tail);
            assert!(!out.contains(secret), "chunk {chunk}");
            assert_eq!(rep.redacted.get("github-token"), Some(&1), "chunk {chunk}");
            assert_eq!(
                out.len(),
                text.len() - secret.len() + "[REDACTED:github-token]".len()
            );
        }
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::*;

    #[test]
    fn documented_examples_and_stand_ins_are_not_secrets() {
        let r = Redactor::new().unwrap();
        let mut changed = Vec::new();
        for line in [
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "token: ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "export GITHUB_TOKEN=ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "curl -u '$USERNAME:$PASSWORD' https://ci.example/api",
            "curl -u \"${USER}:${TOKEN}\" https://ci.example/api",
            "GITLAB_TOKEN=glpat-xxxxxxxxxxxxxxxxxxxx",
            "password: [PASSWORD]",
            "api_key = <your-api-key>",
            "password = {{ db_password }}",
            "OPENAI_API_KEY=sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "SLACK_TOKEN=xoxb-0000000000-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxx",
            "stripe: sk_live_****************************",
            "Authorization: Bearer <token>",
            "Authorization: Bearer $TOKEN",
            "postgres://user:password@localhost:5432/db",
            "password=${DB_PASSWORD}",
            "\"api_key\": \"YOUR_API_KEY\"",
            "npm_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "AIzaSyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        ] {
            let (out, _) = r.redact(line);
            if out != line {
                changed.push(format!("{line} -> {out}"));
            }
        }
        assert!(changed.is_empty(), "changed:\n{}", changed.join("\n"));
    }
}
