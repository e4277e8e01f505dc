//! `multiline`: joins continuation lines to the line that starts an event, per source.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::engine::getset::{Field, Getter, Setter};
use crate::kit::held::{Held, MAX_HELD_IDS};
use crate::kit::on_error::LogLimiter;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, Path, Record, Value, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// Joins the physical lines of one event (a stack trace, a traceback, a panic) into one
/// datum, per source: the lines of each file (`path`, what `file_in` and `tail` set) or
/// each connection (`peer`, what `tcp_in` sets) are joined apart from the others'.
///
/// Exactly one rule says which lines continue the event before them:
/// - `start = REGEX`: a line matching it starts an event, every other line continues one;
/// - `continues = REGEX`: a line matching it continues the event before it;
/// - `indent = true`: a line starting with a space or a tab continues;
/// - `preset = "java"`: lines starting with whitespace, `Caused by:`, `... N more`, and
///   exception headers (`java.lang.IllegalStateException: ...`, a dotted class name ending
///   in `Exception`, `Error` or `Throwable`);
///   `"python"`: a `Traceback (most recent call last):` line, the indented lines after
///   it, the exception line closing it, and chained tracebacks (`During handling of the
///   above exception...`, `The above exception was the direct cause...`, blank lines
///   between them); otherwise indented lines;
///   `"go"`: a `panic: ` or `fatal error: ` line starts an event, continued by blank
///   lines, indented lines, `goroutine N [...]:`, `[signal ...`, `created by ...`,
///   `exit status N` and frame lines (`pkg.func(...)`); otherwise indented lines continue.
///
/// `start` and `continues` need the `regex` cargo feature (on by default); `indent` and
/// the presets are written without it and work in every build.
///
/// The joined datum is the first line's datum with `field` (`message`) holding every
/// line of the event joined by `\n`; its other fields are the first line's. A line that
/// arrives while no event of its source is open starts one, whatever the rule says.
///
/// **Bounds.** An event reaching `max_lines` lines or `max_bytes` bytes of message is
/// emitted as it is, cut, with `truncated = true`; the lines after the cut start the next
/// event (nothing is dropped). Cuts are counted and logged (at most 10 lines a second).
///
/// **Sources.** At most `max_keys` sources hold an open event; a line of one more source
/// first emits the event of the source quiet the longest (counted and logged), so memory
/// stays bounded whatever the number of files or peers.
///
/// **Timeout.** The last event of a source stays open until a line that starts another
/// comes; when its source has been quiet for `timeout` it is emitted by a timer. At
/// shutdown (`finish`) every open event is emitted, never dropped.
///
/// **Acknowledgement.** A joined datum travels under a fresh event id; the ids of all its
/// lines are held by this cog ([`Held`]) and acknowledged together (`Ctx::event_done`)
/// when the joined datum's id is, that is once a drain has written it (or a filter
/// dropped it). So a checkpointing supply (`tail`) never commits past a line held here,
/// not even past the first line of a joined event for a moment, and a crash re-reads an
/// open event from its first line: no event is split across a restart. This holds the
/// acknowledgements rather than broadcasting `event_rename` because a rename only helps
/// a supply that follows renames (`relp_in` does, `tail` and `file_in` do not: their
/// trackers would wait for the old ids forever); holding works with every supply. A
/// downstream rename of the joined datum moves what is held with it. A one-line event
/// keeps its id. Continuation lines
/// are counted as dropped (merged away), so the train's counts add up.
///
/// ```toml
/// [[train.cog]]
/// type = "multiline"
/// preset = "java"        # or start = '^\d{4}-\d{2}-\d{2} ', continues = '^\s', indent = true
/// source = "path"        # the field naming the source ("peer" after tcp_in)
/// timeout = "1s"
/// max_lines = 500
/// max_bytes = "1MiB"
/// max_keys = 10000
/// ```
///
/// From its typed settings, without TOML, on any datum (getters and setters in
/// [`MultilineFields`]):
/// `Multiline::from_settings(&MultilineSettings { preset: Some(MultilinePreset::Java), ..Default::default() }, fields)`.
#[derive(Debug)]
pub struct Multiline<D> {
    rule: Rule,
    fields: MultilineFields<D>,
    timeout: Duration,
    max_lines: usize,
    max_bytes: usize,
    /// The open event of the source seen last, and its key: consecutive lines mostly come
    /// from one source, so most lines cost a comparison, not a hash lookup.
    cur_key: Vec<u8>,
    cur: Option<Pending<D>>,
    /// The joined text of `cur` (when it has more than one line): one buffer reused from
    /// event to event, so joining costs no allocation per line; an emitted event takes an
    /// exact copy. (The events in `others` keep theirs in `Pending::joined`.) Its room
    /// stays within `max_bytes`.
    buf: Vec<u8>,
    /// Continuation lines done with in this batch, handed to `recycle` at its end.
    spent: Vec<D>,
    /// Gives the storage of spent continuation lines back for reuse (records go back to
    /// the record pool); without it they are dropped.
    recycle: Option<fn(&mut Vec<D>)>,
    /// The open events of the other sources.
    others: HashMap<Vec<u8>, Pending<D>>,
    /// Joined datum's id → the ids of its lines, acknowledged with it.
    held: Held,
    timer_armed: bool,
    max_keys: usize,
    evictions: u64,
    cuts: u64,
    limiter: LogLimiter,
}

