//! Accepts an HTTP/2 `:authority` that carries a URL scheme.
//!
//! etcdctl 3.4 dials its per-endpoint commands (`endpoint status`, `endpoint hashkv`, `defrag`,
//! `snapshot save`) as `passthrough:///http://127.0.0.1:2379` when `--endpoints` is written as a URL,
//! so grpc-go sends `:authority: http://127.0.0.1:2379`. etcd accepts that; the `h2` crate under hyper
//! rejects the stream as malformed (RST_STREAM PROTOCOL_ERROR) and has no option to relax the check.
//!
//! [`AuthorityFix`] sits between the socket and hyper and, on the client-to-server direction of a
//! prior-knowledge HTTP/2 connection only, rewrites such an authority to plain `host:port`. Frames are
//! followed by their 9-byte headers alone: everything but header blocks (HEADERS + CONTINUATION) is
//! forwarded untouched, and connections that don't open with the HTTP/2 preface (HTTP/1.1) are not
//! looked at after their first bytes.
//!
//! Header blocks are HPACK-compressed against a dynamic table the client builds as it goes, and a
//! later block may name the authority by a table index alone. So every block is decoded here, against
//! our copy of the client's table, and re-encoded with literals that neither use nor add to a dynamic
//! table: h2's own decoder table then stays empty and can never disagree with ours. Dynamic table size
//! updates are applied here and not forwarded.
//!
//! Anything we can't parse (a malformed or oversized block, a frame out of place) ends the rewriting:
//! the bytes held so far and everything after them are passed through as they came, and h2 reports
//! the protocol error itself. That is safe for h2's HPACK state too: its table then holds only entries
//! the client added after that point, a newest-first prefix of the client's own table, so any index
//! h2 can resolve names the entry the client meant, and any other is h2's COMPRESSION_ERROR.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD_LEN: usize = 9;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;

const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;

/// SETTINGS_MAX_FRAME_SIZE as `serve()` advertises it (h2's default, which is also the protocol's
/// minimum, so frames of this size are always acceptable to the server). A header frame above it is
/// left for h2 to reject with FRAME_SIZE_ERROR, and the frames we write never exceed it.
const MAX_FRAME: usize = 16_384;

/// The most raw header-block bytes (frames with their headers) held for one block. h2 allows a
/// HEADERS frame plus five non-final CONTINUATION frames plus a final one; past that it sends GOAWAY,
/// so anything larger is passed through for h2 to refuse rather than buffered here.
const MAX_BLOCK: usize = 8 * (MAX_FRAME + FRAME_HEAD_LEN);

/// The most re-encoded bytes one block may grow to. h2 refuses header lists over 16 KiB (decoded) and
/// our literal encoding is about as long as the decoded list, so legitimate blocks stay far below this;
/// it stops a small block of indexed references to large table entries from being blown up here.
const MAX_REWRITTEN: usize = 64 * 1024;

/// Buffers larger than this are freed once used rather than kept for the connection's next block.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// SETTINGS_HEADER_TABLE_SIZE the server allows the client's encoder: `serve()` leaves h2's default,
/// the protocol's initial 4096. A size update above it is a compression error (h2's to report).
const HEADER_TABLE_SIZE: usize = 4096;

/// Rewrites a scheme-carrying HTTP/2 `:authority` on the read side of `inner`; see the module docs.
/// Writes go straight to `inner`.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes that did not fit in the caller's buffer, handed out before reading again.
    pending: Vec<u8>,
    pending_pos: usize,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::new(),
            pending: Vec::new(),
            pending_pos: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pending_pos < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.pending_pos);
                buf.put_slice(&this.pending[this.pending_pos..this.pending_pos + n]);
                this.pending_pos += n;
                if this.pending_pos == this.pending.len() {
                    if this.pending.capacity() > RETAINED_CAPACITY {
                        this.pending = Vec::new();
                    }
                    this.pending.clear();
                    this.pending_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Read straight into the caller's buffer and rewrite in place: frames we only forward
            // (DATA above all) are then never copied, or at most moved down within the buffer.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.filled().len() == start {
                // End of stream: hand h2 whatever was held back, so it sees the truncation itself.
                this.rewriter.finish(&mut this.pending);
                if this.pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let kept = this.rewriter.feed(&mut buf.filled_mut()[start..], &mut this.pending);
            buf.set_filled(start + kept);
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
            // Everything read is being held (a header block still arriving) or went to `pending`:
            // returning now with nothing filled would read as end of stream, so go round again.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where the rewriter is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Matching the connection preface; holds how many of its bytes have been seen.
    Preface(usize),
    /// Reading a 9-byte frame header into `Rewriter::head`.
    Head,
    /// Forwarding this many more payload bytes of a frame we don't rewrite.
    Forward(usize),
    /// Collecting this many more payload bytes of a HEADERS or CONTINUATION frame.
    Collect(usize),
    /// Not HTTP/2, or we gave up: everything passes as it is.
    Passthrough,
}

/// The client-to-server byte stream transformer, independent of I/O.
struct Rewriter {
    state: State,
    head: [u8; FRAME_HEAD_LEN],
    head_len: usize,
    block: Block,
    hpack: Hpack,
    /// Reused buffers: the re-encoded field block, and the frames carrying it.
    encoded: Vec<u8>,
    frames: Vec<u8>,
}

/// A header block being collected, from its HEADERS frame to the frame with END_HEADERS.
#[derive(Default)]
struct Block {
    open: bool,
    /// The frames exactly as received (headers included), to pass on if we give up.
    raw: Vec<u8>,
    /// Offset in `raw` of the frame being collected.
    frame_start: usize,
    /// The HPACK bytes, padding and priority fields removed.
    fragment: Vec<u8>,
    /// The HEADERS frame's priority fields, kept so h2 still sees (and checks) them.
    priority: Option<[u8; PRIORITY_LEN]>,
}

/// Output of one `feed` call: bytes kept in place at the front of the input slice, then `spill`.
struct Out<'a> {
    data: &'a mut [u8],
    kept: usize,
    spill: &'a mut Vec<u8>,
}

impl Out<'_> {
    /// Passes on `data[from..from + len]`, input not yet overwritten.
    fn forward(&mut self, from: usize, len: usize) {
        if self.spill.is_empty() {
            if from != self.kept {
                self.data.copy_within(from..from + len, self.kept);
            }
            self.kept += len;
        } else {
            self.spill.extend_from_slice(&self.data[from..from + len]);
        }
    }

    /// Passes on `bytes`, in place if they fit below `consumed` (input already read), else spilled.
    fn emit(&mut self, bytes: &[u8], consumed: usize) {
        let end = self.kept + bytes.len();
        if self.spill.is_empty() && end <= consumed {
            self.data[self.kept..end].copy_from_slice(bytes);
            self.kept = end;
        } else {
            self.spill.extend_from_slice(bytes);
        }
    }
}

impl Rewriter {
    fn new() -> Self {
        Rewriter {
            state: State::Preface(0),
            head: [0; FRAME_HEAD_LEN],
            head_len: 0,
            block: Block::default(),
            hpack: Hpack::new(),
            encoded: Vec::new(),
            frames: Vec::new(),
        }
    }

    fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Rewrites `data` (newly read bytes). The output is `data[..returned]` followed by whatever was
    /// appended to `spill`, which must be empty on entry so the two stay in order.
    fn feed(&mut self, data: &mut [u8], spill: &mut Vec<u8>) -> usize {
        debug_assert!(spill.is_empty());
        let len = data.len();
        let mut out = Out { data, kept: 0, spill };
        let mut pos = 0;
        while pos < len {
            match self.state {
                State::Passthrough => {
                    out.forward(pos, len - pos);
                    pos = len;
                }
                State::Preface(seen) => {
                    let take = (PREFACE.len() - seen).min(len - pos);
                    if out.data[pos..pos + take] == PREFACE[seen..seen + take] {
                        out.forward(pos, take);
                        pos += take;
                        self.state = if seen + take == PREFACE.len() {
                            State::Head
                        } else {
                            State::Preface(seen + take)
                        };
                    } else {
                        // Not prior-knowledge HTTP/2 (HTTP/1.1): the bytes seen so far were
                        // forwarded as they matched, and the rest follows untouched.
                        self.state = State::Passthrough;
                    }
                }
                State::Head => {
                    let take = (FRAME_HEAD_LEN - self.head_len).min(len - pos);
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&out.data[pos..pos + take]);
                    self.head_len += take;
                    pos += take;
                    if self.head_len == FRAME_HEAD_LEN {
                        self.head_len = 0;
                        self.on_frame_head(&mut out, pos);
                    }
                }
                State::Forward(left) => {
                    let take = left.min(len - pos);
                    out.forward(pos, take);
                    pos += take;
                    self.state = if take == left {
                        State::Head
                    } else {
                        State::Forward(left - take)
                    };
                }
                State::Collect(left) => {
                    let take = left.min(len - pos);
                    self.block.raw.extend_from_slice(&out.data[pos..pos + take]);
                    pos += take;
                    if take == left {
                        self.on_frame_end(&mut out, pos);
                    } else {
                        self.state = State::Collect(left - take);
                    }
                }
            }
        }
        out.kept
    }

    /// End of the client's stream: releases anything held back, unchanged.
    fn finish(&mut self, spill: &mut Vec<u8>) {
        if self.block.open {
            spill.extend_from_slice(&self.block.raw);
        }
        if self.state == State::Head {
            spill.extend_from_slice(&self.head[..self.head_len]);
        }
        self.block = Block::default();
        self.state = State::Passthrough;
    }

    /// A complete frame header is in `self.head`.
    fn on_frame_head(&mut self, out: &mut Out<'_>, pos: usize) {
        let head = self.head;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let kind = head[3];
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let fits = len <= MAX_FRAME && self.block.raw.len() + FRAME_HEAD_LEN + len <= MAX_BLOCK;
        if self.block.open {
            // Only a CONTINUATION of the same stream may follow an unfinished block.
            if kind == TYPE_CONTINUATION && stream == self.block.stream() && fits {
                self.collect_frame(out, pos, len);
            } else {
                self.give_up(out, pos, &head);
            }
            return;
        }
        match kind {
            TYPE_HEADERS if stream != 0 && fits => {
                self.block.open = true;
                self.collect_frame(out, pos, len);
            }
            // A HEADERS frame h2 will refuse anyway, a CONTINUATION with no block open, or a
            // PUSH_PROMISE (which clients may not send): stop here, let h2 see them as they are.
            TYPE_HEADERS | TYPE_CONTINUATION | TYPE_PUSH_PROMISE => self.give_up(out, pos, &head),
            _ => {
                out.emit(&head, pos);
                self.state = if len == 0 { State::Head } else { State::Forward(len) };
            }
        }
    }

    fn collect_frame(&mut self, out: &mut Out<'_>, pos: usize, len: usize) {
        self.block.frame_start = self.block.raw.len();
        self.block.raw.extend_from_slice(&self.head);
        if len == 0 {
            self.on_frame_end(out, pos);
        } else {
            self.state = State::Collect(len);
        }
    }

    /// The frame starting at `block.frame_start` is complete in `block.raw`.
    fn on_frame_end(&mut self, out: &mut Out<'_>, pos: usize) {
        let block = &mut self.block;
        let frame = &block.raw[block.frame_start..];
        let (kind, flags) = (frame[3], frame[4]);
        let mut payload = &frame[FRAME_HEAD_LEN..];
        if kind == TYPE_HEADERS {
            let mut pad = 0;
            if flags & FLAG_PADDED != 0 {
                let Some((&n, rest)) = payload.split_first() else {
                    return self.give_up(out, pos, &[]);
                };
                pad = usize::from(n);
                payload = rest;
            }
            if flags & FLAG_PRIORITY != 0 {
                let Some((priority, rest)) = payload.split_first_chunk::<PRIORITY_LEN>() else {
                    return self.give_up(out, pos, &[]);
                };
                block.priority = Some(*priority);
                payload = rest;
            }
            let Some(unpadded) = payload.len().checked_sub(pad) else {
                return self.give_up(out, pos, &[]);
            };
            payload = &payload[..unpadded];
        }
        block.fragment.extend_from_slice(payload);
        if flags & FLAG_END_HEADERS == 0 {
            self.state = State::Head;
            return;
        }
        self.encoded.clear();
        let rewritten = self.hpack.rewrite(&self.block.fragment, &mut self.encoded);
        if rewritten
            .and_then(|()| self.block.write_frames(&self.encoded, &mut self.frames))
            .is_err()
        {
            return self.give_up(out, pos, &[]);
        }
        out.emit(&self.frames, pos);
        if self.frames.capacity() > RETAINED_CAPACITY {
            self.encoded = Vec::new();
            self.frames = Vec::new();
        }
        self.block.reset();
        self.state = State::Head;
    }

    /// Stops rewriting: the held block (if any) and `extra` (held frame-header bytes) go out as
    /// received, and so does everything after.
    fn give_up(&mut self, out: &mut Out<'_>, pos: usize, extra: &[u8]) {
        if self.block.open {
            out.emit(&self.block.raw, pos);
        }
        out.emit(extra, pos);
        // Drop the buffers too: this connection won't collect another block.
        self.block = Block::default();
        self.state = State::Passthrough;
    }
}

impl Block {
    /// The stream id of the block's HEADERS frame.
    fn stream(&self) -> u32 {
        match self.raw.get(5..9) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff,
            _ => 0,
        }
    }

    fn reset(&mut self) {
        if self.raw.capacity() > RETAINED_CAPACITY {
            // A rare big block shouldn't pin its buffers for the life of the connection.
            *self = Block::default();
            return;
        }
        self.open = false;
        self.raw.clear();
        self.fragment.clear();
        self.frame_start = 0;
        self.priority = None;
    }

    /// Writes `encoded` as one HEADERS frame, plus CONTINUATION frames if it exceeds `MAX_FRAME`.
    /// The HEADERS frame keeps the original's stream id, flags (END_STREAM, PRIORITY, unknown bits)
    /// and priority fields; only padding is dropped.
    fn write_frames(&self, encoded: &[u8], frames: &mut Vec<u8>) -> Result<(), Malformed> {
        frames.clear();
        let (Some(flags), Some(stream)) = (self.raw.get(4), self.raw.get(5..9)) else {
            return Err(Malformed);
        };
        let priority: &[u8] = self.priority.as_ref().map_or(&[], |p| &p[..]);
        let mut rest = encoded;
        let mut kind = TYPE_HEADERS;
        let mut flags = *flags & !(FLAG_PADDED | FLAG_END_HEADERS);
        let mut prefix = priority;
        loop {
            let take = rest.len().min(MAX_FRAME - prefix.len());
            let (chunk, tail) = rest.split_at(take);
            let len = prefix.len() + chunk.len();
            let end = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            // `len` is at most MAX_FRAME, so it fits the 24-bit length field.
            frames.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags | end]);
            frames.extend_from_slice(stream);
            frames.extend_from_slice(prefix);
            frames.extend_from_slice(chunk);
            if tail.is_empty() {
                return Ok(());
            }
            rest = tail;
            kind = TYPE_CONTINUATION;
            flags = 0;
            prefix = &[];
        }
    }
}

/// `http://host:port` or `https://host:port/...` → `host:port`; anything else as it is.
fn strip_scheme(value: &[u8]) -> &[u8] {
    let rest = if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"http://") {
        &value[7..]
    } else if value.len() > 8 && value[..8].eq_ignore_ascii_case(b"https://") {
        &value[8..]
    } else {
        return value;
    };
    let host = rest.split(|&b| b == b'/').next().unwrap_or(rest);
    if host.is_empty() {
        value
    } else {
        host
    }
}

/// A header block we can't decode; the caller passes the block on untouched instead.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

