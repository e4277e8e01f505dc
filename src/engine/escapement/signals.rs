//! Signals: one `signal-hook` self-pipe for the process, delivered to the cogs bound to
//! each signal, with the escapement's defaults (shutdown, reopen, counters) for the rest.

use std::io;

use mio::Interest;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::engine::cog::Local;
use crate::engine::cog::Wake;

use super::core::{Core, Notice};
use super::ctx::Ctx;
use super::{Escapement, SIGNALS};

impl Core {
    pub(super) fn ensure_signals(&mut self, sig: i32) -> io::Result<()> {
        if signal_hook::consts::FORBIDDEN.contains(&sig) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {sig} cannot be caught"),
            ));
        }
        match &self.signals {
            Some(s) => s.add_signal(sig),
            None => {
                let mut s = Signals::new([sig])?;
                self.poll
                    .registry()
                    .register(&mut s, SIGNALS, Interest::READABLE)?;
                self.signals = Some(s);
                Ok(())
            }
        }
    }
}

impl Ctx<'_> {
    /// Delivers signal `sig` as [`Wake::Signal`] with `local`. A cog that binds SIGTERM or
    /// SIGINT takes over the escapement's default shutdown on it.
    pub fn signal(&mut self, sig: i32, local: Local) -> io::Result<()> {
        self.core.check_binding(self.h)?;
        self.core.ensure_signals(sig)?;
        let h = self.h;
        if !self.core.signal_subs.contains(&(sig, h, local)) {
            self.core.signal_subs.push((sig, h, local));
        }
        Ok(())
    }

    /// Stops delivering `sig` to this cog. The process keeps catching the signal (its
    /// handler cannot be uninstalled safely); unbound signals are ignored, or handled by the
    /// escapement's defaults.
    pub fn unsignal(&mut self, sig: i32) {
        let h = self.h;
        self.core
            .signal_subs
            .retain(|(s, x, _)| !(*s == sig && *x == h));
    }
}

impl Escapement {
    pub(super) fn deliver_signals(&mut self) {
        let mut arrived: Vec<i32> = Vec::new();
        if let Some(s) = self.core.signals.as_mut() {
            arrived.extend(s.pending());
        }
        for sig in arrived {
            self.targets.clear();
            self.targets.extend(
                self.core
                    .signal_subs
                    .iter()
                    .filter(|(s, _, _)| *s == sig)
                    .map(|(_, h, l)| (*h, *l)),
            );
            if self.targets.is_empty() {
                self.default_signal(sig);
                continue;
            }
            let targets = std::mem::take(&mut self.targets);
            for &(h, local) in &targets {
                if self.is_live(h) {
                    self.trains[h.train as usize].wake(
                        h.cog,
                        local,
                        Wake::Signal(sig),
                        &mut self.core,
                    );
                    self.settle();
                }
            }
            self.targets = targets;
        }
    }

    pub(super) fn default_signal(&mut self, sig: i32) {
        let opts = &self.core.options;
        if (sig == SIGTERM || sig == SIGINT) && opts.shutdown_on_signals {
            if self.core.shutdown {
                // The operator insists: a drain may be waiting for a peer that never comes.
                slog::warn!(self.core.logger, "second signal: stopping without finishing"; "signal" => sig);
                self.forced = true;
            } else {
                slog::info!(self.core.logger, "signal received: shutting down"; "signal" => sig);
            }
            self.core.shutdown = true;
        } else if sig == SIGHUP && opts.control_signals {
            slog::info!(self.core.logger, "SIGHUP: reopening files");
            self.core.notices.push(Notice::Reopen);
            self.settle();
        } else if sig == SIGUSR1 && opts.control_signals {
            self.core.metrics_requested = true;
        }
    }
}
