//! Names answered here: static hosts and names learned from DHCP leases.
//!
//! This is the part of dnsmasq that libvirt turns on with `local=/domain/`,
//! `domain-needed` and `expand-hosts`: a guest's bare name and
//! `name.domain` resolve to its address, its address resolves back to
//! `name.domain`, and anything else inside the domain (or any single-label
//! name) is answered NXDOMAIN here instead of being asked of the outside
//! resolvers, which cannot know it and would only learn internal names.
//!
//! Names are kept in canonical form: lower case, no trailing dot, in the
//! presentation format of [`simple_dns::Name`] (so a dot inside a label
//! stays escaped and cannot alias two labels).

use std::net::Ipv4Addr;

use hashbrown::HashMap;
use simple_dns::Name;

/// Names learned from DHCP at most; a lease flood cannot grow memory past
/// it (further names are refused until some are removed).
pub const MAX_DYNAMIC_NAMES: usize = 4096;

/// What the local tables say about one queried name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAnswer {
    /// A local host name with these addresses (A records).
    Addresses(Vec<Ipv4Addr>),
    /// A reverse name of a local address, pointing at this name (PTR).
    Pointer(String),
    /// The domain's own name: it exists (names live under it) but has no
    /// records here, so NOERROR without answers.
    Apex,
    /// A name that is ours to answer and does not exist.
    NxDomain,
    /// Not a local name: the cache or the upstreams answer it.
    NotLocal,
}

/// Canonical form of a wire name: presentation format, lower case.
pub fn canonical(name: &Name<'_>) -> String {
    name.to_string().to_ascii_lowercase()
}

/// Canonical form of a configured or DHCP-supplied name, refusing what is
/// not a DNS name (empty, labels over 63 bytes, over 255 bytes in all).
pub fn canonical_text(name: &str) -> Option<String> {
    let parsed = Name::new(name).ok()?;
    if parsed.get_labels().is_empty() {
        return None;
    }
    Some(canonical(&parsed))
}

/// The static and DHCP name tables of one forwarder.
#[derive(Debug, Clone)]
pub struct LocalNames {
    domain: Option<String>,
    static_names: HashMap<String, Vec<Ipv4Addr>>,
    static_addrs: HashMap<Ipv4Addr, String>,
    dynamic_names: HashMap<String, Vec<Ipv4Addr>>,
    dynamic_addrs: HashMap<Ipv4Addr, String>,
}

impl LocalNames {
    /// Builds the tables from the configured domain and static hosts;
    /// an invalid name is an error naming it.
    pub fn new(domain: Option<&str>, hosts: &[(String, Ipv4Addr)]) -> Result<Self, String> {
        let domain = match domain {
            Some(d) => Some(canonical_text(d).ok_or_else(|| format!("invalid DNS domain {d:?}"))?),
            None => None,
        };
        let mut static_names: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        let mut static_addrs = HashMap::new();
        for (name, ip) in hosts {
            let canon =
                canonical_text(name).ok_or_else(|| format!("invalid DNS host name {name:?}"))?;
            let ips = static_names.entry(canon.clone()).or_default();
            if !ips.contains(ip) {
                ips.push(*ip);
            }
            static_addrs.entry(*ip).or_insert(canon);
        }
        Ok(LocalNames {
            domain,
            static_names,
            static_addrs,
            dynamic_names: HashMap::new(),
            dynamic_addrs: HashMap::new(),
        })
    }

    /// Publishes a DHCP client's name; an address that had another name
    /// loses it (the lease was renamed). Returns false when the name is
    /// invalid or the table is full.
    pub fn add_dynamic(&mut self, name: &str, ip: Ipv4Addr) -> bool {
        let Some(canon) = canonical_text(name) else {
            return false;
        };
        if let Some(old) = self.dynamic_addrs.get(&ip) {
            if *old == canon {
                return true;
            }
            let old = old.clone();
            self.remove_dynamic_canonical(&old, ip);
        }
        if self.dynamic_addrs.len() >= MAX_DYNAMIC_NAMES {
            return false;
        }
        self.dynamic_names
            .entry(canon.clone())
            .or_default()
            .push(ip);
        self.dynamic_addrs.insert(ip, canon);
        true
    }

