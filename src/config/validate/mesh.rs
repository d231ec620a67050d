//! The `mesh` and `limits` sections: addresses, certificate files, timers, windows.

use super::*;
use crate::config::{Congestion, E2eMode, Limits, MeshConfig, TcpBind};
use crate::core::policy::{AllowEntry, ExitPolicy};

fn parse_congestion(name: Option<&str>) -> Result<Congestion, String> {
    let Some(name) = name else { return Ok(Congestion::default()) };
    Congestion::from_name(name).ok_or_else(|| {
        format!("unknown congestion controller `{name}` (expected one of: {})", Congestion::NAMES.join(", "))
    })
}

fn parse_tcp_bind(value: Option<&str>) -> Result<TcpBind, String> {
    match value {
        None => Ok(TcpBind::SameAsQuic),
        Some("off") => Ok(TcpBind::Off),
        Some(addr) => addr
            .parse()
            .map(TcpBind::At)
            .map_err(|_| format!("`{addr}` is not an IP:port (or `off` for no TCP links)")),
    }
}

fn parse_e2e(name: Option<&str>) -> Result<E2eMode, String> {
    match name {
        None | Some("required") => Ok(E2eMode::Required),
        Some("preferred") => Ok(E2eMode::Preferred),
        Some("off") => Ok(E2eMode::Off),
        Some(other) => {
            Err(format!("unknown mode `{other}` (expected one of: {})", E2eMode::NAMES.join(", ")))
        }
    }
}

/// The least `limits.max_header_bytes` that takes a sealed header.
const MIN_SEALED_HEADER_LIMIT: usize = 2048;

