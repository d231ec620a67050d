use super::*;
use crate::config::{Limits, LogFormat, LogLevel};

/// The fixtures directory: its `certs/` holds placeholder files, enough for
/// validation, which only checks that certificate files exist.
fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

const VALID: &str = "\
common:
  node_id: a
  region: eu
listeners:
  - name: web
    bind: \"127.0.0.1:8080\"
peers:
  - name: b
    address: \"10.0.0.2:7800\"
routes:
  - name: r1
    match: { listener: web }
    target: \"10.0.0.5:80\"
    exit: b
mesh:
  cert: certs/node-cert.placeholder
  key: certs/node-key.placeholder
  ca: certs/ca-cert.placeholder
";

fn run(text: &str) -> Result<Config, Vec<ConfigError>> {
    validate(raw::parse(text)?, &base())
}

fn errors(text: &str) -> Vec<ConfigError> {
    match run(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(errors) => errors,
    }
}

/// Asserts that some error has `key` and a message containing `needle`.
fn assert_has(errors: &[ConfigError], key: &str, needle: &str) {
    assert!(
        errors.iter().any(|e| e.key == key && e.message.contains(needle)),
        "no error `{key}: ...{needle}...` in {errors:#?}"
    );
}

/// `VALID` with its first occurrence of `from` replaced.
fn with(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "`{from}` is not in VALID");
    VALID.replacen(from, to, 1)
}

#[test]
fn a_valid_config_gets_every_default() {
    let config = run(VALID).expect("VALID is valid");
    assert_eq!(config.common.log.level, LogLevel::Info.into());
    assert_eq!(config.common.log.file, None);
    assert_eq!(config.common.log.format, LogFormat::Text);
    assert_eq!((config.common.log.max_bytes, config.common.log.keep), (64 * MIB, 5));
    assert_eq!(config.common.admin_addr, "127.0.0.1:9901".parse().expect("addr"));
    assert_eq!(config.mesh.bind, "0.0.0.0:7800".parse().expect("addr"));
    assert_eq!(config.mesh.data_dir, base().join("data"));
    assert_eq!(config.mesh.cert, base().join("certs/node-cert.placeholder"));
    assert_eq!(config.mesh.keepalive_interval, Duration::from_millis(300));
    assert_eq!(config.mesh.link_idle_timeout, Duration::from_secs(30));
    assert_eq!(config.mesh.redial_min, Duration::from_millis(100));
    assert_eq!(config.mesh.redial_max, Duration::from_secs(30));
    assert_eq!((config.mesh.stream_window, config.mesh.connection_window), (16 * MIB, 64 * MIB));
    assert_eq!((config.mesh.send_window, config.mesh.udp_buffer), (32 * MIB, 4 << 20));
    assert_eq!(config.limits.max_buffered_bytes, 2 << 30);
    assert_eq!(config.mesh.congestion, crate::config::Congestion::Model);
    assert_eq!(config.limits.max_header_bytes, Limits::default().max_header_bytes);
    assert!(config.scheduler.is_none());
    assert_eq!(config.peers[0].transport, PeerTransport::Auto);
    assert_eq!(config.peers[0].tcp_address, None);
    assert_eq!(config.mesh.tcp_bind, crate::config::TcpBind::SameAsQuic);
    assert_eq!(config.mesh.fallback_after, Duration::from_secs(1));
    assert_eq!(config.mesh.quic_probe_interval, Duration::from_secs(30));
    assert_eq!(config.routes[0].matcher, RouteMatch::Listener("web".into()));
    assert_eq!(config.routes[0].targets, vec!["10.0.0.5:80".to_owned()]);
    assert_eq!(config.routes[0].exit.as_deref(), Some("b"));
}

#[test]
fn paths_resolve_against_the_base_unless_absolute() {
    let ca = base().join("certs/ca-cert.placeholder");
    let text = with("ca: certs/ca-cert.placeholder", &format!("ca: {}\n  data_dir: state", ca.display()))
        .replacen("  region: eu", "  region: eu\n  log_file: certs/a.log", 1);
    let config = run(&text).expect("valid");
    assert_eq!(config.mesh.ca, ca);
    assert_eq!(config.mesh.data_dir, base().join("state"));
    assert_eq!(config.common.log.file, Some(base().join("certs/a.log")));
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = with("node_id: a", "node_id: A_1\n  log_level: loud").replacen("exit: b", "exit: z", 1);
    let errors = errors(&text);
    assert_has(&errors, "common.node_id", "contains `A`");
    assert_has(&errors, "common.log_level", "unknown log level `loud`");
    assert_has(&errors, "routes[0].exit", "neither this node");
    let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![Some(2), Some(3), Some(15)]);
}

