//! The lease file: bound leases as text, so a restarted daemon gives its
//! clients the addresses they already use.
//!
//! The format is dnsmasq's `dnsmasq.leases`, one lease a line:
//!
//! ```text
//! EXPIRY MAC IP HOSTNAME CLIENT-ID
//! 1717171717 52:54:00:12:34:56 192.168.122.50 web 01:52:54:00:12:34:56
//! ```
//!
//! EXPIRY is absolute Unix time in seconds (the daemon's monotonic clock
//! does not survive a restart), HOSTNAME and CLIENT-ID are `*` when absent,
//! and CLIENT-ID is colon-separated hex. Sharing dnsmasq's format lets an
//! operator migrating from libvirt's dnsmasq carry leases over, and lets
//! tools that read dnsmasq lease files read ours. Lines starting with `#`
//! and dnsmasq's `duid` lines (DHCPv6) are skipped; other lines that do not
//! parse are skipped and reported, so one damaged line never costs every
//! client its address.
//!
//! This module only converts between text and values; the daemon reads and
//! writes the file.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::mac::MacAddr;

/// One bound lease as it is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedLease {
    /// When the lease ends, in Unix seconds (0 in dnsmasq files means
    /// "never"; such leases are not restored).
    pub expiry_unix: u64,
    /// The client's hardware address.
    pub mac: MacAddr,
    /// The leased address.
    pub ip: Ipv4Addr,
    /// The client's name.
    pub hostname: Option<String>,
    /// The raw option 61 bytes the client identified itself with.
    pub client_id: Option<Vec<u8>>,
}

/// What [`parse_leases`] made of a file: the leases it could read, and how
/// many lines it could not, with the first reason, for one log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedLeases {
    /// The leases of every good line, in file order.
    pub leases: Vec<PersistedLease>,
    /// How many lines were skipped as unreadable.
    pub bad_lines: usize,
    /// The first unreadable line's number (1-based) and what was wrong.
    pub first_error: Option<String>,
}

/// The file text for `leases`, one line each, in the given order. Names
/// that could not be read back (empty, or with whitespace) are written as
/// `*`.
pub fn format_leases(leases: &[PersistedLease]) -> String {
    let mut out = String::new();
    for l in leases {
        let name = match &l.hostname {
            Some(h) if !h.is_empty() && !h.chars().any(char::is_whitespace) && h != "*" => {
                h.as_str()
            }
            _ => "*",
        };
        let id = match &l.client_id {
            Some(id) if !id.is_empty() => hex_colon(id),
            _ => "*".to_string(),
        };
        let _ = writeln!(out, "{} {} {} {} {}", l.expiry_unix, l.mac, l.ip, name, id);
    }
    out
}

/// Reads lease file text; never fails as a whole (see the module doc).
pub fn parse_leases(text: &str) -> ParsedLeases {
    let mut parsed = ParsedLeases::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("duid ") {
            continue;
        }
        match parse_line(line) {
            Ok(lease) => parsed.leases.push(lease),
            Err(why) => {
                parsed.bad_lines += 1;
                if parsed.first_error.is_none() {
                    parsed.first_error = Some(format!("line {}: {why}", n + 1));
                }
            }
        }
    }
    parsed
}

/// Colon-separated lowercase hex, dnsmasq's spelling of client ids.
pub fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_line(line: &str) -> Result<PersistedLease, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [expiry, mac, ip, hostname, rest @ ..] = fields.as_slice() else {
        return Err(format!(
            "expected EXPIRY MAC IP HOSTNAME CLIENT-ID, got {line:?}"
        ));
    };
    // dnsmasq always writes the client id column; accept its absence.
    let client_id = match rest {
        [] | ["*"] => None,
        [id] => Some(parse_hex_colon(id).ok_or_else(|| format!("bad client id {id:?}"))?),
        _ => return Err(format!("too many fields in {line:?}")),
    };
    let expiry_unix = expiry
        .parse::<u64>()
        .map_err(|_| format!("bad expiry time {expiry:?}"))?;
    let mac = mac
        .parse::<MacAddr>()
        .map_err(|_| format!("bad MAC address {mac:?}"))?;
    let ip = ip
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("bad IPv4 address {ip:?}"))?;
    let hostname = match *hostname {
        "*" => None,
        h => Some(h.to_string()),
    };
    Ok(PersistedLease {
        expiry_unix,
        mac,
        ip,
        hostname,
        client_id,
    })
}

