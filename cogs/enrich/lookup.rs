//! `lookup`: adds the columns of a table's row, found by the value of a field.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::cog::JobId;
use crate::engine::mailbox::Mailbox;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, Key, Map, Merge, Path, Record, SharedStr, Value, write_ip};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::reload::{FileWatch, Stamp, read_file};

/// Adds to each record the columns of the table row whose `key` column equals the
/// record's `field`: an asset inventory keyed by address, a user → team map. The table is
/// a CSV file with a header line, a JSON array of objects, or NDJSON (one object a line).
/// `fields` picks the columns to copy (by default every column but the key), `rename`
/// gives some of them other names, `prefix` goes before every name, and `target` puts them
/// in a map instead of at the top level. CSV cells are text; JSON values keep their type.
/// The looked-up value is text, an integer or an address (compared as its text; table
/// keys that are JSON numbers are compared as their text too).
///
/// A record whose value has no row (or that lacks `field`) is a miss, handled per
/// `on_missing`: `keep` passes it untouched, `default` writes the `default` fields (a
/// table of columns and values, named as a hit names them), `drop` acknowledges and drops
/// it, `train:NAME` sends it to the train NAME.
///
/// **Reloads.** The file is loaded at start (a table that does not load is a start
/// error naming the file and line). Then a change (rewritten in place, or a new file
/// renamed over it) is noticed by an inotify watch on its directory, and every
/// `poll_interval` by the file's identity (inode, size, time) as a fallback: the new
/// table is parsed on a worker thread, so a large one does not hold up the data, and
/// swapped in once complete; the records before the swap see the old table, those after
/// it the new one. A table that does not load (a syntax error, a row without the key or
/// with the wrong number of cells, a duplicate key) is refused whole: the old one stays
/// and the problem is logged with the file and line. Hits, misses, reloads and failed
/// reloads are logged at shutdown.
///
/// ```toml
/// [[train.cog]]
/// type = "lookup"
/// path = "assets.csv"          # ip,owner,site
/// key = "ip"
/// field = "client"
/// fields = ["owner", "site"]
/// rename = { site = "location" }
/// target = "asset"             # asset.owner, asset.location
/// on_missing = "default"
/// default = { owner = "unknown" }
/// ```
///
/// From Rust, over any datum, with a getter of the looked-up value, a [`Merge`] storing the
/// columns, an id getter (for `drop`) and the mailboxes of trains (for `train:NAME`):
/// `Lookup::from_settings(&LookupSettings { path: "assets.csv".into(), key: "ip".into(), field: "client".into(), ..Default::default() }, get, merge, id, |_| None)`.
pub struct Lookup<D> {
    get: Getter<D, Value>,
    merge: Merge<D>,
    id: Getter<D, EventId>,
    on_missing: Missing<D>,
    spec: Arc<TableSpec>,
    table: Table,
    watch: FileWatch,
    /// The load job running, if any.
    load_job: Option<JobId>,
    counters: Rc<LookupCounters>,
    scratch: Map,
    buf: Vec<u8>,
}

/// What `lookup` does with a record that has no row.
enum Missing<D> {
    Keep,
    Default(Row),
    Drop,
    Train(Rc<Mailbox<D>>),
}

/// The counters of a `lookup` (or `geoip`), shared with whoever asked for them.
#[derive(Debug, Default)]
pub struct LookupCounters {
    hits: Cell<u64>,
    misses: Cell<u64>,
    reloads: Cell<u64>,
    reload_failures: Cell<u64>,
}

impl LookupCounters {
    /// Records that found a row.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Records that found none (or lacked the field).
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// Tables loaded again and swapped in after the start.
    pub fn reloads(&self) -> u64 {
        self.reloads.get()
    }

    /// Reloads refused (the old table kept).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.get()
    }

    pub(crate) fn add_hits(&self, n: u64) {
        self.hits.set(self.hits.get() + n);
    }

    pub(crate) fn add_misses(&self, n: u64) {
        self.misses.set(self.misses.get() + n);
    }

    pub(crate) fn reloaded(&self, ok: bool) {
        let c = if ok {
            &self.reloads
        } else {
            &self.reload_failures
        };
        c.set(c.get() + 1);
    }
}

