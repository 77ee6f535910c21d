//! Batched Unix datagram sockets (being written).