/// `01:52:54:...` to bytes; at most 255 bytes (an option's limit).
fn parse_hex_colon(s: &str) -> Option<Vec<u8>> {
    let bytes = s
        .split(':')
        .map(|p| {
            if p.is_empty() || p.len() > 2 {
                None
            } else {
                u8::from_str_radix(p, 16).ok()
            }
        })
        .collect::<Option<Vec<u8>>>()?;
    (bytes.len() <= 255).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> PersistedLease {
        PersistedLease {
            expiry_unix: 1_717_171_717,
            mac: MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            ip: Ipv4Addr::new(192, 168, 122, 50),
            hostname: Some("web".into()),
            client_id: Some(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        }
    }

    #[test]
    fn formats_like_dnsmasq() {
        let mut other = lease();
        other.hostname = None;
        other.client_id = None;
        other.ip = Ipv4Addr::new(192, 168, 122, 51);
        assert_eq!(
            format_leases(&[lease(), other]),
            "1717171717 52:54:00:12:34:56 192.168.122.50 web 01:52:54:00:12:34:56\n\
             1717171717 52:54:00:12:34:56 192.168.122.51 * *\n"
        );
    }

    #[test]
    fn unreadable_names_become_stars() {
        let mut l = lease();
        l.hostname = Some("two words".into());
        l.client_id = Some(Vec::new());
        assert_eq!(
            format_leases(&[l]),
            "1717171717 52:54:00:12:34:56 192.168.122.50 * *\n"
        );
    }

    #[test]
    fn round_trips() {
        let mut other = lease();
        other.hostname = None;
        other.client_id = Some(vec![0xff, 0, 1, 2, 3]);
        let all = vec![lease(), other];
        let parsed = parse_leases(&format_leases(&all));
        assert_eq!(parsed.leases, all);
        assert_eq!(parsed.bad_lines, 0);
        assert_eq!(parsed.first_error, None);
    }

    #[test]
    fn skips_and_reports_bad_lines() {
        let text = "# written by hand\n\
                    \n\
                    duid 00:01:00:01:2a:2b:2c:2d:52:54:00:00:00:01\n\
                    1717171717 52:54:00:12:34:56 192.168.122.50 web 01:52:54:00:12:34:56\n\
                    soon 52:54:00:12:34:57 192.168.122.51 * *\n\
                    1717171717 52:54:00:12:34 192.168.122.52 * *\n\
                    1717171717 52:54:00:12:34:58 192.168.122.300 * *\n\
                    1717171717 52:54:00:12:34:59 192.168.122.53 * 01:zz\n\
                    1717171717 52:54:00:12:34:59 192.168.122.53\n\
                    1717171717 52:54:00:12:34:5a 192.168.122.54 db * extra\n\
                    1717171718 52:54:00:12:34:5b 192.168.122.55 old\n";
        let parsed = parse_leases(text);
        assert_eq!(parsed.leases.len(), 2);
        assert_eq!(parsed.leases[0], lease());
        assert_eq!(
            parsed.leases[1],
            PersistedLease {
                expiry_unix: 1_717_171_718,
                mac: MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x5b]),
                ip: Ipv4Addr::new(192, 168, 122, 55),
                hostname: Some("old".into()),
                client_id: None,
            }
        );
        assert_eq!(parsed.bad_lines, 6);
        assert_eq!(
            parsed.first_error.as_deref(),
            Some("line 5: bad expiry time \"soon\"")
        );
    }

    #[test]
    fn hex_colon_spelling() {
        assert_eq!(hex_colon(&[1, 0xab, 0]), "01:ab:00");
        assert_eq!(hex_colon(&[]), "");
        assert_eq!(parse_hex_colon("01:AB:0"), Some(vec![1, 0xab, 0]));
        assert_eq!(parse_hex_colon("01::02"), None);
        assert_eq!(parse_hex_colon("123"), None);
    }
}
