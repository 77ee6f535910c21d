//! `switchboard plug A B`: a cable between two endpoints.

pub mod url;
