//! Turning the process into a well-behaved Unix daemon (Linux).
//!
//! Call order in `main`: parse config → [`detach`] → bind sockets → [`drop_privileges`]
//! → [`Detached::ready`]. The shell that started the daemon gets its exit status only
//! at `ready` (0) or [`Detached::fail`] (1, message on its stderr), so "started" means
//! "listening", and a config or bind error reaches the operator's terminal.
//!
//! [`detach`] must run before any thread is spawned (including by libraries, e.g. a
//! logger's background thread): `fork` copies only the calling thread, so a lock held by
//! another thread would stay locked forever in the daemon. It refuses to run if
//! `/proc/self/task` shows more than one thread. Because the process is single-threaded
//! at the fork, the child is a consistent copy and may allocate and use std freely.
//!
//! Descriptors above 2 without close-on-exec are closed in the daemon: they were
//! inherited from whatever launched us (std opens everything close-on-exec) and would
//! keep the launcher's pipes or terminal open. Signal dispositions, the signal mask
//! and resource limits are left alone: with no exec they are this program's own.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the launching process waits for [`Detached::ready`] or [`Detached::fail`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

const NOT_READY: &str = "daemon exited before it was ready";
/// Keeps a failure report within PIPE_BUF, so it is written in one piece.
const MAX_REPORT: usize = 4000;
const STATUS_READY: u8 = 0;
const STATUS_FAILED: u8 = 1;

/// How to daemonize. `Default` detaches (session, stdio, inherited descriptors) and
/// changes nothing else.
#[derive(Debug, Clone, Default)]
pub struct DaemonSettings {
    /// Created, locked and filled with the daemon's final pid; checked before forking.
    /// A relative path is resolved against the directory `detach` was called from.
    pub pidfile: Option<PathBuf>,
    /// User for [`drop_privileges`]; `detach` only validates it, so a typo fails
    /// before anything is started.
    pub user: Option<String>,
    /// Group for [`drop_privileges`]; defaults to the user's primary group.
    pub group: Option<String>,
    /// File mode creation mask of the daemon. `None` keeps the inherited one (0o022
    /// from most shells and service managers) rather than imposing one.
    pub umask: Option<u32>,
    /// Working directory of the daemon. `None` keeps the current one, because configs
    /// use relative paths; traditional daemons use `/` so they do not pin a mount.
    pub chdir: Option<PathBuf>,
}

/// A daemonizing step that failed, with what was being done and, when there is one,
/// the OS error.
#[derive(Debug)]
pub struct DaemonError {
    context: String,
    detail: Detail,
}

#[derive(Debug)]
enum Detail {
    Os(io::Error),
    Msg(String),
}

impl DaemonError {
    fn os(context: impl Into<String>, err: io::Error) -> Self {
        DaemonError {
            context: context.into(),
            detail: Detail::Os(err),
        }
    }

    fn last_os(context: impl Into<String>) -> Self {
        Self::os(context, io::Error::last_os_error())
    }

    fn msg(context: impl Into<String>, detail: impl Into<String>) -> Self {
        DaemonError {
            context: context.into(),
            detail: Detail::Msg(detail.into()),
        }
    }

    /// What was being done, e.g. `pidfile /run/deadbeat.pid`.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The OS error behind this one, if any.
    pub fn os_error(&self) -> Option<&io::Error> {
        match &self.detail {
            Detail::Os(e) => Some(e),
            Detail::Msg(_) => None,
        }
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Detail::Os(e) => write!(f, "{}: {e}", self.context),
            Detail::Msg(m) => write!(f, "{}: {m}", self.context),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.os_error().map(|e| e as _)
    }
}

