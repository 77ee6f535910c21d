//! The router's NAT stage: decides, per packet, whether and how it is
//! translated, creating flows as the rules say.
//!
//! The router asks twice. On arrival ([`Nat::ingress`]), before routing:
//! does the packet belong to a flow (then it gets that flow's other-side
//! addresses, which may change where it is routed), does it open a port
//! forward, or is it an uninvited guest at the outside address? After the
//! route is known ([`Nat::egress`]): does a masquerade rule translate this
//! new flow on its way out? Either answer is a [`Translation`] that the
//! router applies to its own copy of the packet with [`Translation::apply`].

use super::conntrack::{Conntrack, ConntrackConfig, ConntrackStats, Flow, FlowId};
use super::rewrite::{self, Classified};
use super::rules::NatRules;
use super::{Direction, Proto};
use crate::router::IfaceId;
use crate::router::counters::RouterCounters;
use crate::time::Instant;
use smoltcp::wire::Ipv4Packet;
use std::net::{Ipv4Addr, SocketAddrV4};

/// How to rewrite one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// A packet of a flow: new source and destination (addresses and
    /// ports, or ICMP identifier).
    Rewrite {
        /// New source.
        src: SocketAddrV4,
        /// New destination.
        dst: SocketAddrV4,
    },
    /// An ICMP error about a translated packet, turned back into one about
    /// the packet as its sender sent it.
    IcmpError {
        /// New outer source, when the error came from the host the quoted
        /// packet was translated for.
        outer_src: Option<Ipv4Addr>,
        /// New outer destination: the quoted packet's original sender.
        outer_dst: Ipv4Addr,
        /// The quoted packet's original source.
        inner_src: SocketAddrV4,
        /// The quoted packet's original destination.
        inner_dst: SocketAddrV4,
    },
}

impl Translation {
    /// Where the packet goes after translation (what to route on).
    pub fn destination(&self) -> Ipv4Addr {
        match self {
            Translation::Rewrite { dst, .. } => *dst.ip(),
            Translation::IcmpError { outer_dst, .. } => *outer_dst,
        }
    }

    /// Rewrites `packet` (an IPv4 packet, the router's own copy) in place.
    /// False when it cannot be (then it must be dropped).
    pub fn apply(&self, packet: &mut [u8]) -> bool {
        match *self {
            Translation::Rewrite { src, dst } => rewrite::rewrite(packet, src, dst).is_ok(),
            Translation::IcmpError {
                outer_src,
                outer_dst,
                inner_src,
                inner_dst,
            } => {
                if rewrite::rewrite_icmp_error(packet, outer_dst, inner_src, inner_dst).is_err() {
                    return false;
                }
                if let Some(src) = outer_src {
                    // The ICMP checksum does not cover the outer header:
                    // only the address and the header checksum change.
                    let mut ip = Ipv4Packet::new_unchecked(packet);
                    ip.set_src_addr(src);
                    ip.fill_checksum();
                }
                true
            }
        }
    }
}

/// What arrival decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Not NAT's business (yet): route it normally, then ask
    /// [`Nat::egress`] with this classification.
    Pass(Classified),
    /// Translate it, then route it by its new destination.
    Translate(Translation),
    /// Refuse it (already counted).
    Drop,
}

/// What departure decided for a packet without a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Forward untranslated.
    Pass,
    /// Translate it (a new masqueraded flow).
    Translate(Translation),
    /// Refuse it (already counted).
    Drop,
}

/// Everything NAT keeps for one router.
#[derive(Debug)]
pub struct Nat {
    rules: NatRules,
    table: Conntrack,
}

impl Nat {
    /// NAT with these rules and a table sized by `config`.
    pub fn new(rules: NatRules, config: ConntrackConfig) -> Nat {
        Nat {
            rules,
            table: Conntrack::new(config),
        }
    }

    /// The rules, for display.
    pub fn rules(&self) -> &NatRules {
        &self.rules
    }

    /// The flow table, for display.
    pub fn table(&self) -> &Conntrack {
        &self.table
    }

    /// The table's own counters.
    pub fn stats(&self) -> ConntrackStats {
        self.table.stats()
    }

    /// Forgets every flow; returns how many there were.
    pub fn flush(&mut self) -> usize {
        self.table.flush()
    }

