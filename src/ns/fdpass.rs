//! Handing the tap's descriptor from inside the namespace to the process
//! outside (`SCM_RIGHTS`).
//!
//! The tap must be created inside the new network namespace (that is where
//! it should appear, and only there do we have `CAP_NET_ADMIN`), but the
//! switch's sockets are paths in the host's file system, best reached from
//! the original process. A descriptor keeps the namespace it was created
//! in, so the inside passes the tap's descriptor out over a socket pair,
//! with the interface name as the message, and the outside moves frames
//! for it.

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The longest message: an interface name.
const MAX_MESSAGE: usize = 64;

/// Sends `fd` with the text `name` over the connected socket `sock`.
///
/// # Errors
///
/// The socket refuses the message.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives a descriptor and its text from `sock`; `Ok(None)` when the
/// peer closed the socket without sending one (it failed and exited).
///
/// # Errors
///
/// The socket fails, or the message carries no descriptor or a name that
/// is not UTF-8 (then every descriptor received is closed).
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, String)>> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let len = msg.bytes;
    let mut received = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our
                // table for us; nothing else owns it.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if len == 0 && received.is_empty() {
        return Ok(None);
    }
    let name = std::str::from_utf8(buf.get(..len).unwrap_or_default())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "name is not UTF-8"))?
        .to_string();
    let mut fds = received.into_iter();
    let fd = fds
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no descriptor received"))?;
    Ok(Some((fd, name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_descriptor_and_its_name_cross_over() {
        let (a, b) = pair();
        let path = std::env::temp_dir().join(format!("switchboard-fdpass-{}", std::process::id()));
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        f.write_all(b"through the socket").unwrap();
        send_fd(a.as_fd(), f.as_fd(), "eth0").unwrap();
        drop(f);
        let (fd, name) = recv_fd(b.as_fd()).unwrap().unwrap();
        assert_eq!(name, "eth0");
        let mut g = std::fs::File::from(fd);
        g.rewind().unwrap();
        let mut text = String::new();
        g.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");
    }

    #[test]
    fn a_closed_peer_is_none() {
        let (a, b) = pair();
        drop(a);
        assert!(recv_fd(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn a_message_without_descriptor_is_an_error() {
        let (a, b) = pair();
        nix::sys::socket::send(a.as_raw_fd(), b"eth0", MsgFlags::empty()).unwrap();
        let e = recv_fd(b.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