/// Detaches from the terminal and session; returns only in the daemon.
///
/// Before forking it validates the settings, checks that the pidfile is not locked by
/// a running process and that the process is single-threaded: an `Err` means nothing
/// was started. The launching process then waits up to [`READY_TIMEOUT`] for
/// [`Detached::ready`] (exit 0) or [`Detached::fail`] (message on stderr, exit 1) and
/// never returns. The daemon is the grandchild: `setsid`, then a second fork so it is
/// not a session leader and can never acquire a controlling terminal. It then applies
/// `umask` and `chdir`, points stdin/stdout/stderr at `/dev/null` (log through the
/// configured log target from here on), closes inherited descriptors (see the module
/// docs) and takes the pidfile, so the pidfile holds the final pid. A failure in those
/// steps is reported to the launcher, which exits 1.
///
/// Keep the returned [`Detached`] until shutdown: dropping it removes the pidfile.
pub fn detach(s: &DaemonSettings) -> Result<Detached, DaemonError> {
    if let Some(mask) = s.umask
        && mask > 0o777
    {
        return Err(DaemonError::msg(
            "umask",
            format!("{mask:#o} is not a mode mask (at most 0o777)"),
        ));
    }
    if let Some(dir) = &s.chdir {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(DaemonError::msg(
                    format!("chdir {}", dir.display()),
                    "not a directory",
                ));
            }
            Err(e) => return Err(DaemonError::os(format!("chdir {}", dir.display()), e)),
        }
    }
    if s.user.is_some() || s.group.is_some() {
        let target = plan_credentials(s.user.as_deref(), s.group.as_deref())?;
        if !is_root() {
            ensure_already(&target)?;
        }
    }
    if let Some(n) = thread_count()
        && n > 1
    {
        return Err(DaemonError::msg(
            "detach",
            format!(
                "the process has {n} threads; detach must be called before any thread is spawned"
            ),
        ));
    }
    let pidfile = match &s.pidfile {
        Some(p) => {
            let abs = absolute_pidfile(p)?;
            ensure_unlocked(&abs)?;
            Some(abs)
        }
        None => None,
    };
    open_std_fds()?;
    // Buffered output would otherwise be lost by the launcher's _exit.
    let _ = io::stdout().flush();
    let (rd, wr) = pipe()?;

    // SAFETY: the process is single-threaded (checked above where /proc allows), so the
    // child is a consistent copy of this one.
    match unsafe { libc::fork() } {
        -1 => Err(DaemonError::last_os("fork")),
        0 => {
            drop(rd);
            Ok(daemon_side(s, pidfile, wr))
        }
        child => {
            drop(wr);
            launcher_side(rd, child)
        }
    }
}

/// Runs in the first child; returns only in the grandchild, which is the daemon.
fn daemon_side(s: &DaemonSettings, pidfile: Option<PathBuf>, wr: File) -> Detached {
    // SAFETY: setsid has no preconditions; we are not a group leader after fork.
    if unsafe { libc::setsid() } == -1 {
        abort_child(&wr, &DaemonError::last_os("setsid"));
    }
    // SAFETY: still single-threaded, see `detach`.
    match unsafe { libc::fork() } {
        -1 => abort_child(&wr, &DaemonError::last_os("second fork")),
        0 => {}
        // SAFETY: _exit skips the atexit handlers and destructors that belong to the
        // daemon, which lives on in the grandchild.
        _ => unsafe { libc::_exit(0) },
    }
    if let Some(mask) = s.umask {
        // SAFETY: umask cannot fail; the value was validated in `detach`.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    if let Some(dir) = &s.chdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        abort_child(&wr, &DaemonError::os(format!("chdir {}", dir.display()), e));
    }
    if let Err(e) = redirect_stdio() {
        abort_child(&wr, &e);
    }
    close_inherited_fds();
    let pidfile = match pidfile.map(Pidfile::acquire).transpose() {
        Ok(p) => p,
        Err(e) => abort_child(&wr, &e),
    };
    Detached {
        notify: Some(wr),
        pidfile,
    }
}

fn abort_child(wr: &File, err: &DaemonError) -> ! {
    send_status(wr, &encode_failure(&err.to_string()));
    // SAFETY: see the intermediate's _exit in `daemon_side`.
    unsafe { libc::_exit(1) }
}

/// The launching process: report the daemon's startup outcome and exit.
fn launcher_side(rd: File, child: libc::pid_t) -> ! {
    let report = wait_for_report(&rd, READY_TIMEOUT);
    // The intermediate exits right after the second fork; reaping it leaves no zombie
    // to whoever inherits it after we exit.
    let mut status = 0;
    // SAFETY: `child` is our own child; `status` is a valid out-pointer.
    while unsafe { libc::waitpid(child, &mut status, 0) } == -1
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let (code, msg) = match report {
        Report::Ready => (0, None),
        Report::Failed(m) => (1, Some(m)),
        Report::Died => (1, Some(NOT_READY.to_string())),
        Report::TimedOut => (
            1,
            Some(format!(
                "daemon did not report readiness within {} s; it may still be running",
                READY_TIMEOUT.as_secs()
            )),
        ),
        Report::Io(e) => (1, Some(format!("waiting for the daemon to start: {e}"))),
    };
    if let Some(m) = msg {
        let _ = writeln!(io::stderr(), "{m}");
    }
    // SAFETY: see the intermediate's _exit in `daemon_side`.
    unsafe { libc::_exit(code) }
}

#[derive(Debug, PartialEq)]
enum Report {
    Ready,
    Failed(String),
    Died,
    TimedOut,
    Io(String),
}

