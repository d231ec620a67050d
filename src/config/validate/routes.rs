//! Route checks: names, matches, targets, exits, and what this version does not support.

use super::*;

/// What a route may refer to: the names and ports the rest of the file defines.
struct RouteContext<'a> {
    node_id: &'a str,
    listener_names: HashSet<&'a str>,
    listener_ports: HashSet<u16>,
    peer_names: HashSet<&'a str>,
    /// The names and nonzero ports of `protocol: udp` listeners.
    udp_listeners: (HashSet<&'a str>, HashSet<u16>),
    /// With a scheduler, an exit may be any node: the scheduler introduces it.
    has_scheduler: bool,
}

impl<'a> RouteContext<'a> {
    fn new(raw: &'a RawConfig, node_id: &'a str) -> Self {
        Self {
            node_id,
            listener_names: raw.listeners.iter().filter_map(|l| l.name.as_deref()).collect(),
            listener_ports: listener_ports(raw).collect(),
            peer_names: raw.peers.iter().filter_map(|p| p.name.as_deref()).collect(),
            udp_listeners: udp_listeners(raw),
            has_scheduler: raw.scheduler.is_some(),
        }
    }
}

/// The names and nonzero ports of the `protocol: udp` listeners.
fn udp_listeners(raw: &RawConfig) -> (HashSet<&str>, HashSet<u16>) {
    let udp = || raw.listeners.iter().filter(|l| l.protocol.as_deref() == Some("udp"));
    let names = udp().filter_map(|l| l.name.as_deref()).collect();
    let ports = udp()
        .filter_map(|l| l.bind.as_deref()?.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|&p| p != 0)
        .collect();
    (names, ports)
}

/// The nonzero ports of listeners whose bind address parses.
fn listener_ports(raw: &RawConfig) -> impl Iterator<Item = u16> + '_ {
    raw.listeners
        .iter()
        .filter_map(|l| l.bind.as_deref()?.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|&p| p != 0)
}

