//! The VDE2 control request and reply, as bytes.
//!
//! Pure parsing and encoding, no I/O. A client opens a stream connection to
//! the switch's `ctl` socket and writes one packed C struct, in host byte
//! order:
//!
//! ```text
//! v3 (every current client):
//!   0   u32  magic 0xfeedface
//!   4   u32  version = 3
//!   8   u32  type: low byte 0 = new port, 1 = port 0; bits 8.. = wanted port
//!  12   u16  sun_family = AF_UNIX
//!  14  [108] sun_path: the client's bound datagram socket, NUL padded
//! 122  [n]   description, n <= 128, not NUL terminated
//!
//! v1 (legacy; recognised because its type sits where v3 has the version):
//!   0   u32  magic 0xfeedface
//!   4   u32  type: 0 = new port, 1 = port 0
//!   8  [6]   MAC address (unused by the switch)
//!  14   u16  sun_family, then [108] sun_path as above
//! 124  [n]   description
//! ```
//!
//! The switch answers with the 110-byte `sockaddr_un` of the datagram socket
//! it created for the client ([`encode_reply`]).

use std::ffi::OsStr;
use std::fmt;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The first four bytes of every request: tells a VDE client from a stray
/// connection.
pub const REQUEST_MAGIC: u32 = 0xfeed_face;

/// The most bytes a switch reads for one request (`REQBUFLEN` in
/// `vde_switch`). A valid request is at most 124 + 128 bytes.
pub const MAX_REQUEST_LEN: usize = 256;

/// The longest description a client sends (`MAXDESCR` in libvdeplug).
pub const MAX_DESCRIPTION_LEN: usize = 128;

/// `sizeof(struct sockaddr_un)` on Linux: the size of the reply, and of the
/// address inside a request.
pub const SOCKADDR_UN_LEN: usize = 110;

/// Bytes of `sun_path`, including room for the terminating NUL.
pub const SUN_PATH_LEN: usize = 108;

/// Bytes of a v3 request before its description.
pub const V3_FIXED_LEN: usize = 122;

/// Bytes of a v1 request before its description.
pub const V1_FIXED_LEN: usize = 124;

/// Where each field lives, so no offset appears twice.
mod field {
    use std::ops::Range;

    pub const MAGIC: Range<usize> = 0..4;
    /// v3: the version. v1: the request type.
    pub const VERSION: Range<usize> = 4..8;
    pub const V3_TYPE: Range<usize> = 8..12;
    pub const V3_ADDR: Range<usize> = 12..12 + super::SOCKADDR_UN_LEN;
    pub const V1_MAC: Range<usize> = 8..14;
    pub const V1_ADDR: Range<usize> = 14..14 + super::SOCKADDR_UN_LEN;
    /// Within a `sockaddr_un`.
    pub const FAMILY: Range<usize> = 0..2;
    pub const PATH: Range<usize> = 2..2 + super::SUN_PATH_LEN;
}

/// `REQ_NEW_CONTROL`: an ordinary port.
const TYPE_NEW_CONTROL: u32 = 0;
/// `REQ_NEW_PORT0`: the special port 0.
const TYPE_NEW_PORT0: u32 = 1;

/// Which request layout a client used; kept so the port table can show old
/// clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVersion {
    /// The pre-2006 layout with a MAC address and no version field.
    V1,
    /// The layout of vde-2 and vdeplug4 clients.
    V3,
}

/// The port a client asked for. The switch decides whether to grant it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    /// Any free port (`vde://dir` or `vde://dir[0]` on old clients).
    Any,
    /// This port number, always at least 1 (`vde://dir[5]`).
    Number(u16),
    /// Port 0, the management port of `vde_switch` (`REQ_NEW_PORT0`).
    Zero,
}

/// A parsed control request: what the switch needs to create a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdeRequest {
    /// The layout the client spoke.
    pub version: RequestVersion,
    /// The port the client asked for.
    pub port: PortRequest,
    /// Where the client's datagram socket is bound; the switch connects its
    /// data socket here.
    pub client_path: PathBuf,
    /// The client's free-text label (e.g. `"QEMU user=root pid=42"`), with
    /// invalid UTF-8 replaced and trailing NULs removed.
    pub description: String,
    /// The MAC address a v1 client announced; v3 has none.
    pub mac: Option<[u8; 6]>,
}

