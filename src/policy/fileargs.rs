//! Which arguments of a program name files, and how it uses them.
//!
//! `cat ~/.ssh/id_rsa` must be judged like `read_file ~/.ssh/id_rsa`, so the
//! command analysis hands the path arguments of programs known to read or
//! write files to the path rules. For any other program, an argument that
//! names a place outside the workspace by its spelling (absolute, `~`, or
//! `..`) is judged as a read of that path: an unknown program may open it.
//!
//! Mistaking an option's value for a path can only make a decision
//! stricter, so the option tables below list what matters for the common
//! case and need not be complete.

use super::paths::Access;
use super::shell::Word;

/// A path argument found in a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    pub path: String,
    pub access: Access,
    /// Contains glob characters: judged as written and as expanded.
    pub glob: bool,
}

/// How a program treats its positional arguments.
struct Spec {
    /// Access for the positional file arguments.
    access: Access,
    /// Leading positionals that are not files (a pattern, a mode, a script)
    /// unless one of `lead_opts` supplied it instead.
    lead: usize,
    lead_opts: &'static [&'static str],
    /// The last positional is written (cp, ln, install).
    last_writes: bool,
    /// Options whose separate value is not a file.
    value_opts: &'static [&'static str],
    /// Options whose separate value is a file read or written.
    file_opts: &'static [(&'static str, Access)],
}

const R: Access = Access::Read;
const W: Access = Access::Write;

const fn spec(access: Access) -> Spec {
    Spec {
        access,
        lead: 0,
        lead_opts: &[],
        last_writes: false,
        value_opts: &[],
        file_opts: &[],
    }
}

/// Programs whose arguments are data, never files opened by them.
const DATA_ARGS: &[&str] = &[
    "echo", "printf", "test", "[", "[[", "expr", "true", "false", "sleep", "seq", "basename",
    "dirname", "which", "type", "hash", "export", "local", "declare", "readonly", "read", "set",
    "unset", "alias", "tr", "printenv", "date", "id", "whoami", "uname", "hostname", "nproc",
    "yes", "let", "shift", "return", "exit", "trap", "wait", "getopts", "umask", "ulimit",
];

const SEARCH_VALUE_OPTS: [&str; 10] = [
    "-e",
    "--regexp",
    "-m",
    "--max-count",
    "-A",
    "-B",
    "-C",
    "--context",
    "--after-context",
    "--before-context",
];
const GREP_VALUE_OPTS: &[&str] = &concat_opts::<13>(&SEARCH_VALUE_OPTS, &["-d", "-D", "--label"]);
const RG_VALUE_OPTS: &[&str] = &concat_opts::<22>(
    &SEARCH_VALUE_OPTS,
    &[
        "-g",
        "--glob",
        "-t",
        "--type",
        "-T",
        "--type-not",
        "-j",
        "--threads",
        "-M",
        "--max-columns",
        "-E",
        "--encoding",
    ],
);

const fn concat_opts<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

