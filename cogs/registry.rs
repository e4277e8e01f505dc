//! The registry of cog types a configuration may name.

use crate::kit::CogDescriptor;

/// The cog types a configuration may name.
#[derive(Debug, Clone)]
pub struct Registry {
    cogs: Vec<CogDescriptor>,
}

impl Registry {
    /// The cogs supplied with deadbeat.
    pub fn builtin() -> Self {
        Registry {
            cogs: crate::cogs::descriptors(),
        }
    }

    /// Adds (or replaces) a cog type, for programs that embed deadbeat with cogs of their own.
    pub fn add(&mut self, d: CogDescriptor) {
        self.cogs.retain(|c| c.name != d.name);
        self.cogs.push(d);
    }

    /// Looks up a cog type.
    pub fn get(&self, name: &str) -> Option<&CogDescriptor> {
        self.cogs.iter().find(|c| c.name == name)
    }

    /// Every cog type, sorted by name.
    pub fn all(&self) -> Vec<&CogDescriptor> {
        let mut v: Vec<&CogDescriptor> = self.cogs.iter().collect();
        v.sort_by_key(|c| c.name);
        v
    }
}