fn encode_failure(msg: &str) -> Vec<u8> {
    let mut end = msg.len().min(MAX_REPORT);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let body = &msg.as_bytes()[..end];
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(STATUS_FAILED);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `None` while the report is incomplete.
fn parse_report(buf: &[u8]) -> Option<Report> {
    match *buf.first()? {
        STATUS_READY => Some(Report::Ready),
        STATUS_FAILED => {
            let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize;
            if len > MAX_REPORT {
                return Some(Report::Failed(
                    "daemon sent a malformed status report".into(),
                ));
            }
            let body = buf.get(5..5 + len)?;
            Some(Report::Failed(String::from_utf8_lossy(body).into_owned()))
        }
        _ => Some(Report::Failed(
            "daemon sent a malformed status report".into(),
        )),
    }
}

/// Waits for a complete report rather than EOF, so a write end leaked into some other
/// process cannot keep the launcher hanging.
fn wait_for_report(rd: &File, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        if let Some(r) = parse_report(&buf) {
            return r;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Report::TimedOut;
        }
        // Rounded up so a sub-millisecond remainder does not become a busy loop.
        let ms = left
            .as_micros()
            .div_ceil(1000)
            .min(libc::c_int::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and its count is 1.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Report::Io(e.to_string());
                }
                continue;
            }
            0 => continue,
            _ => {}
        }
        let mut chunk = [0u8; 512];
        match (&*rd).read(&mut chunk) {
            Ok(0) => return Report::Died,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Report::Io(e.to_string()),
        }
    }
}

fn send_status(wr: &File, bytes: &[u8]) {
    // A launcher that timed out is gone: the write must fail with EPIPE, not kill the
    // daemon, even if the program restored SIGPIPE's default action.
    let _guard = SigpipeIgnored::new();
    let _ = (&*wr).write_all(bytes);
}

struct SigpipeIgnored(Option<libc::sigaction>);

impl SigpipeIgnored {
    fn new() -> Self {
        // SAFETY: an all-zero sigaction is valid (no flags, empty mask, SIG_DFL).
        let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
        ignore.sa_sigaction = libc::SIG_IGN;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers refer to live sigaction structs.
        let ok = unsafe { libc::sigaction(libc::SIGPIPE, &ignore, &mut old) } == 0;
        SigpipeIgnored(ok.then_some(old))
    }
}

impl Drop for SigpipeIgnored {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: `old` is the disposition the kernel gave us back.
            unsafe { libc::sigaction(libc::SIGPIPE, old, std::ptr::null_mut()) };
        }
    }
}

/// The daemon's side of startup: report readiness or failure to the launcher, and own
/// the pidfile.
#[derive(Debug)]
pub struct Detached {
    notify: Option<File>,
    pidfile: Option<Pidfile>,
}

impl Detached {
    /// Tells the launcher that startup succeeded; it exits 0. Later calls, and calls
    /// after [`fail`](Self::fail), do nothing.
    pub fn ready(&mut self) {
        if let Some(wr) = self.notify.take() {
            send_status(&wr, &[STATUS_READY]);
        }
    }

    /// Tells the launcher that startup failed; it prints `msg` to its stderr and exits
    /// with status 1. Releases the pidfile first, since the daemon is not going to run,
    /// so an immediate retry by the operator does not find it locked. The caller should
    /// exit afterwards.
    pub fn fail(&mut self, msg: &str) {
        if let Some(wr) = self.notify.take() {
            self.pidfile = None;
            send_status(&wr, &encode_failure(msg));
        }
    }

    /// The pidfile this daemon holds, if the settings asked for one.
    pub fn pidfile(&self) -> Option<&Pidfile> {
        self.pidfile.as_ref()
    }

    /// Takes ownership of the pidfile, to keep it beyond this `Detached`.
    pub fn take_pidfile(&mut self) -> Option<Pidfile> {
        self.pidfile.take()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.fail(NOT_READY);
    }
}

/// An exclusively locked pidfile holding this process's pid.
///
/// The lock is a `flock` on the open file, released by the kernel however the process
/// ends, so a pidfile left behind by a crash is simply taken over. Dropping removes the
/// file (or, when the directory does not allow that after a privilege drop, empties it)
/// and then releases the lock. The descriptor is close-on-exec, so spawned programs do
/// not inherit the lock; a child forked without exec does, and keeps the pidfile locked
/// as long as it lives.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    file: File,
    owner: u32,
}

