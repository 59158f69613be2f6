//! `ConnId`: the handle by which anything outside a connection reaches it.
//!
//! A `ConnId` is a slab index plus a generation. When a connection ends its
//! slot may be reused, but the generation is bumped first, so an old id never
//! reaches the newer occupant: it reports [`Gone`].

use std::fmt;

/// Identifies one registered source (a connection, a listener, a datagram
/// port...) inside one [`Reactor`](crate::Reactor).
///
/// Ids are cheap to copy and safe to keep: once the thing they named is gone,
/// every operation through them returns [`Gone`].
///
/// ```
/// use twistor_reactor::ConnId;
/// let id = ConnId::from_token(mio::Token(5 | (2 << 32)));
/// assert_eq!((id.index(), id.generation()), (5, 2));
/// assert_eq!(id.token(), mio::Token(5 | (2 << 32)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    gen: u32,
}

impl ConnId {
    pub(crate) fn new(index: usize, gen: u32) -> ConnId {
        ConnId {
            index: index as u32,
            gen,
        }
    }

    /// The slab index of the slot.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The slot's generation when this id was issued.
    pub fn generation(self) -> u32 {
        self.gen
    }

    /// The mio token to register this id's source with. It carries the
    /// generation, so an event for a previous occupant of the slot is
    /// recognised and ignored.
    pub fn token(self) -> mio::Token {
        mio::Token(((self.gen as usize) << 32) | self.index as usize)
    }

    /// The id a mio token names (the inverse of [`ConnId::token`]).
    pub fn from_token(t: mio::Token) -> ConnId {
        ConnId {
            index: (t.0 & 0xffff_ffff) as u32,
            gen: (t.0 >> 32) as u32,
        }
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.gen)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The error for an id whose connection (or timer, or source) no longer
/// exists. Harmless by design: a late message to a closed connection is
/// simply reported, never delivered to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection is gone")
    }
}

impl std::error::Error for Gone {}

/// Why [`Reactor::call_on`](crate::Reactor::call_on) (and `write_to`,
/// `close`) could not queue its work.
///
/// ```
/// use twistor_reactor::{CallError, ConnId, Gone, Reactor};
/// let mut r = Reactor::new().unwrap();
/// let nobody = ConnId::from_token(mio::Token(3));
/// let e = r.close(nobody).unwrap_err();
/// assert_eq!(e, CallError::Gone);
/// assert_eq!(e, Gone); // a stale id is the familiar Gone
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The id is stale: what it named has ended.
    Gone,
    /// The id names a live source that runs no stream protocol (a
    /// listener, a datagram port, a connection attempt, a helper): there
    /// is nothing to write to, close or call.
    NotAConnection,
}

impl From<Gone> for CallError {
    fn from(_: Gone) -> CallError {
        CallError::Gone
    }
}

impl PartialEq<Gone> for CallError {
    fn eq(&self, _: &Gone) -> bool {
        *self == CallError::Gone
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Gone => fmt::Display::fmt(&Gone, f),
            CallError::NotAConnection => f.write_str("the id names a listener or a port, not a connection"),
        }
    }
}

impl std::error::Error for CallError {}
