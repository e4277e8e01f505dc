//! Getters and setters: how a cog reaches the piece of a datum it works on without knowing
//! the datum's layout.
//!
//! Whoever builds the train hands each cog closures over the datum type `D`. For the
//! dynamic [`Record`](crate::record::Record) of TOML trains, `record::field("src.ip")` builds
//! them; for a program's own struct, plain closures do:
//!
//! ```
//! use deadbeat::engine::getset::{Getter, Setter};
//! struct Hit { client: String, status: u16 }
//! let status = Getter::new(|h: &Hit| Some(&h.status));
//! let client = Setter::new(|h: &mut Hit, v: String| h.client = v);
//! let mut hit = Hit { client: String::new(), status: 404 };
//! client.set(&mut hit, "10.0.0.1".into());
//! assert_eq!(status.get(&hit), Some(&404));
//! assert_eq!(hit.client, "10.0.0.1");
//! ```

use std::fmt;

type GetFn<D, T> = dyn for<'a> Fn(&'a D) -> Option<&'a T>;
type GetMutFn<D, T> = dyn for<'a> Fn(&'a mut D) -> Option<&'a mut T>;
type SetFn<D, T> = dyn Fn(&mut D, T);

/// Borrows a piece `T` of a datum `D`; `None` when the datum has no such piece.
pub struct Getter<D, T: ?Sized> {
    f: Box<GetFn<D, T>>,
}

impl<D, T: ?Sized> Getter<D, T> {
    /// Wraps a closure that borrows the piece out of the datum.
    pub fn new<F>(f: F) -> Self
    where
        F: for<'a> Fn(&'a D) -> Option<&'a T> + 'static,
    {
        Getter { f: Box::new(f) }
    }

    /// Borrows the piece, if the datum has it.
    #[inline]
    pub fn get<'a>(&self, d: &'a D) -> Option<&'a T> {
        (self.f)(d)
    }
}

impl<D, T: ?Sized> fmt::Debug for Getter<D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Getter")
    }
}

/// Mutably borrows a piece `T` of a datum `D`, for cogs that rewrite a value in place.
pub struct MutGetter<D, T: ?Sized> {
    f: Box<GetMutFn<D, T>>,
}

impl<D, T: ?Sized> MutGetter<D, T> {
    /// Wraps a closure that mutably borrows the piece out of the datum.
    pub fn new<F>(f: F) -> Self
    where
        F: for<'a> Fn(&'a mut D) -> Option<&'a mut T> + 'static,
    {
        MutGetter { f: Box::new(f) }
    }

    /// Mutably borrows the piece, if the datum has it.
    #[inline]
    pub fn get_mut<'a>(&self, d: &'a mut D) -> Option<&'a mut T> {
        (self.f)(d)
    }
}

impl<D, T: ?Sized> fmt::Debug for MutGetter<D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MutGetter")
    }
}

/// Stores a piece `T` into a datum `D`, creating or replacing it.
pub struct Setter<D, T> {
    f: Box<SetFn<D, T>>,
}

impl<D, T> Setter<D, T> {
    /// Wraps a closure that stores the piece into the datum.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&mut D, T) + 'static,
    {
        Setter { f: Box::new(f) }
    }

    /// Stores `v` into `d`.
    #[inline]
    pub fn set(&self, d: &mut D, v: T) {
        (self.f)(d, v)
    }
}

impl<D, T> fmt::Debug for Setter<D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Setter")
    }
}

/// A getter and a setter for the same piece, as most cogs need both.
#[derive(Debug)]
pub struct Field<D, T> {
    /// Reads the piece.
    pub get: Getter<D, T>,
    /// Writes the piece.
    pub set: Setter<D, T>,
}

impl<D, T> Field<D, T> {
    /// Pairs a getter with a setter.
    pub fn new(get: Getter<D, T>, set: Setter<D, T>) -> Self {
        Field { get, set }
    }
}
