//! 200 short-lived children in a row leave no zombies and no leaked
//! descriptors. A test binary of its own, so that no other test opens
//! descriptors or spawns children while it counts.

use std::cell::Cell;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::Reactor;
use twistor_transports::process::{spawn_process, ProcessProtocol, ProcessTransport};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

struct Count {
    ended: Rc<Cell<usize>>,
    ok: Rc<Cell<usize>>,
}

impl ProcessProtocol for Count {
    fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
        assert_eq!(data, b"hi\n");
    }
    fn process_ended(&mut self, _: &mut dyn ProcessTransport, status: ExitStatus) {
        self.ended.set(self.ended.get() + 1);
        if status.success() {
            self.ok.set(self.ok.get() + 1);
        }
    }
}

#[test]
fn two_hundred_children_leave_no_zombies_and_no_descriptors() {
    let mut r = Reactor::new().unwrap();
    r.run_pending().unwrap();
    let before = open_fds();
    let ended = Rc::new(Cell::new(0));
    let ok = Rc::new(Cell::new(0));
    for i in 1..=200 {
        let p = Count {
            ended: ended.clone(),
            ok: ok.clone(),
        };
        let child = spawn_process(&mut r, p, "echo", ["hi"], None, None).unwrap();
        assert!(
            r.run_until(Duration::from_secs(10), |_| child.has_ended())
                .unwrap(),
            "child {i} did not end"
        );
        assert_eq!(ended.get(), i);
    }
    r.run_pending().unwrap();
    assert_eq!(ok.get(), 200);
    assert_eq!(r.handler_count(), 0, "handlers left behind");
    assert_eq!(open_fds(), before, "descriptors leaked");
    // No child of ours is left, not even a zombie.
    // SAFETY: waitpid with a null status pointer.
    let n = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    let err = std::io::Error::last_os_error();
    assert_eq!(
        (n, err.raw_os_error()),
        (-1, Some(libc::ECHILD)),
        "a child is left"
    );
}
