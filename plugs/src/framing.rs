//! Length-prefixed framing of Ethernet frames on byte streams.
//!
//! A stream socket has no message boundaries, so every peer that carries
//! frames over one puts a length in front of each frame. Two conventions are
//! in use, and they are not interchangeable:
//!
//! * [`Framing::Qemu`]: a 4-byte big-endian length that does not count
//!   itself. QEMU's `-netdev stream` and legacy `-netdev socket`, passt,
//!   libkrun's unixstream and socket_vmnet all speak it (QEMU
//!   `net/stream.c`: `writev([htonl(len), frame])`).
//! * [`Framing::Vde`]: a 2-byte big-endian length. `vde_plug` on its
//!   stdin/stdout, `dpipe` and `ssh` cables and vdeplug4's `cmd://` speak it
//!   (`libvdeplug4/libvdestream.c`).
//!
//! This module is pure: no I/O, no clock. [`FrameDecoder`] takes whatever
//! chunks a socket returned (half a length prefix, three frames and a bit,
//! one byte at a time) and yields whole frames into a [`FrameBatch`];
//! [`Framing::encode_header`] makes the prefix for the send side. A length
//! of zero or above the configured limit cannot be resynchronised (there is
//! no marker to search for), so it is a fatal [`FramingError`]: the
//! connection must be closed, as QEMU does ("oversized packet received,
//! connection terminated").

use std::fmt;

use crate::batch::{FrameBatch, MAX_FRAME_SLOT};

/// The default longest frame a decoder accepts: an IPv4/IPv6 packet of the
/// largest size an IP length field allows, plus an Ethernet header and one
/// 802.1Q tag. Stream peers never send super-frames, so anything longer is
/// garbage or an attack on our memory.
pub const DEFAULT_MAX_FRAME: usize = 65535 + 14 + 4;

/// Which length prefix a stream uses. Both are big-endian and count only
/// the frame, not the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// 4-byte length: QEMU `-netdev stream`/`socket`, passt, libkrun,
    /// socket_vmnet.
    Qemu,
    /// 2-byte length: `vde_plug` stdin/stdout, `dpipe`, ssh cables,
    /// vdeplug4 `cmd://`.
    Vde,
}

impl Framing {
    /// Bytes of the length prefix.
    pub const fn header_len(self) -> usize {
        match self {
            Framing::Qemu => 4,
            Framing::Vde => 2,
        }
    }

    /// The largest frame length the prefix can express.
    pub const fn max_encodable(self) -> usize {
        match self {
            Framing::Qemu => u32::MAX as usize,
            Framing::Vde => u16::MAX as usize,
        }
    }

