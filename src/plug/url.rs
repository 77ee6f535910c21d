//! Endpoint URLs for `switchboard plug`, in vdeplug4's style.
//!
//! | URL | endpoint |
//! | --- | --- |
//! | `vde:///run/sw` or `/run/sw`, `vde:///run/sw[5]` | a VDE2 switch directory (any port, or port 5) |
//! | `stream:///path`, `stream:///path?listen` | a QEMU-framed Unix stream socket, as client or server |
//! | `tcp://host:port`, `tcp://host:port?listen` | the same framing over TCP |
//! | `dgram:///remote?local=/path` | a Unix datagram peer: frames to `remote`, from our own `local` path |
//! | `tap://tap3` | a tap device |
//! | `udp://[laddr:]lport->raddr:rport` | raw frames, one per UDP datagram (vdeplug4's `udp://`) |
//! | `udp://...?key=/path/lab.key` | the same, sealed with the key in that file (both ends switchboards) |
//! | `-` | standard input and output, VDE stream framing (2-byte length) |

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// One end of a cable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A VDE2 switch directory, optionally asking for a port number.
    Vde {
        /// The directory.
        dir: PathBuf,
        /// The port asked for.
        port: Option<u16>,
    },
    /// A Unix stream socket with QEMU framing.
    Stream {
        /// Its path.
        path: PathBuf,
        /// Listen there (and take one peer at a time) instead of connecting.
        listen: bool,
    },
    /// A TCP stream with QEMU framing.
    Tcp {
        /// The address to connect to or listen on.
        addr: SocketAddr,
        /// Listen instead of connecting.
        listen: bool,
    },
    /// A Unix datagram peer.
    Dgram {
        /// Where frames are sent.
        remote: PathBuf,
        /// Our own bound path, where the peer sends to.
        local: Option<PathBuf>,
    },
    /// A tap device.
    Tap {
        /// The interface name.
        name: String,
    },
    /// A raw UDP cable.
    Udp {
        /// Our address.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// A file holding a key (64 hex digits): every datagram is sealed
        /// with it, as a `udp` tunnel with `key_file` in a network file.
        key: Option<PathBuf>,
    },
    /// Standard input and output with VDE stream framing.
    Stdio,
}

/// A URL that does not name an endpoint, said so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl std::str::FromStr for Endpoint {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Endpoint, UrlError> {
        let bad = |why: &str| UrlError(format!("{url:?}: {why}"));
        if url == "-" {
            return Ok(Endpoint::Stdio);
        }
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s, r),
            // A bare path is a VDE switch directory, as for vde_plug.
            None => ("vde", url),
        };
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let listen = match query {
            None => false,
            Some("listen") => true,
            Some(q) if scheme == "dgram" => {
                let local = q
                    .strip_prefix("local=")
                    .ok_or_else(|| bad("the only dgram option is ?local=PATH"))?;
                if body.is_empty() || local.is_empty() {
                    return Err(bad("dgram needs a remote path and a non-empty local path"));
                }
                return Ok(Endpoint::Dgram {
                    remote: PathBuf::from(body),
                    local: Some(PathBuf::from(local)),
                });
            }
            Some(q) if scheme == "udp" => {
                let key = q
                    .strip_prefix("key=")
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| bad("the only udp option is ?key=FILE"))?;
                let Some(Endpoint::Udp { local, remote, .. }) = parse_udp(body) else {
                    return Err(bad(
                        "expected udp://[LOCALADDR:]LOCALPORT->REMOTEADDR:REMOTEPORT?key=FILE",
                    ));
                };
                return Ok(Endpoint::Udp {
                    local,
                    remote,
                    key: Some(PathBuf::from(key)),
                });
            }
            Some(q) => return Err(bad(&format!("unknown option {q:?}"))),
        };
        if listen && !matches!(scheme, "stream" | "tcp") {
            return Err(bad("?listen applies to stream:// and tcp:// only"));
        }
        match scheme {
            "vde" => {
                let (dir, port) = match body.strip_suffix(']').and_then(|b| b.rsplit_once('[')) {
                    Some((d, "")) => (d, None),
                    Some((d, p)) => (
                        d,
                        Some(
                            p.parse::<u16>()
                                .map_err(|_| bad("the port in [N] must be a number"))?,
                        ),
                    ),
                    None => (body, None),
                };
                if dir.is_empty() {
                    return Err(bad("no switch directory"));
                }
                Ok(Endpoint::Vde {
                    dir: PathBuf::from(dir),
                    port,
                })
            }
            "stream" if !body.is_empty() => Ok(Endpoint::Stream {
                path: PathBuf::from(body),
                listen,
            }),
            "tcp" => Ok(Endpoint::Tcp {
                addr: body
                    .parse()
                    .map_err(|_| bad("expected tcp://HOST:PORT with a numeric address"))?,
                listen,
            }),
            "dgram" if !body.is_empty() => Ok(Endpoint::Dgram {
                remote: PathBuf::from(body),
                local: None,
            }),
            "tap" if !body.is_empty() && body.len() <= 15 && !body.contains('/') => {
                Ok(Endpoint::Tap {
                    name: body.to_string(),
                })
            }
            "tap" => Err(bad("expected tap://NAME, 1 to 15 bytes")),
            "udp" => parse_udp(body)
                .ok_or_else(|| bad("expected udp://[LOCALADDR:]LOCALPORT->REMOTEADDR:REMOTEPORT")),
            "stream" | "dgram" => Err(bad("no path")),
            other => Err(bad(&format!(
                "unknown scheme {other:?}; known: vde, stream, tcp, dgram, tap, udp, and - for stdin/stdout"
            ))),
        }
    }
}

