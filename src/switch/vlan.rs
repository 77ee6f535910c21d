//! 802.1Q VLAN membership inside a segment, and the tag rewrites it implies.
//!
//! A segment starts VLAN-unaware: every port is an untagged member of
//! [`DEFAULT_VLAN`](super::DEFAULT_VLAN) and frames are switched with
//! whatever tags they carry, exactly as before VLANs existed, so the fast
//! path pays one flag test for them. Creating a second VLAN on a segment
//! turns *filtering* on, with the semantics of `vde_switch` and of a Linux
//! bridge with `vlan_filtering 1`:
//!
//! * every port has one untagged VLAN (its PVID) and any number of tagged
//!   ones (a trunk);
//! * ingress: an untagged or priority-tagged (VID 0) frame belongs to the
//!   PVID; a tagged frame is accepted if its VID is configured on the port,
//!   tagged *or* as its PVID (Linux accepts it then too), and is dropped as
//!   [`VlanFiltered`](super::DropReason::VlanFiltered) otherwise;
//! * learning, unicast and flooding happen within the frame's VLAN only;
//! * egress: a port whose PVID is the frame's VLAN gets it untagged, a
//!   tagged member gets it with the VLAN's tag (keeping the frame's priority
//!   bits if it had a tag).
//!
//! Out of scope: QinQ. An 802.1ad (0x88a8) outer tag is not a VLAN tag
//! here; such a frame is untagged payload of its port's PVID and is carried
//! unchanged inside it.
//!
//! This file holds the membership tables and the byte-level tag push/pop,
//! which is pure and needs no I/O, so the daemon's fan-out and the tests
//! share it.

use super::frame::{ETHERNET_HEADER_LEN, VLAN_TAG_LEN};
use std::fmt;

/// The highest usable VLAN id (4095 is reserved by 802.1Q).
pub const MAX_VID: u16 = 4094;

/// The 802.1Q tag protocol identifier.
const TPID_8021Q: [u8; 2] = [0x81, 0x00];

/// Why a VLAN change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanError {
    /// The VLAN does not exist on the segment.
    NoSuchVlan,
    /// The VLAN already exists on the segment.
    Exists,
    /// The VLAN is some port's untagged or tagged VLAN, or is the default
    /// VLAN, which always exists.
    InUse,
    /// The id is outside 1..=4094.
    OutOfRange,
    /// No port has this handle.
    NoSuchPort,
    /// No segment has this handle.
    NoSuchSegment,
}

impl fmt::Display for VlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VlanError::NoSuchVlan => "no such VLAN on the segment",
            VlanError::Exists => "the VLAN already exists",
            VlanError::InUse => "the VLAN is in use (by a port, or it is the default VLAN)",
            VlanError::OutOfRange => "VLAN ids are 1..=4094",
            VlanError::NoSuchPort => "no such port",
            VlanError::NoSuchSegment => "no such segment",
        })
    }
}

impl std::error::Error for VlanError {}

/// Checks a VLAN id is one a user may configure.
pub(crate) fn check_vid(vid: u16) -> Result<(), VlanError> {
    if (1..=MAX_VID).contains(&vid) {
        Ok(())
    } else {
        Err(VlanError::OutOfRange)
    }
}

