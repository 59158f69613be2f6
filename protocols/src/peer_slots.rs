//! Connections at once per client, counted: the table behind
//! [`LimitConnections::with_max_per_peer`](crate::LimitConnections::with_max_per_peer)
//! and the Gemini server's `max_connections_per_address`. Without such a
//! cap one host that opens idle connections (a TCP connect costs it
//! nothing) holds every slot of a connection limit and shuts everyone
//! else out.
//!
//! A connection takes a slot for its peer when it is accepted and gives it
//! back when the slot is dropped, however the connection ended. Peers are
//! keyed as the rate limiter keys them ([`peer_key`](crate::ratelimit)):
//! an IPv4-mapped IPv6 address as IPv4, an IPv6 address by its /64 (one
//! host usually holds a whole /64). Only peers with a live connection are
//! tracked, so the table is bounded by the connections themselves.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

/// The IPv6 prefix that makes one peer.
const PEER_IPV6_PREFIX: u8 = 64;

/// Live connections per peer, capped.
#[derive(Debug)]
pub(crate) struct PeerSlots {
    max: usize,
    /// The knob that sets `max`, named in the warning.
    knob: &'static str,
    taken: Rc<RefCell<HashMap<IpAddr, usize>>>,
    /// Connections refused so far (for log lines that a flood cannot flood).
    refused: Cell<u64>,
}

impl PeerSlots {
    /// At most `max` connections at once per peer (at least 1); `knob`
    /// names the setting in log lines.
    pub(crate) fn new(max: usize, knob: &'static str) -> PeerSlots {
        PeerSlots {
            max: max.max(1),
            knob,
            taken: Rc::default(),
            refused: Cell::new(0),
        }
    }

    /// A slot for a connection from `ip`, or `None` if its peer holds
    /// `max` already (logged at debug level, and as a warning when the
    /// count of refusals reaches a power of two, so that a flood cannot
    /// flood the log).
    pub(crate) fn take(&self, ip: IpAddr) -> Option<PeerSlot> {
        let key = crate::ratelimit::peer_key(ip, PEER_IPV6_PREFIX);
        let mut taken = self.taken.borrow_mut();
        let n = taken.entry(key).or_insert(0);
        if *n >= self.max {
            let refused = self.refused.get() + 1;
            self.refused.set(refused);
            log::debug!(
                "{ip}: {} connections from this address already; closing",
                self.max
            );
            if refused.is_power_of_two() {
                log::warn!(
                    "closed {refused} connection(s) over {} ({}) so far; the last from {ip}",
                    self.knob,
                    self.max
                );
            }
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            key,
            taken: self.taken.clone(),
        })
    }

    /// Peers with a live connection.
    pub(crate) fn tracked(&self) -> usize {
        self.taken.borrow().len()
    }
}

/// One connection's hold on its peer's count; given back on drop.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    key: IpAddr,
    taken: Rc<RefCell<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut taken = self.taken.borrow_mut();
        if let Some(n) = taken.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                taken.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let slots = PeerSlots::new(2, "test");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let s1 = slots.take(a).unwrap();
        let s2 = slots.take(a).unwrap();
        assert!(slots.take(a).is_none());
        assert!(slots.take("192.0.2.2".parse().unwrap()).is_some());
        drop(s1);
        let s3 = slots.take(a).unwrap();
        drop((s2, s3));
        assert_eq!(slots.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let slots = PeerSlots::new(1, "test");
        let _s = slots.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(slots.take("2001:db8:1:2::ffff".parse().unwrap()).is_none());
        assert!(slots.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = slots.take("192.0.2.9".parse().unwrap()).unwrap();
        assert!(slots.take("::ffff:192.0.2.9".parse().unwrap()).is_none());
    }
}
