//! The native sandbox's seccomp filter: one table of what a tool never
//! needs, each entry with its reason (as firecracker documents its
//! filters). Everything not listed is allowed: the filter is a second
//! layer behind namespaces, Landlock and an unprivileged uid, meant to
//! shrink the kernel surface a sandboxed process can reach.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// How an entry matches its syscall.
#[derive(Debug, Clone, Copy)]
pub enum Match {
    /// Every call.
    Always,
    /// Calls whose argument `arg` has any of the bits in `mask` set.
    AnyBit { arg: u8, mask: u64 },
    /// Calls whose argument `arg` equals `value` after `& mask`.
    Masked { arg: u8, mask: u64, value: u64 },
}

/// One denied syscall (or a denied use of one).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub nr: i64,
    pub when: Match,
    pub why: &'static str,
}

const NS_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// An entry denying every call of `nr`.
const fn deny(name: &'static str, nr: i64, why: &'static str) -> Entry {
    Entry {
        name,
        nr,
        when: Match::Always,
        why,
    }
}

/// An entry denying calls whose 32-bit argument `arg` equals `value`.
const fn arg_is(name: &'static str, nr: i64, arg: u8, value: u64, why: &'static str) -> Entry {
    Entry {
        name,
        nr,
        when: Match::Masked {
            arg,
            mask: 0xffff_ffff,
            value,
        },
        why,
    }
}

/// The table. Denied calls fail with `EPERM` (a tool sees an ordinary
/// permission error, not a crash); `clone3` fails with `ENOSYS` so that
/// libc falls back to `clone`, whose flags the filter can read.
pub fn table() -> Vec<Entry> {
    let mut t = vec![
        deny(
            "mount",
            libc::SYS_mount,
            "mounts would rearrange the sandbox's own view",
        ),
        deny(
            "umount2",
            libc::SYS_umount2,
            "unmounting would uncover what the view masks",
        ),
        deny(
            "pivot_root",
            libc::SYS_pivot_root,
            "changes the root the view was built on",
        ),
        deny(
            "chroot",
            libc::SYS_chroot,
            "a second root is a classic escape step",
        ),
        deny("fsopen", libc::SYS_fsopen, "new mount API: same as mount"),
        deny(
            "fsconfig",
            libc::SYS_fsconfig,
            "new mount API: same as mount",
        ),
        deny("fsmount", libc::SYS_fsmount, "new mount API: same as mount"),
        deny(
            "fspick",
            libc::SYS_fspick,
            "new mount API: reconfigures existing mounts",
        ),
        deny(
            "move_mount",
            libc::SYS_move_mount,
            "new mount API: moves mounts",
        ),
        deny(
            "open_tree",
            libc::SYS_open_tree,
            "new mount API: clones mount trees",
        ),
        deny(
            "mount_setattr",
            libc::SYS_mount_setattr,
            "could clear read-only flags of the view",
        ),
        deny(
            "unshare",
            libc::SYS_unshare,
            "new namespaces (a user namespace gives capabilities back)",
        ),
        deny(
            "setns",
            libc::SYS_setns,
            "joining other namespaces leaves the sandbox",
        ),
        deny(
            "ptrace",
            libc::SYS_ptrace,
            "tracing reads and rewrites other processes",
        ),
        deny(
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            "reads another process's memory",
        ),
        deny(
            "process_vm_writev",
            libc::SYS_process_vm_writev,
            "writes another process's memory",
        ),
        deny(
            "pidfd_getfd",
            libc::SYS_pidfd_getfd,
            "steals file descriptors from other processes",
        ),
        deny(
            "kcmp",
            libc::SYS_kcmp,
            "probes other processes' kernel objects",
        ),
        deny(
            "kexec_load",
            libc::SYS_kexec_load,
            "replaces the running kernel",
        ),
        deny(
            "kexec_file_load",
            libc::SYS_kexec_file_load,
            "replaces the running kernel",
        ),
        deny("reboot", libc::SYS_reboot, "a tool never reboots the host"),
        deny("init_module", libc::SYS_init_module, "loads kernel code"),
        deny("finit_module", libc::SYS_finit_module, "loads kernel code"),
        deny(
            "delete_module",
            libc::SYS_delete_module,
            "unloads kernel code",
        ),
        deny(
            "bpf",
            libc::SYS_bpf,
            "eBPF programs are a large kernel attack surface",
        ),
        deny(
            "perf_event_open",
            libc::SYS_perf_event_open,
            "side channels and a history of kernel bugs",
        ),
        deny(
            "userfaultfd",
            libc::SYS_userfaultfd,
            "used to widen kernel race windows in exploits",
        ),
        deny(
            "keyctl",
            libc::SYS_keyctl,
            "the kernel keyring may hold other users' secrets",
        ),
        deny(
            "add_key",
            libc::SYS_add_key,
            "the kernel keyring may hold other users' secrets",
        ),
        deny(
            "request_key",
            libc::SYS_request_key,
            "the kernel keyring may hold other users' secrets",
        ),
        deny(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            "opens files by handle, bypassing the path view",
        ),
        deny(
            "name_to_handle_at",
            libc::SYS_name_to_handle_at,
            "pairs with open_by_handle_at",
        ),
        deny("swapon", libc::SYS_swapon, "host administration"),
        deny("swapoff", libc::SYS_swapoff, "host administration"),
        deny("acct", libc::SYS_acct, "host administration"),
        deny("quotactl", libc::SYS_quotactl, "host administration"),
        deny(
            "syslog",
            libc::SYS_syslog,
            "the kernel log leaks addresses and host activity",
        ),
        deny(
            "settimeofday",
            libc::SYS_settimeofday,
            "the host clock is not the sandbox's",
        ),
        deny(
            "clock_settime",
            libc::SYS_clock_settime,
            "the host clock is not the sandbox's",
        ),
        deny(
            "clock_adjtime",
            libc::SYS_clock_adjtime,
            "the host clock is not the sandbox's",
        ),
        deny(
            "adjtimex",
            libc::SYS_adjtimex,
            "the host clock is not the sandbox's",
        ),
        deny(
            "sethostname",
            libc::SYS_sethostname,
            "the sandbox's name is set before the filter",
        ),
        deny(
            "setdomainname",
            libc::SYS_setdomainname,
            "the sandbox's name is set before the filter",
        ),
        deny("vhangup", libc::SYS_vhangup, "terminal control of the host"),
        deny(
            "io_uring_setup",
            libc::SYS_io_uring_setup,
            "io_uring operations are not seen by this filter",
        ),
        deny(
            "io_uring_enter",
            libc::SYS_io_uring_enter,
            "io_uring operations are not seen by this filter",
        ),
        deny(
            "io_uring_register",
            libc::SYS_io_uring_register,
            "io_uring operations are not seen by this filter",
        ),
        deny(
            "fanotify_init",
            libc::SYS_fanotify_init,
            "watches file access across the system",
        ),
        // `setarch -R`: PER_LINUX | ADDR_NO_RANDOMIZE.
        arg_is(
            "personality",
            libc::SYS_personality,
            0,
            0x0040_0000,
            "ADDR_NO_RANDOMIZE turns off address randomisation",
        ),
        Entry {
            name: "clone",
            nr: libc::SYS_clone,
            when: Match::AnyBit {
                arg: CLONE_FLAGS_ARG,
                mask: NS_FLAGS,
            },
            why: "new namespaces (a user namespace gives capabilities back)",
        },
        arg_is(
            "socket",
            libc::SYS_socket,
            0,
            libc::AF_NETLINK as u64,
            "netlink reconfigures interfaces, routes and firewall rules",
        ),
        arg_is(
            "socket",
            libc::SYS_socket,
            0,
            libc::AF_PACKET as u64,
            "packet sockets read and forge raw frames",
        ),
        Entry {
            name: "socket",
            nr: libc::SYS_socket,
            when: Match::Masked {
                arg: 1,
                mask: 0xf,
                value: libc::SOCK_RAW as u64,
            },
            why: "raw sockets forge packets",
        },
        arg_is(
            "ioctl",
            libc::SYS_ioctl,
            1,
            libc::TIOCSTI,
            "TIOCSTI types into a terminal the sandbox shares",
        ),
        arg_is(
            "ioctl",
            libc::SYS_ioctl,
            1,
            libc::TIOCLINUX,
            "TIOCLINUX reads and writes the console",
        ),
    ];
    // Absent on aarch64.
    #[cfg(target_arch = "x86_64")]
    t.extend([
        Entry {
            name: "iopl",
            nr: libc::SYS_iopl,
            when: Match::Always,
            why: "raw port I/O",
        },
        Entry {
            name: "ioperm",
            nr: libc::SYS_ioperm,
            when: Match::Always,
            why: "raw port I/O",
        },
    ]);
    t
}