/// How [`Multiline`] reads and writes a datum.
pub struct MultilineFields<D> {
    /// The line's text.
    pub message: Getter<D, [u8]>,
    /// Stores the joined text (lines joined by `\n`) into the first line's datum.
    pub set_message: Setter<D, Vec<u8>>,
    /// The source the line comes from (a file path, a peer); lines without one share a
    /// source.
    pub source: Getter<D, [u8]>,
    /// The datum's event id; a joined datum gets a fresh one.
    pub id: Field<D, EventId>,
    /// Flags a datum cut at `max_lines` / `max_bytes`.
    pub set_truncated: Setter<D, bool>,
}

impl<D> std::fmt::Debug for MultilineFields<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MultilineFields")
    }
}

/// An open event.
#[derive(Debug)]
struct Pending<D> {
    first: D,
    /// The joined text while the event is not the current one (see `Multiline::buf`);
    /// empty while the event has one line (its datum is then untouched).
    joined: Vec<u8>,
    lines: usize,
    bytes: usize,
    rest: Vec<EventId>,
    state: State,
    /// When its last line came.
    last: Instant,
}

/// Where a preset's state machine stands within an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Plain,
    /// Python: inside a traceback's frames.
    Traceback,
    /// Python: past a traceback's exception line (a chained one may follow).
    AfterTraceback,
    /// Go: inside a panic's report.
    Panic,
}

/// Which lines continue an event.
#[derive(Debug)]
enum Rule {
    #[cfg(feature = "regex")]
    Start(Matcher),
    #[cfg(feature = "regex")]
    Continues(Matcher),
    Indent,
    Java,
    Python,
    Go,
}

/// A `start` or `continues` expression: its one-pass form when it has one (an anchored
/// sequence such as `^\d{4}-\d{2}-\d{2} `, matched at a few instructions a line), the
/// regex engine otherwise.
#[cfg(feature = "regex")]
#[derive(Debug)]
enum Matcher {
    Simple(super::simple_pattern::SimplePattern),
    Regex(regex::bytes::Regex),
}

#[cfg(feature = "regex")]
impl Matcher {
    #[inline]
    fn is_match(&self, line: &[u8]) -> bool {
        match self {
            Matcher::Simple(p) => p.is_match(line),
            Matcher::Regex(re) => re.is_match(line),
        }
    }
}

fn indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

fn trim_start(line: &[u8]) -> &[u8] {
    let n = line.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &line[n..]
}

/// `... N more`, indented or not.
fn java_more(line: &[u8]) -> bool {
    let t = trim_start(line);
    let Some(rest) = t.strip_prefix(b"... ") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && rest[digits..].trim_ascii_end() == b" more"
}

/// A Java exception header: a dotted class name ending in `Exception`, `Error` or
/// `Throwable`, alone or followed by `:`.
fn java_exception(line: &[u8]) -> bool {
    let end = line.iter().position(|&c| c == b':').unwrap_or(line.len());
    let name = line[..end].trim_ascii_end();
    name.contains(&b'.')
        && name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'$' || c == b'_')
        && (name.ends_with(b"Exception")
            || name.ends_with(b"Error")
            || name.ends_with(b"Throwable"))
}

/// A Go stack frame line: `pkg.func(...)`, `main.main()`.
fn go_frame(line: &[u8]) -> bool {
    !line.contains(&b' ') && line.contains(&b'.') && line.ends_with(b")") && line.contains(&b'(')
}