    /// Withdraws one DHCP name/address pair (the lease ended); other
    /// addresses of the same name stay.
    pub fn remove_dynamic(&mut self, name: &str, ip: Ipv4Addr) {
        if let Some(canon) = canonical_text(name) {
            self.remove_dynamic_canonical(&canon, ip);
        }
    }

    fn remove_dynamic_canonical(&mut self, canon: &str, ip: Ipv4Addr) {
        if self.dynamic_addrs.get(&ip).is_some_and(|n| n == canon) {
            self.dynamic_addrs.remove(&ip);
        }
        if let Some(ips) = self.dynamic_names.get_mut(canon) {
            ips.retain(|a| *a != ip);
            if ips.is_empty() {
                self.dynamic_names.remove(canon);
            }
        }
    }

    /// Names learned from DHCP currently published.
    #[cfg(test)]
    pub fn dynamic_len(&self) -> usize {
        self.dynamic_addrs.len()
    }

    /// What to answer for the canonical name `name`; `local_subnets` are
    /// the networks whose reverse names are ours.
    pub fn resolve(&self, name: &str, local_subnets: &[ipnet::Ipv4Net]) -> LocalAnswer {
        if let Some(ip) = reverse_v4(name) {
            if let Some(target) = self.name_of(ip) {
                return LocalAnswer::Pointer(target);
            }
            if local_subnets.iter().any(|net| net.contains(&ip)) {
                return LocalAnswer::NxDomain;
            }
            return LocalAnswer::NotLocal;
        }
        if let Some(ips) = self.addresses_of(name) {
            return LocalAnswer::Addresses(ips);
        }
        if let Some(domain) = &self.domain {
            if name == domain {
                return LocalAnswer::Apex;
            }
            if in_domain(name, domain) {
                return LocalAnswer::NxDomain;
            }
        }
        if !name.is_empty() && !has_label_separator(name) {
            // domain-needed: a bare name is never a question for the
            // Internet's resolvers.
            return LocalAnswer::NxDomain;
        }
        LocalAnswer::NotLocal
    }

    /// Addresses of a local name, either exactly as configured or as
    /// `host.domain` for a host configured bare; static names hide DHCP
    /// ones.
    fn addresses_of(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let mut candidates = [Some(name), None];
        if let Some(domain) = &self.domain
            && in_domain(name, domain)
        {
            let host = &name[..name.len() - domain.len() - 1];
            if !has_label_separator(host) {
                candidates[1] = Some(host);
            }
        }
        for table in [&self.static_names, &self.dynamic_names] {
            for candidate in candidates.iter().flatten() {
                if let Some(ips) = table.get(*candidate) {
                    return Some(ips.clone());
                }
            }
        }
        None
    }

    /// The name a local address points back to, qualified with the domain
    /// when it was configured or learned bare.
    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        let name = self
            .static_addrs
            .get(&ip)
            .or_else(|| self.dynamic_addrs.get(&ip))?;
        match &self.domain {
            Some(domain) if !has_label_separator(name) => Some(format!("{name}.{domain}")),
            _ => Some(name.clone()),
        }
    }
}

/// Whether the canonical `name` lies strictly below `domain`.
fn in_domain(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
        && !name[..name.len() - domain.len() - 1].ends_with('\\')
}