#[test]
fn logging_keys_take_json_and_their_bounds() {
    let text = with(
        "  region: eu",
        "  region: eu\n  log_level: fatal\n  log_file: node.log\n  log_format: json\n  log_max_bytes: 1048576\n  log_keep: 100",
    );
    let config = run(&text).expect("valid");
    let log = config.common.log.clone();
    assert_eq!((log.level, log.format), (LogLevel::Fatal.into(), LogFormat::Json));
    assert_eq!(log.file, Some(base().join("node.log")));
    assert_eq!((log.max_bytes, log.keep), (MIB, 100));
    let text = with("  region: eu", "  region: eu\n  log_max_bytes: 1099511627776\n  log_keep: 1");
    assert_eq!(run(&text).expect("valid").common.log.max_bytes, 1 << 40);
}

#[test]
fn every_bad_logging_key_is_named_with_its_line() {
    let text = with(
        "  region: eu",
        "  region: eu\n  log_file: no-such-dir/node.log\n  log_format: xml\n  log_max_bytes: 1000\n  log_keep: 0",
    );
    let found = errors(&text);
    assert_has(&found, "common.log_file", "directory");
    assert_has(&found, "common.log_file", "no-such-dir");
    assert_has(&found, "common.log_format", "unknown log format `xml` (expected text or json)");
    assert_has(&found, "common.log_max_bytes", "is 1000; must be 1048576 (1 MiB)");
    assert_has(&found, "common.log_keep", "is 0; must be 1 to 100");
    let lines: Vec<_> = found.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        lines,
        vec![
            ("common.log_file", Some(4)),
            ("common.log_format", Some(5)),
            ("common.log_max_bytes", Some(6)),
            ("common.log_keep", Some(7)),
        ]
    );
    let text = with("  region: eu", "  region: eu\n  log_max_bytes: 1099511627777\n  log_keep: 101");
    let too_big = errors(&text);
    assert_has(&too_big, "common.log_max_bytes", "1 TiB");
    assert_has(&too_big, "common.log_keep", "is 101");
}

#[test]
fn a_log_file_must_not_be_a_directory_or_blank() {
    let dir = errors(&with("  region: eu", "  region: eu\n  log_file: certs"));
    assert_has(&dir, "common.log_file", "is a directory");
    let blank = errors(&with("  region: eu", "  region: eu\n  log_file: \" \""));
    assert_has(&blank, "common.log_file", "must not be empty");
}

