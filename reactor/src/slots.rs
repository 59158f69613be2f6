//! The slot table: every registered handler lives in a slab slot and is
//! named by a [`ConnId`], the slot's index and generation.
//!
//! **The generation rule**, the one thing that makes ids safe to keep: a
//! slot's generation is bumped every time the slot is freed, and every
//! lookup compares it with the id's. An id that outlived its handler names
//! a generation no slot has any more, so it reaches nothing (it reports
//! [`Gone`](crate::Gone)), never the slot's next occupant. Every lookup
//! below goes through [`Slots::live`], which applies the rule.
//!
//! A handler is taken out of its slot while it runs (the slot stays,
//! reserved, so its id stays live). Work addressed to it meanwhile is held
//! here, in one list for the whole table, and handed back when the handler
//! returns to its slot: an idle slot carries no list of its own.

use slab::Slab;

use crate::{ConnId, Handler, ProtocolCall, Ready};

/// A slot's `pos` when it is not on the dispatch list being built.
const UNLISTED: u32 = u32::MAX;

/// Work for a handler: readiness, or a closure for its protocol.
pub(crate) enum Pending {
    Ready(Ready),
    Call(ProtocolCall),
}

struct Slot {
    gen: u32,
    /// Where this slot stands in the dispatch list being built, or
    /// [`UNLISTED`] (merges readiness for one id into one dispatch).
    pos: u32,
    /// `None` while the handler runs (or before `insert_with` fills it).
    handler: Option<Box<dyn Handler>>,
    /// [`Reactor::remove`](crate::Reactor::remove) was called while the
    /// handler was out of its slot: it is dropped when it comes back.
    doomed: bool,
    /// Work for this slot waits in [`Slots::held`].
    held: bool,
    /// The handler runs a protocol (`call_on` can reach it): its
    /// [`Handler::has_protocol`], noted each time it is placed.
    protocol: bool,
}

/// What [`Slots::take`] found.
pub(crate) enum Taken {
    /// No live handler has this id (stale, or removed).
    Stale,
    /// The handler is running (out of its slot).
    Running,
    /// The handler, now out of its slot.
    Handler(Box<dyn Handler>),
}

/// What became of a handler given back with [`Slots::put_back`].
pub(crate) enum Returned {
    /// In its slot again; `held`: work was held for it meanwhile (take it
    /// with [`Slots::take_held`]).
    Placed { held: bool },
    /// Removed while it ran: free its slot once it has been told.
    Doomed(Box<dyn Handler>),
    /// Its slot went while it ran (the table was cleared); drop it.
    Orphan(Box<dyn Handler>),
}

#[derive(Default)]
pub(crate) struct Slots {
    slab: Slab<Slot>,
    /// The generation of each slot, kept while the slot is vacant.
    gens: Vec<u32>,
    /// Work that arrived while its handler was out of its slot, in order.
    held: Vec<(ConnId, Pending)>,
}

impl Slots {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// The slot `id` names, if the generation rule says it is still that one.
    fn live(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.slab.get_mut(id.index()).filter(|s| s.gen == id.generation())
    }

    /// Reserve a slot for a handler that is being built: its id is live,
    /// and work sent to it is held until [`put_back`](Slots::put_back).
    pub(crate) fn reserve(&mut self) -> ConnId {
        let key = self.slab.vacant_key();
        if key >= self.gens.len() {
            self.gens.resize(key + 1, 0);
        }
        let gen = self.gens[key];
        self.slab.insert(Slot {
            gen,
            pos: UNLISTED,
            handler: None,
            doomed: false,
            held: false,
            // Not known until the handler is first placed; until then,
            // calls are queued (and dropped later if it has no protocol).
            protocol: true,
        });
        ConnId::new(key, gen)
    }

