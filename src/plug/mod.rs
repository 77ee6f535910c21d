//! `switchboard plug A B`: a cable between two endpoints.

pub mod cable;
pub mod url;
