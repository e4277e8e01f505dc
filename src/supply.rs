//! Shared machinery of line supplies: lines from a [`LineSplitter`] become records.

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::cog::Out;
use crate::escapement::Ctx;
use crate::lines::{LineInfo, LineSplitter};
use crate::on_error::LogLimiter;
use crate::pool;
use crate::record::{Key, Map, Record, Value};

macro_rules! well_known_key {
    ($fn:ident, $name:literal) => {
        #[doc = concat!("The interned key `", $name, "`.")]
        pub fn $fn() -> Key {
            static KEY: OnceLock<Key> = OnceLock::new();
            *KEY.get_or_init(|| Key::new($name))
        }
    };
}

well_known_key!(message_key, "message");
well_known_key!(path_key, "path");
well_known_key!(offset_key, "offset");
well_known_key!(truncated_key, "truncated");

/// Turns one line into a record: a fresh event id and the raw bytes in `message`. Lines
/// cut at `max_line_bytes` also get `truncated = true`, are counted as errors of the
/// supply and logged with their event id (at most [`crate::on_error::LOG_BURST`] a second).
#[inline]
pub fn line_record(
    bytes: &[u8],
    info: &LineInfo,
    extra_fields: usize,
    out: &mut Out<Record>,
    cx: &mut Ctx<'_>,
) -> Record {
    let fields = pool::fields_with(
        message_key(),
        bytes,
        1 + extra_fields + info.truncated as usize,
    );
    let mut r = Record {
        id: cx.new_event_id(),
        fields: Map::from_entries(fields),
    };
    if info.truncated {
        r.insert(truncated_key(), Value::Bool(true));
        out.count_errors(1);
        // Counted for every line, logged at a bounded rate (one limiter for all the line
        // supplies of this thread): a storm of long lines must not flood the log.
        thread_local! {
            static CUT_LINES: RefCell<LogLimiter> = RefCell::default();
        }
        let log = CUT_LINES.with(|l| {
            l.try_borrow_mut()
                .map_or(true, |mut l| l.allow("lines cut", "line supplies", cx))
        });
        if log {
            slog::warn!(cx.logger(), "line longer than max_line_bytes cut";
                "event" => r.id, "offset" => info.offset, "kept_bytes" => bytes.len());
        }
    }
    r
}

/// Emits every complete line held by `splitter`; `fill` adds the supply's own fields.
pub fn emit_lines(
    splitter: &mut LineSplitter,
    extra_fields: usize,
    out: &mut Out<Record>,
    cx: &mut Ctx<'_>,
    mut fill: impl FnMut(&mut Record, &LineInfo),
) -> usize {
    splitter.for_each_line(|bytes, info| {
        let mut r = line_record(bytes, &info, extra_fields, out, cx);
        fill(&mut r, &info);
        out.push(r);
    })
}

/// Emits what is left at the end of a stream: complete lines, then the unterminated tail.
pub fn emit_rest(
    splitter: &mut LineSplitter,
    extra_fields: usize,
    out: &mut Out<Record>,
    cx: &mut Ctx<'_>,
    mut fill: impl FnMut(&mut Record, &LineInfo),
) -> usize {
    let mut n = 0;
    while let Some(line) = splitter.finish() {
        let mut r = line_record(line.bytes, &line.info, extra_fields, out, cx);
        fill(&mut r, &line.info);
        out.push(r);
        n += 1;
    }
    n
}

/// An input read either through the escapement (pipes, FIFOs, sockets, terminals: set
/// non-blocking and registered for readiness) or in turns (regular files and devices
/// epoll refuses, which never block for long).
#[derive(Debug)]
pub struct StreamInput {
    file: std::fs::File,
    polled: bool,
    saved_flags: Option<i32>,
}

/// What one [`StreamInput::read`] call found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Bytes arrived; read again soon.
    Data,
    /// Nothing now; readiness will be signalled (polled inputs only).
    Wait,
    /// End of input.
    Eof,
}

impl StreamInput {
    /// Wraps an open file or descriptor.
    pub fn new(file: std::fs::File) -> Self {
        StreamInput {
            file,
            polled: false,
            saved_flags: None,
        }
    }

    /// Registers the input for readiness with `local` when it can be polled.
    pub fn bind(&mut self, cx: &mut Ctx<'_>, local: crate::cog::Local) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let meta = self.file.metadata()?;
        if meta.is_file() {
            return Ok(());
        }
        // SAFETY: fcntl on a descriptor this struct owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.saved_flags = Some(flags);
        match cx.register(
            &mut mio::unix::SourceFd(&fd),
            local,
            mio::Interest::READABLE,
        ) {
            Ok(()) => self.polled = true,
            // epoll refuses some devices (/dev/null, say): they never block, so read in turns.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self.restore_flags(),
            Err(e) => {
                self.restore_flags();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stops readiness events and gives the descriptor its original flags back (it may
    /// be shared with other processes, as stdin is).
    pub fn unbind(&mut self, cx: &mut Ctx<'_>) {
        use std::os::fd::AsRawFd;
        if std::mem::take(&mut self.polled) {
            let fd = self.file.as_raw_fd();
            let _ = cx.deregister(&mut mio::unix::SourceFd(&fd));
        }
        self.restore_flags();
    }

    fn restore_flags(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(flags) = self.saved_flags.take() {
            // SAFETY: restores flags read earlier on a descriptor this struct owns.
            unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETFL, flags) };
        }
    }

    /// Whether readiness events drive the reads.
    pub fn is_polled(&self) -> bool {
        self.polled
    }

    /// One read into `splitter`.
    pub fn read(&mut self, splitter: &mut LineSplitter) -> std::io::Result<ReadStatus> {
        match splitter.read_from(&mut self.file) {
            Ok(0) => Ok(ReadStatus::Eof),
            Ok(_) => Ok(ReadStatus::Data),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(ReadStatus::Wait),
            Err(e) => Err(e),
        }
    }
}

impl Drop for StreamInput {
    fn drop(&mut self) {
        self.restore_flags();
    }
}
