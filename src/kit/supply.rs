//! Shared machinery of line supplies: lines from a [`LineSplitter`] become records.

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::engine::cog::{Local, Out};
use crate::engine::escapement::Ctx;
use crate::kit::lines::{LineInfo, LineSplitter};
use crate::kit::on_error::LogLimiter;
use crate::record::pool::{self, Stock};
use crate::record::{Key, Map, Record, SharedStr, Slot, Value};

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
well_known_key!(partial_key, "partial");

/// The fields every line record of a file gets, `path` (the file's name) and `offset`
/// (where the line starts), added in place: made once per file or read, applied to each
/// line record.
///
/// ```
/// use deadbeat::kit::supply::{FileFields, offset_key, path_key};
/// use deadbeat::record::{Record, SharedStr, Value};
/// let name = SharedStr::interned("/var/log/app.log");
/// let fields = FileFields::new(&name);
/// let mut r = Record::new();
/// fields.add(&mut r, 4096);
/// assert_eq!(r.get(path_key()), Some(&Value::from("/var/log/app.log")));
/// assert_eq!(r.get(offset_key()), Some(&Value::Int(4096)));
/// ```
pub struct FileFields<'a> {
    /// The path's text when interned, as it nearly always is.
    interned: Option<&'static str>,
    name: &'a SharedStr,
    path: Key,
    offset: Key,
}

impl<'a> FileFields<'a> {
    /// The fields of the file `name`. A name from [`SharedStr::interned`] (as file supplies
    /// make them) is stored in each record at no cost; any other is cloned per record.
    pub fn new(name: &'a SharedStr) -> FileFields<'a> {
        let interned = match name {
            SharedStr::Interned(s) => Some(*s),
            _ => None,
        };
        FileFields {
            interned,
            name,
            path: path_key(),
            offset: offset_key(),
        }
    }

    /// Adds `path` and `offset` to `r`, a line record (which holds only `message`, and
    /// maybe `truncated`, so far).
    ///
    /// `r` must not hold `path` or `offset` yet: they are appended unchecked, with the
    /// contract of [`Map::append_slot`].
    #[inline(always)]
    pub fn add(&self, r: &mut Record, offset: u64) {
        // An interned path is stored from the `&'static str` itself: a clone of the
        // `SharedStr` moves the bytes of its inline variant through the stack in
        // overlapping pieces on every line (docs/architecture.md#store-forwarding).
        #[inline(never)]
        fn cloned(slot: Slot<'_>, name: &SharedStr) {
            slot.set(Value::Shared(name.clone()));
        }
        let slot = r.fields.append_slot(self.path);
        match self.interned {
            Some(s) => {
                slot.set(Value::Shared(SharedStr::Interned(s)));
            }
            None => cloned(slot, self.name),
        }
        r.fields
            .append_slot(self.offset)
            .set(Value::Int(offset as i64));
    }
}

/// Turns one line into a record: a fresh event id and the raw bytes in `message`. Lines
/// cut at `max_line_bytes` also get `truncated = true`, are counted as errors of the
/// supply and logged with their event id (at most [`crate::kit::on_error::LOG_BURST`] a second).
#[inline]
pub fn line_record(
    bytes: &[u8],
    info: &LineInfo,
    extra_fields: usize,
    out: &mut Out<Record>,
    cx: &mut Ctx<'_>,
) -> Record {
    if info.truncated {
        out.count_errors(1);
    }
    let mut r = Record::new();
    pool::with_stock(|stock| {
        fill_line_record(stock, message_key(), &mut r, bytes, info, extra_fields, cx)
    });
    r
}

/// Emits line records into a batch: each is [`line_record`]'s record, but built where it
/// lies in the batch rather than built first and moved there
/// (docs/architecture.md#store-forwarding), and returned to be finished in place. The
/// record stash is borrowed and the `message` key looked up once for the whole batch.
pub struct LineEmitter<'a, 's> {
    stock: &'a mut Stock<'s>,
    message: Key,
}

/// Runs `f` with a [`LineEmitter`]: what a supply emitting a read's lines goes through.
///
/// ```text
/// with_line_emitter(|em| {
///     splitter.for_each_line(|bytes, info| {
///         let r = em.emit(bytes, &info, 0, out, cx);
///         // add the supply's own fields to `r` here
///     })
/// });
/// ```
#[inline]
pub fn with_line_emitter<T>(f: impl FnOnce(&mut LineEmitter<'_, '_>) -> T) -> T {
    let message = message_key();
    pool::with_stock(move |stock| f(&mut LineEmitter { stock, message }))
}

impl LineEmitter<'_, '_> {
    /// Emits the record of one line (`extra_fields`: how many fields the caller adds, for
    /// the room reserved) and returns it where it lies in `out`.
    #[inline(always)]
    pub fn emit<'o>(
        &mut self,
        bytes: &[u8],
        info: &LineInfo,
        extra_fields: usize,
        out: &'o mut Out<Record>,
        cx: &mut Ctx<'_>,
    ) -> &'o mut Record {
        if info.truncated {
            out.count_errors(1);
        }
        let batch = &mut out.buf;
        batch.reserve(1);
        let len = batch.len();
        // Every field of a record is written below: a field added to `Record` must fail to
        // compile here rather than be left uninitialised.
        let _ = |r: &Record| {
            let Record { id: _, fields: _ } = r;
        };
        // SAFETY: `reserve` made room for one more record. Its two fields are written where
        // they lie before the length covers it (docs/architecture.md#store-forwarding).
        let r = unsafe {
            let p = batch.as_mut_ptr().add(len);
            (&raw mut (*p).id).write(0);
            (&raw mut (*p).fields).write(Map::new());
            batch.set_len(len + 1);
            &mut *p
        };
        fill_line_record(self.stock, self.message, r, bytes, info, extra_fields, cx);
        r
    }
}

