//! The TLS layer's lifecycle: one named state, changed in one place.
//!
//! ```text
//! Unwrapped ──start──▶ Handshaking ──handshake done──▶ Wrapped
//! Handshaking ──reactor stopping──▶ ShuttingDown
//! Wrapped ──write_eof (our close_notify)──▶ WriteClosed ──┐
//! Wrapped ──peer's close_notify delivered, app stays──▶ ReadClosed ──┤
//! Wrapped ──lose_connection, or peer's close_notify delivered──▶ ShuttingDown ◀──┘
//! any of the above ──bad input, alert, timeout, truncation, abort, limit──▶ Failed
//! any ──the transport below is gone──▶ Closed
//! ```
//!
//! What the application asks for during a callback (`lose_connection`,
//! `write_eof`, plaintext) is recorded by its transport view and applied by
//! the layer when the callback returns; every change of phase goes through
//! [`Lifecycle::goto`], which refuses (and logs) an edge the diagram above
//! does not have.

use twistor_reactor::{ConnId, Reason};

/// Where a TLS layer is in its life. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Built, not started: no ClientHello, no timer yet.
    Unwrapped,
    /// The handshake is in progress (bounded by the handshake timeout);
    /// plaintext the application writes meanwhile is held.
    Handshaking,
    /// Established, both directions open.
    Wrapped,
    /// We sent close_notify (`write_eof`); the peer may still send.
    WriteClosed,
    /// The peer's close_notify was delivered and the application stayed
    /// open: it may still write.
    ReadClosed,
    /// The transport below was asked to close after our close_notify (or a
    /// handshake abandoned because the reactor stops); bounded by the
    /// shutdown timeout.
    ShuttingDown,
    /// Failed (bad input, an alert, a timeout, truncation, an abort, a
    /// limit): nothing more is read or written, and the transport below is
    /// closing or gone.
    Failed,
    /// The transport below is gone: `connection_lost` ran.
    Closed,
}

impl Phase {
    /// Whether the diagram has an edge from `self` to `to`.
    fn allows(self, to: Phase) -> bool {
        use Phase::*;
        match (self, to) {
            (Unwrapped, Handshaking) => true,
            (Handshaking, Wrapped | ShuttingDown) => true,
            (Wrapped, WriteClosed | ReadClosed | ShuttingDown) => true,
            (WriteClosed | ReadClosed, ShuttingDown) => true,
            (Failed, Closed) => true,
            (Failed | Closed, _) => false,
            // From any phase still alive.
            (_, Failed | Closed) => true,
            _ => false,
        }
    }

    /// The application may still write (plaintext is encrypted, or held
    /// until the handshake completes).
    pub(crate) fn writable(self) -> bool {
        matches!(
            self,
            Phase::Unwrapped | Phase::Handshaking | Phase::Wrapped | Phase::ReadClosed
        )
    }

    /// Input from the peer is still read and decrypted.
    pub(crate) fn reading(self) -> bool {
        matches!(
            self,
            Phase::Unwrapped | Phase::Handshaking | Phase::Wrapped | Phase::WriteClosed
        )
    }

    /// The transport below has been asked to close, or is gone.
    pub(crate) fn closing(self) -> bool {
        matches!(self, Phase::ShuttingDown | Phase::Failed | Phase::Closed)
    }
}

/// The phase, and the reason the connection will end with. The one place
/// the phase changes.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: Phase,
    /// What `connection_lost` reports instead of what the transport below
    /// says: the application's `lose_connection_with` reason, replaced by
    /// a failure's (the first failure wins).
    reason: Option<Reason>,
}

impl Lifecycle {
    pub(crate) fn new() -> Lifecycle {
        Lifecycle {
            phase: Phase::Unwrapped,
            reason: None,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Move to `to`. An edge the diagram does not have is a bug in the
    /// layer: it is refused, logged, and the phase stays as it was.
    pub(crate) fn goto(&mut self, to: Phase, id: ConnId) -> bool {
        let from = self.phase;
        if !from.allows(to) {
            log::error!("{id}: TLS layer: refused the transition {from:?} -> {to:?}");
            debug_assert!(false, "TLS layer: illegal transition {from:?} -> {to:?}");
            return false;
        }
        log::trace!("{id}: TLS {from:?} -> {to:?}");
        self.phase = to;
        true
    }

    /// Fail with `reason`. False, and the first failure's reason kept, if
    /// the layer had already failed or is closed.
    pub(crate) fn fail(&mut self, reason: Reason, id: ConnId) -> bool {
        if matches!(self.phase, Phase::Failed | Phase::Closed) {
            return false;
        }
        log::debug!("{id}: TLS layer failed: {reason}");
        self.reason = Some(reason);
        self.goto(Phase::Failed, id)
    }

    /// The application closes with `reason` (the first one given wins; a
    /// failure replaces it).
    pub(crate) fn close_with(&mut self, reason: Reason) {
        self.reason.get_or_insert(reason);
    }

    pub(crate) fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }

    /// Fail without a reason of the layer's own (the application aborted:
    /// the transport below reports it).
    pub(crate) fn abort(&mut self, id: ConnId) {
        if !matches!(self.phase, Phase::Failed | Phase::Closed) {
            self.goto(Phase::Failed, id);
        }
    }

    /// The reason to report, once.
    pub(crate) fn take_reason(&mut self) -> Option<Reason> {
        self.reason.take()
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;
    use super::*;

    const ALL: [Phase; 8] = [
        Unwrapped,
        Handshaking,
        Wrapped,
        WriteClosed,
        ReadClosed,
        ShuttingDown,
        Failed,
        Closed,
    ];

    #[test]
    fn the_diagram_has_exactly_these_edges() {
        let edges: Vec<(Phase, Phase)> = ALL
            .iter()
            .flat_map(|&a| ALL.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a.allows(b))
            .collect();
        let expected = [
            (Unwrapped, Handshaking),
            (Unwrapped, Failed),
            (Unwrapped, Closed),
            (Handshaking, Wrapped),
            (Handshaking, ShuttingDown),
            (Handshaking, Failed),
            (Handshaking, Closed),
            (Wrapped, WriteClosed),
            (Wrapped, ReadClosed),
            (Wrapped, ShuttingDown),
            (Wrapped, Failed),
            (Wrapped, Closed),
            (WriteClosed, ShuttingDown),
            (WriteClosed, Failed),
            (WriteClosed, Closed),
            (ReadClosed, ShuttingDown),
            (ReadClosed, Failed),
            (ReadClosed, Closed),
            (ShuttingDown, Failed),
            (ShuttingDown, Closed),
            (Failed, Closed),
        ];
        assert_eq!(edges, expected);
    }

    #[test]
    fn a_failure_replaces_a_close_reason_and_closed_is_final() {
        let id = ConnId::from_token(mio::Token(0));
        let mut life = Lifecycle::new();
        assert!(life.goto(Handshaking, id));
        life.close_with(Reason::Limit("first".into()));
        life.close_with(Reason::Limit("second".into()));
        assert!(matches!(life.reason(), Some(Reason::Limit(m)) if m == "first"));
        assert!(life.fail(Reason::TimedOut, id));
        assert!(!life.fail(Reason::Aborted, id));
        assert!(matches!(life.take_reason(), Some(Reason::TimedOut)));
        assert!(life.goto(Closed, id));
        life.abort(id);
        assert_eq!(life.phase(), Closed);
    }
}
