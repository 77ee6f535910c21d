//! DNS messages as the forwarder needs them, built on `simple_dns`.
//!
//! Everything that touches the wire format goes through `simple_dns`: this
//! file only gathers the few operations the forwarder repeats (making a
//! reply skeleton, fitting a reply into the client's UDP limit, ageing
//! TTLs, deciding how long an answer may be cached) so the state machine
//! reads as policy, not byte shuffling.

use std::time::Duration;

use simple_dns::rdata::{OPT, RData};
use simple_dns::{Packet, PacketFlag, Question, RCODE};

use super::cache::CacheKey;
use super::local_names::canonical;

/// The largest UDP reply a client without EDNS0 accepts (RFC 1035 4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// The UDP payload size advertised in locally built EDNS0 replies: the
/// DNS flag day 2020 value, which avoids IP fragmentation on any path.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// Positive answers are cached at most this long (one day), so a huge TTL
/// from upstream cannot pin a stale answer.
pub const MAX_POSITIVE_TTL: u32 = 86_400;

/// Negative answers (NXDOMAIN, NODATA) are cached at most this long.
pub const MAX_NEGATIVE_TTL: u32 = 300;

/// Negative answers without an SOA to say how long they hold are cached
/// this long.
pub const DEFAULT_NEGATIVE_TTL: u32 = 60;

/// The cache key of a question.
pub fn question_key(q: &Question<'_>) -> CacheKey {
    CacheKey {
        name: canonical(&q.qname),
        qtype: q.qtype.into(),
        qclass: q.qclass.into(),
    }
}

/// Whether two questions ask the same thing (names compared without
/// regard to case, as DNS does).
pub fn same_question(a: &Question<'_>, b: &Question<'_>) -> bool {
    a.qname == b.qname
        && u16::from(a.qtype) == u16::from(b.qtype)
        && u16::from(a.qclass) == u16::from(b.qclass)
}

/// An empty reply to a client: its id, its question (if any), its RD bit,
/// recursion available, and an EDNS0 record when the query had one
/// (RFC 6891 6.1.1).
pub fn reply_skeleton<'a>(
    id: u16,
    rd: bool,
    question: Option<&Question<'a>>,
    rcode: RCODE,
    edns: bool,
) -> Packet<'a> {
    let mut p = Packet::new_reply(id);
    p.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if rd {
        p.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    *p.rcode_mut() = rcode;
    if let Some(q) = question {
        p.questions.push(q.clone());
    }
    if edns {
        *p.opt_mut() = Some(local_opt());
    }
    p
}

/// The EDNS0 record of locally built replies.
pub fn local_opt() -> OPT<'static> {
    OPT {
        opt_codes: Vec::new(),
        udp_packet_size: EDNS_UDP_SIZE,
        version: 0,
    }
}

/// Encodes `packet` for a UDP client accepting at most `limit` bytes.
/// Too big, it becomes header and question with TC set (and the OPT
/// record, if any), telling the client to retry over TCP. Returns the
/// bytes and whether they were truncated; `None` if simple-dns cannot
/// encode the message.
pub fn encode_for_udp(packet: &Packet<'_>, limit: usize) -> Option<(Vec<u8>, bool)> {
    let full = packet.build_bytes_vec_compressed().ok()?;
    if full.len() <= limit {
        return Some((full, false));
    }
    let mut cut = Packet::new_reply(packet.id());
    *cut.opcode_mut() = packet.opcode();
    *cut.rcode_mut() = packet.rcode();
    for flag in [
        PacketFlag::AUTHORITATIVE_ANSWER,
        PacketFlag::RECURSION_DESIRED,
        PacketFlag::RECURSION_AVAILABLE,
        PacketFlag::AUTHENTIC_DATA,
        PacketFlag::CHECKING_DISABLED,
    ] {
        if packet.has_flags(flag) {
            cut.set_flags(flag);
        }
    }
    cut.set_flags(PacketFlag::TRUNCATION);
    cut.questions = packet.questions.clone();
    *cut.opt_mut() = packet.opt().cloned();
    let bytes = cut.build_bytes_vec_compressed().ok()?;
    Some((bytes, true))
}

/// Decreases every record's TTL by the `age` of a cached answer (whole
/// seconds, rounding the age down so a record is never served past its
/// life: the cache refuses it at the exact expiry).
pub fn age_ttls(packet: &mut Packet<'_>, age: Duration) {
    let secs = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
    for rr in packet
        .answers
        .iter_mut()
        .chain(packet.name_servers.iter_mut())
        .chain(packet.additional_records.iter_mut())
    {
        rr.ttl = rr.ttl.saturating_sub(secs);
    }
}