/// Fills `r`, an empty record, as [`line_record`] describes (but for the error count).
#[inline(always)]
fn fill_line_record(
    stock: &mut Stock<'_>,
    message: Key,
    r: &mut Record,
    bytes: &[u8],
    info: &LineInfo,
    extra_fields: usize,
    cx: &mut Ctx<'_>,
) {
    r.id = cx.new_event_id();
    stock.fill_fields(
        &mut r.fields,
        message,
        bytes,
        1 + extra_fields + info.truncated as usize,
    );
    if info.truncated {
        mark_truncated(r, info, bytes.len(), cx);
    }
}

/// Flags a cut line and logs it at a bounded rate.
#[cold]
#[inline(never)]
fn mark_truncated(r: &mut Record, info: &LineInfo, kept_bytes: usize, cx: &mut Ctx<'_>) {
    r.insert(truncated_key(), Value::Bool(true));
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
            "event" => r.id, "offset" => info.offset, "kept_bytes" => kept_bytes);
    }
}

/// Emits every complete line held by `splitter`; `fill` adds the supply's own fields.
pub fn emit_lines(
    splitter: &mut LineSplitter,
    extra_fields: usize,
    out: &mut Out<Record>,
    cx: &mut Ctx<'_>,
    mut fill: impl FnMut(&mut Record, &LineInfo),
) -> usize {
    with_line_emitter(|em| {
        splitter.for_each_line(|bytes, info| {
            let r = em.emit(bytes, &info, extra_fields, out, cx);
            fill(r, &info);
        })
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
    with_line_emitter(|em| {
        let mut n = 0;
        while let Some(line) = splitter.finish() {
            let r = em.emit(line.bytes, &line.info, extra_fields, out, cx);
            fill(r, &line.info);
            n += 1;
        }
        n
    })
}

/// The backpressure gate of a supply that reads in turns queued on one local: while
/// paused its queued turn is withdrawn; on resume a turn is queued, since readiness that
/// arrived meanwhile was not acted on (edge-triggered events do not come again).
///
/// The supply calls [`pause`](PauseGate::pause) and [`resume`](PauseGate::resume) from
/// [`Cog::pause`](crate::Cog::pause) and [`Cog::resume`](crate::Cog::resume),
/// and reads only while [`is_open`](PauseGate::is_open).
#[derive(Debug)]
pub struct PauseGate {
    local: Local,
    paused: bool,
}

impl PauseGate {
    /// An open gate over the turns queued on `local`.
    pub const fn new(local: Local) -> Self {
        PauseGate {
            local,
            paused: false,
        }
    }

    /// Whether the supply may read.
    #[inline]
    pub fn is_open(&self) -> bool {
        !self.paused
    }

    /// Closes the gate and withdraws the queued turn.
    pub fn pause(&mut self, cx: &mut Ctx<'_>) {
        self.paused = true;
        cx.dequeue(self.local);
    }

    /// Opens the gate and queues a turn.
    pub fn resume(&mut self, cx: &mut Ctx<'_>) {
        self.open();
        cx.enqueue(self.local);
    }

    /// Opens the gate without queuing a turn, for a supply that queues its own only when
    /// it has something to read.
    pub fn open(&mut self) {
        self.paused = false;
    }
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
    pub fn bind(
        &mut self,
        cx: &mut Ctx<'_>,
        local: crate::engine::cog::Local,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let meta = self.file.metadata()?;
        if meta.is_file() {
            return Ok(());
        }
        // SAFETY: fcntl on a descriptor this struct owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above; F_SETFL only changes the descriptor's status flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
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

    /// The file or descriptor read.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Whether readiness events drive the reads.
    pub fn is_polled(&self) -> bool {
        self.polled
    }

    /// Reads the rest of the line `splitter` holds part of, a byte at a time, so that the
    /// bytes after its newline stay unread for whoever reads the input next: a stop that
    /// comes between two reads cuts no line in two. Gives up after `limit` bytes, or when
    /// a polled input has nothing more now.
    pub fn complete_line(
        &mut self,
        splitter: &mut LineSplitter,
        limit: usize,
    ) -> std::io::Result<LineCompletion> {
        use std::io::Read;
        if splitter.pending_len() == 0 {
            return Ok(LineCompletion::Complete);
        }
        let mut byte = [0u8; 1];
        let mut read = 0;
        while read < limit {
            match self.file.read(&mut byte) {
                Ok(0) => return Ok(LineCompletion::Ended),
                Ok(_) => {
                    splitter.push(&byte);
                    read += 1;
                    if byte[0] == b'\n' {
                        return Ok(LineCompletion::Complete);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(LineCompletion::Unfinished)
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

/// What [`StreamInput::complete_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineCompletion {
    /// The line is whole (or none was started).
    Complete,
    /// The input ended first: what arrived is its last line.
    Ended,
    /// The rest of the line has not arrived (or is longer than the limit).
    Unfinished,
}

/// Bytes [`StreamInput::complete_line`] reads at a stop, a byte a read, before it gives
/// up on finishing a line.
pub const COMPLETION_LIMIT: usize = 64 * 1024;

/// At a stop, hands on the lines `splitter` holds, the line it holds part of completed
/// from `input` when its rest is there already; one that stays unfinished is emitted
/// flagged `partial = true`, counted as an error and logged with `what` (the input's
/// name), never passed on as if whole. Returns the records emitted.
pub fn emit_rest_at_stop(
    input: &mut StreamInput,
    splitter: &mut LineSplitter,
    extra_fields: usize,
    what: &str,
    out: &mut Out<Record>,
    cx: &mut Ctx<'_>,
    mut fill: impl FnMut(&mut Record, &LineInfo),
) -> usize {
    let held = splitter.pending_len();
    let unfinished = match input.complete_line(splitter, COMPLETION_LIMIT) {
        Ok(LineCompletion::Complete | LineCompletion::Ended) => false,
        Ok(LineCompletion::Unfinished) => true,
        Err(e) => {
            slog::warn!(cx.logger(), "reading the rest of a line at the stop failed"; "input" => what, "error" => %e);
            true
        }
    };
    if !unfinished {
        return emit_rest(splitter, extra_fields, out, cx, fill);
    }
    let complete = emit_lines(splitter, extra_fields, out, cx, &mut fill);
    let partial = emit_rest(splitter, extra_fields + 1, out, cx, |r, info| {
        fill(r, info);
        r.fields.append_slot(partial_key()).set(Value::Bool(true));
    });
    if partial > 0 {
        out.count_errors(partial as u64);
        slog::warn!(cx.logger(), "stopped in the middle of a line whose rest has not arrived: emitted flagged partial";
            "input" => what, "bytes" => held);
    }
    complete + partial
}

impl Drop for StreamInput {
    fn drop(&mut self) {
        self.restore_flags();
    }
}
