//! Networks managed at runtime, like `virsh net-*`: defined, started,
//! destroyed and undefined one at a time while everything else keeps
//! running.
//!
//! A network is a `[networks.NAME]` block (see `crate::network`). Starting
//! it expands the block into segments and routers, plans them against the
//! segments already running (so names, directories, taps and sockets cannot
//! clash and an uplink may join an existing segment), and opens them with
//! the same code the daemon uses at start. Destroying it closes its routers
//! (their DHCP leases are already on disk) and the segments it created, not
//! a segment it only joined. A start that fails half-way closes what it
//! opened, so a network is either running whole or not at all.
//!
//! Definitions made with `net define` live as long as the daemon; to keep
//! one across restarts, put the block in the network file.

use super::event_loop::Daemon;
use super::router_port::open_router;
use super::segment_lifecycle::{close_router, close_segment, open_segment};
use crate::config::{NetworkPlan, plan_parts};
use crate::control::views::{NetworkInfoView, NetworkView};
use std::collections::BTreeMap;
use std::path::Path;

/// Largest network file `net define` reads.
const MAX_DEFINITION_BYTES: u64 = 1 << 20;

/// One known network.
#[derive(Debug, Clone)]
pub(crate) struct NetworkEntry {
    /// Its definition and what it expanded into when last started.
    pub(crate) plan: NetworkPlan,
    /// Whether its segments and routers are running.
    pub(crate) active: bool,
    /// False once undefined while running: it goes when destroyed.
    pub(crate) defined: bool,
}

/// The networks of the plan the daemon started with, all running.
pub(super) fn initial(plans: &[NetworkPlan]) -> BTreeMap<String, NetworkEntry> {
    plans
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                NetworkEntry {
                    plan: p.clone(),
                    active: true,
                    defined: true,
                },
            )
        })
        .collect()
}

fn view(e: &NetworkEntry) -> NetworkView {
    NetworkView {
        name: e.plan.name.clone(),
        mode: e.plan.mode.clone(),
        active: e.active,
        persistent: e.defined,
        segments: e.plan.segments.clone(),
        routers: e.plan.routers.clone(),
    }
}

/// `net list`.
pub(super) fn list(d: &Daemon) -> Vec<NetworkView> {
    d.networks.values().map(view).collect()
}

fn entry<'a>(d: &'a Daemon, name: &str) -> Result<&'a NetworkEntry, String> {
    d.networks.get(name).ok_or_else(|| {
        let known: Vec<&str> = d.networks.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("no network named {name:?}: none is defined")
        } else {
            format!("no network named {name:?}; known: {}", known.join(", "))
        }
    })
}

/// `net info NAME`: the definition and what it expands into.
pub(super) fn info(d: &Daemon, name: &str) -> Result<NetworkInfoView, String> {
    let e = entry(d, name)?;
    let expansion = e.plan.expansion_toml().map_err(|e| e.to_string())?;
    Ok(NetworkInfoView {
        network: view(e),
        definition: e.plan.definition.clone(),
        expansion,
    })
}

/// `net define PATH`: reads `[networks.NAME]` blocks from a file and
/// defines them (inactive). A running network cannot be redefined.
pub(super) fn define(d: &mut Daemon, path: &Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_DEFINITION_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_DEFINITION_BYTES {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    let nets = crate::network::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if nets.is_empty() {
        return Err(format!(
            "{}: no [networks.NAME] block in it",
            path.display()
        ));
    }
    // Check every block before defining any.
    let mut plans = Vec::new();
    for (name, net) in &nets {
        if d.networks.get(name).is_some_and(|e| e.active) {
            return Err(format!(
                "network {name:?} is running: destroy it before redefining it"
            ));
        }
        let (plan, _) = NetworkPlan::expand(name, net).map_err(|e| e.to_string())?;
        plans.push(plan);
    }
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    for plan in plans {
        tracing::info!(network = %plan.name, mode = %plan.mode, "network defined");
        d.networks.insert(
            plan.name.clone(),
            NetworkEntry {
                plan,
                active: false,
                defined: true,
            },
        );
    }
    Ok(names)
}

/// `net start NAME`.
pub(super) fn start(d: &mut Daemon, name: &str) -> Result<(), String> {
    let e = entry(d, name)?;
    if e.active {
        return Err(format!("network {name:?} is already running"));
    }
    let nets = crate::network::from_toml(&e.plan.definition)?;
    let net = nets
        .get(name)
        .ok_or_else(|| format!("network {name:?}: its definition is missing"))?;
    let (plan, expansion) = NetworkPlan::expand(name, net).map_err(|e| e.to_string())?;
    for r in &plan.routers {
        if d.routers.iter().any(|h| h.borrow().router.name() == r) {
            return Err(format!(
                "network {name:?}: a router named {r:?} is already running"
            ));
        }
    }
    let (segments, routers) = plan_parts(
        expansion.segments.into_iter().collect(),
        expansion.routers.into_iter().collect(),
        &d.segment_plans,
    )
    .map_err(|e| format!("network {name:?}: {e}"))?;
    let mut opened = Vec::new();
    let mut started = Vec::new();
    let result = (|| {
        for seg in &segments {
            opened.push(open_segment(d, seg).map_err(|e| e.to_string())?);
        }
        for r in &routers {
            open_router(d, r).map_err(|e| e.to_string())?;
            started.push(r.name.clone());
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = result {
        for r in &started {
            close_router(d, r);
        }
        for id in opened.into_iter().rev() {
            if let Err(why) = close_segment(d, id) {
                tracing::warn!(network = name, error = %why, "cannot undo a segment of a network that failed to start");
            }
        }
        return Err(format!("network {name:?} did not start: {e}"));
    }
    d.segment_plans.extend(segments);
    if let Some(e) = d.networks.get_mut(name) {
        e.plan = plan;
        e.active = true;
    }
    tracing::info!(network = name, "network started");
    Ok(())
}

/// `net destroy NAME`: stops it; its definition stays (unless undefined).
pub(super) fn destroy(d: &mut Daemon, name: &str) -> Result<(), String> {
    let e = entry(d, name)?.clone();
    if !e.active {
        return Err(format!("network {name:?} is not running"));
    }
    for r in &e.plan.routers {
        close_router(d, r);
    }
    for s in e.plan.segments.iter().rev() {
        if let Some(id) = d.engine.segment_by_name(s) {
            close_segment(d, id)
                .map_err(|why| format!("network {name:?}: segment {s:?}: {why}"))?;
        }
        d.segment_plans.retain(|p| &p.config.name != s);
    }
    if e.defined {
        if let Some(e) = d.networks.get_mut(name) {
            e.active = false;
        }
    } else {
        d.networks.remove(name);
    }
    tracing::info!(network = name, "network destroyed");
    Ok(())
}

/// `net undefine NAME`: forgets it; a running network keeps running until
/// destroyed (as with `virsh net-undefine`).
pub(super) fn undefine(d: &mut Daemon, name: &str) -> Result<(), String> {
    let active = entry(d, name)?.active;
    if active {
        if let Some(e) = d.networks.get_mut(name) {
            e.defined = false;
        }
    } else {
        d.networks.remove(name);
    }
    tracing::info!(network = name, "network undefined");
    Ok(())
}
