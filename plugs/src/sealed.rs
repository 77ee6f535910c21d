//! Sealed datagrams: the wire format of encrypted UDP tunnels, and the
//! replay window that guards their receiving end.
//!
//! A tunnel between two switchboards may cross a network neither end
//! trusts. `vde_cryptcab` answered that with Blowfish in CBC mode, no
//! authentication and a key exchange over `scp`; here every datagram is
//! sealed with ChaCha20-Poly1305 (RFC 8439) under a pre-shared 32-byte key,
//! so a datagram that was forged, altered, cut short, replayed or reflected
//! back at its sender never reaches the segment. Everything in this module
//! is pure: randomness and the clock come from the caller, which keeps the
//! rules testable byte for byte.
//!
//! # Wire format
//!
//! ```text
//!  0        1                5                        13             n-16      n
//! +--------+----------------+------------------------+---------------+---------+
//! | 0xB1   | session id (4) | counter (8, big-endian)| ciphertext    | tag (16)|
//! +--------+----------------+------------------------+---------------+---------+
//!  \_______________ header: associated data ________/ \_ the frame _/
//! ```
//!
//! * `0xB1` names this format, version 1; anything else is refused.
//! * The *session id* is drawn at random (from the OS) each time a sender
//!   starts, and the *counter* goes up by one per datagram. The 12-byte
//!   ChaCha20 nonce is `session id || counter`, so within a session a
//!   nonce is never used twice.
//! * The counter does not start at zero: the sender starts it at the wall
//!   clock in nanoseconds since the Unix epoch. A sender restarted with the
//!   same key (and, with probability 2^-32, the same session id) therefore
//!   still never repeats a nonce unless it sent more than a billion
//!   datagrams a second, and its new session's counters are above every
//!   counter of its old one, which is what lets a receiver refuse old
//!   sessions (below).
//! * The 13-byte header is authenticated as associated data, so the
//!   session id and counter cannot be changed without the tag failing.
//! * The ciphertext is the Ethernet frame, exactly as long as it.
//!
//! # Receiving
//!
//! A receiver follows one sender session at a time, with the highest
//! counter seen and a 64-bit bitmap of which of the 64 counters below it
//! arrived (RFC 4303's anti-replay window, the size WireGuard and IPsec
//! use). A datagram is accepted once: a counter already marked is a
//! replay, one 64 or more below the highest is too old to tell and is
//! refused as well. The window check happens before the (costlier) tag
//! check, and the window is only updated after the tag checked out, so
//! forgeries cannot move it.
//!
//! A datagram from a *different* session (the peer restarted) that
//! authenticates replaces the window, but only if its counter is above the
//! highest counter of the current session. Without that rule an attacker
//! could replay a recording of an older session: it authenticates (same
//! key), would reset the window, and its frames would be accepted again.
//! The price: if a peer's clock steps backwards across its restart, its
//! new session is refused until this end restarts too (the refusals are
//! counted as replays, and the tunnel logs them).
//!
//! A datagram carrying the receiver's *own* session id is its own datagram
//! sent back (or, once in 2^32 starts, a peer that drew the same id, which
//! would mean both directions share nonces). Either way it is refused as
//! [`Reject::Reflected`], and the tunnel draws a new session id for itself
//! (see [`Sealer::renew_session`]). The receiver keeps recognising the last
//! [`OWN_SESSIONS`] ids it sent under, so older reflections stay refused
//! too.

use std::fmt;
use std::ops::Range;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};

/// The first byte of every sealed datagram: this format, version 1. A
/// fixed byte lets a receiver refuse another format (or a plain tunnel
/// pointed at an encrypted one) before spending a tag check on it.
pub const VERSION: u8 = 0xB1;

/// Bytes before the ciphertext: version, session id, counter.
pub const HEADER_LEN: usize = 1 + 4 + 8;

/// Bytes of the Poly1305 tag after the ciphertext.
pub const TAG_LEN: usize = 16;

/// What sealing adds to a frame, so MTUs and byte counters can allow for it.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// How many counters below the highest one the replay window remembers.
pub const WINDOW: u64 = 64;

