//! Name resolution for exit targets, which peers choose.
//!
//! A target name is an input from another member, so its lookups are bounded the way flows
//! are: an asynchronous resolver (hickory) whose lookups end at a deadline, rather than
//! `getaddrinfo` on the blocking pool, where a lookup given up at the deadline kept its
//! thread for up to 30 s and names that never answer could fill the pool (stalling every
//! other lookup and the node's file writes); at most `limits.max_lookups` lookups in flight
//! per node and `limits.max_lookups_per_origin` per origin, so one member flooding slow
//! names leaves the others their lookups; and a short memory of names that failed, so
//! asking again for a name that never answers costs nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::core::wire::RefuseReason;

/// How long a name that does not exist, or whose lookup found no answer by its deadline,
/// is answered from memory.
pub(crate) const FAILED_NAME_FOR: Duration = Duration::from_secs(30);
/// Failed names remembered at most (a flood of distinct names then goes to the caps).
const MAX_FAILED_NAMES: usize = 4096;

/// How often the system's DNS settings are checked for a change (DHCP, a VPN coming up),
/// as the C library does: the files' modification times, at most this often.
const SYSTEM_CHECK_EVERY: Duration = Duration::from_secs(5);
/// The files the system's DNS settings come from.
const SYSTEM_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// The exit's resolver, its caps and its memory of failed names.
pub(crate) struct TargetResolver {
    settings: Settings,
    /// The files whose change makes a resolver that follows the system's settings rebuild.
    system_files: Vec<std::path::PathBuf>,
    current: Mutex<Current>,
    node_slots: Arc<Semaphore>,
    per_origin_max: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    failed: Mutex<HashMap<String, Instant>>,
}

/// What a resolver is built from.
struct Settings {
    nameservers: Vec<SocketAddr>,
    query_timeout: Duration,
    max_lookups: usize,
}

/// The resolver in use and the system settings it was built from.
struct Current {
    /// `None` when no resolver could be built (logged): names are then refused.
    resolver: Option<Arc<TokioResolver>>,
    /// The system files' modification times it was built from.
    built_from: Vec<Option<std::time::SystemTime>>,
    checked: Instant,
}

/// Why a lookup gave no address: the refusal reason and its detail.
pub(crate) type LookupRefusal = (RefuseReason, String);

impl Settings {
    /// A resolver asking the configured name servers, or the system's.
    fn build(&self) -> Option<TokioResolver> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if self.nameservers.is_empty() {
            TokioResolver::builder_tokio().unwrap_or_else(|e| {
                warn!("cannot read the system's DNS settings ({e}): exits resolve target names from /etc/hosts only; set exit_policy.nameservers");
                Resolver::builder_with_config(ResolverConfig::from_name_servers(Vec::new()), provider.clone())
            })
        } else {
            let servers = self.nameservers.iter().map(|s| name_server(*s)).collect();
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts = builder.options_mut();
        opts.timeout = self.query_timeout;
        // One lost datagram is retried within the lookup's deadline.
        opts.attempts = 2;
        // Both families, IPv4 first: a host whose IPv6 is broken (common) would otherwise
        // spend the whole connect budget on a dead address.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Each lookup asks for A and AAAA: room for every lookup the caps let through.
        opts.max_active_requests = opts.max_active_requests.max(self.max_lookups.saturating_mul(2));
        builder
            .build()
            .inspect_err(|e| warn!("cannot build the DNS resolver ({e}): exits refuse target names"))
            .ok()
    }
}

/// The files' modification times (`None` for one that cannot be read).
fn stamps(files: &[std::path::PathBuf]) -> Vec<Option<std::time::SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

impl TargetResolver {
    /// A resolver asking `nameservers` (empty: those of `/etc/resolv.conf`, followed when
    /// the file changes), each query given up after `query_timeout`, with at most
    /// `max_lookups` in flight, and `per_origin` for any one origin.
    pub(crate) fn new(
        nameservers: &[SocketAddr],
        query_timeout: Duration,
        max_lookups: usize,
        per_origin: usize,
    ) -> Self {
        let settings = Settings { nameservers: nameservers.to_vec(), query_timeout, max_lookups };
        let system_files: Vec<std::path::PathBuf> = SYSTEM_FILES.iter().map(Into::into).collect();
        let current = Current {
            built_from: stamps(&system_files),
            resolver: settings.build().map(Arc::new),
            checked: Instant::now(),
        };
        Self {
            settings,
            system_files,
            current: Mutex::new(current),
            node_slots: Arc::new(Semaphore::new(max_lookups)),
            per_origin_max: per_origin,
            in_flight: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The resolver to use now: rebuilt when it follows the system's settings and their
    /// files changed (checked at most every [`SYSTEM_CHECK_EVERY`]).
    fn resolver(&self) -> Option<Arc<TokioResolver>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if self.settings.nameservers.is_empty() && current.checked.elapsed() >= SYSTEM_CHECK_EVERY {
            current.checked = Instant::now();
            let stamps = stamps(&self.system_files);
            if stamps != current.built_from {
                tracing::info!("the system's DNS settings changed: exits use them from now on");
                current.resolver = self.settings.build().map(Arc::new);
                current.built_from = stamps;
            }
        }
        current.resolver.clone()
    }

    /// The addresses of `host` (a name or an IP literal) with `port`, looked up for
    /// `origin` within `deadline`.
    pub(crate) async fn lookup(
        &self,
        origin: &str,
        host: &str,
        port: u16,
        deadline: Duration,
    ) -> Result<Vec<SocketAddr>, LookupRefusal> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if self.failed_lately(&name) {
            let detail =
                format!("cannot resolve: the lookup failed within the last {}s", FAILED_NAME_FOR.as_secs());
            return Err((RefuseReason::TargetUnreachable, detail));
        }
        let Some(_origin_slot) = OriginSlot::take(self, origin) else {
            let detail = format!("{} name lookups already in flight for this origin", self.per_origin_max);
            return Err((RefuseReason::Overloaded, detail));
        };
        let Ok(_node_slot) = self.node_slots.try_acquire() else {
            return Err((RefuseReason::Overloaded, "too many name lookups in flight".into()));
        };
        let Some(resolver) = self.resolver() else {
            return Err((RefuseReason::TargetUnreachable, "cannot resolve: no resolver".into()));
        };
        match tokio::time::timeout(deadline, resolver.lookup_ip(host)).await {
            Ok(Ok(found)) => Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
            Ok(Err(e)) => {
                // A name that does not exist is remembered; a server failure may pass.
                if e.is_no_records_found() {
                    self.remember_failure(name);
                }
                Err((RefuseReason::TargetUnreachable, format!("cannot resolve: {e}")))
            }
            Err(_) => {
                self.remember_failure(name);
                Err((
                    RefuseReason::TargetUnreachable,
                    format!("cannot resolve: no answer within {deadline:?}"),
                ))
            }
        }
    }

