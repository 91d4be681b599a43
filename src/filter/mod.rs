//! The output filter: what reaches the model (stdout, stderr, file contents,
//! error text, reasons) passes through here.
//!
//! - Secrets by pattern (`policies/secrets/rules.toml`): an Aho-Corasick
//!   pass finds each rule's keywords; only rules whose keywords occur run
//!   their regex, and only on the lines around the hits (multi-line rules —
//!   private keys — on the whole text). Entropy and placeholder checks keep
//!   ordinary hashes, identifiers and `${VARS}` out.
//! - The host's own secrets, by literal value: environment variables whose
//!   names match the policy's `redaction.secret_env` globs, and lines of
//!   `redaction.secret_files`, plus their base64, URL and hex encodings.
//! - URLs whose host is not in the policy's `network.allow_hosts` (links
//!   and markdown images are an exfiltration channel).
//!
//! Secrets become `[REDACTED:kind]`, blocked URLs `[BLOCKED-URL]`; the
//! report counts kinds and never holds a secret. Redacting twice changes
//! nothing.

pub mod gitleaks;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// The compiled filter. Build once per policy; cheap to share.
#[derive(Debug)]
pub struct Redactor {
    rules: Vec<Rule>,
    keywords: AhoCorasick,
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they read all of the text.
    always: Vec<usize>,
    /// Host secret values and their encodings: patterns of `keywords`
    /// after the rules' keywords.
    literals: Vec<String>,
    /// The link pattern, the allowed hosts as written (lowercase) and as
    /// the `hosts` grammar reads them (parsed once).
    url: Option<(Regex, Vec<String>, crate::hosts::HostList)>,
    /// URLs to this machine pass the URL filter (see [`is_loopback`]).
    loopback_urls: bool,
    /// Keywords of the rules that read across lines, with the rule each
    /// pattern belongs to; `None` when no such rule has keywords.
    multiline_keywords: Option<(AhoCorasick, Vec<usize>)>,
    /// Rules that read across lines and have no keywords.
    multiline_always: Vec<usize>,
    /// The markers this redactor writes. Rules never match into one, so
    /// filtering filtered text changes nothing (found by `redact_seeded`:
    /// `-u name[REDACTED:cli-credentials]` read as a new `user:value`).
    markers: AhoCorasick,
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
        // A DFA: the automatic choice falls back to an NFA past about a
        // hundred patterns, which read ordinary text at half the speed.
        // One automaton reads the text once for the rules' keywords and
        // the host's secret values (those compared exactly after a hit).
        // No prefilter: with two-letter keywords (`sk`, `-p`) its candidates
        // come every few bytes, and restarting the automaton at each cost
        // more than the plain DFA loop (74 -> 92 MiB/s on ordinary text).
        let literals = encodings(host_secrets);
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .prefilter(false)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(kw.iter().chain(&literals))
            .map_err(|e| FilterError::Rules(e.to_string()))?;
        let url = match allow_hosts {
            Some(h) => Some((
                Regex::new(
                    r#"(?i)(?-u:\b)(?:https?|ftp|wss?)://([^\s/?#<>"'\\`)\]]+)[^\s<>"'\\`)\]]*"#,
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
        let markers = AhoCorasickBuilder::new()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&marks)
            .map_err(|e| FilterError::Rules(e.to_string()))?;
        let (ml, ml_rule): (Vec<&str>, Vec<usize>) = specs
            .iter()
            .zip(&rules)
            .enumerate()
            .filter(|(_, (_, r))| r.multiline)
            .flat_map(|(i, (s, _))| s.keywords.iter().map(move |k| (k.as_str(), i)))
            .unzip();
        let multiline_keywords = if ml.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .build(&ml)
                .map_err(|e| FilterError::Rules(e.to_string()))?;
            Some((ac, ml_rule))
        };
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
            loopback_urls: true,
            multiline_keywords,
            multiline_always,
            markers,
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
        self.find_in(text, &[(0, text.len())], urls)
    }

    /// [`Redactor::find_opt`] on the parts `ranges` of `text` (sorted,
    /// disjoint, whole lines), each read as if it were all of the text.
    fn find_in(
        &self,
        text: &str,
        ranges: &[(usize, usize)],
        urls: bool,
    ) -> Vec<(usize, usize, Kind)> {
        let mut spans: Vec<(usize, usize, Kind)> = Vec::new();
        // Which rules to run, and where: lines around keyword hits.
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        for &(rs, re) in ranges {
            let sub = &text[rs..re];
            for m in self.keywords.find_overlapping_iter(sub) {
                let p = m.pattern().as_usize();
                if let Some(lit) = p
                    .checked_sub(self.keyword_rules.len())
                    .and_then(|i| self.literals.get(i))
                {
                    if sub[m.start()..m.end()] == **lit {
                        spans.push((rs + m.start(), rs + m.end(), Kind::HostSecret));
                    }
                    continue;
                }
                let (ls, le) = line_around(sub, m.start(), m.end());
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
            if let Some((url, allow, list)) = self.url.as_ref().filter(|_| urls) {
                for caps in url.captures_iter(sub) {
                    let (Some(all), Some(host)) = (caps.get(0), caps.get(1)) else {
                        continue;
                    };
                    let local = self.loopback_urls && is_loopback(host.as_str());
                    if !local && !host_allowed(host.as_str(), allow, list) {
                        spans.push((rs + all.start(), rs + all.end(), Kind::Url));
                    }
                }
            }
        }
        for &r in &self.always {
            windows[r] = ranges.to_vec();
        }
        // Markers already in the text (rare: checked for cheaply first).
        let marks: Vec<(usize, usize)> =
            if text.contains("[REDACTED:") || text.contains("[BLOCKED-URL]") {
                self.markers
                    .find_iter(text)
                    .map(|m| (m.start(), m.end()))
                    .collect()
            } else {
                Vec::new()
            };
        for (r, ws) in windows.iter().enumerate() {
            for &w in ws {
                self.run_rule(r, text, w, &marks, &mut spans);
            }
        }
        merge(spans)
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
            for caps in rule.regex.captures_iter(hay) {
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
        let mut spans = self.find_opt(text, urls);
        if spans.is_empty() {
            return None;
        }
        let mut out = self.apply(text, &spans, report);
        for _ in 0..8 {
            spans = self.find_again(&out, urls);
            if spans.is_empty() {
                break;
            }
            out = self.apply(&out, &spans, report);
        }
        Some(out)
    }

    /// [`Redactor::find_opt`] on text this filter has just rewritten. Only
    /// lines holding a marker changed, and single-line rules, literals and
    /// URLs see one line at a time (windows never cross a newline), so
    /// only those lines can match anew; the rest is read again only when a
    /// multi-line rule could run. Same result as a full pass, without
    /// reading megabytes twice when there is one blocked URL in them.
    fn find_again(&self, text: &str, urls: bool) -> Vec<(usize, usize, Kind)> {
        let b = text.as_bytes();
        // A two-line rule reads a changed line with the one above or below.
        let two_line = self.rules.iter().any(|r| r.next_line);
        let mut regions: Vec<(usize, usize)> = Vec::new();
        for m in self.markers.find_iter(text) {
            if regions.last().is_some_and(|&(_, e)| m.start() <= e) {
                continue;
            }
            let line_start = |at: usize| memchr::memrchr(b'\n', &b[..at]).map_or(0, |p| p + 1);
            let line_end = |at: usize| memchr::memchr(b'\n', &b[at..]).map_or(b.len(), |p| at + p);
            let mut ls = line_start(m.start());
            let mut le = line_end(m.end());
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
        let mut spans = self.find_in(text, &regions, urls);
        // A multi-line rule can match anew anywhere: those rules whose
        // keywords occur (only they) read the whole text again.
        let mut again = self.multiline_always.clone();
        if let Some((ac, rule_of)) = &self.multiline_keywords {
            again.extend(
                ac.find_overlapping_iter(text)
                    .map(|m| rule_of[m.pattern().as_usize()]),
            );
        }
        again.sort_unstable();
        again.dedup();
        if !again.is_empty() {
            let marks: Vec<(usize, usize)> = self
                .markers
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect();
            for r in again {
                self.run_rule(r, text, (0, text.len()), &marks, &mut spans);
            }
        }
        merge(spans)
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
    let ls = b[lo..start]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(lo, |p| lo + p + 1);
    let hi = (end + MAX).min(b.len());
    let le = b[end..hi]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(hi, |p| end + p);
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

    #[test]
    fn rereading_only_the_changed_lines_gives_the_full_pass_result() {
        let r = Redactor::with(
            &["hunter2-s3cret-value".into()],
            Some(&["ok.example".into()]),
        )
        .unwrap();
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
                .map(String::from),
            )
            .collect();
        // Neighbours glued with different separators: what one replacement
        // leaves next to another is where a new match could appear.
        for (i, a) in pieces.iter().enumerate() {
            let b = &pieces[(i * 7 + 3) % pieces.len()];
            let c = &pieces[(i * 13 + 5) % pieces.len()];
            for sep in ["", " ", "\n", "=", ":"] {
                let text = format!("{a}{sep}{b}{sep}{c}");
                assert_eq!(r.redact(&text).0, settle_full(&r, &text), "{text:?}");
            }
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