impl Rule {
    /// Whether `line` continues the open event whose preset state is `state`; updates it.
    #[inline]
    fn continues(&self, line: &[u8], state: &mut State) -> bool {
        match self {
            #[cfg(feature = "regex")]
            Rule::Start(re) => !re.is_match(line),
            #[cfg(feature = "regex")]
            Rule::Continues(re) => re.is_match(line),
            Rule::Indent => indented(line),
            Rule::Java => {
                indented(line)
                    || line.starts_with(b"Caused by:")
                    || java_more(line)
                    || java_exception(line)
            }
            Rule::Python => match *state {
                State::Traceback => {
                    if !indented(line) {
                        // The exception line closes the traceback.
                        *state = State::AfterTraceback;
                    }
                    true
                }
                State::AfterTraceback if python_chain(line) => {
                    if line.starts_with(b"Traceback (most recent call last):") {
                        *state = State::Traceback;
                    }
                    true
                }
                _ => {
                    if line.starts_with(b"Traceback (most recent call last):") {
                        *state = State::Traceback;
                        true
                    } else {
                        indented(line)
                    }
                }
            },
            Rule::Go => {
                if *state == State::Panic {
                    line.is_empty()
                        || indented(line)
                        || line.starts_with(b"goroutine ")
                        || line.starts_with(b"[signal ")
                        || line.starts_with(b"created by ")
                        || line.starts_with(b"exit status ")
                        || go_frame(line)
                } else if go_panic(line) {
                    // A panic is the runtime's report, not a part of the log line before it.
                    false
                } else {
                    indented(line)
                }
            }
        }
    }

    /// The state of an event that `line` starts.
    fn first_state(&self, line: &[u8]) -> State {
        match self {
            Rule::Python if line.starts_with(b"Traceback (most recent call last):") => {
                State::Traceback
            }
            Rule::Go if go_panic(line) => State::Panic,
            _ => State::Plain,
        }
    }
}

fn go_panic(line: &[u8]) -> bool {
    line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ")
}

/// What may follow a Python traceback within the same event.
fn python_chain(line: &[u8]) -> bool {
    line.trim_ascii().is_empty()
        || line.starts_with(b"During handling of the above exception")
        || line.starts_with(b"The above exception was the direct cause")
        || line.starts_with(b"Traceback (most recent call last):")
}

