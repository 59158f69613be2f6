//! Session resumption: the defaults and the rustls pieces behind the
//! builders' knobs (a server's tickets and session cache, a client's
//! session store).
//!
//! A client that comes back (Gemini opens a connection for every request)
//! can skip the certificate, its signature and the key check: the server
//! recognises a session it made before, either from a *ticket* it gave the
//! client (the session's secrets sealed under a key only the server has,
//! stateless) or from a *session id* it keeps in a bounded cache
//! (stateful). Both are on by default for servers; clients keep what
//! servers give them. What each costs in forward secrecy is written on
//! [`ServerConfigBuilder::tickets`](super::ServerConfigBuilder::tickets).

use std::io;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
};

/// Sessions a server keeps in memory for clients that resume by session
/// id (TLS 1.2 clients without tickets; every client when tickets are
/// off): 1,024. An entry is a few hundred bytes, up to about 2 KB when the
/// client sent a certificate (Gemini's identities), so the cache stays
/// under about 2 MB; past the bound the oldest entries go first. rustls's
/// own default is 256; four times that lets a busy capsule's TLS 1.2
/// visitors resume between evictions, and each TLS 1.3 connection without
/// tickets stores two entries (rustls sends two tickets).
pub const DEFAULT_SESSION_CACHE: usize = 1024;

/// Server names a client keeps sessions for (each with its few most
/// recent tickets): 256, rustls's default.
pub const DEFAULT_CLIENT_SESSION_CACHE: usize = 256;

/// The stateful session store of a server: a bounded cache, or none.
pub(crate) fn server_sessions(size: usize) -> Arc<dyn StoresServerSessions> {
    if size == 0 {
        Arc::new(NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(size)
    }
}

/// A server's ticketer: ring's rotating one (ChaCha20-Poly1305; a new
/// key every 6 hours, the previous one still accepted for 6 more), or one
/// that issues no tickets.
pub(crate) fn ticketer(on: bool) -> io::Result<Option<Arc<dyn ProducesTickets>>> {
    if !on {
        return Ok(None);
    }
    rustls::crypto::ring::Ticketer::new()
        .map(Some)
        .map_err(|e| io::Error::other(format!("cannot make a session ticket key: {e}")))
}

/// A client's session store for `size` server names (none for 0).
pub(crate) fn client_resumption(size: usize) -> Resumption {
    if size == 0 {
        Resumption::disabled()
    } else {
        Resumption::in_memory_sessions(size)
    }
}