#[test]
fn node_ids_follow_dns_label_rules() {
    for good in ["a", "node-1", "0", &"x".repeat(63)] {
        assert!(check_node_id(good).is_ok(), "{good}");
    }
    for bad in ["", "A", "a_b", "a.b", "-a", "a-", &"x".repeat(64)] {
        assert!(check_node_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn common_requires_id_and_region_and_a_valid_admin_addr() {
    let text = with("  node_id: a\n  region: eu", "  region: \" \"\n  admin_addr: localhost:9901");
    let errors = errors(&text);
    assert_has(&errors, "common.node_id", "is required");
    assert_has(&errors, "common.region", "must not be empty");
    assert_has(&errors, "common.admin_addr", "not an IP:port");
}

#[test]
fn a_public_admin_address_needs_a_token_of_fair_length() {
    let public =
        with("  node_id: a\n  region: eu", "  node_id: a\n  region: eu\n  admin_addr: \"0.0.0.0:9901\"");
    assert_has(&errors(&public), "common.admin_addr", "common.admin_token");
    let short = with("  node_id: a\n  region: eu", "  node_id: a\n  region: eu\n  admin_token: short");
    assert_has(&errors(&short), "common.admin_token", "16 to 256");
    let token = "0123456789abcdef0123";
    let ok = with(
        "  node_id: a\n  region: eu",
        &format!("  node_id: a\n  region: eu\n  admin_addr: \"0.0.0.0:9901\"\n  admin_token: {token}"),
    );
    assert_eq!(run(&ok).expect("valid").common.admin_token.as_deref(), Some(token));
}

#[test]
fn peers_are_checked_for_names_types_and_addresses() {
    let peers = "  - name: b\n    type: tcp\n    address: b:443\n  - name: b\n  - name: a\n  - name: c\n    type: udp\n    address: c:0\n  - name: d\n    type: quic\n  - name: e\n    type: tcp\n    address: e:443\n    tcp_address: e:444\n  - name: f\n    address: f:7800\n    tcp_address: nope\n  - name: g\n    tcp_address: g:443\n";
    let text = with("  - name: b\n    address: \"10.0.0.2:7800\"\n", peers);
    let errors = errors(&text);
    assert_has(&errors, "peers[1].name", "duplicate name `b` (also peers[0])");
    assert_has(&errors, "peers[2].name", "this node's own id");
    assert_has(&errors, "peers[3].type", "unknown peer type `udp` (expected one of: auto, quic, tcp)");
    assert_has(&errors, "peers[3].address", "not in 1..65535");
    assert_has(&errors, "peers[4].type", "has no `address`");
    assert_has(&errors, "peers[5].tcp_address", "only for `type: auto`");
    assert_has(&errors, "peers[6].tcp_address", "nope");
    assert_has(&errors, "peers[7].tcp_address", "has no `address`");
    assert!(!errors.iter().any(|e| e.key == "peers[0].type"), "tcp is a transport: {errors:#?}");
}

#[test]
fn a_route_match_needs_exactly_one_known_selector() {
    let both = errors(&with("{ listener: web }", "{ listener: web, port: 8080 }"));
    assert_has(&both, "routes[0].match", "not both");
    let neither = errors(&with("{ listener: web }", "{}"));
    assert_has(&neither, "routes[0].match", "give one of");
    let unknown = errors(&with("{ listener: web }", "{ listener: api }"));
    assert_has(&unknown, "routes[0].match.listener", "no listener named `api`");
    let unbound = errors(&with("{ listener: web }", "{ port: 9090 }"));
    assert_has(&unbound, "routes[0].match.port", "no listener binds port 9090");
    let zero = errors(&with("{ listener: web }", "{ port: 0 }"));
    assert_has(&zero, "routes[0].match.port", "1..65535");
    assert!(run(&with("{ listener: web }", "{ port: 8080 }")).is_ok());
}

#[test]
fn route_targets_are_host_port_strings() {
    let list = run(&with("\"10.0.0.5:80\"", "[\"10.0.0.5:80\", \"db.internal:5432\", \"[::1]:80\"]"));
    assert_eq!(list.expect("valid").routes[0].targets.len(), 3);
    let bad = errors(&with("\"10.0.0.5:80\"", "[\"10.0.0.5:80\", \"10.0.0.256:80\", \"::1:80\"]"));
    assert_has(&bad, "routes[0].target[1]", "not a valid host name");
    assert_has(&bad, "routes[0].target[2]", "brackets");
    assert_has(&errors(&with("\"10.0.0.5:80\"", "[]")), "routes[0].target", "at least one");
    assert_has(&errors(&with("\"10.0.0.5:80\"", "example.com")), "routes[0].target", "port is missing");
    assert_has(&errors(&with("    target: \"10.0.0.5:80\"\n", "")), "routes[0].target", "is required");
}

#[test]
fn a_peer_name_as_the_only_target_is_a_proxy_chain() {
    let config = run(&with("    target: \"10.0.0.5:80\"\n    exit: b", "    target: b")).expect("chain");
    assert_eq!(config.routes[0].chain.as_deref(), Some("b"));
    assert!(config.routes[0].targets.is_empty());
    let with_exit = errors(&with("\"10.0.0.5:80\"", "b"));
    assert_has(&with_exit, "routes[0].target", "leave out `exit`, `via` and `paths`");
    let mixed = errors(&with("\"10.0.0.5:80\"", "[b, \"10.0.0.6:80\"]"));
    assert_has(&mixed, "routes[0].target[0]", "must be the route's only target");
}

#[test]
fn exit_is_this_node_or_a_peer() {
    let config = run(&with("exit: b", "exit: a")).expect("own id is a valid exit");
    assert_eq!(config.routes[0].exit, None);
    assert_has(
        &errors(&with("exit: b", "exit: c")),
        "routes[0].exit",
        "neither this node (`a`) nor a configured peer",
    );
}

#[test]
fn relay_paths_start_at_a_peer_and_name_no_node_twice() {
    let config = run(&with("exit: b", "exit: d\n    via: [b, c]")).expect("via");
    assert_eq!(
        (config.routes[0].exit.as_deref(), config.routes[0].paths.clone()),
        (Some("d"), vec![vec!["b".to_string(), "c".to_string()]])
    );
    let config = run(&with("exit: b", "exit: d\n    paths: [[b], [b, e]]")).expect("paths");
    assert_eq!(config.routes[0].paths.len(), 2);
    let cases = [
        ("exit: d\n    via: [b]\n    paths: [[b]]", "routes[0].via", "not both"),
        ("exit: d\n    via: [c]", "routes[0].via", "must be a configured peer"),
        ("exit: d\n    via: [b, a]", "routes[0].via", "appears twice"),
        ("exit: d\n    via: [b, d]", "routes[0].via", "appears twice"),
        ("exit: d\n    paths: [[b], []]", "routes[0].paths[1]", "at least one relay"),
        ("exit: a\n    via: [b]", "routes[0].exit", "must exit at another node"),
        ("exit: d", "routes[0].exit", "nor a configured peer"),
        ("exit: b\n    multipath: true", "routes[0].multipath", "needs several paths"),
        ("exit: a\n    multipath: true", "routes[0].multipath", "needs `exit` at another node"),
    ];
    for (route, key, needle) in cases {
        assert_has(&errors(&with("exit: b", route)), key, needle);
    }
    let long: Vec<String> = (0..15).map(|i| format!("n{i}")).collect();
    let text = with("exit: b", &format!("exit: d\n    via: [b, {}]", long.join(", ")));
    assert_has(&errors(&text), "routes[0].via", "longer than 16 nodes");
    assert!(run(&with("exit: b", "exit: b\n    via: []\n    multipath: false")).is_ok());
    let striped =
        run(&with("exit: b", "exit: d\n    paths: [[b], [b, e]]\n    multipath: true")).expect("multipath");
    assert!(striped.routes[0].multipath);
}

#[test]
fn a_route_without_via_needs_no_exit_but_one_with_via_does() {
    let text = with("    target: \"10.0.0.5:80\"\n    exit: b", "    target: \"10.0.0.5:80\"\n    via: [b]");
    assert_has(&errors(&text), "routes[0].exit", "needs an `exit`");
}

#[test]
fn listeners_need_unique_names_addresses_and_a_route() {
    let listeners = "  - name: web\n    bind: \"127.0.0.1:8080\"\n  - name: web\n    bind: \"127.0.0.1:8080\"\n  - name: api\n    bind: \"127.0.0.1:80800\"\n";
    let text = with("  - name: web\n    bind: \"127.0.0.1:8080\"\n", listeners);
    let errors = errors(&text);
    assert_has(&errors, "listeners[1].name", "duplicate name `web`");
    assert_has(&errors, "listeners[1].bind", "already bound by listeners[0]");
    assert_has(&errors, "listeners[2].bind", "not an IP:port");
    assert_has(&errors, "listeners[2]", "no route matches this listener");
}

#[test]
fn a_broken_match_does_not_also_blame_its_listener() {
    let errors = errors(&with("{ listener: web }", "{ listener: wbe }"));
    assert_has(&errors, "routes[0].match.listener", "no listener named `wbe`");
    assert!(!errors.iter().any(|e| e.key == "listeners[0]"), "{errors:#?}");
}

#[test]
fn route_names_are_unique() {
    let route = "  - name: r1\n    match: { port: 8080 }\n    target: \"x:1\"\nmesh:";
    assert_has(&errors(&with("mesh:", route)), "routes[1].name", "duplicate name `r1` (also routes[0])");
}

#[test]
fn mesh_certificates_must_exist() {
    let errors = errors(&with("key: certs/node-key.placeholder", "key: certs/missing.key").replacen(
        "  ca: certs/ca-cert.placeholder\n",
        "",
        1,
    ));
    assert_has(&errors, "mesh.key", "file not found");
    assert_has(&errors, "mesh.ca", "is required");
    assert_has(
        &self::errors(&with("cert: certs/node-cert.placeholder", "cert: certs")),
        "mesh.cert",
        "is not a file",
    );
}

#[test]
fn mesh_tcp_keys_are_checked() {
    let extra = "ca: certs/ca-cert.placeholder\n  tcp_bind: \"0.0.0.0\"\n  fallback_after: 0s\n  quic_probe_interval: soon";
    let errors = errors(&with("ca: certs/ca-cert.placeholder", extra));
    assert_has(&errors, "mesh.tcp_bind", "not an IP:port (or `off` for no TCP links)");
    assert_has(&errors, "mesh.fallback_after", "greater than zero");
    assert_has(&errors, "mesh.quic_probe_interval", "soon");
    let off = "ca: certs/ca-cert.placeholder\n  tcp_bind: \"off\"";
    let config = run(&with("ca: certs/ca-cert.placeholder", off)).expect("valid");
    assert_eq!(config.mesh.tcp_bind, crate::config::TcpBind::Off);
}

#[test]
fn mesh_timers_and_windows_are_consistent() {
    let extra = "ca: certs/ca-cert.placeholder\n  keepalive_interval: 30s\n  redial_min: 1m\n  stream_window: 128000000\n  send_window: 0\n  udp_buffer: 4294967296\n  advertise: nohost";
    let errors = errors(&with("ca: certs/ca-cert.placeholder", extra));
    assert_has(&errors, "mesh.link_idle_timeout", "must be longer than mesh.keepalive_interval");
    assert_has(&errors, "mesh.redial_min", "must not exceed mesh.redial_max");
    assert_has(&errors, "mesh.stream_window", "must not exceed mesh.connection_window");
    assert_has(&errors, "mesh.send_window", "greater than zero");
    assert_has(&errors, "mesh.udp_buffer", "must be at most");
    assert_has(&errors, "mesh.advertise", "port is missing");
    assert!(!errors.iter().any(|e| e.key == "mesh.ca"), "{errors:#?}");
}

#[test]
fn durations_and_flow_limits_are_capped() {
    let errors = run(&with("mesh:", "limits:\n  idle_timeout: \"800h\"\n  max_flows: 99999999999\nmesh:"))
        .expect_err("caps");
    assert_has(&errors, "limits.idle_timeout", "at most 30 days");
    assert_has(&errors, "limits.max_flows", "");
}

#[test]
fn durations_must_parse_and_be_positive() {
    let limits = "limits:\n  idle_timeout: 0s\n  drain_timeout: 30\n  header_timeout: 1.5s\nmesh:";
    let errors = errors(&with("mesh:", limits));
    assert_has(&errors, "limits.idle_timeout", "greater than zero");
    assert_has(&errors, "limits.drain_timeout", "no unit");
    assert!(!errors.iter().any(|e| e.key == "limits.header_timeout"), "{errors:#?}");
}

#[test]
fn a_sealing_node_takes_headers_large_enough_for_a_certificate() {
    let small = "limits:\n  max_header_bytes: 1024\nmesh:";
    assert_has(
        &errors(&with("mesh:", small)),
        "limits.max_header_bytes",
        "at least 2048 with mesh.e2e: required",
    );
    let unsealed = with("mesh:", "limits:\n  max_header_bytes: 1024\nmesh:\n  e2e: off");
    assert_eq!(run(&unsealed).expect("valid without sealing").limits.max_header_bytes, 1024);
    assert_has(
        &errors(&with("mesh:", "mesh:\n  e2e: maybe")),
        "mesh.e2e",
        "expected one of: required, preferred, off",
    );
}

#[test]
fn limits_are_range_checked_and_default_per_field() {
    let limits = "limits:\n  max_header_bytes: 10\n  max_flows: 0\n  max_streams_per_peer: 5000000000\n  max_subflows: 17\nmesh:";
    let errors = errors(&with("mesh:", limits));
    assert_has(&errors, "limits.max_header_bytes", "at least 64");
    assert_has(&errors, "limits.max_subflows", "at most 16");
    assert_has(&errors, "limits.max_flows", "greater than zero");
    assert_has(&errors, "limits.max_streams_per_peer", "at most");
    let config = run(&with("mesh:", "limits:\n  max_flows: 10\nmesh:")).expect("valid");
    assert_eq!(config.limits.max_flows, 10);
    assert_eq!(config.limits.drain_timeout, Limits::default().drain_timeout);
    assert_eq!(config.limits.max_subflows, 4);
}

#[test]
fn the_scheduler_section_needs_an_address() {
    let text = with("mesh:", "scheduler:\n  heartbeat_interval: 1s\nmesh:");
    assert_has(&errors(&text), "scheduler.address", "is required");
    let text = with("mesh:", "scheduler:\n  address: sched.example:7900\n  max_retries: 0\nmesh:");
    let scheduler = run(&text).expect("valid").scheduler.expect("present");
    assert_eq!(scheduler.addresses, ["sched.example:7900"]);
    assert_eq!(scheduler.max_retries, 0);
    assert_eq!(scheduler.connect_timeout, Duration::from_secs(5));
    assert_eq!(scheduler.heartbeat_interval, Duration::from_secs(10));
}

#[test]
fn several_schedulers_are_listed_under_addresses() {
    let text = with("mesh:", "scheduler:\n  addresses: [ \"s1.example:7900\", \"10.0.0.2:7900\" ]\nmesh:");
    let scheduler = run(&text).expect("valid").scheduler.expect("present");
    assert_eq!(scheduler.addresses, ["s1.example:7900", "10.0.0.2:7900"]);
    let both = with("mesh:", "scheduler:\n  address: a.example:1\n  addresses: [ \"b.example:1\" ]\nmesh:");
    assert_has(&errors(&both), "scheduler.addresses", "not both");
    let empty = with("mesh:", "scheduler:\n  addresses: []\nmesh:");
    assert_has(&errors(&empty), "scheduler.addresses", "at least one");
    let bad = with("mesh:", "scheduler:\n  addresses: [ \"ok.example:1\", \"no-port\" ]\nmesh:");
    assert_has(&errors(&bad), "scheduler.addresses[1]", "");
    let twice = with("mesh:", "scheduler:\n  addresses: [ \"a.example:1\", \"a.example:1\" ]\nmesh:");
    assert_has(&errors(&twice), "scheduler.addresses[1]", "listed twice");
}

#[test]
fn exit_policy_errors_name_the_pattern_index() {
    let text = with("mesh:", "exit_policy:\n  allow: [\"10.0.0.0/8\", \"10.0.0.0/99\"]\nmesh:");
    let errors = errors(&text);
    assert!(errors.iter().any(|e| e.key == "exit_policy.allow[1]"), "{errors:#?}");
    assert!(!errors.iter().any(|e| e.key == "exit_policy.allow[0]"), "{errors:#?}");
}

#[test]
fn validation_errors_carry_the_line_of_their_key() {
    let errors = errors(&with("{ listener: web }", "\n      listener: api"));
    let error = errors.iter().find(|e| e.key == "routes[0].match.listener").expect("reported");
    assert_eq!(error.line, Some(13));
}

#[test]
fn host_port_accepts_names_ipv4_and_bracketed_ipv6() {
    for good in ["a:1", "db.internal:5432", "10.0.0.1:65535", "[::1]:80", "under_score.example:80"] {
        assert_eq!(check_host_port(good), Ok(()), "{good}");
    }
    for bad in ["a", ":80", "a:", "a:0", "a:65536", "[::1]80", "[zz]:80", "-a:1", "a..b:1", "1.2.3.4.5:80"] {
        assert!(check_host_port(bad).is_err(), "{bad}");
    }
}

#[test]
fn an_unknown_congestion_controller_is_named_with_the_choices() {
    let errors =
        errors(&with("ca: certs/ca-cert.placeholder", "ca: certs/ca-cert.placeholder\n  congestion: vegas"));
    assert_has(
        &errors,
        "mesh.congestion",
        "unknown congestion controller `vegas` (expected one of: model, bbr",
    );
    let config =
        run(&with("ca: certs/ca-cert.placeholder", "ca: certs/ca-cert.placeholder\n  congestion: cubic"))
            .expect("cubic is a controller");
    assert_eq!(config.mesh.congestion, crate::config::Congestion::Cubic);
}

#[test]
fn a_buffer_budget_smaller_than_one_link_window_is_refused() {
    let text = format!("{VALID}limits:\n  max_buffered_bytes: 1000000\n");
    assert_has(&errors(&text), "limits.max_buffered_bytes", "must be at least one link window");
}

#[test]
fn nameservers_and_lookup_caps_are_checked_and_named() {
    let text = with(
        "mesh:",
        "exit_policy:\n  nameservers: [\"10.0.0.2\", \"[fd00::53]:5353\", \"dns.example\"]\nlimits:\n  max_lookups: 0\n  max_lookups_per_origin: 70000\nmesh:",
    );
    let errors = errors(&text);
    assert_has(&errors, "exit_policy.nameservers[2]", "expected an IP address");
    assert!(!errors.iter().any(|e| e.key.starts_with("exit_policy.nameservers[0")), "{errors:#?}");
    assert_has(&errors, "limits.max_lookups", "");
    assert_has(&errors, "limits.max_lookups_per_origin", "");
    let ok = run(&with("mesh:", "exit_policy:\n  nameservers: [\"10.0.0.2\", \"[fd00::53]:5353\"]\nmesh:"))
        .expect("valid");
    let want: Vec<std::net::SocketAddr> =
        vec!["10.0.0.2:53".parse().expect("addr"), "[fd00::53]:5353".parse().expect("addr")];
    assert_eq!(ok.nameservers, want, "port 53 unless given");
    assert_eq!((ok.limits.max_lookups, ok.limits.max_lookups_per_origin), (64, 8), "defaults");
}

#[test]
fn a_udp_listener_is_checked_and_its_limits_default() {
    let udp = "    bind: \"127.0.0.1:8080\"\n    protocol: udp";
    let config = run(&with("    bind: \"127.0.0.1:8080\"", udp)).expect("valid");
    assert_eq!(config.listeners[0].protocol, crate::config::ListenerProtocol::Udp);
    assert_eq!(config.limits.udp_idle_timeout, Duration::from_secs(60));
    assert_eq!(config.limits.max_udp_associations, 1024);
    assert_eq!(config.limits.max_datagram, 8972);
    let bad = "    bind: \"127.0.0.1:8080\"\n    protocol: sctp";
    assert_has(
        &errors(&with("    bind: \"127.0.0.1:8080\"", bad)),
        "listeners[0].protocol",
        "unknown listener protocol `sctp` (expected tcp or udp)",
    );
    let limits = "limits:\n  udp_idle_timeout: soon\n  max_udp_associations: 0\n  max_datagram: 65508\nmesh:";
    let errors = errors(&with("mesh:", limits));
    assert_has(&errors, "limits.udp_idle_timeout", "");
    assert_has(&errors, "limits.max_udp_associations", "greater than zero");
    assert_has(&errors, "limits.max_datagram", "at most 65507");
}

#[test]
fn a_tcp_and_a_udp_listener_may_share_an_address_but_two_udp_ones_may_not() {
    let two = "  - name: web\n    bind: \"127.0.0.1:8080\"\n  - name: dns\n    bind: \"127.0.0.1:8080\"\n    protocol: udp";
    let text = with("  - name: web\n    bind: \"127.0.0.1:8080\"", two).replace(
        "routes:\n",
        "routes:\n  - name: r0\n    match: { listener: dns }\n    target: \"10.0.0.5:53\"\n    exit: b\n",
    );
    let config = run(&text).expect("tcp and udp on one port");
    assert_eq!(config.listeners.len(), 2);
    let text = text.replacen(
        "    bind: \"127.0.0.1:8080\"\n  - name: dns",
        "    bind: \"127.0.0.1:8080\"\n    protocol: udp\n  - name: dns",
        1,
    );
    assert_has(
        &errors(&text),
        "listeners[1].bind",
        "udp address 127.0.0.1:8080 is already bound by listeners[0]",
    );
}

#[test]
fn a_udp_route_cannot_be_multipath_or_a_proxy_chain() {
    let udp = "    bind: \"127.0.0.1:8080\"\n    protocol: udp";
    let text = with("    bind: \"127.0.0.1:8080\"", udp)
        .replace("    exit: b\n", "    exit: b\n    via: [c]\n    multipath: true\n")
        .replace("peers:\n", "peers:\n  - name: c\n    address: \"10.0.0.3:7800\"\n");
    assert_has(&errors(&text), "routes[0].multipath", "cannot be multipath");
    let text = with("    bind: \"127.0.0.1:8080\"", udp)
        .replace("    target: \"10.0.0.5:80\"\n    exit: b\n", "    target: b\n");
    assert_has(&errors(&text), "routes[0].target", "a proxy chain (`target: <peer>`) carries TCP only");
}
