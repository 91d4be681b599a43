//! Per-call cgroups for the native sandbox: the memory and pids limits,
//! the CPU time used, which limit fired, and a way to kill every process
//! of a call. cgroup v2 where toolgate's own cgroup is delegated (writable
//! with the controllers enabled), else v1 `memory` + `pids` (+ `cpuacct`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";

/// Which hierarchy a host offers, found once.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    /// cgroup v2: the directory under which per-call groups are made.
    V2(PathBuf),
    /// cgroup v1: the `memory` and `pids` directories (and `cpuacct` when
    /// mounted) under which per-call groups are made.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: Option<PathBuf>,
    },
}

/// This process's own group in a v1 controller or in v2 (`""`).
fn own_group(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.trim_start_matches('/').to_string())
    })
}

fn writable_dir(p: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    p.is_dir() && access(p, AccessFlags::W_OK).is_ok()
}

impl Hierarchy {
    /// Finds a hierarchy toolgate may make groups in, or says why none.
    pub fn find() -> Result<Hierarchy, String> {
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").exists() {
            let own = own_group("").unwrap_or_default();
            let dir = root.join(own);
            let ctrls =
                std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
            if !writable_dir(&dir) {
                return Err(format!(
                    "cgroup v2: {} is not delegated to this user",
                    dir.display()
                ));
            }
            if !(has("memory") && has("pids")) {
                return Err(format!(
                    "cgroup v2: memory and pids are not enabled in {}/cgroup.subtree_control",
                    dir.display()
                ));
            }
            return Ok(Hierarchy::V2(dir));
        }
        let v1 = |c: &str| {
            let dir = root.join(c).join(own_group(c)?);
            writable_dir(&dir).then_some(dir)
        };
        match (v1("memory"), v1("pids")) {
            (Some(memory), Some(pids)) => Ok(Hierarchy::V1 {
                memory,
                pids,
                cpuacct: v1("cpuacct"),
            }),
            _ => Err(
                "cgroup v1: no writable memory and pids groups (run as root or delegate them)"
                    .into(),
            ),
        }
    }

    /// Removes the groups of toolgate processes that are gone (killed
    /// mid-call), killing what still runs in them. Returns how many.
    pub fn reap_orphans(&self) -> usize {
        let bases: Vec<&PathBuf> = match self {
            Hierarchy::V2(d) => vec![d],
            Hierarchy::V1 {
                memory,
                pids,
                cpuacct,
            } => [Some(memory), Some(pids), cpuacct.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
        };
        let mut n = 0;
        for base in bases {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix("toolgate-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                if Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                // Each v1 group lists the processes; drop removes the group.
                kill_all_in(&e.path());
                drop(CallGroup {
                    dirs: vec![e.path()],
                    v2: false,
                    cpu: None,
                });
                n += 1;
            }
        }
        n
    }

    pub fn describe(&self) -> String {
        match self {
            Hierarchy::V2(d) => format!("cgroup v2 under {}", d.display()),
            Hierarchy::V1 { memory, .. } => format!("cgroup v1 under {}", memory.display()),
        }
    }
}

/// The groups of one call; removed (after killing what is left) on drop.
#[derive(Debug)]
pub struct CallGroup {
    dirs: Vec<PathBuf>,
    v2: bool,
    cpu: Option<PathBuf>,
}

fn write(p: &Path, v: &str) -> std::io::Result<()> {
    std::fs::write(p, v)
}

/// `key value` counters (`memory.events`, `pids.events`, `oom_control`).
fn counter(p: &Path, key: &str) -> u64 {
    crate::sandbox::cgroup_counter(p, key).unwrap_or(0)
}

impl CallGroup {
    /// Makes the call's groups with `memory` bytes (no swap beyond) and
    /// `pids` processes.
    pub fn create(h: &Hierarchy, name: &str, memory: u64, pids: u64) -> std::io::Result<CallGroup> {
        let mut g = CallGroup {
            dirs: vec![],
            v2: matches!(h, Hierarchy::V2(_)),
            cpu: None,
        };
        match h {
            Hierarchy::V2(base) => {
                let d = base.join(name);
                std::fs::create_dir(&d)?;
                g.dirs.push(d.clone());
                write(&d.join("memory.max"), &memory.to_string())?;
                // Swap would let a call exceed its memory unseen.
                let _ = write(&d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &pids.to_string())?;
                g.cpu = Some(d);
            }
            Hierarchy::V1 {
                memory: m,
                pids: p,
                cpuacct,
            } => {
                let md = m.join(name);
                std::fs::create_dir(&md)?;
                g.dirs.push(md.clone());
                write(&md.join("memory.limit_in_bytes"), &memory.to_string())?;
                let memsw = md.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &memory.to_string())?;
                }
                let pd = p.join(name);
                std::fs::create_dir(&pd)?;
                g.dirs.push(pd.clone());
                write(&pd.join("pids.max"), &pids.to_string())?;
                if let Some(c) = cpuacct {
                    let cd = c.join(name);
                    if std::fs::create_dir(&cd).is_ok() {
                        g.dirs.push(cd.clone());
                        g.cpu = Some(cd);
                    }
                }
            }
        }
        Ok(g)
    }

    /// The files through which the child joins every group (it writes
    /// `0`, meaning itself, before it drops privileges). On v1 that is
    /// `tasks`: the child is single-threaded, and moving one thread skips
    /// the global threadgroup lock whose write side waits for an RCU grace
    /// period (~10 ms here) — `cgroup.procs` would pay it per group.
    pub fn procs_files(&self) -> std::io::Result<Vec<OwnedFd>> {
        let file = if self.v2 { "cgroup.procs" } else { "tasks" };
        self.dirs
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join(file))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    /// CPU time used by every process of the call so far.
    pub fn cpu_used(&self) -> Option<Duration> {
        let d = self.cpu.as_ref()?;
        if self.v2 {
            Some(Duration::from_micros(counter(
                &d.join("cpu.stat"),
                "usage_usec ",
            )))
        } else {
            let t = std::fs::read_to_string(d.join("cpuacct.usage")).ok()?;
            t.trim().parse().ok().map(Duration::from_nanos)
        }
    }

    /// Whether the kernel's OOM killer killed a process of the call.
    pub fn oom_killed(&self) -> bool {
        let d = &self.dirs[0];
        if self.v2 {
            counter(&d.join("memory.events"), "oom_kill ") > 0
        } else {
            counter(&d.join("memory.oom_control"), "oom_kill ") > 0
        }
    }

    /// Whether a fork was refused at the pids limit.
    pub fn pids_refused(&self) -> bool {
        let d = if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[1]
        };
        counter(&d.join("pids.events"), "max ") > 0
    }

    /// Processes in the groups now (the pids controller's count).
    pub fn processes(&self) -> Option<u64> {
        let d = if self.v2 {
            &self.dirs[0]
        } else {
            self.dirs.get(1)?
        };
        std::fs::read_to_string(d.join("pids.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills every process of the call and waits (bounded) until none is
    /// left. A killed pid namespace init takes its namespace with it.
    pub fn kill_all(&self) {
        if self.v2 && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // v1: the pids group (the memory group lists the same processes).
        let d = self
            .dirs
            .get(1)
            .filter(|_| !self.v2)
            .unwrap_or(&self.dirs[0]);
        kill_all_in(d);
    }
}

/// SIGKILLs the processes of group `d` until none is left (bounded).
fn kill_all_in(d: &Path) {
    for _ in 0..50 {
        let pids: Vec<i32> = std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Drop for CallGroup {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            // A group is removable once its last process is reaped.
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}