/// A set of VLAN ids as a 4096-bit map: membership tests on the flooding
/// path are one load and a mask, with no allocation.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct VlanSet([u64; 64]);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet([0; 64])
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl VlanSet {
    pub(crate) fn contains(&self, vid: u16) -> bool {
        let v = usize::from(vid & 0x0fff);
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    /// Adds `vid`; returns whether it was new.
    pub(crate) fn insert(&mut self, vid: u16) -> bool {
        let v = usize::from(vid & 0x0fff);
        let new = !self.contains(vid);
        self.0[v / 64] |= 1 << (v % 64);
        new
    }

    /// Removes `vid`; returns whether it was there.
    pub(crate) fn remove(&mut self, vid: u16) -> bool {
        let v = usize::from(vid & 0x0fff);
        let had = self.contains(vid);
        self.0[v / 64] &= !(1 << (v % 64));
        had
    }

    /// The ids in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..4096u16).filter(|&v| self.contains(v))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

/// One port's VLAN memberships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortVlans {
    /// The port's untagged VLAN (PVID).
    pub(crate) untagged: u16,
    /// The VLANs the port carries tagged.
    pub(crate) tagged: VlanSet,
}

impl Default for PortVlans {
    fn default() -> Self {
        PortVlans {
            untagged: super::DEFAULT_VLAN,
            tagged: VlanSet::default(),
        }
    }
}

impl PortVlans {
    /// Whether the port belongs to `vid` at all.
    pub(crate) fn is_member(&self, vid: u16) -> bool {
        self.untagged == vid || self.tagged.contains(vid)
    }

    /// The port has the settings every port starts with.
    pub(crate) fn is_default(&self) -> bool {
        self.untagged == super::DEFAULT_VLAN && self.tagged.is_empty()
    }

    /// How a frame of VLAN `vid` that arrived with tag control
    /// information `tci` (`None`: untagged) must leave this port, or
    /// `None` if the port is not in the VLAN.
    pub(crate) fn egress(&self, vid: u16, tci: Option<u16>) -> Option<TagAction> {
        if self.untagged == vid {
            return Some(match tci {
                None => TagAction::Keep,
                Some(_) => TagAction::Untag,
            });
        }
        if !self.tagged.contains(vid) {
            return None;
        }
        Some(match tci {
            Some(t) if t & 0x0fff == vid => TagAction::Keep,
            Some(t) => TagAction::Tag((t & 0xf000) | vid),
            None => TagAction::Tag(vid),
        })
    }
}

/// The VLANs of one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentVlans {
    /// The VLANs that exist; the default VLAN always does.
    pub(crate) created: VlanSet,
    /// More than the default VLAN exists: ports filter and tag. Off, frames
    /// are switched with their tags untouched (the fast path).
    pub(crate) filtering: bool,
}

impl Default for SegmentVlans {
    fn default() -> Self {
        let mut created = VlanSet::default();
        created.insert(super::DEFAULT_VLAN);
        SegmentVlans {
            created,
            filtering: false,
        }
    }
}

/// What must happen to a frame's tag on the way out of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagAction {
    /// Send the frame as it arrived.
    Keep,
    /// Send it with an 802.1Q tag carrying this tag control information
    /// (priority bits and VID): inserted if the frame had no tag,
    /// overwritten if it had one.
    Tag(u16),
    /// Send it without its 802.1Q tag.
    Untag,
}

impl TagAction {
    /// How much longer the frame gets: +4, 0 or -4 bytes, so callers can
    /// shift offsets into the frame (checksum starts) to match.
    pub fn len_delta(self, frame: &[u8]) -> isize {
        match self {
            TagAction::Keep => 0,
            TagAction::Tag(_) if is_tagged(frame) => 0,
            TagAction::Tag(_) => VLAN_TAG_LEN as isize,
            TagAction::Untag if is_tagged(frame) => -(VLAN_TAG_LEN as isize),
            TagAction::Untag => 0,
        }
    }
}

/// Whether `frame` carries a complete outer 802.1Q tag.
pub fn is_tagged(frame: &[u8]) -> bool {
    frame.len() >= ETHERNET_HEADER_LEN + VLAN_TAG_LEN && frame[12..14] == TPID_8021Q
}

/// The tag control information (priority, DEI, VID) of `frame`'s outer
/// 802.1Q tag, if it has one.
pub fn tci(frame: &[u8]) -> Option<u16> {
    if is_tagged(frame) {
        Some(u16::from_be_bytes([frame[14], frame[15]]))
    } else {
        None
    }
}