fn parse_udp(body: &str) -> Option<Endpoint> {
    let (local, remote) = body.split_once("->")?;
    let remote: SocketAddr = remote.parse().ok()?;
    let local = match local.parse::<u16>() {
        Ok(port) => {
            let any: IpAddr = if remote.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            SocketAddr::new(any, port)
        }
        Err(_) => local.parse().ok()?,
    };
    Some(Endpoint::Udp {
        local,
        remote,
        key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Endpoint, UrlError> {
        s.parse()
    }

    #[test]
    fn parses_every_scheme() {
        assert_eq!(p("-").unwrap(), Endpoint::Stdio);
        assert_eq!(
            p("vde:///run/sw").unwrap(),
            Endpoint::Vde {
                dir: "/run/sw".into(),
                port: None
            }
        );
        assert_eq!(
            p("/run/sw[5]").unwrap(),
            Endpoint::Vde {
                dir: "/run/sw".into(),
                port: Some(5)
            }
        );
        assert_eq!(
            p("vde:///run/sw[]").unwrap(),
            Endpoint::Vde {
                dir: "/run/sw".into(),
                port: None
            }
        );
        assert_eq!(
            p("stream:///tmp/s?listen").unwrap(),
            Endpoint::Stream {
                path: "/tmp/s".into(),
                listen: true
            }
        );
        assert_eq!(
            p("tcp://127.0.0.1:5555").unwrap(),
            Endpoint::Tcp {
                addr: "127.0.0.1:5555".parse().unwrap(),
                listen: false
            }
        );
        assert_eq!(
            p("dgram:///tmp/vm?local=/tmp/me").unwrap(),
            Endpoint::Dgram {
                remote: "/tmp/vm".into(),
                local: Some("/tmp/me".into())
            }
        );
        assert_eq!(
            p("tap://tap3").unwrap(),
            Endpoint::Tap {
                name: "tap3".into()
            }
        );
        assert_eq!(
            p("udp://5000->10.0.0.2:5001").unwrap(),
            Endpoint::Udp {
                local: "0.0.0.0:5000".parse().unwrap(),
                remote: "10.0.0.2:5001".parse().unwrap(),
                key: None
            }
        );
        assert_eq!(
            p("udp://5000->10.0.0.2:5001?key=/etc/lab.key").unwrap(),
            Endpoint::Udp {
                local: "0.0.0.0:5000".parse().unwrap(),
                remote: "10.0.0.2:5001".parse().unwrap(),
                key: Some("/etc/lab.key".into())
            }
        );
        assert_eq!(
            p("udp://127.0.0.1:40001->127.0.0.1:40002").unwrap(),
            Endpoint::Udp {
                local: "127.0.0.1:40001".parse().unwrap(),
                remote: "127.0.0.1:40002".parse().unwrap(),
                key: None
            }
        );
    }

    #[test]
    fn refuses_nonsense_with_a_reason() {
        for (url, why) in [
            ("vde://", "no switch directory"),
            ("vde:///x[abc]", "must be a number"),
            ("tap://", "tap://NAME"),
            ("tap://averyveryverylongname", "tap://NAME"),
            ("udp://x->y", "udp://"),
            ("udp://x->y?key=/k", "udp://"),
            ("udp://5000->10.0.0.2:5001?key=", "?key=FILE"),
            ("udp://5000->10.0.0.2:5001?secret=x", "?key=FILE"),
            ("tcp://localhost:5", "numeric"),
            ("vde:///x?listen", "?listen applies"),
            ("gopher://x", "unknown scheme"),
            ("stream://", "no path"),
            ("dgram:///x?local=", "non-empty"),
        ] {
            let e = p(url).unwrap_err().0;
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
