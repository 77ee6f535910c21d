//! Control requests: parsed from one line of words.

use crate::router::StaticRoute;
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

/// Longest request line accepted; anything longer is an error, not a buffer
/// that grows.
pub const MAX_REQUEST_LEN: usize = 4096;

/// What a control client can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every port: segment, number, kind, description, counters.
    Ports,
    /// The MAC table of one segment, or of all.
    Macs {
        /// Restrict to this segment.
        segment: Option<String>,
    },
    /// The VLANs of one segment, or of all, with their member ports.
    Vlans {
        /// Restrict to this segment.
        segment: Option<String>,
    },
    /// Counters of every segment and port.
    Stats,
    /// Zero the counters of every port and segment.
    ResetCounters,
    /// Every router: interfaces, addresses, counters.
    Routers,
    /// The routing table of one router, or of all.
    Routes {
        /// Restrict to this router.
        router: Option<String>,
    },
    /// The ARP cache of one router, or of all.
    Arp {
        /// Restrict to this router.
        router: Option<String>,
    },
    /// The NAT rules of one router, or of all.
    Nat {
        /// Restrict to this router.
        router: Option<String>,
    },
    /// The tracked flows of one router, or of all.
    Conntrack {
        /// Restrict to this router.
        router: Option<String>,
    },
    /// Forget the tracked flows of one router, or of all.
    ConntrackFlush {
        /// Restrict to this router.
        router: Option<String>,
    },
    /// The DHCP leases of one router (a network's router has the
    /// network's name), or of all.
    Leases {
        /// Restrict to this router.
        router: Option<String>,
    },
    /// Every network, running or only defined.
    NetList,
    /// A network's definition and what it expands into.
    NetInfo {
        /// The network.
        name: String,
    },
    /// Define the networks of a file (read by the daemon).
    NetDefine {
        /// The file, absolute.
        path: std::path::PathBuf,
    },
    /// Start a defined network.
    NetStart {
        /// The network.
        name: String,
    },
    /// Stop a running network.
    NetDestroy {
        /// The network.
        name: String,
    },
    /// Forget a network's definition.
    NetUndefine {
        /// The network.
        name: String,
    },
    /// Add a static route to a router.
    RouteAdd {
        /// The router.
        router: String,
        /// The route.
        route: StaticRoute,
    },
    /// Remove a static route from a router.
    RouteDel {
        /// The router.
        router: String,
        /// The route's destination; the fields below narrow the match
        /// when several routes share it.
        dest: Ipv4Net,
        /// Only the route via this gateway.
        gateway: Option<Ipv4Addr>,
        /// Only the route out of this interface.
        dev: Option<String>,
        /// Only the route with this metric.
        metric: Option<u32>,
    },
}

/// Gateway, interface and metric, each if given.
type RouteOptions = (Option<Ipv4Addr>, Option<String>, Option<u32>);

/// The words after `route add ROUTER DEST`: `via GW`, `dev IFACE`,
/// `metric N`, in any order, each at most once.
fn route_options(words: &[&str]) -> Result<RouteOptions, BadRequest> {
    let (mut via, mut dev, mut metric) = (None, None, None);
    let mut rest = words;
    while let [key, value, tail @ ..] = rest {
        match *key {
            "via" if via.is_none() => {
                via = Some(
                    value
                        .parse::<Ipv4Addr>()
                        .map_err(|_| BadRequest(format!("via {value:?}: not an IPv4 address")))?,
                )
            }
            "dev" if dev.is_none() => dev = Some(value.to_string()),
            "metric" if metric.is_none() => {
                metric = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| BadRequest(format!("metric {value:?}: not a number")))?,
                )
            }
            _ => {
                return Err(BadRequest(format!(
                    "unexpected {key:?}: after the destination come via GATEWAY, dev INTERFACE, metric N"
                )));
            }
        }
        rest = tail;
    }
    if let [extra] = rest {
        return Err(BadRequest(format!("{extra:?} needs a value")));
    }
    Ok((via, dev, metric))
}

