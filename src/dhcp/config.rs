//! What one DHCP server hands out, checked before the server starts.
//!
//! The configuration layer (TOML, libvirt XML, LXC's environment) boils down
//! to this value for each router interface with a DHCP server. Everything
//! the server later relies on without re-checking is refused here with a
//! message naming the offending value: pools inside the interface's subnet
//! that can never hand out the network, broadcast or server address,
//! reservations that cannot collide, and option values that fit their wire
//! encoding.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::mac::MacAddr;

/// The lease time a server hands out when the configuration names none,
/// dnsmasq's and libvirt's one hour.
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);

/// The shortest lease accepted: below a minute clients spend their life
/// renewing, and RFC 2131's T1/T2 arithmetic loses meaning in whole seconds.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(60);

/// The most DNS servers option 6 carries (what smoltcp's repr can encode).
pub const MAX_DNS_SERVERS: usize = 3;

/// A fixed binding of a MAC address to a name and/or an address, libvirt's
/// `<host mac name ip>` and dnsmasq's `--dhcp-host`: the way an operator
/// pins a VM to an address that survives lost lease files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The client's Ethernet address (matched against chaddr, never the
    /// client identifier, because that is what operators know of a VM).
    pub mac: MacAddr,
    /// The host name this client gets in DNS and in option 12, whatever it
    /// calls itself.
    pub name: Option<String>,
    /// The address it always gets; `None` gives it a pool address but still
    /// its `name`.
    pub ip: Option<Ipv4Addr>,
}

/// Everything one DHCPv4 server needs: the interface it serves and the
/// addresses and options it hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The interface's address: the server identifier (option 54) and siaddr.
    pub server: Ipv4Addr,
    /// The interface's network: the subnet mask (option 1) and broadcast
    /// address (option 28) come from it, and clients outside it are NAKed.
    pub subnet: Ipv4Net,
    /// Inclusive address pools inside `subnet`; may be empty when only
    /// reservations get addresses.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// How long a lease lasts; T1 is half of it and T2 seven eighths.
    pub lease_time: Duration,
    /// The most leases (offers included) held at once, LXC's `LXC_DHCP_MAX`
    /// and dnsmasq's `--dhcp-lease-max`; `None` means as many as there are
    /// addresses.
    pub max_leases: Option<usize>,
    /// Fixed bindings by MAC address.
    pub reservations: Vec<Reservation>,
    /// Option 3, the default gateway; `None` sends none (libvirt's isolated
    /// networks).
    pub router: Option<Ipv4Addr>,
    /// Option 6, at most [`MAX_DNS_SERVERS`]; empty sends none.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15, the domain clients append to bare names.
    pub domain: Option<String>,
    /// Option 26, the interface MTU, for segments that are not 1500.
    pub mtu: Option<u16>,
}

impl DhcpConfig {
    /// A server for `server` on `subnet` with the defaults and nothing to
    /// hand out yet, so callers fill in only what their source configures.
    pub fn new(server: Ipv4Addr, subnet: Ipv4Net) -> Self {
        DhcpConfig {
            server,
            subnet: subnet.trunc(),
            ranges: Vec::new(),
            lease_time: DEFAULT_LEASE_TIME,
            max_leases: None,
            reservations: Vec::new(),
            router: None,
            dns_servers: Vec::new(),
            domain: None,
            mtu: None,
        }
    }