impl Checker<'_> {
    pub(super) fn mesh(&mut self, raw: &raw::RawMesh, base: &Path) -> Option<MeshConfig> {
        let bind = self.socket_addr("mesh.bind", raw.bind.as_deref(), DEFAULT_MESH_BIND);
        let tcp_bind = self.check("mesh.tcp_bind", parse_tcp_bind(raw.tcp_bind.as_deref()));
        let fallback_after =
            self.duration("mesh.fallback_after", raw.fallback_after.as_deref(), Duration::from_secs(1));
        let quic_probe_interval = self.duration(
            "mesh.quic_probe_interval",
            raw.quic_probe_interval.as_deref(),
            Duration::from_secs(30),
        );
        let advertise = self.host_port("mesh.advertise", raw.advertise.as_deref());
        let cert = self.existing_file("mesh.cert", raw.cert.as_deref(), base);
        let key = self.existing_file("mesh.key", raw.key.as_deref(), base);
        let ca = self.existing_file("mesh.ca", raw.ca.as_deref(), base);
        let data_dir =
            self.required("mesh.data_dir", Some(raw.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)));
        let timers = self.mesh_timers(raw);
        let windows = self.mesh_windows(raw);
        let congestion = self.check("mesh.congestion", parse_congestion(raw.congestion.as_deref()));
        let e2e = self.check("mesh.e2e", parse_e2e(raw.e2e.as_deref()));
        let (keepalive_interval, link_idle_timeout, redial_min, redial_max) = timers?;
        let (stream_window, connection_window, send_window, udp_buffer) = windows?;
        Some(MeshConfig {
            bind: bind?,
            tcp_bind: tcp_bind?,
            fallback_after: fallback_after?,
            quic_probe_interval: quic_probe_interval?,
            advertise: advertise?,
            cert: cert?,
            key: key?,
            ca: ca?,
            data_dir: base.join(data_dir?),
            keepalive_interval,
            link_idle_timeout,
            redial_min,
            redial_max,
            stream_window,
            connection_window,
            send_window,
            udp_buffer,
            congestion: congestion?,
            relay: raw.relay.unwrap_or(true),
            e2e: e2e?,
        })
    }

    fn mesh_timers(&mut self, raw: &raw::RawMesh) -> Option<(Duration, Duration, Duration, Duration)> {
        let keepalive = self.duration(
            "mesh.keepalive_interval",
            raw.keepalive_interval.as_deref(),
            // Short, because a link silent for two intervals is skipped by new flows: this
            // sets how fast a dead first hop is routed around (about 0.7 s). Busy links send
            // no keepalives at all.
            Duration::from_millis(300),
        );
        let idle = self.duration(
            "mesh.link_idle_timeout",
            raw.link_idle_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let redial_min =
            self.duration("mesh.redial_min", raw.redial_min.as_deref(), Duration::from_millis(100));
        let redial_max = self.duration("mesh.redial_max", raw.redial_max.as_deref(), Duration::from_secs(30));
        let (keepalive, idle, redial_min, redial_max) = (keepalive?, idle?, redial_min?, redial_max?);
        let mut ok = Some(());
        if idle <= keepalive {
            // Otherwise a quiet but healthy link is declared dead between two keepalives.
            ok = self.check(
                "mesh.link_idle_timeout",
                Err(format!("must be longer than mesh.keepalive_interval ({keepalive:?}), is {idle:?}")),
            );
        }
        if redial_min > redial_max {
            ok = self.check(
                "mesh.redial_min",
                Err(format!("must not exceed mesh.redial_max ({redial_max:?}), is {redial_min:?}")),
            );
        }
        ok.map(|()| (keepalive, idle, redial_min, redial_max))
    }

    fn mesh_windows(&mut self, raw: &raw::RawMesh) -> Option<(u64, u64, u64, usize)> {
        let window = (1, QUIC_VARINT_MAX);
        // 16 MiB in flight per flow fills 500 Mbit/s at a 200 ms round trip, and is what a
        // stalled flow may hold (quinn fixes it for a connection's life). A link's window
        // grows to the connection maximum only while the link delivers that much per round
        // trip, so 64 MiB lets several fast flows fill a long fat link at no cost to an
        // idle one.
        let stream = self.count("mesh.stream_window", raw.stream_window, 16 * MIB, window);
        let connection = self.count("mesh.connection_window", raw.connection_window, 64 * MIB, window);
        let send = self.count("mesh.send_window", raw.send_window, 32 * MIB, window);
        let udp = self.count("mesh.udp_buffer", raw.udp_buffer, 4 * MIB, (1, UDP_BUFFER_MAX));
        let (stream, connection) = (stream?, connection?);
        if stream > connection {
            // One stream could never use its window: the connection's would stop it first.
            return self.check(
                "mesh.stream_window",
                Err(format!("must not exceed mesh.connection_window ({connection}), is {stream}")),
            );
        }
        let (send, udp) = (send?, udp?);
        let udp = self.check(
            "mesh.udp_buffer",
            usize::try_from(udp).map_err(|_| "too large for this platform".to_owned()),
        )?;
        Some((stream, connection, send, udp))
    }

    pub(super) fn limits(&mut self, raw: Option<&raw::RawLimits>) -> Option<Limits> {
        let d = Limits::default();
        let Some(raw) = raw else { return Some(d) };
        let max_header_bytes = self.count(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            d.max_header_bytes as u64,
            (64, 65_535),
        );
        let header_timeout =
            self.duration("limits.header_timeout", raw.header_timeout.as_deref(), d.header_timeout);
        let max_streams = self.count(
            "limits.max_streams_per_peer",
            raw.max_streams_per_peer,
            d.max_streams_per_peer.into(),
            (1, u32::MAX.into()),
        );
        let max_flows = self.count("limits.max_flows", raw.max_flows, d.max_flows as u64, (1, MAX_FLOWS));
        let connect_timeout =
            self.duration("limits.connect_timeout", raw.connect_timeout.as_deref(), d.connect_timeout);
        let idle_timeout = self.duration("limits.idle_timeout", raw.idle_timeout.as_deref(), d.idle_timeout);
        let half_closed_timeout = self.duration(
            "limits.half_closed_timeout",
            raw.half_closed_timeout.as_deref(),
            d.half_closed_timeout,
        );
        let drain_timeout =
            self.duration("limits.drain_timeout", raw.drain_timeout.as_deref(), d.drain_timeout);
        let max_subflows =
            self.count("limits.max_subflows", raw.max_subflows, d.max_subflows as u64, (1, MAX_SUBFLOWS));
        let max_buffered = self.count(
            "limits.max_buffered_bytes",
            raw.max_buffered_bytes,
            d.max_buffered_bytes,
            (1, u64::MAX),
        );
        let max_lookups =
            self.count("limits.max_lookups", raw.max_lookups, d.max_lookups as u64, (1, 65_536));
        let per_origin = self.count(
            "limits.max_lookups_per_origin",
            raw.max_lookups_per_origin,
            d.max_lookups_per_origin as u64,
            (1, 65_536),
        );
        let udp_idle_timeout =
            self.duration("limits.udp_idle_timeout", raw.udp_idle_timeout.as_deref(), d.udp_idle_timeout);
        let max_udp_associations = self.count(
            "limits.max_udp_associations",
            raw.max_udp_associations,
            d.max_udp_associations as u64,
            (1, MAX_FLOWS),
        );
        let max_datagram =
            self.count("limits.max_datagram", raw.max_datagram, d.max_datagram as u64, (1, MAX_UDP_PAYLOAD));
        Some(Limits {
            // The ranges checked above make these conversions lossless.
            max_header_bytes: usize::try_from(max_header_bytes?).ok()?,
            header_timeout: header_timeout?,
            max_streams_per_peer: u32::try_from(max_streams?).ok()?,
            max_flows: usize::try_from(max_flows?).ok()?,
            connect_timeout: connect_timeout?,
            idle_timeout: idle_timeout?,
            half_closed_timeout: half_closed_timeout?,
            drain_timeout: drain_timeout?,
            max_subflows: usize::try_from(max_subflows?).ok()?,
            max_buffered_bytes: max_buffered?,
            max_lookups: usize::try_from(max_lookups?).ok()?,
            max_lookups_per_origin: usize::try_from(per_origin?).ok()?,
            udp_idle_timeout: udp_idle_timeout?,
            max_udp_associations: usize::try_from(max_udp_associations?).ok()?,
            max_datagram: usize::try_from(max_datagram?).ok()?,
        })
    }

    /// The buffer budget must hold at least one link's base window and a multipath flow's
    /// reorder window, or a node could not carry a single flow at full speed.
    pub(super) fn budget_fits_windows(&mut self, mesh: &MeshConfig, limits: &Limits) {
        let least = mesh.connection_window.max(crate::core::multipath::FLOW_WINDOW as u64);
        if limits.max_buffered_bytes < least {
            self.error(
                "limits.max_buffered_bytes",
                format!(
                    "must be at least one link window (mesh.connection_window, {}) and one multipath flow window ({}), is {}",
                    mesh.connection_window,
                    crate::core::multipath::FLOW_WINDOW,
                    limits.max_buffered_bytes
                ),
            );
        }
    }

    /// A sealed header carries the origin's seal card (its certificate, about a kilobyte):
    /// a node that seals must accept headers that large.
    pub(super) fn sealed_headers_fit(&mut self, mesh: &MeshConfig, limits: &Limits) {
        if mesh.e2e != E2eMode::Off && limits.max_header_bytes < MIN_SEALED_HEADER_LIMIT {
            self.error(
                "limits.max_header_bytes",
                format!(
                    "must be at least {MIN_SEALED_HEADER_LIMIT} with mesh.e2e: {}: a sealed flow's header carries the origin's certificate; is {}",
                    mesh.e2e.name(),
                    limits.max_header_bytes
                ),
            );
        }
    }

    /// `exit_policy.nameservers`: IP addresses, with a port or on 53.
    pub(super) fn nameservers(&mut self, raw: Option<&[String]>) -> Option<Vec<std::net::SocketAddr>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, s) in raw.unwrap_or_default().iter().enumerate() {
            let parsed = s.parse::<std::net::SocketAddr>().ok().or_else(|| {
                s.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| (ip, 53).into())
            });
            match parsed {
                Some(a) => out.push(a),
                None => {
                    ok = false;
                    self.error(
                        format!("exit_policy.nameservers[{i}]"),
                        format!("expected an IP address, optionally with a port (\"10.0.0.2\", \"10.0.0.2:5353\"), got {s:?}"),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    pub(super) fn exit_policy(&mut self, allow: Option<&[raw::RawAllow]>) -> Option<ExitPolicy> {
        let allow = allow.unwrap_or_default();
        if allow.is_empty() {
            return Some(ExitPolicy::deny_all());
        }
        let entries: Vec<AllowEntry> = allow
            .iter()
            .map(|a| match a {
                raw::RawAllow::Pattern(p) => AllowEntry { to: p.clone(), from: None },
                raw::RawAllow::Rule(r) => AllowEntry { to: r.to.clone(), from: Some(r.from.clone()) },
            })
            .collect();
        match ExitPolicy::parse_entries(&entries) {
            Ok(policy) => Some(policy),
            Err(problems) => {
                for (i, message) in problems {
                    self.error(format!("exit_policy.allow[{i}]"), message);
                }
                None
            }
        }
    }
}