    /// Free `id`'s slot (bumping its generation) and drop the work held
    /// for it.
    pub(crate) fn free(&mut self, id: ConnId) {
        let Some(slot) = self.live(id) else {
            return;
        };
        let held = slot.held;
        self.slab.remove(id.index());
        self.gens[id.index()] = self.gens[id.index()].wrapping_add(1);
        if held {
            self.held.retain(|(i, _)| *i != id);
        }
    }

    /// Whether `id` names a live handler (not removed).
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        matches!(self.slab.get(id.index()), Some(s) if s.gen == id.generation() && !s.doomed)
    }

    /// Whether `id` names a live handler that runs a protocol.
    pub(crate) fn has_protocol(&self, id: ConnId) -> bool {
        matches!(self.slab.get(id.index()), Some(s) if s.gen == id.generation() && s.protocol)
    }

    /// Take `id`'s handler out of its slot to run it.
    pub(crate) fn take(&mut self, id: ConnId) -> Taken {
        match self.live(id) {
            Some(slot) if !slot.doomed => match slot.handler.take() {
                Some(h) => Taken::Handler(h),
                None => Taken::Running,
            },
            _ => Taken::Stale,
        }
    }

    /// Hold `work` for `id`, which is running; it is handed back by
    /// [`put_back`](Slots::put_back).
    pub(crate) fn hold(&mut self, id: ConnId, work: Pending) {
        if let Some(slot) = self.live(id) {
            slot.held = true;
            self.held.push((id, work));
        }
    }

    /// Mark `id` for removal. Returns true if its handler is out of its
    /// slot (running): it is dropped when it comes back.
    pub(crate) fn doom(&mut self, id: ConnId) -> bool {
        match self.live(id) {
            Some(slot) => {
                slot.doomed = true;
                slot.handler.is_none()
            }
            None => false,
        }
    }

    /// Give a handler back to its slot after it ran (or was built).
    pub(crate) fn put_back(&mut self, id: ConnId, h: Box<dyn Handler>) -> Returned {
        let Some(slot) = self.live(id) else {
            return Returned::Orphan(h);
        };
        if slot.doomed {
            return Returned::Doomed(h);
        }
        slot.protocol = h.has_protocol();
        slot.handler = Some(h);
        Returned::Placed {
            held: std::mem::take(&mut slot.held),
        }
    }

    /// The work held for `id` while it ran, in order.
    pub(crate) fn take_held(&mut self, id: ConnId) -> Vec<Pending> {
        let mut mine = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 == id {
                mine.push(self.held.remove(i).1);
            } else {
                i += 1;
            }
        }
        mine
    }

    /// Note that `id` is on the dispatch list being built, at `pos`, or
    /// return the position it already has. A stale id (its slot now holds
    /// a newer occupant) is never merged with, nor marks, the live one: it
    /// would carry the new occupant's readiness off to be dropped as stale.
    pub(crate) fn mark(&mut self, id: ConnId, pos: usize) -> Option<usize> {
        let slot = self.live(id)?;
        if slot.pos != UNLISTED {
            return Some(slot.pos as usize);
        }
        slot.pos = pos as u32;
        None
    }

    /// `id` is taken off the dispatch list (to be dispatched).
    pub(crate) fn unmark(&mut self, id: ConnId) {
        if let Some(slot) = self.live(id) {
            slot.pos = UNLISTED;
        }
    }

    /// The ids of every registered handler.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.slab.iter().map(|(k, s)| ConnId::new(k, s.gen)).collect()
    }

    /// Whether a handler that `stop()` waits for is still registered.
    pub(crate) fn any_holds_shutdown(&self) -> bool {
        self.slab
            .iter()
            .any(|(_, s)| s.handler.as_ref().is_some_and(|h| h.holds_shutdown()))
    }

    /// Drop every handler; every id issued so far turns stale.
    pub(crate) fn clear(&mut self) {
        self.slab.clear();
        for g in self.gens.iter_mut() {
            *g = g.wrapping_add(1);
        }
        self.held.clear();
    }
}