impl<D: 'static> Multiline<D> {
    /// A `multiline` made from its settings; `fields` reads and writes the datum. Exactly
    /// one of `start`, `continues`, `indent = true` and `preset` must be given, and
    /// `max_lines` and `max_bytes` be at least 1.
    pub fn from_settings(
        s: &MultilineSettings,
        fields: MultilineFields<D>,
    ) -> Result<Self, SettingError> {
        let given = [
            s.start.is_some(),
            s.continues.is_some(),
            s.indent,
            s.preset.is_some(),
        ];
        match given.iter().filter(|&&g| g).count() {
            0 => {
                return Err(SettingError::new(
                    "start",
                    "give one rule: `start`, `continues`, `indent = true` or `preset`",
                ));
            }
            1 => {}
            _ => {
                let key = if s.preset.is_some() {
                    "preset"
                } else if s.indent {
                    "indent"
                } else {
                    "continues"
                };
                return Err(SettingError::new(
                    key,
                    "give only one rule of `start`, `continues`, `indent = true` and `preset`",
                ));
            }
        }
        let rule = if let Some(p) = s.preset {
            match p {
                MultilinePreset::Java => Rule::Java,
                MultilinePreset::Python => Rule::Python,
                MultilinePreset::Go => Rule::Go,
            }
        } else if s.indent {
            Rule::Indent
        } else {
            match (&s.start, &s.continues) {
                (Some(re), _) => regex_rule("start", re)?,
                (None, Some(re)) => regex_rule("continues", re)?,
                (None, None) => Rule::Indent,
            }
        };
        if s.max_lines == 0 {
            return Err(SettingError::new("max_lines", "must be at least 1"));
        }
        if s.max_keys == 0 {
            return Err(SettingError::new("max_keys", "must be at least 1"));
        }
        if s.max_bytes == 0 {
            return Err(SettingError::new("max_bytes", "must be at least 1"));
        }
        Ok(Multiline {
            rule,
            fields,
            timeout: s.timeout,
            max_lines: s.max_lines,
            max_bytes: s.max_bytes,
            cur_key: Vec::new(),
            cur: None,
            buf: Vec::new(),
            spent: Vec::new(),
            recycle: None,
            others: HashMap::new(),
            held: Held::new(MAX_HELD_IDS),
            timer_armed: false,
            max_keys: s.max_keys,
            evictions: 0,
            cuts: 0,
            limiter: LogLimiter::default(),
        })
    }

    /// Gives the storage of continuation lines back with `recycle` (for records:
    /// `|v| deadbeat::record::pool::recycle(v.drain(..))`) instead of dropping them, once a
    /// batch.
    pub fn with_recycle(mut self, recycle: fn(&mut Vec<D>)) -> Self {
        self.recycle = Some(recycle);
        self
    }

    /// Emits an event: its joined text into the first datum, its flag, its held ids. `cur`
    /// says whether it is the current source's, whose text is in `buf`.
    fn emit(
        &mut self,
        mut p: Pending<D>,
        cur: bool,
        truncated: bool,
        out: &mut Out<D>,
        cx: &mut Ctx,
    ) {
        let mut d = p.first;
        if p.lines > 1 {
            let text = if cur {
                let t = self.buf.as_slice().to_vec();
                self.buf.clear();
                t
            } else {
                std::mem::take(&mut p.joined)
            };
            self.fields.set_message.set(&mut d, text);
        }
        if truncated {
            self.fields.set_truncated.set(&mut d, true);
        }
        if !p.rest.is_empty() {
            match self.fields.id.get.get(&d).copied() {
                // Without an id nobody acknowledges the joined datum: its lines are done
                // with here.
                None | Some(0) => {
                    for id in p.rest {
                        cx.event_done(id);
                    }
                }
                // A fresh id, whose acknowledgement releases every line of the event in
                // one piece (see the type's doc).
                Some(first) => {
                    let mut ids = p.rest;
                    ids.insert(0, first);
                    let id = cx.new_event_id();
                    self.fields.id.set.set(&mut d, id);
                    self.held.hold(Some(id), ids, "multiline", cx);
                }
            }
        }
        out.push(d);
    }

    /// Opens an event with `d`, whose text is `len` bytes long.
    fn open(&self, d: D, state: State, len: usize, now: Instant) -> Pending<D> {
        Pending {
            first: d,
            joined: Vec::new(),
            lines: 1,
            bytes: len,
            rest: Vec::new(),
            state,
            last: now,
        }
    }

    /// Makes the source `key` the current one.
    /// Makes the source `key` the current one. A source's key is copied once, when its
    /// event opens, and then moves between `cur_key` and the map.
    fn switch(&mut self, key: &[u8], out: &mut Out<D>, cx: &mut Ctx) {
        if let Some(mut p) = self.cur.take() {
            if p.lines > 1 {
                p.joined = std::mem::take(&mut self.buf);
            }
            self.others.insert(std::mem::take(&mut self.cur_key), p);
        }
        match self.others.remove_entry(key) {
            Some((k, mut p)) => {
                self.cur_key = k;
                if p.lines > 1 {
                    self.buf = std::mem::take(&mut p.joined);
                }
                self.cur = Some(p);
            }
            None => {
                self.cur_key = key.to_vec();
                if self.others.len() >= self.max_keys {
                    self.evict(out, cx);
                }
            }
        }
    }

    /// Emits the event of the source quiet the longest, to keep open events within
    /// `max_keys` (counted and logged).
    fn evict(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let Some(k) = self
            .others
            .iter()
            .min_by_key(|(_, p)| p.last)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(p) = self.others.remove(&k) {
            self.evictions += 1;
            if self.limiter.allow("evictions", "multiline", cx) {
                slog::warn!(cx.logger(), "too many sources with an open event; the quietest emitted early";
                    "cog" => "multiline", "source" => %String::from_utf8_lossy(&k),
                    "max_keys" => self.max_keys, "evictions_so_far" => self.evictions);
            }
            self.emit(p, false, false, out, cx);
        }
    }

    fn line(&mut self, d: D, out: &mut Out<D>, cx: &mut Ctx) {
        let Some(line) = self.fields.message.get(&d) else {
            // Nothing to join: passed on as it is, and counted.
            out.count_errors(1);
            if self.limiter.allow("data without text", "multiline", cx) {
                slog::warn!(cx.logger(), "datum without text to join; passed on as it is";
                    "cog" => "multiline", "event" => self.fields.id.get.get(&d).copied());
            }
            out.push(d);
            return;
        };
        let key = self.fields.source.get(&d).unwrap_or(b"");
        if key != self.cur_key.as_slice() {
            self.switch(key, out, cx);
        }
        let now = cx.now();
        let Some(mut p) = self.cur.take() else {
            let (state, len) = (self.rule.first_state(line), line.len());
            self.cur = Some(self.open(d, state, len, now));
            return;
        };
        if !self.rule.continues(line, &mut p.state) {
            let (state, len) = (self.rule.first_state(line), line.len());
            self.emit(p, true, false, out, cx);
            self.cur = Some(self.open(d, state, len, now));
            return;
        }
        if p.lines >= self.max_lines || p.bytes + 1 + line.len() > self.max_bytes {
            self.cuts += 1;
            if self.limiter.allow("cut events", "multiline", cx) {
                slog::warn!(cx.logger(), "event cut at its bound; emitted flagged truncated";
                    "cog" => "multiline", "event" => self.fields.id.get.get(&p.first).copied(),
                    "lines" => p.lines, "bytes" => p.bytes, "cuts_so_far" => self.cuts);
            }
            let len = line.len();
            self.emit(p, true, true, out, cx);
            // The rest of the event goes on as an event of its own: nothing is dropped.
            self.cur = Some(self.open(d, State::Plain, len, now));
            return;
        }
        if p.lines == 1 {
            self.buf.clear();
            self.buf
                .extend_from_slice(self.fields.message.get(&p.first).unwrap_or(b""));
        }
        self.buf.push(b'\n');
        self.buf.extend_from_slice(line);
        p.lines += 1;
        p.bytes += 1 + line.len();
        p.last = now;
        if let Some(&id) = self.fields.id.get.get(&d) {
            p.rest.push(id);
        }
        out.count_dropped(1);
        self.cur = Some(p);
        if self.recycle.is_some() {
            self.spent.push(d);
        }
    }

    /// Arms the timeout timer if an event is open and none is armed.
    fn arm(&mut self, at: Instant, cx: &mut Ctx) {
        if self.timer_armed || self.timeout.is_zero() {
            return;
        }
        match cx.timer_at(at, 0) {
            Ok(_) => self.timer_armed = true,
            Err(e) => {
                if self.limiter.allow("timer failures", "multiline", cx) {
                    slog::warn!(cx.logger(), "cannot arm the timeout; open events wait for the next line or shutdown";
                        "cog" => "multiline", "error" => %e);
                }
            }
        }
    }

    /// Emits the events whose source has been quiet for `timeout`; re-arms for the rest.
    fn flush_quiet(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let now = cx.now();
        let timeout = self.timeout;
        let quiet = |p: &Pending<D>| now.saturating_duration_since(p.last) >= timeout;
        if self.cur.as_ref().is_some_and(quiet)
            && let Some(p) = self.cur.take()
        {
            self.emit(p, true, false, out, cx);
        }
        if !self.others.is_empty() {
            let keys: Vec<Vec<u8>> = self
                .others
                .iter()
                .filter(|(_, p)| quiet(p))
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                if let Some(p) = self.others.remove(&k) {
                    self.emit(p, false, false, out, cx);
                }
            }
        }
        let earliest = self
            .cur
            .iter()
            .chain(self.others.values())
            .map(|p| p.last)
            .min();
        if let Some(last) = earliest {
            self.arm(last + timeout, cx);
        }
    }
}