    /// A short name for logs and the port table.
    pub const fn name(self) -> &'static str {
        match self {
            Framing::Qemu => "qemu",
            Framing::Vde => "vde",
        }
    }

    /// The prefix for a frame of `len` bytes. Fails for an empty frame (the
    /// peer would treat it as fatal) and for a length the prefix cannot
    /// express.
    pub fn encode_header(self, len: usize) -> Result<FrameHeader, FramingError> {
        if len == 0 {
            return Err(FramingError::ZeroLength);
        }
        if len > self.max_encodable() {
            return Err(FramingError::TooLong {
                len,
                max: self.max_encodable(),
            });
        }
        let mut bytes = [0u8; 4];
        match self {
            // The range check above makes both casts lossless.
            Framing::Qemu => bytes.copy_from_slice(&(len as u32).to_be_bytes()),
            Framing::Vde => bytes[..2].copy_from_slice(&(len as u16).to_be_bytes()),
        }
        Ok(FrameHeader {
            bytes,
            len: self.header_len() as u8,
        })
    }

    /// Appends the prefix and `frame` to `out`: for tests and for control
    /// paths; the data path writes [`FrameHeader`]s with vectored I/O.
    pub fn encode_into(self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
        let header = self.encode_header(frame.len())?;
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(frame);
        Ok(())
    }

    /// Reads a complete prefix (`bytes.len() == header_len()`).
    fn decode_header(self, bytes: &[u8]) -> usize {
        match self {
            Framing::Qemu => u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            Framing::Vde => usize::from(u16::from_be_bytes([bytes[0], bytes[1]])),
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An encoded length prefix, kept on the stack so the send path can point
/// an `iovec` at it without allocating. The default is an empty prefix, a
/// placeholder for arrays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; 4],
    len: u8,
}

impl FrameHeader {
    /// The prefix bytes, 2 or 4 of them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Why a stream can no longer be decoded (or a frame not encoded). Fatal
/// for a decoder: the position of the next frame is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// A length prefix of zero: no peer sends empty frames, so the stream
    /// is garbage or out of step.
    ZeroLength,
    /// A length above the limit.
    TooLong {
        /// The length in the prefix (or of the frame to encode).
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::ZeroLength => write!(f, "frame length 0"),
            FramingError::TooLong { len, max } => {
                write!(f, "frame length {len} exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for FramingError {}

/// Turns a byte stream back into frames.
///
/// Frames that arrive whole inside one chunk are copied straight into the
/// batch; only a frame split across chunks is assembled in the decoder's own
/// buffer first (allocated once, `max_frame` bytes). After a
/// [`FramingError`] the decoder stays failed and consumes nothing more.
#[derive(Debug)]
pub struct FrameDecoder {
    framing: Framing,
    max_frame: usize,
    /// The prefix bytes seen so far.
    header: [u8; 4],
    header_have: usize,
    /// Length of the frame being read; 0 while reading a prefix.
    body_len: usize,
    /// A frame that straddles chunks, `partial_have` bytes of it so far.
    partial: Box<[u8]>,
    partial_have: usize,
    failed: Option<FramingError>,
}

impl FrameDecoder {
    /// A decoder for `framing` that accepts frames of 1 to `max_frame`
    /// bytes. `max_frame` is clamped to what the prefix can express and to
    /// [`MAX_FRAME_SLOT`] (a frame that fills a batch slot is treated as
    /// oversized downstream anyway), and to at least 1.
    pub fn new(framing: Framing, max_frame: usize) -> FrameDecoder {
        let max_frame = max_frame.clamp(1, framing.max_encodable().min(MAX_FRAME_SLOT));
        FrameDecoder {
            framing,
            max_frame,
            header: [0; 4],
            header_have: 0,
            body_len: 0,
            partial: vec![0u8; max_frame].into_boxed_slice(),
            partial_have: 0,
            failed: None,
        }
    }

    /// The framing this decoder reads.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The longest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// True when part of a frame (or of its prefix) has been consumed but
    /// the frame is not complete: an EOF now cuts a frame short.
    pub fn is_mid_frame(&self) -> bool {
        self.header_have > 0 || self.body_len > 0
    }

    /// The error that stopped the decoder, if any.
    pub fn error(&self) -> Option<&FramingError> {
        self.failed.as_ref()
    }

    /// Forgets any partial frame and a past error, for a new connection.
    pub fn reset(&mut self) {
        self.header_have = 0;
        self.body_len = 0;
        self.partial_have = 0;
        self.failed = None;
    }

    /// Consumes bytes of `input`, appending every frame they complete to
    /// `batch`.
    ///
    /// Returns how many bytes were consumed: all of `input`, unless `batch`
    /// filled up, in which case the caller keeps the rest and feeds it again
    /// once the batch has room. A bad length fails the decoder for good;
    /// frames completed before it are already in the batch.
    pub fn feed(&mut self, input: &[u8], batch: &mut FrameBatch) -> Result<usize, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let header_len = self.framing.header_len();
        let mut pos = 0;
        loop {
            if batch.is_full() {
                return Ok(pos);
            }
            if self.body_len == 0 {
                let take = (header_len - self.header_have).min(input.len() - pos);
                self.header[self.header_have..self.header_have + take]
                    .copy_from_slice(&input[pos..pos + take]);
                self.header_have += take;
                pos += take;
                if self.header_have < header_len {
                    return Ok(pos);
                }
                self.header_have = 0;
                let len = self.framing.decode_header(&self.header[..header_len]);
                if len == 0 {
                    return Err(self.fail(FramingError::ZeroLength));
                }
                if len > self.max_frame {
                    return Err(self.fail(FramingError::TooLong {
                        len,
                        max: self.max_frame,
                    }));
                }
                self.body_len = len;
                self.partial_have = 0;
            }
            let available = input.len() - pos;
            if self.partial_have == 0 && available >= self.body_len {
                // The whole frame is in this chunk: one copy, into the batch.
                batch.push(&input[pos..pos + self.body_len]);
                pos += self.body_len;
                self.body_len = 0;
                continue;
            }
            let take = (self.body_len - self.partial_have).min(available);
            self.partial[self.partial_have..self.partial_have + take]
                .copy_from_slice(&input[pos..pos + take]);
            self.partial_have += take;
            pos += take;
            if self.partial_have < self.body_len {
                return Ok(pos);
            }
            batch.push(&self.partial[..self.body_len]);
            self.body_len = 0;
            self.partial_have = 0;
        }
    }

    /// Records a fatal error and returns it.
    fn fail(&mut self, e: FramingError) -> FramingError {
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BATCH_CAPACITY;
    use proptest::prelude::*;

    fn frame(seed: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + seed * 101) as u8).collect()
    }

    fn encode_all(framing: Framing, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            framing.encode_into(f, &mut out).unwrap();
        }
        out
    }

    /// Feeds `chunks` in order, draining the batch whenever it fills, and
    /// returns every frame decoded (and the error, if one stopped it).
    fn decode_chunks<'a>(
        decoder: &mut FrameDecoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Vec<u8>>, Option<FramingError>) {
        let mut batch = FrameBatch::new();
        let mut frames = Vec::new();
        let drain = |batch: &mut FrameBatch, frames: &mut Vec<Vec<u8>>| {
            frames.extend((0..batch.len()).map(|i| batch.frame(i).to_vec()));
            batch.clear();
        };
        for mut chunk in chunks {
            loop {
                match decoder.feed(chunk, &mut batch) {
                    Ok(n) => {
                        assert!(n <= chunk.len());
                        chunk = &chunk[n..];
                        if chunk.is_empty() {
                            break;
                        }
                        assert!(batch.is_full(), "input left over with room in the batch");
                        drain(&mut batch, &mut frames);
                    }
                    Err(e) => {
                        drain(&mut batch, &mut frames);
                        return (frames, Some(e));
                    }
                }
            }
        }
        drain(&mut batch, &mut frames);
        (frames, None)
    }

    #[test]
    fn headers_are_big_endian_and_exclude_themselves() {
        // QEMU's DHCPDISCOVER example: 00 00 01 ba + 442 bytes.
        assert_eq!(
            Framing::Qemu.encode_header(442).unwrap().as_bytes(),
            &[0, 0, 1, 0xba]
        );
        assert_eq!(
            Framing::Vde.encode_header(1514).unwrap().as_bytes(),
            &[0x05, 0xea]
        );
        assert_eq!(
            Framing::Vde.encode_header(65535).unwrap().as_bytes(),
            &[0xff, 0xff]
        );
        assert_eq!(
            Framing::Vde.encode_header(65536),
            Err(FramingError::TooLong {
                len: 65536,
                max: 65535
            })
        );
        assert_eq!(
            Framing::Qemu.encode_header(0),
            Err(FramingError::ZeroLength)
        );
    }

    #[test]
    fn several_frames_in_one_chunk_and_byte_at_a_time() {
        for framing in [Framing::Qemu, Framing::Vde] {
            let frames: Vec<Vec<u8>> = [60, 1, 1514, 9000, 64, 65535]
                .iter()
                .enumerate()
                .map(|(i, &len)| frame(i, len))
                .collect();
            let stream = encode_all(framing, &frames);

            let mut decoder = FrameDecoder::new(framing, DEFAULT_MAX_FRAME);
            let (got, err) = decode_chunks(&mut decoder, [&stream[..]]);
            assert_eq!(err, None);
            assert_eq!(got, frames, "{framing}: one chunk");
            assert!(!decoder.is_mid_frame());

            let mut decoder = FrameDecoder::new(framing, DEFAULT_MAX_FRAME);
            let (got, err) = decode_chunks(&mut decoder, stream.chunks(1));
            assert_eq!(err, None);
            assert_eq!(got, frames, "{framing}: byte at a time");
        }
    }

    #[test]
    fn a_full_batch_stops_consumption_without_losing_bytes() {
        let frames: Vec<Vec<u8>> = (0..BATCH_CAPACITY + 5).map(|i| frame(i, 70)).collect();
        let stream = encode_all(Framing::Qemu, &frames);
        let mut decoder = FrameDecoder::new(Framing::Qemu, DEFAULT_MAX_FRAME);
        let mut batch = FrameBatch::new();
        let used = decoder.feed(&stream, &mut batch).unwrap();
        assert!(batch.is_full());
        assert_eq!(used, BATCH_CAPACITY * 74);
        // Full batch: nothing consumed.
        assert_eq!(decoder.feed(&stream[used..], &mut batch).unwrap(), 0);
        batch.clear();
        assert_eq!(
            decoder.feed(&stream[used..], &mut batch).unwrap(),
            stream.len() - used
        );
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.frame(4), &frames[BATCH_CAPACITY + 4][..]);
    }

    #[test]
    fn zero_and_oversized_lengths_are_fatal() {
        let mut decoder = FrameDecoder::new(Framing::Qemu, 1518);
        let mut stream = encode_all(Framing::Qemu, &[frame(1, 100)]);
        stream.extend_from_slice(&1519u32.to_be_bytes());
        stream.extend_from_slice(&[0; 1519]);
        let (got, err) = decode_chunks(&mut decoder, [&stream[..]]);
        assert_eq!(got, vec![frame(1, 100)], "the frame before the bad one");
        assert_eq!(
            err,
            Some(FramingError::TooLong {
                len: 1519,
                max: 1518
            })
        );
        // Sticky: nothing more is consumed.
        let mut batch = FrameBatch::new();
        assert!(decoder.feed(&[0, 0, 0, 1, 9], &mut batch).is_err());
        assert!(batch.is_empty());
        decoder.reset();
        assert_eq!(decoder.feed(&[0, 0, 0, 1, 9], &mut batch), Ok(5));
        assert_eq!(batch.frame(0), &[9]);

        let mut decoder = FrameDecoder::new(Framing::Vde, DEFAULT_MAX_FRAME);
        let (_, err) = decode_chunks(&mut decoder, [&[0u8, 0, 1, 2][..]]);
        assert_eq!(err, Some(FramingError::ZeroLength));

        // QEMU's own limit is 69632; ours is lower, and the slot bounds it.
        let decoder = FrameDecoder::new(Framing::Qemu, 1 << 30);
        assert_eq!(decoder.max_frame(), MAX_FRAME_SLOT);
        assert_eq!(FrameDecoder::new(Framing::Vde, 1 << 20).max_frame(), 65535);
    }

    #[test]
    fn mid_frame_is_reported() {
        let mut decoder = FrameDecoder::new(Framing::Vde, DEFAULT_MAX_FRAME);
        let mut batch = FrameBatch::new();
        decoder.feed(&[0], &mut batch).unwrap();
        assert!(decoder.is_mid_frame());
        decoder.feed(&[3, 1, 2], &mut batch).unwrap();
        assert!(decoder.is_mid_frame());
        decoder.feed(&[3], &mut batch).unwrap();
        assert!(!decoder.is_mid_frame());
        assert_eq!(batch.frame(0), &[1, 2, 3]);
    }

    fn framing_strategy() -> impl Strategy<Value = Framing> {
        prop_oneof![Just(Framing::Qemu), Just(Framing::Vde)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any frames, cut at any points, come back exactly.
        #[test]
        fn random_chunkings_reassemble_exactly(
            framing in framing_strategy(),
            lens in prop::collection::vec(prop_oneof![1usize..80, 1usize..3000, 60000usize..65536], 0..50),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let frames: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &l)| frame(i, l)).collect();
            let stream = encode_all(framing, &frames);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let mut decoder = FrameDecoder::new(framing, DEFAULT_MAX_FRAME);
            let (got, err) = decode_chunks(&mut decoder, chunks);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, frames);
            prop_assert!(!decoder.is_mid_frame());
        }

        /// Garbage never panics, and whatever comes out respects the limit.
        #[test]
        fn garbage_never_panics(
            framing in framing_strategy(),
            max in 1usize..70000,
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let mut decoder = FrameDecoder::new(framing, max);
            let (got, _err) = decode_chunks(&mut decoder, chunks.iter().map(Vec::as_slice));
            for f in got {
                prop_assert!(!f.is_empty() && f.len() <= decoder.max_frame());
            }
        }
    }
}