/// The HPACK (RFC 7541) decoding context of the client's encoder, and the re-encoder.
struct Hpack {
    /// Newest entry first, as HPACK indexes them.
    table: VecDeque<Entry>,
    /// Sum of entry sizes (name + value + 32 each).
    size: usize,
    max_size: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

struct Entry {
    /// Name then value.
    bytes: Box<[u8]>,
    name_len: usize,
    /// Index of the name in the static table, 0 if absent: lets the re-encoding refer to it.
    static_name: usize,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.name_len..]
    }
}

/// Per-entry overhead in the table size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

impl Hpack {
    fn new() -> Self {
        Hpack {
            table: VecDeque::new(),
            size: 0,
            max_size: HEADER_TABLE_SIZE,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Decodes one complete header block, updating the dynamic table as the client's encoder did,
    /// and appends an equivalent block to `out` that uses only the static table, with any
    /// scheme-carrying `:authority` stripped to `host:port`. On error the table may be half-updated;
    /// the caller stops using it.
    fn rewrite(&mut self, mut src: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
        let mut at_start = true;
        while let Some(&first) = src.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let index = read_int(&mut src, 7)?;
                if (1..=STATIC_TABLE.len()).contains(&index) {
                    // Static entries are fixed and none has an authority value: pass the reference.
                    write_int(out, 0x80, 7, index);
                } else {
                    let entry = Self::dynamic(&self.table, index)?;
                    write_literal(out, 0, entry.static_name, entry.name(), strip_authority(entry));
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only at the start of a block (RFC 7541 §4.2).
                if !at_start {
                    return Err(Malformed);
                }
                let size = read_int(&mut src, 5)?;
                if size > HEADER_TABLE_SIZE {
                    return Err(Malformed);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal field: with incremental indexing (01), never indexed (0001) or without
                // indexing (0000).
                let (prefix, indexing, never) = if first & 0x40 != 0 {
                    (6, true, false)
                } else {
                    (4, false, first & 0x10 != 0)
                };
                let index = read_int(&mut src, prefix)?;
                self.name.clear();
                let static_name = if index == 0 {
                    read_string(&mut src, &mut self.name)?;
                    static_name_index(&self.name)
                } else if let Some((name, _)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
                    self.name.extend_from_slice(name);
                    index
                } else {
                    let entry = Self::dynamic(&self.table, index)?;
                    self.name.extend_from_slice(entry.name());
                    entry.static_name
                };
                self.value.clear();
                read_string(&mut src, &mut self.value)?;
                let value = if self.name == b":authority" {
                    strip_scheme(&self.value)
                } else {
                    &self.value
                };
                // Keep "never indexed" so h2 still marks the value sensitive.
                write_literal(out, if never { 0x10 } else { 0 }, static_name, &self.name, value);
                if indexing {
                    self.insert(static_name);
                }
            }
            at_start = false;
            if out.len() > MAX_REWRITTEN {
                return Err(Malformed);
            }
        }
        Ok(())
    }

    /// The dynamic table entry at HPACK `index` (static entries come first).
    fn dynamic(table: &VecDeque<Entry>, index: usize) -> Result<&Entry, Malformed> {
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|i| table.get(i))
            .ok_or(Malformed)
    }

    /// Adds `self.name`/`self.value` (the value as the client sent it) to the dynamic table.
    fn insert(&mut self, static_name: usize) {
        let size = self.name.len() + self.value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        let mut bytes = Vec::with_capacity(self.name.len() + self.value.len());
        bytes.extend_from_slice(&self.name);
        bytes.extend_from_slice(&self.value);
        self.table.push_front(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: self.name.len(),
            static_name,
        });
        self.size += size;
    }

    /// Evicts oldest entries until `room` more bytes fit under the maximum size.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some(old) = self.table.pop_back() else {
                self.size = 0;
                return;
            };
            self.size -= old.bytes.len() + ENTRY_OVERHEAD;
        }
    }
}

fn strip_authority(entry: &Entry) -> &[u8] {
    if entry.name() == b":authority" {
        strip_scheme(entry.value())
    } else {
        entry.value()
    }
}

