//! Reading a fuzz input as a little program: configuration bytes, chunk
//! sizes, payload. Running out of input is never an error: missing bytes
//! read as zero, so every input is a valid run.

/// A cursor over the fuzz input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Read `data` from the start.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// The next byte, or 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` next bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Chunk sizes for feeding a stream: a count byte (0 to 15) then that many
/// sizes of 1 to 256 bytes each, used in turn. With no sizes, the stream
/// is cut in two halves.
pub fn chunk_sizes(inp: &mut Input<'_>) -> Vec<usize> {
    let n = inp.byte() % 16;
    (0..n).map(|_| usize::from(inp.byte()) + 1).collect()
}

/// Cut `data` into chunks of the given sizes, cycling through them.
pub fn split<'d>(data: &'d [u8], sizes: &[usize]) -> Vec<&'d [u8]> {
    if sizes.is_empty() {
        let (a, b) = data.split_at(data.len() / 2);
        return vec![a, b];
    }
    let mut out = Vec::new();
    let mut rest = data;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}
