//! A fixed, preallocated batch of frames.
//!
//! The daemon owns one [`FrameBatch`] and reuses it for every receive, so the
//! fast path never allocates. Each frame lives in its own fixed-size slot of
//! one contiguous buffer; that layout lets datagram plugs point one `iovec`
//! per slot at it and receive a whole batch with a single `recvmmsg`.
//! Beside each frame sits its [`Offload`] metadata: plain for frames from
//! sockets, possibly a super-frame or a pending checksum for frames from a
//! tap with vnet headers.

use crate::offload::Offload;

/// Bytes per slot: room for the largest frame switchboard handles, a 64 KiB
/// TCP super-frame from an offloading tap (an IP packet of up to 65535 bytes,
/// a 14-byte Ethernet header and one 802.1Q tag), plus margin, so a frame
/// that fills the slot completely is known to be oversized. The memory is
/// reserved once; pages a batch never touches are never made resident.
pub const MAX_FRAME_SLOT: usize = 65535 + 14 + 4 + 47;

/// Frames per batch. Batches of 32 amortise syscalls well on datagram sockets
/// (quinn-udp uses the same number); past that, the gain is small and latency
/// for other ports grows.
pub const BATCH_CAPACITY: usize = 32;

/// The indices `0..BATCH_CAPACITY`, so "send the whole batch" is
/// `send_batch(&batch, &ALL_FRAMES[..batch.len()])` without building a list.
pub const ALL_FRAMES: [u16; BATCH_CAPACITY] = {
    let mut a = [0u16; BATCH_CAPACITY];
    let mut i = 0;
    while i < BATCH_CAPACITY {
        a[i] = i as u16;
        i += 1;
    }
    a
};

/// A reusable buffer of up to [`BATCH_CAPACITY`] frames.
pub struct FrameBatch {
    buf: Box<[u8]>,
    lens: [usize; BATCH_CAPACITY],
    offloads: [Offload; BATCH_CAPACITY],
    count: usize,
}

impl FrameBatch {
    /// Allocates the batch once, up front.
    pub fn new() -> Self {
        FrameBatch {
            buf: vec![0u8; MAX_FRAME_SLOT * BATCH_CAPACITY].into_boxed_slice(),
            lens: [0; BATCH_CAPACITY],
            offloads: [Offload::default(); BATCH_CAPACITY],
            count: 0,
        }
    }

    /// Forgets all frames, keeping the memory.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// How many frames the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the batch holds no frames.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when no further frame fits.
    pub fn is_full(&self) -> bool {
        self.count == BATCH_CAPACITY
    }

    /// Free slots left.
    pub fn remaining(&self) -> usize {
        BATCH_CAPACITY - self.count
    }

    /// The `i`th frame. Panics if `i >= len()`, which is a caller bug.
    pub fn frame(&self, i: usize) -> &[u8] {
        assert!(i < self.count, "frame index out of range");
        let start = i * MAX_FRAME_SLOT;
        &self.buf[start..start + self.lens[i]]
    }