/// The descriptor of `lookup`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "lookup",
    kind: CogKind::Transform,
    summary: "adds the columns of a CSV or JSON table's row found by a field's value; the \
              table is reloaded when its file changes",
    params: LookupSettings::PARAMS,
    fields: &[(
        "COLUMN",
        "(`fields`, `rename`, `prefix`, `target`) the columns of the row found",
    )],
    build,
};

crate::choice! {
    /// The format of a `lookup` table.
    pub enum TableFormat { Auto = "auto", Csv = "csv", Json = "json", Ndjson = "ndjson" }
}

crate::settings! {
    /// Settings of `lookup`.
    pub struct LookupSettings {
        /// the table: CSV with a header line, a JSON array of objects, or NDJSON (one object a line); reloaded when it changes
        #[setting(required)]
        path: PathBuf,
        /// auto: from the extension (.csv; .json; .ndjson or .jsonl)
        format: TableFormat = "auto",
        /// the table's column holding the key
        #[setting(required)]
        key: String,
        /// dotted path of the value looked up (text, an integer or an ip)
        #[setting(required)]
        field: String,
        /// the columns to copy; empty: every column but the key
        fields: Vec<String>,
        /// other names for some columns, { column = "name" }
        rename: toml::Table,
        /// text put before every name written
        prefix: String,
        /// dotted path of a map to put the columns in (created if missing); by default they go at the top level
        target: Option<String>,
        /// keep: pass the record untouched; default: write the `default` fields; drop: acknowledge and drop it; train:NAME: send it to the train NAME
        on_missing: String = "keep",
        /// with on_missing = "default": { column = value }, named as a hit names its columns
        default: toml::Table,
        /// the CSV delimiter (one character)
        delimiter: String = ",",
        /// how often the file is checked without inotify (and as a safety net with it)
        poll_interval: Duration = "1s",
    }
}

/// The fields one row writes: output names and values, in column order.
pub type Row = Arc<[(Key, Value)]>;

/// A loaded table: rows by key.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<Box<[u8]>, Row>,
}

impl Table {
    /// The row of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Row> {
        self.rows.get(key)
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Why a table did not load: the line (1-based; 0 when about the whole file) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// The line of the problem, counted from 1; 0 when it concerns the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl TableError {
    fn at(line: usize, msg: impl Into<String>) -> TableError {
        TableError {
            line,
            msg: msg.into(),
        }
    }
}

/// How to read a table: everything a worker thread needs, with no reference to the cog.
#[derive(Debug, Clone)]
pub struct TableSpec {
    path: PathBuf,
    format: TableFormat,
    key: String,
    /// The columns to copy; `None`: all but the key.
    columns: Option<Vec<String>>,
    rename: HashMap<String, String>,
    prefix: String,
    delimiter: u8,
}

/// A table as loaded, with the version of the file it came from.
type Loaded = Result<(Table, Stamp), (TableError, Option<Stamp>)>;

/// The result of a job handing an old table to a worker to be freed there.
struct Freed;

impl TableSpec {
    /// The file read.
    pub fn path(&self) -> &FsPath {
        &self.path
    }

    /// `path:line: msg` for an error of this table.
    pub fn describe(&self, e: &TableError) -> String {
        if e.line == 0 {
            format!("{}: {}", self.path.display(), e.msg)
        } else {
            format!("{}:{}: {}", self.path.display(), e.line, e.msg)
        }
    }

    /// Reads and parses the file (blocking: on a worker thread, or at start).
    fn load(&self) -> Loaded {
        let (text, stamp) = read_file(&self.path)
            .map_err(|e| (TableError::at(0, format!("cannot read: {e}")), None))?;
        let table = self.parse(&text).map_err(|e| (e, Some(stamp)))?;
        Ok((table, stamp))
    }