/// Whether a canonical name has more than one label (an unescaped dot).
fn has_label_separator(name: &str) -> bool {
    let mut escaped = false;
    for c in name.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '.' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

/// The address of a full `d.c.b.a.in-addr.arpa` name, if it is one.
fn reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let digits = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = digits.split('.');
    for slot in octets.iter_mut().rev() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> LocalNames {
        LocalNames::new(
            Some("Lab.Example."),
            &[
                ("gw".to_string(), Ipv4Addr::new(10, 0, 0, 1)),
                ("www.other.org".to_string(), Ipv4Addr::new(10, 0, 0, 80)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_text("Foo.BAR.").as_deref(), Some("foo.bar"));
        assert_eq!(canonical_text("."), None);
        assert_eq!(canonical_text(&"a".repeat(64)), None);
    }

    #[test]
    fn static_names_bare_qualified_and_fqdn() {
        let n = names();
        let gw = LocalAnswer::Addresses(vec![Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(n.resolve("gw", &[]), gw);
        assert_eq!(n.resolve("gw.lab.example", &[]), gw);
        assert_eq!(
            n.resolve("www.other.org", &[]),
            LocalAnswer::Addresses(vec![Ipv4Addr::new(10, 0, 0, 80)])
        );
        assert_eq!(n.resolve("lab.example", &[]), LocalAnswer::Apex);
        assert_eq!(n.resolve("nope.lab.example", &[]), LocalAnswer::NxDomain);
        assert_eq!(n.resolve("gw.x.lab.example", &[]), LocalAnswer::NxDomain);
        assert_eq!(n.resolve("nope", &[]), LocalAnswer::NxDomain);
        assert_eq!(n.resolve("example.org", &[]), LocalAnswer::NotLocal);
        assert_eq!(n.resolve("xlab.example", &[]), LocalAnswer::NotLocal);
        assert_eq!(n.resolve("", &[]), LocalAnswer::NotLocal);
    }

    #[test]
    fn reverse_names() {
        let n = names();
        let net: ipnet::Ipv4Net = "10.0.0.0/24".parse().unwrap();
        assert_eq!(
            n.resolve("1.0.0.10.in-addr.arpa", &[net]),
            LocalAnswer::Pointer("gw.lab.example".into())
        );
        assert_eq!(
            n.resolve("80.0.0.10.in-addr.arpa", &[]),
            LocalAnswer::Pointer("www.other.org".into())
        );
        assert_eq!(
            n.resolve("9.0.0.10.in-addr.arpa", &[net]),
            LocalAnswer::NxDomain
        );
        assert_eq!(
            n.resolve("9.0.0.10.in-addr.arpa", &[]),
            LocalAnswer::NotLocal
        );
        assert_eq!(
            n.resolve("0.0.10.in-addr.arpa", &[net]),
            LocalAnswer::NotLocal
        );
        assert_eq!(
            n.resolve("1.1.0.0.10.in-addr.arpa", &[net]),
            LocalAnswer::NotLocal
        );
        assert_eq!(
            n.resolve("256.0.0.10.in-addr.arpa", &[net]),
            LocalAnswer::NotLocal
        );
        assert_eq!(
            reverse_v4("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(reverse_v4("+4.3.2.1.in-addr.arpa"), None);
    }

    #[test]
    fn dynamic_names_added_renamed_removed_and_static_wins() {
        let mut n = names();
        let ip = Ipv4Addr::new(10, 0, 0, 50);
        assert!(n.add_dynamic("Guest", ip));
        assert_eq!(
            n.resolve("guest.lab.example", &[]),
            LocalAnswer::Addresses(vec![ip])
        );
        assert_eq!(
            n.resolve("50.0.0.10.in-addr.arpa", &[]),
            LocalAnswer::Pointer("guest.lab.example".into())
        );
        // Renamed lease: the old name goes away.
        assert!(n.add_dynamic("guest2", ip));
        assert_eq!(n.resolve("guest", &[]), LocalAnswer::NxDomain);
        assert_eq!(n.resolve("guest2", &[]), LocalAnswer::Addresses(vec![ip]));
        // A DHCP client calling itself "gw" does not hijack the static name.
        assert!(n.add_dynamic("gw", Ipv4Addr::new(10, 0, 0, 66)));
        assert_eq!(
            n.resolve("gw", &[]),
            LocalAnswer::Addresses(vec![Ipv4Addr::new(10, 0, 0, 1)])
        );
        n.remove_dynamic("GUEST2", ip);
        assert_eq!(n.resolve("guest2", &[]), LocalAnswer::NxDomain);
        assert_eq!(n.dynamic_len(), 1);
        assert!(!n.add_dynamic("", ip));
    }

    #[test]
    fn dynamic_table_is_bounded() {
        let mut n = LocalNames::new(None, &[]).unwrap();
        for i in 0..MAX_DYNAMIC_NAMES as u32 {
            assert!(n.add_dynamic(&format!("h{i}"), Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(!n.add_dynamic("extra", Ipv4Addr::new(11, 0, 0, 1)));
        assert_eq!(n.dynamic_len(), MAX_DYNAMIC_NAMES);
        assert_eq!(n.resolve("h1.x", &[]), LocalAnswer::NotLocal);
    }

    #[test]
    fn invalid_config_names_are_errors() {
        assert!(LocalNames::new(Some(""), &[]).is_err());
        assert!(LocalNames::new(None, &[("".into(), Ipv4Addr::LOCALHOST)]).is_err());
    }
}
