//! A stream's pending output, and the reactor-wide pool of drained
//! chunks every write buffer borrows from.
//!
//! Output waits in a queue of chunks: small writes are appended to the
//! last chunk, so a callback's writes usually make one chunk and leave in
//! one `write`; several chunks leave in one `writev`. The queue and its
//! chunks exist only while bytes wait. When the buffer drains, they go
//! back to the reactor's [`WritePool`] (the queue keeping its first
//! chunk, emptied, so the next write finds both ready in one step), and
//! the next write anywhere takes them from there: a steady echo allocates
//! nothing, yet an idle connection holds no output capacity at all (one
//! pointer). The pool is bounded in bytes ([`DEFAULT_WRITE_POOL`], a knob
//! on the reactor), like the shared read buffer it mirrors; what would not
//! fit is freed.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use crate::StreamIo;

/// The size a chunk grows to before a new one is started.
pub(crate) const CHUNK: usize = 64 * 1024;
/// The least capacity of a chunk made fresh (small writes reuse it).
const MIN_CHUNK: usize = 4 * 1024;
/// The most slices one vectored write is given.
const MAX_IOV: usize = 64;

/// Default bound of the reactor's pool of drained write chunks, in bytes
/// (see [`Reactor::set_write_pool_limit`](crate::Reactor::set_write_pool_limit)).
pub const DEFAULT_WRITE_POOL: usize = 1024 * 1024;

/// The chunks of one buffer, in order. Borrowed from the pool while the
/// buffer holds bytes; in the pool it holds at most one chunk, empty.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already written.
    head: usize,
    /// Bytes waiting, in all chunks.
    len: usize,
}

impl Queue {
    /// What keeping this (drained) queue in the pool costs: itself, its
    /// slots and the one chunk it kept.
    #[inline]
    fn cost(&self) -> usize {
        std::mem::size_of::<Queue>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.chunks.front().map_or(0, Vec::capacity)
    }
}

/// A stream's pending output. Empty, it is one null pointer.
#[derive(Default)]
pub(crate) struct WriteBuf {
    q: Option<Box<Queue>>,
}

impl WriteBuf {
    /// Bytes waiting to be written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.q.as_ref().map_or(0, |q| q.len)
    }

    /// Queue `data`.
    #[inline]
    pub(crate) fn push(&mut self, pool: &mut WritePool, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let q = self.q.get_or_insert_with(|| pool.take_queue());
        q.len += data.len();
        if let Some(last) = q.chunks.back_mut() {
            if last.len() + data.len() <= CHUNK.max(last.capacity()) {
                last.extend_from_slice(data);
                return;
            }
        }
        let mut v = pool.take_chunk(data.len());
        v.extend_from_slice(data);
        q.chunks.push_back(v);
    }

    /// One (vectored) write of what is waiting; what was written is
    /// consumed, and drained chunks go back to the pool.
    pub(crate) fn write_to<S: StreamIo>(&mut self, io: &mut S, pool: &mut WritePool) -> io::Result<usize> {
        let Some(q) = self.q.as_mut() else {
            return Ok(0);
        };
        let written = if q.chunks.len() == 1 {
            // The usual case (a callback's writes coalesce into one chunk):
            // skip building the 64-slot iovec array.
            io.write_vectored(&[IoSlice::new(&q.chunks[0][q.head..])])?
        } else {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, c) in q.chunks.iter().take(MAX_IOV).enumerate() {
                iov[i] = IoSlice::new(if i == 0 { &c[q.head..] } else { c });
                n += 1;
            }
            io.write_vectored(&iov[..n])?
        };
        self.consume(pool, written);
        Ok(written)
    }

    #[inline]
    fn consume(&mut self, pool: &mut WritePool, mut n: usize) {
        let Some(q) = self.q.as_mut() else {
            return;
        };
        if n >= q.len {
            // All of it went (the usual case).
            self.clear(pool);
            return;
        }
        q.len -= n;
        while n > 0 {
            let avail = q.chunks[0].len() - q.head;
            if n < avail {
                q.head += n;
                break;
            }
            n -= avail;
            q.head = 0;
            if let Some(v) = q.chunks.pop_front() {
                pool.put_chunk(v);
            }
        }
    }

    /// Drop what is waiting; the queue goes back to the pool with its first
    /// chunk (emptied), the other chunks on their own.
    #[inline]
    pub(crate) fn clear(&mut self, pool: &mut WritePool) {
        if let Some(mut q) = self.q.take() {
            while q.chunks.len() > 1 {
                if let Some(v) = q.chunks.pop_back() {
                    pool.put_chunk(v);
                }
            }
            match q.chunks.front_mut() {
                Some(first) if first.capacity() <= 2 * CHUNK => first.clear(),
                Some(_) => q.chunks.clear(),
                None => {}
            }
            q.head = 0;
            q.len = 0;
            pool.put_queue(q);
        }
    }
}

/// The reactor's store of drained chunks and queues, bounded in bytes.
pub(crate) struct WritePool {
    /// Boxed because they are lent as boxes: a write buffer holds one
    /// pointer, and lending moves the box, never the queue.
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Queue>>,
    chunks: Vec<Vec<u8>>,
    /// Bytes held (chunk capacities and queue costs).
    bytes: usize,
    limit: usize,
}