/// Why a request or reply could not be parsed or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Fewer bytes than the layout needs.
    Short {
        /// Bytes received.
        got: usize,
        /// Bytes the layout needs.
        need: usize,
    },
    /// More than [`MAX_REQUEST_LEN`] bytes.
    TooLong(usize),
    /// The first word is not [`REQUEST_MAGIC`] (a "v0" client or garbage).
    BadMagic(u32),
    /// Version 2 or above 3: no switch ever spoke these.
    UnsupportedVersion(u32),
    /// The low byte of the type is neither "new port" nor "port 0".
    BadType(u32),
    /// The requested port number does not fit a `u16`.
    PortOutOfRange(u32),
    /// The address family is not `AF_UNIX`.
    BadFamily(u16),
    /// The socket path is empty (an unnamed or abstract socket).
    EmptyPath,
    /// The socket path fills all 108 bytes with no terminating NUL.
    PathNotTerminated,
    /// A path to encode does not fit in `sun_path` with its NUL.
    PathTooLong(usize),
    /// The description is longer than [`MAX_DESCRIPTION_LEN`].
    DescriptionTooLong(usize),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Short { got, need } => {
                write!(f, "short request: {got} bytes, need {need}")
            }
            RequestError::TooLong(n) => {
                write!(f, "request too long: {n} bytes, at most {MAX_REQUEST_LEN}")
            }
            RequestError::BadMagic(m) => write!(f, "bad magic {m:#010x}, not a VDE client"),
            RequestError::UnsupportedVersion(v) => write!(f, "unsupported request version {v}"),
            RequestError::BadType(t) => write!(f, "unknown request type {t:#x}"),
            RequestError::PortOutOfRange(p) => write!(f, "requested port {p} out of range"),
            RequestError::BadFamily(fam) => write!(f, "address family {fam} is not AF_UNIX"),
            RequestError::EmptyPath => write!(f, "client socket path is empty"),
            RequestError::PathNotTerminated => {
                write!(f, "client socket path is not NUL-terminated")
            }
            RequestError::PathTooLong(n) => {
                write!(f, "socket path of {n} bytes does not fit in sockaddr_un")
            }
            RequestError::DescriptionTooLong(n) => {
                write!(f, "description of {n} bytes, at most {MAX_DESCRIPTION_LEN}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Reads a host-order `u32`; `range` must lie inside `bytes` (checked by the
/// callers' length checks).
fn read_u32(bytes: &[u8], range: Range<usize>) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[range]);
    u32::from_ne_bytes(word)
}

/// Tells, from the first bytes of a request, how many bytes its fixed part
/// needs, so a reader knows when it has enough.
///
/// Returns `Ok(None)` while fewer than 8 bytes are known, and fails as soon
/// as the magic or version rules the request out.
pub fn fixed_len(prefix: &[u8]) -> Result<Option<usize>, RequestError> {
    if prefix.len() < field::VERSION.end {
        return Ok(None);
    }
    let magic = read_u32(prefix, field::MAGIC);
    if magic != REQUEST_MAGIC {
        return Err(RequestError::BadMagic(magic));
    }
    match read_u32(prefix, field::VERSION) {
        3 => Ok(Some(V3_FIXED_LEN)),
        // In v1 this word is the type: REQ_NEW_CONTROL or REQ_NEW_PORT0.
        TYPE_NEW_CONTROL | TYPE_NEW_PORT0 => Ok(Some(V1_FIXED_LEN)),
        other => Err(RequestError::UnsupportedVersion(other)),
    }
}

