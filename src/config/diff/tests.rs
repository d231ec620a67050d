use std::path::Path;

use super::*;

const BASE: &str = "\
common: { node_id: a, region: eu }
listeners:
  - { name: web, bind: \"127.0.0.1:8080\" }
  - { name: db, bind: \"127.0.0.1:8081\" }
peers:
  - { name: b, address: \"10.0.0.2:7800\" }
  - { name: c, address: \"10.0.0.3:7800\" }
routes:
  - { name: web, match: { listener: web }, target: \"10.0.0.5:80\", exit: b }
  - { name: db, match: { listener: db }, target: \"10.0.0.6:5432\", exit: c }
exit_policy: { allow: [\"10.0.0.0/8\"] }
mesh: { cert: certs/node-cert.placeholder, key: certs/node-key.placeholder, ca: certs/ca-cert.placeholder }
";

fn config(text: &str) -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    crate::config::parse(text, &dir).unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

#[test]
fn the_same_config_changes_nothing() {
    let d = diff(&config(BASE), &config(BASE)).expect("no restart");
    assert!(d.is_empty());
    assert_eq!(d.summary(), "no change");
}

#[test]
fn listeners_peers_routes_and_policy_are_told_apart() {
    let new = BASE
        .replace(
            "  - { name: db, bind: \"127.0.0.1:8081\" }\n",
            "  - { name: api, bind: \"127.0.0.1:8090\" }\n",
        )
        .replace("{ name: web, bind: \"127.0.0.1:8080\" }", "{ name: web, bind: \"127.0.0.1:8088\" }")
        .replace(
            "  - { name: c, address: \"10.0.0.3:7800\" }\n",
            "  - { name: e, address: \"10.0.0.9:7800\" }\n",
        )
        .replace("10.0.0.2:7800", "10.0.0.22:7800")
        .replace(
            "{ name: db, match: { listener: db }, target: \"10.0.0.6:5432\", exit: c }",
            "{ name: api, match: { listener: api }, target: \"10.0.0.7:80\", exit: e }",
        )
        .replace("10.0.0.0/8", "10.1.0.0/16");
    let d = diff(&config(BASE), &config(&new)).expect("no restart");
    let names = |v: &[ListenerConfig]| v.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&d.listeners_added), ["api"]);
    assert_eq!(d.listeners_removed, ["db"]);
    assert_eq!(names(&d.listeners_rebound), ["web"]);
    assert_eq!(d.peers_added.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["e"]);
    assert_eq!(d.peers_removed, ["c"]);
    assert_eq!(d.peers_changed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(d.routes_changed, ["api", "db"]);
    assert!(d.exit_policy_changed);
    assert!(d.summary().contains("listeners added [api]"), "{}", d.summary());
}

#[test]
fn settings_only_a_restart_applies_are_named_and_nothing_is_applied() {
    let new =
        BASE.replace("region: eu", "region: us").replace("mesh: {", "limits: { max_flows: 10 }\nmesh: {");
    assert_eq!(diff(&config(BASE), &config(&new)), Err(vec!["common", "limits"]));
    let resolvers =
        BASE.replace("allow: [\"10.0.0.0/8\"]", "allow: [\"10.0.0.0/8\"], nameservers: [\"10.0.0.53\"]");
    assert_eq!(diff(&config(BASE), &config(&resolvers)), Err(vec!["exit_policy.nameservers"]));
}

#[test]
fn reordered_routes_count_as_changed() {
    let lines: Vec<&str> = BASE.lines().collect();
    let (web, db) = (lines[8], lines[9]);
    let swapped = BASE.replace(&format!("{web}\n{db}"), &format!("{db}\n{web}"));
    let d = diff(&config(BASE), &config(&swapped)).expect("no restart");
    assert_eq!(d.routes_changed, ["db", "web"]);
}

#[test]
fn a_listener_that_changes_protocol_is_bound_anew() {
    let new = BASE.replace(
        "{ name: db, bind: \"127.0.0.1:8081\" }",
        "{ name: db, bind: \"127.0.0.1:8081\", protocol: udp }",
    );
    let d = diff(&config(BASE), &config(&new)).expect("no restart");
    assert_eq!(d.listeners_rebound.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["db"]);
    assert!(d.listeners_added.is_empty() && d.listeners_removed.is_empty());
}