/// How long an upstream response may be cached, or `None` if it must not
/// be: positive answers for their smallest TTL (at most a day), NXDOMAIN
/// and NODATA for the SOA's negative TTL (RFC 2308 5: the smaller of the
/// SOA record's TTL and its MINIMUM field; at most 5 minutes, 60 s without
/// an SOA). Failures, truncated and zero-TTL answers are not cached.
pub fn cache_ttl(packet: &Packet<'_>) -> Option<Duration> {
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return None;
    }
    let secs = match packet.rcode() {
        RCODE::NoError if !packet.answers.is_empty() => packet
            .answers
            .iter()
            .map(|rr| rr.ttl)
            .min()
            .unwrap_or(0)
            .min(MAX_POSITIVE_TTL),
        RCODE::NoError | RCODE::NameError => packet
            .name_servers
            .iter()
            .find_map(|rr| match &rr.rdata {
                RData::SOA(soa) => Some(rr.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
            .min(MAX_NEGATIVE_TTL),
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, SOA};
    use simple_dns::{CLASS, Name, ResourceRecord, TYPE};
    use std::net::Ipv4Addr;

    fn q(name: &str) -> Question<'_> {
        Question::new(
            Name::new(name).unwrap(),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        )
    }

    fn a(name: &str, ttl: u32) -> ResourceRecord<'_> {
        ResourceRecord::new(
            Name::new(name).unwrap(),
            CLASS::IN,
            ttl,
            RData::A(A::from(Ipv4Addr::new(192, 0, 2, 1))),
        )
    }

    fn soa(ttl: u32, minimum: u32) -> ResourceRecord<'static> {
        ResourceRecord::new(
            Name::new("example.com").unwrap(),
            CLASS::IN,
            ttl,
            RData::SOA(SOA {
                mname: Name::new("ns.example.com").unwrap(),
                rname: Name::new("host.example.com").unwrap(),
                serial: 1,
                refresh: 2,
                retry: 3,
                expire: 4,
                minimum,
            }),
        )
    }

    #[test]
    fn questions_compare_without_case() {
        assert!(same_question(&q("WWW.example.com"), &q("www.EXAMPLE.com.")));
        assert!(!same_question(&q("www.example.com"), &q("ww.example.com")));
        assert_eq!(question_key(&q("WWW.Example.com")).name, "www.example.com");
    }

    #[test]
    fn cache_ttls() {
        let mut p = reply_skeleton(1, true, Some(&q("a.com")), RCODE::NoError, false);
        p.answers.push(a("a.com", 300));
        p.answers.push(a("a.com", 120));
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(120)));
        p.answers[1].ttl = 10_000_000;
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(300)));
        p.answers[0].ttl = 10_000_000;
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(86_400)));
        p.answers[0].ttl = 0;
        assert_eq!(cache_ttl(&p), None);
        p.answers.clear();
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(60)));
        p.name_servers.push(soa(3600, 30));
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(30)));
        *p.rcode_mut() = RCODE::NameError;
        p.name_servers[0] = soa(20, 900);
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(20)));
        p.name_servers[0] = soa(9000, 900);
        assert_eq!(cache_ttl(&p), Some(Duration::from_secs(300)));
        *p.rcode_mut() = RCODE::ServerFailure;
        assert_eq!(cache_ttl(&p), None);
        *p.rcode_mut() = RCODE::NoError;
        p.set_flags(PacketFlag::TRUNCATION);
        assert_eq!(cache_ttl(&p), None);
    }

    #[test]
    fn ageing_saturates() {
        let mut p = reply_skeleton(1, true, Some(&q("a.com")), RCODE::NoError, false);
        p.answers.push(a("a.com", 100));
        p.answers.push(a("a.com", 3));
        p.name_servers.push(soa(50, 1));
        age_ttls(&mut p, Duration::from_millis(4999));
        assert_eq!(p.answers[0].ttl, 96);
        assert_eq!(p.answers[1].ttl, 0);
        assert_eq!(p.name_servers[0].ttl, 46);
    }

    #[test]
    fn oversized_replies_are_cut_to_header_and_question() {
        let mut p = reply_skeleton(0x4242, true, Some(&q("a.com")), RCODE::NoError, true);
        for i in 0..40u8 {
            let mut rr = a("a.com", 60);
            rr.rdata = RData::A(A::from(Ipv4Addr::new(192, 0, 2, i)));
            p.answers.push(rr);
        }
        let (full, cut) = encode_for_udp(&p, 4096).unwrap();
        assert!(!cut);
        assert!(full.len() > 512);
        let (bytes, cut) = encode_for_udp(&p, 512).unwrap();
        assert!(cut);
        assert!(bytes.len() <= 512);
        let back = Packet::parse(&bytes).unwrap();
        assert_eq!(back.id(), 0x4242);
        assert!(back.has_flags(PacketFlag::TRUNCATION | PacketFlag::RECURSION_DESIRED));
        assert!(back.answers.is_empty());
        assert_eq!(back.questions.len(), 1);
        assert_eq!(back.opt().map(|o| o.udp_packet_size), Some(EDNS_UDP_SIZE));
    }
}
