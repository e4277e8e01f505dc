//! Cog descriptors and the context builders get: how a configuration turns into cogs.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use slog::Logger;

use crate::engine::cog::Cog;
use crate::engine::mailbox::Mailbox;
use crate::engine::train::Train;
use crate::kit::checkpoint::Ledger;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, Param};

/// The role a cog plays in a train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CogKind {
    /// Injects data of its own.
    Supply,
    /// Transforms data.
    Transform,
    /// Writes data out.
    Drain,
}

impl fmt::Display for CogKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CogKind::Supply => "supply",
            CogKind::Transform => "transform",
            CogKind::Drain => "drain",
        })
    }
}

/// Builds a cog from its validated parameters.
pub type BuildFn = fn(&CogParams<'_>, &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError>;

/// The static description of a cog type: drives validation, `deadbeat cogs` and the
/// generated reference in `docs/cogs.md`.
#[derive(Debug, Clone, Copy)]
pub struct CogDescriptor {
    /// The `type` that names it in a train.
    pub name: &'static str,
    /// Its role.
    pub kind: CogKind,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
    /// The fields it adds to records, with one line each (supplies and parsers).
    pub fields: &'static [(&'static str, &'static str)],
    /// Builds it.
    pub build: BuildFn,
}

/// A file a cog declared it writes ([`BuildCx::will_write`]), or a directory it writes in
/// ([`BuildCx::will_write_in`]).
#[derive(Debug)]
pub(crate) struct WillWrite {
    pub(crate) train: usize,
    pub(crate) cog: usize,
    pub(crate) key: &'static str,
    pub(crate) path: PathBuf,
    /// Whether the cog creates missing directories.
    pub(crate) create_dirs: bool,
    /// Whether `path` is the directory itself.
    pub(crate) dir: bool,
}

/// What builders may need beyond their parameters.
#[derive(Debug)]
pub struct BuildCx<'a> {
    /// Directory of the configuration file: base of relative paths.
    pub base_dir: &'a Path,
    /// Where cogs keep checkpoints.
    pub state_dir: &'a Path,
    /// The daemon's logger.
    pub logger: &'a Logger,
    pub(crate) train_names: Vec<&'a str>,
    pub(crate) current_train: Cell<usize>,
    pub(crate) current_cog: Cell<usize>,
    /// Files cogs declared they write.
    pub(crate) writes: RefCell<Vec<WillWrite>>,
    /// Whether a cog keeps checkpoints in the state directory.
    pub(crate) state_used: Cell<bool>,
    /// Mailboxes of trains that others send to, by train index.
    pub(crate) mailboxes: RefCell<Vec<Option<Rc<Mailbox<Record>>>>>,
    pub(crate) feeds: RefCell<Vec<(usize, usize)>>,
    /// Per train: the ledger of exactly-once outputs and how many checkpointing supplies
    /// asked for it.
    pub(crate) ledgers: RefCell<Vec<(Ledger, usize)>>,
    /// Trains with an exactly-once drain: only the checkpointing supply may feed them.
    pub(crate) exactly_once: RefCell<Vec<usize>>,
}

impl<'a> BuildCx<'a> {
    /// A context for building cogs outside a configuration's trains: the sub-train of
    /// `parallel`, built again on each worker thread. It knows no trains
    /// ([`mailbox`](BuildCx::mailbox) finds none) and its declarations (files written,
    /// checkpoints) are checked by nobody, so only cogs that need neither belong here.
    pub fn detached(base_dir: &'a Path, state_dir: &'a Path, logger: &'a Logger) -> Self {
        BuildCx {
            base_dir,
            state_dir,
            logger,
            train_names: Vec::new(),
            current_train: Cell::new(0),
            current_cog: Cell::new(0),
            writes: RefCell::new(Vec::new()),
            state_used: Cell::new(false),
            mailboxes: RefCell::new(Vec::new()),
            feeds: RefCell::new(Vec::new()),
            ledgers: RefCell::new(vec![(Ledger::new(), 0)]),
            exactly_once: RefCell::new(Vec::new()),
        }
    }