/// The rule of `start` or `continues` (`key`) with the expression `re`.
#[cfg(feature = "regex")]
fn regex_rule(key: &'static str, re: &str) -> Result<Rule, SettingError> {
    let compiled = regex::bytes::Regex::new(re)
        .map_err(|e| SettingError::new(key, format!("not a valid regular expression: {e}")))?;
    let re = match super::simple_pattern::SimplePattern::new(re) {
        Some(p) => Matcher::Simple(p),
        None => Matcher::Regex(compiled),
    };
    Ok(if key == "start" {
        Rule::Start(re)
    } else {
        Rule::Continues(re)
    })
}

/// Without the `regex` feature, `start` and `continues` are configuration errors.
#[cfg(not(feature = "regex"))]
fn regex_rule(key: &'static str, _: &str) -> Result<Rule, SettingError> {
    Err(SettingError::new(
        key,
        "this build has no `regex` feature: use `indent = true` or a `preset`",
    ))
}

impl<D: 'static> Cog<D> for Multiline<D> {
    fn name(&self) -> &str {
        "multiline"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        // Sources with an open event: the one seen last, and the others.
        into.keys(
            self.others.len() + usize::from(self.cur.is_some()),
            Some(self.max_keys),
        );
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        for d in batch.drain(..) {
            self.line(d, out, cx);
        }
        if let Some(recycle) = self.recycle
            && !self.spent.is_empty()
        {
            recycle(&mut self.spent);
            self.spent.clear();
        }
        if !self.timer_armed && (self.cur.is_some() || !self.others.is_empty()) {
            let at = cx.now() + self.timeout;
            self.arm(at, cx);
        }
    }

    fn wake(&mut self, _: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        if let Wake::Timer(_) = why {
            self.timer_armed = false;
            self.flush_quiet(out, cx);
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        self.held.done(ids, cx);
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.held.rename(old, new);
    }

    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        if let Some(p) = self.cur.take() {
            self.emit(p, true, false, out, cx);
        }
        let others: Vec<Pending<D>> = self.others.drain().map(|(_, p)| p).collect();
        for p in others {
            self.emit(p, false, false, out, cx);
        }
        if self.cuts > 0 || self.evictions > 0 {
            slog::info!(cx.logger(), "events cut at max_lines / max_bytes, or emitted early at max_keys";
                "cog" => "multiline", "cuts" => self.cuts, "evictions" => self.evictions);
        }
    }
}

