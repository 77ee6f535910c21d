//! The DNS forwarder state machine.
//!
//! One forwarder serves one router's DNS: the router hands it each UDP
//! query with the client's address, and it answers at once (local names,
//! cache, errors) or emits an upstream query and answers when the upstream
//! response, or a timeout, comes back. It owns no socket and reads no
//! clock: queries, responses and times go in, [`DnsOutput`]s come out, and
//! the daemon's shell moves the bytes.
//!
//! Upstream queries carry a fresh id drawn from a seeded generator, never
//! one that is in flight, and a response is taken only from a server the
//! query was sent to, with a pending id and the same question: a spoofer
//! must guess all three. Each upstream try gets [`UDP_TRY_TIMEOUT`]; then
//! the next upstream is tried, and after the last one (or
//! [`TOTAL_TIMEOUT`]) the client gets SERVFAIL rather than silence. A
//! truncated UDP answer is asked again over TCP from the same server.
//!
//! Clients are served over UDP only (the router does not accept DNS over
//! TCP): a reply larger than the client's limit (512 bytes, or its EDNS0
//! size) is cut to header and question with TC set, which a client takes
//! as "retry over TCP" and will then fail; with EDNS0 (the default of
//! current resolvers) that limit is rarely reached.
//!
//! Known limits of the `simple_dns` wire crate show through: a query whose
//! type it does not know is answered FORMERR, an EDNS0 DO bit is not
//! passed on (so no DNSSEC records are requested), and a NOTIMP reply to
//! an opcode it does not name carries opcode 0.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hashbrown::HashMap;
use serde::Serialize;
use simple_dns::rdata::{A, PTR, RData};
use simple_dns::{
    CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
    header_buffer,
};

use super::cache::AnswerCache;
use super::config::DnsConfig;
use super::local_names::{LocalAnswer, LocalNames, canonical};
use super::message::{
    CLASSIC_UDP_LIMIT, age_ttls, cache_ttl, encode_for_udp, question_key, reply_skeleton,
    same_question,
};
use crate::time::Instant;

/// Upstream queries in flight at most; beyond it clients get SERVFAIL, so
/// a query flood cannot grow memory.
pub const MAX_PENDING: usize = 512;

/// How long one upstream gets to answer over UDP before the next is tried.
pub const UDP_TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a client waits at most before a SERVFAIL when upstreams are
/// silent (below the usual 5 s resolver retry, so the client sees our
/// answer rather than its own timeout).
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a TCP retry of a truncated answer may take (connect and
/// exchange).
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// TTL of local answers: dnsmasq's `local-ttl` default, so a renamed or
/// moved guest is seen at once.
pub const LOCAL_TTL: u32 = 0;

/// How an upstream message travels; the core deals in bare DNS messages
/// either way, the shell adds TCP's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// One datagram per message.
    Udp,
    /// One short-lived connection per exchange, for answers too big for
    /// UDP.
    Tcp,
}

/// What the forwarder asks its caller to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsOutput {
    /// A reply for a client, sent by the router from its DNS address.
    Reply {
        /// The querying client.
        client: SocketAddrV4,
        /// The DNS message.
        payload: Vec<u8>,
    },
    /// A query for an upstream resolver, sent by the daemon's shell.
    Upstream {
        /// The resolver.
        server: SocketAddr,
        /// UDP, or TCP for the retry of a truncated answer.
        transport: Transport,
        /// The DNS message, without TCP's length prefix.
        payload: Vec<u8>,
    },
}

/// What happened, for `switchboard ctl` and tests: every refused or failed
/// message is counted somewhere.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DnsCounters {
    /// Client messages received.
    pub queries: u64,
    /// Queries answered from the local names (including local NXDOMAIN).
    pub local_answers: u64,
    /// Queries answered from the cache.
    pub cache_hits: u64,
    /// Queries sent upstream.
    pub forwarded: u64,
    /// Upstream tries that timed out.
    pub upstream_timeouts: u64,
    /// SERVFAIL replies made here (no upstream, all timed out, table full).
    pub servfail: u64,
    /// Truncated UDP upstream answers asked again over TCP.
    pub truncated_retried_tcp: u64,
    /// Client messages that were not valid queries.
    pub malformed: u64,
    /// Queries refused because the forwarder is local-only.
    pub refused: u64,
    /// Queries refused because the pending table was full.
    pub pending_full: u64,
    /// Upstream responses dropped: unparsable, unexpected source, unknown
    /// id or mismatched question (late, duplicate or spoofed).
    pub upstream_rejected: u64,
    /// Replies cut to fit the client's UDP limit (TC set).
    pub truncated_replies: u64,
}

/// The parts of a client's query its reply must echo.
#[derive(Debug, Clone)]
struct ClientQuery {
    client: SocketAddrV4,
    id: u16,
    rd: bool,
    question: Question<'static>,
    /// The client's EDNS0 UDP size, if it sent an OPT record.
    edns: Option<u16>,
}

impl ClientQuery {
    /// The largest UDP reply this client accepts.
    fn limit(&self) -> usize {
        self.edns.map_or(CLASSIC_UDP_LIMIT, |size| {
            usize::from(size).max(CLASSIC_UDP_LIMIT)
        })
    }
}

/// One query waiting for an upstream.
#[derive(Debug, Clone)]
struct Pending {
    query: ClientQuery,
    /// The query as sent upstream (with our id), kept for retries.
    upstream_query: Vec<u8>,
    transport: Transport,
    /// Upstreams `0..tried` have been sent this query.
    tried: usize,
    started: Instant,
    deadline: Instant,
}