impl Checker<'_> {
    pub(super) fn routes(&mut self, raw: &RawConfig, node_id: &str) -> Option<Vec<RouteConfig>> {
        self.duplicates("routes", raw.routes.iter().map(|r| r.name.as_deref()));
        let ctx = RouteContext::new(raw, node_id);
        let out: Vec<RouteConfig> =
            raw.routes.iter().enumerate().filter_map(|(i, r)| self.route(i, r, &ctx)).collect();
        (out.len() == raw.routes.len()).then_some(out)
    }

    fn route(&mut self, i: usize, raw: &RawRoute, ctx: &RouteContext<'_>) -> Option<RouteConfig> {
        let name = self.required(format!("routes[{i}].name"), raw.name.as_deref());
        let matcher = self.route_match(i, raw.matcher.as_ref(), ctx);
        self.bad_route_match |= matcher.is_none();
        let chain = chain_target(raw, ctx);
        let targets = match chain {
            Some(_) => Some(Vec::new()),
            None => self.route_targets(i, raw.target.as_ref(), ctx),
        };
        let paths = self.route_paths(i, raw, ctx)?;
        let exit = self.route_exit(i, raw, ctx, !paths.is_empty());
        if chain.is_some() && (raw.exit.is_some() || !paths.is_empty()) {
            self.error(
                format!("routes[{i}].target"),
                "a proxy-chain target (`target: <peer>`) hands the flow to that peer: leave out `exit`, `via` and `paths`",
            );
            return None;
        }
        let exit = exit?;
        if carries_udp(raw, ctx) && !self.udp_route_fits(i, raw, chain.is_some()) {
            return None;
        }
        let multipath = self.route_multipath(i, raw, ctx, exit.is_some() && chain.is_none(), paths.len())?;
        Some(RouteConfig {
            name: name?.to_owned(),
            matcher: matcher?,
            targets: targets?,
            exit,
            paths,
            chain: chain.map(str::to_owned),
            multipath,
        })
    }

    /// `exit`: this node (`None`), a configured peer, or, when the route has relay paths,
    /// any node the last relay can reach.
    fn route_exit(
        &mut self,
        i: usize,
        raw: &RawRoute,
        ctx: &RouteContext<'_>,
        has_paths: bool,
    ) -> Option<Option<String>> {
        let key = format!("routes[{i}].exit");
        match raw.exit.as_deref() {
            Some(exit) if exit == ctx.node_id && has_paths => {
                self.check(key, Err("a route with relay paths must exit at another node".to_owned()))
            }
            // Naming this node as the exit is the same as leaving `exit` out.
            Some(exit) if exit == ctx.node_id => Some(None),
            Some(exit) if ctx.peer_names.contains(exit) => Some(Some(exit.to_owned())),
            Some(exit) if has_paths || ctx.has_scheduler => {
                self.check(key, check_node_id(exit)).map(|e| Some(e.to_owned()))
            }
            Some(exit) => self.check(
                key,
                Err(format!("`{exit}` is neither this node (`{}`) nor a configured peer", ctx.node_id)),
            ),
            None if has_paths => {
                self.check(key, Err("a route with `via` or `paths` needs an `exit`".to_owned()))
            }
            None => Some(None),
        }
    }

    /// `via` (one path) or `paths` (several, tried in order): the relays between this node
    /// and the exit. Each starts at a configured peer (any node, with a scheduler) and
    /// names no node twice.
    fn route_paths(&mut self, i: usize, raw: &RawRoute, ctx: &RouteContext<'_>) -> Option<Vec<Vec<String>>> {
        let (key, paths): (String, Vec<Vec<String>>) = match (&raw.via, &raw.paths) {
            (Some(via), Some(paths)) if !via.is_empty() && !paths.is_empty() => {
                return self
                    .check(format!("routes[{i}].via"), Err("give `via` or `paths`, not both".to_owned()));
            }
            (Some(via), _) if !via.is_empty() => (format!("routes[{i}].via"), vec![via.clone()]),
            (_, Some(paths)) => (format!("routes[{i}].paths"), paths.clone()),
            _ => return Some(Vec::new()),
        };
        let mut ok = true;
        for (j, path) in paths.iter().enumerate() {
            let at = if raw.paths.is_some() && raw.via.as_ref().is_none_or(Vec::is_empty) {
                format!("{key}[{j}]")
            } else {
                key.clone()
            };
            if let Err(e) = check_path(path, raw.exit.as_deref(), ctx) {
                self.error(at, e);
                ok = false;
            }
        }
        ok.then_some(paths)
    }
    fn route_match(
        &mut self,
        i: usize,
        raw: Option<&RawMatch>,
        ctx: &RouteContext<'_>,
    ) -> Option<RouteMatch> {
        let key = format!("routes[{i}].match");
        match raw.map(|m| (m.port, m.listener.as_deref())) {
            None | Some((None, None)) => self.check(key, Err("give one of `port` or `listener`".into())),
            Some((Some(_), Some(_))) => {
                self.check(key, Err("give exactly one of `port` or `listener`, not both".into()))
            }
            Some((Some(port), None)) => {
                let port = u16::try_from(port).ok().filter(|&p| p != 0);
                let port = self.check(
                    format!("{key}.port"),
                    port.ok_or_else(|| "port must be in 1..65535".to_owned()),
                )?;
                let known = ctx.listener_ports.contains(&port);
                let known = known.then_some(port).ok_or_else(|| format!("no listener binds port {port}"));
                self.check(format!("{key}.port"), known).map(RouteMatch::Port)
            }
            Some((None, Some(name))) => {
                let known = ctx.listener_names.contains(name);
                let known =
                    known.then(|| name.to_owned()).ok_or_else(|| format!("no listener named `{name}`"));
                self.check(format!("{key}.listener"), known).map(RouteMatch::Listener)
            }
        }
    }

    fn route_targets(
        &mut self,
        i: usize,
        raw: Option<&RawTargets>,
        ctx: &RouteContext<'_>,
    ) -> Option<Vec<String>> {
        let key = format!("routes[{i}].target");
        let keyed: Vec<(String, &String)> = match raw {
            None => return self.check(key, Err("is required".into())),
            Some(RawTargets::One(target)) => vec![(key, target)],
            Some(RawTargets::Many(targets)) if targets.is_empty() => {
                return self.check(key, Err("must list at least one host:port".into()));
            }
            Some(RawTargets::Many(targets)) => {
                targets.iter().enumerate().map(|(j, t)| (format!("{key}[{j}]"), t)).collect()
            }
        };
        let mut out = Vec::new();
        for (key, target) in keyed {
            let checked = if !target.contains(':') && ctx.peer_names.contains(target.as_str()) {
                Err("a proxy-chain target (`target: <peer>`) must be the route's only target".to_owned())
            } else {
                check_host_port(target)
            };
            out.extend(self.check(key, checked).map(|()| target.clone()));
        }
        (out.len() == raw.map_or(0, RawTargets::len)).then_some(out)
    }

    /// A route for a UDP listener carries each association as one flow to a `host:port`
    /// target: not a proxy chain (the next node would route by a TCP port), not multipath
    /// (datagrams are not striped).
    fn udp_route_fits(&mut self, i: usize, raw: &RawRoute, chain: bool) -> bool {
        if chain {
            self.error(
                format!("routes[{i}].target"),
                "a route for a UDP listener (`protocol: udp`) needs host:port targets: a proxy chain (`target: <peer>`) carries TCP only",
            );
            return false;
        }
        if raw.multipath == Some(true) {
            self.error(
                format!("routes[{i}].multipath"),
                "a route for a UDP listener (`protocol: udp`) cannot be multipath: each UDP association is one flow on one path",
            );
            return false;
        }
        true
    }

    /// `multipath: true` stripes flows over several paths to a remote exit: it needs an
    /// exit at another node and more than one path (static ones, or the scheduler's).
    fn route_multipath(
        &mut self,
        i: usize,
        raw: &RawRoute,
        ctx: &RouteContext<'_>,
        remote_exit: bool,
        static_paths: usize,
    ) -> Option<bool> {
        if raw.multipath != Some(true) {
            return Some(false);
        }
        let key = format!("routes[{i}].multipath");
        if !remote_exit {
            return self.check(
                key,
                Err("`multipath: true` needs `exit` at another node (not a proxy chain)".into()),
            );
        }
        if static_paths == 0 && !ctx.has_scheduler {
            return self.check(
                key,
                Err("`multipath: true` needs several paths: give `paths`, or a `scheduler` that computes them".into()),
            );
        }
        Some(true)
    }

    /// A listener no route matches would accept connections only to refuse them.
    /// Checked only when every route's `match` is valid.
    pub(super) fn unrouted_listeners(&mut self, raw: &RawConfig) {
        if self.bad_route_match {
            // A broken `match` already has its error; blaming the listener it was
            // probably meant for as well would only be noise.
            return;
        }
        for (i, listener) in raw.listeners.iter().enumerate() {
            let port = listener.bind.as_deref().and_then(|b| b.parse::<SocketAddr>().ok()).map(|a| a.port());
            let matched = raw.routes.iter().filter_map(|r| r.matcher.as_ref()).any(|m| match m {
                RawMatch { listener: Some(name), port: None } => {
                    listener.name.as_deref() == Some(name.as_str())
                }
                RawMatch { port: Some(p), listener: None } => {
                    port.is_some_and(|lp| lp != 0 && i64::from(lp) == *p)
                }
                _ => false,
            });
            if !matched {
                self.error(format!("listeners[{i}]"), "no route matches this listener");
            }
        }
    }
}

