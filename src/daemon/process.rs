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

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, send};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::waitpid;
use nix::unistd::{self, ForkResult, Gid, Pid, Uid};

/// How long the launching process waits for [`Detached::ready`] or [`Detached::fail`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

const NOT_READY: &str = "daemon exited before it was ready";
/// Keeps a failure report small enough to be sent in one piece into the empty socket.
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

    fn errno(context: impl Into<String>, err: Errno) -> Self {
        Self::os(context, io::Error::from(err))
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
    let (rd, wr) = channel()?;

    // SAFETY: the process is single-threaded (checked above where /proc allows), so the
    // child is a consistent copy of this one: no lock is held by a thread that the fork
    // leaves behind, and the child may allocate and use std freely.
    match unsafe { unistd::fork() } {
        Err(e) => Err(DaemonError::errno("fork", e)),
        Ok(ForkResult::Child) => {
            drop(rd);
            Ok(daemon_side(s, pidfile, wr))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            launcher_side(rd, child)
        }
    }
}

/// Runs in the first child; returns only in the grandchild, which is the daemon.
fn daemon_side(s: &DaemonSettings, pidfile: Option<PathBuf>, wr: UnixStream) -> Detached {
    // We are not a process group leader after the fork, so setsid can succeed.
    if let Err(e) = unistd::setsid() {
        abort_child(&wr, &DaemonError::errno("setsid", e));
    }
    // SAFETY: still single-threaded, see `detach`.
    match unsafe { unistd::fork() } {
        Err(e) => abort_child(&wr, &DaemonError::errno("second fork", e)),
        Ok(ForkResult::Child) => {}
        // The atexit handlers and destructors belong to the daemon, which lives on in
        // the grandchild.
        Ok(ForkResult::Parent { .. }) => exit_now(0),
    }
    if let Some(mask) = s.umask {
        // The value was validated in `detach` (at most 0o777), so no bit is dropped.
        umask(Mode::from_bits_truncate(mask as libc::mode_t));
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

fn abort_child(wr: &UnixStream, err: &DaemonError) -> ! {
    send_status(wr, &encode_failure(&err.to_string()));
    exit_now(1)
}

/// `_exit`: ends the process without running atexit handlers or destructors, which
/// belong to the daemon: it carries this program's state on in the grandchild.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it ends the process without touching any
    // Rust state.
    unsafe { libc::_exit(code) }
}

/// The launching process: report the daemon's startup outcome and exit.
fn launcher_side(rd: UnixStream, child: Pid) -> ! {
    let report = wait_for_report(&rd, READY_TIMEOUT);
    // The intermediate exits right after the second fork; reaping it leaves no zombie
    // to whoever inherits it after we exit.
    while waitpid(child, None) == Err(Errno::EINTR) {}
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
    exit_now(code)
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
fn wait_for_report(rd: &UnixStream, timeout: Duration) -> Report {
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
        let ms = PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(rd.as_fd(), PollFlags::POLLIN)], ms) {
            Err(Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Report::Io(io::Error::from(e).to_string()),
            Ok(_) => {}
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

/// Best effort: a launcher that is gone (timed out) has nobody to tell.
fn send_status(wr: &UnixStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // MSG_NOSIGNAL: a launcher that timed out is gone, and the send must fail with
        // EPIPE rather than kill the daemon, even if the program restored SIGPIPE's
        // default action.
        match send(wr.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The daemon's side of startup: report readiness or failure to the launcher, and own
/// the pidfile.
#[derive(Debug)]
pub struct Detached {
    notify: Option<UnixStream>,
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
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(locked_error(ctx(), &file)),
                Err(TryLockError::Error(e)) => return Err(DaemonError::os(ctx(), e)),
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
        Ok(file) => match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(TryLockError::WouldBlock) => Err(locked_error(ctx(), &file)),
            Err(TryLockError::Error(e)) => Err(DaemonError::os(ctx(), e)),
        },
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

/// With 0, 1 or 2 closed, the socket or the pidfile could land there and be clobbered by
/// the redirection to /dev/null, so fill the holes first.
fn open_std_fds() -> Result<(), DaemonError> {
    // F_GETFD fails (EBADF) on a closed descriptor.
    let closed = |fd: BorrowedFd<'_>| fcntl(fd, FcntlArg::F_GETFD).is_err();
    let holes = [
        closed(io::stdin().as_fd()),
        closed(io::stdout().as_fd()),
        closed(io::stderr().as_fd()),
    ];
    for hole in holes {
        if hole {
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
    let dups: [fn(&File) -> nix::Result<()>; 3] = [
        |f| unistd::dup2_stdin(f),
        |f| unistd::dup2_stdout(f),
        |f| unistd::dup2_stderr(f),
    ];
    for (fd, dup) in dups.into_iter().enumerate() {
        // dup2 replaces the descriptor atomically, so it is never closed in between.
        if let Err(e) = dup(&null) {
            return Err(DaemonError::errno(
                format!("redirect fd {fd} to /dev/null"),
                e,
            ));
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
    let Ok(mut dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let listed: Vec<RawFd> = dir
        .by_ref()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    // Checked while `dir` is open, so every listed descriptor (the directory's own
    // among them, with close-on-exec) is still open.
    let inherited: Vec<RawFd> = listed
        .into_iter()
        .filter(|&fd| {
            // SAFETY: `fd` is open: /proc listed it, the process is single-threaded (see
            // `detach`) and nothing has closed a descriptor since; the borrow ends here.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            fcntl(fd, FcntlArg::F_GETFD)
                .is_ok_and(|f| !FdFlag::from_bits_truncate(f).contains(FdFlag::FD_CLOEXEC))
        })
        .collect();
    drop(dir);
    for fd in inherited {
        // SAFETY: `fd` is open (see above) and no Rust object owns a descriptor without
        // close-on-exec at this point (std sets it on everything it opens, the status
        // socket included), so this is its one owner, which closes it on drop.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// The status channel from the daemon to the launcher. A socket rather than a pipe, so
/// `send_status` can refuse SIGPIPE per call (MSG_NOSIGNAL). Close-on-exec (set by std)
/// keeps the daemon's end out of programs it spawns, which would delay EOF.
fn channel() -> Result<(UnixStream, UnixStream), DaemonError> {
    UnixStream::pair().map_err(|e| DaemonError::os("socketpair", e))
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
    unistd::geteuid().is_root()
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
            Some(name) => unistd::initgroups(name, Gid::from_raw(gid)).map_err(|e| {
                DaemonError::errno(format!("initgroups {}", name.to_string_lossy()), e)
            })?,
            None => unistd::setgroups(&[Gid::from_raw(gid)])
                .map_err(|e| DaemonError::errno(format!("setgroups {gid}"), e))?,
        }
        // glibc's setgid applies to every thread of the process.
        unistd::setgid(Gid::from_raw(gid))
            .map_err(|e| DaemonError::errno(format!("setgid {gid}"), e))?;
    }
    if let Some(u) = &target.user {
        unistd::setuid(Uid::from_raw(u.uid))
            .map_err(|e| DaemonError::errno(format!("setuid {}", u.uid), e))?;
        verify_dropped(u.uid, target.gid)?;
    }
    Ok(())
}

fn verify_dropped(uid: libc::uid_t, gid: Option<libc::gid_t>) -> Result<(), DaemonError> {
    let ctx = "drop privileges";
    let ids = unistd::getresuid().map_err(|e| DaemonError::errno(ctx, e))?;
    let (r, e, s) = (
        ids.real.as_raw(),
        ids.effective.as_raw(),
        ids.saved.as_raw(),
    );
    if (r, e, s) != (uid, uid, uid) {
        return Err(DaemonError::msg(
            ctx,
            format!("uids are {r}/{e}/{s} (real/effective/saved), not {uid}"),
        ));
    }
    if let Some(gid) = gid {
        let ids = unistd::getresgid().map_err(|e| DaemonError::errno(ctx, e))?;
        let (r, e, s) = (
            ids.real.as_raw(),
            ids.effective.as_raw(),
            ids.saved.as_raw(),
        );
        if (r, e, s) != (gid, gid, gid) {
            return Err(DaemonError::msg(
                ctx,
                format!("gids are {r}/{e}/{s} (real/effective/saved), not {gid}"),
            ));
        }
    }
    if uid != 0 {
        // Regaining root must fail now.
        if unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(DaemonError::msg(
                ctx,
                format!("setuid(0) still succeeds after switching to uid {uid}"),
            ));
        }
        if gid.is_some_and(|g| g != 0) && unistd::setgid(Gid::from_raw(0)).is_ok() {
            return Err(DaemonError::msg(
                ctx,
                "setgid(0) still succeeds after dropping privileges",
            ));
        }
    }
    Ok(())
}

/// For a non-root process: the request is fine only if it asks for what we already are.
fn ensure_already(t: &Credentials) -> Result<(), DaemonError> {
    let (uid, euid, gid, egid) = (
        unistd::getuid().as_raw(),
        unistd::geteuid().as_raw(),
        unistd::getgid().as_raw(),
        unistd::getegid().as_raw(),
    );
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

/// Refuses what the C lookup functions cannot take, with our own messages (the lookups
/// would treat a NUL byte as "not found").
fn check_name(kind: &str, spec: &str) -> Result<(), DaemonError> {
    if spec.is_empty() {
        return Err(DaemonError::msg(kind, "empty name"));
    }
    if spec.contains('\0') {
        return Err(DaemonError::msg(
            format!("{kind} {spec:?}"),
            "contains a NUL byte",
        ));
    }
    Ok(())
}

fn resolve_user(spec: &str) -> Result<User, DaemonError> {
    let ctx = || format!("user {spec}");
    check_name("user", spec)?;
    if let Some(u) =
        nss_lookup(|| unistd::User::from_name(spec)).map_err(|e| DaemonError::errno(ctx(), e))?
    {
        return Ok(from_passwd(u));
    }
    let Ok(uid) = spec.parse::<libc::uid_t>() else {
        return Err(DaemonError::msg(ctx(), "no such user"));
    };
    Ok(nss_lookup(|| unistd::User::from_uid(Uid::from_raw(uid)))
        .map_err(|e| DaemonError::errno(ctx(), e))?
        .map_or(
            User {
                name: None,
                uid,
                gid: None,
            },
            from_passwd,
        ))
}

fn from_passwd(u: unistd::User) -> User {
    User {
        // A passwd name holds no NUL byte.
        name: CString::new(u.name).ok(),
        uid: u.uid.as_raw(),
        gid: Some(u.gid.as_raw()),
    }
}

fn resolve_group(spec: &str) -> Result<libc::gid_t, DaemonError> {
    let ctx = || format!("group {spec}");
    check_name("group", spec)?;
    if let Some(g) =
        nss_lookup(|| unistd::Group::from_name(spec)).map_err(|e| DaemonError::errno(ctx(), e))?
    {
        return Ok(g.gid.as_raw());
    }
    spec.parse::<libc::gid_t>()
        .map_err(|_| DaemonError::msg(ctx(), "no such group"))
}

/// A passwd or group lookup, retried when interrupted; `Ok(None)` when not found.
fn nss_lookup<T>(mut call: impl FnMut() -> nix::Result<Option<T>>) -> nix::Result<Option<T>> {
    loop {
        match call() {
            Err(Errno::EINTR) => {}
            // Some NSS modules report "not found" as an error code.
            Err(Errno::ENOENT | Errno::ESRCH) => return Ok(None),
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{SigHandler, Signal, kill, signal};
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
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
        let (rd, wr) = channel()?;
        send_status(&wr, &[STATUS_READY]);
        assert_eq!(wait_for_report(&rd, Duration::from_secs(5)), Report::Ready);

        let (rd, wr) = channel()?;
        send_status(&wr, &encode_failure("boom"));
        assert_eq!(
            wait_for_report(&rd, Duration::from_secs(5)),
            Report::Failed("boom".into())
        );

        let (rd, wr) = channel()?;
        drop(wr);
        assert_eq!(wait_for_report(&rd, Duration::from_secs(5)), Report::Died);

        let (rd, _wr) = channel()?;
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
        let (rd, wr) = channel()?;
        drop(Detached {
            notify: Some(wr),
            pidfile: Some(Pidfile::acquire(&path)?),
        });
        assert_eq!(
            wait_for_report(&rd, Duration::from_secs(5)),
            Report::Failed(NOT_READY.into())
        );
        assert!(!path.exists());

        let (rd, wr) = channel()?;
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

    /// Runs `child` in a forked copy of this multithreaded test process and returns how
    /// it ended: `Exited` with `child`'s value, 101 if it panicked. Keep `child` to plain
    /// syscall wrappers and code whose libraries are loaded before the fork.
    fn in_forked_child(
        child: impl FnOnce() -> i32,
    ) -> Result<WaitStatus, Box<dyn std::error::Error>> {
        // SAFETY: the child runs only `child`, which the callers keep to plain syscall
        // wrappers (glibc keeps malloc usable in the child of a multithreaded fork),
        // and then leaves by _exit, never returning into the copy of the harness.
        let pid = match unsafe { unistd::fork() }? {
            ForkResult::Parent { child } => child,
            ForkResult::Child => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
                exit_now(code.unwrap_or(101))
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
                WaitStatus::StillAlive if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                WaitStatus::StillAlive => {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Err("forked child hung".into());
                }
                status => return Ok(status),
            }
        }
    }

    #[test]
    fn status_to_a_launcher_that_is_gone_does_not_kill_the_daemon() -> TestResult {
        let status = in_forked_child(|| {
            let Ok((rd, wr)) = channel() else {
                return 10;
            };
            drop(rd);
            // The daemon must survive even a program that restored SIGPIPE's default.
            // SAFETY: SIG_DFL installs no handler code; this child exits right after.
            if unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.is_err() {
                return 11;
            }
            send_status(&wr, &encode_failure("nobody listens"));
            0
        })?;
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}: 10 = no socket, 11 = no SIG_DFL"
        );
        Ok(())
    }

    #[test]
    fn daemon_descriptors_are_set_up_in_a_forked_child() -> TestResult {
        let status = in_forked_child(|| {
            let null_at = |fd: RawFd| {
                fs::read_link(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|p| p == Path::new("/dev/null"))
            };
            // A launcher started with stdin closed (`<&-`).
            // SAFETY: fd 0 is open (std's runtime opens /dev/null there if it was not)
            // and nothing in this child uses stdin before `open_std_fds` fills the hole.
            drop(unsafe { OwnedFd::from_raw_fd(0) });
            if open_std_fds().is_err() || !null_at(0) {
                return 10;
            }
            if redirect_stdio().is_err() || !(null_at(1) && null_at(2)) {
                return 11;
            }
            // One descriptor inherited without close-on-exec, one of ours with it.
            let (Ok(inherited), Ok(ours)) = (File::open("/dev/null"), File::open("/dev/null"))
            else {
                return 12;
            };
            if fcntl(&inherited, FcntlArg::F_SETFD(FdFlag::empty())).is_err() {
                return 12;
            }
            let inherited = inherited.into_raw_fd();
            close_inherited_fds();
            if Path::new(&format!("/proc/self/fd/{inherited}")).exists() {
                return 13;
            }
            if fcntl(&ours, FcntlArg::F_GETFD).is_err() {
                return 14;
            }
            0
        })?;
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}: 10 = stdin hole, 11 = stdio not /dev/null, 12 = setup, \
             13 = inherited descriptor kept, 14 = close-on-exec descriptor closed"
        );
        Ok(())
    }

    #[test]
    fn drop_privileges_to_nobody_in_forked_child() -> TestResult {
        if !is_root() {
            eprintln!("skipped: drop_privileges needs root");
            return Ok(());
        }
        let Some(nobody) = unistd::User::from_name("nobody")? else {
            eprintln!("skipped: no user nobody");
            return Ok(());
        };
        // The lookup above also loads the NSS modules before the fork, so the child
        // of this multithreaded harness does not have to.
        let status = in_forked_child(|| match drop_privileges(Some("nobody"), None) {
            Err(_) => 10,
            Ok(()) if unistd::getuid() != nobody.uid => 11,
            Ok(()) if unistd::setuid(Uid::from_raw(0)).is_ok() => 12,
            Ok(()) => 0,
        })?;
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}: 10 = drop failed, 11 = wrong uid, 12 = regained root"
        );
        assert!(is_root(), "the test process itself kept root");
        Ok(())
    }
}
