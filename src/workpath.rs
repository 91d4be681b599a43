//! Workspace paths: turn an agent-supplied path into components relative
//! to the workspace root, or a reason why not. Lexical, plus symlink
//! resolution the way the kernel does it.
//!
//! Shared by the policy (which judges the components against its rules) and
//! the sandboxes (which open them), so a decision and its enforcement read a
//! path the same way. Knows nothing of rules or backends.

use std::path::{Component, Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

/// Bidirectional controls: they make text display differently from what it is
/// (the "Trojan Source" class of attack).
pub fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Zero-width and other invisible format characters.
pub fn is_zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}' | '\u{034F}'
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}'
    )
}

pub fn is_invisible(c: char) -> bool {
    is_bidi(c) || is_zero_width(c)
}

/// Characters that never belong in a path an agent hands us: they hide
/// what the path is (bidi overrides, zero-width characters) or mimic a
/// separator or dot after Unicode folding.
fn is_hidden_or_lookalike(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    const CONFUSABLE: &[char] = &[
        '\u{2215}',
        '\u{2044}',
        '\u{29F8}',
        '\u{2571}',
        '\u{27CB}',
        '\u{FF0F}',
        '\u{FF3C}',
        '\u{FE68}',
        '\u{29F5}',
        '\u{2216}',
        '\u{2024}',
        '\u{2025}',
        '\u{2026}',
        '\u{FF0E}',
        '\u{00B7}',
        '\u{0701}',
        '\u{0702}',
        '\u{A60E}',
        '\u{10A50}',
        '\u{3002}',
        '\u{FF61}',
    ];
    if CONFUSABLE.contains(&c) || is_invisible(c) {
        return true;
    }
    // Anything that folds (NFKC) to path syntax: fullwidth forms, leaders, …
    c.to_string().nfkc().any(|n| "./\\~$%:".contains(n))
}

/// Syntactic reasons to refuse a path before touching the filesystem.
pub fn syntax_violation(input: &str) -> Option<String> {
    if input.is_empty() {
        return Some("empty path".into());
    }
    if input.contains('\0') {
        return Some("path contains a NUL byte".into());
    }
    if input.chars().any(|c| c.is_control()) {
        return Some("path contains a control character".into());
    }
    if input.contains('\\') {
        return Some("path contains a backslash (no Windows separators or escapes)".into());
    }
    if input.starts_with('~') {
        return Some("path starts with `~` (home directories are outside the workspace)".into());
    }
    if input.contains('$') || input.contains('`') {
        return Some(
            "path contains `$` or a backtick (no variable or command expansion in paths)".into(),
        );
    }
    let b = input.as_bytes();
    if b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    {
        return Some("path contains a percent-encoded byte".into());
    }
    if let Some(c) = input.chars().find(|&c| is_hidden_or_lookalike(c)) {
        return Some(format!(
            "path contains U+{:04X}, an invisible character or a look-alike of path syntax",
            c as u32
        ));
    }
    None
}

/// Lexically resolves `input` against `workspace` into relative components.
/// Refuses anything that leaves the workspace.
pub fn normalize(workspace: &Path, input: &str) -> Result<Vec<String>, String> {
    if let Some(v) = syntax_violation(input) {
        return Err(v);
    }
    let p = Path::new(input);
    let rel: PathBuf = if p.is_absolute() {
        let ws = lexical(workspace);
        let abs = lexical(p);
        let canon_ws = std::fs::canonicalize(workspace).unwrap_or_else(|_| ws.clone());
        if let Ok(r) = abs.strip_prefix(&ws) {
            r.to_path_buf()
        } else if let Ok(r) = abs.strip_prefix(&canon_ws) {
            r.to_path_buf()
        } else {
            return Err("absolute path outside the workspace".into());
        }
    } else {
        p.to_path_buf()
    };
    let mut parts: Vec<String> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("path escapes the workspace with `..`".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path outside the workspace".into());
            }
        }
    }
    Ok(parts)
}

/// Lexical normalization of an absolute path (no filesystem access).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Follows symlinks in the longest existing prefix of `rel` and returns the
/// workspace-relative target, or an error when it resolves outside.
pub fn resolve_symlinks(workspace: &Path, rel: &[String]) -> Result<Vec<String>, String> {
    let root = std::fs::canonicalize(workspace)
        .map_err(|e| format!("workspace is not accessible: {e}"))?;
    // Walk the existing prefix with lstat; only a symlink needs the full
    // (slower) canonicalization.
    let mut existing = root.clone();
    let mut n = 0;
    let mut saw_link = false;
    for part in rel {
        let next = existing.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(m) => {
                saw_link |= m.file_type().is_symlink();
                existing = next;
                n += 1;
            }
            Err(_) => break,
        }
    }
    if !saw_link {
        return Ok(rel.to_vec());
    }
    let canon = match std::fs::canonicalize(&existing) {
        Ok(c) => c,
        // A dangling symlink: its target cannot be judged, so refuse it.
        Err(_) => return Err("path goes through a symlink that cannot be resolved".into()),
    };
    let inside = canon
        .strip_prefix(&root)
        .map_err(|_| "path resolves through a symlink to outside the workspace".to_string())?;
    let mut out: Vec<String> = inside
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    out.extend(rel[n..].iter().cloned());
    Ok(out)
}