fn spec_of(prog: &str, args: &[Word]) -> Option<Spec> {
    let has = |opts: &[&str]| args.iter().any(|a| opts.contains(&a.text.as_str()));
    Some(match prog {
        "cat" | "tac" | "nl" | "less" | "more" | "wc" | "strings" | "file" | "stat" | "md5sum"
        | "sha1sum" | "sha224sum" | "sha256sum" | "sha384sum" | "sha512sum" | "b2sum" | "cksum"
        | "sum" | "base64" | "base32" | "diff" | "cmp" | "comm" | "paste" | "join" | "fold"
        | "fmt" | "rev" | "iconv" | "zcat" | "bzcat" | "xzcat" | "zless" | "look" | "source"
        | "." | "cd" | "pushd" | "realpath" | "readlink" | "lsattr" | "getfacl" | "vi" | "vim"
        | "nano" | "emacs" | "view" | "bat" | "column" | "expand" | "unexpand" | "split"
        | "csplit" | "pr" | "tsort" | "shuf" | "uniq" => spec(R),
        "ls" | "dir" | "du" | "tree" => Spec {
            value_opts: &[
                "-I",
                "--ignore",
                "-w",
                "--width",
                "--block-size",
                "-L",
                "-P",
                "-d",
                "--max-depth",
            ],
            file_opts: &[("-o", W)],
            ..spec(R)
        },
        "head" | "tail" => Spec {
            value_opts: &["-n", "-c", "--lines", "--bytes", "-s", "--pid"],
            ..spec(R)
        },
        "cut" => Spec {
            value_opts: &["-d", "-f", "-c", "-b", "--delimiter", "--output-delimiter"],
            ..spec(R)
        },
        "sort" => Spec {
            value_opts: &[
                "-k",
                "-t",
                "-S",
                "--key",
                "--field-separator",
                "--buffer-size",
            ],
            file_opts: &[("-o", W), ("--output", W), ("-T", W), ("--files0-from", R)],
            ..spec(R)
        },
        "od" | "xxd" | "hexdump" | "hd" => Spec {
            value_opts: &[
                "-A", "-t", "-N", "-j", "-w", "-l", "-s", "-c", "-g", "-n", "-e",
            ],
            ..spec(R)
        },
        // grep's own options mean other things to rg (`-T`, `-E`), so the
        // two families differ only in what they add to the common set.
        "grep" | "egrep" | "fgrep" | "zgrep" | "rg" | "ag" | "ack" => Spec {
            lead: 1,
            lead_opts: &["-e", "--regexp", "-f", "--file"],
            value_opts: if prog.starts_with(['r', 'a']) {
                RG_VALUE_OPTS
            } else {
                GREP_VALUE_OPTS
            },
            file_opts: &[("-f", R), ("--file", R)],
            ..spec(R)
        },
        "sed" | "gsed" => Spec {
            access: if has(&["-i", "--in-place"])
                || args
                    .iter()
                    .any(|a| a.text.starts_with("-i") || a.text.starts_with("--in-place="))
            {
                W
            } else {
                R
            },
            lead: 1,
            lead_opts: &["-e", "--expression", "-f", "--file"],
            value_opts: &["-e", "--expression", "-l", "--line-length"],
            file_opts: &[("-f", R), ("--file", R)],
            ..spec(R)
        },
        "awk" | "gawk" | "mawk" | "nawk" => Spec {
            lead: 1,
            lead_opts: &["-f", "--file"],
            value_opts: &["-F", "-v", "--assign", "--field-separator"],
            file_opts: &[("-f", R), ("--file", R)],
            ..spec(R)
        },
        "jq" | "yq" => Spec {
            lead: 1,
            lead_opts: &["-f", "--from-file"],
            value_opts: &["--arg", "--argjson", "--indent", "--slurpfile", "--rawfile"],
            file_opts: &[("-f", R), ("--from-file", R)],
            ..spec(R)
        },
        "rm" | "rmdir" | "shred" | "unlink" | "touch" | "mkdir" | "tee" | "mv" | "gzip"
        | "gunzip" | "bzip2" | "bunzip2" | "xz" | "unxz" | "zstd" | "mkfifo" | "mknod"
        | "truncate" | "sponge" => Spec {
            value_opts: &[
                "-m", "--mode", "-s", "--size", "-d", "--date", "-t", "-n", "-u", "-S",
            ],
            file_opts: &[("-r", R), ("--reference", R), ("--target-directory", W)],
            ..spec(W)
        },
        "chmod" | "chown" | "chgrp" | "setfacl" | "chattr" => Spec {
            lead: if args.iter().any(|a| a.text.starts_with("--reference")) {
                0
            } else {
                1
            },
            ..spec(W)
        },
        "cp" | "ln" | "install" | "rsync" | "scp" => Spec {
            last_writes: !has(&["-t", "--target-directory"]),
            value_opts: &[
                "-m", "--mode", "-o", "--owner", "-g", "--group", "-S", "--suffix", "-e", "-p",
                "-P", "-i", "-l", "-F", "-o",
            ],
            file_opts: &[("-t", W), ("--target-directory", W)],
            ..spec(R)
        },
        "tar" | "bsdtar" => Spec {
            value_opts: &["-b", "--exclude", "-X", "--transform", "--strip-components"],
            file_opts: &[
                ("-f", W),
                ("--file", W),
                ("-C", W),
                ("--directory", W),
                ("-T", R),
            ],
            ..spec(R)
        },
        "zip" | "unzip" | "7z" => Spec {
            value_opts: &["-x", "-i", "-P", "-t"],
            file_opts: &[("-d", W)],
            ..spec(W)
        },
        "patch" => Spec {
            value_opts: &["-p", "-F", "-z", "-B", "-V"],
            file_opts: &[("-i", R), ("--input", R), ("-o", W), ("--output", W)],
            ..spec(W)
        },
        "dd" => spec(R),
        _ => return None,
    })
}