/// A DNS forwarder for one router: local names, a cache and upstream
/// forwarding, as dnsmasq does for a libvirt network.
#[derive(Debug)]
pub struct DnsForwarder {
    config: DnsConfig,
    local: LocalNames,
    cache: AnswerCache,
    pending: HashMap<u16, Pending>,
    rng: u64,
    counters: DnsCounters,
}

impl DnsForwarder {
    /// Builds a forwarder; invalid domain or host names are errors naming
    /// them, so configuration mistakes surface at start.
    pub fn new(config: DnsConfig) -> Result<Self, String> {
        let local = LocalNames::new(config.domain.as_deref(), &config.hosts)?;
        Ok(DnsForwarder {
            local,
            cache: AnswerCache::new(config.cache_size),
            pending: HashMap::new(),
            rng: config.seed,
            counters: DnsCounters::default(),
            config,
        })
    }

    /// Handles one UDP query from `client`; replies and upstream queries
    /// are appended to `out`.
    pub fn handle_query(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        query: &[u8],
        out: &mut Vec<DnsOutput>,
    ) {
        self.counters.queries += 1;
        let (Ok(id), Ok(is_response), Ok(rd)) = (
            header_buffer::id(query),
            header_buffer::has_flags(query, PacketFlag::RESPONSE),
            header_buffer::has_flags(query, PacketFlag::RECURSION_DESIRED),
        ) else {
            self.counters.malformed += 1;
            return;
        };
        if is_response {
            // Never answer a response: two forwarders would loop.
            self.counters.malformed += 1;
            return;
        }
        let Ok(packet) = Packet::parse(query) else {
            self.counters.malformed += 1;
            let reply = reply_skeleton(id, rd, None, RCODE::FormatError, false);
            push_reply(out, client, &reply, CLASSIC_UDP_LIMIT, &mut self.counters);
            return;
        };
        let edns = packet.opt().map(|o| o.udp_packet_size);
        if packet.opcode() != OPCODE::StandardQuery {
            let mut reply = reply_skeleton(
                id,
                rd,
                packet.questions.first(),
                RCODE::NotImplemented,
                edns.is_some(),
            );
            if packet.opcode() != OPCODE::Reserved {
                *reply.opcode_mut() = packet.opcode();
            }
            push_reply(out, client, &reply, CLASSIC_UDP_LIMIT, &mut self.counters);
            return;
        }
        let extra_opt = packet
            .additional_records
            .iter()
            .any(|rr| rr.rdata.type_code() == TYPE::OPT);
        if packet.questions.len() != 1 || extra_opt {
            self.counters.malformed += 1;
            let reply = reply_skeleton(id, rd, None, RCODE::FormatError, edns.is_some());
            push_reply(out, client, &reply, CLASSIC_UDP_LIMIT, &mut self.counters);
            return;
        }
        let query = ClientQuery {
            client,
            id,
            rd,
            question: packet.questions[0].clone().into_owned(),
            edns,
        };
        let name = canonical(&query.question.qname);
        match self.local.resolve(&name, &self.config.local_subnets) {
            LocalAnswer::NotLocal => self.resolve_remote(now, query, packet, out),
            answer => self.answer_locally(&query, answer, out),
        }
    }