impl Default for WritePool {
    fn default() -> Self {
        WritePool {
            queues: Vec::new(),
            chunks: Vec::new(),
            bytes: 0,
            limit: DEFAULT_WRITE_POOL,
        }
    }
}

impl WritePool {
    /// Bytes the pool holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Change the bound, freeing what is over it.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        while self.bytes > limit {
            if let Some(v) = self.chunks.pop() {
                self.bytes -= v.capacity();
            } else if let Some(q) = self.queues.pop() {
                self.bytes -= q.cost();
            } else {
                break;
            }
        }
    }

    #[inline]
    fn take_queue(&mut self) -> Box<Queue> {
        match self.queues.pop() {
            Some(q) => {
                self.bytes -= q.cost();
                q
            }
            None => Box::default(),
        }
    }

    #[inline]
    fn put_queue(&mut self, q: Box<Queue>) {
        let cost = q.cost();
        if self.bytes + cost <= self.limit {
            self.bytes += cost;
            self.queues.push(q);
        }
    }

    /// An empty chunk: a pooled one, or a new one sized for `need`.
    #[inline]
    fn take_chunk(&mut self, need: usize) -> Vec<u8> {
        match self.chunks.pop() {
            Some(v) => {
                self.bytes -= v.capacity();
                v
            }
            None => Vec::with_capacity(need.max(MIN_CHUNK)),
        }
    }

    #[inline]
    fn put_chunk(&mut self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if cap <= 2 * CHUNK && self.bytes + cap <= self.limit {
            v.clear();
            self.bytes += cap;
            self.chunks.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;
    use mio::{Interest, Registry, Token};

    /// Takes at most `limit` bytes per write, recording them and how many
    /// slices each write was given.
    struct Trickle {
        limit: usize,
        got: Vec<u8>,
        slices: Vec<usize>,
    }

    impl StreamIo for Trickle {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.slices.push(bufs.len());
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.limit {
                    break;
                }
            }
            Ok(n)
        }
        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
            Ok(())
        }
        fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
            Ok(())
        }
        fn deregister(&mut self, _: &Registry) -> io::Result<()> {
            Ok(())
        }
        fn peer(&self) -> Address {
            Address::Unknown
        }
        fn host(&self) -> Address {
            Address::Unknown
        }
    }

    fn trickle(limit: usize) -> Trickle {
        Trickle {
            limit,
            got: Vec::new(),
            slices: Vec::new(),
        }
    }

    #[test]
    fn partial_writes_keep_bytes_in_order_across_chunks() {
        let mut pool = WritePool::default();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = WriteBuf::default();
        for piece in data.chunks(30_000) {
            out.push(&mut pool, piece);
        }
        assert!(out.q.as_ref().unwrap().chunks.len() > 1);
        let mut io = trickle(7_777);
        for _ in 0..1000 {
            if out.len() == 0 {
                break;
            }
            out.write_to(&mut io, &mut pool).unwrap();
            assert_eq!(out.len(), data.len() - io.got.len());
        }
        assert_eq!(io.got, data);
        // Several chunks went out as one vectored write; the last chunk alone
        // as a single slice.
        assert!(io.slices.iter().any(|&n| n > 1));
        assert_eq!(io.slices.last(), Some(&1));
        // Drained, the buffer holds nothing; its chunks wait in the pool.
        assert!(out.q.is_none());
        assert!(pool.chunks.len() >= 3 && pool.queues.len() == 1);
    }

    #[test]
    fn a_drained_buffer_holds_nothing_and_the_next_write_reuses_the_pool() {
        let mut pool = WritePool::default();
        let mut a = WriteBuf::default();
        a.push(&mut pool, &[1; 1000]);
        a.write_to(&mut trickle(usize::MAX), &mut pool).unwrap();
        assert!(a.q.is_none());
        let pooled = pool.bytes();
        assert!(pooled >= MIN_CHUNK);
        // Another connection's write takes the same chunk and queue.
        let mut b = WriteBuf::default();
        b.push(&mut pool, &[2; 100]);
        assert_eq!(pool.bytes(), 0);
        assert_eq!(pool.chunks.len() + pool.queues.len(), 0);
        b.clear(&mut pool);
        assert_eq!(pool.bytes(), pooled);
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = WritePool::default();
        pool.set_limit(3 * CHUNK);
        // Ten buffers of two full chunks each drain at once: only what fits
        // the bound is kept.
        let mut bufs: Vec<WriteBuf> = (0..10).map(|_| WriteBuf::default()).collect();
        for b in &mut bufs {
            b.push(&mut pool, &vec![0; 2 * CHUNK]);
        }
        for b in &mut bufs {
            b.clear(&mut pool);
        }
        assert!(pool.bytes() <= 3 * CHUNK, "{}", pool.bytes());
        // A chunk grown past twice the chunk size is never kept.
        let mut big = WriteBuf::default();
        pool.set_limit(usize::MAX);
        let before = pool.bytes();
        big.push(&mut pool, &vec![0; 4 * CHUNK]);
        big.clear(&mut pool);
        assert!(
            pool.bytes() <= before + std::mem::size_of::<Queue>() + 64,
            "{}",
            pool.bytes()
        );
        pool.set_limit(0);
        assert_eq!(pool.bytes(), 0);
    }
}