impl Pidfile {
    /// Creates (mode 0644 less the umask), locks and writes the pid to `path`. Fails
    /// without touching the file if another process holds it. The path is made
    /// absolute first, so a later `chdir` does not affect removal.
    pub fn acquire(path: impl AsRef<Path>) -> Result<Pidfile, DaemonError> {
        let path = absolute_pidfile(path.as_ref())?;
        let ctx = || format!("pidfile {}", path.display());
        // Each retry means a holder removed the file between our open and our lock.
        for _ in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| open_error(ctx(), e))?;
            let meta = file.metadata().map_err(|e| DaemonError::os(ctx(), e))?;
            if !meta.is_file() {
                return Err(DaemonError::msg(ctx(), "not a regular file"));
            }
            if !try_flock(&file, libc::LOCK_EX).map_err(|e| DaemonError::os(ctx(), e))? {
                return Err(locked_error(ctx(), &file));
            }
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(DaemonError::os(ctx(), e)),
            }
            let owner = std::process::id();
            file.set_len(0).map_err(|e| DaemonError::os(ctx(), e))?;
            file.write_all_at(format!("{owner}\n").as_bytes(), 0)
                .map_err(|e| DaemonError::os(ctx(), e))?;
            return Ok(Pidfile { path, file, owner });
        }
        Err(DaemonError::msg(
            ctx(),
            "kept being replaced while locking it",
        ))
    }

    /// The absolute path of the pidfile.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // A copy in a forked child must not remove the parent's pidfile.
        if std::process::id() != self.owner {
            return;
        }
        let still_ours = match (self.file.metadata(), fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        // Remove before unlocking (on close): a starter that opened the file meanwhile
        // sees it was unlinked and starts over with a fresh one.
        if still_ours && fs::remove_file(&self.path).is_err() {
            let _ = self.file.set_len(0);
        }
    }
}

fn absolute_pidfile(path: &Path) -> Result<PathBuf, DaemonError> {
    std::path::absolute(path).map_err(|e| DaemonError::os(format!("pidfile {}", path.display()), e))
}

fn open_error(ctx: String, e: io::Error) -> DaemonError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        DaemonError::msg(ctx, "is a symbolic link; refusing to follow it")
    } else {
        DaemonError::os(ctx, e)
    }
}

fn locked_error(ctx: String, file: &File) -> DaemonError {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    let pid = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match pid {
        Some(pid) => DaemonError::msg(ctx, format!("locked by running process {pid}")),
        None => DaemonError::msg(ctx, "locked by another process"),
    }
}

/// `Ok(false)` when someone else holds a conflicting lock.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The pre-fork check. A shared lock detects an exclusive holder without excluding
/// another instance's concurrent check; the race with a concurrent start is settled by
/// `acquire` in the daemon, whose failure the launcher reports.
fn ensure_unlocked(path: &Path) -> Result<(), DaemonError> {
    let ctx = || format!("pidfile {}", path.display());
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => {
            if try_flock(&file, libc::LOCK_SH).map_err(|e| DaemonError::os(ctx(), e))? {
                Ok(())
            } else {
                Err(locked_error(ctx(), &file))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(DaemonError::msg(
                    ctx(),
                    format!("{} is not a directory", dir.display()),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DaemonError::msg(
                    ctx(),
                    format!("directory {} does not exist", dir.display()),
                )),
                Err(e) => Err(DaemonError::os(ctx(), e)),
            }
        }
        Err(e) => Err(open_error(ctx(), e)),
    }
}

fn thread_count() -> Option<usize> {
    fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// With 0, 1 or 2 closed, the pipe or the pidfile could land there and be clobbered by
/// the redirection to /dev/null, so fill the holes first.
fn open_std_fds() -> Result<(), DaemonError> {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let null = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| DaemonError::os("/dev/null", e))?;
            // Lowest free number, i.e. this hole (or a lower one): keep it open.
            let _ = null.into_raw_fd();
        }
    }
    Ok(())
}

fn redirect_stdio() -> Result<(), DaemonError> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| DaemonError::os("/dev/null", e))?;
    for fd in 0..=2 {
        // SAFETY: both descriptors are open; dup2 replaces `fd` atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(DaemonError::last_os(format!(
                "redirect fd {fd} to /dev/null"
            )));
        }
    }
    if null.as_raw_fd() <= 2 {
        // It is itself one of 0-2 now: closing it would undo the redirection.
        let _ = null.into_raw_fd();
    }
    Ok(())
}

/// Best effort: without /proc the daemon just keeps them.
fn close_inherited_fds() {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<libc::c_int> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD only queries; the directory's own descriptor, listed too, is
        // closed by now and fails harmlessly.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags != -1 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: no Rust object owns a descriptor without close-on-exec at this
            // point: std sets it on everything it opens, and the pipe and pidfile have it.
            unsafe { libc::close(fd) };
        }
    }
}

fn pipe() -> Result<(File, File), DaemonError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes. Close-on-exec keeps
    // the write end out of programs the daemon spawns, which would delay EOF.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(DaemonError::last_os("pipe"));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(rd), File::from(wr)))
}

// ---- credentials ----

#[derive(Debug)]
struct User {
    /// `None` for a numeric uid without a passwd entry.
    name: Option<CString>,
    uid: libc::uid_t,
    gid: Option<libc::gid_t>,
}

