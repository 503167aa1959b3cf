//! Privilege reduction, as firecracker's jailer does for a VMM: after start-up (socket bound,
//! configuration and token read, runtime and device created) vdev can drop to an
//! unprivileged user ([`drop_to_user`]) and then installs a seccomp filter on every thread
//! ([`install_filter`]) that allows exactly the system calls serving a VMM and the backend
//! needs: socket and file-descriptor I/O, memory mapping without `PROT_EXEC`, futexes and
//! polling, TCP connections to the backend, thread bookkeeping. No `execve`, no `ptrace`, no
//! new listening sockets, no `AF_UNIX`/`AF_NETLINK` sockets; anything else kills the process.
//! Opening a file fails with `EACCES` instead of killing: glibc opens files lazily on its own
//! (the allocator reads `/proc/sys/vm/overcommit_memory` the first time it shrinks a thread's
//! heap, which happens when a tokio blocking thread exits) and copes with the refusal, so vdev
//! never opens a file once it serves and the library's probes cannot take it down.
//!
//! The filter is built with rust-vmm's `seccompiler` (the crate firecracker uses). It is
//! x86_64- and aarch64-aware through `libc::SYS_*`; the list is what the real-VM tests
//! (`tests/vm/test-vdev.sh`, `test-kmod.sh`, `test-cuda.sh`) exercise with the filter on.

use std::collections::BTreeMap;
use std::ffi::CString;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("unknown user {0:?}")]
    NoSuchUser(String),
    #[error("cannot look up user {0:?}")]
    Lookup(String, #[source] std::io::Error),
    #[error("cannot give {path} to user {user}")]
    Chown {
        path: String,
        user: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot drop privileges to user {user} ({step})")]
    Drop {
        user: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("privileges were not dropped: root could be regained")]
    StillRoot,
    #[error("cannot build the seccomp filter")]
    Filter(#[source] seccompiler::BackendError),
    #[error("cannot install the seccomp filter (run with --no-seccomp to debug)")]
    Install(#[source] seccompiler::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A user to run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Looks up `name` in the user database.
pub fn lookup_user(name: &str) -> Result<User> {
    let c = CString::new(name).map_err(|_| Error::NoSuchUser(name.into()))?;
    // SAFETY: all-zero is a valid `passwd` (pointers null, ids 0); getpwnam_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `c` is NUL-terminated, `pw` and `out` are
    // live locals, `buf` is a live buffer of the length passed.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 {
        return Err(Error::Lookup(
            name.into(),
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    if out.is_null() {
        return Err(Error::NoSuchUser(name.into()));
    }
    Ok(User {
        name: name.into(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

fn os_step(user: &User, step: &'static str, rc: libc::c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Drop {
            user: user.name.clone(),
            step,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Gives `path` (the vfio-user socket vdev created) to `user`, so it can still remove it.
pub fn give(path: &std::path::Path, user: &User) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|source| Error::Chown {
        path: path.display().to_string(),
        user: user.name.clone(),
        source,
    })
}

/// Drops every privilege to `user`: no supplementary groups, its group and its user id
/// (real, effective and saved, so root cannot be regained), then checks it stuck.
pub fn drop_to_user(user: &User) -> Result<()> {
    // SAFETY: setgroups with a count of 0 reads no memory.
    os_step(user, "setgroups", unsafe {
        libc::setgroups(0, std::ptr::null())
    })?;
    // SAFETY: plain system calls on integer arguments.
    os_step(user, "setresgid", unsafe {
        libc::setresgid(user.gid, user.gid, user.gid)
    })?;
    // SAFETY: as above.
    os_step(user, "setresuid", unsafe {
        libc::setresuid(user.uid, user.uid, user.uid)
    })?;
    // SAFETY: plain system calls; setuid(0) must fail now unless the user is root.
    if user.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(Error::StillRoot);
    }
    Ok(())
}

// `libc::FIONBIO`'s type differs between targets; the request number fits 32 bits.
#[allow(clippy::unnecessary_cast)]
const IOCTL_FIONBIO: u64 = libc::FIONBIO as u64;
#[allow(clippy::unnecessary_cast)]
const IOCTL_FIOCLEX: u64 = libc::FIOCLEX as u64;

fn cond(
    arg: u8,
    op: Op,
    value: u64,
) -> std::result::Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, Len::Dword, op, value)
}

/// The filter: every system call vdev makes once it serves, and nothing else.
pub fn filter(log_only: bool) -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let allow = [
        // I/O on descriptors it holds: vfio-user socket, backend sockets, eventfds, stderr.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_close,
        libc::SYS_shutdown,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_fcntl,
        // Accepting the VMM's next connection; connecting to the backend.
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        // Waiting: tokio's epoll, the message loop's poll, futexes, timers.
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_futex,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_sched_yield,
        // Memory: the allocator and guest memory mappings (executable mappings refused
        // below).
        libc::SYS_munmap,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_mremap,
        // Threads (tokio may start blocking-pool threads) and their teardown.
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_getaffinity,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_restart_syscall,
        libc::SYS_getrandom,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_tgkill,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // Removing its socket file when it stops.
        libc::SYS_unlinkat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_unlink,
        // Passed on to the refusal filter ([`refusals`]), which answers EACCES.
        libc::SYS_openat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open,
    ];
    for s in allow {
        rules.insert(s, Vec::new());
    }
    let f = Error::Filter;
    let no_exec = |arg| -> Result<Vec<SeccompRule>> {
        Ok(vec![SeccompRule::new(vec![cond(
            arg,
            Op::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )
        .map_err(f)?])
        .map_err(f)?])
    };
    rules.insert(libc::SYS_mmap, no_exec(2)?);
    rules.insert(libc::SYS_mprotect, no_exec(2)?);
    // TCP to the backend only.
    rules.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![cond(0, Op::Eq, libc::AF_INET as u64).map_err(f)?]).map_err(f)?,
            SeccompRule::new(vec![cond(0, Op::Eq, libc::AF_INET6 as u64).map_err(f)?])
                .map_err(f)?,
        ],
    );
    // ioctl: only switching a socket to non-blocking mode and close-on-exec.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            SeccompRule::new(vec![cond(1, Op::Eq, IOCTL_FIONBIO).map_err(f)?]).map_err(f)?,
            SeccompRule::new(vec![cond(1, Op::Eq, IOCTL_FIOCLEX).map_err(f)?]).map_err(f)?,
        ],
    );
    // Thread names only.
    rules.insert(
        libc::SYS_prctl,
        vec![
            SeccompRule::new(vec![cond(0, Op::Eq, libc::PR_SET_NAME as u64).map_err(f)?])
                .map_err(f)?,
        ],
    );
    let mismatch = if log_only {
        SeccompAction::Log
    } else {
        SeccompAction::KillProcess
    };
    let arch = std::env::consts::ARCH.try_into().map_err(Error::Filter)?;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch).map_err(f)?;
    filter.try_into().map_err(Error::Filter)
}

