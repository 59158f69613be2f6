//! `InputBuf`: the one way twistor keeps the unparsed tail of a stream.
//!
//! Every parser over a byte stream (the line and string receivers, the TLS
//! layer feeding rustls) has the same shape: parse the slice the reactor
//! lent to `data_received`, and keep only what could not be parsed yet.
//! [`InputBuf::feed`] is that shape, written once: when nothing is held the
//! borrowed slice is parsed in place (no copy), otherwise the new bytes are
//! appended and the whole is parsed; the unconsumed tail is kept. When the
//! buffer drains, capacity above [`InputBuf::KEEP`] is released, so an idle
//! connection holds no more than that however large its last message was.

/// The unparsed tail of a byte stream: parse the lent slice in place, keep
/// only what could not be parsed yet, release capacity once drained.
///
/// ```
/// use twistor_reactor::InputBuf;
///
/// /// Counts complete `\n`-terminated lines, keeping a partial one.
/// struct Lines { buf: InputBuf, lines: usize }
///
/// impl Lines {
///     fn data_received(&mut self, data: &[u8]) {
///         InputBuf::feed(self, |s| &mut s.buf, data, |s, input| {
///             let mut used = 0;
///             while let Some(n) = input[used..].iter().position(|&b| b == b'\n') {
///                 s.lines += 1;
///                 used += n + 1;
///             }
///             used
///         });
///     }
/// }
///
/// let mut p = Lines { buf: InputBuf::new(), lines: 0 };
/// p.data_received(b"one\ntw");
/// assert_eq!((p.lines, p.buf.as_slice()), (1, &b"tw"[..]));
/// p.data_received(b"o\n");
/// assert_eq!(p.lines, 2);
/// assert!(p.buf.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct InputBuf {
    buf: Vec<u8>,
}

impl InputBuf {
    /// Capacity a buffer may keep once it has drained (or shrunk to a small
    /// tail); anything above is given back to the allocator.
    pub const KEEP: usize = 1024;

    /// An empty buffer (allocates nothing).
    pub const fn new() -> InputBuf {
        InputBuf { buf: Vec::new() }
    }

    /// The held, not yet consumed bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// How many bytes are held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The capacity currently allocated (what an idle connection costs).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Drop what is held and release the capacity above [`KEEP`](Self::KEEP).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.trim();
    }

    /// Take the held bytes out (the buffer is left empty, with nothing
    /// allocated).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Put bytes in front of what is held (a parser handing back input it
    /// read too far, as when a line receiver switches modes).
    pub fn unread(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut v = Vec::with_capacity(data.len() + self.buf.len());
        v.extend_from_slice(data);
        v.extend_from_slice(&self.buf);
        self.buf = v;
    }

    /// Parse `data` after what `owner`'s buffer (reached through `field`)
    /// holds, keeping the tail that `parse` did not consume.
    ///
    /// `parse` gets the owner and the whole unconsumed input and returns
    /// how many bytes it consumed (at most the input's length). While it
    /// runs, the owner's buffer is empty; bytes it puts there (with
    /// [`unread`](Self::unread)) go in front of the kept tail. The owner is
    /// passed in, rather than borrowed around the buffer, so that `parse`
    /// can use the rest of it freely.
    pub fn feed<T: ?Sized>(
        owner: &mut T,
        field: impl Fn(&mut T) -> &mut InputBuf,
        data: &[u8],
        parse: impl FnOnce(&mut T, &[u8]) -> usize,
    ) {
        let held = std::mem::take(&mut field(owner).buf);
        if held.is_empty() {
            // The common case: parse the lent slice in place.
            let used = parse(owner, data).min(data.len());
            let tail = &data[used..];
            if !tail.is_empty() {
                let buf = &mut field(owner).buf;
                let mut kept = Vec::with_capacity(tail.len() + buf.len());
                kept.extend_from_slice(tail);
                if !buf.is_empty() {
                    // Put back by `parse`: it goes in front.
                    kept.splice(0..0, buf.drain(..));
                }
                *buf = kept;
            }
            return;
        }
        let mut work = held;
        work.extend_from_slice(data);
        let used = parse(owner, &work).min(work.len());
        work.drain(..used);
        let buf = &mut field(owner).buf;
        if !buf.is_empty() {
            work.splice(0..0, buf.drain(..));
        }
        *buf = work;
        field(owner).trim();
    }

    /// Release capacity that is far above what is held.
    fn trim(&mut self) {
        let (len, cap) = (self.buf.len(), self.buf.capacity());
        if len == 0 {
            if cap > Self::KEEP {
                self.buf = Vec::new();
            }
        } else if cap > Self::KEEP && cap > 4 * len {
            self.buf.shrink_to(len.max(Self::KEEP));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P {
        buf: InputBuf,
        take: usize,
        seen: Vec<Vec<u8>>,
    }

    fn feed(p: &mut P, data: &[u8]) {
        InputBuf::feed(
            p,
            |p| &mut p.buf,
            data,
            |p, input| {
                p.seen.push(input.to_vec());
                p.take.min(input.len())
            },
        );
    }

    #[test]
    fn keeps_the_unconsumed_tail_in_order() {
        let mut p = P {
            buf: InputBuf::new(),
            take: 2,
            seen: vec![],
        };
        feed(&mut p, b"abcde");
        assert_eq!(p.buf.as_slice(), b"cde");
        feed(&mut p, b"fg");
        assert_eq!(p.seen[1], b"cdefg");
        assert_eq!(p.buf.as_slice(), b"efg");
        p.take = usize::MAX; // more than there is: clamped
        feed(&mut p, b"");
        assert!(p.buf.is_empty());
    }

    #[test]
    fn a_drained_buffer_gives_back_its_capacity() {
        let mut p = P {
            buf: InputBuf::new(),
            take: 0,
            seen: vec![],
        };
        feed(&mut p, &vec![7u8; 60_000]);
        assert!(p.buf.capacity() >= 60_000);
        p.take = usize::MAX;
        feed(&mut p, b"x");
        assert!(p.buf.is_empty());
        assert!(p.buf.capacity() <= InputBuf::KEEP, "{}", p.buf.capacity());
    }

    #[test]
    fn a_small_tail_after_a_large_message_does_not_keep_the_large_capacity() {
        let mut p = P {
            buf: InputBuf::new(),
            take: 0,
            seen: vec![],
        };
        feed(&mut p, &vec![7u8; 60_000]);
        p.take = 60_000;
        feed(&mut p, b"tail");
        assert_eq!(p.buf.as_slice(), b"tail");
        assert!(p.buf.capacity() <= InputBuf::KEEP, "{}", p.buf.capacity());
    }

    #[test]
    fn bytes_put_back_during_parse_go_in_front_of_the_tail() {
        let mut p = P {
            buf: InputBuf::new(),
            take: 0,
            seen: vec![],
        };
        InputBuf::feed(
            &mut p,
            |p| &mut p.buf,
            b"0123",
            |p, _| {
                p.buf.unread(b"ab");
                2
            },
        );
        assert_eq!(p.buf.as_slice(), b"ab23");
        InputBuf::feed(
            &mut p,
            |p| &mut p.buf,
            b"45",
            |p, input| {
                assert_eq!(input, b"ab2345");
                p.buf.unread(b"Z");
                6
            },
        );
        assert_eq!(p.buf.as_slice(), b"Z");
    }
}
