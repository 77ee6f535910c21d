//! The I/O around a router's DHCP server and DNS forwarder: lease files
//! and upstream resolvers.
//!
//! The services themselves are sans-IO inside the router core. What they
//! cannot do there is done here: each DHCP server's leases are restored
//! from its lease file when the router starts and written back (to a
//! temporary file renamed over the old one, so a crash never leaves half a
//! file) whenever they change; and the DNS forwarder's upstream queries go
//! out through a host UDP socket (TCP after a truncated answer), whose
//! answers are fed back to the router.

use super::dns_upstream::{DnsUpstreamIo, UpstreamResponse};
use super::endpoint::Endpoint;
use super::event_loop::{Daemon, DaemonError};
use super::router_port::SharedRouter;
use crate::dhcp::{format_leases, parse_leases};
use crate::router::IfaceId;
use mio::Token;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The services' I/O state kept with a router.
#[derive(Default)]
pub(crate) struct ServiceIo {
    /// Each DHCP server's lease file.
    pub(crate) lease_files: Vec<(IfaceId, PathBuf)>,
    /// The DNS forwarder's host sockets, when it has one.
    dns: Option<DnsUpstreamIo>,
    /// The two slab entries the DNS sockets are registered under.
    dns_tokens: Option<(Token, Token)>,
    /// Upstream queries being sent (reused).
    queries: Vec<crate::router::UpstreamQuery>,
    /// Upstream answers being handed back (reused).
    answers: Vec<UpstreamResponse>,
    /// Each DHCP server's `exhausted` count when last logged, and when.
    exhausted_logged: Vec<(IfaceId, u64, Option<crate::time::Instant>)>,
    /// The router's name, for log lines (kept so the loop never builds it).
    router: String,
    /// After a lease file could not be written: no new attempt before this.
    save_retry_at: Option<crate::time::Instant>,
}

/// How long after a failed lease file write the next attempt waits, so a
/// full or read-only disk costs one try and one log line per interval, not
/// one per turn of the loop.
const SAVE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The least time between two "pool exhausted" log lines of one server: a
/// full pool under a DISCOVER flood must not flood the log too.
const EXHAUSTED_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Seconds since the Unix epoch, which lease files count in.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Restores the router's leases from their files and opens the DNS
/// forwarder's upstream socket. Called once the router is built.
pub(super) fn open_services(
    d: &mut Daemon,
    host: &SharedRouter,
    lease_files: &[(String, PathBuf)],
) -> Result<(), DaemonError> {
    let now = d.clock.now();
    let mut guard = host.borrow_mut();
    let h = &mut *guard;
    let name = h.router.name().to_string();
    let mut files = Vec::new();
    for (iname, path) in lease_files {
        let Some(id) = h.router.iface_by_name(iname) else {
            continue;
        };
        files.push((id, path.clone()));
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(DaemonError::Setup(format!(
                    "router {name}: lease file {}: {e}",
                    path.display()
                )));
            }
        };
        let parsed = parse_leases(&text);
        if parsed.bad_lines > 0 {
            tracing::warn!(
                router = %name,
                file = %path.display(),
                bad_lines = parsed.bad_lines,
                first_error = parsed.first_error.as_deref().unwrap_or(""),
                "lease file has lines that are not leases; they are skipped"
            );
        }
        let leases = parsed.leases;
        if let Some(services) = h.router.services_mut()
            && let Some((_, server)) = services.dhcp_servers_mut().find(|(i, _)| *i == id)
        {
            let restored = server.import(now, unix_now(), &leases);
            server.mark_saved();
            tracing::info!(router = %name, interface = %iname, restored, "leases restored");
        }
    }
    if let Some(services) = h.router.services_mut() {
        services.publish_restored_names();
    }
    h.services.lease_files = files;
    h.services.router = name.clone();
    let wants_dns = h.router.services().is_some_and(|s| s.dns().is_some());
    drop(guard);
    if wants_dns {
        let udp = d.insert(Endpoint::DnsUpstream(host.clone()), mio::Interest::READABLE)?;
        let waker = d.insert(Endpoint::DnsUpstream(host.clone()), mio::Interest::READABLE)?;
        let io = DnsUpstreamIo::new(d.poll.registry(), udp, waker)
            .map_err(|e| DaemonError::Setup(format!("router {name}: DNS upstream socket: {e}")))?;
        let mut h = host.borrow_mut();
        h.services.dns = Some(io);
        h.services.dns_tokens = Some((udp, waker));
    }
    Ok(())
}