    /// When flows are next checked for expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Expires idle and closed flows.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.table.handle_timeout(now);
    }

    /// Decides what happens to a valid packet that arrived on `iface`,
    /// before it is routed. `local` lists the router's addresses with
    /// their interfaces.
    pub fn ingress(
        &mut self,
        now: Instant,
        iface: IfaceId,
        packet: &[u8],
        local: &[(Ipv4Addr, IfaceId)],
        counters: &mut RouterCounters,
    ) -> Ingress {
        let header = Ipv4Packet::new_unchecked(packet);
        let (src, dst) = (header.src_addr(), header.dst_addr());
        let owner = local.iter().find(|(a, _)| *a == dst).map(|&(_, i)| i);
        let class = rewrite::classify(packet);
        match class {
            Classified::Flow {
                key,
                tcp_flags,
                first_fragment,
            } => {
                if let Some((id, dir)) = self.table.lookup(&key) {
                    return self.follow(now, id, dir, packet, tcp_flags, first_fragment, counters);
                }
                let Some(owner) = owner else {
                    return Ingress::Pass(class);
                };
                if let Some(inside) = self.rules.forward_for(&key, owner) {
                    if owner != iface {
                        // Hairpin: an inside host using the outside
                        // address. The server would answer it directly,
                        // bypassing the translation, so it is refused.
                        counters.nat_hairpin_refused += 1;
                        return Ingress::Drop;
                    }
                    return match self.table.create_dnat(now, key, inside) {
                        Ok(id) => self.follow(
                            now,
                            id,
                            Direction::Original,
                            packet,
                            tcp_flags,
                            first_fragment,
                            counters,
                        ),
                        Err(_) => {
                            counters.nat_refused += 1;
                            Ingress::Drop
                        }
                    };
                }
                if key.proto != Proto::Icmp && self.rules.is_outside(owner) {
                    // Nobody inside asked for this: NAT lets no one in
                    // uninvited (and says nothing, as a firewall would).
                    counters.nat_unsolicited += 1;
                    return Ingress::Drop;
                }
                Ingress::Pass(class)
            }
            Classified::IcmpError { inner } => {
                let Some((id, dir)) = self.table.lookup(&inner.reversed()) else {
                    return Ingress::Pass(class);
                };
                let Some(flow) = self.table.get(id) else {
                    return Ingress::Pass(class);
                };
                // The quoted packet left us translated, in the direction
                // opposite to the one its reversal names: before
                // translation it looked like the other direction's key.
                let before = match dir {
                    Direction::Reply => flow.original,
                    Direction::Original => flow.reply,
                };
                let outer_src = (src == *inner.dst.ip()).then_some(*before.dst.ip());
                counters.nat_translated += 1;
                Ingress::Translate(Translation::IcmpError {
                    outer_src,
                    outer_dst: *before.src.ip(),
                    inner_src: before.src,
                    inner_dst: before.dst,
                })
            }
            Classified::LaterFragment { proto, ident } => {
                if let Some((id, dir)) = self.table.fragment_flow(now, src, dst, proto, ident)
                    && let Some(flow) = self.table.get(id)
                {
                    let (src, dst) = flow.translate(dir);
                    counters.nat_translated += 1;
                    return Ingress::Translate(Translation::Rewrite { src, dst });
                }
                if owner.is_some_and(|o| self.rules.is_outside(o)) {
                    self.table.note_fragment_dropped();
                    counters.nat_fragments_dropped += 1;
                    return Ingress::Drop;
                }
                Ingress::Pass(class)
            }
            Classified::Other => Ingress::Pass(class),
        }
    }

    /// A packet of a known flow: accounted, then translated.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        now: Instant,
        id: FlowId,
        dir: Direction,
        packet: &[u8],
        tcp_flags: u8,
        first_fragment: bool,
        counters: &mut RouterCounters,
    ) -> Ingress {
        self.table.update(now, id, dir, packet.len(), tcp_flags);
        if first_fragment {
            let h = Ipv4Packet::new_unchecked(packet);
            self.table.track_fragments(
                now,
                h.src_addr(),
                h.dst_addr(),
                u8::from(h.next_header()),
                h.ident(),
                id,
                dir,
            );
        }
        match self.table.get(id) {
            Some(flow) => {
                counters.nat_translated += 1;
                Ingress::Translate(rewrite_of(flow, dir))
            }
            None => Ingress::Pass(Classified::Other),
        }
    }

    /// Decides, once its route is known, whether a packet that belongs to
    /// no flow opens a masqueraded one. `class` is what
    /// [`ingress`](Self::ingress) found; `outside` is the address the
    /// router would speak from out of `out` towards the destination.
    pub fn egress(
        &mut self,
        now: Instant,
        class: Classified,
        packet: &[u8],
        out: IfaceId,
        outside: Option<Ipv4Addr>,
        counters: &mut RouterCounters,
    ) -> Egress {
        let header = Ipv4Packet::new_unchecked(packet);
        let (src, dst) = (header.src_addr(), header.dst_addr());
        if self.rules.masquerade_for(src, dst, out).is_none() {
            return Egress::Pass;
        }
        let Some(outside) = outside else {
            counters.nat_refused += 1;
            return Egress::Drop;
        };
        match class {
            Classified::Flow {
                key,
                tcp_flags,
                first_fragment,
            } => match self.table.create_snat(now, key, outside) {
                Ok(id) => match self.follow(
                    now,
                    id,
                    Direction::Original,
                    packet,
                    tcp_flags,
                    first_fragment,
                    counters,
                ) {
                    Ingress::Translate(t) => Egress::Translate(t),
                    _ => Egress::Drop,
                },
                Err(_) => {
                    counters.nat_refused += 1;
                    Egress::Drop
                }
            },
            Classified::LaterFragment { .. } => {
                // Its first fragment was never seen: it cannot be
                // translated, and untranslated it would leak the inside
                // address.
                self.table.note_fragment_dropped();
                counters.nat_fragments_dropped += 1;
                Egress::Drop
            }
            Classified::IcmpError { .. } | Classified::Other => {
                counters.nat_untrackable += 1;
                Egress::Drop
            }
        }
    }
}

/// The rewrite that takes a packet of `flow` travelling in `dir` to the
/// other side's view.
fn rewrite_of(flow: &Flow, dir: Direction) -> Translation {
    let (src, dst) = flow.translate(dir);
    Translation::Rewrite { src, dst }
}