/// Writes `frame` with `action` applied into `out` and returns the new
/// length, or `None` if `out` is too small or the frame is shorter than an
/// Ethernet header. This is the slow path of VLAN forwarding (a copy per
/// frame and port whose tag must change), used only when a port's form of
/// the frame differs from how it arrived.
pub fn write_with_tag(frame: &[u8], action: TagAction, out: &mut [u8]) -> Option<usize> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return None;
    }
    let tagged = is_tagged(frame);
    let n = frame.len().checked_add_signed(action.len_delta(frame))?;
    let out = out.get_mut(..n)?;
    match action {
        TagAction::Keep => out.copy_from_slice(frame),
        TagAction::Tag(tci) if tagged => {
            out.copy_from_slice(frame);
            out[14..16].copy_from_slice(&tci.to_be_bytes());
        }
        TagAction::Tag(tci) => {
            out[..12].copy_from_slice(&frame[..12]);
            out[12..14].copy_from_slice(&TPID_8021Q);
            out[14..16].copy_from_slice(&tci.to_be_bytes());
            out[16..].copy_from_slice(&frame[12..]);
        }
        TagAction::Untag if tagged => {
            out[..12].copy_from_slice(&frame[..12]);
            out[12..].copy_from_slice(&frame[16..]);
        }
        TagAction::Untag => out.copy_from_slice(frame),
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged() -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0x52, 0x54, 0, 0, 0, 9, 0x08, 0x00];
        f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        f
    }

    #[test]
    fn pushes_overwrites_and_pops_tags_byte_exactly() {
        let f = untagged();
        let mut out = [0u8; 64];
        let n = write_with_tag(&f, TagAction::Tag(0x000a), &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                1, 2, 3, 4, 5, 6, 0x52, 0x54, 0, 0, 0, 9, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 0xde,
                0xad, 0xbe, 0xef
            ]
        );
        let t = out[..n].to_vec();
        assert_eq!(tci(&t), Some(10));
        // retag keeps the length, sets the TCI (priority 5, VID 20)
        let n2 = write_with_tag(&t, TagAction::Tag(0xa014), &mut out).unwrap();
        assert_eq!(n2, 22);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0xa0, 0x14]);
        assert_eq!(&out[16..22], &[0x08, 0x00, 0xde, 0xad, 0xbe, 0xef]);
        // pop gives back the original
        let n3 = write_with_tag(&t, TagAction::Untag, &mut out).unwrap();
        assert_eq!(&out[..n3], &f[..]);
        // keep and untag of untagged are copies
        let n4 = write_with_tag(&f, TagAction::Untag, &mut out).unwrap();
        assert_eq!(&out[..n4], &f[..]);
        assert_eq!(TagAction::Tag(1).len_delta(&f), 4);
        assert_eq!(TagAction::Untag.len_delta(&t), -4);
        assert_eq!(TagAction::Tag(1).len_delta(&t), 0);
    }

    #[test]
    fn refuses_short_frames_and_small_buffers() {
        assert_eq!(
            write_with_tag(&[0; 13], TagAction::Keep, &mut [0; 64]),
            None
        );
        let f = untagged();
        assert_eq!(write_with_tag(&f, TagAction::Tag(5), &mut [0; 21]), None);
        // a cut-short tag is not a tag: nothing to pop
        let mut cut = f[..12].to_vec();
        cut.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert!(!is_tagged(&cut));
        assert_eq!(tci(&cut), None);
    }

    #[test]
    fn egress_forms() {
        let mut p = PortVlans {
            untagged: 10,
            ..Default::default()
        };
        p.tagged.insert(20);
        assert_eq!(p.egress(10, None), Some(TagAction::Keep));
        assert_eq!(p.egress(10, Some(0x200a)), Some(TagAction::Untag));
        assert_eq!(p.egress(20, Some(0x2014)), Some(TagAction::Keep));
        assert_eq!(p.egress(20, None), Some(TagAction::Tag(20)));
        // priority-tagged frame classified into 20: keep its priority bits
        assert_eq!(p.egress(20, Some(0x6000)), Some(TagAction::Tag(0x6014)));
        assert_eq!(p.egress(30, None), None);
        assert!(p.is_member(10) && p.is_member(20) && !p.is_member(1));
    }

    #[test]
    fn vlan_set() {
        let mut s = VlanSet::default();
        assert!(s.is_empty());
        assert!(s.insert(4094));
        assert!(!s.insert(4094));
        assert!(s.insert(1));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 4094]);
        assert!(s.remove(1) && !s.remove(1));
        assert_eq!(check_vid(0), Err(VlanError::OutOfRange));
        assert_eq!(check_vid(4095), Err(VlanError::OutOfRange));
        assert_eq!(check_vid(4094), Ok(()));
    }

    // ---- the engine with VLANs ----

    use crate::mac::MacAddr;
    use crate::switch::{
        DEFAULT_VLAN, DropReason, Egress, Engine, Forwarding, PortId, PortRequest, SegmentConfig,
        SegmentId,
    };
    use crate::time::Instant;

    fn host(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    /// A frame from `src` to `dst`, with an 802.1Q tag carrying `tci` if
    /// given.
    fn frame(dst: MacAddr, src: MacAddr, tci: Option<u16>) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(t) = tci {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(f.len() + 46, 0xab);
        f
    }

    fn engine(nports: usize) -> (Engine, SegmentId, Vec<PortId>) {
        let mut e = Engine::new();
        let seg = e.add_segment(SegmentConfig::new("lan")).unwrap();
        let ports = (0..nports)
            .map(|_| {
                e.add_port(
                    seg,
                    PortRequest {
                        kind: "test",
                        ..Default::default()
                    },
                )
                .unwrap()
            })
            .collect();
        (e, seg, ports)
    }

    /// A(untagged 10), B(untagged 20), C(untagged 1, tagged 10 and 20),
    /// D(untagged 10).
    fn lab() -> (Engine, SegmentId, Vec<PortId>) {
        let (mut e, seg, p) = engine(4);
        e.create_vlan(seg, 10).unwrap();
        e.create_vlan(seg, 20).unwrap();
        e.set_untagged_vlan(p[0], 10).unwrap();
        e.set_untagged_vlan(p[1], 20).unwrap();
        e.add_tagged_vlan(p[2], 10).unwrap();
        e.add_tagged_vlan(p[2], 20).unwrap();
        e.set_untagged_vlan(p[3], 10).unwrap();
        (e, seg, p)
    }

    fn send(e: &mut Engine, from: PortId, f: &[u8]) -> (Forwarding, Vec<(PortId, TagAction)>) {
        let mut out = Egress::default();
        let fw = e.handle(Instant::from_secs(1), from, f, &mut out);
        let v = (0..out.ports().len())
            .map(|i| (out.ports()[i], out.action(i)))
            .collect();
        (fw, v)
    }

    #[test]
    fn api_errors_and_listing() {
        let (mut e, seg, p) = engine(2);
        assert_eq!(e.vlans(seg), vec![1]);
        assert_eq!(e.create_vlan(seg, 0), Err(VlanError::OutOfRange));
        assert_eq!(e.create_vlan(seg, 4095), Err(VlanError::OutOfRange));
        assert_eq!(e.create_vlan(seg, 1), Err(VlanError::Exists));
        assert_eq!(
            e.create_vlan(SegmentId(7), 10),
            Err(VlanError::NoSuchSegment)
        );
        assert_eq!(e.set_untagged_vlan(p[0], 10), Err(VlanError::NoSuchVlan));
        e.create_vlan(seg, 10).unwrap();
        assert_eq!(e.create_vlan(seg, 10), Err(VlanError::Exists));
        e.create_vlan(seg, 4094).unwrap();
        assert_eq!(e.vlans(seg), vec![1, 10, 4094]);
        assert_eq!(
            e.set_untagged_vlan(PortId(99), 10),
            Err(VlanError::NoSuchPort)
        );
        e.set_untagged_vlan(p[0], 10).unwrap();
        e.add_tagged_vlan(p[1], 10).unwrap();
        e.add_tagged_vlan(p[1], 4094).unwrap();
        assert_eq!(e.add_tagged_vlan(p[1], 10), Err(VlanError::Exists));
        assert_eq!(e.add_tagged_vlan(p[0], 10), Err(VlanError::Exists));
        assert_eq!(e.remove_tagged_vlan(p[0], 4094), Err(VlanError::NoSuchVlan));
        assert_eq!(e.port_vlans(p[0]), Some((10, vec![])));
        assert_eq!(e.port_vlans(p[1]), Some((1, vec![10, 4094])));
        assert_eq!(e.port_vlans(PortId(99)), None);
        assert_eq!(e.remove_vlan(seg, 1), Err(VlanError::InUse));
        assert_eq!(e.remove_vlan(seg, 10), Err(VlanError::InUse));
        assert_eq!(e.remove_vlan(seg, 77), Err(VlanError::NoSuchVlan));
        assert_eq!(e.remove_vlan(seg, 0), Err(VlanError::OutOfRange));
        // the PVID absorbs a tagged membership of the same VLAN
        e.set_untagged_vlan(p[1], 4094).unwrap();
        assert_eq!(e.port_vlans(p[1]), Some((4094, vec![10])));
        assert_eq!(
            VlanError::InUse.to_string(),
            "the VLAN is in use (by a port, or it is the default VLAN)"
        );
    }

    #[test]
    fn ingress_filtering() {
        let (mut e, _, p) = lab();
        // A is untagged in 10 only: a frame tagged 20 is refused...
        let (fw, out) = send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(1), Some(20)));
        assert_eq!(fw, Forwarding::Dropped(DropReason::VlanFiltered));
        assert!(out.is_empty());
        assert_eq!(e.port(p[0]).unwrap().counters().drops.vlan_filtered, 1);
        // ...one tagged with its own PVID is accepted, and leaves C tagged
        // as it came and D untagged
        let (fw, out) = send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(1), Some(10)));
        assert_eq!(fw, Forwarding::Flood);
        assert_eq!(out, vec![(p[2], TagAction::Keep), (p[3], TagAction::Untag)]);
        // C has no untagged VLAN 1 peers; VID 4095 and a cut-short tag are
        // refused
        let (fw, _) = send(
            &mut e,
            p[2],
            &frame(MacAddr::BROADCAST, host(3), Some(4095)),
        );
        assert_eq!(fw, Forwarding::Dropped(DropReason::VlanFiltered));
        let mut cut = frame(MacAddr::BROADCAST, host(3), None);
        cut.truncate(12);
        cut.extend_from_slice(&[0x81, 0x00, 0x00]);
        let (fw, _) = send(&mut e, p[2], &cut);
        assert_eq!(fw, Forwarding::Dropped(DropReason::VlanFiltered));
        assert_eq!(e.port(p[2]).unwrap().counters().drops.vlan_filtered, 2);
    }

    #[test]
    fn flooding_stays_in_the_vlan_with_each_port_in_its_form() {
        let (mut e, _, p) = lab();
        let (_, out) = send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(1), None));
        assert_eq!(
            out,
            vec![(p[2], TagAction::Tag(10)), (p[3], TagAction::Keep)]
        );
        let (_, out) = send(
            &mut e,
            p[2],
            &frame(MacAddr::BROADCAST, host(3), Some(0x3014)),
        );
        assert_eq!(out, vec![(p[1], TagAction::Untag)]);
        // C's untagged VLAN is 1, where nobody else is
        let (fw, out) = send(&mut e, p[2], &frame(MacAddr::BROADCAST, host(3), None));
        assert_eq!((fw, out), (Forwarding::Flood, vec![]));
        // priority-tagged (VID 0) from A is VLAN 10 and keeps its priority
        let (_, out) = send(
            &mut e,
            p[0],
            &frame(MacAddr::BROADCAST, host(1), Some(0xa000)),
        );
        assert_eq!(
            out,
            vec![(p[2], TagAction::Tag(0xa00a)), (p[3], TagAction::Untag)]
        );
        // B's broadcast reaches only the trunk
        let (_, out) = send(&mut e, p[1], &frame(MacAddr::BROADCAST, host(2), None));
        assert_eq!(out, vec![(p[2], TagAction::Tag(20))]);
    }

    #[test]
    fn hub_mode_floods_within_the_vlan() {
        let mut c = SegmentConfig::new("hub");
        c.hub = true;
        let mut e = Engine::new();
        let seg = e.add_segment(c).unwrap();
        let p: Vec<_> = (0..3)
            .map(|_| e.add_port(seg, PortRequest::default()).unwrap())
            .collect();
        e.create_vlan(seg, 10).unwrap();
        e.set_untagged_vlan(p[0], 10).unwrap();
        e.add_tagged_vlan(p[2], 10).unwrap();
        let (_, out) = send(&mut e, p[0], &frame(host(9), host(1), None));
        assert_eq!(out, vec![(p[2], TagAction::Tag(10))]);
    }

    #[test]
    fn learning_and_unicast_are_per_vlan() {
        let (mut e, seg, p) = lab();
        // host 5 speaks on VLAN 10 from A and on VLAN 20 through the trunk
        send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(5), None));
        send(&mut e, p[2], &frame(MacAddr::BROADCAST, host(5), Some(20)));
        let t = e.segment(seg).unwrap().mac_table();
        let now = Instant::from_secs(1);
        assert_eq!(t.lookup(host(5), 10, now), Some(p[0].0));
        assert_eq!(t.lookup(host(5), 20, now), Some(p[2].0));
        // D (VLAN 10) reaches it on A, untagged as it is
        let (fw, out) = send(&mut e, p[3], &frame(host(5), host(6), None));
        assert_eq!(fw, Forwarding::Unicast);
        assert_eq!(out, vec![(p[0], TagAction::Keep)]);
        // B (VLAN 20) reaches it through the trunk, tagged 20
        let (fw, out) = send(&mut e, p[1], &frame(host(5), host(7), None));
        assert_eq!(fw, Forwarding::Unicast);
        assert_eq!(out, vec![(p[2], TagAction::Tag(20))]);
        // the trunk reaches B's host on 20 with the tag popped
        let (fw, out) = send(&mut e, p[2], &frame(host(7), host(5), Some(20)));
        assert_eq!(fw, Forwarding::Unicast);
        assert_eq!(out, vec![(p[1], TagAction::Untag)]);
    }

    #[test]
    fn leaving_a_vlan_forgets_what_was_learned_there() {
        let (mut e, seg, p) = lab();
        let now = Instant::from_secs(1);
        send(&mut e, p[2], &frame(MacAddr::BROADCAST, host(5), Some(20)));
        send(&mut e, p[2], &frame(MacAddr::BROADCAST, host(5), Some(10)));
        send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(1), None));
        e.remove_tagged_vlan(p[2], 20).unwrap();
        let t = e.segment(seg).unwrap().mac_table();
        assert_eq!(t.lookup(host(5), 20, now), None);
        assert_eq!(t.lookup(host(5), 10, now), Some(p[2].0));
        // moving A from 10 to 20 forgets host 1 in 10
        e.set_untagged_vlan(p[0], 20).unwrap();
        let t = e.segment(seg).unwrap().mac_table();
        assert_eq!(t.lookup(host(1), 10, now), None);
        assert_eq!(t.lookup(host(5), 10, now), Some(p[2].0));
        // and the trunk, no longer in 20, refuses frames tagged 20
        let (fw, _) = send(&mut e, p[2], &frame(MacAddr::BROADCAST, host(5), Some(20)));
        assert_eq!(fw, Forwarding::Dropped(DropReason::VlanFiltered));
    }

    #[test]
    fn without_vlans_frames_pass_transparently() {
        let (mut e, seg, p) = engine(3);
        let (fw, out) = send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(1), Some(20)));
        assert_eq!(fw, Forwarding::Flood);
        assert_eq!(out, vec![(p[1], TagAction::Keep), (p[2], TagAction::Keep)]);
        let mut eg = Egress::default();
        e.handle(
            Instant::from_secs(1),
            p[0],
            &frame(MacAddr::BROADCAST, host(1), None),
            &mut eg,
        );
        assert!(eg.actions().is_empty());
        // creating and removing a VLAN turns filtering on and off again,
        // forgetting what was learned in between
        e.create_vlan(seg, 10).unwrap();
        e.handle(
            Instant::from_secs(1),
            p[0],
            &frame(MacAddr::BROADCAST, host(1), None),
            &mut eg,
        );
        assert_eq!(eg.actions(), &[TagAction::Keep, TagAction::Keep]);
        e.remove_vlan(seg, 10).unwrap();
        assert!(e.segment(seg).unwrap().mac_table().is_empty());
        let (_, out) = send(&mut e, p[0], &frame(MacAddr::BROADCAST, host(1), Some(20)));
        assert_eq!(out.len(), 2);
        assert_eq!(DEFAULT_VLAN, 1);
    }

    mod isolation {
        use super::*;
        use proptest::prelude::*;

        /// The model of ingress classification: the VLAN a frame with tag
        /// `tci` entering a port with `pvid`/`tagged` belongs to, or None.
        fn model_vlan(pvid: u16, tagged: &[u16], tci: Option<u16>) -> Option<u16> {
            match tci.map(|t| t & 0x0fff) {
                None | Some(0) => Some(pvid),
                Some(v) if v == pvid || tagged.contains(&v) => Some(v),
                Some(_) => None,
            }
        }

        const VIDS: [u16; 3] = [1, 10, 20];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Random memberships on two segments of four ports each,
            /// random frames: nothing leaves outside its VLAN or segment,
            /// by its ingress port, or in the wrong form.
            #[test]
            fn no_frame_crosses_vlans_or_segments(
                members in proptest::collection::vec((0usize..3, 0u8..8), 8),
                frames in proptest::collection::vec(
                    (0usize..8, 1u8..5, 0u8..6, 0usize..7, 0u16..8),
                    1..150,
                ),
            ) {
                let mut e = Engine::new();
                let segs = [
                    e.add_segment(SegmentConfig::new("a")).unwrap(),
                    e.add_segment(SegmentConfig::new("b")).unwrap(),
                ];
                let mut model = Vec::new();
                for (k, &(pv, tags)) in members.iter().enumerate() {
                    let seg = segs[k / 4];
                    if k % 4 == 0 {
                        e.create_vlan(seg, 10).unwrap();
                        e.create_vlan(seg, 20).unwrap();
                    }
                    let id = e.add_port(seg, PortRequest::default()).unwrap();
                    let pvid = VIDS[pv];
                    e.set_untagged_vlan(id, pvid).unwrap();
                    let mut tagged = Vec::new();
                    for (b, &v) in VIDS.iter().enumerate() {
                        if tags & (1 << b) != 0 && v != pvid {
                            e.add_tagged_vlan(id, v).unwrap();
                            tagged.push(v);
                        }
                    }
                    prop_assert_eq!(e.port_vlans(id), Some((pvid, tagged.clone())));
                    model.push((id, k / 4, pvid, tagged));
                }
                let mut out = Egress::default();
                let mut buf = [0u8; 128];
                for (n, &(from, src, dst, tag, pcp)) in frames.iter().enumerate() {
                    // tags: none, priority only, 1, 10, 20, 30 (never created), 4095
                    let tci = [None, Some(0), Some(1), Some(10), Some(20), Some(30), Some(4095)][tag]
                        .map(|v: u16| (pcp << 13) | v);
                    let dst = if dst == 0 { MacAddr::BROADCAST } else { host(dst) };
                    let f = frame(dst, host(src), tci);
                    let (id, seg, pvid, ref tagged) = model[from];
                    let now = Instant::from_millis(n as u64);
                    let fw = e.handle(now, id, &f, &mut out);
                    let Some(vid) = model_vlan(pvid, tagged, tci) else {
                        prop_assert_eq!(fw, Forwarding::Dropped(DropReason::VlanFiltered));
                        prop_assert!(out.is_empty());
                        continue;
                    };
                    prop_assert_eq!(out.actions().len(), out.ports().len());
                    for (i, &p) in out.ports().iter().enumerate() {
                        prop_assert_ne!(p, id);
                        let (_, pseg, ppvid, ref ptagged) = *model.iter().find(|m| m.0 == p).unwrap();
                        prop_assert_eq!(pseg, seg);
                        prop_assert!(ppvid == vid || ptagged.contains(&vid));
                        let len = write_with_tag(&f, out.action(i), &mut buf).unwrap();
                        let sent = &buf[..len];
                        if ppvid == vid {
                            prop_assert!(!is_tagged(sent));
                        } else {
                            let t = super::super::tci(sent).unwrap();
                            prop_assert_eq!(t & 0x0fff, vid);
                            prop_assert_eq!(t >> 13, if tci.is_some() { pcp } else { 0 });
                        }
                        // the rest of the frame is untouched
                        prop_assert_eq!(&sent[..12], &f[..12]);
                        prop_assert_eq!(&sent[len - 48..], &f[f.len() - 48..]);
                    }
                }
            }
        }
    }
}