/// A request line that is not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Request, BadRequest> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ports"] => Ok(Request::Ports),
            ["macs"] => Ok(Request::Macs { segment: None }),
            ["macs", seg] => Ok(Request::Macs {
                segment: Some(seg.to_string()),
            }),
            ["vlans"] => Ok(Request::Vlans { segment: None }),
            ["vlans", seg] => Ok(Request::Vlans {
                segment: Some(seg.to_string()),
            }),
            ["stats"] => Ok(Request::Stats),
            ["stats", "reset"] => Ok(Request::ResetCounters),
            ["routers"] => Ok(Request::Routers),
            ["routes"] => Ok(Request::Routes { router: None }),
            ["routes", r] => Ok(Request::Routes {
                router: Some(r.to_string()),
            }),
            ["arp"] => Ok(Request::Arp { router: None }),
            ["arp", r] => Ok(Request::Arp {
                router: Some(r.to_string()),
            }),
            ["nat"] => Ok(Request::Nat { router: None }),
            ["nat", r] => Ok(Request::Nat {
                router: Some(r.to_string()),
            }),
            ["conntrack"] => Ok(Request::Conntrack { router: None }),
            ["conntrack", "flush"] => Ok(Request::ConntrackFlush { router: None }),
            ["conntrack", "flush", r] => Ok(Request::ConntrackFlush {
                router: Some(r.to_string()),
            }),
            ["conntrack", r] => Ok(Request::Conntrack {
                router: Some(r.to_string()),
            }),
            ["net", "list"] => Ok(Request::NetList),
            ["net", "info", n] => Ok(Request::NetInfo {
                name: n.to_string(),
            }),
            ["net", "define", p] => Ok(Request::NetDefine {
                path: std::path::PathBuf::from(p),
            }),
            ["net", "start", n] => Ok(Request::NetStart {
                name: n.to_string(),
            }),
            ["net", "destroy", n] => Ok(Request::NetDestroy {
                name: n.to_string(),
            }),
            ["net", "undefine", n] => Ok(Request::NetUndefine {
                name: n.to_string(),
            }),
            ["net", ..] => Err(BadRequest(
                "usage: net list | net info|start|destroy|undefine NAME | net define FILE".into(),
            )),
            ["leases"] => Ok(Request::Leases { router: None }),
            ["leases", r] => Ok(Request::Leases {
                router: Some(r.to_string()),
            }),
            ["route", op @ ("add" | "del"), router, dest, rest @ ..] => {
                let dest = StaticRoute::parse_destination(dest).map_err(BadRequest)?;
                let (gateway, dev, metric) = route_options(rest)?;
                let router = router.to_string();
                Ok(if *op == "add" {
                    Request::RouteAdd {
                        router,
                        route: StaticRoute {
                            dest,
                            gateway,
                            iface: dev,
                            metric: metric.unwrap_or(0),
                        },
                    }
                } else {
                    Request::RouteDel {
                        router,
                        dest,
                        gateway,
                        dev,
                        metric,
                    }
                })
            }
            ["route", ..] => Err(BadRequest(
                "usage: route add|del ROUTER DEST [via GATEWAY] [dev INTERFACE] [metric N]".into(),
            )),
            [] => Err(BadRequest("empty request".into())),
            _ => Err(BadRequest(format!(
                "unknown request {line:?}; known: ports, macs [SEGMENT], stats, stats reset, \
                 routers, routes [ROUTER], arp [ROUTER], route add|del ROUTER DEST ..., \
                 nat [ROUTER], conntrack [flush] [ROUTER], leases [ROUTER], net ..."
            ))),
        }
    }

    /// The line that encodes this request.
    pub fn to_line(&self) -> String {
        match self {
            Request::Ports => "ports".into(),
            Request::Macs { segment: None } => "macs".into(),
            Request::Macs { segment: Some(s) } => format!("macs {s}"),
            Request::Vlans { segment: None } => "vlans".into(),
            Request::Vlans { segment: Some(s) } => format!("vlans {s}"),
            Request::Stats => "stats".into(),
            Request::ResetCounters => "stats reset".into(),
            Request::Routers => "routers".into(),
            Request::Routes { router: None } => "routes".into(),
            Request::Routes { router: Some(r) } => format!("routes {r}"),
            Request::Arp { router: None } => "arp".into(),
            Request::Arp { router: Some(r) } => format!("arp {r}"),
            Request::Nat { router: None } => "nat".into(),
            Request::Nat { router: Some(r) } => format!("nat {r}"),
            Request::NetList => "net list".into(),
            Request::NetInfo { name } => format!("net info {name}"),
            Request::NetDefine { path } => format!("net define {}", path.display()),
            Request::NetStart { name } => format!("net start {name}"),
            Request::NetDestroy { name } => format!("net destroy {name}"),
            Request::NetUndefine { name } => format!("net undefine {name}"),
            Request::Leases { router: None } => "leases".into(),
            Request::Leases { router: Some(r) } => format!("leases {r}"),
            Request::Conntrack { router: None } => "conntrack".into(),
            Request::Conntrack { router: Some(r) } => format!("conntrack {r}"),
            Request::ConntrackFlush { router: None } => "conntrack flush".into(),
            Request::ConntrackFlush { router: Some(r) } => format!("conntrack flush {r}"),
            Request::RouteAdd { router, route } => {
                let mut line = format!("route add {router} {}", route.dest);
                push_options(
                    &mut line,
                    route.gateway,
                    route.iface.as_deref(),
                    Some(route.metric),
                );
                line
            }
            Request::RouteDel {
                router,
                dest,
                gateway,
                dev,
                metric,
            } => {
                let mut line = format!("route del {router} {dest}");
                push_options(&mut line, *gateway, dev.as_deref(), *metric);
                line
            }
        }
    }
}