    /// Mutable access to the `i`th frame, for in-place rewrites.
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.count, "frame index out of range");
        let start = i * MAX_FRAME_SLOT;
        &mut self.buf[start..start + self.lens[i]]
    }

    /// The next free slot, to receive into. Call [`commit`](Self::commit)
    /// with the received length afterwards. Returns `None` when full.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.count * MAX_FRAME_SLOT;
        Some(&mut self.buf[start..start + MAX_FRAME_SLOT])
    }

    /// Marks the next slot as holding a frame of `len` bytes (clamped to the
    /// slot size: a clamped frame is oversized by construction).
    pub fn commit(&mut self, len: usize) {
        self.commit_offloaded(len, Offload::default());
    }

    /// Like [`commit`](Self::commit), for a frame that carries offload work
    /// (a super-frame to segment, a checksum to fill in).
    pub fn commit_offloaded(&mut self, len: usize, offload: Offload) {
        assert!(!self.is_full(), "commit on a full batch");
        self.lens[self.count] = len.min(MAX_FRAME_SLOT);
        self.offloads[self.count] = offload;
        self.count += 1;
    }

    /// The offload metadata of the `i`th frame.
    pub fn offload(&self, i: usize) -> &Offload {
        assert!(i < self.count, "frame index out of range");
        &self.offloads[i]
    }

    /// The largest frame the `i`th frame becomes on a wire: its own length,
    /// or for a super-frame, one segment's headers plus payload. The header
    /// length is read from the L4 header that `csum_start` points at, since
    /// Linux fills `hdr_len` with the skb's linear length, which may include
    /// payload.
    pub fn wire_len(&self, i: usize) -> usize {
        let off = self.offload(i);
        let frame = self.frame(i);
        if !off.is_gso() || off.gso_size == 0 {
            return frame.len();
        }
        let l4 = usize::from(off.csum_start);
        let l4_len = match off.gso_type & !0x80 {
            // TCPV4, TCPV6: data offset in 32-bit words
            1 | 4 => frame.get(l4 + 12).map(|b| usize::from(b >> 4) * 4),
            // UDP_L4
            5 => Some(8),
            _ => None,
        };
        match l4_len {
            Some(n) if off.needs_csum() => frame.len().min(l4 + n + usize::from(off.gso_size)),
            // Linux always marks super-frames NEEDS_CSUM; without it the
            // header length is unknown, and the whole frame is what counts
            // (so the MTU check drops it rather than guess).
            _ => frame.len(),
        }
    }

    /// All free slots at once, for plugs that receive several frames in one
    /// syscall. After the syscall, call [`commit`](Self::commit) once per
    /// frame received, in slot order.
    pub fn free_slots(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let start = self.count * MAX_FRAME_SLOT;
        self.buf[start..].chunks_exact_mut(MAX_FRAME_SLOT)
    }

    /// Commits a frame of `len` bytes that a multi-datagram receive left
    /// `skip` free slots beyond the next one, moving it into the next slot
    /// first, so datagrams refused in between leave no gap (`skip` 0 is a
    /// plain [`commit`](Self::commit)). The move happens only on abnormal
    /// traffic.
    pub fn commit_from(&mut self, skip: usize, len: usize) {
        self.commit_offloaded_from(skip, len, Offload::default());
    }

    /// [`commit_from`](Self::commit_from) for a frame that carries offload
    /// work.
    pub fn commit_offloaded_from(&mut self, skip: usize, len: usize, offload: Offload) {
        if skip > 0 {
            let dst = self.count * MAX_FRAME_SLOT;
            let src = dst + skip * MAX_FRAME_SLOT;
            let n = len.min(MAX_FRAME_SLOT);
            if src + n <= self.buf.len() {
                self.buf.copy_within(src..src + n, dst);
            }
        }
        self.commit_offloaded(len, offload);
    }

    /// Appends a copy of `frame` (for tests and for frames the core itself
    /// originates). Returns false when the batch is full.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let Some(slot) = self.next_slot() else {
            return false;
        };
        let n = frame.len().min(MAX_FRAME_SLOT);
        slot[..n].copy_from_slice(&frame[..n]);
        self.commit(frame.len());
        true
    }
}

impl Default for FrameBatch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_read_back() {
        let mut b = FrameBatch::new();
        assert!(b.push(&[1, 2, 3]));
        assert!(b.push(&[4; 100]));
        assert_eq!(b.len(), 2);
        assert_eq!(b.frame(0), &[1, 2, 3]);
        assert_eq!(b.frame(1), &[4; 100][..]);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn fills_up_and_refuses() {
        let mut b = FrameBatch::new();
        for _ in 0..BATCH_CAPACITY {
            assert!(b.push(&[0; 60]));
        }
        assert!(b.is_full());
        assert!(!b.push(&[0; 60]));
        assert!(b.next_slot().is_none());
    }

    #[test]
    fn oversized_commit_is_clamped_to_slot() {
        let mut b = FrameBatch::new();
        b.next_slot().unwrap();
        b.commit(100_000);
        assert_eq!(b.frame(0).len(), MAX_FRAME_SLOT);
    }

    #[test]
    fn wire_len_of_a_super_frame_is_one_segment() {
        let mut b = FrameBatch::new();
        let mut f = vec![0u8; 20_000];
        // Ethernet 14 + IPv4 20, TCP header at 34 with data offset 8 words
        f[34 + 12] = 8 << 4;
        let off = Offload {
            flags: 1,
            gso_type: 1,
            hdr_len: 200, // a loose hdr_len, as Linux reports skb_headlen
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        b.next_slot().unwrap()[..f.len()].copy_from_slice(&f);
        b.commit_offloaded(f.len(), off);
        b.push(&[0u8; 60]);
        assert_eq!(b.wire_len(0), 34 + 32 + 1448);
        assert_eq!(b.wire_len(1), 60);
        assert!(b.offload(1).is_plain());
    }

    #[test]
    fn free_slots_start_after_committed_frames() {
        let mut b = FrameBatch::new();
        b.push(&[9; 10]);
        assert_eq!(b.free_slots().count(), BATCH_CAPACITY - 1);
    }

    #[test]
    fn commit_from_moves_a_frame_down_over_refused_slots() {
        let mut b = FrameBatch::new();
        assert!(b.push(b"first"));
        {
            let mut slots = b.free_slots();
            slots.next().unwrap()[..4].copy_from_slice(b"drop");
            slots.next().unwrap()[..4].copy_from_slice(b"keep");
        }
        b.commit_from(1, 4);
        assert_eq!(b.len(), 2);
        assert_eq!(b.frame(1), b"keep");
        b.commit_from(0, 0);
        assert_eq!(b.len(), 3);
    }
}
