//! A stream connection's lifecycle: one named phase, changed only by
//! [`Phase::set`], which refuses (and logs) an illegal transition.
//!
//! ```text
//! from                          to            when
//! New                           Open          connection_made is about to run
//! Open                          ReadClosed    the peer's EOF, kept open by the protocol
//! Open                          WriteClosing  write_eof
//! WriteClosing                  WriteClosed   flushed: FIN sent
//! Open, ReadClosed,             Closing       lose_connection; the peer's EOF (not kept
//!   WriteClosing, WriteClosed                 open, or after write_eof); write_eof after
//!                                             the peer's EOF. Close once flushed, within
//!                                             the close deadline
//! any but New, Aborting, Closed Aborting      abort_connection, the hard cap
//! any but Closed                Closed        closed: connection_lost, the lost hook
//! ```
//!
//! Flow control (`pause_writing` sent), the protocol's pause of reading
//! and a pending protocol upgrade are not phases: they can hold in any
//! live phase, and live beside it in the connection.

use crate::{ConnId, DelayedCall, Reason};

/// Where a stream connection is in its life. See the [module docs](self).
pub(super) enum Phase {
    /// Registered; `connection_made` has not run yet.
    New,
    /// Both directions open.
    Open,
    /// The peer sent EOF and the protocol kept the connection open: we
    /// may still write, nothing more will be read.
    ReadClosed,
    /// `write_eof` was asked: our side half-closes once the buffer is
    /// flushed. Reading goes on.
    WriteClosing,
    /// Our side is half-closed (FIN sent); reading goes on.
    WriteClosed,
    /// Close once the buffer is flushed. `reason` is what
    /// `connection_lost` is told (`None`: a clean close); `writes` is
    /// whether writes are still taken (not after `write_eof`); `timer` is
    /// the close deadline, armed while bytes wait to be flushed.
    Closing {
        reason: Option<Box<Reason>>,
        writes: bool,
        timer: Option<DelayedCall>,
    },
    /// Close at once, discarding the buffer, with a reset where the
    /// transport can send one (`None`: [`Reason::Aborted`]). Asked for
    /// during a callback (`abort_connection`, the hard cap), so only
    /// after `connection_made`.
    Aborting(Option<Box<Reason>>),
    /// Ended: `connection_lost` has run (if `connection_made` had).
    Closed,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::Open => "open",
            Phase::ReadClosed => "read-closed",
            Phase::WriteClosing => "write-closing",
            Phase::WriteClosed => "write-closed",
            Phase::Closing { .. } => "closing",
            Phase::Aborting(_) => "aborting",
            Phase::Closed => "closed",
        }
    }

    /// The one place the phase changes. Returns false, leaving the phase
    /// as it was, for a transition the lifecycle does not have: that
    /// would be a bug in the stream machinery, so it is logged loudly.
    pub(super) fn set(&mut self, id: ConnId, next: Phase) -> bool {
        use Phase::*;
        let legal = matches!(
            (&*self, &next),
            (New, Open)
                | (Open, ReadClosed | WriteClosing)
                | (WriteClosing, WriteClosed)
                | (Open | ReadClosed | WriteClosing | WriteClosed, Closing { .. })
                | (
                    Open | ReadClosed | WriteClosing | WriteClosed | Closing { .. },
                    Aborting(_)
                )
                | (
                    New | Open | ReadClosed | WriteClosing | WriteClosed | Closing { .. } | Aborting(_),
                    Closed
                )
        );
        if !legal {
            log::error!(
                "{id}: illegal stream transition {} -> {}: refused",
                self.name(),
                next.name()
            );
            debug_assert!(
                legal,
                "{id}: illegal stream transition {} -> {}",
                self.name(),
                next.name()
            );
            return false;
        }
        log::trace!("{id}: {} -> {}", self.name(), next.name());
        *self = next;
        true
    }

    /// `connection_made` has run.
    #[inline]
    pub(super) fn is_made(&self) -> bool {
        !matches!(self, Phase::New)
    }

    /// Ended, or ending at once.
    #[inline]
    pub(super) fn is_ending(&self) -> bool {
        matches!(self, Phase::Aborting(_) | Phase::Closed)
    }

    /// Closing, aborting or closed (`Transport::is_closing`).
    #[inline]
    pub(super) fn is_closing(&self) -> bool {
        matches!(self, Phase::Closing { .. } | Phase::Aborting(_) | Phase::Closed)
    }

    /// Whether bytes are still read from the peer.
    #[inline]
    pub(super) fn reads(&self) -> bool {
        matches!(self, Phase::Open | Phase::WriteClosing | Phase::WriteClosed)
    }

    /// Whether writes are still taken.
    #[inline]
    pub(super) fn writes(&self) -> bool {
        matches!(
            self,
            Phase::Open | Phase::ReadClosed | Phase::Closing { writes: true, .. }
        )
    }

    /// The phase a graceful close (`lose_connection`, or the peer's EOF
    /// that is not kept open) moves to, or `None` if the connection is
    /// already closing.
    pub(super) fn closing(&self, reason: Option<Reason>) -> Option<Phase> {
        let writes = match self {
            Phase::Open | Phase::ReadClosed => true,
            Phase::WriteClosing | Phase::WriteClosed => false,
            _ => return None,
        };
        Some(Phase::Closing {
            reason: reason.map(Box::new),
            writes,
            timer: None,
        })
    }
}