/// `clone`'s flags argument (the first on every supported architecture).
const CLONE_FLAGS_ARG: u8 = 0;

/// The architecture the filter is compiled for; `None` where the native
/// backend is not offered.
pub fn arch() -> Option<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Some(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(TargetArch::aarch64)
    } else {
        None
    }
}

/// Compiles the table into two programs, installed in this order: the
/// first makes `clone3` fail with `ENOSYS`, the second denies the table
/// with `EPERM`. Compiled once, in the parent; the child only installs.
pub fn compile() -> Result<Vec<BpfProgram>, String> {
    let arch = arch().ok_or("seccomp: unsupported architecture")?;
    let err = |e: seccompiler::BackendError| e.to_string();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for e in table() {
        let cond = |arg, op, value| SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value);
        let rule = match e.when {
            Match::Always => None,
            Match::Masked { arg, mask, value } => Some(vec![
                SeccompRule::new(vec![
                    cond(arg, SeccompCmpOp::MaskedEq(mask), value).map_err(err)?,
                ])
                .map_err(err)?,
            ]),
            // Any of the bits: one rule per bit (rules of an entry are OR-ed).
            Match::AnyBit { arg, mask } => (0..64)
                .map(|b| 1u64 << b)
                .filter(|bit| mask & bit != 0)
                .map(|bit| SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(bit), bit)?]))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(err)?,
        };
        let slot = rules.entry(e.nr).or_default();
        match rule {
            // An unconditional entry: an empty rule list matches every call.
            None => slot.clear(),
            Some(r) => slot.extend(r),
        }
    }
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(err)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(err)?;
    Ok(vec![
        BpfProgram::try_from(clone3).map_err(err)?,
        BpfProgram::try_from(deny).map_err(err)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_a_reason_and_the_table_compiles() {
        let t = table();
        assert!(t.len() > 40);
        assert!(t.iter().all(|e| !e.why.is_empty() && e.nr >= 0));
        let progs = compile().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty()));
    }
}
