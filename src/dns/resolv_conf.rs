//! The system's resolvers, from `/etc/resolv.conf`.
//!
//! When the configuration names no upstream, dnsmasq forwards to the host's
//! own resolvers; so do we. Parsing is a pure function on the file's text
//! so it can be tested; [`system_upstreams`] is the only file read in the
//! DNS core, done once by the daemon at start.

use std::net::{IpAddr, SocketAddr};

/// At most this many nameservers are taken, so a huge or hostile file
/// cannot make the forwarder try servers for ever.
pub const MAX_NAMESERVERS: usize = 8;

/// Where the system keeps its resolver list.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` lines of resolv.conf text, as port-53 socket
/// addresses in file order. Comments (`#`, `;`), other keywords and
/// addresses that do not parse (including IPv6 ones with a `%zone`, which
/// would need an interface lookup) are skipped, as the C library does with
/// what it cannot use.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = match line.find(['#', ';']) {
            Some(cut) => &line[..cut],
            None => line,
        };
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        let server = SocketAddr::new(ip, 53);
        if !servers.contains(&server) {
            servers.push(server);
        }
        if servers.len() == MAX_NAMESERVERS {
            break;
        }
    }
    servers
}

/// The host's resolvers for forwarding when none are configured; empty
/// when the file is missing or unreadable (the forwarder then answers
/// SERVFAIL for names it cannot resolve locally).
pub fn system_upstreams() -> Vec<SocketAddr> {
    match std::fs::read_to_string(RESOLV_CONF) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::debug!("cannot read {RESOLV_CONF}: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_with_comments_and_junk_skipped() {
        let text = "# generated\n\
                    search lan example.org\n\
                    nameserver 192.168.1.1 # home router\n\
                    ;nameserver 10.0.0.1\n\
                    nameserver   2001:db8::53\n\
                    nameserver fe80::1%eth0\n\
                    nameserver not-an-address\n\
                    nameserver\n\
                    nameserver 192.168.1.1\n\
                    options edns0\n\
                    \tnameserver 9.9.9.9\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "192.168.1.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "9.9.9.9:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn bounded_and_empty() {
        assert!(parse_resolv_conf("").is_empty());
        let many: String = (0..50)
            .map(|i| format!("nameserver 10.0.0.{i}\n"))
            .collect();
        let got = parse_resolv_conf(&many);
        assert_eq!(got.len(), MAX_NAMESERVERS);
        assert_eq!(got[7], "10.0.0.7:53".parse::<SocketAddr>().unwrap());
    }
}