crate::choice! {
    /// A preset of `multiline`: which lines continue an event.
    pub enum MultilinePreset {
        Java = "java",
        Python = "python",
        Go = "go",
    }
}

crate::settings! {
    /// Settings of `multiline`.
    pub struct MultilineSettings {
        /// the field naming the source whose lines are joined together: "path" (file_in, tail), "peer" (tcp_in); lines without it share one source
        source: String = "path",
        /// the field holding the line's text, and then the event's lines joined by \n
        field: String = "message",
        /// regular expression: a line matching it starts an event, other lines continue it (give one rule)
        start: Option<String>,
        /// regular expression: a line matching it continues the event before it (give one rule)
        continues: Option<String>,
        /// a line starting with a space or tab continues the event before it (give one rule)
        indent: bool = "false",
        /// java | python | go: stack traces, tracebacks, panics (give one rule; no regex needed)
        preset: Option<MultilinePreset>,
        /// the last event of a source quiet this long is emitted; "0s" waits for the next line or shutdown
        timeout: Duration = "1s",
        /// lines of an event at most; beyond, it is emitted cut with truncated = true
        max_lines: usize = "500",
        /// bytes of an event's text at most; beyond, it is emitted cut with truncated = true
        #[setting(size)]
        max_bytes: usize = "1MiB",
        /// sources with an open event at most; beyond, the event of the source quiet the longest is emitted early (counted, logged)
        max_keys: usize = "10000",
    }
}

/// The descriptor of `multiline`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "multiline",
    kind: CogKind::Transform,
    summary: "joins continuation lines (stack traces, tracebacks, panics) to the line that \
              starts their event, per source; a timeout flushes a quiet source's last event",
    params: MultilineSettings::PARAMS,
    fields: &[
        (
            "message",
            "the event's lines joined by \\n (the field named by `field`)",
        ),
        (
            "truncated",
            "true when the event was cut at max_lines / max_bytes",
        ),
    ],
    build,
};

/// The getters and setters of `multiline` on records: text at `field`, source at
/// `source`, the flag in `truncated`.
pub fn record_fields(
    field: &str,
    source: &str,
) -> Result<MultilineFields<Record>, (&'static str, String)> {
    let text = Path::parse(field).map_err(|e| ("field", e.to_string()))?;
    let set_path = text.clone();
    let source = Path::parse(source).map_err(|e| ("source", e.to_string()))?;
    let flag = Path::parse("truncated").map_err(|e| ("field", e.to_string()))?;
    Ok(MultilineFields {
        message: record::bytes_at(text),
        set_message: Setter::new(move |r: &mut Record, v: Vec<u8>| {
            let v = match String::from_utf8(v) {
                Ok(s) => Value::Str(s),
                Err(e) => Value::Bytes(e.into_bytes()),
            };
            r.set_path(&set_path, v);
        }),
        source: record::bytes_at(source),
        id: id_field(),
        set_truncated: Setter::new(move |r: &mut Record, v: bool| {
            r.set_path(&flag, Value::Bool(v))
        }),
    })
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: MultilineSettings = p.settings()?;
    let fields = record_fields(&s.field, &s.source).map_err(|(k, e)| p.error(k, e))?;
    let cog = Multiline::from_settings(&s, fields).map_err(|e| {
        if p.node(e.key).is_some() {
            p.setting_error(e)
        } else {
            p.cog_error(e.msg)
        }
    })?;
    Ok(Box::new(
        cog.with_recycle(|v| record::pool::recycle(v.drain(..))),
    ))
}