    /// The mailbox of the train named `train`, for a cog that sends records there (route,
    /// tee, dead letters); `None` if there is no such train. The train being built then
    /// feeds that one: it finishes first at shutdown.
    pub fn mailbox(&self, train: &str) -> Option<Rc<Mailbox<Record>>> {
        let to = self.train_names.iter().position(|n| *n == train)?;
        let mut boxes = self.mailboxes.borrow_mut();
        let mailbox = boxes[to]
            .get_or_insert_with(|| Rc::new(Mailbox::new()))
            .clone();
        let edge = (self.current_train.get(), to);
        let mut feeds = self.feeds.borrow_mut();
        if !feeds.contains(&edge) {
            feeds.push(edge);
        }
        Some(mailbox)
    }

    /// The names of all trains, for messages.
    pub fn train_names(&self) -> &[&str] {
        &self.train_names
    }

    /// For a cog that writes files: declares that it will create or append to `path` (set
    /// by its key `key`), so that `check` and `run` report at once a directory that is
    /// missing or not writable, or a file that cannot be written, instead of the cog
    /// failing once started. In a templated path, the directory before the first `{` is
    /// checked. `create_dirs`: the cog creates missing directories itself.
    pub fn will_write(&self, path: &Path, key: &'static str, create_dirs: bool) {
        self.declare_write(path, key, create_dirs, false);
    }

    /// For a cog that creates, moves or deletes files in the directory `dir` (set by its
    /// key `key`): as [`will_write`](BuildCx::will_write), for the directory itself.
    pub fn will_write_in(&self, dir: &Path, key: &'static str, create_dirs: bool) {
        self.declare_write(dir, key, create_dirs, true);
    }

    fn declare_write(&self, path: &Path, key: &'static str, create_dirs: bool, dir: bool) {
        self.writes.borrow_mut().push(WillWrite {
            train: self.current_train.get(),
            cog: self.current_cog.get(),
            key,
            path: path.to_path_buf(),
            create_dirs,
            dir,
        });
    }

    /// For a supply that keeps checkpoints: the ledger of the train being built, which its
    /// checkpoint carries (see [`CheckpointStore::with_ledger`]). Only the train's first
    /// checkpointing supply gets it.
    ///
    /// [`CheckpointStore::with_ledger`]: crate::kit::checkpoint::CheckpointStore::with_ledger
    pub fn supply_ledger(&self) -> Option<Ledger> {
        self.state_used.set(true);
        let mut ledgers = self.ledgers.borrow_mut();
        let (ledger, supplies) = &mut ledgers[self.current_train.get()];
        *supplies += 1;
        (*supplies == 1).then(|| ledger.clone())
    }

    /// How many supplies that keep checkpoints the train being built has so far: a drain
    /// that would undo what a restart resumes from (a truncating file) is refused.
    pub fn checkpointing_supplies(&self) -> usize {
        self.ledgers.borrow()[self.current_train.get()].1
    }

    /// For an exactly-once drain: the ledger of the train being built. An error (the
    /// message for the drain's key) unless exactly one checkpointing supply comes before
    /// the drain in its train.
    pub fn drain_ledger(&self) -> Result<Ledger, String> {
        let ledgers = self.ledgers.borrow();
        let (ledger, supplies) = &ledgers[self.current_train.get()];
        match supplies {
            1 => {
                self.exactly_once
                    .borrow_mut()
                    .push(self.current_train.get());
                Ok(ledger.clone())
            }
            0 => Err(
                "exactly-once output needs a supply that keeps checkpoints (tail) \
                      earlier in the same train"
                    .into(),
            ),
            n => Err(format!(
                "exactly-once output needs exactly one supply that keeps checkpoints in its \
                 train; this one has {n}"
            )),
        }
    }
}

/// Trains built from a configuration, with who feeds whom.
#[derive(Debug)]
pub struct Built {
    /// The trains, in file order.
    pub trains: Vec<Train<Record>>,
    /// `(from, to)`: train `from` sends records to train `to`.
    pub feeds: Vec<(usize, usize)>,
}

impl Built {
    /// Adds the trains and their feeds to an escapement.
    pub fn install(self, esc: &mut crate::Escapement) -> Result<(), crate::BoxError> {
        let base = esc.metrics().len();
        for t in self.trains {
            esc.add_train(t)?;
        }
        for (from, to) in self.feeds {
            esc.add_feed(base + from, base + to)?;
        }
        Ok(())
    }
}
