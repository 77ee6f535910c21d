//! Control requests: parsed from one line of words.

use std::fmt;

/// Longest request line accepted; anything longer is an error, not a buffer
/// that grows.
pub const MAX_REQUEST_LEN: usize = 4096;

/// What a control client can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every port: segment, number, kind, description, counters.
    Ports,
    /// The MAC table of one segment, or of all.
    Macs {
        /// Restrict to this segment.
        segment: Option<String>,
    },
    /// Counters of every segment and port.
    Stats,
    /// Zero the counters of every port and segment.
    ResetCounters,
}

/// A request line that is not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Request, BadRequest> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ports"] => Ok(Request::Ports),
            ["macs"] => Ok(Request::Macs { segment: None }),
            ["macs", seg] => Ok(Request::Macs {
                segment: Some(seg.to_string()),
            }),
            ["stats"] => Ok(Request::Stats),
            ["stats", "reset"] => Ok(Request::ResetCounters),
            [] => Err(BadRequest("empty request".into())),
            _ => Err(BadRequest(format!(
                "unknown request {line:?}; known: ports, macs [SEGMENT], stats, stats reset"
            ))),
        }
    }

    /// The line that encodes this request.
    pub fn to_line(&self) -> String {
        match self {
            Request::Ports => "ports".into(),
            Request::Macs { segment: None } => "macs".into(),
            Request::Macs { segment: Some(s) } => format!("macs {s}"),
            Request::Stats => "stats".into(),
            Request::ResetCounters => "stats reset".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [
            Request::Ports,
            Request::Macs { segment: None },
            Request::Macs {
                segment: Some("lan".into()),
            },
            Request::Stats,
            Request::ResetCounters,
        ] {
            assert_eq!(Request::parse(&r.to_line()).unwrap(), r);
        }
        assert!(Request::parse("").is_err());
        assert!(Request::parse("ports extra").is_err());
        assert!(Request::parse("reboot").unwrap_err().0.contains("known"));
    }
}
