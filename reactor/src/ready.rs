//! `Ready`: the readiness a handler is woken with.

/// Readiness delivered to a [`Handler`](crate::Handler).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// The source can be read (or has hit EOF or an error).
    pub readable: bool,
    /// The source can be written.
    pub writable: bool,
    /// The peer closed its sending side.
    pub read_closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

impl Ready {
    /// Readable only (what [`Reactor::requeue`](crate::Reactor::requeue) usually carries).
    pub const READABLE: Ready = Ready {
        readable: true,
        writable: false,
        read_closed: false,
        error: false,
    };
    /// Writable only.
    pub const WRITABLE: Ready = Ready {
        readable: false,
        writable: true,
        read_closed: false,
        error: false,
    };
    /// Nothing: a wake-up with no readiness (used to run deferred work).
    pub const NONE: Ready = Ready {
        readable: false,
        writable: false,
        read_closed: false,
        error: false,
    };

    #[inline]
    pub(crate) fn from_event(e: &mio::event::Event) -> Ready {
        Ready {
            readable: e.is_readable() || e.is_read_closed() || e.is_error(),
            writable: e.is_writable() || e.is_write_closed() || e.is_error(),
            read_closed: e.is_read_closed(),
            error: e.is_error(),
        }
    }

    #[inline]
    pub(crate) fn merge(self, o: Ready) -> Ready {
        Ready {
            readable: self.readable | o.readable,
            writable: self.writable | o.writable,
            read_closed: self.read_closed | o.read_closed,
            error: self.error | o.error,
        }
    }
}