/// The second filter: opening a file fails with `EACCES` (everything else is left to
/// [`filter`]). The kernel runs both and takes the strictest answer, so the allow-list
/// passes `openat` on and this one refuses it without killing.
pub fn refusals() -> Result<BpfProgram> {
    let f = Error::Filter;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_openat, Vec::new());
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_open, Vec::new());
    let arch = std::env::consts::ARCH.try_into().map_err(Error::Filter)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )
    .map_err(f)?;
    filter.try_into().map_err(Error::Filter)
}

/// Both programs, in the order they are installed (the refusals first: the allow-list has
/// no `seccomp` call for a later filter).
pub fn programs(log_only: bool) -> Result<[BpfProgram; 2]> {
    Ok([refusals()?, filter(log_only)?])
}

/// Installs the filters on every thread of the process (seccomp TSYNC). `log_only`: log
/// violations to the kernel audit log instead of killing (diagnosis).
pub fn install_filter(log_only: bool) -> Result<()> {
    for prog in programs(log_only)? {
        seccompiler::apply_filter_all_threads(&prog).map_err(Error::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_for_this_machine() {
        let p = filter(false).unwrap();
        assert!(p.len() > 50);
        assert!(filter(true).is_ok());
    }

    #[test]
    fn unknown_users_are_errors() {
        assert!(matches!(
            lookup_user("no-such-user-netgpu-test"),
            Err(Error::NoSuchUser(_))
        ));
        assert_eq!(lookup_user("root").unwrap().uid, 0);
    }

    /// Runs `body` in a child process under both filters and returns its wait status.
    fn under_filters(body: fn() -> i32) -> i32 {
        let progs = programs(false).unwrap();
        // SAFETY: the child installs the filters, runs `body` and exits without returning
        // into the test harness; the parent waits for it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if progs.iter().all(|p| seccompiler::apply_filter(p).is_ok()) {
                body()
            } else {
                2
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a live local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    /// A child process under the filters is killed for a call outside the list.
    #[test]
    fn a_filtered_process_is_killed_for_a_call_outside_the_list() {
        let status = under_filters(|| {
            // Forbidden: a Unix socket. The kernel kills us.
            // SAFETY: a plain system call on integer arguments.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            0
        });
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }

    /// Opening a file is refused with EACCES, not a kill: glibc opens
    /// /proc/sys/vm/overcommit_memory by itself when a thread's heap shrinks (CI's
    /// test-torture lost vdev to SIGSYS when a tokio blocking thread exited).
    #[test]
    fn opening_a_file_fails_with_eacces_and_the_process_lives() {
        let status = under_filters(|| {
            // SAFETY: a valid NUL-terminated path.
            let fd = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            if fd != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EACCES) {
                return 3;
            }
            // A thread that fills and empties its own heap, then exits (the allocator's
            // heap shrinking, as tokio's blocking threads do).
            let t = std::thread::spawn(|| {
                let v: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 64 * 1024]).collect();
                v.iter().map(|b| b[0] as u64).sum::<u64>()
            });
            match t.join() {
                Ok(_) => 0,
                Err(_) => 4,
            }
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
