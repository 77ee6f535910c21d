//! Tap devices (being written).