    /// Answers a local name: A or PTR records with [`LOCAL_TTL`], NODATA
    /// for other types, NXDOMAIN for unknown names in our zones.
    fn answer_locally(
        &mut self,
        query: &ClientQuery,
        answer: LocalAnswer,
        out: &mut Vec<DnsOutput>,
    ) {
        self.counters.local_answers += 1;
        let q = &query.question;
        let class_in = matches!(q.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
        let rcode = match answer {
            LocalAnswer::NxDomain => RCODE::NameError,
            _ => RCODE::NoError,
        };
        let target = match &answer {
            LocalAnswer::Pointer(name) => name.clone(),
            _ => String::new(),
        };
        let mut reply = reply_skeleton(query.id, query.rd, Some(q), rcode, query.edns.is_some());
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        match answer {
            LocalAnswer::Addresses(ips)
                if class_in && matches!(q.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) =>
            {
                for ip in ips {
                    reply.answers.push(a_record(q.qname.clone(), ip));
                }
            }
            LocalAnswer::Pointer(_)
                if class_in && matches!(q.qtype, QTYPE::TYPE(TYPE::PTR) | QTYPE::ANY) =>
            {
                if let Ok(target) = Name::new(&target) {
                    reply.answers.push(ResourceRecord::new(
                        q.qname.clone(),
                        CLASS::IN,
                        LOCAL_TTL,
                        RData::PTR(PTR(target)),
                    ));
                }
            }
            _ => {}
        }
        push_reply(out, query.client, &reply, query.limit(), &mut self.counters);
    }

    /// Answers from the cache, or forwards upstream, or says why not.
    fn resolve_remote(
        &mut self,
        now: Instant,
        query: ClientQuery,
        mut packet: Packet<'_>,
        out: &mut Vec<DnsOutput>,
    ) {
        let key = question_key(&query.question);
        if let Some(hit) = self.cache.get(now, &key)
            && let Ok(mut cached) = Packet::parse(hit.response)
        {
            self.counters.cache_hits += 1;
            age_ttls(&mut cached, hit.age);
            let reply = to_client(cached, &query);
            push_reply(out, query.client, &reply, query.limit(), &mut self.counters);
            return;
        }
        if self.config.local_only {
            self.counters.refused += 1;
            self.reply_rcode(&query, RCODE::Refused, out);
            return;
        }
        let Some(&server) = self.config.upstreams.first() else {
            self.reply_servfail(&query, out);
            return;
        };
        if self.pending.len() >= MAX_PENDING {
            self.counters.pending_full += 1;
            self.reply_servfail(&query, out);
            return;
        }
        let upstream_id = self.fresh_id();
        packet.set_id(upstream_id);
        let Ok(upstream_query) = packet.build_bytes_vec_compressed() else {
            self.reply_servfail(&query, out);
            return;
        };
        self.counters.forwarded += 1;
        out.push(DnsOutput::Upstream {
            server,
            transport: Transport::Udp,
            payload: upstream_query.clone(),
        });
        self.pending.insert(
            upstream_id,
            Pending {
                query,
                upstream_query,
                transport: Transport::Udp,
                tried: 1,
                started: now,
                deadline: now + UDP_TRY_TIMEOUT.min(TOTAL_TIMEOUT),
            },
        );
    }

    /// Handles one response from an upstream resolver.
    pub fn handle_upstream(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        response: &[u8],
        out: &mut Vec<DnsOutput>,
    ) {
        let Ok(packet) = Packet::parse(response) else {
            self.counters.upstream_rejected += 1;
            return;
        };
        let upstreams = &self.config.upstreams;
        let accepted = packet.has_flags(PacketFlag::RESPONSE)
            && packet.questions.len() == 1
            && self.pending.get(&packet.id()).is_some_and(|p| {
                upstreams[..p.tried.min(upstreams.len())].contains(&server)
                    && same_question(&packet.questions[0], &p.query.question)
            });
        if !accepted {
            self.counters.upstream_rejected += 1;
            return;
        }
        let id = packet.id();
        if transport == Transport::Udp && packet.has_flags(PacketFlag::TRUNCATION) {
            let Some(pending) = self.pending.get_mut(&id) else {
                return;
            };
            if pending.transport == Transport::Udp {
                self.counters.truncated_retried_tcp += 1;
                pending.transport = Transport::Tcp;
                pending.deadline = now + TCP_TIMEOUT;
                out.push(DnsOutput::Upstream {
                    server,
                    transport: Transport::Tcp,
                    payload: pending.upstream_query.clone(),
                });
            }
            return;
        }
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if let Some(ttl) = cache_ttl(&packet) {
            self.cache.insert(
                now,
                question_key(&pending.query.question),
                response.to_vec(),
                ttl,
            );
        }
        let reply = to_client(packet, &pending.query);
        push_reply(
            out,
            pending.query.client,
            &reply,
            pending.query.limit(),
            &mut self.counters,
        );
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Moves expired queries on to the next upstream, or answers SERVFAIL
    /// when none is left or the client has waited long enough.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<DnsOutput>) {
        let mut expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            self.counters.upstream_timeouts += 1;
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            let give_up_at = pending.started + TOTAL_TIMEOUT;
            if let Some(&server) = self.config.upstreams.get(pending.tried)
                && now < give_up_at
            {
                pending.tried += 1;
                pending.transport = Transport::Udp;
                pending.deadline = (now + UDP_TRY_TIMEOUT).min(give_up_at);
                out.push(DnsOutput::Upstream {
                    server,
                    transport: Transport::Udp,
                    payload: pending.upstream_query.clone(),
                });
                continue;
            }
            if let Some(pending) = self.pending.remove(&id) {
                self.reply_servfail(&pending.query, out);
            }
        }
        self.cache.purge_expired(now);
    }

    /// Publishes a DHCP client's bare name (it lives in the domain).
    pub fn add_dynamic_host(&mut self, name: &str, ip: Ipv4Addr) {
        if !self.local.add_dynamic(name, ip) {
            tracing::debug!("DNS: not publishing DHCP name {name:?} for {ip}");
        }
    }

    /// Withdraws a DHCP client's name when its lease ends.
    pub fn remove_dynamic_host(&mut self, name: &str, ip: Ipv4Addr) {
        self.local.remove_dynamic(name, ip);
    }

    /// The counters so far.
    pub fn counters(&self) -> &DnsCounters {
        &self.counters
    }

    /// Cached answers held (for `ctl` and tests of the bound).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn reply_servfail(&mut self, query: &ClientQuery, out: &mut Vec<DnsOutput>) {
        self.counters.servfail += 1;
        self.reply_rcode(query, RCODE::ServerFailure, out);
    }

    fn reply_rcode(&mut self, query: &ClientQuery, rcode: RCODE, out: &mut Vec<DnsOutput>) {
        let reply = reply_skeleton(
            query.id,
            query.rd,
            Some(&query.question),
            rcode,
            query.edns.is_some(),
        );
        push_reply(out, query.client, &reply, query.limit(), &mut self.counters);
    }

    /// An upstream id nobody could predict from outside (given a random
    /// seed) and that no pending query uses.
    fn fresh_id(&mut self) -> u16 {
        loop {
            // splitmix64
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let id = (z >> 48) as u16;
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }
}

/// An A record of a local name.
fn a_record(name: Name<'_>, ip: Ipv4Addr) -> ResourceRecord<'_> {
    ResourceRecord::new(name, CLASS::IN, LOCAL_TTL, RData::A(A::from(ip)))
}

/// Turns an upstream (or cached) response into the reply for `query`:
/// the client's id, question and RD bit, recursion available, and no
/// EDNS0 record unless the client sent one.
fn to_client<'a>(mut packet: Packet<'a>, query: &ClientQuery) -> Packet<'a> {
    packet.set_id(query.id);
    packet.questions = vec![query.question.clone()];
    packet.remove_flags(PacketFlag::RECURSION_DESIRED);
    if query.rd {
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    packet.set_flags(PacketFlag::RECURSION_AVAILABLE | PacketFlag::RESPONSE);
    if query.edns.is_none() {
        *packet.opt_mut() = None;
    }
    packet
}