    /// Refuses a configuration the server could not honour, with a message
    /// naming the value, so a typo fails at start instead of handing out
    /// the router's own address.
    pub fn validate(&self) -> Result<(), String> {
        let net = self.subnet.trunc();
        if net.prefix_len() > 30 {
            return Err(format!(
                "DHCP subnet {} is too small: a /30 or larger is needed for a server and a client",
                self.subnet
            ));
        }
        let network = net.network();
        let broadcast = net.broadcast();
        if !net.contains(&self.server) || self.server == network || self.server == broadcast {
            return Err(format!(
                "DHCP server address {} is not a host address of {}",
                self.server, net
            ));
        }
        for (i, &(first, last)) in self.ranges.iter().enumerate() {
            if u32::from(first) > u32::from(last) {
                return Err(format!(
                    "DHCP range {first}-{last}: first address is after the last"
                ));
            }
            if !net.contains(&first) || !net.contains(&last) {
                return Err(format!(
                    "DHCP range {first}-{last} is not inside the subnet {net}"
                ));
            }
            for (what, addr) in [
                ("the network address", network),
                ("the broadcast address", broadcast),
                ("the server's own address", self.server),
            ] {
                if range_contains((first, last), addr) {
                    return Err(format!("DHCP range {first}-{last} contains {what} {addr}"));
                }
            }
            for &(f2, l2) in &self.ranges[..i] {
                if u32::from(first) <= u32::from(l2) && u32::from(f2) <= u32::from(last) {
                    return Err(format!("DHCP ranges {f2}-{l2} and {first}-{last} overlap"));
                }
            }
        }
        for (i, r) in self.reservations.iter().enumerate() {
            if !r.mac.is_valid_source() {
                return Err(format!(
                    "DHCP host {}: not a station's MAC address (group or zero)",
                    r.mac
                ));
            }
            if self.reservations[..i].iter().any(|o| o.mac == r.mac) {
                return Err(format!("DHCP host {} is listed twice", r.mac));
            }
            if let Some(name) = &r.name
                && super::server::sanitize_hostname(name.as_bytes()).as_deref()
                    != Some(name.as_str())
            {
                return Err(format!(
                    "DHCP host {}: name {name:?} is not a lowercase host name (letters, digits, '-', at most 63)",
                    r.mac
                ));
            }
            if let Some(ip) = r.ip {
                if !net.contains(&ip) || ip == network || ip == broadcast {
                    return Err(format!(
                        "DHCP host {}: address {ip} is not a host address of {net}",
                        r.mac
                    ));
                }
                if ip == self.server {
                    return Err(format!(
                        "DHCP host {}: address {ip} is the server's own address",
                        r.mac
                    ));
                }
                if let Some(o) = self.reservations[..i].iter().find(|o| o.ip == Some(ip)) {
                    return Err(format!(
                        "DHCP hosts {} and {} both reserve {ip}",
                        o.mac, r.mac
                    ));
                }
            }
        }
        if self.pool_size() == 0 {
            return Err(
                "DHCP server has no address to hand out: give a range or a host with an address"
                    .to_string(),
            );
        }
        if self.lease_time < MIN_LEASE_TIME {
            return Err(format!(
                "DHCP lease time {} s is shorter than the minimum {} s",
                self.lease_time.as_secs(),
                MIN_LEASE_TIME.as_secs()
            ));
        }
        // 0xffffffff means "infinite" on the wire; leases here always end.
        if self.lease_time.as_secs() >= u64::from(u32::MAX) {
            return Err(format!(
                "DHCP lease time {} s does not fit option 51",
                self.lease_time.as_secs()
            ));
        }
        if self.max_leases == Some(0) {
            return Err("DHCP max_leases is 0: no client could get an address".to_string());
        }
        if self.dns_servers.len() > MAX_DNS_SERVERS {
            return Err(format!(
                "DHCP option 6 carries at most {MAX_DNS_SERVERS} DNS servers, {} given",
                self.dns_servers.len()
            ));
        }
        if let Some(domain) = &self.domain {
            let ok = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(format!("DHCP domain {domain:?} is not a domain name"));
            }
        }
        if let Some(mtu) = self.mtu
            && mtu < 68
        {
            return Err(format!("DHCP MTU {mtu} is below IPv4's minimum of 68"));
        }
        Ok(())
    }

    /// How many addresses the server can hand out: every range address plus
    /// reserved addresses outside the ranges. The default lease cap, and the
    /// bound on the lease table.
    pub fn pool_size(&self) -> u64 {
        let ranges: u64 = self
            .ranges
            .iter()
            .map(|&(f, l)| u64::from(u32::from(l)).saturating_sub(u64::from(u32::from(f))) + 1)
            .sum();
        let extra = self
            .reservations
            .iter()
            .filter_map(|r| r.ip)
            .filter(|&ip| !self.in_ranges(ip))
            .count() as u64;
        ranges + extra
    }

    /// True when `ip` lies in one of the pools.
    pub fn in_ranges(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|&r| range_contains(r, ip))
    }

    /// The reservation for a client's MAC address, if the operator made one.
    pub fn reservation_for(&self, mac: MacAddr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.mac == mac)
    }

    /// The subnet mask sent as option 1.
    pub fn netmask(&self) -> Ipv4Addr {
        self.subnet.netmask()
    }

    /// The broadcast address sent as option 28.
    pub fn broadcast(&self) -> Ipv4Addr {
        self.subnet.trunc().broadcast()
    }
}

