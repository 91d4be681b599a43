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

/// Most symlinks followed while resolving one path (the kernel's ELOOP bound).
const MAX_LINKS: usize = 40;

/// Resolves `input` against `workspace` as the kernel would: component by
/// component, following each symlink where it stands, so `link/../x` is
/// the `x` beside the link's *target* (not beside the link). The result is
/// the workspace-relative path the kernel would reach, with no symlink
/// left in its existing part; a name that does not exist yet ends it
/// lexically. Refuses a path that leaves the workspace at any step, by
/// `..`, an absolute path, or a symlink (absolute or relative) pointing out.
pub fn resolve(workspace: &Path, input: &str) -> Result<Vec<String>, String> {
    if let Some(v) = syntax_violation(input) {
        return Err(v);
    }
    let root = std::fs::canonicalize(workspace)
        .map_err(|e| format!("workspace is not accessible: {e}"))?;
    let p = Path::new(input);
    let start = if p.is_absolute() {
        inside(p, workspace, &root).ok_or("absolute path outside the workspace")?
    } else {
        p.to_path_buf()
    };
    let mut todo: std::collections::VecDeque<String> =
        names(&start, "absolute path outside the workspace")?.into();
    let mut out: Vec<String> = Vec::new();
    let mut exists = true;
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if !exists {
                // The kernel fails here (ENOENT); judging a guess would be looser.
                return Err("path goes through a name that does not exist before `..`".into());
            }
            if out.pop().is_none() {
                return Err("path escapes the workspace with `..`".into());
            }
            continue;
        }
        out.push(c);
        if !exists {
            continue;
        }
        let here = root.join(out.join("/"));
        let meta = match std::fs::symlink_metadata(&here) {
            Ok(m) => m,
            Err(_) => {
                exists = false;
                continue;
            }
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err("too many levels of symlinks".into());
        }
        let target = std::fs::read_link(&here)
            .map_err(|e| format!("path goes through a symlink that cannot be read: {e}"))?;
        out.pop();
        let rel = if target.is_absolute() {
            out.clear();
            inside(&target, workspace, &root)
                .ok_or("path resolves through a symlink to outside the workspace")?
        } else {
            target
        };
        // The target's components come next, before the rest of the path.
        let front = names(
            &rel,
            "path resolves through a symlink to outside the workspace",
        )?;
        for c in front.into_iter().rev() {
            todo.push_front(c);
        }
    }
    Ok(out)
}

/// The names of a relative path, `..` kept as `..` and `.` dropped;
/// `outside` when it is rooted after all.
fn names(p: &Path, outside: &str) -> Result<Vec<String>, String> {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(s) => Ok(s.to_string_lossy().into_owned()),
            Component::ParentDir => Ok("..".to_string()),
            _ => Err(outside.to_string()),
        })
        .collect()
}

/// `abs` relative to the workspace (as given or canonical), component by
/// component with no lexical `..` folding; `None` when it is not below it.
fn inside(abs: &Path, workspace: &Path, root: &Path) -> Option<PathBuf> {
    abs.strip_prefix(root)
        .or_else(|_| abs.strip_prefix(workspace))
        .ok()
        .map(Path::to_path_buf)
}