#[derive(Debug)]
struct Credentials {
    user: Option<User>,
    gid: Option<libc::gid_t>,
    /// As configured, for messages.
    label: String,
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Switches to `user` and `group` for good; call after binding privileged ports.
///
/// The group defaults to the user's primary group; supplementary groups become the
/// user's (`initgroups`), or just the group for a numeric uid without a passwd entry.
/// Names are looked up first, then numbers are accepted as ids. The order is
/// supplementary groups, gid, uid, since each step needs the privilege the next one
/// removes. Afterwards it verifies that real, effective and saved ids all changed and
/// that `setuid(0)` fails. `group` alone changes only the groups. When not root, it
/// succeeds only if the process already runs as the requested ids.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), DaemonError> {
    let target = plan_credentials(user, group)?;
    if !is_root() {
        return ensure_already(&target);
    }
    if let Some(gid) = target.gid {
        match target.user.as_ref().and_then(|u| u.name.as_ref()) {
            Some(name) => {
                // SAFETY: `name` is a valid NUL-terminated string.
                if unsafe { libc::initgroups(name.as_ptr(), gid) } == -1 {
                    return Err(DaemonError::last_os(format!(
                        "initgroups {}",
                        name.to_string_lossy()
                    )));
                }
            }
            None => {
                // SAFETY: one gid is read from a live variable.
                if unsafe { libc::setgroups(1, &gid) } == -1 {
                    return Err(DaemonError::last_os(format!("setgroups {gid}")));
                }
            }
        }
        // SAFETY: plain syscall wrapper; glibc applies it to every thread.
        if unsafe { libc::setgid(gid) } == -1 {
            return Err(DaemonError::last_os(format!("setgid {gid}")));
        }
    }
    if let Some(u) = &target.user {
        // SAFETY: as for setgid.
        if unsafe { libc::setuid(u.uid) } == -1 {
            return Err(DaemonError::last_os(format!("setuid {}", u.uid)));
        }
        verify_dropped(u.uid, target.gid)?;
    }
    Ok(())
}

fn verify_dropped(uid: libc::uid_t, gid: Option<libc::gid_t>) -> Result<(), DaemonError> {
    let ctx = "drop privileges";
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut s) } == -1 {
        return Err(DaemonError::last_os(ctx));
    }
    if (r, e, s) != (uid, uid, uid) {
        return Err(DaemonError::msg(
            ctx,
            format!("uids are {r}/{e}/{s} (real/effective/saved), not {uid}"),
        ));
    }
    if let Some(gid) = gid {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: three valid out-pointers.
        if unsafe { libc::getresgid(&mut r, &mut e, &mut s) } == -1 {
            return Err(DaemonError::last_os(ctx));
        }
        if (r, e, s) != (gid, gid, gid) {
            return Err(DaemonError::msg(
                ctx,
                format!("gids are {r}/{e}/{s} (real/effective/saved), not {gid}"),
            ));
        }
    }
    if uid != 0 {
        // SAFETY: plain syscall wrapper; it must fail now.
        if unsafe { libc::setuid(0) } == 0 {
            return Err(DaemonError::msg(
                ctx,
                format!("setuid(0) still succeeds after switching to uid {uid}"),
            ));
        }
        if gid.is_some_and(|g| g != 0) {
            // SAFETY: as above.
            if unsafe { libc::setgid(0) } == 0 {
                return Err(DaemonError::msg(
                    ctx,
                    "setgid(0) still succeeds after dropping privileges",
                ));
            }
        }
    }
    Ok(())
}

/// For a non-root process: the request is fine only if it asks for what we already are.
fn ensure_already(t: &Credentials) -> Result<(), DaemonError> {
    // SAFETY: these getters cannot fail.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    let user_ok = t
        .user
        .as_ref()
        .is_none_or(|u| u.uid == uid && u.uid == euid);
    let group_ok = t.gid.is_none_or(|g| g == gid && g == egid);
    if user_ok && group_ok {
        Ok(())
    } else {
        Err(DaemonError::msg(
            "drop privileges",
            format!(
                "not running as root (uid {uid}), cannot switch to {}",
                t.label
            ),
        ))
    }
}

fn plan_credentials(
    user_spec: Option<&str>,
    group: Option<&str>,
) -> Result<Credentials, DaemonError> {
    let user = user_spec.map(resolve_user).transpose()?;
    let gid = match (group, &user) {
        (Some(g), _) => Some(resolve_group(g)?),
        (None, Some(u)) => Some(u.gid.ok_or_else(|| {
            DaemonError::msg(
                format!("user {}", u.uid),
                "has no passwd entry, so its group is unknown; configure a group",
            )
        })?),
        (None, None) => None,
    };
    let label = match (user_spec, group) {
        (Some(u), Some(g)) => format!("user {u}, group {g}"),
        (Some(u), None) => format!("user {u}"),
        (None, Some(g)) => format!("group {g}"),
        (None, None) => String::new(),
    };
    Ok(Credentials { user, gid, label })
}

