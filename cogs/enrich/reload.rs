//! What `lookup` and `geoip` share: noticing that the file they read has changed, so they
//! load it again on a worker job and swap it in once parsed.
//!
//! The file's directory is watched with inotify (closed after writing, renamed into
//! place: a new file moved over the old one is seen as well as a rewrite in place), and
//! the file's identity (device, inode, size, modification time) is compared every
//! `poll_interval` as a fallback without inotify and as a safety net with it (a symbolic
//! link switched elsewhere, a watch lost).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inotify::{EventMask, WatchDescriptor, WatchMask};

use crate::prelude::*;

/// The local of the directory watch.
pub const WATCH: Local = 0x5745_0001;
/// The local of the polling timer.
pub const POLL: Local = 0x5745_0002;

/// What identifies one version of a file: device, inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// The stamp of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    /// The stamp of the file at `path` now, following symbolic links.
    pub fn read(path: &Path) -> std::io::Result<Stamp> {
        std::fs::metadata(path).map(|m| Stamp::of(&m))
    }
}

/// Reads a whole file, with the stamp of the version read (taken from the open file, so
/// a replacement landing during the read is seen again by the next check).
pub fn read_file(path: &Path) -> std::io::Result<(Vec<u8>, Stamp)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.read_to_end(&mut buf)?;
    Ok((buf, Stamp::of(&meta)))
}

/// Follows one file for changes; the cog owning it starts a load when [`FileWatch::changed`]
/// or [`FileWatch::loaded`] says so.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    wd: Option<WatchDescriptor>,
    poll_interval: Duration,
    /// The version loaded last (or tried last, when it failed to load).
    stamp: Option<Stamp>,
    /// A load runs on a worker.
    loading: bool,
    /// A change was seen while a load ran: load again when it ends.
    again: bool,
}

impl FileWatch {
    /// Follows `path`, checking its identity every `poll_interval`.
    pub fn new(path: &Path, poll_interval: Duration) -> FileWatch {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FileWatch {
            path: path.to_path_buf(),
            dir,
            name: path.file_name().map(OsString::from).unwrap_or_default(),
            wd: None,
            poll_interval,
            stamp: None,
            loading: false,
            again: false,
        }
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts following, after the first load (whose stamp is `stamp`).
    pub fn start(&mut self, stamp: Stamp, cx: &mut Ctx) -> Result<(), BoxError> {
        self.stamp = Some(stamp);
        self.watch_dir(cx);
        cx.timer_every(self.poll_interval, POLL)?;
        Ok(())
    }

    fn watch_dir(&mut self, cx: &mut Ctx) {
        if !cx.has_inotify() || self.wd.is_some() {
            return;
        }
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::CREATE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        match cx.watch(&self.dir, mask, WATCH) {
            Ok(wd) => self.wd = Some(wd),
            Err(e) => {
                slog::debug!(cx.logger(), "directory not watched, polling it";
                    "dir" => %self.dir.display(), "reason" => %e);
            }
        }
    }

    /// Handles a wake of the cog; `true` when a load should start now. Wakes that are not
    /// this watch's are ignored.
    pub fn changed(&mut self, local: Local, why: &Wake<'_>, cx: &mut Ctx) -> bool {
        let due = match (local, why) {
            (WATCH, Wake::Inotify(ev)) => {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    true
                } else if Some(ev.wd) != self.wd.as_ref() {
                    false
                } else if ev
                    .mask
                    .intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                {
                    // The directory went away: the poll watches it again once it is back.
                    if let Some(wd) = self.wd.take() {
                        let _ = cx.unwatch(&wd);
                    }
                    false
                } else {
                    // A file created empty is loaded once it is closed after writing.
                    ev.name == Some(self.name.as_os_str())
                        && ev
                            .mask
                            .intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO)
                }
            }
            (POLL, Wake::Timer(_)) => {
                self.watch_dir(cx);
                match Stamp::read(&self.path) {
                    Ok(s) => Some(s) != self.stamp,
                    // A file missing for a while (being replaced, say) keeps the loaded
                    // version; it is loaded again once it is back.
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if !due {
            return false;
        }
        if self.loading {
            self.again = true;
            return false;
        }
        true
    }

    /// A load is submitted.
    pub fn loading(&mut self) {
        self.loading = true;
        self.again = false;
    }

    /// A load ended, having read the version `stamp` (`None`: it could not read the file);
    /// `true` when a change came in meanwhile and a load should start again.
    pub fn loaded(&mut self, stamp: Option<Stamp>) -> bool {
        self.loading = false;
        if let Some(s) = stamp {
            self.stamp = Some(s);
        }
        std::mem::take(&mut self.again)
    }
}