/// Releases a router's upstream sockets (the router is going away).
pub(super) fn close_services(d: &mut Daemon, host: &SharedRouter) {
    let tokens = {
        let mut h = host.borrow_mut();
        if let Some(io) = &mut h.services.dns {
            io.deregister(d.poll.registry());
        }
        h.services.dns = None;
        h.services.dns_tokens.take()
    };
    if let Some((a, b)) = tokens {
        d.endpoints.try_remove(a.0);
        d.endpoints.try_remove(b.0);
    }
}

/// Upstream answers arrived for `host`'s forwarder: hands them to it.
pub(super) fn serve_dns_upstream(d: &mut Daemon, host: &SharedRouter) {
    let now = d.clock.now();
    let mut h = host.borrow_mut();
    let h = &mut *h;
    let Some(io) = &mut h.services.dns else {
        return;
    };
    let mut answers = std::mem::take(&mut h.services.answers);
    answers.clear();
    io.receive(&mut answers);
    for a in answers.drain(..) {
        h.router
            .handle_dns_upstream(now, a.server, a.transport, &a.payload, &mut h.outbox);
    }
    h.services.answers = answers;
}

/// Sends the queries the forwarders queued and saves leases that changed.
/// Runs after every turn of the loop; costs nothing for routers without
/// services.
pub(super) fn flush_services(d: &mut Daemon) {
    let now = d.clock.now();
    for host in &d.routers {
        let mut h = host.borrow_mut();
        let h = &mut *h;
        if h.router.services().is_none() {
            continue;
        }
        if let Some(io) = &mut h.services.dns {
            let mut queries = std::mem::take(&mut h.services.queries);
            h.router.take_dns_upstream(&mut queries);
            for q in queries.drain(..) {
                io.send(q.server, q.transport, &q.payload);
            }
            h.services.queries = queries;
        }
        let name = &h.services.router;
        let files = &h.services.lease_files;
        let logged = &mut h.services.exhausted_logged;
        let may_save = h.services.save_retry_at.is_none_or(|t| now >= t);
        let retry_at = &mut h.services.save_retry_at;
        if let Some(services) = h.router.services_mut() {
            for (id, server) in services.dhcp_servers_mut() {
                let exhausted = server.counters().exhausted;
                let slot = match logged.iter().position(|(i, _, _)| *i == id) {
                    Some(i) => i,
                    None => {
                        logged.push((id, 0, None));
                        logged.len() - 1
                    }
                };
                let (_, seen, at) = &mut logged[slot];
                if exhausted > *seen
                    && at.is_none_or(|t| now.saturating_since(t) >= EXHAUSTED_LOG_INTERVAL)
                {
                    tracing::warn!(
                        router = %name,
                        refused = exhausted - *seen,
                        leases = server.lease_count(),
                        "DHCP pool exhausted: clients asking for an address get no offer"
                    );
                    *seen = exhausted;
                    *at = Some(now);
                }
                if !server.is_dirty() || !may_save {
                    continue;
                }
                let Some((_, path)) = files.iter().find(|(i, _)| *i == id) else {
                    continue;
                };
                let text = format_leases(&server.export(now, unix_now()));
                match write_atomically(path, text.as_bytes()) {
                    Ok(()) => {
                        server.mark_saved();
                        *retry_at = None;
                    }
                    // Kept dirty: tried again after the interval.
                    Err(e) => {
                        tracing::warn!(router = %name, file = %path.display(), error = %e, "cannot save leases; trying again in 5 s");
                        *retry_at = Some(now + SAVE_RETRY_INTERVAL);
                    }
                }
            }
        }
    }
}

/// Replaces `path` with `data` so that readers (and a crash) see either
/// the old file or the new one, never a mix: write a temporary file beside
/// it, flush it to disk, rename it over.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("sb-leases-{}", std::process::id()));
        let path = dir.join("sub").join("lan.leases");
        write_atomically(&path, b"first version, longer than the second\n").unwrap();
        write_atomically(&path, b"second\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("lan.leases")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
