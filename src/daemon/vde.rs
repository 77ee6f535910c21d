//! Glue between the VDE2 plug types and the daemon: serving a switch
//! directory, turning handshakes into ports.

use super::endpoint::Endpoint;
use super::event_loop::{Daemon, DaemonError};
use crate::config::VdePlan;
use crate::switch::{PortRequest, SegmentId};
use mio::{Interest, Token};
use std::time::Duration;
use switchboard_plugs::vde::{
    DirOptions, HandshakeProgress, PortRequest as VdePortRequest, SwitchDir, VdeListener,
};

/// A client must finish its request this soon after connecting, or it is
/// disconnected: a stalled client must not hold a descriptor forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A served switch directory.
pub(crate) struct VdeDir {
    pub(crate) dir: SwitchDir,
}

/// Creates (or reclaims) the directory, binds its `ctl` socket and starts
/// accepting clients for `segment`.
pub(super) fn open_vde_dir(
    d: &mut Daemon,
    segment: SegmentId,
    plan: &VdePlan,
) -> Result<(), DaemonError> {
    let opts = DirOptions {
        mode: plan.perms.mode,
        dirmode: plan.perms.dirmode,
        group: plan.perms.group,
    };
    let dir = SwitchDir::open(&plan.dir, &opts)
        .map_err(|e| DaemonError::Setup(format!("switch directory {}: {e}", plan.dir.display())))?;
    let listener = VdeListener::bind(&dir).map_err(|e| {
        DaemonError::Setup(format!(
            "switch directory {}: cannot listen: {e}",
            plan.dir.display()
        ))
    })?;
    // The slot of a closed segment's directory is reused, so starting and
    // destroying networks does not grow the list.
    let idx = match d.dirs.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            d.dirs.push(None);
            d.dirs.len() - 1
        }
    };
    if let Some(slot) = d.dirs.get_mut(idx) {
        *slot = Some(VdeDir { dir });
    }
    let listening = d.insert(
        Endpoint::VdeListener {
            segment,
            dir: idx,
            listener,
        },
        Interest::READABLE,
    );
    if let Err(e) = listening {
        // No listener to find it by: close the directory now.
        if let Some(slot) = d.dirs.get_mut(idx) {
            *slot = None;
        }
        return Err(e);
    }
    tracing::info!(dir = %plan.dir.display(), "VDE2 switch directory ready");
    Ok(())
}

/// Accepts every waiting client of the listener at `token`.
pub(super) fn accept_clients(d: &mut Daemon, token: Token) {
    loop {
        let Some(Endpoint::VdeListener {
            segment,
            dir,
            listener,
        }) = d.endpoints.get_mut(token.0)
        else {
            return;
        };
        let (segment, dir) = (*segment, *dir);
        let pending = match listener.accept() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "VDE accept failed");
                return;
            }
        };
        let ep = Endpoint::Handshake {
            segment,
            dir,
            pending,
        };
        match d.insert(ep, Interest::READABLE) {
            // The request may already be waiting; edge-triggered polling
            // reports it on registration, but reading now saves a turn.
            Ok(t) => advance_handshake(d, t),
            Err(e) => tracing::warn!(error = %e, "cannot register VDE client"),
        }
    }
}

/// Reads what a handshaking client sent; when its request is complete,
/// creates the port and answers it.
pub(super) fn advance_handshake(d: &mut Daemon, token: Token) {
    let Some(Endpoint::Handshake { pending, .. }) = d.endpoints.get_mut(token.0) else {
        return;
    };
    let request = match pending.read() {
        HandshakeProgress::NeedMore => return,
        HandshakeProgress::Failed(e) => {
            tracing::warn!(error = %e, "VDE client refused: bad request; connection closed");
            d.remove(token);
            return;
        }
        HandshakeProgress::Ready(r) => r,
    };
    let Some(Endpoint::Handshake {
        segment,
        dir,
        pending,
        ..
    }) = d.remove(token)
    else {
        return;
    };
    let number = match request.port {
        VdePortRequest::Any => None,
        VdePortRequest::Number(n) => Some(n),
        VdePortRequest::Zero => Some(0),
    };
    let port_number = match d.engine.pick_port_number(segment, number) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(client = %request.client_path.display(), description = %request.description, error = %e, "VDE client refused; connection closed");
            return;
        }
    };
    // Handshakes of a closed segment are closed with it, so the directory
    // is always there.
    let Some(switch_dir) = d.dirs.get(dir).and_then(Option::as_ref) else {
        tracing::warn!(client = %request.client_path.display(), "VDE client refused: its switch directory is closed");
        return;
    };
    let plug = match pending.complete(&switch_dir.dir, &request, port_number) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(client = %request.client_path.display(), description = %request.description, error = %e, "VDE handshake failed; connection closed");
            return;
        }
    };
    let req = PortRequest {
        number: Some(port_number),
        kind: "vde",
        description: request.description,
        ..Default::default()
    };
    if let Err(e) = d.add_port(segment, req, Box::new(plug)) {
        tracing::warn!(error = %e, "cannot attach VDE port");
    }
}

/// Disconnects clients that have not finished their request in time.
pub(super) fn expire_handshakes(d: &mut Daemon) {
    let stale: Vec<usize> = d
        .endpoints
        .iter()
        .filter_map(|(k, ep)| match ep {
            Endpoint::Handshake { pending, .. }
                if pending.started().elapsed() > HANDSHAKE_TIMEOUT =>
            {
                Some(k)
            }
            _ => None,
        })
        .collect();
    for k in stale {
        tracing::warn!(
            "VDE client sent no complete request within {HANDSHAKE_TIMEOUT:?}; connection closed"
        );
        d.remove(Token(k));
    }
}