/// Collects the path arguments of `prog` run with `args`. Returns reasons
/// for arguments that name a file computed at run time.
pub fn collect(prog: &str, args: &[Word], out: &mut Vec<PathArg>) -> Vec<String> {
    let mut unresolved = Vec::new();
    let mut push = |w: &Word, text: &str, access: Access, out: &mut Vec<PathArg>| {
        if w.dynamic {
            unresolved.push(format!(
                "`{prog}` is given a file name computed at run time"
            ));
        } else if !is_stream(text) {
            out.push(PathArg {
                path: text.to_string(),
                access,
                glob: w.glob,
            });
        }
    };
    if prog == "dd" {
        for w in args {
            if let Some(p) = w.text.strip_prefix("if=") {
                push(w, p, R, out);
            } else if let Some(p) = w.text.strip_prefix("of=") {
                push(w, p, W, out);
            }
        }
        return unresolved;
    }
    if prog == "find" || prog == "fd" {
        let access = if args.iter().any(|a| a.text == "-delete") {
            W
        } else {
            R
        };
        for w in args {
            let t = w.text.as_str();
            if t.starts_with('-') || t == "(" || t == "!" {
                break;
            }
            push(w, t, access, out);
        }
        let mut it = args.iter();
        while let Some(w) = it.next() {
            if matches!(
                w.text.as_str(),
                "-fprint" | "-fprint0" | "-fprintf" | "-fls"
            ) && let Some(v) = it.next()
            {
                push(v, &v.text, W, out);
            }
        }
        return unresolved;
    }
    let Some(spec) = spec_of(prog, args) else {
        if !DATA_ARGS.contains(&prog) {
            outside_by_spelling(args, out);
        }
        return unresolved;
    };
    let mut positionals: Vec<&Word> = Vec::new();
    let mut lead = spec.lead;
    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let w = &args[i];
        let t = w.text.as_str();
        i += 1;
        if options_done || !t.starts_with('-') || t == "-" {
            positionals.push(w);
            continue;
        }
        if t == "--" {
            options_done = true;
            continue;
        }
        if spec.lead_opts.contains(&t) {
            lead = 0;
        }
        if let Some((opt, v)) = t.split_once('=') {
            if let Some((_, a)) = spec.file_opts.iter().find(|(o, _)| *o == opt) {
                push(w, v, *a, out);
            } else if looks_outside(v) {
                push(w, v, R, out);
            }
            continue;
        }
        if let Some((_, a)) = spec.file_opts.iter().find(|(o, _)| *o == t) {
            if let Some(v) = args.get(i) {
                push(v, &v.text, *a, out);
                i += 1;
            }
            continue;
        }
        if spec.value_opts.contains(&t) {
            // A value we skip is still judged if it is spelled as a place
            // outside the workspace: a wrong table entry cannot hide a path.
            if let Some(v) = args.get(i) {
                if v.text.len() > 1 && looks_outside(&v.text) {
                    push(v, &v.text, R, out);
                }
                i += 1;
            }
        }
    }
    let n = positionals.len();
    for (k, w) in positionals.into_iter().enumerate() {
        if k < lead {
            continue;
        }
        let access = if spec.last_writes && k + 1 == n && n >= 2 {
            W
        } else {
            spec.access
        };
        push(w, &w.text, access, out);
    }
    unresolved
}

