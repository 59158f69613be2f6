//! Connections at once per client address: without a cap, one host that
//! opens idle connections (a TCP connect costs it nothing) holds every
//! slot of [`max_connections`](super::ServerOptions::max_connections) and
//! shuts everyone else out.
//!
//! A connection takes a slot for its address when the listener accepts it
//! (before any TLS work) and gives it back when its protocol is dropped,
//! however it ended (a failed handshake included). Addresses are counted
//! as the rate limiter keys them: an IPv4-mapped IPv6 address as IPv4, an
//! IPv6 address by its /64 (one host usually holds a whole /64). Only
//! addresses with a live connection are tracked, so the table is bounded
//! by the connections themselves.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;

/// Live connections per client address, capped.
#[derive(Debug)]
pub(crate) struct AddressSlots {
    max: usize,
    taken: Rc<RefCell<HashMap<IpAddr, usize>>>,
    /// Connections refused so far (for log lines that a flood cannot flood).
    refused: Cell<u64>,
}

impl AddressSlots {
    /// At most `max` connections at once per address (at least 1).
    pub(crate) fn new(max: usize) -> AddressSlots {
        AddressSlots {
            max: max.max(1),
            taken: Rc::default(),
            refused: Cell::new(0),
        }
    }

    /// A slot for a connection from `ip`, or `None` if the address holds
    /// `max` already (logged at debug level, and as a warning when the
    /// count of refusals reaches a power of two).
    pub(crate) fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let key = key(ip);
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
                    "closed {refused} connection(s) over max_connections_per_address ({}) so far; the last from {ip}",
                    self.max
                );
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            key,
            taken: self.taken.clone(),
        })
    }

    /// Addresses with a live connection.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.taken.borrow().len()
    }
}

/// One connection's hold on its address's count; given back on drop.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    key: IpAddr,
    taken: Rc<RefCell<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressSlot {
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

/// The address counted for `ip`.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let slots = AddressSlots::new(2);
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
        let slots = AddressSlots::new(1);
        let _s = slots.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(slots.take("2001:db8:1:2::ffff".parse().unwrap()).is_none());
        assert!(slots.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = slots.take("192.0.2.9".parse().unwrap()).unwrap();
        assert!(slots.take("::ffff:192.0.2.9".parse().unwrap()).is_none());
    }
}