/// How many of this end's own session ids (current and renewed-away) a
/// receiver recognises, to refuse its own datagrams sent back at it.
pub const OWN_SESSIONS: usize = 16;

/// A pre-shared 256-bit key. Its own type so it never shows up in logs or
/// `Debug` output, and so its bytes are wiped when it is dropped (best
/// effort: the cipher keeps its own copy).
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

/// Why a key file's text is not a key, said so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not 64 hex digits (after trimming white space): how many there were.
    Length(usize),
    /// A character that is not a hex digit, at this (0-based) position of
    /// the trimmed text.
    NotHex(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(
                f,
                "expected 64 hex digits (a 32-byte key), found {n} characters; make a key with `openssl rand -hex 32`"
            ),
            KeyError::NotHex(at) => write!(
                f,
                "character {} is not a hex digit; a key is 64 hex digits (`openssl rand -hex 32`)",
                at + 1
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl Key {
    /// Wraps raw key bytes (from a test, or a key store of the caller's).
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// Reads a key written as 64 hex digits, upper or lower case, with
    /// white space around it (a key file ends with a newline): the form
    /// `openssl rand -hex 32` prints, easy to copy to the other host.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let text = text.trim();
        // A wrong length is the likelier story for a short file with a
        // stray character; bad characters are reported at full length.
        let count = text.chars().count();
        if count != 64 {
            return Err(KeyError::Length(count));
        }
        if let Some(at) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(KeyError::NotHex(at));
        }
        // 64 ASCII hex digits: 64 bytes.
        let digits = text.as_bytes();
        let mut key = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(KeyError::NotHex(2 * i))?;
            let lo = hex_value(pair[1]).ok_or(KeyError::NotHex(2 * i + 1))?;
            key[i] = hi << 4 | lo;
        }
        Ok(Key(key))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.0.into())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        for b in &mut self.0 {
            // SAFETY: `b` is a valid, aligned, exclusive reference; the
            // volatile write only keeps the compiler from eliding the wipe.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The 12-byte nonce for a datagram: session id, then counter.
fn nonce(header: &[u8; HEADER_LEN]) -> Nonce {
    let mut n = [0u8; 12];
    n.copy_from_slice(&header[1..HEADER_LEN]);
    n.into()
}

/// The sending half of an encrypted tunnel: it owns the nonce sequence,
/// so it is the one place that can promise a nonce is never reused.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    session: [u8; 4],
    next: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field(
                "session",
                &format_args!("{:08x}", u32::from_be_bytes(self.session)),
            )
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sender for a new session. `session` must come from the OS's
    /// random source, and `first_counter` should be the wall clock in
    /// nanoseconds since the Unix epoch (see the module documentation for
    /// why).
    pub fn new(key: &Key, session: [u8; 4], first_counter: u64) -> Sealer {
        Sealer {
            cipher: key.cipher(),
            session,
            next: first_counter,
        }
    }

    /// The session id datagrams are sealed under now.
    pub fn session(&self) -> [u8; 4] {
        self.session
    }

    /// The counter the next datagram gets.
    pub fn next_counter(&self) -> u64 {
        self.next
    }

    /// Moves to a new session id, keeping the counter running: the peer
    /// accepts the new session at once (its counters are above the old
    /// ones) and no nonce of the old session can repeat. Used when a
    /// datagram with our own session id came back at us.
    pub fn renew_session(&mut self, session: [u8; 4]) {
        self.session = session;
    }

    /// Seals `frame` into the start of `out` and returns the datagram's
    /// length (`frame.len() + OVERHEAD`). `None` when `out` is too small or
    /// the counter is exhausted (after 2^64 datagrams; nothing is sealed
    /// then rather than reuse a nonce).
    pub fn seal(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let total = frame.len().checked_add(OVERHEAD)?;
        if out.len() < total || self.next == u64::MAX {
            return None;
        }
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..5].copy_from_slice(&self.session);
        header[5..13].copy_from_slice(&self.next.to_be_bytes());
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        let (body, rest) = rest.split_at_mut(frame.len());
        let buf = InOutBuf::new(frame, body).ok()?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(&header), &header, buf)
            .ok()?;
        head.copy_from_slice(&header);
        rest[..TAG_LEN].copy_from_slice(&tag);
        self.next += 1;
        Some(total)
    }
}