impl VdeRequest {
    /// Parses a complete request, exactly as received (no trailing bytes
    /// other than the description).
    pub fn parse(bytes: &[u8]) -> Result<VdeRequest, RequestError> {
        if bytes.len() > MAX_REQUEST_LEN {
            return Err(RequestError::TooLong(bytes.len()));
        }
        let Some(need) = fixed_len(bytes)? else {
            return Err(RequestError::Short {
                got: bytes.len(),
                need: field::VERSION.end,
            });
        };
        if bytes.len() < need {
            return Err(RequestError::Short {
                got: bytes.len(),
                need,
            });
        }
        let (version, kind, addr, mac) = if need == V3_FIXED_LEN {
            (
                RequestVersion::V3,
                read_u32(bytes, field::V3_TYPE),
                &bytes[field::V3_ADDR],
                None,
            )
        } else {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&bytes[field::V1_MAC]);
            (
                RequestVersion::V1,
                read_u32(bytes, field::VERSION),
                &bytes[field::V1_ADDR],
                Some(mac),
            )
        };
        let port = parse_type(kind)?;
        let client_path = parse_sockaddr(addr)?;
        let description = parse_description(&bytes[need..])?;
        Ok(VdeRequest {
            version,
            port,
            client_path,
            description,
            mac,
        })
    }

    /// Encodes the request in the v3 layout, the way libvdeplug sends it
    /// (fixed part plus the description, no padding). For clients and tests;
    /// `version` and `mac` are ignored.
    pub fn encode_v3(&self) -> Result<Vec<u8>, RequestError> {
        let description = self.description.as_bytes();
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(RequestError::DescriptionTooLong(description.len()));
        }
        let kind = match self.port {
            PortRequest::Any => TYPE_NEW_CONTROL,
            PortRequest::Number(n) => TYPE_NEW_CONTROL | (u32::from(n) << 8),
            PortRequest::Zero => TYPE_NEW_PORT0,
        };
        let mut out = Vec::with_capacity(V3_FIXED_LEN + description.len());
        out.extend_from_slice(&REQUEST_MAGIC.to_ne_bytes());
        out.extend_from_slice(&3u32.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&encode_sockaddr(&self.client_path)?);
        out.extend_from_slice(description);
        Ok(out)
    }
}

/// Splits the type word into the kind of request and the wanted port.
fn parse_type(kind: u32) -> Result<PortRequest, RequestError> {
    match kind & 0xff {
        TYPE_NEW_CONTROL => match kind >> 8 {
            0 => Ok(PortRequest::Any),
            n => u16::try_from(n)
                .map(PortRequest::Number)
                .map_err(|_| RequestError::PortOutOfRange(n)),
        },
        TYPE_NEW_PORT0 => Ok(PortRequest::Zero),
        _ => Err(RequestError::BadType(kind)),
    }
}

/// Reads a 110-byte `sockaddr_un` naming a filesystem socket.
fn parse_sockaddr(addr: &[u8]) -> Result<PathBuf, RequestError> {
    if addr.len() < SOCKADDR_UN_LEN {
        return Err(RequestError::Short {
            got: addr.len(),
            need: SOCKADDR_UN_LEN,
        });
    }
    let family = u16::from_ne_bytes([addr[field::FAMILY.start], addr[field::FAMILY.start + 1]]);
    if family != libc::AF_UNIX as u16 {
        return Err(RequestError::BadFamily(family));
    }
    let path = &addr[field::PATH];
    match path.iter().position(|&b| b == 0) {
        None => Err(RequestError::PathNotTerminated),
        Some(0) => Err(RequestError::EmptyPath),
        Some(end) => Ok(PathBuf::from(OsStr::from_bytes(&path[..end]))),
    }
}