/// Reads an HPACK integer with an N-bit prefix (RFC 7541 §5.1).
fn read_int(src: &mut &[u8], prefix_bits: u32) -> Result<usize, Malformed> {
    let (&first, rest) = src.split_first().ok_or(Malformed)?;
    *src = rest;
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value);
    }
    // Up to four continuation bytes: ample for any length or index a peer can legitimately send,
    // and no overflow.
    for shift in [0, 7, 14, 21] {
        let (&b, rest) = src.split_first().ok_or(Malformed)?;
        *src = rest;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

/// Writes an HPACK integer with an N-bit prefix, `first` holding the representation's high bits.
fn write_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal (RFC 7541 §5.2), Huffman-decoding it if flagged, into `dst`.
fn read_string(src: &mut &[u8], dst: &mut Vec<u8>) -> Result<(), Malformed> {
    let huffman = src.first().ok_or(Malformed)? & 0x80 != 0;
    let len = read_int(src, 7)?;
    if len > src.len() {
        return Err(Malformed);
    }
    let (bytes, rest) = src.split_at(len);
    *src = rest;
    if huffman {
        huffman_decode(bytes, dst)
    } else {
        dst.extend_from_slice(bytes);
        Ok(())
    }
}

/// A literal field without indexing (`first` 0x00) or never indexed (0x10), its name given by static
/// index when there is one, the value as a plain (non-Huffman) string. Neither touches h2's table.
fn write_literal(out: &mut Vec<u8>, first: u8, static_name: usize, name: &[u8], value: &[u8]) {
    write_int(out, first, 4, static_name);
    if static_name == 0 {
        write_int(out, 0, 7, name.len());
        out.extend_from_slice(name);
    }
    write_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// The HPACK static table (RFC 7541 Appendix A); index `i` is at `[i - 1]`.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The first static index with this name, or 0. Looked up once per literal or table insertion, not
/// per reference to a table entry.
fn static_name_index(name: &[u8]) -> usize {
    STATIC_TABLE.iter().position(|(n, _)| *n == name).map_or(0, |i| i + 1)
}

/// Code lengths in bits of the HPACK Huffman code (RFC 7541 Appendix B), symbols 0..=255 then EOS.
/// The code is canonical (codes of one length are consecutive, in symbol order), so the lengths
/// determine it.
const HUFFMAN_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00..
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10..
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20..
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30..
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40..
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50..
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60..
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70..
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80..
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90..
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0..
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0..
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0..
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0..
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0..
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0..
    30, // EOS
];

const HUFFMAN_MAX_BITS: usize = 30;
const EOS: u16 = 256;

/// The canonical code in decoding form: how many codes have each length, and the symbols ordered by
/// (length, symbol), i.e. by code.
struct Canonical {
    count: [u16; HUFFMAN_MAX_BITS + 1],
    symbols: [u16; 257],
}

const HUFFMAN: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u16; HUFFMAN_MAX_BITS + 1];
    let mut i = 0;
    while i < HUFFMAN_BITS.len() {
        count[HUFFMAN_BITS[i] as usize] += 1;
        i += 1;
    }
    let mut next = [0u16; HUFFMAN_MAX_BITS + 1];
    let mut len = 1;
    while len < HUFFMAN_MAX_BITS {
        next[len + 1] = next[len] + count[len];
        len += 1;
    }
    let mut symbols = [0u16; 257];
    i = 0;
    while i < HUFFMAN_BITS.len() {
        let len = HUFFMAN_BITS[i] as usize;
        symbols[next[len] as usize] = i as u16;
        next[len] += 1;
        i += 1;
    }
    Canonical { count, symbols }
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2), bit by bit against the canonical code: at each
/// length, the codes of that length are the `count` values from `first` on.
fn huffman_decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Malformed> {
    let mut code: u32 = 0;
    let mut first: u32 = 0;
    let mut index: u32 = 0;
    let mut len: usize = 0;
    let mut all_ones = true;
    for &byte in src {
        for shift in (0..8).rev() {
            let bit = u32::from(byte >> shift) & 1;
            code |= bit;
            len += 1;
            all_ones &= bit == 1;
            let count = u32::from(*HUFFMAN.count.get(len).ok_or(Malformed)?);
            if code.wrapping_sub(first) < count {
                let symbol = *HUFFMAN.symbols.get((index + code - first) as usize).ok_or(Malformed)?;
                if symbol == EOS {
                    return Err(Malformed);
                }
                dst.push(symbol as u8);
                (code, first, index, len, all_ones) = (0, 0, 0, 0, true);
            } else {
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
        }
    }
    // What's left must be padding: at most 7 bits, the high bits of EOS (all ones).
    if len > 7 || !all_ones {
        return Err(Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// HEADERS payload etcdctl 3.4.23 (grpc-go 1.33.3) sent for `--endpoints=http://127.0.0.1:23791
    /// endpoint status`, captured on the wire. All literals are Huffman-coded with incremental indexing.
    const ETCDCTL_STATUS: &str = "8386459760a924882d9dcb6571afa066a925a87510ac6e48d36a3f41909d29aee30c044eae05c0b8\
        6e09975f0f5f8b1d75d0620d263d4c4d65647a8b9acac8b4c7602bb2caecff40027465864d833505b11f40899acac8b24d494f6a7f\
        8669f79e6da66d408d25062d495875996ee5b1063d5f03332e34";

    fn etcdctl_status_headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.33.3"),
            ("te", "trailers"),
            ("grpc-timeout", "4988543u"),
            ("client-api-version", "3.4"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Two blocks from an independent encoder (Python `hpack` 4.2, Huffman on): the second names
    /// `:authority: https://127.0.0.1:2379/` only by a dynamic table index.
    const PY_BLOCK1: &str = "8386449760a924882d9dcb6571afa066a925a87510ac6e48d36a3f41919d29ad1718602275702e05c3704c\
        bafb1f5f8b1d75d0620d263d4c4d65644082497f864d833505b11f";
    const PY_BLOCK2: &str = "8386449a60a924882d9dcb6571afa066a925a87510ac5f2cb60e6a4b527fc1c0bf";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn settings() -> Vec<u8> {
        // SETTINGS_INITIAL_WINDOW_SIZE = 65535, then a SETTINGS ACK.
        let mut v = frame(0x4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        v.extend(frame(0x4, 0x1, 0, &[]));
        v
    }

    fn with_preface(rest: &[u8]) -> Vec<u8> {
        let mut v = PREFACE.to_vec();
        v.extend_from_slice(rest);
        v
    }

    /// Feeds `input` through a rewriter in chunks of the given sizes (cycled), as `AuthorityFix` does.
    fn run(input: &[u8], chunks: &[usize]) -> Vec<u8> {
        let mut rw = Rewriter::new();
        let mut out = Vec::new();
        let mut spill = Vec::new();
        let mut rest = input;
        let mut sizes = chunks.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            let mut data = rest[..n].to_vec();
            rest = &rest[n..];
            let kept = rw.feed(&mut data, &mut spill);
            out.extend_from_slice(&data[..kept]);
            out.append(&mut spill);
        }
        rw.finish(&mut spill);
        out.append(&mut spill);
        out
    }

    const CHUNKINGS: &[&[usize]] = &[&[usize::MAX], &[1], &[7], &[9, 3, 30], &[24, 9, 100], &[4096]];

    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 9, "truncated frame header");
            let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            frames.push(Frame {
                kind: bytes[3],
                flags: bytes[4],
                stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
                payload: bytes[9..9 + len].to_vec(),
            });
            bytes = &bytes[9 + len..];
        }
        frames
    }

    /// A decoded field: name, value, whether it was sent "never indexed".
    type Field = (Vec<u8>, Vec<u8>, bool);

    /// Decodes a block that must use the static table only (no dynamic references, no indexing, no
    /// size updates): what we promise h2. Returns (name, value, never_indexed) per field.
    fn decode_static_only(mut src: &[u8]) -> Vec<Field> {
        let mut fields = Vec::new();
        while let Some(&first) = src.first() {
            if first & 0x80 != 0 {
                let i = read_int(&mut src, 7).unwrap();
                let (n, v) = STATIC_TABLE[i - 1];
                fields.push((n.to_vec(), v.to_vec(), false));
                continue;
            }
            assert_eq!(
                first & 0xe0,
                0,
                "only literals without indexing / never indexed: {first:#x}"
            );
            let never = first & 0x10 != 0;
            let i = read_int(&mut src, 4).unwrap();
            let mut name = Vec::new();
            if i == 0 {
                assert_eq!(src[0] & 0x80, 0, "plain strings");
                read_string(&mut src, &mut name).unwrap();
                assert_eq!(static_name_index(&name), 0, "static names are referenced by index");
            } else {
                name.extend_from_slice(STATIC_TABLE[i - 1].0);
            }
            assert_eq!(src[0] & 0x80, 0, "plain strings");
            let mut value = Vec::new();
            read_string(&mut src, &mut value).unwrap();
            fields.push((name, value, never));
        }
        fields
    }

    /// The header blocks (one per HEADERS..END_HEADERS run) in a rewritten stream, decoded, with the
    /// frames checked for what we promise: no padding, sizes within MAX_FRAME, CONTINUATIONs in place.
    fn output_blocks(output: &[u8]) -> Vec<(u32, u8, Vec<Field>)> {
        assert!(output.starts_with(PREFACE));
        let mut blocks = Vec::new();
        let mut open: Option<(u32, u8, Vec<u8>)> = None;
        for f in parse_frames(&output[PREFACE.len()..]) {
            assert!(f.payload.len() <= MAX_FRAME);
            match f.kind {
                TYPE_HEADERS => {
                    assert!(open.is_none());
                    assert_eq!(f.flags & FLAG_PADDED, 0);
                    let fragment = if f.flags & FLAG_PRIORITY != 0 {
                        f.payload[5..].to_vec()
                    } else {
                        f.payload
                    };
                    open = Some((f.stream, f.flags, fragment));
                }
                TYPE_CONTINUATION => {
                    let (stream, _, fragment) = open.as_mut().unwrap();
                    assert_eq!(*stream, f.stream);
                    fragment.extend_from_slice(&f.payload);
                }
                _ => assert!(open.is_none(), "frame inside a header block"),
            }
            if matches!(f.kind, TYPE_HEADERS | TYPE_CONTINUATION) && f.flags & FLAG_END_HEADERS != 0 {
                let (stream, flags, fragment) = open.take().unwrap();
                blocks.push((stream, flags, decode_static_only(&fragment)));
            }
        }
        assert!(open.is_none());
        blocks
    }

    fn plain(fields: &[Field]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect()
    }

    fn authority(fields: &[Field]) -> String {
        let (_, v, _) = fields.iter().find(|(n, _, _)| n == b":authority").unwrap();
        String::from_utf8(v.clone()).unwrap()
    }

    #[test]
    fn etcdctl_request_authority_is_stripped() {
        let data = frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]);
        let mut input = settings();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &hex(ETCDCTL_STATUS)));
        input.extend(&data);
        let input = with_preface(&input);
        for chunks in CHUNKINGS {
            let out = run(&input, chunks);
            // Preface and SETTINGS pass byte for byte; so does the DATA frame after the block.
            assert!(out.starts_with(&with_preface(&settings())), "{chunks:?}");
            assert!(out.ends_with(&data), "{chunks:?}");
            let blocks = output_blocks(&out);
            assert_eq!(blocks.len(), 1);
            let (stream, flags, fields) = &blocks[0];
            assert_eq!((*stream, *flags), (1, FLAG_END_HEADERS));
            assert_eq!(plain(fields), etcdctl_status_headers("127.0.0.1:23791"), "{chunks:?}");
        }
    }

    #[test]
    fn authority_named_by_dynamic_index_is_stripped() {
        let mut input = settings();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | 0x1, 1, &hex(PY_BLOCK1)));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | 0x1, 3, &hex(PY_BLOCK2)));
        let input = with_preface(&input);
        for chunks in CHUNKINGS {
            let blocks = output_blocks(&run(&input, chunks));
            assert_eq!(blocks.len(), 2);
            for (i, path) in [
                "/etcdserverpb.Maintenance/Status",
                "/etcdserverpb.Maintenance/Defragment",
            ]
            .iter()
            .enumerate()
            {
                let (stream, flags, fields) = &blocks[i];
                assert_eq!((*stream, *flags), (1 + 2 * i as u32, FLAG_END_HEADERS | 0x1));
                let want: Vec<(Vec<u8>, Vec<u8>)> = [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", path),
                    (":authority", "127.0.0.1:2379"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ]
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
                assert_eq!(plain(fields), want);
            }
        }
    }

    #[test]
    fn continuation_frames_are_joined() {
        let block = hex(ETCDCTL_STATUS);
        let mut input = settings();
        input.extend(frame(TYPE_HEADERS, 0x1, 5, &block[..10]));
        input.extend(frame(TYPE_CONTINUATION, 0, 5, &block[10..11]));
        input.extend(frame(TYPE_CONTINUATION, 0, 5, &[]));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, &block[11..]));
        input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0]));
        let input = with_preface(&input);
        for chunks in CHUNKINGS {
            let out = run(&input, chunks);
            let frames = parse_frames(&out[PREFACE.len()..]);
            let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
            assert_eq!(
                kinds,
                [0x4, 0x4, TYPE_HEADERS, 0x8],
                "one HEADERS frame replaces the four"
            );
            let blocks = output_blocks(&out);
            assert_eq!(blocks[0].0, 5);
            assert_eq!(blocks[0].1, FLAG_END_HEADERS | 0x1, "END_STREAM kept");
            assert_eq!(plain(&blocks[0].2), etcdctl_status_headers("127.0.0.1:23791"));
        }
    }

    #[test]
    fn padding_dropped_priority_kept() {
        let block = hex(ETCDCTL_STATUS);
        let priority = [0x80, 0, 0, 3, 200];
        let mut payload = vec![10];
        payload.extend_from_slice(&priority);
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0; 10]);
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS | 0x1;
        let input = with_preface(&frame(TYPE_HEADERS, flags, 7, &payload));
        for chunks in CHUNKINGS {
            let out = run(&input, chunks);
            let frames = parse_frames(&out[PREFACE.len()..]);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].flags, FLAG_PRIORITY | FLAG_END_HEADERS | 0x1);
            assert_eq!(frames[0].payload[..5], priority);
            assert_eq!(
                plain(&output_blocks(&out)[0].2),
                etcdctl_status_headers("127.0.0.1:23791")
            );
        }
    }

    #[test]
    fn large_block_is_split_into_frames_of_max_size() {
        // A 40 000-byte value, sent as HEADERS + CONTINUATIONs, comes out as HEADERS + CONTINUATIONs
        // of at most MAX_FRAME bytes, the priority fields still first.
        let big = vec![b'x'; 40_000];
        let mut fragment = vec![0x82, 0x41, 0x0c]; // :method GET, :authority (indexing) "http://h:1/x"
        fragment.extend_from_slice(b"http://h:1/x");
        fragment.push(0x40);
        write_int(&mut fragment, 0, 7, 3);
        fragment.extend_from_slice(b"big");
        write_int(&mut fragment, 0, 7, big.len());
        fragment.extend_from_slice(&big);
        let mut payload = vec![0, 0, 0, 0, 16];
        payload.extend_from_slice(&fragment[..MAX_FRAME - 5]);
        let mut input = frame(TYPE_HEADERS, FLAG_PRIORITY, 1, &payload);
        let mut rest = &fragment[MAX_FRAME - 5..];
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let flags = if n == rest.len() { FLAG_END_HEADERS } else { 0 };
            input.extend(frame(TYPE_CONTINUATION, flags, 1, &rest[..n]));
            rest = &rest[n..];
        }
        let input = with_preface(&input);
        let out = run(&input, &[5000]);
        let frames = parse_frames(&out[PREFACE.len()..]);
        assert!(frames.len() >= 3);
        assert!(frames.iter().all(|f| f.payload.len() <= MAX_FRAME));
        assert_eq!(frames[0].payload.len(), MAX_FRAME);
        assert_eq!(frames[0].payload[..5], [0, 0, 0, 0, 16]);
        let blocks = output_blocks(&out);
        assert_eq!(authority(&blocks[0].2), "h:1");
        assert_eq!(blocks[0].2[2].1, big);
    }

    #[test]
    fn other_frames_pass_unchanged() {
        let mut frames = settings();
        frames.extend(frame(0x0, 0x0, 1, b"grpc message bytes"));
        frames.extend(frame(0x0, 0x8, 1, &[3, b'a', b'b', 0, 0, 0])); // padded DATA
        frames.extend(frame(0x8, 0, 0, &[0, 1, 0, 0]));
        frames.extend(frame(0x6, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]));
        frames.extend(frame(0x3, 0, 1, &[0, 0, 0, 8]));
        frames.extend(frame(0x2, 0, 1, &[0, 0, 0, 0, 1]));
        frames.extend(frame(0x7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
        frames.extend(frame(0x20, 0xff, 9, &[0xaa; 300]));
        frames.extend(frame(0x0, 0x1, 1, &vec![0x55; MAX_FRAME * 2])); // oversized: h2's to refuse
        let input = with_preface(&frames);
        for chunks in CHUNKINGS {
            assert_eq!(run(&input, chunks), input, "{chunks:?}");
        }
    }

    #[test]
    fn http1_passes_unchanged() {
        for input in [
            &b"GET /health HTTP/1.1\r\nhost: 127.0.0.1:2379\r\n\r\n"[..],
            b"PRI * HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r",
            b"",
        ] {
            // An HTTP/1.1 request whose body happens to hold a HEADERS frame is still left alone.
            let mut input = input.to_vec();
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &hex(ETCDCTL_STATUS)));
            for chunks in CHUNKINGS {
                assert_eq!(run(&input, chunks), input, "{chunks:?}");
            }
        }
    }

    #[test]
    fn malformed_blocks_pass_unchanged() {
        let good = hex(ETCDCTL_STATUS);
        let mut bad_huffman = vec![0x41, 0x84, 0xff, 0xff, 0xff, 0xff]; // EOS inside the string
        bad_huffman.extend_from_slice(&good);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "pad longer than payload",
                frame(TYPE_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[9, 0x82]),
            ),
            (
                "padded, empty",
                frame(TYPE_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[]),
            ),
            (
                "priority too short",
                frame(TYPE_HEADERS, FLAG_PRIORITY | FLAG_END_HEADERS, 1, &[0, 0, 0]),
            ),
            ("index 0", frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x80])),
            (
                "dynamic index out of range",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xbe]),
            ),
            (
                "literal name index out of range",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x4f, 0x30, 0]),
            ),
            (
                "string past end",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x41, 0x05, b'a']),
            ),
            (
                "integer too long",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            ),
            (
                "integer truncated",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0x80]),
            ),
            (
                "size update after a field",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x82, 0x20]),
            ),
            (
                "size update above the setting",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82]),
            ),
            ("huffman EOS", frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &bad_huffman)),
            (
                "huffman padding of zeros",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x41, 0x81, 0x18]),
            ),
            ("stream 0", frame(TYPE_HEADERS, FLAG_END_HEADERS, 0, &good)),
            (
                "frame over MAX_FRAME",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &vec![0x82; MAX_FRAME + 1]),
            ),
            (
                "CONTINUATION without HEADERS",
                frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &good),
            ),
            (
                "PUSH_PROMISE",
                frame(TYPE_PUSH_PROMISE, FLAG_END_HEADERS, 1, &[0, 0, 0, 2, 0x82]),
            ),
            ("DATA inside a block", {
                let mut v = frame(TYPE_HEADERS, 0, 1, &good[..5]);
                v.extend(frame(0x0, 0, 1, b"x"));
                v.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &good[5..]));
                v
            }),
            ("CONTINUATION of another stream", {
                let mut v = frame(TYPE_HEADERS, 0, 1, &good[..5]);
                v.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &good[5..]));
                v
            }),
            (
                "truncated HEADERS",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &good)[..40].to_vec(),
            ),
            (
                "truncated frame header",
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &good)[..5].to_vec(),
            ),
            ("unfinished block", frame(TYPE_HEADERS, 0, 1, &good)),
        ];
        for (what, frames) in cases {
            // What follows a give-up passes unchanged too, even a block we would otherwise rewrite.
            let mut input = settings();
            input.extend(&frames);
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &good));
            let input = with_preface(&input);
            for chunks in CHUNKINGS {
                assert_eq!(run(&input, chunks), input, "{what}, {chunks:?}");
            }
        }
    }

    #[test]
    fn stream_ending_mid_frame_releases_held_bytes() {
        let input = with_preface(&frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &hex(ETCDCTL_STATUS)));
        for cut in [
            PREFACE.len() + 4,
            PREFACE.len() + 9,
            PREFACE.len() + 30,
            input.len() - 1,
        ] {
            for chunks in CHUNKINGS {
                assert_eq!(run(&input[..cut], chunks), input[..cut], "{cut} {chunks:?}");
            }
        }
    }

    #[test]
    fn never_indexed_stays_never_indexed() {
        // authorization (static name 23) never indexed; a literal name, without indexing.
        let mut fragment = vec![0x82, 0x1f, 0x08, 0x03];
        fragment.extend_from_slice(b"abc");
        fragment.extend_from_slice(&[0x00, 0x01, b'x', 0x01, b'y']);
        let input = with_preface(&frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &fragment));
        let blocks = output_blocks(&run(&input, &[usize::MAX]));
        assert_eq!(
            blocks[0].2,
            vec![
                (b":method".to_vec(), b"GET".to_vec(), false),
                (b"authorization".to_vec(), b"abc".to_vec(), true),
                (b"x".to_vec(), b"y".to_vec(), false),
            ]
        );
    }

    #[test]
    fn table_size_updates_and_eviction() {
        let mut hp = Hpack::new();
        let mut out = Vec::new();
        // Fill the table: 40 entries of 32 + 1 + 100 bytes each; only the newest 30 fit in 4096.
        for i in 0..40u8 {
            let mut block = vec![0x40, 0x01, i, 0x64];
            block.extend_from_slice(&[i; 100]);
            hp.rewrite(&block, &mut out).unwrap();
        }
        assert_eq!(hp.table.len(), 30);
        assert_eq!(hp.size, 30 * 133);
        // Index 62 is the newest (39), 91 the oldest kept (10); 92 is gone.
        out.clear();
        hp.rewrite(&[0x80 | 62], &mut out).unwrap();
        assert_eq!(decode_static_only(&out), vec![(vec![39], vec![39; 100], false)]);
        out.clear();
        hp.rewrite(&[0x80 | 91], &mut out).unwrap();
        assert_eq!(decode_static_only(&out), vec![(vec![10], vec![10; 100], false)]);
        assert_eq!(hp.rewrite(&[0x80 | 92], &mut Vec::new()), Err(Malformed));
        // Shrinking to 300 keeps the two newest; 0 empties it; growing back doesn't restore entries.
        let mut update = Vec::new();
        write_int(&mut update, 0x20, 5, 300);
        hp.rewrite(&update, &mut Vec::new()).unwrap();
        assert_eq!((hp.table.len(), hp.size), (2, 266));
        hp.rewrite(&[0x20, 0x3f, 0xe1, 0x1f], &mut Vec::new()).unwrap();
        assert_eq!((hp.table.len(), hp.max_size), (0, 4096));
        // An entry bigger than the whole table empties it.
        hp.rewrite(&[0x40, 0x01, b'a', 0x01, b'b'], &mut Vec::new()).unwrap();
        assert_eq!(hp.table.len(), 1);
        let mut huge = vec![0x40, 0x01, b'h'];
        write_int(&mut huge, 0, 7, 5000);
        huge.extend_from_slice(&[b'v'; 5000]);
        hp.rewrite(&huge, &mut Vec::new()).unwrap();
        assert_eq!((hp.table.len(), hp.size), (0, 0));
    }

    #[test]
    fn rewritten_block_size_is_capped() {
        // One 4000-byte entry referenced 20 times would re-encode to 80 KB: refused, passed through.
        let mut hp = Hpack::new();
        let mut block = vec![0x40, 0x01, b'k'];
        write_int(&mut block, 0, 7, 4000);
        block.extend_from_slice(&[b'v'; 4000]);
        block.extend_from_slice(&[0xbe; 20]);
        assert_eq!(hp.rewrite(&block, &mut Vec::new()), Err(Malformed));
    }

    #[test]
    fn strip_scheme_cases() {
        for (input, want) in [
            ("http://127.0.0.1:2379", "127.0.0.1:2379"),
            ("https://127.0.0.1:2379/", "127.0.0.1:2379"),
            ("HTTP://[::1]:2379", "[::1]:2379"),
            ("http://host:1/some/path", "host:1"),
            ("127.0.0.1:2379", "127.0.0.1:2379"),
            ("http://", "http://"),
            ("http:///x", "http:///x"),
            ("unix://x", "unix://x"),
            ("", ""),
        ] {
            assert_eq!(strip_scheme(input.as_bytes()), want.as_bytes(), "{input}");
        }
    }

    #[test]
    fn integers_roundtrip() {
        for prefix in 4..=7 {
            for value in [
                0,
                1,
                14,
                15,
                16,
                126,
                127,
                128,
                255,
                4096,
                16_383,
                1 << 20,
                (1 << 28) - 1,
            ] {
                let mut buf = Vec::new();
                write_int(&mut buf, 0, prefix, value);
                let mut src = &buf[..];
                assert_eq!(read_int(&mut src, prefix), Ok(value), "{prefix} {value}");
                assert!(src.is_empty());
            }
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(read_int(&mut &[0x1f, 0x9a, 0x0a][..], 5), Ok(1337));
    }

    #[test]
    fn huffman_vectors() {
        let mut out = Vec::new();
        // RFC 7541 C.4.1.
        huffman_decode(&hex("f1e3c2e5f23a6ba0ab90f4ff"), &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        // Every octet, encoded by Python hpack.
        out.clear();
        huffman_decode(&hex(ALL_OCTETS_HUFFMAN), &mut out).unwrap();
        assert_eq!(out, (0..=255).collect::<Vec<u8>>());
        out.clear();
        huffman_decode(&hex("9d29aee30c044eae05c0b86e09975f"), &mut out).unwrap();
        assert_eq!(out, b"http://127.0.0.1:2379");
        // 'a' (00011) padded with ones / zeros; eight bits of padding; EOS itself.
        out.clear();
        huffman_decode(&[0x1f], &mut out).unwrap();
        assert_eq!(out, b"a");
        assert_eq!(huffman_decode(&[0x18], &mut Vec::new()), Err(Malformed));
        assert_eq!(huffman_decode(&[0x1f, 0xff], &mut Vec::new()), Err(Malformed));
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut Vec::new()),
            Err(Malformed)
        );
        assert_eq!(huffman_decode(&[], &mut Vec::new()), Ok(()));
    }

    const ALL_OCTETS_HUFFMAN: &str = "ffc7fffd8fffffe2fffffe3fffffe4fffffe5fffffe6fffffe7fffffe8ffffeafffffff3fffffa7\
        fffffabffffffdfffffebfffffecfffffedfffffeefffffefffffff0ffffff1ffffff2fffffffbfffffcffffffd3fffffd7fffffdbfff\
        ffdffffffe3fffffe7fffffebfffffed4fe3f9ffaffcabf1febfafefe7fdfd2cbb00089969b71d79fb9f7fff20ffbff3ff50ddbd7f061\
        c58f265cd9f469d5af66dddbf871e5f9cff7ff7fffc3ff9ffe45fff4719242cb34e6e9d68a6a3d7dac426defe3cfaf7fffbfe7ffbffdff\
        ffffcfffe6ffff4bfff9ffffa3fffd3ffff53fffd5ffffb3fffeb7fffdaffffb7ffff73fffeeffffdeffffebffffbfffffd9ffffdbfffe\
        bffffe0ffffeeffffc3ffff8bffff1ffffe4fffee7fffb1ffff97fffd9ffffcdffff9fffffbffffdafffeeffff4ffffb7fffee7fffe8ff\
        ffd3fffdeffffd5fffeeffffbdffffe1fffdfffff7fffff5ffffecffff07fff87fffe0ffff17fffedffff87ffff77fffeffffeaffff8bf\
        ffe3ffff93ffff87fffcbffff37ffff1fffff83ffffe1fffebfffe3ffff3fffff2ffffa3ffffd9fffff17ffffc7fffff27ffffdefffffb\
        ffffff2fffff8fffffb7fff97fff8fffffe6fffffc1fffff87ffffe7fffffc5ffffe5fffe4ffff2fffffd1fffff4ffffffefffffe3ffff\
        fc9fffff97fffb3ffffcffffb7fffcdffff4ffff9ffffd1ffffcffffeaffffafffffddffffeffffff4fffff5fffffabffffa7ffffd7fff\
        ff9bffffecfffffb7fffff3fffffe8fffffd3fffffabfffff5fffffff7ffffecfffffdbfffffbbfffff7ffffff0fffffbbf";

    /// The HPACK Huffman code built from `HUFFMAN_BITS` (test-side encoder).
    fn huffman_codes() -> Vec<(u32, u32)> {
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (HUFFMAN_BITS[s], s));
        let mut codes = vec![(0u32, 0u32); 257];
        let (mut code, mut prev) = (0u32, u32::from(HUFFMAN_BITS[order[0]]));
        for (i, &s) in order.iter().enumerate() {
            let bits = u32::from(HUFFMAN_BITS[s]);
            if i > 0 {
                code = (code + 1) << (bits - prev);
            }
            prev = bits;
            codes[s] = (code, bits);
        }
        codes
    }

    fn huffman_encode(s: &[u8], codes: &[(u32, u32)]) -> Vec<u8> {
        let (mut acc, mut n, mut out) = (0u64, 0u32, Vec::new());
        for &b in s {
            let (code, bits) = codes[usize::from(b)];
            acc = acc << bits | u64::from(code);
            n += bits;
            while n >= 8 {
                out.push((acc >> (n - 8)) as u8);
                n -= 8;
            }
        }
        if n > 0 {
            out.push((acc << (8 - n)) as u8 | (0xff >> n));
        }
        out
    }

    #[test]
    fn huffman_code_matches_reference_vectors() {
        let codes = huffman_codes();
        assert_eq!(
            huffman_encode(b"www.example.com", &codes),
            hex("f1e3c2e5f23a6ba0ab90f4ff")
        );
        assert_eq!(
            huffman_encode(&(0..=255).collect::<Vec<u8>>(), &codes),
            hex(ALL_OCTETS_HUFFMAN)
        );
    }

    /// A test-side HPACK encoder with its own dynamic table, choosing representations as told.
    struct Encoder {
        table: VecDeque<(Vec<u8>, Vec<u8>)>,
        size: usize,
        max: usize,
        codes: Vec<(u32, u32)>,
    }

    impl Encoder {
        fn new() -> Self {
            Encoder {
                table: VecDeque::new(),
                size: 0,
                max: HEADER_TABLE_SIZE,
                codes: huffman_codes(),
            }
        }

        fn string(&self, out: &mut Vec<u8>, s: &[u8], huffman: bool) {
            if huffman {
                let h = huffman_encode(s, &self.codes);
                write_int(out, 0x80, 7, h.len());
                out.extend_from_slice(&h);
            } else {
                write_int(out, 0, 7, s.len());
                out.extend_from_slice(s);
            }
        }

        fn evict(&mut self, room: usize) {
            while self.size + room > self.max {
                let Some((n, v)) = self.table.pop_back() else { break };
                self.size -= n.len() + v.len() + 32;
            }
        }

        fn find(&self, name: &[u8], value: Option<&[u8]>) -> Option<usize> {
            let fixed = STATIC_TABLE.iter().map(|(n, v)| (*n, *v));
            let dynamic = self.table.iter().map(|(n, v)| (&n[..], &v[..]));
            fixed
                .chain(dynamic)
                .position(|(n, v)| n == name && value.is_none_or(|want| v == want))
                .map(|i| i + 1)
        }

        fn encode(&mut self, size_update: Option<usize>, fields: &[(Vec<u8>, Vec<u8>, u8)]) -> Vec<u8> {
            let mut out = Vec::new();
            if let Some(size) = size_update {
                write_int(&mut out, 0x20, 5, size);
                self.max = size;
                self.evict(0);
            }
            for (name, value, how) in fields {
                let huffman = how & 0x10 != 0;
                match how % 4 {
                    0 if self.find(name, Some(value)).is_some() => {
                        let i = self.find(name, Some(value)).unwrap_or(0);
                        write_int(&mut out, 0x80, 7, i);
                    }
                    0 | 1 => {
                        match self.find(name, None) {
                            Some(i) => write_int(&mut out, 0x40, 6, i),
                            None => {
                                out.push(0x40);
                                self.string(&mut out, name, huffman);
                            }
                        }
                        self.string(&mut out, value, huffman);
                        let size = name.len() + value.len() + 32;
                        if size > self.max {
                            self.table.clear();
                            self.size = 0;
                        } else {
                            self.evict(size);
                            self.table.push_front((name.clone(), value.clone()));
                            self.size += size;
                        }
                    }
                    k => {
                        let first = if k == 2 { 0x00 } else { 0x10 };
                        match self.find(name, None) {
                            Some(i) => write_int(&mut out, first, 4, i),
                            None => {
                                out.push(first);
                                self.string(&mut out, name, huffman);
                            }
                        }
                        self.string(&mut out, value, huffman);
                    }
                }
            }
            out
        }
    }

    fn field_name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => Just(b":authority".to_vec()),
            1 => Just(b":path".to_vec()),
            1 => Just(b"content-type".to_vec()),
            1 => Just(b"authorization".to_vec()),
            1 => Just(b"grpc-timeout".to_vec()),
            1 => proptest::collection::vec(b'a'..=b'z', 1..12),
        ]
    }

    fn field_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            2 => (
                prop_oneof![Just("http://"), Just("https://"), Just("HTTPS://"), Just("")],
                "[a-z0-9.]{1,20}:[0-9]{1,5}",
                prop_oneof![Just(""), Just("/"), Just("/p")],
            )
                .prop_map(|(s, h, p)| format!("{s}{h}{p}").into_bytes()),
            1 => Just(b"POST".to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..40),
            1 => proptest::collection::vec(any::<u8>(), 0..3000),
        ]
    }

    /// One request: an optional size update, its fields (each with a representation choice), how to
    /// frame it (padding, priority, CONTINUATION split points).
    #[derive(Debug, Clone)]
    struct Request {
        size_update: Option<usize>,
        fields: Vec<(Vec<u8>, Vec<u8>, u8)>,
        pad: Option<u8>,
        priority: bool,
        splits: Vec<usize>,
        data: Vec<u8>,
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            proptest::option::weighted(0.15, 0usize..=HEADER_TABLE_SIZE),
            proptest::collection::vec((field_name(), field_value(), any::<u8>()), 0..8),
            proptest::option::weighted(0.2, any::<u8>()),
            proptest::bool::weighted(0.2),
            proptest::collection::vec(0usize..4000, 0..3),
            proptest::collection::vec(any::<u8>(), 0..50),
        )
            .prop_map(|(size_update, fields, pad, priority, splits, data)| Request {
                size_update,
                fields,
                pad,
                priority,
                splits,
                data,
            })
    }

    /// Frames `fragment` as HEADERS (+ CONTINUATIONs at the split points) on `stream`.
    fn header_frames(req: &Request, stream: u32, fragment: &[u8]) -> Vec<u8> {
        let mut cuts: Vec<usize> = req.splits.iter().map(|&s| s.min(fragment.len())).collect();
        // Keep every frame within MAX_FRAME (with room for padding and priority), as a client must.
        cuts.extend((1..=fragment.len() / 16_000).map(|i| i * 16_000));
        cuts.sort_unstable();
        cuts.push(fragment.len());
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let piece = &fragment[start..end.max(start)];
            let last = i + 1 == cuts.len();
            let end_headers = if last { FLAG_END_HEADERS } else { 0 };
            if i == 0 {
                let mut payload = Vec::new();
                let mut flags = end_headers | 0x1;
                if let Some(pad) = req.pad {
                    payload.push(pad);
                    flags |= FLAG_PADDED;
                }
                if req.priority {
                    payload.extend_from_slice(&[0, 0, 0, 0, 7]);
                    flags |= FLAG_PRIORITY;
                }
                payload.extend_from_slice(piece);
                payload.extend(std::iter::repeat_n(0, usize::from(req.pad.unwrap_or(0))));
                out.extend(frame(TYPE_HEADERS, flags, stream, &payload));
            } else {
                out.extend(frame(TYPE_CONTINUATION, end_headers, stream, piece));
            }
            start = end.max(start);
        }
        out
    }

    fn random_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![
                Just(0u8),
                Just(2),
                Just(3),
                Just(4),
                Just(6),
                Just(7),
                Just(8),
                10u8..=255
            ],
            any::<u8>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(kind, flags, stream, payload)| frame(kind, flags, stream, &payload))
    }

    fn chunking() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1usize..300, 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(
            with_preface_too in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            chunks in chunking(),
        ) {
            let input = if with_preface_too { with_preface(&bytes) } else { bytes };
            let _ = run(&input, &chunks);
        }

        #[test]
        fn random_frames_never_panic(
            frames in proptest::collection::vec(
                (prop_oneof![Just(TYPE_HEADERS), Just(TYPE_CONTINUATION), Just(0), Just(TYPE_PUSH_PROMISE)],
                 any::<u8>(), 0u32..4, proptest::collection::vec(any::<u8>(), 0..100)),
                0..12),
            chunks in chunking(),
        ) {
            let mut input = PREFACE.to_vec();
            for (kind, flags, stream, payload) in &frames {
                input.extend(frame(*kind, *flags, *stream, payload));
            }
            let _ = run(&input, &chunks);
        }

        #[test]
        fn streams_without_header_blocks_pass_unchanged(
            frames in proptest::collection::vec(random_frame(), 0..20),
            chunks in chunking(),
        ) {
            let input = with_preface(&frames.concat());
            prop_assert_eq!(run(&input, &chunks), input);
        }

        #[test]
        fn header_blocks_roundtrip_without_dynamic_table(
            requests in proptest::collection::vec(request(), 1..6),
            chunks in chunking(),
        ) {
            let mut enc = Encoder::new();
            let mut input = settings();
            let mut want = Vec::new();
            for (i, req) in requests.iter().enumerate() {
                let stream = 1 + 2 * i as u32;
                let fragment = enc.encode(req.size_update, &req.fields);
                input.extend(header_frames(req, stream, &fragment));
                input.extend(frame(0x0, 0x1, stream, &req.data));
                let fields: Vec<(Vec<u8>, Vec<u8>)> = req
                    .fields
                    .iter()
                    .map(|(n, v, _)| {
                        let v = if n == b":authority" { strip_scheme(v).to_vec() } else { v.clone() };
                        (n.clone(), v)
                    })
                    .collect();
                want.push((stream, req.priority, fields, req.data.clone()));
            }
            let input = with_preface(&input);
            let out = run(&input, &chunks);
            let blocks = output_blocks(&out);
            prop_assert_eq!(blocks.len(), want.len());
            let data: Vec<Frame> = parse_frames(&out[PREFACE.len()..]).into_iter().filter(|f| f.kind == 0).collect();
            for ((stream, flags, fields), (want_stream, priority, want_fields, want_data)) in blocks.iter().zip(&want) {
                prop_assert_eq!(*stream, *want_stream);
                let want_flags = FLAG_END_HEADERS | 0x1 | if *priority { FLAG_PRIORITY } else { 0 };
                prop_assert_eq!(*flags, want_flags);
                prop_assert_eq!(&plain(fields), want_fields);
                let d = data.iter().find(|f| f.stream == *want_stream).unwrap();
                prop_assert_eq!(&d.payload, want_data);
            }
        }
    }

    /// Serves one connection with hyper as `serve()` does (optionally through `AuthorityFix`) and
    /// reports each request's authority.
    fn spawn_server(io: tokio::io::DuplexStream, fix: bool) -> tokio::sync::mpsc::UnboundedReceiver<Option<String>> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let _ = tx.send(req.uri().authority().map(|a| a.to_string()));
            async { Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok"))) }
        });
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(None).adaptive_window(true);
            let result = if fix {
                builder
                    .serve_connection(TokioIo::new(AuthorityFix::new(io)), service)
                    .await
            } else {
                builder.serve_connection(TokioIo::new(io), service).await
            };
            drop(result);
        });
        rx
    }

    /// Reads server frames until `stream` gets a HEADERS (response) or RST_STREAM frame; returns its type.
    async fn response_kind(client: &mut tokio::io::DuplexStream, stream: u32) -> u8 {
        use tokio::io::AsyncReadExt;
        let wait = async {
            loop {
                let mut head = [0u8; 9];
                client.read_exact(&mut head).await.unwrap();
                let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                let mut payload = vec![0; len];
                client.read_exact(&mut payload).await.unwrap();
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                if id == stream && (head[3] == TYPE_HEADERS || head[3] == 0x3) {
                    return head[3];
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn hyper_serves_scheme_authority_through_the_fix() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut authorities = spawn_server(server, true);
        let mut input = with_preface(&settings());
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | 0x1, 1, &hex(PY_BLOCK1)));
        client.write_all(&input).await.unwrap();
        assert_eq!(response_kind(&mut client, 1).await, TYPE_HEADERS);
        assert_eq!(authorities.recv().await.unwrap().as_deref(), Some("127.0.0.1:2379"));
        // The next request names the authority by dynamic index only.
        client
            .write_all(&frame(TYPE_HEADERS, FLAG_END_HEADERS | 0x1, 3, &hex(PY_BLOCK2)))
            .await
            .unwrap();
        assert_eq!(response_kind(&mut client, 3).await, TYPE_HEADERS);
        assert_eq!(authorities.recv().await.unwrap().as_deref(), Some("127.0.0.1:2379"));
        // And the captured etcdctl request, with its DATA frame, one byte per write.
        let mut req = frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &hex(ETCDCTL_STATUS));
        req.extend(frame(0x0, 0x1, 5, &[0, 0, 0, 0, 0]));
        for b in req {
            client.write_all(&[b]).await.unwrap();
        }
        assert_eq!(response_kind(&mut client, 5).await, TYPE_HEADERS);
        assert_eq!(authorities.recv().await.unwrap().as_deref(), Some("127.0.0.1:23791"));
    }

    #[tokio::test]
    async fn hyper_resets_scheme_authority_without_the_fix() {
        // The problem this module exists for: without it, h2 resets the stream.
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let _authorities = spawn_server(server, false);
        let mut input = with_preface(&settings());
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | 0x1, 1, &hex(PY_BLOCK1)));
        client.write_all(&input).await.unwrap();
        assert_eq!(response_kind(&mut client, 1).await, 0x3, "RST_STREAM");
    }

    #[tokio::test]
    async fn small_reads_and_http1_through_the_wrapper() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut input = with_preface(&settings());
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &hex(ETCDCTL_STATUS)));
        input.extend(frame(0x0, 0x1, 1, &[1, 2, 3]));
        let want = run(&input, &[usize::MAX]);
        for http1 in [false, true] {
            let input = if http1 {
                b"GET / HTTP/1.1\r\n\r\n".to_vec()
            } else {
                input.clone()
            };
            let want = if http1 { input.clone() } else { want.clone() };
            let (mut client, server) = tokio::io::duplex(13);
            let writer = tokio::spawn(async move {
                client.write_all(&input).await.unwrap();
                client.shutdown().await.unwrap();
                client
            });
            let mut fixed = AuthorityFix::new(server);
            let mut got = Vec::new();
            let mut buf = [0u8; 5];
            loop {
                let n = fixed.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want);
            drop(writer.await.unwrap());
        }
    }
}