    /// Parses a table's text.
    pub fn parse(&self, text: &[u8]) -> Result<Table, TableError> {
        let mut b = Builder::new(self);
        match self.format {
            TableFormat::Csv | TableFormat::Auto => parse_csv(text, self.delimiter, &mut b)?,
            TableFormat::Json => parse_json_array(text, &mut b)?,
            TableFormat::Ndjson => parse_ndjson(text, &mut b)?,
        }
        Ok(Table { rows: b.rows })
    }

    /// The name a column is written under.
    fn out_name(&self, column: &str) -> String {
        let name = self.rename.get(column).map_or(column, String::as_str);
        format!("{}{name}", self.prefix)
    }

    /// Whether `column` is copied.
    fn copies(&self, column: &str) -> bool {
        match &self.columns {
            Some(c) => c.iter().any(|c| c == column),
            None => column != self.key,
        }
    }
}

/// Collects rows, refusing duplicate keys.
struct Builder<'a> {
    spec: &'a TableSpec,
    rows: HashMap<Box<[u8]>, Row>,
    /// The line of each key's row, for the message about a duplicate.
    lines: HashMap<Box<[u8]>, usize>,
    /// Output keys by column, interned once per load.
    names: HashMap<String, Key>,
}

impl<'a> Builder<'a> {
    fn new(spec: &'a TableSpec) -> Self {
        Builder {
            spec,
            rows: HashMap::new(),
            lines: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn name(&mut self, column: &str) -> Key {
        if let Some(k) = self.names.get(column) {
            return *k;
        }
        let k = Key::new(&self.spec.out_name(column));
        self.names.insert(column.to_string(), k);
        k
    }

    fn add(
        &mut self,
        line: usize,
        key: Vec<u8>,
        fields: Vec<(Key, Value)>,
    ) -> Result<(), TableError> {
        if key.is_empty() {
            return Err(TableError::at(
                line,
                format!("empty key (column {:?})", self.spec.key),
            ));
        }
        let key: Box<[u8]> = key.into();
        if let Some(first) = self.lines.get(&key) {
            return Err(TableError::at(
                line,
                format!(
                    "duplicate key {:?} (first on line {first})",
                    String::from_utf8_lossy(&key)
                ),
            ));
        }
        self.lines.insert(key.clone(), line);
        self.rows.insert(key, fields.into());
        Ok(())
    }
}

/// The 1-based line of byte `at`, counting from a known line at a known offset.
struct LineCounter<'t> {
    text: &'t [u8],
    pos: usize,
    line: usize,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t [u8]) -> Self {
        LineCounter {
            text,
            pos: 0,
            line: 1,
        }
    }

    /// The line of byte `at` (`at` never goes backwards between calls).
    fn line_at(&mut self, at: usize) -> usize {
        let at = at.min(self.text.len());
        if at > self.pos {
            self.line += self.text[self.pos..at]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.pos = at;
        }
        self.line
    }
}

fn cell_text(cell: &[u8]) -> Value {
    Value::Shared(SharedStr::short(&String::from_utf8_lossy(cell)))
}

/// Parses CSV (RFC 4180: quoted cells may hold delimiters, doubled quotes and line
/// breaks; CRLF or LF line ends; blank lines skipped) with a header line.
fn parse_csv(text: &[u8], delim: u8, b: &mut Builder<'_>) -> Result<(), TableError> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut rows = CsvRows {
        text,
        pos: 0,
        line: 1,
        delim,
    };
    let Some((_, header)) = rows.next_row()? else {
        return Err(TableError::at(0, "empty file: expected a header line"));
    };
    let header: Vec<String> = header
        .iter()
        .map(|c| String::from_utf8_lossy(c).trim().to_string())
        .collect();
    let Some(key_at) = header.iter().position(|c| *c == b.spec.key) else {
        return Err(TableError::at(
            1,
            format!(
                "no column {:?} for the key (columns: {})",
                b.spec.key,
                header.join(", ")
            ),
        ));
    };
    if let Some(cols) = &b.spec.columns
        && let Some(missing) = cols.iter().find(|c| !header.contains(c))
    {
        return Err(TableError::at(
            1,
            format!("no column {missing:?} (columns: {})", header.join(", ")),
        ));
    }
    let copied: Vec<(usize, Key)> = header
        .iter()
        .enumerate()
        .filter(|(_, c)| b.spec.copies(c))
        .map(|(i, c)| (i, b.name(c)))
        .collect::<Vec<_>>();
    check_names(&copied, &header, 1)?;
    while let Some((line, cells)) = rows.next_row()? {
        if cells.len() != header.len() {
            return Err(TableError::at(
                line,
                format!(
                    "{} cells where the header has {}",
                    cells.len(),
                    header.len()
                ),
            ));
        }
        let fields = copied
            .iter()
            .map(|&(i, k)| (k, cell_text(&cells[i])))
            .collect();
        b.add(line, cells[key_at].to_vec(), fields)?;
    }
    Ok(())
}