/// Encodes a reply for a UDP client and queues it, counting truncation.
fn push_reply(
    out: &mut Vec<DnsOutput>,
    client: SocketAddrV4,
    reply: &Packet<'_>,
    limit: usize,
    counters: &mut DnsCounters,
) {
    let Some((payload, truncated)) = encode_for_udp(reply, limit) else {
        tracing::debug!("DNS: cannot encode a reply for {client}");
        return;
    };
    if truncated {
        counters.truncated_replies += 1;
    }
    out.push(DnsOutput::Reply { client, payload });
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{OPT, SOA};

    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 50), 40000);

    fn up(i: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, i], 53))
    }

    fn config() -> DnsConfig {
        DnsConfig {
            domain: Some("lab".into()),
            upstreams: vec![up(1), up(2)],
            hosts: vec![("gw".into(), Ipv4Addr::new(10, 0, 0, 1))],
            local_subnets: vec!["10.0.0.0/24".parse().unwrap()],
            seed: 7,
            ..DnsConfig::default()
        }
    }

    fn fwd() -> DnsForwarder {
        DnsForwarder::new(config()).unwrap()
    }

    fn query_bytes(id: u16, name: &str, qtype: TYPE, edns: Option<u16>) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new(name).unwrap(),
            qtype.into(),
            CLASS::IN.into(),
            false,
        ));
        if let Some(size) = edns {
            *p.opt_mut() = Some(OPT {
                opt_codes: Vec::new(),
                udp_packet_size: size,
                version: 0,
            });
        }
        p.build_bytes_vec().unwrap()
    }

    fn ask(f: &mut DnsForwarder, now: Instant, id: u16, name: &str, qtype: TYPE) -> Vec<DnsOutput> {
        let mut out = Vec::new();
        f.handle_query(now, CLIENT, &query_bytes(id, name, qtype, None), &mut out);
        out
    }

    /// The single client reply in `out`, parsed.
    fn reply(out: &[DnsOutput]) -> Packet<'_> {
        assert_eq!(out.len(), 1, "{out:?}");
        match &out[0] {
            DnsOutput::Reply { client, payload } => {
                assert_eq!(*client, CLIENT);
                Packet::parse(payload).unwrap()
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// The single upstream query in `out`: server, transport, parsed id.
    fn upstream(out: &[DnsOutput]) -> (SocketAddr, Transport, u16, Vec<u8>) {
        assert_eq!(out.len(), 1, "{out:?}");
        match &out[0] {
            DnsOutput::Upstream {
                server,
                transport,
                payload,
            } => (
                *server,
                *transport,
                Packet::parse(payload).unwrap().id(),
                payload.clone(),
            ),
            other => panic!("expected an upstream query, got {other:?}"),
        }
    }

    fn addrs(p: &Packet<'_>) -> Vec<(Ipv4Addr, u32)> {
        p.answers
            .iter()
            .filter_map(|rr| match &rr.rdata {
                RData::A(a) => Some((Ipv4Addr::from(a.address), rr.ttl)),
                _ => None,
            })
            .collect()
    }

    /// An upstream answer to `query` (bytes as sent upstream).
    fn answer(query: &[u8], rcode: RCODE, ttls: &[u32], soa: Option<(u32, u32)>) -> Vec<u8> {
        let q = Packet::parse(query).unwrap();
        let mut p = reply_skeleton(q.id(), true, q.questions.first(), rcode, false);
        for (i, ttl) in ttls.iter().enumerate() {
            p.answers.push(ResourceRecord::new(
                q.questions[0].qname.clone(),
                CLASS::IN,
                *ttl,
                RData::A(A::from(Ipv4Addr::new(198, 51, 100, i as u8 + 1))),
            ));
        }
        if let Some((ttl, minimum)) = soa {
            p.name_servers.push(ResourceRecord::new(
                Name::new("example.com").unwrap(),
                CLASS::IN,
                ttl,
                RData::SOA(SOA {
                    mname: Name::new("ns.example.com").unwrap(),
                    rname: Name::new("admin.example.com").unwrap(),
                    serial: 1,
                    refresh: 1,
                    retry: 1,
                    expire: 1,
                    minimum,
                }),
            ));
        }
        p.build_bytes_vec_compressed().unwrap()
    }

    #[test]
    fn local_a_records_for_bare_and_qualified_names() {
        let mut f = fwd();
        let t = Instant::from_secs(1);
        for name in ["gw", "GW.Lab.", "gw.lab"] {
            let out = ask(&mut f, t, 0x1234, name, TYPE::A);
            let p = reply(&out);
            assert_eq!(p.id(), 0x1234);
            assert_eq!(p.rcode(), RCODE::NoError);
            assert!(p.has_flags(
                PacketFlag::RESPONSE
                    | PacketFlag::RECURSION_DESIRED
                    | PacketFlag::RECURSION_AVAILABLE
                    | PacketFlag::AUTHORITATIVE_ANSWER
            ));
            assert_eq!(p.questions.len(), 1);
            assert_eq!(p.questions[0].qname.to_string(), name.trim_end_matches('.'));
            assert_eq!(addrs(&p), vec![(Ipv4Addr::new(10, 0, 0, 1), 0)]);
        }
        assert_eq!(f.counters().local_answers, 3);
        assert_eq!(f.counters().forwarded, 0);
    }

    #[test]
    fn local_nodata_nxdomain_and_ptr() {
        let mut f = fwd();
        let t = Instant::from_secs(1);
        let out = ask(&mut f, t, 1, "gw.lab", TYPE::AAAA);
        let p = reply(&out);
        assert_eq!(p.rcode(), RCODE::NoError);
        assert!(p.answers.is_empty());

        for name in ["nothere.lab", "nothere"] {
            let out = ask(&mut f, t, 2, name, TYPE::A);
            let p = reply(&out);
            assert_eq!(p.rcode(), RCODE::NameError, "{name}");
            assert!(p.answers.is_empty());
        }

        let out = ask(&mut f, t, 3, "1.0.0.10.in-addr.arpa", TYPE::PTR);
        let p = reply(&out);
        assert_eq!(p.rcode(), RCODE::NoError);
        assert_eq!(p.answers.len(), 1);
        assert_eq!(p.answers[0].ttl, 0);
        match &p.answers[0].rdata {
            RData::PTR(PTR(name)) => assert_eq!(name.to_string(), "gw.lab"),
            other => panic!("{other:?}"),
        }

        let out = ask(&mut f, t, 4, "77.0.0.10.in-addr.arpa", TYPE::PTR);
        assert_eq!(reply(&out).rcode(), RCODE::NameError);
        assert_eq!(f.counters().forwarded, 0);

        // Outside the local subnets, reverse names go upstream.
        let out = ask(&mut f, t, 5, "1.2.0.192.in-addr.arpa", TYPE::PTR);
        assert_eq!(upstream(&out).0, up(1));
    }

    #[test]
    fn local_ptr_without_domain_is_the_bare_name() {
        let mut f = DnsForwarder::new(DnsConfig {
            domain: None,
            ..config()
        })
        .unwrap();
        let out = ask(&mut f, Instant::ZERO, 3, "1.0.0.10.in-addr.arpa", TYPE::PTR);
        let p = reply(&out);
        match &p.answers[0].rdata {
            RData::PTR(PTR(name)) => assert_eq!(name.to_string(), "gw"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dhcp_names_come_and_go_and_static_names_win() {
        let mut f = fwd();
        let t = Instant::ZERO;
        let ip = Ipv4Addr::new(10, 0, 0, 60);
        f.add_dynamic_host("vm1", ip);
        f.add_dynamic_host("gw", Ipv4Addr::new(10, 0, 0, 99));
        let out = ask(&mut f, t, 9, "vm1.lab", TYPE::A);
        assert_eq!(addrs(&reply(&out)), vec![(ip, 0)]);
        let out = ask(&mut f, t, 9, "gw", TYPE::A);
        assert_eq!(addrs(&reply(&out)), vec![(Ipv4Addr::new(10, 0, 0, 1), 0)]);
        let out = ask(&mut f, t, 9, "60.0.0.10.in-addr.arpa", TYPE::PTR);
        assert_eq!(reply(&out).answers.len(), 1);
        f.remove_dynamic_host("vm1", ip);
        let out = ask(&mut f, t, 9, "vm1.lab", TYPE::A);
        assert_eq!(reply(&out).rcode(), RCODE::NameError);
        let out = ask(&mut f, t, 9, "60.0.0.10.in-addr.arpa", TYPE::PTR);
        assert_eq!(reply(&out).rcode(), RCODE::NameError);
    }

    #[test]
    fn forwarded_query_gets_a_fresh_id_and_the_reply_the_clients() {
        let mut f = fwd();
        let t = Instant::from_secs(10);
        let out = ask(&mut f, t, 0xabcd, "www.Example.com", TYPE::A);
        let (server, transport, id, sent) = upstream(&out);
        assert_eq!((server, transport), (up(1), Transport::Udp));
        assert_ne!(id, 0xabcd);
        let sent_q = Packet::parse(&sent).unwrap();
        assert_eq!(sent_q.questions[0].qname.to_string(), "www.Example.com");
        assert!(sent_q.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(f.poll_timeout(), Some(t + UDP_TRY_TIMEOUT));

        let mut out = Vec::new();
        let resp = answer(&sent, RCODE::NoError, &[300, 120], None);
        f.handle_upstream(t, up(1), Transport::Udp, &resp, &mut out);
        let p = reply(&out);
        assert_eq!(p.id(), 0xabcd);
        assert_eq!(p.questions[0].qname.to_string(), "www.Example.com");
        assert!(p.has_flags(PacketFlag::RECURSION_AVAILABLE | PacketFlag::RECURSION_DESIRED));
        assert_eq!(
            addrs(&p),
            vec![
                (Ipv4Addr::new(198, 51, 100, 1), 300),
                (Ipv4Addr::new(198, 51, 100, 2), 120)
            ]
        );
        assert_eq!(f.poll_timeout(), None);
        assert_eq!(f.counters().forwarded, 1);
        assert_eq!(f.cache_len(), 1);

        // A duplicate of the same response is late: dropped.
        let mut out = Vec::new();
        f.handle_upstream(t, up(1), Transport::Udp, &resp, &mut out);
        assert!(out.is_empty());
        assert_eq!(f.counters().upstream_rejected, 1);
    }

    #[test]
    fn spoofed_responses_are_ignored() {
        let mut f = fwd();
        let t = Instant::ZERO;
        let out = ask(&mut f, t, 5, "example.com", TYPE::A);
        let (_, _, id, sent) = upstream(&out);
        let good = answer(&sent, RCODE::NoError, &[60], None);
        let mut out = Vec::new();
        // Wrong server (never sent this query).
        f.handle_upstream(t, up(2), Transport::Udp, &good, &mut out);
        f.handle_upstream(t, up(9), Transport::Udp, &good, &mut out);
        // Wrong id.
        let mut wrong_id = Packet::parse(&good).unwrap();
        wrong_id.set_id(id.wrapping_add(1));
        f.handle_upstream(
            t,
            up(1),
            Transport::Udp,
            &wrong_id.build_bytes_vec().unwrap(),
            &mut out,
        );
        // Wrong question.
        let other = query_bytes(id, "evil.example.com", TYPE::A, None);
        let evil = answer(&other, RCODE::NoError, &[60], None);
        f.handle_upstream(t, up(1), Transport::Udp, &evil, &mut out);
        // A query, not a response, and garbage.
        f.handle_upstream(t, up(1), Transport::Udp, &sent, &mut out);
        f.handle_upstream(t, up(1), Transport::Udp, &[1, 2, 3], &mut out);
        assert!(out.is_empty());
        assert_eq!(f.counters().upstream_rejected, 6);
        assert_eq!(f.cache_len(), 0);
        // The real one still gets through.
        f.handle_upstream(t, up(1), Transport::Udp, &good, &mut out);
        assert_eq!(reply(&out).id(), 5);
    }

    #[test]
    fn timeouts_walk_the_upstreams_then_servfail() {
        let mut f = fwd();
        let t0 = Instant::from_secs(100);
        let out = ask(&mut f, t0, 77, "slow.example.com", TYPE::A);
        let (_, _, id1, sent) = upstream(&out);
        let mut out = Vec::new();
        f.handle_timeout(t0 + Duration::from_millis(1999), &mut out);
        assert!(out.is_empty());
        f.handle_timeout(t0 + UDP_TRY_TIMEOUT, &mut out);
        let (server, transport, id2, _) = upstream(&out);
        assert_eq!((server, transport, id2), (up(2), Transport::Udp, id1));
        assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(4)));
        // Now the first server's late answer is still welcome... but let it
        // stay silent: the second times out too, and the client hears SERVFAIL.
        let mut out = Vec::new();
        f.handle_timeout(t0 + Duration::from_secs(4), &mut out);
        let p = reply(&out);
        assert_eq!(p.id(), 77);
        assert_eq!(p.rcode(), RCODE::ServerFailure);
        assert_eq!(p.questions[0].qname.to_string(), "slow.example.com");
        assert_eq!(f.counters().upstream_timeouts, 2);
        assert_eq!(f.counters().servfail, 1);
        assert_eq!(f.poll_timeout(), None);
        // Late answers after giving up are dropped.
        let mut out = Vec::new();
        let late = answer(&sent, RCODE::NoError, &[60], None);
        f.handle_upstream(
            t0 + Duration::from_secs(5),
            up(1),
            Transport::Udp,
            &late,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn late_answer_from_an_earlier_upstream_is_taken() {
        let mut f = fwd();
        let t0 = Instant::ZERO;
        let out = ask(&mut f, t0, 8, "a.example.com", TYPE::A);
        let (_, _, _, sent) = upstream(&out);
        let mut out = Vec::new();
        f.handle_timeout(t0 + UDP_TRY_TIMEOUT, &mut out);
        assert_eq!(upstream(&out).0, up(2));
        let mut out = Vec::new();
        let resp = answer(&sent, RCODE::NoError, &[60], None);
        f.handle_upstream(
            t0 + Duration::from_secs(3),
            up(1),
            Transport::Udp,
            &resp,
            &mut out,
        );
        assert_eq!(reply(&out).id(), 8);
    }

    #[test]
    fn truncated_udp_answer_is_retried_over_tcp() {
        let mut f = fwd();
        let t0 = Instant::from_secs(3);
        let out = ask(&mut f, t0, 31, "big.example.com", TYPE::TXT);
        let (_, _, id, sent) = upstream(&out);
        let tc_bytes = answer(&sent, RCODE::NoError, &[], None);
        let mut tc = Packet::parse(&tc_bytes).unwrap();
        tc.set_flags(PacketFlag::TRUNCATION);
        let mut out = Vec::new();
        let t1 = t0 + Duration::from_millis(100);
        f.handle_upstream(
            t1,
            up(1),
            Transport::Udp,
            &tc.build_bytes_vec().unwrap(),
            &mut out,
        );
        let (server, transport, tcp_id, payload) = upstream(&out);
        assert_eq!((server, transport, tcp_id), (up(1), Transport::Tcp, id));
        assert_eq!(payload, sent);
        assert_eq!(f.counters().truncated_retried_tcp, 1);
        assert_eq!(f.poll_timeout(), Some(t1 + TCP_TIMEOUT));
        assert_eq!(f.cache_len(), 0);
        let mut out = Vec::new();
        let full = answer(&sent, RCODE::NoError, &[60, 60], None);
        f.handle_upstream(t1, up(1), Transport::Tcp, &full, &mut out);
        let p = reply(&out);
        assert_eq!(p.id(), 31);
        assert!(!p.has_flags(PacketFlag::TRUNCATION));
        assert_eq!(p.answers.len(), 2);
    }

    /// Forwards one query and feeds back `resp`, returning the upstream query.
    fn forward_and_answer(
        f: &mut DnsForwarder,
        now: Instant,
        name: &str,
        rcode: RCODE,
        ttls: &[u32],
        soa: Option<(u32, u32)>,
    ) -> Vec<DnsOutput> {
        let out = ask(f, now, 1, name, TYPE::A);
        let (server, _, _, sent) = upstream(&out);
        let mut out = Vec::new();
        f.handle_upstream(
            now,
            server,
            Transport::Udp,
            &answer(&sent, rcode, ttls, soa),
            &mut out,
        );
        out
    }

    #[test]
    fn cache_hits_age_ttls_and_expire_exactly() {
        let mut f = fwd();
        let t0 = Instant::from_secs(1000);
        forward_and_answer(
            &mut f,
            t0,
            "c.example.com",
            RCODE::NoError,
            &[100, 40],
            None,
        );
        let out = ask(
            &mut f,
            t0 + Duration::from_millis(15_500),
            0x7777,
            "C.EXAMPLE.COM",
            TYPE::A,
        );
        let p = reply(&out);
        assert_eq!(p.id(), 0x7777);
        assert_eq!(p.questions[0].qname.to_string(), "C.EXAMPLE.COM");
        assert_eq!(
            addrs(&p),
            vec![
                (Ipv4Addr::new(198, 51, 100, 1), 85),
                (Ipv4Addr::new(198, 51, 100, 2), 25)
            ]
        );
        assert_eq!(f.counters().cache_hits, 1);
        // One microsecond before the smallest TTL runs out: still cached.
        let out = ask(
            &mut f,
            t0 + Duration::from_micros(39_999_999),
            2,
            "c.example.com",
            TYPE::A,
        );
        assert_eq!(addrs(&reply(&out))[1].1, 1);
        // At exactly 40 s it is gone and the query goes upstream.
        let out = ask(
            &mut f,
            t0 + Duration::from_secs(40),
            3,
            "c.example.com",
            TYPE::A,
        );
        upstream(&out);
        assert_eq!(f.counters().cache_hits, 2);
    }

    #[test]
    fn negative_answers_are_cached_by_soa_failures_not_at_all() {
        let mut f = fwd();
        let t0 = Instant::ZERO;
        let out = forward_and_answer(
            &mut f,
            t0,
            "nx.example.com",
            RCODE::NameError,
            &[],
            Some((3600, 30)),
        );
        assert_eq!(reply(&out).rcode(), RCODE::NameError);
        let out = ask(
            &mut f,
            t0 + Duration::from_secs(29),
            2,
            "nx.example.com",
            TYPE::A,
        );
        let p = reply(&out);
        assert_eq!(p.rcode(), RCODE::NameError);
        assert_eq!(p.name_servers[0].ttl, 3600 - 29);
        let out = ask(
            &mut f,
            t0 + Duration::from_secs(30),
            2,
            "nx.example.com",
            TYPE::A,
        );
        upstream(&out);

        // NODATA without SOA: 60 s.
        let mut f = fwd();
        forward_and_answer(&mut f, t0, "nodata.example.com", RCODE::NoError, &[], None);
        let out = ask(
            &mut f,
            t0 + Duration::from_secs(59),
            2,
            "nodata.example.com",
            TYPE::A,
        );
        assert_eq!(reply(&out).rcode(), RCODE::NoError);
        let out = ask(
            &mut f,
            t0 + Duration::from_secs(60),
            2,
            "nodata.example.com",
            TYPE::A,
        );
        upstream(&out);

        // SERVFAIL and REFUSED are passed on, never cached.
        let mut f = fwd();
        for rcode in [RCODE::ServerFailure, RCODE::Refused] {
            let out = forward_and_answer(&mut f, t0, "sf.example.com", rcode, &[], None);
            assert_eq!(reply(&out).rcode(), rcode);
            assert_eq!(f.cache_len(), 0);
        }
        assert_eq!(f.counters().servfail, 0);
    }

    #[test]
    fn cache_is_bounded() {
        let mut f = DnsForwarder::new(DnsConfig {
            cache_size: 3,
            ..config()
        })
        .unwrap();
        for (i, ttl) in [50u32, 10, 90, 70].iter().enumerate() {
            forward_and_answer(
                &mut f,
                Instant::ZERO,
                &format!("h{i}.example.com"),
                RCODE::NoError,
                &[*ttl],
                None,
            );
        }
        assert_eq!(f.cache_len(), 3);
        // h1 (TTL 10) expired soonest and was evicted.
        upstream(&ask(
            &mut f,
            Instant::from_secs(1),
            1,
            "h1.example.com",
            TYPE::A,
        ));
        for name in ["h0.example.com", "h2.example.com", "h3.example.com"] {
            assert_eq!(
                reply(&ask(&mut f, Instant::from_secs(1), 1, name, TYPE::A))
                    .answers
                    .len(),
                1
            );
        }
    }

    #[test]
    fn local_only_refuses_and_no_upstream_servfails() {
        let mut f = DnsForwarder::new(DnsConfig {
            local_only: true,
            ..config()
        })
        .unwrap();
        let out = ask(&mut f, Instant::ZERO, 4, "example.com", TYPE::A);
        let p = reply(&out);
        assert_eq!(p.rcode(), RCODE::Refused);
        assert_eq!(p.id(), 4);
        assert_eq!(f.counters().refused, 1);
        assert_eq!(
            addrs(&reply(&ask(&mut f, Instant::ZERO, 4, "gw", TYPE::A))).len(),
            1
        );

        let mut f = DnsForwarder::new(DnsConfig {
            upstreams: Vec::new(),
            ..config()
        })
        .unwrap();
        let out = ask(&mut f, Instant::ZERO, 4, "example.com", TYPE::A);
        let p = reply(&out);
        assert_eq!(p.rcode(), RCODE::ServerFailure);
        assert_eq!(f.counters().servfail, 1);
    }

    #[test]
    fn pending_table_is_bounded_and_ids_are_unique() {
        let mut f = fwd();
        let mut ids = std::collections::HashSet::new();
        for i in 0..MAX_PENDING {
            let out = ask(
                &mut f,
                Instant::ZERO,
                i as u16,
                &format!("n{i}.example.com"),
                TYPE::A,
            );
            assert!(ids.insert(upstream(&out).2));
        }
        let out = ask(&mut f, Instant::ZERO, 9, "one-more.example.com", TYPE::A);
        let p = reply(&out);
        assert_eq!(p.rcode(), RCODE::ServerFailure);
        assert_eq!(f.counters().pending_full, 1);
    }

    #[test]
    fn malformed_queries() {
        let mut f = fwd();
        let mut out = Vec::new();
        // Too short for a header: dropped.
        f.handle_query(Instant::ZERO, CLIENT, &[1, 2, 3], &mut out);
        assert!(out.is_empty());
        // A header and rubbish: FORMERR with the id.
        let mut bad = query_bytes(0x5151, "x.example.com", TYPE::A, None);
        bad.truncate(16);
        f.handle_query(Instant::ZERO, CLIENT, &bad, &mut out);
        let p = reply(&out);
        assert_eq!((p.id(), p.rcode()), (0x5151, RCODE::FormatError));
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
        // Two questions: FORMERR.
        let mut two = Packet::new_query(0x5252);
        for n in ["a.com", "b.com"] {
            two.questions.push(Question::new(
                Name::new(n).unwrap(),
                TYPE::A.into(),
                CLASS::IN.into(),
                false,
            ));
        }
        let mut out = Vec::new();
        f.handle_query(
            Instant::ZERO,
            CLIENT,
            &two.build_bytes_vec().unwrap(),
            &mut out,
        );
        let p = reply(&out);
        assert_eq!((p.id(), p.rcode()), (0x5252, RCODE::FormatError));
        // Not a QUERY: NOTIMP.
        let notify_bytes = query_bytes(0x5353, "a.com", TYPE::SOA, None);
        let mut notify = Packet::parse(&notify_bytes).unwrap();
        *notify.opcode_mut() = OPCODE::Notify;
        let mut out = Vec::new();
        f.handle_query(
            Instant::ZERO,
            CLIENT,
            &notify.build_bytes_vec().unwrap(),
            &mut out,
        );
        let p = reply(&out);
        assert_eq!(
            (p.id(), p.rcode(), p.opcode()),
            (0x5353, RCODE::NotImplemented, OPCODE::Notify)
        );
        // A response is never answered.
        let resp = answer(
            &query_bytes(0x5454, "a.com", TYPE::A, None),
            RCODE::NoError,
            &[1],
            None,
        );
        let mut out = Vec::new();
        f.handle_query(Instant::ZERO, CLIENT, &resp, &mut out);
        assert!(out.is_empty());
        assert_eq!(f.counters().malformed, 4);
        assert_eq!(f.counters().queries, 5);
    }

    #[test]
    fn big_replies_are_truncated_to_the_clients_limit() {
        let many: Vec<u32> = vec![60; 40];
        // Without EDNS0: 512 bytes.
        let mut f = fwd();
        let out = forward_and_answer(
            &mut f,
            Instant::ZERO,
            "big.example.com",
            RCODE::NoError,
            &many,
            None,
        );
        let p = reply(&out);
        assert!(p.has_flags(PacketFlag::TRUNCATION));
        assert!(p.answers.is_empty());
        assert_eq!(p.questions[0].qname.to_string(), "big.example.com");
        assert_eq!(f.counters().truncated_replies, 1);
        // With EDNS0 at 4096 the same answer fits (from the cache).
        let mut out = Vec::new();
        let q = query_bytes(6, "big.example.com", TYPE::A, Some(4096));
        f.handle_query(Instant::ZERO, CLIENT, &q, &mut out);
        let p = reply(&out);
        assert!(!p.has_flags(PacketFlag::TRUNCATION));
        assert_eq!(p.answers.len(), 40);
        assert_eq!(f.counters().cache_hits, 1);
        // A local reply to an EDNS0 query carries an OPT record.
        let mut out = Vec::new();
        f.handle_query(
            Instant::ZERO,
            CLIENT,
            &query_bytes(7, "gw", TYPE::A, Some(1400)),
            &mut out,
        );
        assert!(reply(&out).opt().is_some());
    }

    #[test]
    fn invalid_config_is_an_error() {
        assert!(
            DnsForwarder::new(DnsConfig {
                hosts: vec![("a..b".repeat(100), Ipv4Addr::LOCALHOST)],
                ..config()
            })
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            flip in 0usize..64,
        ) {
            let mut f = fwd();
            let mut out = Vec::new();
            f.handle_query(Instant::ZERO, CLIENT, &bytes, &mut out);
            f.handle_upstream(Instant::ZERO, up(1), Transport::Udp, &bytes, &mut out);
            // Also a valid query with one byte flipped, and its answer.
            let mut q = query_bytes(3, "p.example.com", TYPE::A, Some(1232));
            let i = flip % q.len();
            q[i] ^= 0xff;
            f.handle_query(Instant::ZERO, CLIENT, &q, &mut out);
            for o in out.clone() {
                if let DnsOutput::Upstream { payload, server, .. } = o {
                    let mut a = answer(&payload, RCODE::NoError, &[5], None);
                    let j = flip % a.len();
                    a[j] ^= 0x55;
                    f.handle_upstream(Instant::ZERO, server, Transport::Udp, &a, &mut out);
                }
            }
            f.handle_timeout(Instant::from_secs(100), &mut out);
            proptest::prop_assert!(f.poll_timeout().is_none());
        }
    }
}