fn push_options(line: &mut String, via: Option<Ipv4Addr>, dev: Option<&str>, metric: Option<u32>) {
    if let Some(v) = via {
        line.push_str(&format!(" via {v}"));
    }
    if let Some(d) = dev {
        line.push_str(&format!(" dev {d}"));
    }
    if let Some(m) = metric {
        line.push_str(&format!(" metric {m}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [
            Request::Ports,
            Request::Macs { segment: None },
            Request::Macs {
                segment: Some("lan".into()),
            },
            Request::Vlans { segment: None },
            Request::Vlans {
                segment: Some("lan".into()),
            },
            Request::Stats,
            Request::ResetCounters,
            Request::Routers,
            Request::Routes { router: None },
            Request::Nat { router: None },
            Request::Conntrack {
                router: Some("gw".into()),
            },
            Request::ConntrackFlush { router: None },
            Request::ConntrackFlush {
                router: Some("gw".into()),
            },
            Request::Arp {
                router: Some("gw".into()),
            },
            Request::RouteAdd {
                router: "gw".into(),
                route: StaticRoute {
                    dest: "10.1.0.0/16".parse().unwrap(),
                    gateway: Some("192.168.1.2".parse().unwrap()),
                    iface: Some("wan".into()),
                    metric: 5,
                },
            },
            Request::RouteDel {
                router: "gw".into(),
                dest: "0.0.0.0/0".parse().unwrap(),
                gateway: None,
                dev: Some("lan".into()),
                metric: None,
            },
        ] {
            assert_eq!(Request::parse(&r.to_line()).unwrap(), r);
        }
        assert!(Request::parse("").is_err());
        assert!(Request::parse("ports extra").is_err());
        assert!(Request::parse("reboot").unwrap_err().0.contains("known"));
    }

    #[test]
    fn route_words_parse_in_any_order_and_refuse_nonsense() {
        let r = Request::parse("route add gw default metric 3 via 10.0.0.1").unwrap();
        assert_eq!(
            r,
            Request::RouteAdd {
                router: "gw".into(),
                route: StaticRoute {
                    dest: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    iface: None,
                    metric: 3,
                },
            }
        );
        let host = Request::parse("route add gw 10.9.9.9 dev lan").unwrap();
        assert!(matches!(host, Request::RouteAdd { route, .. } if route.dest.prefix_len() == 32));
        assert!(Request::parse("route add gw 10.0.0.0/33 via 1.2.3.4").is_err());
        assert!(Request::parse("route add gw 10.0.0.0/8 via").is_err());
        assert!(Request::parse("route add gw 10.0.0.0/8 via 1.2.3.4 via 1.2.3.5").is_err());
        assert!(Request::parse("route add gw 10.0.0.0/8 gateway 1.2.3.4").is_err());
        assert!(Request::parse("route flip gw 10.0.0.0/8").is_err());
    }
}