/// Two columns written under one name (after `rename` and `prefix`) are refused.
fn check_names(copied: &[(usize, Key)], header: &[String], line: usize) -> Result<(), TableError> {
    for (n, (i, k)) in copied.iter().enumerate() {
        if let Some((j, _)) = copied[..n].iter().find(|(_, k2)| k2 == k) {
            return Err(TableError::at(
                line,
                format!(
                    "columns {:?} and {:?} would both be written as {:?}",
                    header[*j],
                    header[*i],
                    k.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// One CSV row: the line it starts on, and its cells.
type CsvRow = (usize, Vec<Vec<u8>>);

/// The rows of a CSV text.
struct CsvRows<'t> {
    text: &'t [u8],
    pos: usize,
    line: usize,
    delim: u8,
}

impl CsvRows<'_> {
    /// The next non-blank row and the line it starts on.
    fn next_row(&mut self) -> Result<Option<CsvRow>, TableError> {
        // Blank lines (an empty last line, say) carry no row.
        while self.pos < self.text.len() && matches!(self.text[self.pos], b'\n' | b'\r') {
            if self.text[self.pos] == b'\n' {
                self.line += 1;
            }
            self.pos += 1;
        }
        if self.pos >= self.text.len() {
            return Ok(None);
        }
        let start_line = self.line;
        let mut cells = Vec::new();
        let mut cell = Vec::new();
        let t = self.text;
        loop {
            // At the start of a cell.
            if t.get(self.pos) == Some(&b'"') {
                self.pos += 1;
                loop {
                    let Some(&c) = t.get(self.pos) else {
                        return Err(TableError::at(start_line, "a quoted cell is not closed"));
                    };
                    self.pos += 1;
                    match c {
                        b'"' if t.get(self.pos) == Some(&b'"') => {
                            cell.push(b'"');
                            self.pos += 1;
                        }
                        b'"' => break,
                        b'\n' => {
                            self.line += 1;
                            cell.push(c);
                        }
                        _ => cell.push(c),
                    }
                }
                match t.get(self.pos) {
                    None | Some(b'\n' | b'\r') => {}
                    Some(&c) if c == self.delim => {}
                    Some(_) => {
                        return Err(TableError::at(
                            self.line,
                            "text after a closing quote (a quote inside a cell is written \"\")",
                        ));
                    }
                }
            } else {
                while let Some(&c) = t.get(self.pos) {
                    if c == self.delim || c == b'\n' || c == b'\r' {
                        break;
                    }
                    cell.push(c);
                    self.pos += 1;
                }
            }
            cells.push(std::mem::take(&mut cell));
            match t.get(self.pos) {
                Some(&c) if c == self.delim => self.pos += 1,
                Some(b'\r') => {
                    self.pos += 1;
                    if t.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                        self.line += 1;
                    }
                    return Ok(Some((start_line, cells)));
                }
                Some(_) => {
                    self.pos += 1;
                    self.line += 1;
                    return Ok(Some((start_line, cells)));
                }
                None => return Ok(Some((start_line, cells))),
            }
        }
    }
}

/// The key of a JSON row: text, or an integer or boolean as its text.
fn json_key(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Int(_) | Value::BigInt(_) | Value::Bool(_) => {
            let mut out = Vec::new();
            v.write_json(&mut out);
            Some(out)
        }
        _ => v.as_bytes().map(<[u8]>::to_vec),
    }
}

/// Text values as shared text, so each record's copy only counts a reference.
fn share(v: Value) -> Value {
    match v {
        Value::Str(s) => Value::Shared(if s.len() <= record::InlineStr::CAPACITY {
            SharedStr::short(&s)
        } else {
            SharedStr::from(s)
        }),
        Value::List(items) => Value::List(items.into_iter().map(share).collect()),
        Value::Map(mut m) => Value::Map(m.drain().map(|(k, v)| (k, share(v))).collect()),
        other => other,
    }
}

/// Adds the row of one JSON object that starts on `line`.
fn json_row(v: Value, line: usize, b: &mut Builder<'_>) -> Result<(), TableError> {
    let Value::Map(mut m) = v else {
        return Err(TableError::at(
            line,
            format!("expected an object, found {}", v.type_name()),
        ));
    };
    let key_name = b.spec.key.clone();
    let key = match m.get(Key::new(&key_name)) {
        None => {
            return Err(TableError::at(
                line,
                format!("no {key_name:?} (the key) in this object"),
            ));
        }
        Some(k) => json_key(k).ok_or_else(|| {
            TableError::at(
                line,
                format!(
                    "the key {key_name:?} is a {}: expected text or an integer",
                    k.type_name()
                ),
            )
        })?,
    };
    let mut fields: Vec<(Key, Value)> = Vec::with_capacity(m.len());
    for (k, v) in m.drain() {
        let column = k.as_str();
        if !b.spec.copies(column) {
            continue;
        }
        let name = b.name(column);
        if fields.iter().any(|(n, _)| *n == name) {
            return Err(TableError::at(
                line,
                format!("two fields would both be written as {:?}", name.as_str()),
            ));
        }
        fields.push((name, share(v)));
    }
    b.add(line, key, fields)
}

/// Parses a JSON array of objects, element by element so that each row's line is known.
fn parse_json_array(text: &[u8], b: &mut Builder<'_>) -> Result<(), TableError> {
    let mut lines = LineCounter::new(text);
    let ws = |t: &[u8], mut i: usize| {
        while i < t.len() && t[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut i = ws(text, 0);
    if text.get(i) != Some(&b'[') {
        return Err(TableError::at(
            lines.line_at(i),
            "expected a JSON array of objects (or give format = \"ndjson\")",
        ));
    }
    i = ws(text, i + 1);
    if text.get(i) == Some(&b']') {
        return trailing(text, ws(text, i + 1), &mut lines);
    }
    loop {
        let start = i;
        let end = element_end(text, start)
            .ok_or_else(|| TableError::at(lines.line_at(start), "the array is not closed"))?;
        let line = lines.line_at(start);
        let v = Value::parse_json(&text[start..end]).map_err(|e| {
            let at = lines_in(&text[start..start + e.offset.min(end - start)]);
            TableError::at(line + at, format!("bad JSON: {}", e.msg))
        })?;
        json_row(v, line, b)?;
        i = ws(text, end);
        match text.get(i) {
            Some(b',') => i = ws(text, i + 1),
            Some(b']') => return trailing(text, ws(text, i + 1), &mut lines),
            _ => {
                return Err(TableError::at(
                    lines.line_at(i),
                    "expected , or ] after an array element",
                ));
            }
        }
    }
}

fn lines_in(t: &[u8]) -> usize {
    t.iter().filter(|&&c| c == b'\n').count()
}

fn trailing(text: &[u8], i: usize, lines: &mut LineCounter<'_>) -> Result<(), TableError> {
    if i < text.len() {
        return Err(TableError::at(
            lines.line_at(i),
            "text after the closing ] of the array",
        ));
    }
    Ok(())
}

/// The end of the JSON value starting at `start` inside an array: the first `,` or `]`
/// outside strings at its own depth. The value itself is checked by the parser.
fn element_end(t: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < t.len() {
        match t[i] {
            b'"' => {
                i += 1;
                while i < t.len() && t[i] != b'"' {
                    if t[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth > 0 => depth -= 1,
            b',' | b']' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses NDJSON: one object a line, blank lines skipped.
fn parse_ndjson(text: &[u8], b: &mut Builder<'_>) -> Result<(), TableError> {
    for (n, line) in text.split(|&c| c == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if n == 0 {
            line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
        } else {
            line
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v =
            Value::parse_json(line).map_err(|e| TableError::at(n + 1, format!("bad JSON: {e}")))?;
        json_row(v, n + 1, b)?;
    }
    Ok(())
}

/// A TOML value as a record value (for `default`).
fn constant(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::Shared(SharedStr::from(s.as_str())),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::Str(d.to_string()),
        toml::Value::Array(items) => Value::List(items.iter().map(constant).collect()),
        toml::Value::Table(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Key::new(k), constant(v)))
                .collect::<Map>(),
        ),
    }
}

/// The bytes a value is looked up by: text as it is, an integer or address as its text.
#[inline]
fn lookup_key<'a>(v: &'a Value, buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    match v {
        Value::Str(_) | Value::Shared(_) | Value::Bytes(_) => v.as_bytes(),
        Value::Ip(ip) => {
            buf.clear();
            write_ip(buf, ip);
            Some(buf)
        }
        Value::Int(_) | Value::BigInt(_) | Value::Bool(_) => {
            buf.clear();
            v.write_json(buf);
            Some(buf)
        }
        _ => None,
    }
}

impl<D: 'static> Lookup<D> {
    /// A `lookup` made from its settings: `get` reads the looked-up value, `merge` stores
    /// the columns (at the top level or in a map: `target` is the caller's to apply, as
    /// [`record::merge_into`] does), `id` reads the event id to acknowledge dropped
    /// records with, `train` gives the mailbox of a train named by `on_missing`. The table
    /// is read at [`Cog::start`].
    pub fn from_settings(
        s: &LookupSettings,
        get: Getter<D, Value>,
        merge: Merge<D>,
        id: Getter<D, EventId>,
        train: impl Fn(&str) -> Option<Rc<Mailbox<D>>>,
    ) -> Result<Self, SettingError> {
        let spec = spec_of(s)?;
        let default_row = || -> Result<Row, SettingError> {
            let mut row: Vec<(Key, Value)> = Vec::new();
            for (column, v) in &s.default {
                let k = Key::new(&spec.out_name(column));
                if row.iter().any(|(n, _)| *n == k) {
                    return Err(SettingError::new(
                        "default",
                        format!("two columns would both be written as {:?}", k.as_str()),
                    ));
                }
                row.push((k, constant(v)));
            }
            Ok(row.into())
        };
        let on_missing = match s.on_missing.as_str() {
            "keep" => Missing::Keep,
            "default" => {
                if s.default.is_empty() {
                    return Err(SettingError::new(
                        "default",
                        "on_missing = \"default\" needs the fields to write, e.g. default = { owner = \"unknown\" }",
                    ));
                }
                Missing::Default(default_row()?)
            }
            "drop" => Missing::Drop,
            other => match other.strip_prefix("train:") {
                Some(name) => match train(name) {
                    Some(m) => Missing::Train(m),
                    None => {
                        return Err(SettingError::new(
                            "on_missing",
                            format!("no train named {name:?}"),
                        ));
                    }
                },
                None => {
                    return Err(SettingError::new(
                        "on_missing",
                        format!(
                            "expected \"keep\", \"default\", \"drop\" or \"train:NAME\", found {other:?}"
                        ),
                    ));
                }
            },
        };
        if !s.default.is_empty() && !matches!(on_missing, Missing::Default(_)) {
            return Err(SettingError::new(
                "default",
                "is only used with on_missing = \"default\"",
            ));
        }
        if s.poll_interval.is_zero() {
            return Err(SettingError::new("poll_interval", "must be above 0"));
        }
        Ok(Lookup {
            get,
            merge,
            id,
            on_missing,
            watch: FileWatch::new(&spec.path, s.poll_interval),
            spec: Arc::new(spec),
            table: Table::default(),
            load_job: None,
            counters: Rc::default(),
            scratch: Map::new(),
            buf: Vec::new(),
        })
    }

    /// The counters, shared: they go on counting after the cog is put in a train.
    pub fn counters(&self) -> Rc<LookupCounters> {
        Rc::clone(&self.counters)
    }

    /// The table in use.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Loads the table now, blocking (what [`Cog::start`] does); errors read `path:line: what`.
    pub fn load_now(&mut self) -> Result<Stamp, String> {
        match self.spec.load() {
            Ok((t, stamp)) => {
                self.table = t;
                Ok(stamp)
            }
            Err((e, _)) => Err(self.spec.describe(&e)),
        }
    }

    /// Adds the row's fields to `d`, or handles the miss the ways that keep the datum;
    /// `false` on a miss.
    #[inline]
    fn enrich(&mut self, d: &mut D) -> bool {
        let row = match self.get.get(d) {
            Some(v) => lookup_key(v, &mut self.buf).and_then(|k| self.table.get(k)),
            None => None,
        };
        let row = match (row, &self.on_missing) {
            (Some(r), _) => r,
            (None, Missing::Default(r)) => {
                fill(&mut self.scratch, r);
                self.merge.merge(d, &mut self.scratch);
                return false;
            }
            (None, _) => return false,
        };
        fill(&mut self.scratch, row);
        self.merge.merge(d, &mut self.scratch);
        true
    }

    fn reload(&mut self, cx: &mut Ctx) {
        let spec = Arc::clone(&self.spec);
        match cx.submit(move || spec.load()) {
            Ok(job) => {
                self.load_job = Some(job);
                self.watch.loading();
            }
            Err(e) => {
                slog::warn!(cx.logger(), "lookup table not reloaded: no worker";
                    "file" => %self.spec.path.display(), "reason" => %e);
            }
        }
    }
}

fn fill(scratch: &mut Map, row: &Row) {
    scratch.clear();
    for (k, v) in row.iter() {
        scratch.append_new(*k, v.clone());
    }
}

/// The table spec that settings describe.
fn spec_of(s: &LookupSettings) -> Result<TableSpec, SettingError> {
    if s.path.as_os_str().is_empty() {
        return Err(SettingError::new("path", "give the table's file"));
    }
    if s.key.is_empty() {
        return Err(SettingError::new("key", "give the table's key column"));
    }
    let format = match s.format {
        TableFormat::Auto => {
            let ext = s
                .path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            match ext.as_deref() {
                Some("csv") => TableFormat::Csv,
                Some("json") => TableFormat::Json,
                Some("ndjson" | "jsonl") => TableFormat::Ndjson,
                _ => {
                    return Err(SettingError::new(
                        "format",
                        format!(
                            "cannot tell the format from {:?}: give format = \"csv\", \"json\" or \"ndjson\"",
                            s.path.display().to_string()
                        ),
                    ));
                }
            }
        }
        f => f,
    };
    let delimiter = match s.delimiter.as_bytes() {
        [b] if *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
        _ => {
            return Err(SettingError::new(
                "delimiter",
                "must be one ASCII character other than a quote or a line break",
            ));
        }
    };
    let mut rename = HashMap::new();
    for (column, name) in &s.rename {
        let Some(name) = name.as_str() else {
            return Err(SettingError::new(
                "rename",
                format!("{column}: expected a name in quotes"),
            ));
        };
        if name.is_empty() {
            return Err(SettingError::new("rename", format!("{column}: empty name")));
        }
        rename.insert(column.clone(), name.to_string());
    }
    Ok(TableSpec {
        path: s.path.clone(),
        format,
        key: s.key.clone(),
        columns: (!s.fields.is_empty()).then(|| s.fields.clone()),
        rename,
        prefix: s.prefix.clone(),
        delimiter,
    })
}

impl<D: 'static> Cog<D> for Lookup<D> {
    fn name(&self) -> &str {
        "lookup"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let stamp = self
            .load_now()
            .map_err(|e| format!("lookup table not loaded: {e}"))?;
        slog::info!(cx.logger(), "lookup table loaded";
            "file" => %self.spec.path.display(), "rows" => self.table.len());
        self.watch.start(stamp, cx)
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let n = batch.len() as u64;
        let mut hits = 0;
        if matches!(self.on_missing, Missing::Keep | Missing::Default(_)) {
            // Every datum stays: changed where it lies and passed on whole.
            for d in batch.iter_mut() {
                hits += u64::from(self.enrich(d));
            }
            out.push_all(batch);
        } else {
            for mut d in batch.drain(..) {
                if self.enrich(&mut d) {
                    hits += 1;
                    out.push(d);
                    continue;
                }
                match &self.on_missing {
                    Missing::Train(m) => m.send(d, cx),
                    _ => {
                        if let Some(id) = self.id.get(&d) {
                            cx.event_done(*id);
                        }
                        out.count_dropped(1);
                    }
                }
            }
        }
        self.counters.add_hits(hits);
        self.counters.add_misses(n - hits);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, _out: &mut Out<D>, cx: &mut Ctx) {
        if self.watch.changed(local, &why, cx) {
            self.reload(cx);
        }
    }

    fn job_done(&mut self, job: JobId, result: JobResult, _out: &mut Out<D>, cx: &mut Ctx) {
        if self.load_job != Some(job) {
            return; // an old table freed on a worker
        }
        self.load_job = None;
        let loaded = match result {
            Ok(out) => match out.downcast::<Loaded>() {
                Ok(l) => *l,
                Err(_) => Err((TableError::at(0, "unexpected job result"), None)),
            },
            Err(panic) => Err((TableError::at(0, panic.to_string()), None)),
        };
        let stamp = match loaded {
            Ok((table, stamp)) => {
                let rows = table.len();
                let old = std::mem::replace(&mut self.table, table);
                // Freeing a large table takes a while: a worker does it.
                if old.len() > 10_000 {
                    let _ = cx.submit(move || {
                        drop(old);
                        Freed
                    });
                }
                self.counters.reloaded(true);
                slog::info!(cx.logger(), "lookup table reloaded";
                    "file" => %self.spec.path.display(), "rows" => rows);
                Some(stamp)
            }
            Err((e, stamp)) => {
                self.counters.reloaded(false);
                slog::error!(cx.logger(), "lookup table not reloaded, the old one stays";
                    "reason" => self.spec.describe(&e));
                stamp.or_else(|| Stamp::read(self.watch.path()).ok())
            }
        };
        if self.watch.loaded(stamp) {
            self.reload(cx);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        let c = &self.counters;
        slog::info!(cx.logger(), "lookup counters";
            "file" => %self.spec.path.display(), "hits" => c.hits(), "misses" => c.misses(),
            "reloads" => c.reloads(), "reload_failures" => c.reload_failures());
    }
}

impl<D> fmt::Debug for Lookup<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookup")
            .field("spec", &self.spec)
            .field("rows", &self.table.len())
            .field("counters", &self.counters)
            .finish()
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: LookupSettings = p.settings()?;
    s.path = p.resolve(&s.path.to_string_lossy());
    let field = Path::parse(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    let target = match &s.target {
        Some(t) => Some(Path::parse(t).map_err(|e| p.error("target", e.to_string()))?),
        None => None,
    };
    if let Some(name) = s.on_missing.strip_prefix("train:")
        && cx.mailbox(name).is_none()
    {
        return Err(p.error(
            "on_missing",
            format!(
                "no train named {name:?} (trains: {})",
                cx.train_names().join(", ")
            ),
        ));
    }
    let get = Getter::new(move |r: &Record| r.get_path(&field));
    let lookup = Lookup::from_settings(
        &s,
        get,
        record::merge_into(target),
        record::id_field().get,
        |name| cx.mailbox(name),
    )
    .map_err(|e| super::setting_error(p, e))?;
    Ok(Box::new(lookup))
}
