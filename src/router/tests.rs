//! In-memory tests of the router: simulated hosts, no descriptors.