/// Why a datagram was refused. Each maps to one of the three counters a
/// tunnel shows ([`SealStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than a header and a tag, or cut to fit the receive buffer.
    Truncated,
    /// The first byte is not [`VERSION`]: another format, or a plain tunnel.
    UnknownVersion,
    /// The tag does not check out: wrong key, altered or made-up bytes.
    Forged,
    /// This session and counter were accepted before.
    Replayed,
    /// The counter is [`WINDOW`] or more below the highest one accepted,
    /// so whether it was seen is no longer known.
    TooOld,
    /// An authentic datagram of a session other than the current one whose
    /// counter is not above the current session's: a recording of an older
    /// session (or a peer whose clock went backwards).
    StaleSession,
    /// An authentic datagram carrying our own session id: our own traffic
    /// sent back, or a peer that drew the same id.
    Reflected,
}

/// Which counter a refusal adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectClass {
    /// Cut short.
    Truncated,
    /// Not made with the key (or not this format).
    Forged,
    /// Made with the key, but already seen or not for us.
    Replayed,
}

impl Reject {
    /// The counter this refusal is shown under.
    pub fn class(self) -> RejectClass {
        match self {
            Reject::Truncated => RejectClass::Truncated,
            Reject::UnknownVersion | Reject::Forged => RejectClass::Forged,
            Reject::Replayed | Reject::TooOld | Reject::StaleSession | Reject::Reflected => {
                RejectClass::Replayed
            }
        }
    }
}

/// Refused datagrams by class: what an operator needs to tell a wrong key
/// (forged), an attack or a duplicating network (replayed) and a bad MTU
/// (truncated) apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealStats {
    /// Datagrams whose tag did not check out (or of another format).
    pub forged: u64,
    /// Authentic datagrams refused by the replay rules.
    pub replayed: u64,
    /// Datagrams too short to hold a header and a tag, or cut short.
    pub truncated: u64,
}

impl SealStats {
    /// Counts one refusal.
    pub fn count(&mut self, r: Reject) {
        match r.class() {
            RejectClass::Truncated => self.truncated += 1,
            RejectClass::Forged => self.forged += 1,
            RejectClass::Replayed => self.replayed += 1,
        }
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.forged + self.replayed + self.truncated
    }
}

/// The replay state of one sender session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    session: [u8; 4],
    highest: u64,
    /// Bit `i` set: counter `highest - i` was accepted.
    seen: u64,
}

impl Window {
    fn new(session: [u8; 4], counter: u64) -> Window {
        Window {
            session,
            highest: counter,
            seen: 1,
        }
    }

    /// Whether `counter` may still be accepted.
    fn check(&self, counter: u64) -> Result<(), Reject> {
        if counter > self.highest {
            return Ok(());
        }
        let behind = self.highest - counter;
        if behind >= WINDOW {
            Err(Reject::TooOld)
        } else if self.seen & (1 << behind) != 0 {
            Err(Reject::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as accepted (after [`check`](Self::check) passed).
    fn mark(&mut self, counter: u64) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = counter;
        } else {
            self.seen |= 1 << (self.highest - counter);
        }
    }
}

/// What an accepted datagram gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where the frame lies in the datagram buffer, decrypted in place.
    pub frame: Range<usize>,
    /// True when this datagram started following a new sender session (the
    /// first one, or the peer restarted): worth a log line.
    pub new_session: bool,
}

