//! A child's three pipes as streams ([`open_stream`]), the adapter that turns
//! their events into [`ProcessProtocol`] callbacks, and the transport view
//! the protocol sees.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{ChildStderr, ChildStdin, ChildStdout, ExitStatus};
use std::rc::Rc;

use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};
use twistor_reactor::{
    catch_panic, open_stream, Address, ConnId, Protocol, Reactor, Reason, StreamIo, StreamOptions, Transport,
};

use super::child::Child;
use super::{ProcessOptions, ProcessProtocol, ProcessTransport};

/// Which of the child's pipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    In = 0,
    Out = 1,
    Err = 2,
}

/// The protocol and what is known about the child, shared by the three pipe
/// streams and the reaper. Only ever borrowed from a top-level reactor
/// dispatch, so borrows never nest.
pub(super) struct Core {
    pub(super) proto: Box<dyn ProcessProtocol>,
    pub(super) info: Info,
}

pub(super) struct Info {
    pub(super) child: Rc<Child>,
    /// Stream ids of the pipes still open; shared with the [`Process`]
    /// handle, which must reach them while the protocol is busy (a handle
    /// used from inside a callback cannot borrow the [`Core`]).
    ///
    /// [`Process`]: super::Process
    pub(super) ids: Rc<Cell<[Option<ConnId>; 3]>>,
    pub(super) status: Option<ExitStatus>,
    made: bool,
    pub(super) ended: bool,
    /// A callback panicked: no more callbacks.
    poisoned: bool,
}

impl Info {
    pub(super) fn new(child: Rc<Child>) -> Info {
        Info {
            child,
            ids: Rc::new(Cell::new([None; 3])),
            status: None,
            made: false,
            ended: false,
            poisoned: false,
        }
    }
}

// ----- the pipes as byte streams ---------------------------------------------

/// Our end of the child's stdin.
struct PipeIn {
    tx: Option<Sender>,
    pid: u32,
}

/// Our end of the child's stdout or stderr.
struct PipeOut {
    rx: Receiver,
    pid: u32,
}

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "wrong direction for this pipe")
}

impl StreamIo for PipeIn {
    /// Nothing is ever read from stdin; a readiness event on it means the
    /// child closed its end, which shows up here as EOF.
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        let Some(tx) = &self.tx else { return Ok(0) };
        let mut p = libc::pollfd {
            fd: tx.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tx {
            Some(tx) => tx.write_vectored(bufs),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        // Closing our end is the only way to give the child EOF.
        self.tx = None;
        Ok(())
    }
    fn register(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match &mut self.tx {
            Some(tx) => reg.register(tx, token, interest),
            None => Ok(()),
        }
    }
    fn reregister(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match &mut self.tx {
            Some(tx) => reg.reregister(tx, token, interest),
            None => Ok(()),
        }
    }
    fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        match &mut self.tx {
            Some(tx) => reg.deregister(tx),
            None => Ok(()),
        }
    }
    fn peer(&self) -> Address {
        Address::Process(self.pid)
    }
    fn host(&self) -> Address {
        Address::Unknown
    }
}

impl StreamIo for PipeOut {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rx.read(buf)
    }
    fn write_vectored(&mut self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(unsupported())
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn register(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        reg.register(&mut self.rx, token, interest)
    }
    fn reregister(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        reg.reregister(&mut self.rx, token, interest)
    }
    fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(&mut self.rx)
    }
    fn peer(&self) -> Address {
        Address::Process(self.pid)
    }
    fn host(&self) -> Address {
        Address::Unknown
    }
}

/// Open the three pipe streams and record their ids.
pub(super) fn open(
    r: &mut Reactor,
    core: &Rc<RefCell<Core>>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    opts: &ProcessOptions,
) -> io::Result<()> {
    let (pid, shared_ids) = {
        let c = core.borrow();
        (c.info.child.pid(), c.info.ids.clone())
    };
    let tx = Sender::from(stdin);
    tx.set_nonblocking(true)?;
    let out = Receiver::from(stdout);
    out.set_nonblocking(true)?;
    let err = Receiver::from(stderr);
    err.set_nonblocking(true)?;
    let adapter = |which| {
        Box::new(PipeProto {
            which,
            core: core.clone(),
            ids: shared_ids.clone(),
        })
    };
    let in_opts = StreamOptions {
        high_water: opts.stdin_high_water,
        low_water: opts.stdin_low_water,
        ..StreamOptions::default()
    };
    let mut ids = [None; 3];
    let open_all = || -> io::Result<()> {
        ids[0] = Some(open_stream(
            r,
            PipeIn { tx: Some(tx), pid },
            adapter(Which::In),
            in_opts,
        )?);
        let o = StreamOptions::default();
        ids[1] = Some(open_stream(r, PipeOut { rx: out, pid }, adapter(Which::Out), o)?);
        let o = StreamOptions::default();
        ids[2] = Some(open_stream(r, PipeOut { rx: err, pid }, adapter(Which::Err), o)?);
        Ok(())
    };
    let res = open_all();
    if res.is_err() {
        // Undo; the caller kills and reaps the child.
        for id in ids.into_iter().flatten() {
            r.remove(id);
        }
    } else {
        shared_ids.set(ids);
    }
    res
}

// ----- delivering callbacks --------------------------------------------------