    fn failed_lately(&self, name: &str) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(name).is_some_and(|until| *until > Instant::now())
    }

    fn remember_failure(&self, name: String) {
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.len() >= MAX_FAILED_NAMES {
            failed.retain(|_, until| *until > now);
        }
        if failed.len() < MAX_FAILED_NAMES {
            failed.insert(name, now + FAILED_NAME_FOR);
        }
    }
}

/// A name server at `addr`, over UDP and, for long answers, TCP.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let on_port = |mut c: ConnectionConfig| {
        c.port = addr.port();
        c
    };
    NameServerConfig::new(
        addr.ip(),
        true,
        vec![on_port(ConnectionConfig::udp()), on_port(ConnectionConfig::tcp())],
    )
}

/// One of an origin's lookup slots, given back when dropped.
struct OriginSlot<'a> {
    resolver: &'a TargetResolver,
    origin: String,
}

impl<'a> OriginSlot<'a> {
    fn take(resolver: &'a TargetResolver, origin: &str) -> Option<Self> {
        let mut in_flight = resolver.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = in_flight.entry(origin.to_string()).or_default();
        if *n >= resolver.per_origin_max {
            return None;
        }
        *n += 1;
        Some(Self { resolver, origin: origin.to_string() })
    }
}

impl Drop for OriginSlot<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.resolver.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&self.origin) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.origin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver asking `server`.
    fn resolver(server: SocketAddr, per_origin: usize, nodes: usize) -> TargetResolver {
        TargetResolver::new(&[server], Duration::from_secs(5), nodes, per_origin)
    }

    /// A name server that never answers: lookups run until their deadline.
    fn silent_server() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")
    }

    #[tokio::test]
    async fn a_resolver_following_the_system_is_rebuilt_when_its_files_change() {
        let dir = std::env::temp_dir().join(format!("proxy-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("resolv.conf");
        std::fs::write(&file, "nameserver 127.0.0.1\n").expect("write");
        let mut r = TargetResolver::new(&[], Duration::from_secs(1), 4, 1);
        r.system_files = vec![file.clone()];
        r.current.lock().expect("lock").built_from = stamps(&r.system_files);
        let first = r.resolver().expect("built");
        let expire = |r: &TargetResolver| r.current.lock().expect("lock").checked -= SYSTEM_CHECK_EVERY;
        expire(&r);
        assert!(Arc::ptr_eq(&first, &r.resolver().expect("built")), "unchanged files: the same resolver");
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options().write(true).open(&file).and_then(|f| f.set_modified(later)).expect("touch");
        assert!(Arc::ptr_eq(&first, &r.resolver().expect("built")), "not checked again so soon");
        expire(&r);
        assert!(!Arc::ptr_eq(&first, &r.resolver().expect("built")), "a changed file: a new resolver");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn ip_literals_need_no_lookup_and_no_slot() {
        let r = resolver("127.0.0.1:9".parse().expect("addr"), 0, 0);
        let got = r.lookup("a", "::1", 80, Duration::from_millis(1)).await;
        assert_eq!(got, Ok(vec!["[::1]:80".parse().expect("addr")]));
    }

    #[tokio::test]
    async fn a_failed_name_is_answered_from_memory_and_slots_come_back() {
        let server = silent_server();
        let r = resolver(server.local_addr().expect("addr"), 1, 8);
        let first = r.lookup("a", "never.invalid", 80, Duration::from_millis(50)).await;
        assert_eq!(first.map_err(|e| e.0), Err(RefuseReason::TargetUnreachable));
        let again = r.lookup("a", "NEVER.invalid.", 80, Duration::from_secs(60)).await;
        assert!(again.is_err_and(|e| e.1.contains("within the last")), "answered at once, from memory");
        assert!(r.in_flight.lock().expect("lock").is_empty(), "the origin's slot was given back");
        assert_eq!(r.node_slots.available_permits(), 8);
    }
}
