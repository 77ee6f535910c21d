//! The smoltcp device the uplink's TCP stack runs on: two packet queues
//! instead of a network card.
//!
//! Guests' TCP segments are pushed onto the receive queue by the uplink;
//! everything the stack (and the uplink's own packet builders) emits lands
//! on the transmit queue, which the daemon drains into the router. The
//! transmit queue is bounded: when the router is not draining it, smoltcp
//! is refused a transmit token and keeps its data in its socket buffers,
//! which is exactly the backpressure TCP wants.

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// IP packets in both directions between the uplink's stack and the router.
#[derive(Debug)]
pub struct QueueDevice {
    mtu: usize,
    tx_cap: usize,
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

impl QueueDevice {
    /// A device for IP packets of at most `mtu` bytes whose transmit queue
    /// holds at most `tx_cap` packets.
    pub fn new(mtu: usize, tx_cap: usize) -> Self {
        QueueDevice {
            mtu,
            tx_cap,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        }
    }

    /// Queues a packet for the stack to take in.
    pub fn push_rx(&mut self, packet: Vec<u8>) {
        self.rx.push_back(packet);
    }

    /// Queues a packet toward the router, unless the queue is full (the
    /// packet is handed back so the caller can count the drop).
    pub fn push_tx(&mut self, packet: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.tx.len() >= self.tx_cap {
            return Err(packet);
        }
        self.tx.push_back(packet);
        Ok(())
    }

    /// The oldest packet toward the router.
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Packets waiting toward the router.
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// Whether the transmit queue can take another packet.
    pub fn tx_has_room(&self) -> bool {
        self.tx.len() < self.tx_cap
    }

    /// Packets waiting for the stack.
    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }
}

/// A received packet handed to smoltcp.
pub struct RxToken(Vec<u8>);

/// Room for one packet on the transmit queue.
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        // A reply may exceed the cap by one packet; the cap bounds
        // memory, not exactness.
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<TxToken<'_>> {
        if self.tx.len() >= self.tx_cap {
            return None;
        }
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{RxToken as _, TxToken as _};

    #[test]
    fn transmit_is_refused_when_the_queue_is_full() {
        let mut dev = QueueDevice::new(1500, 2);
        let now = SmolInstant::from_micros(0);
        dev.transmit(now)
            .unwrap()
            .consume(3, |b| b.copy_from_slice(b"abc"));
        assert_eq!(dev.push_tx(vec![1]), Ok(()));
        assert!(dev.transmit(now).is_none());
        assert_eq!(dev.push_tx(vec![2]), Err(vec![2]));
        assert_eq!(dev.pop_tx(), Some(b"abc".to_vec()));
        assert_eq!(dev.pop_tx(), Some(vec![1]));
        assert_eq!(dev.pop_tx(), None);
    }

    #[test]
    fn receive_hands_packets_in_order() {
        let mut dev = QueueDevice::new(1500, 8);
        dev.push_rx(vec![1, 2]);
        dev.push_rx(vec![3]);
        let now = SmolInstant::from_micros(0);
        let (rx, _) = dev.receive(now).unwrap();
        assert_eq!(rx.consume(|b| b.to_vec()), vec![1, 2]);
        let (rx, _) = dev.receive(now).unwrap();
        assert_eq!(rx.consume(|b| b.to_vec()), vec![3]);
        assert!(dev.receive(now).is_none());
        assert_eq!(dev.capabilities().max_transmission_unit, 1500);
        assert_eq!(dev.capabilities().medium, Medium::Ip);
    }
}
