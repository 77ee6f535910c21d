//! Ethernet (MAC) addresses.

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address, stored as it appears on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for group addresses (broadcast included): the I/G bit is set.
    /// Such addresses are flooded, and never valid as a source.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// True for `00:00:00:00:00:00`, which no station may use as its source.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// True when the address could be a station's own source address: neither
    /// a group address nor all zeros. The Linux bridge applies the same rule.
    pub fn is_valid_source(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError(String);

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid MAC address {:?}: expected six hex bytes like 52:54:00:12:34:56",
            self.0
        )
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| ParseMacError(s.to_string()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(ParseMacError(s.to_string()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x52, 0x54, 0, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0; 6]).is_valid_source());
        assert!(MacAddr([0x52, 0x54, 0, 0, 0, 1]).is_valid_source());
    }

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:0f:00".parse::<MacAddr>().is_err());
        assert!("zz:54:00:ab:cd:0f".parse::<MacAddr>().is_err());
    }
}