fn c_name(kind: &str, spec: &str) -> Result<CString, DaemonError> {
    if spec.is_empty() {
        return Err(DaemonError::msg(kind, "empty name"));
    }
    CString::new(spec)
        .map_err(|_| DaemonError::msg(format!("{kind} {spec:?}"), "contains a NUL byte"))
}

fn resolve_user(spec: &str) -> Result<User, DaemonError> {
    let ctx = || format!("user {spec}");
    let name = c_name("user", spec)?;
    if let Some(u) = getpw(PwKey::Name(&name)).map_err(|e| DaemonError::os(ctx(), e))? {
        return Ok(u);
    }
    let Ok(uid) = spec.parse::<libc::uid_t>() else {
        return Err(DaemonError::msg(ctx(), "no such user"));
    };
    Ok(getpw(PwKey::Uid(uid))
        .map_err(|e| DaemonError::os(ctx(), e))?
        .unwrap_or(User {
            name: None,
            uid,
            gid: None,
        }))
}

fn resolve_group(spec: &str) -> Result<libc::gid_t, DaemonError> {
    let ctx = || format!("group {spec}");
    let name = c_name("group", spec)?;
    if let Some(gid) = getgr(&name).map_err(|e| DaemonError::os(ctx(), e))? {
        return Ok(gid);
    }
    spec.parse::<libc::gid_t>()
        .map_err(|_| DaemonError::msg(ctx(), "no such group"))
}

enum PwKey<'a> {
    Name(&'a CStr),
    Uid(libc::uid_t),
}

fn initial_buf_len(which: libc::c_int) -> usize {
    // SAFETY: sysconf only reads a configuration value.
    match unsafe { libc::sysconf(which) } {
        n if n > 0 => n as usize,
        _ => 16 * 1024,
    }
}

const MAX_NSS_BUF: usize = 1 << 20;