/// Where a callback runs: inside one pipe's stream callback (that pipe is
/// reachable directly), or from the reactor (the reaper).
enum Ctx<'a> {
    Pipe(Which, &'a mut dyn Transport),
    Reactor(&'a mut Reactor),
}

/// The transport a [`ProcessProtocol`] sees.
struct View<'a, 'b> {
    info: &'a mut Info,
    ctx: Ctx<'b>,
}

impl View<'_, '_> {
    /// Apply `f` to pipe `which`: now if its event is being delivered,
    /// otherwise right after this callback. Nothing if the pipe is closed.
    fn on_pipe(&mut self, which: Which, f: impl FnOnce(&mut dyn Transport) + 'static) {
        match &mut self.ctx {
            Ctx::Pipe(w, t) if *w == which => f(&mut **t),
            _ => {
                if let Some(id) = self.info.ids.get()[which as usize] {
                    let _ = self.reactor().call_on(id, move |_, t| f(t));
                }
            }
        }
    }
}

impl ProcessTransport for View<'_, '_> {
    fn write(&mut self, data: &[u8]) {
        match &mut self.ctx {
            Ctx::Pipe(Which::In, t) => t.write(data),
            _ => {
                let data = data.to_vec();
                self.on_pipe(Which::In, move |t| t.write(&data));
            }
        }
    }

    fn close_stdin(&mut self) {
        self.on_pipe(Which::In, |t| t.lose_connection());
    }

    fn close_stdout(&mut self) {
        self.on_pipe(Which::Out, |t| t.lose_connection());
    }

    fn close_stderr(&mut self) {
        self.on_pipe(Which::Err, |t| t.lose_connection());
    }

    fn signal_process(&mut self, sig: i32) -> io::Result<()> {
        self.info.child.signal(sig)
    }

    fn pid(&self) -> u32 {
        self.info.child.pid()
    }

    fn status(&self) -> Option<ExitStatus> {
        self.info.status
    }

    fn pause_reading(&mut self) {
        self.on_pipe(Which::Out, |t| t.pause_reading());
        self.on_pipe(Which::Err, |t| t.pause_reading());
    }

    fn resume_reading(&mut self) {
        self.on_pipe(Which::Out, |t| t.resume_reading());
        self.on_pipe(Which::Err, |t| t.resume_reading());
    }

    fn reactor(&mut self) -> &mut Reactor {
        match &mut self.ctx {
            Ctx::Pipe(_, t) => t.reactor(),
            Ctx::Reactor(r) => r,
        }
    }
}

/// Run `f` on the protocol (after `connection_made`, if that is still
/// due), then `process_ended` if this was the last thing it waited for.
fn deliver(
    core: &Rc<RefCell<Core>>,
    ctx: Ctx<'_>,
    f: impl FnOnce(&mut dyn ProcessProtocol, &mut dyn ProcessTransport),
) {
    let Ok(mut guard) = core.try_borrow_mut() else {
        log::error!("process protocol re-entered; callback dropped");
        return;
    };
    let Core { proto, info } = &mut *guard;
    if info.poisoned {
        return;
    }
    let mut view = View { info, ctx };
    let pid = view.info.child.pid();
    let res = catch_panic(format_args!("pid {pid}: process protocol"), || {
        if !view.info.made {
            view.info.made = true;
            proto.connection_made(&mut view);
        }
        f(&mut **proto, &mut view);
        if let Some(status) = view.info.status {
            if !view.info.ended && view.info.ids.get().iter().all(Option::is_none) {
                view.info.ended = true;
                proto.process_ended(&mut view, status);
            }
        }
    });
    if res.is_err() {
        log::error!("pid {pid}: closing the pipes of the panicked process protocol");
        view.info.poisoned = true;
        view.info.ended = view.info.status.is_some();
        for w in [Which::In, Which::Out, Which::Err] {
            view.on_pipe(w, |t| t.abort_connection());
        }
    }
}

/// Run `f` against the protocol from the reactor (a `Process::call`).
pub(super) fn call(
    r: &mut Reactor,
    core: &Rc<RefCell<Core>>,
    f: impl FnOnce(&mut dyn ProcessProtocol, &mut dyn ProcessTransport),
) {
    if core.try_borrow().is_ok_and(|c| c.info.ended) {
        return;
    }
    deliver(core, Ctx::Reactor(r), f);
}

/// The reaper collected the exit status.
pub(super) fn exited(r: &mut Reactor, core: &Rc<RefCell<Core>>, status: ExitStatus) {
    if let Ok(mut c) = core.try_borrow_mut() {
        c.info.status = Some(status);
        if c.info.poisoned {
            c.info.ended = true;
        }
    }
    deliver(core, Ctx::Reactor(r), |p, t| p.process_exited(t, status));
}

/// The stream protocol on each pipe: forwards to the process protocol.
struct PipeProto {
    which: Which,
    core: Rc<RefCell<Core>>,
    /// The pipes' ids (the cell in [`Info`]), cleared without a borrow.
    ids: Rc<Cell<[Option<ConnId>; 3]>>,
}

impl Protocol for PipeProto {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        deliver(&self.core, Ctx::Pipe(self.which, t), |_, _| {});
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        match self.which {
            Which::Out => deliver(&self.core, Ctx::Pipe(Which::Out, t), |p, v| {
                p.out_received(v, data)
            }),
            Which::Err => deliver(&self.core, Ctx::Pipe(Which::Err, t), |p, v| {
                p.err_received(v, data)
            }),
            Which::In => {}
        }
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        let which = self.which;
        let mut ids = self.ids.get();
        ids[which as usize] = None;
        self.ids.set(ids);
        if !reason.is_clean() {
            log::debug!("{}: {which:?} pipe: {reason}", t.peer());
        }
        deliver(&self.core, Ctx::Pipe(which, t), |p, v| match which {
            Which::In => p.in_connection_lost(v),
            Which::Out => p.out_connection_lost(v),
            Which::Err => p.err_connection_lost(v),
        });
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        deliver(&self.core, Ctx::Pipe(self.which, t), |p, v| p.pause_writing(v));
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        deliver(&self.core, Ctx::Pipe(self.which, t), |p, v| p.resume_writing(v));
    }
}