/// Whether a route matches a UDP listener (by name, or by a port a UDP listener binds).
fn carries_udp(raw: &RawRoute, ctx: &RouteContext<'_>) -> bool {
    let (names, ports) = &ctx.udp_listeners;
    match raw.matcher.as_ref() {
        Some(RawMatch { listener: Some(name), port: None }) => names.contains(name.as_str()),
        Some(RawMatch { port: Some(p), listener: None }) => {
            u16::try_from(*p).is_ok_and(|p| ports.contains(&p))
        }
        _ => false,
    }
}

/// The peer a proxy-chain route hands its flows to: a single target that names a peer.
fn chain_target<'r>(raw: &'r RawRoute, ctx: &RouteContext<'_>) -> Option<&'r str> {
    let only = match raw.target.as_ref()? {
        RawTargets::One(t) => t,
        RawTargets::Many(list) if list.len() == 1 => &list[0],
        RawTargets::Many(_) => return None,
    };
    (!only.contains(':') && ctx.peer_names.contains(only.as_str())).then_some(only.as_str())
}

/// Most nodes on a path, origin and exit included (the wire's hop limit).
const MAX_PATH_NODES: usize = 16;

fn check_path(path: &[String], exit: Option<&str>, ctx: &RouteContext<'_>) -> Result<(), String> {
    let first = path.first().ok_or("a path needs at least one relay")?;
    // With a scheduler, a node it introduces (one enrolled by `mesh join`, say) is a peer
    // too, once introduced; until then flows on this path are refused like a dead link's.
    if !ctx.peer_names.contains(first.as_str()) && !ctx.has_scheduler {
        return Err(format!(
            "the first relay `{first}` must be a configured peer (or, with a scheduler, a node it introduces)"
        ));
    }
    if path.len() + 2 > MAX_PATH_NODES {
        return Err(format!("{} relays make a path longer than {MAX_PATH_NODES} nodes", path.len()));
    }
    for (k, node) in path.iter().enumerate() {
        check_node_id(node)?;
        if node == ctx.node_id || Some(node.as_str()) == exit || path[..k].contains(node) {
            return Err(format!("`{node}` appears twice on the path (origin, relays and exit must differ)"));
        }
    }
    Ok(())
}