/// Calls a `get*_r` function, growing the buffer on ERANGE; `Ok(None)` when not found.
fn with_nss_buf<T>(
    which: libc::c_int,
    mut call: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<T>),
) -> io::Result<Option<T>> {
    let mut len = initial_buf_len(which);
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if len < MAX_NSS_BUF => len *= 2,
            (libc::EINTR, _) => {}
            // Some NSS modules report "not found" as an error code.
            (libc::ENOENT | libc::ESRCH, _) => return Ok(None),
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

fn getpw(key: PwKey<'_>) -> io::Result<Option<User>> {
    with_nss_buf(libc::_SC_GETPW_R_SIZE_MAX, |buf| {
        // SAFETY: an all-zero passwd (integers and null pointers) is valid.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live storage of the stated size; the strings
        // the call stores in `buf` are copied out before `buf` goes away.
        let rc = unsafe {
            match key {
                PwKey::Name(n) => libc::getpwnam_r(
                    n.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                ),
                PwKey::Uid(u) => {
                    libc::getpwuid_r(u, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
                }
            }
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_owned();
        (
            0,
            Some(User {
                name: Some(name),
                uid: pwd.pw_uid,
                gid: Some(pwd.pw_gid),
            }),
        )
    })
}

fn getgr(name: &CStr) -> io::Result<Option<libc::gid_t>> {
    with_nss_buf(libc::_SC_GETGR_R_SIZE_MAX, |buf| {
        // SAFETY: an all-zero group (integers and null pointers) is valid.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer refers to live storage of the stated size.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        (0, Some(grp.gr_gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> io::Result<Self> {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("daemon-unit-{}-{tag}-{n}", std::process::id()));
            fs::create_dir_all(&dir)?;
            Ok(TempDir(dir))
        }
        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Keeps a second thread alive, so an accidental fork inside the test harness is
    /// refused by the thread check instead of cloning the harness.
    struct ExtraThread(
        Option<mpsc::Sender<()>>,
        Option<std::thread::JoinHandle<()>>,
    );

    impl ExtraThread {
        fn start() -> Self {
            let (tx, rx) = mpsc::channel::<()>();
            let h = std::thread::spawn(move || {
                let _ = rx.recv();
            });
            ExtraThread(Some(tx), Some(h))
        }
    }

    impl Drop for ExtraThread {
        fn drop(&mut self) {
            drop(self.0.take());
            if let Some(h) = self.1.take() {
                let _ = h.join();
            }
        }
    }

    #[test]
    fn acquire_writes_our_pid() -> TestResult {
        let dir = TempDir::new("pid")?;
        let path = dir.join("d.pid");
        let pf = Pidfile::acquire(&path)?;
        assert_eq!(
            fs::read_to_string(&path)?,
            format!("{}\n", std::process::id())
        );
        assert_eq!(pf.path(), path);
        Ok(())
    }

    #[test]
    fn second_acquire_fails_naming_path_and_holder() -> TestResult {
        let dir = TempDir::new("twice")?;
        let path = dir.join("d.pid");
        let _held = Pidfile::acquire(&path)?;
        let Err(err) = Pidfile::acquire(&path) else {
            return Err("second acquire succeeded".into());
        };
        assert_eq!(
            err.to_string(),
            format!(
                "pidfile {}: locked by running process {}",
                path.display(),
                std::process::id()
            )
        );
        assert_eq!(
            fs::read_to_string(&path)?,
            format!("{}\n", std::process::id()),
            "holder's pid kept"
        );
        Ok(())
    }

    #[test]
    fn drop_removes_file_and_releases_lock() -> TestResult {
        let dir = TempDir::new("drop")?;
        let path = dir.join("d.pid");
        drop(Pidfile::acquire(&path)?);
        assert!(!path.exists());
        let _again = Pidfile::acquire(&path)?;
        Ok(())
    }

    #[test]
    fn stale_pidfile_is_taken_over() -> TestResult {
        let dir = TempDir::new("stale")?;
        let path = dir.join("d.pid");
        let mut dead = std::process::Command::new("true").spawn()?;
        dead.wait()?;
        fs::write(&path, format!("{}\n", dead.id()))?;
        ensure_unlocked(&path)?;
        let _pf = Pidfile::acquire(&path)?;
        assert_eq!(
            fs::read_to_string(&path)?,
            format!("{}\n", std::process::id())
        );
        Ok(())
    }

    #[test]
    fn prefork_check_sees_holder_and_missing_directory() -> TestResult {
        let dir = TempDir::new("check")?;
        let path = dir.join("d.pid");
        ensure_unlocked(&path)?;
        let held = Pidfile::acquire(&path)?;
        let err = ensure_unlocked(&path)
            .err()
            .ok_or("check passed while locked")?;
        assert!(
            err.to_string().contains("locked by running process"),
            "{err}"
        );
        drop(held);
        let missing = dir.join("nope/d.pid");
        let err = ensure_unlocked(&missing)
            .err()
            .ok_or("check passed without directory")?;
        assert!(
            err.to_string()
                .starts_with(&format!("pidfile {}", missing.display())),
            "{err}"
        );
        assert!(Pidfile::acquire(&missing).is_err());
        Ok(())
    }

    #[test]
    fn acquire_refuses_symlink() -> TestResult {
        let dir = TempDir::new("link")?;
        let target = dir.join("victim");
        fs::write(&target, "precious")?;
        let link = dir.join("d.pid");
        std::os::unix::fs::symlink(&target, &link)?;
        let err = Pidfile::acquire(&link).err().ok_or("followed a symlink")?;
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&target)?, "precious");
        Ok(())
    }

    #[test]
    fn forked_copy_does_not_remove_parents_pidfile() -> TestResult {
        let dir = TempDir::new("owner")?;
        let path = dir.join("d.pid");
        let mut pf = Pidfile::acquire(&path)?;
        pf.owner = pf.owner.wrapping_add(1);
        drop(pf);
        assert!(path.exists());
        Ok(())
    }

    #[test]
    fn report_protocol_round_trips() -> TestResult {
        assert_eq!(parse_report(&[]), None);
        assert_eq!(parse_report(&[STATUS_READY]), Some(Report::Ready));
        let enc = encode_failure("boom");
        assert_eq!(parse_report(&enc[..6]), None, "incomplete");
        assert_eq!(parse_report(&enc), Some(Report::Failed("boom".into())));
        let long = "é".repeat(MAX_REPORT);
        let Some(Report::Failed(got)) = parse_report(&encode_failure(&long)) else {
            return Err("long report did not parse".into());
        };
        assert!(got.len() <= MAX_REPORT && got.chars().all(|c| c == 'é'));
        Ok(())
    }

    #[test]
    fn wait_for_report_outcomes() -> TestResult {
        let (rd, wr) = pipe()?;
        send_status(&wr, &[STATUS_READY]);
        assert_eq!(wait_for_report(&rd, Duration::from_secs(5)), Report::Ready);

        let (rd, wr) = pipe()?;
        send_status(&wr, &encode_failure("boom"));
        assert_eq!(
            wait_for_report(&rd, Duration::from_secs(5)),
            Report::Failed("boom".into())
        );

        let (rd, wr) = pipe()?;
        drop(wr);
        assert_eq!(wait_for_report(&rd, Duration::from_secs(5)), Report::Died);

        let (rd, _wr) = pipe()?;
        let start = Instant::now();
        assert_eq!(
            wait_for_report(&rd, Duration::from_millis(50)),
            Report::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(50));
        Ok(())
    }

    #[test]
    fn detached_drop_reports_not_ready_and_releases_pidfile() -> TestResult {
        let dir = TempDir::new("detached")?;
        let path = dir.join("d.pid");
        let (rd, wr) = pipe()?;
        drop(Detached {
            notify: Some(wr),
            pidfile: Some(Pidfile::acquire(&path)?),
        });
        assert_eq!(
            wait_for_report(&rd, Duration::from_secs(5)),
            Report::Failed(NOT_READY.into())
        );
        assert!(!path.exists());

        let (rd, wr) = pipe()?;
        let mut d = Detached {
            notify: Some(wr),
            pidfile: Some(Pidfile::acquire(&path)?),
        };
        d.ready();
        d.fail("too late");
        assert_eq!(wait_for_report(&rd, Duration::from_secs(5)), Report::Ready);
        assert!(path.exists(), "ready keeps the pidfile");
        Ok(())
    }

    #[test]
    fn detach_refuses_a_multithreaded_process() -> TestResult {
        let _t = ExtraThread::start();
        if thread_count().is_none() {
            eprintln!("skipped: /proc/self/task is not readable");
            return Ok(());
        }
        let err = detach(&DaemonSettings::default())
            .err()
            .ok_or("detach forked a multithreaded process")?;
        assert!(err.to_string().contains("threads"), "{err}");
        Ok(())
    }

    #[test]
    fn detach_validates_settings_before_forking() -> TestResult {
        let _t = ExtraThread::start();
        let bad = [
            DaemonSettings {
                umask: Some(0o1777),
                ..Default::default()
            },
            DaemonSettings {
                chdir: Some("/nonexistent/dir".into()),
                ..Default::default()
            },
            DaemonSettings {
                user: Some("no-such-user-deadbeat".into()),
                ..Default::default()
            },
            DaemonSettings {
                pidfile: Some("/nonexistent/dir/d.pid".into()),
                ..Default::default()
            },
        ];
        let expect = [
            "umask",
            "chdir /nonexistent/dir",
            "user no-such-user-deadbeat",
            "pidfile /nonexistent/dir/d.pid",
        ];
        for (s, want) in bad.iter().zip(expect) {
            // The pidfile check runs after the thread check, so allow either here.
            let err = detach(s).err().ok_or("detach accepted bad settings")?;
            assert!(
                err.context().starts_with(want) || err.context() == "detach",
                "{err}"
            );
        }
        Ok(())
    }

    #[test]
    fn credential_lookup() -> TestResult {
        let root = resolve_user("root")?;
        assert_eq!((root.uid, root.gid), (0, Some(0)));
        let numeric = resolve_user("0")?;
        assert_eq!(numeric.name.as_deref(), Some(c"root"));
        let unnamed = resolve_user("4000000")?;
        assert_eq!(
            (unnamed.uid, unnamed.gid, unnamed.name),
            (4000000, None, None)
        );
        assert_eq!(resolve_group("0")?, 0);
        let err = resolve_user("no-such-user-deadbeat")
            .err()
            .ok_or("found a user that does not exist")?;
        assert_eq!(err.to_string(), "user no-such-user-deadbeat: no such user");
        let err = resolve_group("no-such-group-deadbeat")
            .err()
            .ok_or("found a group")?;
        assert_eq!(
            err.to_string(),
            "group no-such-group-deadbeat: no such group"
        );
        let err = plan_credentials(Some("4000000"), None)
            .err()
            .ok_or("guessed a group")?;
        assert!(err.to_string().contains("configure a group"), "{err}");
        assert!(resolve_user("a\0b").is_err());
        drop_privileges(None, None)?;
        Ok(())
    }

    #[test]
    fn drop_privileges_to_nobody_in_forked_child() -> TestResult {
        if !is_root() {
            eprintln!("skipped: drop_privileges needs root");
            return Ok(());
        }
        let Some(nobody) = getpw(PwKey::Name(c"nobody"))? else {
            eprintln!("skipped: no user nobody");
            return Ok(());
        };
        // The lookup above also loads the NSS modules before the fork, so the child
        // of this multithreaded harness does not have to.
        // SAFETY: the child only runs drop_privileges and raw syscalls, then _exits;
        // glibc keeps malloc usable in the child of a multithreaded fork.
        let pid = unsafe { libc::fork() };
        if pid == -1 {
            return Err(io::Error::last_os_error().into());
        }
        if pid == 0 {
            let code = match drop_privileges(Some("nobody"), None) {
                Err(_) => 10,
                // SAFETY: plain syscall wrappers.
                Ok(()) if unsafe { libc::getuid() } != nobody.uid => 11,
                // SAFETY: as above.
                Ok(()) if unsafe { libc::setuid(0) } != -1 => 12,
                Ok(()) => 0,
            };
            // SAFETY: leave without running the harness's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: `pid` is our child; `status` is a valid out-pointer.
            match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                0 => {
                    // SAFETY: our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Err("child hung while dropping privileges".into());
                }
                -1 => return Err(io::Error::last_os_error().into()),
                _ => break,
            }
        }
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "10 = drop failed, 11 = wrong uid, 12 = regained root"
        );
        assert!(is_root(), "the test process itself kept root");
        Ok(())
    }
}