/// For programs whose arguments are not known: any static argument spelled
/// as a place outside the workspace is judged as a read of it.
fn outside_by_spelling(args: &[Word], out: &mut Vec<PathArg>) {
    for w in args {
        if w.dynamic || w.text.chars().any(char::is_whitespace) {
            continue;
        }
        let t = w.text.as_str();
        let value = match t.split_once('=') {
            Some((opt, v)) if opt.starts_with('-') => v,
            _ => t,
        };
        if looks_outside(value) && !is_stream(value) {
            out.push(PathArg {
                path: value.to_string(),
                access: R,
                glob: w.glob,
            });
        }
    }
}

fn looks_outside(v: &str) -> bool {
    v.starts_with('/')
        || v.starts_with('~')
        || v == ".."
        || v.starts_with("../")
        || v.contains("/../")
        || v.ends_with("/..")
}

/// Standard streams and the null device are not files of the workspace.
fn is_stream(p: &str) -> bool {
    matches!(
        p,
        "-" | "/dev/null"
            | "/dev/stdin"
            | "/dev/stdout"
            | "/dev/stderr"
            | "/dev/zero"
            | "/dev/urandom"
            | "/dev/random"
            | "/dev/tty"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Word> {
        s.split_whitespace()
            .map(|t| Word {
                text: t.into(),
                ..Word::default()
            })
            .collect()
    }

    fn paths(prog: &str, args: &str) -> Vec<(String, Access)> {
        let mut out = Vec::new();
        collect(prog, &words(args), &mut out);
        out.into_iter().map(|p| (p.path, p.access)).collect()
    }

    #[test]
    fn known_programs() {
        assert_eq!(
            paths("cat", "-n a b"),
            vec![("a".into(), R), ("b".into(), R)]
        );
        assert_eq!(paths("head", "-n 5 f"), vec![("f".into(), R)]);
        assert_eq!(paths("grep", "-rn pat src"), vec![("src".into(), R)]);
        assert_eq!(
            paths("grep", "-e pat ~/.ssh/id_rsa"),
            vec![("~/.ssh/id_rsa".into(), R)]
        );
        assert_eq!(paths("sed", "-i s/a/b/ f"), vec![("f".into(), W)]);
        assert_eq!(
            paths("cp", "a b dst"),
            vec![("a".into(), R), ("b".into(), R), ("dst".into(), W)]
        );
        assert_eq!(
            paths("cp", "-t dst a"),
            vec![("dst".into(), W), ("a".into(), R)]
        );
        assert_eq!(paths("chmod", "600 f"), vec![("f".into(), W)]);
        assert_eq!(
            paths("dd", "if=/dev/zero of=disk.img"),
            vec![("disk.img".into(), W)]
        );
        assert_eq!(paths("find", ". -name x -delete"), vec![(".".into(), W)]);
        assert_eq!(
            paths("sort", "-o out in"),
            vec![("out".into(), W), ("in".into(), R)]
        );
        assert_eq!(paths("cut", "-d / -f 1 f"), vec![("f".into(), R)]);
    }

    #[test]
    fn unknown_programs_are_judged_by_spelling() {
        assert_eq!(paths("git", "-C /other status"), vec![("/other".into(), R)]);
        assert_eq!(
            paths("cargo", "build --target-dir=../t"),
            vec![("../t".into(), R)]
        );
        assert!(paths("cargo", "test --all").is_empty());
        assert!(paths("echo", "/etc/passwd").is_empty());
    }
}