/// The receiving half of an encrypted tunnel: checks, decrypts and keeps
/// the replay window, so nothing unauthentic or repeated gets through.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    /// This end's session ids, newest at `own_next - 1` (a ring).
    own: [[u8; 4]; OWN_SESSIONS],
    own_len: usize,
    own_next: usize,
    peer: Option<Window>,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// A receiver that has seen no sender yet. `own_session` is this end's
    /// sending session id, so reflected datagrams are recognised.
    pub fn new(key: &Key, own_session: [u8; 4]) -> Opener {
        let mut o = Opener {
            cipher: key.cipher(),
            own: [[0; 4]; OWN_SESSIONS],
            own_len: 0,
            own_next: 0,
            peer: None,
        };
        o.add_own_session(own_session);
        o
    }

    /// Learns this end's new session id after [`Sealer::renew_session`];
    /// the previous ones stay recognised (the last [`OWN_SESSIONS`]).
    pub fn add_own_session(&mut self, session: [u8; 4]) {
        self.own[self.own_next] = session;
        self.own_next = (self.own_next + 1) % OWN_SESSIONS;
        self.own_len = (self.own_len + 1).min(OWN_SESSIONS);
    }

    /// Whether `session` is one this end sent under.
    fn is_own(&self, session: [u8; 4]) -> bool {
        self.own[..self.own_len].contains(&session)
    }

    /// The sender session followed now, if any datagram was accepted yet.
    pub fn peer_session(&self) -> Option<[u8; 4]> {
        self.peer.map(|w| w.session)
    }

    /// The highest counter accepted from the current sender session.
    pub fn peer_highest(&self) -> Option<u64> {
        self.peer.map(|w| w.highest)
    }

    /// Checks and decrypts one datagram in place. On success the frame is
    /// at `datagram[opened.frame]`; on failure the window is unchanged and
    /// the datagram must be dropped. Never panics, whatever the bytes.
    pub fn open(&mut self, datagram: &mut [u8]) -> Result<Opened, Reject> {
        if datagram.len() < OVERHEAD {
            return Err(Reject::Truncated);
        }
        if datagram[0] != VERSION {
            return Err(Reject::UnknownVersion);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&datagram[..HEADER_LEN]);
        let mut session = [0u8; 4];
        session.copy_from_slice(&header[1..5]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&header[5..13]);
        let counter = u64::from_be_bytes(counter);

        // The cheap refusal first: a replay within the current session.
        let current = self.peer.filter(|w| w.session == session);
        if let Some(w) = current {
            w.check(counter)?;
        }

        let end = datagram.len() - TAG_LEN;
        let (body, tag) = datagram[HEADER_LEN..].split_at_mut(end - HEADER_LEN);
        let tag = Tag::try_from(&*tag).map_err(|_| Reject::Truncated)?;
        self.cipher
            .decrypt_inout_detached(&nonce(&header), &header, InOutBuf::from(body), &tag)
            .map_err(|_| Reject::Forged)?;

        if self.is_own(session) {
            return Err(Reject::Reflected);
        }
        let new_session = match (current, self.peer.as_mut()) {
            (Some(_), Some(w)) => {
                w.mark(counter);
                false
            }
            (None, Some(w)) if counter <= w.highest => return Err(Reject::StaleSession),
            _ => {
                self.peer = Some(Window::new(session, counter));
                true
            }
        };
        Ok(Opened {
            frame: HEADER_LEN..end,
            new_session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];
    const A: [u8; 4] = [0xa1, 0xa2, 0xa3, 0xa4];
    const B: [u8; 4] = [0xb1, 0xb2, 0xb3, 0xb4];
    const T0: u64 = 1_700_000_000_000_000_000;

    fn key() -> Key {
        Key::from_bytes(KEY)
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + 5) as u8).collect()
    }

    fn seal(s: &mut Sealer, f: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; f.len() + OVERHEAD + 7];
        let n = s.seal(f, &mut out).expect("room");
        out.truncate(n);
        out
    }

    fn open(o: &mut Opener, d: &[u8]) -> Result<Vec<u8>, Reject> {
        let mut d = d.to_vec();
        let opened = o.open(&mut d)?;
        Ok(d[opened.frame].to_vec())
    }

    #[test]
    fn datagram_layout_is_version_session_counter_ciphertext_tag() {
        let mut s = Sealer::new(&key(), A, 0x0102_0304_0506_0708);
        let f = frame(60);
        let d = seal(&mut s, &f);
        assert_eq!(d.len(), 60 + OVERHEAD);
        assert_eq!(d[0], VERSION);
        assert_eq!(&d[1..5], &A);
        assert_eq!(&d[5..13], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_ne!(&d[13..73], &f[..], "the frame is encrypted");
        assert_eq!(s.next_counter(), 0x0102_0304_0506_0709);
        // The same frame sealed again differs (new nonce).
        let d2 = seal(&mut s, &f);
        assert_eq!(&d2[5..13], &[1, 2, 3, 4, 5, 6, 7, 9]);
        assert_ne!(&d[13..], &d2[13..]);
    }

    #[test]
    fn the_cipher_is_rfc8439_chacha20_poly1305() {
        // RFC 8439 section 2.8.2: key 80..9f, nonce 07000000 40..47.
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let mut nonce = [0u8; 12];
        nonce[0] = 7;
        for (i, b) in nonce[4..].iter_mut().enumerate() {
            *b = 0x40 + i as u8;
        }
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let tag = Key::from_bytes(key)
            .cipher()
            .encrypt_inout_detached(&nonce.into(), &aad, InOutBuf::from(&mut text[..]))
            .unwrap();
        assert_eq!(
            &text[..8],
            &[0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb]
        );
        assert_eq!(
            tag.as_slice(),
            &[
                0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
                0x06, 0x91
            ]
        );
    }

    #[test]
    fn nonce_is_session_and_counter_and_the_header_is_associated_data() {
        // Sealing equals the AEAD over (nonce = session || counter,
        // aad = the 13-byte header, message = the frame).
        let mut s = Sealer::new(&key(), A, 42);
        let f = frame(100);
        let d = seal(&mut s, &f);
        let mut body = f.clone();
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..5].copy_from_slice(&A);
        header[5..].copy_from_slice(&42u64.to_be_bytes());
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&A);
        n[4..].copy_from_slice(&42u64.to_be_bytes());
        let tag = key()
            .cipher()
            .encrypt_inout_detached(&n.into(), &header, InOutBuf::from(&mut body[..]))
            .unwrap();
        assert_eq!(&d[..13], &header);
        assert_eq!(&d[13..113], &body[..]);
        assert_eq!(&d[113..], tag.as_slice());
    }

    #[test]
    fn round_trip_of_many_sizes() {
        let mut s = Sealer::new(&key(), A, T0);
        let mut o = Opener::new(&key(), B);
        for len in [0, 1, 14, 60, 1514, 9018, 65000] {
            let f = frame(len);
            assert_eq!(open(&mut o, &seal(&mut s, &f)), Ok(f), "len {len}");
        }
        assert_eq!(o.peer_session(), Some(A));
        assert_eq!(o.peer_highest(), Some(T0 + 6));
    }

    #[test]
    fn first_datagram_reports_a_new_session() {
        let mut s = Sealer::new(&key(), A, T0);
        let mut o = Opener::new(&key(), B);
        let mut d = seal(&mut s, &frame(60));
        assert_eq!(
            o.open(&mut d),
            Ok(Opened {
                frame: HEADER_LEN..HEADER_LEN + 60,
                new_session: true
            })
        );
        let mut d = seal(&mut s, &frame(60));
        assert!(!o.open(&mut d).unwrap().new_session);
    }

    #[test]
    fn seal_refuses_small_buffers_and_an_exhausted_counter() {
        let mut s = Sealer::new(&key(), A, T0);
        let mut out = [0u8; 60 + OVERHEAD - 1];
        assert_eq!(s.seal(&frame(60), &mut out), None);
        assert_eq!(s.next_counter(), T0, "nothing used up");
        let mut s = Sealer::new(&key(), A, u64::MAX - 1);
        let mut out = [0u8; 200];
        assert_eq!(s.seal(&frame(60), &mut out), Some(60 + OVERHEAD));
        assert_eq!(s.seal(&frame(60), &mut out), None);
        assert_eq!(s.seal(&frame(60), &mut out), None);
    }

    #[test]
    fn wrong_key_is_forged() {
        let mut s = Sealer::new(&Key::from_bytes([8; 32]), A, T0);
        let mut o = Opener::new(&key(), B);
        assert_eq!(open(&mut o, &seal(&mut s, &frame(60))), Err(Reject::Forged));
        assert_eq!(o.peer_session(), None, "a forgery moves nothing");
    }

    #[test]
    fn replay_is_refused_and_out_of_order_within_the_window_accepted_once() {
        let mut s = Sealer::new(&key(), A, T0);
        let mut o = Opener::new(&key(), B);
        let ds: Vec<Vec<u8>> = (0..70).map(|i| seal(&mut s, &frame(20 + i))).collect();
        assert!(open(&mut o, &ds[0]).is_ok());
        assert_eq!(open(&mut o, &ds[0]), Err(Reject::Replayed));
        // Jump ahead, then the skipped ones arrive late.
        assert!(open(&mut o, &ds[10]).is_ok());
        assert_eq!(open(&mut o, &ds[5]), Ok(frame(25)));
        assert_eq!(open(&mut o, &ds[5]), Err(Reject::Replayed));
        assert!(open(&mut o, &ds[1]).is_ok());
        assert_eq!(open(&mut o, &ds[10]), Err(Reject::Replayed));
        // Counter 66 makes the highest T0+66: T0+2 is 64 behind, too old;
        // T0+3 (63 behind) still counts.
        assert!(open(&mut o, &ds[66]).is_ok());
        assert_eq!(open(&mut o, &ds[2]), Err(Reject::TooOld));
        assert_eq!(open(&mut o, &ds[3]), Ok(frame(23)));
        assert_eq!(open(&mut o, &ds[3]), Err(Reject::Replayed));
        assert_eq!(open(&mut o, &ds[66]), Err(Reject::Replayed));
        assert_eq!(open(&mut o, &ds[65]), Ok(frame(85)));
    }

    #[test]
    fn a_far_jump_clears_the_window() {
        let mut s = Sealer::new(&key(), A, T0);
        let mut o = Opener::new(&key(), B);
        let first = seal(&mut s, &frame(30));
        let _skipped: Vec<Vec<u8>> = (0..200).map(|_| seal(&mut s, &frame(30))).collect();
        let late = seal(&mut s, &frame(31));
        assert!(open(&mut o, &late).is_ok());
        assert_eq!(open(&mut o, &first), Err(Reject::TooOld));
        assert_eq!(open(&mut o, &late), Err(Reject::Replayed));
    }

    #[test]
    fn truncated_and_foreign_datagrams_are_refused() {
        let mut s = Sealer::new(&key(), A, T0);
        let mut o = Opener::new(&key(), B);
        let d = seal(&mut s, &frame(60));
        for cut in [0, 1, 12, 13, OVERHEAD - 1] {
            assert_eq!(open(&mut o, &d[..cut]), Err(Reject::Truncated), "cut {cut}");
        }
        // Cut anywhere past the minimum: the tag fails.
        for cut in [OVERHEAD, 40, d.len() - 1] {
            assert_eq!(open(&mut o, &d[..cut]), Err(Reject::Forged), "cut {cut}");
        }
        let mut other = d.clone();
        other[0] = 0xB2;
        assert_eq!(open(&mut o, &other), Err(Reject::UnknownVersion));
        // An empty frame sealed is exactly OVERHEAD bytes and is fine.
        let e = seal(&mut s, &[]);
        assert_eq!(e.len(), OVERHEAD);
        assert_eq!(open(&mut o, &e), Ok(vec![]));
        // The uncut datagram still opens: refusals did not move the window.
        assert_eq!(open(&mut o, &d), Ok(frame(60)));
    }

    #[test]
    fn a_restarted_peer_is_followed_once_authentic_and_old_sessions_stay_out() {
        let mut o = Opener::new(&key(), B);
        let mut old = Sealer::new(&key(), A, T0);
        let old_ds: Vec<Vec<u8>> = (0..5).map(|i| seal(&mut old, &frame(40 + i))).collect();
        for d in &old_ds[..3] {
            assert!(open(&mut o, d).is_ok());
        }
        // A forgery claiming a new session does not reset anything.
        let mut forger = Sealer::new(&Key::from_bytes([9; 32]), [1, 2, 3, 4], T0 + 1_000_000);
        assert_eq!(
            open(&mut o, &seal(&mut forger, &frame(60))),
            Err(Reject::Forged)
        );
        assert_eq!(o.peer_session(), Some(A));
        // The peer restarts a second later: new id, clock-based counter.
        let new_id = [0xc1, 0xc2, 0xc3, 0xc4];
        let mut new = Sealer::new(&key(), new_id, T0 + 1_000_000_000);
        let mut d = seal(&mut new, &frame(50));
        assert!(o.open(&mut d).unwrap().new_session);
        assert_eq!(o.peer_session(), Some(new_id));
        // The old session's datagrams, even unseen ones, are refused now.
        assert_eq!(open(&mut o, &old_ds[0]), Err(Reject::StaleSession));
        assert_eq!(open(&mut o, &old_ds[4]), Err(Reject::StaleSession));
        assert_eq!(o.peer_session(), Some(new_id));
        assert_eq!(open(&mut o, &seal(&mut new, &frame(51))), Ok(frame(51)));
    }

    #[test]
    fn own_session_coming_back_is_reflected_and_renewal_is_accepted_by_the_peer() {
        let mut a_tx = Sealer::new(&key(), A, T0);
        let mut a_rx = Opener::new(&key(), A);
        let mut b_rx = Opener::new(&key(), B);
        let d = seal(&mut a_tx, &frame(60));
        assert_eq!(open(&mut a_rx, &d), Err(Reject::Reflected));
        assert_eq!(open(&mut b_rx, &d), Ok(frame(60)));
        // A draws a new id; B follows it at once, and the old one is out.
        let renewed = [0xd1, 0xd2, 0xd3, 0xd4];
        a_tx.renew_session(renewed);
        a_rx.add_own_session(renewed);
        let d2 = seal(&mut a_tx, &frame(61));
        assert_eq!(&d2[1..5], &renewed);
        assert_eq!(open(&mut a_rx, &d2), Err(Reject::Reflected));
        assert_eq!(open(&mut b_rx, &d2), Ok(frame(61)));
        assert_eq!(b_rx.peer_session(), Some(renewed));
        // The old id's datagram reflected later is still ours, not a peer.
        assert_eq!(open(&mut a_rx, &d), Err(Reject::Reflected));
        assert_eq!(a_rx.peer_session(), None);
        // And B refuses the old session now that it follows the new one.
        assert_eq!(open(&mut b_rx, &d), Err(Reject::StaleSession));
    }

    #[test]
    fn own_session_ids_are_remembered_up_to_a_bound() {
        let mut o = Opener::new(&key(), [0, 0, 0, 0]);
        for i in 1..OWN_SESSIONS as u8 {
            o.add_own_session([i, 0, 0, 0]);
        }
        let mut s = Sealer::new(&key(), [0, 0, 0, 0], T0);
        assert_eq!(open(&mut o, &seal(&mut s, &[1])), Err(Reject::Reflected));
        // One more renewal pushes the very first id out of the ring.
        o.add_own_session([99, 0, 0, 0]);
        assert_eq!(open(&mut o, &seal(&mut s, &[1])), Ok(vec![1]));
        let mut s = Sealer::new(&key(), [1, 0, 0, 0], T0);
        assert_eq!(open(&mut o, &seal(&mut s, &[1])), Err(Reject::Reflected));
    }

    #[test]
    fn rejects_map_to_three_counters() {
        let mut st = SealStats::default();
        for r in [
            Reject::Truncated,
            Reject::UnknownVersion,
            Reject::Forged,
            Reject::Replayed,
            Reject::TooOld,
            Reject::StaleSession,
            Reject::Reflected,
        ] {
            st.count(r);
        }
        assert_eq!(
            st,
            SealStats {
                forged: 2,
                replayed: 4,
                truncated: 1
            }
        );
        assert_eq!(st.total(), 7);
    }

    #[test]
    fn keys_parse_from_hex_and_errors_say_what_is_wrong() {
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let k = Key::from_hex(&format!("  {hex}\n")).unwrap();
        let mut want = [0u8; 32];
        for i in 0..16 {
            want[i] = (i as u8) * 0x11;
            want[31 - i] = (i as u8) * 0x11;
        }
        assert_eq!(k, Key::from_bytes(want));
        assert_eq!(Key::from_hex(&hex[..63]), Err(KeyError::Length(63)));
        assert_eq!(Key::from_hex(""), Err(KeyError::Length(0)));
        assert_eq!(
            Key::from_hex(&format!("{hex}00")),
            Err(KeyError::Length(66))
        );
        let mut bad = hex.to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(Key::from_hex(&bad), Err(KeyError::NotHex(10)));
        assert!(KeyError::NotHex(10).to_string().contains("character 11"));
        assert!(KeyError::Length(3).to_string().contains("64 hex digits"));
        // Multi-byte characters do not split or panic.
        assert_eq!(
            Key::from_hex("é".repeat(32).as_str()),
            Err(KeyError::Length(32))
        );
        assert_eq!(
            Key::from_hex("é".repeat(64).as_str()),
            Err(KeyError::NotHex(0))
        );
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_frame_round_trips(f in proptest::collection::vec(any::<u8>(), 0..2000),
                                 session in any::<[u8; 4]>(), start in 0u64..u64::MAX - 1) {
            let mut own = session;
            own[0] ^= 0xff;
            let mut s = Sealer::new(&key(), session, start);
            let mut o = Opener::new(&key(), own);
            let d = seal(&mut s, &f);
            prop_assert_eq!(d.len(), f.len() + OVERHEAD);
            prop_assert_eq!(open(&mut o, &d), Ok(f));
            prop_assert_eq!(open(&mut o, &d), Err(Reject::Replayed));
        }

        #[test]
        fn any_bit_flip_is_refused(f in proptest::collection::vec(any::<u8>(), 0..300),
                                   bit in any::<proptest::sample::Index>()) {
            let mut s = Sealer::new(&key(), A, T0);
            let mut o = Opener::new(&key(), B);
            let mut d = seal(&mut s, &f);
            let bit = bit.index(d.len() * 8);
            d[bit / 8] ^= 1 << (bit % 8);
            let r = open(&mut o, &d);
            prop_assert!(r.is_err(), "flipped bit {} accepted", bit);
            let want = if bit < 8 { Reject::UnknownVersion } else { Reject::Forged };
            prop_assert_eq!(r, Err(want));
            prop_assert_eq!(o.peer_session(), None);
        }

        #[test]
        fn random_bytes_never_panic_and_never_open(
            mut d in proptest::collection::vec(any::<u8>(), 0..200),
            versioned in any::<bool>(),
        ) {
            if versioned && !d.is_empty() {
                d[0] = VERSION;
            }
            let mut o = Opener::new(&key(), B);
            prop_assert!(o.open(&mut d).is_err());
        }

        #[test]
        fn every_counter_is_accepted_at_most_once(
            order in proptest::collection::vec(0usize..100, 1..300),
        ) {
            let mut s = Sealer::new(&key(), A, T0);
            let mut o = Opener::new(&key(), B);
            let ds: Vec<Vec<u8>> = (0..100).map(|_| seal(&mut s, &[1, 2, 3])).collect();
            let mut accepted = [false; 100];
            let mut highest: Option<usize> = None;
            for &i in &order {
                let r = open(&mut o, &ds[i]);
                // The model: accepted iff not yet accepted and within the
                // window of the highest accepted so far.
                let fresh = !accepted[i] && highest.is_none_or(|h| i > h || h - i < 64);
                prop_assert_eq!(r.is_ok(), fresh, "counter {} order {:?}", i, order);
                if fresh {
                    accepted[i] = true;
                    highest = Some(highest.map_or(i, |h| h.max(i)));
                }
            }
        }
    }
}
