//! Inotify: one inotify instance for the process, its watches shared by the cogs that
//! watch the same inode, each cog woken only for its own mask.

use std::io;
use std::path::Path;

use ::inotify::{EventMask, WatchDescriptor, WatchMask};

use crate::engine::cog::Wake;
use crate::engine::cog::{InotifyEvent, Local};

use super::ctx::Ctx;
use super::{Escapement, Handle};

pub(super) struct WatchSub {
    pub(super) h: Handle,
    pub(super) local: Local,
    pub(super) mask: WatchMask,
}

impl Ctx<'_> {
    /// Whether inotify watches are available; when not, a cog polls instead.
    pub fn has_inotify(&self) -> bool {
        self.core.inotify.is_some()
    }

    /// Watches a path; events matching `mask` arrive as [`Wake::Inotify`] with `local`.
    /// Watches of one inode are shared by the kernel: the descriptor may equal another
    /// cog's, and each cog still gets only its own `mask`'s events.
    pub fn watch<P: AsRef<Path>>(
        &mut self,
        path: P,
        mask: WatchMask,
        local: Local,
    ) -> io::Result<WatchDescriptor> {
        self.core.check_binding(self.h)?;
        let Some(ino) = &self.core.inotify else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "inotify is not available",
            ));
        };
        // MASK_ADD keeps the masks of other cogs watching the same inode.
        let wd = ino.watches().add(path, mask | WatchMask::MASK_ADD)?;
        let subs = self.core.watch_subs.entry(wd.clone()).or_default();
        subs.retain(|s| !(s.h == self.h && s.local == local));
        subs.push(WatchSub {
            h: self.h,
            local,
            mask,
        });
        Ok(wd)
    }

    /// Removes this cog's watch; the kernel watch goes when no cog uses it any more.
    pub fn unwatch(&mut self, wd: &WatchDescriptor) -> io::Result<()> {
        let Some(subs) = self.core.watch_subs.get_mut(wd) else {
            return Ok(());
        };
        subs.retain(|s| s.h != self.h);
        if subs.is_empty() {
            self.core.watch_subs.remove(wd);
            if let Some(ino) = &self.core.inotify {
                // The kernel already dropped watches of deleted files: not an error here.
                let _ = ino.watches().remove(wd.clone());
            }
        }
        Ok(())
    }
}

impl Escapement {
    pub(super) fn deliver_inotify(&mut self) {
        let Some(ino) = self.core.inotify.as_mut() else {
            return;
        };
        self.inotify_events.clear();
        loop {
            match ino.read_events(&mut self.inotify_buf) {
                Ok(evs) => {
                    for e in evs {
                        self.inotify_events.push((
                            e.wd,
                            e.mask,
                            e.cookie,
                            e.name.map(|n| n.to_os_string()),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    slog::error!(self.core.logger, "reading inotify events failed"; "error" => %e);
                    break;
                }
            }
        }
        let events = std::mem::take(&mut self.inotify_events);
        for (wd, mask, cookie, name) in &events {
            self.targets.clear();
            if mask.contains(EventMask::Q_OVERFLOW) {
                // Events were lost: every watcher must rescan.
                for subs in self.core.watch_subs.values() {
                    for s in subs {
                        if !self.targets.contains(&(s.h, s.local)) {
                            self.targets.push((s.h, s.local));
                        }
                    }
                }
            } else if let Some(subs) = self.core.watch_subs.get(wd) {
                let always = EventMask::IGNORED | EventMask::UNMOUNT;
                for s in subs {
                    if mask.bits() & s.mask.bits() != 0 || mask.intersects(always) {
                        self.targets.push((s.h, s.local));
                    }
                }
            }
            if mask.contains(EventMask::IGNORED) {
                // The kernel removed the watch (file deleted, unmounted): forget it.
                self.core.watch_subs.remove(wd);
            }
            let targets = std::mem::take(&mut self.targets);
            for &(h, local) in &targets {
                if self.is_live(h) {
                    let ev = InotifyEvent {
                        wd,
                        mask: *mask,
                        cookie: *cookie,
                        name: name.as_deref(),
                    };
                    self.trains[h.train as usize].wake(
                        h.cog,
                        local,
                        Wake::Inotify(ev),
                        &mut self.core,
                    );
                    self.settle();
                }
            }
            self.targets = targets;
        }
        self.inotify_events = events;
    }
}
