//! `Handler`: a registered source's event handler, the reactor's raw
//! extension API (Twisted's `FileDescriptor`, libuv's `uv_poll_t`).

use crate::{ConnId, ProtocolCall, Reactor, Ready};

/// A registered source's event handler: the reactor's extension API.
///
/// The transports crate builds TCP, UDP, Unix sockets and pipes on nothing
/// but this trait, so a user can add a transport of their own (a serial
/// port, an inotify descriptor) the same way, as with Twisted's
/// `FileDescriptor` or libuv's `uv_poll_t`. Register the mio source with
/// `id.token()` inside [`Reactor::insert_with`]; readiness for that token
/// arrives at [`ready`](Handler::ready).
///
/// A handler ends itself with [`Reactor::remove`]; it is dropped (closing
/// its source) once its callback returns, after
/// [`removed`](Handler::removed).
///
/// ```
/// use std::io::Read;
/// use mio::{Interest, unix::pipe};
/// use twistor_reactor::{ConnId, Handler, Reactor, Ready};
///
/// /// Reads a pipe and stops the reactor at EOF.
/// struct Drain(pipe::Receiver, usize);
/// impl Handler for Drain {
///     fn ready(&mut self, r: &mut Reactor, id: ConnId, _: Ready) {
///         let mut buf = [0u8; 64];
///         loop {
///             match self.0.read(&mut buf) {
///                 Ok(0) => { r.remove(id); r.stop(); return; }
///                 Ok(n) => self.1 += n,
///                 Err(_) => return, // WouldBlock: wait for the next edge
///             }
///         }
///     }
///     fn shutdown(&mut self, r: &mut Reactor, id: ConnId) { r.remove(id) }
/// }
///
/// let mut r = Reactor::new().unwrap();
/// let (tx, mut rx) = pipe::new().unwrap();
/// r.insert_with(|r, id| {
///     r.registry().register(&mut rx, id.token(), Interest::READABLE)?;
///     Ok(Box::new(Drain(rx, 0)))
/// }).unwrap();
/// std::thread::spawn(move || { use std::io::Write; let mut tx = tx; tx.write_all(b"bye").unwrap(); });
/// r.run().unwrap();
/// ```
pub trait Handler: 'static {
    /// The source is ready (or the handler was requeued / woken).
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready);

    /// Run a closure against this handler's protocol (see
    /// [`Reactor::call_on`]). Handlers without a protocol drop it.
    fn call(&mut self, r: &mut Reactor, id: ConnId, call: ProtocolCall) {
        let _ = (r, id, call);
        log::debug!("{id}: call_on delivered to a handler without a protocol; dropped");
    }

    /// The reactor is stopping: stop accepting, or start a graceful close.
    /// Call [`Reactor::remove`] once done (a listener at once, a connection
    /// after its buffer is flushed).
    fn shutdown(&mut self, r: &mut Reactor, id: ConnId);

    /// The shutdown deadline passed: close now. The default removes the
    /// handler, dropping (and so closing) its source.
    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        r.remove(id);
    }

    /// The handler is leaving the reactor through [`Reactor::remove`]:
    /// called once, just before it is dropped, whoever asked (another
    /// connection, a timer, or the handler itself during its callback).
    /// A handler that holds a protocol ends it here if it has not ended
    /// already (a stream reports `connection_lost`, reason aborted, and
    /// runs its lost hook), so removing a connection from outside is
    /// never a silent drop. The default does nothing.
    fn removed(&mut self, r: &mut Reactor, id: ConnId) {
        let _ = (r, id);
    }

    /// Whether this handler runs a protocol that [`Reactor::call_on`] can
    /// reach. The default, `false`, suits a listener or a helper; a
    /// handler that overrides [`call`](Handler::call) says `true`. Asked
    /// each time the handler goes back to its slot.
    fn has_protocol(&self) -> bool {
        false
    }

    /// Whether `stop()` waits for this handler to go (connections: yes;
    /// listeners and helpers: they go at once anyway).
    fn holds_shutdown(&self) -> bool {
        true
    }
}