/// Turns the description bytes into text for logs and the port table.
fn parse_description(bytes: &[u8]) -> Result<String, RequestError> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    if bytes.len() > MAX_DESCRIPTION_LEN {
        return Err(RequestError::DescriptionTooLong(bytes.len()));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Encodes `path` as a `sockaddr_un`: family, then the path NUL-padded to
/// 108 bytes.
fn encode_sockaddr(path: &Path) -> Result<[u8; SOCKADDR_UN_LEN], RequestError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(RequestError::EmptyPath);
    }
    if bytes.len() >= SUN_PATH_LEN || bytes.contains(&0) {
        return Err(RequestError::PathTooLong(bytes.len()));
    }
    let mut out = [0u8; SOCKADDR_UN_LEN];
    out[field::FAMILY].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    out[field::PATH.start..field::PATH.start + bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// The switch's reply: the `sockaddr_un` of the data socket it bound for the
/// client, exactly [`SOCKADDR_UN_LEN`] bytes, as `vde_switch` writes it.
pub fn encode_reply(data_path: &Path) -> Result<[u8; SOCKADDR_UN_LEN], RequestError> {
    encode_sockaddr(data_path)
}

/// Reads a switch's reply (the client side of [`encode_reply`]); for tests
/// and for a future client plug.
pub fn decode_reply(bytes: &[u8]) -> Result<PathBuf, RequestError> {
    if bytes.len() != SOCKADDR_UN_LEN {
        return Err(RequestError::Short {
            got: bytes.len(),
            need: SOCKADDR_UN_LEN,
        });
    }
    parse_sockaddr(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 request "give me port 5" from client socket `/tmp/c`, with
    /// description "testdescr", as a little-endian host sends it.
    fn port5_request() -> Vec<u8> {
        let mut bytes = vec![
            0xce, 0xfa, 0xed, 0xfe, // magic
            0x03, 0x00, 0x00, 0x00, // version 3
            0x00, 0x05, 0x00, 0x00, // REQ_NEW_CONTROL | 5 << 8
            0x01, 0x00, // AF_UNIX
            b'/', b't', b'm', b'p', b'/', b'c',
        ];
        bytes.resize(V3_FIXED_LEN, 0);
        bytes.extend_from_slice(b"testdescr");
        bytes
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_the_port_5_example() {
        let request = VdeRequest::parse(&port5_request()).unwrap();
        assert_eq!(
            request,
            VdeRequest {
                version: RequestVersion::V3,
                port: PortRequest::Number(5),
                client_path: PathBuf::from("/tmp/c"),
                description: "testdescr".into(),
                mac: None,
            }
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn encodes_the_port_5_example_byte_for_byte() {
        let request = VdeRequest::parse(&port5_request()).unwrap();
        assert_eq!(request.encode_v3().unwrap(), port5_request());
        assert_eq!(request.encode_v3().unwrap().len(), 122 + 9);
    }

    #[test]
    fn type_word_selects_the_port() {
        let mut bytes = port5_request();
        bytes[8..12].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(VdeRequest::parse(&bytes).unwrap().port, PortRequest::Any);
        bytes[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(VdeRequest::parse(&bytes).unwrap().port, PortRequest::Zero);
        bytes[8..12].copy_from_slice(&(65535u32 << 8).to_ne_bytes());
        assert_eq!(
            VdeRequest::parse(&bytes).unwrap().port,
            PortRequest::Number(65535)
        );
        bytes[8..12].copy_from_slice(&(65536u32 << 8).to_ne_bytes());
        assert_eq!(
            VdeRequest::parse(&bytes),
            Err(RequestError::PortOutOfRange(65536))
        );
        bytes[8..12].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(VdeRequest::parse(&bytes), Err(RequestError::BadType(2)));
    }

    #[test]
    fn parses_a_legacy_v1_request() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&REQUEST_MAGIC.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // REQ_NEW_CONTROL
        bytes.extend_from_slice(&[2, 0, 0, 0xaa, 0xbb, 0xcc]); // MAC
        bytes.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        bytes.extend_from_slice(b"/var/run/old.sock");
        bytes.resize(V1_FIXED_LEN, 0);
        bytes.extend_from_slice(b"old");
        let request = VdeRequest::parse(&bytes).unwrap();
        assert_eq!(request.version, RequestVersion::V1);
        assert_eq!(request.port, PortRequest::Any);
        assert_eq!(request.client_path, Path::new("/var/run/old.sock"));
        assert_eq!(request.mac, Some([2, 0, 0, 0xaa, 0xbb, 0xcc]));
        assert_eq!(request.description, "old");
        assert_eq!(fixed_len(&bytes[..8]), Ok(Some(V1_FIXED_LEN)));
        // A v1 request one byte short of its fixed part.
        assert_eq!(
            VdeRequest::parse(&bytes[..V1_FIXED_LEN - 1]),
            Err(RequestError::Short {
                got: 123,
                need: 124
            })
        );
    }

    #[test]
    fn rejects_short_requests() {
        let bytes = port5_request();
        assert_eq!(
            VdeRequest::parse(&[]),
            Err(RequestError::Short { got: 0, need: 8 })
        );
        assert_eq!(
            VdeRequest::parse(&bytes[..7]),
            Err(RequestError::Short { got: 7, need: 8 })
        );
        assert_eq!(
            VdeRequest::parse(&bytes[..121]),
            Err(RequestError::Short {
                got: 121,
                need: 122
            })
        );
        assert_eq!(fixed_len(&bytes[..7]), Ok(None));
        assert_eq!(fixed_len(&bytes[..8]), Ok(Some(V3_FIXED_LEN)));
        // Exactly the fixed part: valid, empty description.
        assert_eq!(VdeRequest::parse(&bytes[..122]).unwrap().description, "");
    }

    #[test]
    fn rejects_bad_magic_and_versions() {
        let mut bytes = port5_request();
        bytes[0] = 0xcf;
        assert_eq!(
            VdeRequest::parse(&bytes),
            Err(RequestError::BadMagic(0xfeed_facf))
        );
        assert_eq!(fixed_len(&bytes), Err(RequestError::BadMagic(0xfeed_facf)));
        let mut bytes = port5_request();
        for version in [2u32, 4, 0xffff_ffff] {
            bytes[4..8].copy_from_slice(&version.to_ne_bytes());
            assert_eq!(
                VdeRequest::parse(&bytes),
                Err(RequestError::UnsupportedVersion(version))
            );
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        let mut bytes = port5_request();
        bytes[12..14].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(VdeRequest::parse(&bytes), Err(RequestError::BadFamily(2)));

        let mut bytes = port5_request();
        bytes[14..122].fill(0);
        assert_eq!(VdeRequest::parse(&bytes), Err(RequestError::EmptyPath));

        let mut bytes = port5_request();
        bytes[14..122].fill(b'a');
        assert_eq!(
            VdeRequest::parse(&bytes),
            Err(RequestError::PathNotTerminated)
        );

        // 107 bytes of path plus its NUL is the longest that fits.
        let mut bytes = port5_request();
        bytes[14..121].fill(b'a');
        bytes[121] = 0;
        assert_eq!(
            VdeRequest::parse(&bytes)
                .unwrap()
                .client_path
                .as_os_str()
                .len(),
            107
        );
    }

    #[test]
    fn description_rules() {
        let mut bytes = port5_request();
        bytes.truncate(V3_FIXED_LEN);
        bytes.extend_from_slice(b"QEMU \xff\0\0");
        let request = VdeRequest::parse(&bytes).unwrap();
        assert_eq!(request.description, "QEMU \u{fffd}");

        let mut bytes = port5_request();
        bytes.truncate(V3_FIXED_LEN);
        bytes.extend_from_slice(&[b'd'; 128]);
        assert_eq!(VdeRequest::parse(&bytes).unwrap().description.len(), 128);
        bytes.push(b'd');
        assert_eq!(
            VdeRequest::parse(&bytes),
            Err(RequestError::DescriptionTooLong(129))
        );

        bytes.resize(MAX_REQUEST_LEN + 1, b'x');
        assert_eq!(VdeRequest::parse(&bytes), Err(RequestError::TooLong(257)));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic generator: every prefix length, with and
        // without a valid magic, must produce a result rather than a panic.
        let mut state = 0x1234_5678u32;
        for len in 0..=MAX_REQUEST_LEN + 4 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            let _ = VdeRequest::parse(&bytes);
            if len >= 8 {
                bytes[..4].copy_from_slice(&REQUEST_MAGIC.to_ne_bytes());
                bytes[4..8].copy_from_slice(&3u32.to_ne_bytes());
                let _ = VdeRequest::parse(&bytes);
                bytes[4..8].copy_from_slice(&0u32.to_ne_bytes());
                let _ = VdeRequest::parse(&bytes);
            }
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn reply_is_exactly_a_sockaddr_un() {
        let reply = encode_reply(Path::new("/tmp/sw/005.9")).unwrap();
        assert_eq!(reply.len(), 110);
        assert_eq!(&reply[..2], &[0x01, 0x00]);
        assert_eq!(&reply[2..15], b"/tmp/sw/005.9");
        assert!(reply[15..].iter().all(|&b| b == 0));
        assert_eq!(decode_reply(&reply).unwrap(), Path::new("/tmp/sw/005.9"));
    }

    #[test]
    fn reply_rejects_paths_that_do_not_fit() {
        let long = "/".repeat(108);
        assert_eq!(
            encode_reply(Path::new(&long)),
            Err(RequestError::PathTooLong(108))
        );
        assert!(encode_reply(Path::new(&long[..107])).is_ok());
        assert_eq!(encode_reply(Path::new("")), Err(RequestError::EmptyPath));
        assert!(decode_reply(&[0; 109]).is_err());
    }
}