/// True when `ip` is inside the inclusive range.
pub(crate) fn range_contains((first, last): (Ipv4Addr, Ipv4Addr), ip: Ipv4Addr) -> bool {
    (u32::from(first)..=u32::from(last)).contains(&u32::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn base() -> DhcpConfig {
        let mut c = DhcpConfig::new(ip("192.168.122.1"), "192.168.122.0/24".parse().unwrap());
        c.ranges.push((ip("192.168.122.2"), ip("192.168.122.254")));
        c
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }

    #[test]
    fn libvirt_default_is_valid() {
        let c = base();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.pool_size(), 253);
        assert_eq!(c.netmask(), ip("255.255.255.0"));
        assert_eq!(c.broadcast(), ip("192.168.122.255"));
        assert_eq!(c.lease_time, Duration::from_secs(3600));
    }

    #[test]
    fn ranges_are_checked() {
        let mut c = base();
        c.ranges = vec![(ip("192.168.122.1"), ip("192.168.122.10"))];
        assert_eq!(
            c.validate().unwrap_err(),
            "DHCP range 192.168.122.1-192.168.122.10 contains the server's own address 192.168.122.1"
        );
        c.ranges = vec![(ip("192.168.122.2"), ip("192.168.122.255"))];
        assert!(
            c.validate()
                .unwrap_err()
                .contains("broadcast address 192.168.122.255")
        );
        c.ranges = vec![(ip("192.168.122.0"), ip("192.168.122.0"))];
        assert!(c.validate().unwrap_err().contains("network address"));
        c.ranges = vec![(ip("192.168.122.20"), ip("192.168.123.2"))];
        assert!(c.validate().unwrap_err().contains("not inside the subnet"));
        c.ranges = vec![(ip("192.168.122.20"), ip("192.168.122.10"))];
        assert!(
            c.validate()
                .unwrap_err()
                .contains("first address is after the last")
        );
        c.ranges = vec![
            (ip("192.168.122.10"), ip("192.168.122.20")),
            (ip("192.168.122.20"), ip("192.168.122.30")),
        ];
        assert!(c.validate().unwrap_err().contains("overlap"));
        c.ranges.clear();
        assert!(c.validate().unwrap_err().contains("no address to hand out"));
    }

    #[test]
    fn reservations_are_checked() {
        let mut c = base();
        c.ranges.clear();
        c.reservations.push(Reservation {
            mac: mac(1),
            name: Some("web".into()),
            ip: Some(ip("192.168.122.50")),
        });
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.pool_size(), 1);
        c.reservations.push(Reservation {
            mac: mac(2),
            name: None,
            ip: Some(ip("192.168.122.50")),
        });
        assert_eq!(
            c.validate().unwrap_err(),
            "DHCP hosts 52:54:00:00:00:01 and 52:54:00:00:00:02 both reserve 192.168.122.50"
        );
        c.reservations[1].ip = Some(ip("10.0.0.5"));
        assert!(c.validate().unwrap_err().contains("not a host address"));
        c.reservations[1].ip = Some(ip("192.168.122.1"));
        assert!(c.validate().unwrap_err().contains("server's own address"));
        c.reservations[1].ip = None;
        c.reservations[1].mac = mac(1);
        assert!(c.validate().unwrap_err().contains("listed twice"));
        c.reservations[1].mac = MacAddr::BROADCAST;
        assert!(c.validate().unwrap_err().contains("group or zero"));
        c.reservations[1].mac = mac(2);
        c.reservations[1].name = Some("Bad_Name".into());
        assert!(
            c.validate()
                .unwrap_err()
                .contains("not a lowercase host name")
        );
    }

    #[test]
    fn options_are_checked() {
        let mut c = base();
        c.lease_time = Duration::from_secs(59);
        assert!(
            c.validate()
                .unwrap_err()
                .contains("shorter than the minimum 60 s")
        );
        c.lease_time = Duration::from_secs(u64::from(u32::MAX));
        assert!(c.validate().unwrap_err().contains("does not fit option 51"));
        c.lease_time = DEFAULT_LEASE_TIME;
        c.max_leases = Some(0);
        assert!(c.validate().unwrap_err().contains("max_leases is 0"));
        c.max_leases = None;
        c.dns_servers = vec![ip("1.1.1.1"); 4];
        assert!(
            c.validate()
                .unwrap_err()
                .contains("at most 3 DNS servers, 4 given")
        );
        c.dns_servers.clear();
        c.domain = Some("bad domain".into());
        assert!(c.validate().unwrap_err().contains("not a domain name"));
        c.domain = Some("lab.example".into());
        c.mtu = Some(67);
        assert!(c.validate().unwrap_err().contains("below IPv4's minimum"));
        c.mtu = Some(9000);
        assert_eq!(c.validate(), Ok(()));
        let small = DhcpConfig::new(ip("10.0.0.1"), "10.0.0.0/31".parse().unwrap());
        assert!(small.validate().unwrap_err().contains("too small"));
        let mut wrong = base();
        wrong.server = ip("192.168.1.1");
        assert!(
            wrong
                .validate()
                .unwrap_err()
                .contains("not a host address of 192.168.122.0/24")
        );
    }

    #[test]
    fn reserved_addresses_outside_ranges_add_to_the_pool() {
        let mut c = base();
        c.ranges = vec![(ip("192.168.122.100"), ip("192.168.122.101"))];
        c.reservations.push(Reservation {
            mac: mac(1),
            name: None,
            ip: Some(ip("192.168.122.100")),
        });
        c.reservations.push(Reservation {
            mac: mac(2),
            name: None,
            ip: Some(ip("192.168.122.7")),
        });
        assert_eq!(c.pool_size(), 3);
        assert!(c.in_ranges(ip("192.168.122.101")));
        assert!(!c.in_ranges(ip("192.168.122.7")));
        assert_eq!(
            c.reservation_for(mac(2)).and_then(|r| r.ip),
            Some(ip("192.168.122.7"))
        );
        assert!(c.reservation_for(mac(3)).is_none());
    }
}
