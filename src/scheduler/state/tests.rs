use super::*;

fn policy() -> Policy {
    Policy {
        objective: Objective::Latency,
        max_paths: 3,
        hysteresis: Hysteresis { margin: 0.1, hold: Duration::from_secs(5) },
        ttl: Duration::from_secs(300),
        dead_after: Duration::from_secs(15),
        pins: vec![],
        max_links: 32,
    }
}

fn reg(id: &str, routes: &[(&str, &str)]) -> Registration {
    Registration {
        node_id: id.into(),
        region: "r".into(),
        mesh_address: format!("{id}.example:7800"),
        peers: vec![],
        listeners: vec![],
        routes: routes.iter().map(|(r, e)| (r.to_string(), Some(e.to_string()))).collect(),
    }
}

fn link(peer: &str, rtt_ms: u64) -> LinkReport {
    LinkReport { peer: peer.into(), rtt_us: rtt_ms * 1000, loss_ppm: 0, throughput_bps: 0 }
}

/// a, b, d; a's route `web` exits at d. a-d: `ad` ms, a-b: `ab` ms, b-d: 10 ms.
fn mesh(ab: u64, ad: u64, t: Instant) -> MeshState {
    let mut m = MeshState::new(policy(), t);
    m.register(reg("a", &[("web", "d")]), t);
    m.register(reg("b", &[]), t);
    m.register(reg("d", &[]), t);
    report(&mut m, ab, ad, t);
    m
}

fn report(m: &mut MeshState, ab: u64, ad: u64, t: Instant) {
    m.report("a", vec![link("b", ab), link("d", ad)], vec![], t);
    m.report("b", vec![link("a", ab), link("d", 10)], vec![], t);
    m.report("d", vec![link("a", ad), link("b", 10)], vec![], t);
}

fn primary(sets: &[(String, InstructionSet)], node: &str) -> Option<Vec<String>> {
    let set = &sets.iter().find(|(n, _)| n == node)?.1;
    Some(set.routes.first()?.paths.first()?.relays.clone())
}

#[test]
fn the_faster_two_hop_path_beats_the_slow_direct_link() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    let sets = m.recompute(t, 1000);
    assert_eq!(primary(&sets, "a"), Some(vec!["b".to_string()]));
    let a = &sets.iter().find(|(n, _)| n == "a").expect("a").1;
    assert_eq!(
        (a.version, a.routes[0].paths.len()),
        (1_000_000, 2),
        "primary via b, direct as the alternative"
    );
    // Nothing changed: no new version is pushed.
    assert!(m.recompute(t + Duration::from_secs(1), 1001).is_empty());
}

#[test]
fn a_degraded_relay_loses_the_route_after_the_hold_time() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    m.recompute(t, 0);
    let later = |s: u64| t + Duration::from_secs(s);
    report(&mut m, 200, 80, later(1));
    assert!(m.recompute(later(1), 1).iter().all(|(n, _)| n != "a"), "held back by hysteresis");
    report(&mut m, 200, 80, later(7));
    let sets = m.recompute(later(7), 7);
    assert_eq!(primary(&sets, "a"), Some(vec![]), "direct after the hold time");
}

#[test]
fn near_equal_paths_do_not_flap() {
    let t = Instant::now();
    let mut m = mesh(10, 22, t);
    let first = primary(&m.recompute(t, 0), "a");
    for i in 1..200u64 {
        let now = t + Duration::from_secs(i);
        // Direct and via b take turns being slightly better (20 ms vs 19-21 ms).
        report(&mut m, if i % 2 == 0 { 9 } else { 11 }, 20, now);
        assert!(m.recompute(now, i).iter().all(|(n, _)| n != "a"), "route moved at {i}: first {first:?}");
    }
}

#[test]
fn a_silent_node_drops_out_of_the_paths() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    m.recompute(t, 0);
    let now = t + Duration::from_secs(20);
    m.report("a", vec![link("b", 10), link("d", 80)], vec![], now);
    m.report("d", vec![link("a", 80)], vec![], now);
    let sets = m.recompute(now, 20);
    assert_eq!(primary(&sets, "a"), Some(vec![]), "b has been silent past node_dead_after");
}

#[test]
fn an_operator_pin_overrides_the_computation() {
    let t = Instant::now();
    let mut m = MeshState::new(
        Policy { pins: vec![Pin { node: "a".into(), route: "web".into(), relays: vec![] }], ..policy() },
        t,
    );
    m.register(reg("a", &[("web", "d")]), t);
    m.register(reg("b", &[]), t);
    m.register(reg("d", &[]), t);
    report(&mut m, 10, 80, t);
    assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec![]));
}

#[test]
fn nodes_missing_from_a_config_are_introduced_when_a_path_uses_them() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    let sets = m.recompute(t, 0);
    let a = &sets.iter().find(|(n, _)| n == "a").expect("a").1;
    let intro: Vec<&str> = a.nodes.iter().map(|n| n.node_id.as_str()).collect();
    // a's config lists no peers: its primary starts at b, its direct alternative at d.
    assert_eq!(intro, vec!["b", "d"]);
}

#[test]
fn versions_keep_growing_across_a_scheduler_restart() {
    let t = Instant::now();
    let before = mesh(10, 80, t).recompute(t, 1000);
    let after = mesh(10, 80, t).recompute(t, 1001);
    let version =
        |sets: &[(String, InstructionSet)]| sets.iter().find(|(n, _)| n == "a").map(|(_, s)| s.version);
    assert!(version(&after) > version(&before));
}

#[test]
fn a_route_with_nothing_measured_goes_direct_so_the_link_gets_made() {
    let t = Instant::now();
    let mut m = MeshState::new(policy(), t);
    m.register(reg("a", &[("web", "d")]), t);
    m.register(reg("d", &[]), t);
    let sets = m.recompute(t, 0);
    assert_eq!(primary(&sets, "a"), Some(vec![]));
    let a = &sets.iter().find(|(n, _)| n == "a").expect("a").1;
    assert_eq!(a.nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(), vec!["d"]);
}

#[test]
fn a_link_only_one_end_reports_does_not_count() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    // m claims a free link to everyone; nobody confirms it.
    m.register(reg("m", &[]), t);
    m.report("m", vec![link("a", 0), link("d", 0)], vec![], t);
    let sets = m.recompute(t, 0);
    assert_eq!(primary(&sets, "a"), Some(vec!["b".to_string()]));
}

#[test]
fn a_route_whose_exit_changed_starts_over_instead_of_looping() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    m.recompute(t, 0);
    // a's route now exits at b: the old path through b must not be kept (a -> b -> b).
    m.register(reg("a", &[("web", "b")]), t);
    report(&mut m, 10, 80, t);
    let sets = m.recompute(t, 1);
    assert_eq!(primary(&sets, "a"), Some(vec![]));
}

#[test]
fn a_node_holding_a_higher_version_gets_a_newer_set() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    m.recompute(t, 0);
    m.subscribed("a", u64::MAX / 2);
    let sets = m.recompute(t, 1);
    let a = &sets.iter().find(|(n, _)| n == "a").expect("resent").1;
    assert!(a.version > u64::MAX / 2);
}

#[test]
fn a_pin_that_would_loop_is_ignored() {
    let t = Instant::now();
    let pins = vec![Pin { node: "a".into(), route: "web".into(), relays: vec!["d".into()] }];
    let mut m = MeshState::new(Policy { pins, ..policy() }, t);
    m.register(reg("a", &[("web", "d")]), t);
    m.register(reg("b", &[]), t);
    m.register(reg("d", &[]), t);
    report(&mut m, 10, 80, t);
    assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec!["b".to_string()]));
}

#[test]
fn node_snapshots_show_registration_liveness_and_the_issued_version() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    m.recompute(t, 1000);
    let later = t + Duration::from_secs(20);
    m.heartbeat("a", later);
    let nodes = m.node_snapshots(later, |id| id == "a");
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b", "d"]);
    let a = &nodes[0];
    assert_eq!((a.region.as_str(), a.mesh_address.as_str()), ("r", "a.example:7800"));
    assert_eq!((a.connected, a.alive, a.routes, a.links), (true, true, 1, 2));
    assert_eq!((a.last_seen_secs, a.last_report_secs), (0.0, Some(20.0)));
    assert_eq!(a.instruction_version, 1_000_000);
    let b = &nodes[1];
    assert_eq!((b.connected, b.alive, b.last_seen_secs), (false, false, 20.0), "silent past node_dead_after");
    assert_eq!(b.instruction_version, 1_000_000, "b originates no route: it got an empty set");
    m.register(reg("c", &[]), later);
    let c = m.node_snapshots(later, |_| false).into_iter().find(|n| n.id == "c").expect("c");
    assert_eq!((c.instruction_version, c.last_report_secs, c.alive), (0, None, true), "nothing issued yet");
}

#[test]
fn link_snapshots_list_each_pair_once_with_its_state_and_use() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    // m claims a link to a that a does not confirm.
    m.register(reg("m", &[]), t);
    m.report("m", vec![link("a", 1)], vec![], t);
    m.report(
        "b",
        vec![
            LinkReport { peer: "a".into(), rtt_us: 12_000, loss_ppm: 5_000, throughput_bps: 700 },
            link("d", 10),
        ],
        vec![],
        t,
    );
    m.recompute(t, 0);
    let links = m.link_snapshots(t + Duration::from_secs(1));
    let pairs: Vec<(&str, &str, LinkState)> =
        links.iter().map(|l| (l.a.as_str(), l.b.as_str(), l.state)).collect();
    assert_eq!(
        pairs,
        vec![
            ("a", "b", LinkState::Counted),
            ("a", "d", LinkState::Counted),
            ("a", "m", LinkState::OneSided),
            ("b", "d", LinkState::Counted),
        ]
    );
    let ab = &links[0];
    assert_eq!(ab.reported_by, vec!["a", "b"]);
    assert_eq!(
        (ab.rtt_ms, ab.loss, ab.throughput_bytes_per_sec),
        (12.0, 0.005, Some(700)),
        "the worse report; a measured no throughput, so b's figure counts (it is below what an unmeasured link is assumed to carry)"
    );
    assert_eq!(ab.age_secs, 1.0);
    // a's route goes a-b-d with a-d as the alternative: every counted link is on a path.
    assert!(links.iter().filter(|l| l.state == LinkState::Counted).all(|l| l.used), "{links:?}");
    assert_eq!((links[2].reported_by.clone(), links[2].used), (vec!["m".to_string()], false));
    // Past node_dead_after, both ends still report a-b but the reports are old.
    let stale = m.link_snapshots(t + Duration::from_secs(30));
    assert!(
        stale.iter().filter(|l| l.reported_by.len() == 2).all(|l| l.state == LinkState::Stale),
        "{stale:?}"
    );
}

#[test]
fn route_snapshots_show_the_issued_paths_with_weights_and_costs() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    assert!(m.route_snapshots(t).is_empty(), "nothing issued yet");
    m.recompute(t, 1000);
    let routes = m.route_snapshots(t);
    assert_eq!(routes.len(), 1, "{routes:?}");
    let r = &routes[0];
    assert_eq!((r.node.as_str(), r.route.as_str(), r.exit.as_str()), ("a", "web", "d"));
    assert_eq!(
        (r.objective, r.pinned, r.instruction_version, r.issued_at_unix),
        ("latency", false, 1_000_000, 1000)
    );
    let hops: Vec<Vec<String>> = r.paths.iter().map(|p| p.hops.clone()).collect();
    assert_eq!(hops, vec![vec!["a", "b", "d"], vec!["a", "d"]]);
    assert_eq!(r.paths[0].relays, vec!["b"]);
    assert_eq!((r.paths[0].cost, r.paths[1].cost), (Some(20.0), Some(80.0)));
    let total: f64 = r.paths.iter().map(|p| p.weight).sum();
    assert!((total - 1.0).abs() < 1e-9, "{:?}", r.paths);
    // Once the links are dead, the issued paths are still shown, without a cost.
    let later = m.route_snapshots(t + Duration::from_secs(30));
    assert_eq!(later[0].paths[0].cost, None);
}

#[test]
fn a_pinned_route_says_so() {
    let t = Instant::now();
    let pins = vec![Pin { node: "a".into(), route: "web".into(), relays: vec![] }];
    let mut m = MeshState::new(Policy { pins, ..policy() }, t);
    m.register(reg("a", &[("web", "d")]), t);
    m.register(reg("d", &[]), t);
    m.recompute(t, 0);
    let routes = m.route_snapshots(t);
    assert!(routes[0].pinned && routes[0].paths[0].relays.is_empty(), "{routes:?}");
    assert_eq!(routes[0].paths[0].cost, None, "nothing measured");
}

#[test]
fn each_pair_is_introduced_once_to_its_lower_id_and_a_new_node_at_once() {
    let t = Instant::now();
    let mut m = MeshState::new(policy(), t);
    for id in ["a", "b", "c"] {
        m.register(reg(id, &[]), t);
    }
    let intros = |sets: &[(String, InstructionSet)], node: &str| -> Option<Vec<String>> {
        let set = &sets.iter().find(|(n, _)| n == node)?.1;
        Some(set.nodes.iter().map(|n| n.node_id.clone()).collect())
    };
    let sets = m.recompute(t, 0);
    assert_eq!(intros(&sets, "a"), Some(vec!["b".to_string(), "c".to_string()]));
    assert_eq!(intros(&sets, "b"), Some(vec!["c".to_string()]));
    assert_eq!(intros(&sets, "c"), Some(vec![]), "the highest id dials no one: the others dial it");
    // A node that joins later is news for every lower id at the next recompute.
    m.register(reg("d", &[]), t);
    let sets = m.recompute(t, 1);
    for lower in ["a", "b", "c"] {
        assert!(intros(&sets, lower).is_some_and(|i| i.contains(&"d".to_string())), "{lower} meets d");
    }
}

/// a, b, d as in `mesh`, under `objective`, a-b and b-d 10 ms, a-d 20 ms. The direct link
/// a-d carries 10 MB/s; the links through b carry only keepalives (100 B/s).
fn busy_direct_mesh(objective: Objective, t: Instant) -> MeshState {
    let mut m = MeshState::new(Policy { objective, ..policy() }, t);
    m.register(reg("a", &[("web", "d")]), t);
    m.register(reg("b", &[]), t);
    m.register(reg("d", &[]), t);
    let l = |peer: &str, rtt_ms: u64, throughput_bps: u64| LinkReport {
        peer: peer.into(),
        rtt_us: rtt_ms * 1000,
        loss_ppm: 0,
        throughput_bps,
    };
    m.report("a", vec![l("b", 10, 100), l("d", 20, 10_000_000)], vec![], t);
    m.report("b", vec![l("a", 10, 100), l("d", 10, 100)], vec![], t);
    m.report("d", vec![l("a", 20, 10_000_000), l("b", 10, 100)], vec![], t);
    m
}

fn claims(m: &mut MeshState, node: &str, caps: &[(&str, u64)], t: Instant) {
    let links = caps.iter().map(|(p, c)| LinkCapacity { peer: p.to_string(), capacity_bps: *c }).collect();
    m.capacity(node, links, t);
}

/// Capacity claims of both ends of every link: a-d can carry 2 MB/s, the links through b
/// 50 MB/s.
fn claim_all(m: &mut MeshState, t: Instant) {
    claims(m, "a", &[("b", 50_000_000), ("d", 2_000_000)], t);
    claims(m, "b", &[("a", 50_000_000), ("d", 50_000_000)], t);
    claims(m, "d", &[("a", 2_000_000), ("b", 50_000_000)], t);
}

#[test]
fn bandwidth_and_balanced_objectives_follow_capacity_not_traffic() {
    let balanced = Objective::Balanced { latency: 1.0, loss: 1.0, bandwidth: 1.0 };
    for objective in [Objective::Bandwidth, balanced] {
        let t = Instant::now();
        // No capacity reported (cubic, older nodes): throughput decides, as before.
        let mut m = busy_direct_mesh(objective, t);
        assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec![]), "{objective:?}: by traffic");
        // Both ends of every link claim a capacity: the idle but wide path wins.
        let mut m = busy_direct_mesh(objective, t);
        claim_all(&mut m, t);
        assert_eq!(
            primary(&m.recompute(t, 0), "a"),
            Some(vec!["b".to_string()]),
            "{objective:?}: by capacity"
        );
        let links = m.link_snapshots(t);
        let ad = links.iter().find(|l| (l.a.as_str(), l.b.as_str()) == ("a", "d")).expect("a-d");
        assert_eq!(
            (ad.capacity_bytes_per_sec, ad.throughput_bytes_per_sec),
            (Some(2_000_000), Some(10_000_000))
        );
        assert_eq!(ad.bandwidth_mbps, 16.0);
    }
}

#[test]
fn the_lower_of_two_capacity_claims_counts() {
    let t = Instant::now();
    let mut m = busy_direct_mesh(Objective::Bandwidth, t);
    claim_all(&mut m, t);
    // b claims a huge capacity towards a; a measured 50 MB/s: 50 MB/s it is.
    claims(&mut m, "b", &[("a", u64::MAX / 16), ("d", 50_000_000)], t);
    let ab = m.link_snapshots(t).into_iter().find(|l| l.b == "b").expect("a-b");
    assert_eq!((ab.capacity_bytes_per_sec, ab.bandwidth_mbps), (Some(50_000_000), 400.0));
}

#[test]
fn one_end_s_capacity_claim_may_lower_a_link_but_never_raise_it() {
    let t = Instant::now();
    let mut m = busy_direct_mesh(Objective::Bandwidth, t);
    let ab = |m: &MeshState, now| m.link_snapshots(now).into_iter().find(|l| l.b == "b").expect("a-b");
    // Only b claims: a-b stays at its throughput (100 B/s), not b's 50 MB/s.
    claims(&mut m, "b", &[("a", 50_000_000), ("d", 50_000_000)], t);
    assert_eq!(ab(&m, t).bandwidth_mbps, 0.0008);
    assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec![]), "b alone cannot draw the route");
    // A claim below the fallback lowers it: a-d by d's claim of 1 MB/s, not 10 MB/s of traffic.
    claims(&mut m, "d", &[("a", 1_000_000)], t);
    let ad = m.link_snapshots(t).into_iter().find(|l| l.b == "d" && l.a == "a").expect("a-d");
    assert_eq!(ad.bandwidth_mbps, 8.0);
    // Claims older than node_dead_after count no more, while fresh reports still do.
    let later = t + Duration::from_secs(16);
    let mut m = busy_direct_mesh(Objective::Bandwidth, t);
    claim_all(&mut m, t);
    m.report("a", vec![link("b", 10), link("d", 20)], vec![], later);
    m.report("b", vec![link("a", 10), link("d", 10)], vec![], later);
    m.report("d", vec![link("a", 20), link("b", 10)], vec![], later);
    assert_eq!((ab(&m, later).capacity_bytes_per_sec, ab(&m, later).bandwidth_mbps), (None, 1000.0));
}

#[test]
fn capacity_claims_only_for_reported_links_are_kept() {
    let t = Instant::now();
    let mut m = busy_direct_mesh(Objective::Bandwidth, t);
    claims(&mut m, "a", &[("b", 1), ("ghost", 2), ("another", 3)], t);
    assert_eq!(m.nodes["a"].capacities.0.len(), 1);
}

#[test]
fn a_link_over_tcp_is_shown_so_and_only_reported_links_are_kept() {
    let t = Instant::now();
    let mut m = busy_direct_mesh(Objective::Latency, t);
    m.transports("a", vec!["d".into(), "ghost".into()], t);
    assert_eq!(m.nodes["a"].over_tcp.len(), 1);
    let transport = |m: &MeshState, a: &str, b: &str| {
        m.link_snapshots(t).into_iter().find(|l| l.a == a && l.b == b).map(|l| l.transport)
    };
    assert_eq!(transport(&m, "a", "d"), Some("tcp"));
    assert_eq!(transport(&m, "a", "b"), Some("quic"));
    // It is measured and counted like any other link.
    assert!(m.link_snapshots(t).iter().all(|l| l.state == LinkState::Counted));
    m.transports("a", vec![], t);
    assert_eq!(transport(&m, "a", "d"), Some("quic"), "a later list replaces the earlier");
}

#[test]
fn an_idle_end_is_unknown_not_agreement_with_the_other_end_s_throughput() {
    let t = Instant::now();
    let mut m = busy_direct_mesh(Objective::Bandwidth, t);
    // b claims it carried u64::MAX bytes per second to d, where d measured nothing.
    let l = |peer: &str, throughput_bps: u64| LinkReport {
        peer: peer.into(),
        rtt_us: 10_000,
        loss_ppm: 0,
        throughput_bps,
    };
    m.report("b", vec![l("a", 0), l("d", u64::MAX)], vec![], t);
    m.report("d", vec![LinkReport { rtt_us: 20_000, ..l("a", 10_000_000) }, l("b", 0)], vec![], t);
    let links = m.link_snapshots(t);
    let bd = links.iter().find(|l| (l.a.as_str(), l.b.as_str()) == ("b", "d")).expect("b-d");
    assert_eq!(bd.bandwidth_mbps, UNMEASURED_MBPS, "one end's figure alone never raises a link");
    // An honest end's measurement still counts when the other end reports 0.
    m.report("b", vec![l("a", 0), l("d", 0)], vec![], t);
    m.report("d", vec![LinkReport { rtt_us: 20_000, ..l("a", 10_000_000) }, l("b", 1_000)], vec![], t);
    let bd =
        m.link_snapshots(t).into_iter().find(|l| (l.a.as_str(), l.b.as_str()) == ("b", "d")).expect("b-d");
    assert_eq!((bd.throughput_bytes_per_sec, bd.bandwidth_mbps), (Some(1_000), 0.008));
    // Both ends claim an absurd capacity: it counts as the plausible maximum.
    claims(&mut m, "b", &[("d", u64::MAX)], t);
    claims(&mut m, "d", &[("b", u64::MAX)], t);
    let bd =
        m.link_snapshots(t).into_iter().find(|l| (l.a.as_str(), l.b.as_str()) == ("b", "d")).expect("b-d");
    assert_eq!(bd.capacity_bytes_per_sec, Some(MAX_PLAUSIBLE_BPS));
    assert_eq!(bd.bandwidth_mbps, 100_000.0);
}

#[test]
fn a_report_is_cut_to_one_entry_per_registered_peer() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    // 20k names nobody registered and 20k copies of a real peer, from b.
    let mut links: Vec<LinkReport> = (0..20_000).map(|i| link(&format!("x{i}"), 1)).collect();
    links.extend((0..20_000).map(|_| link("d", 10)));
    links.push(link("a", 10));
    links.push(link("b", 0));
    m.report("b", links, vec![RouteReport { route: "nope".into(), flows: 1, bytes: 1 }], t);
    let b = m.nodes.get("b").expect("b");
    assert_eq!(b.links.len(), 2 + MAX_UNREGISTERED_PEERS, "a, d and a few unregistered names; never itself");
    assert!(b.route_totals.is_empty(), "a route it did not register is not counted");
    assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec!["b".to_string()]), "the computation is unchanged");
}

#[test]
fn routes_to_one_exit_share_one_path_search() {
    let t = Instant::now();
    let mut m = MeshState::new(policy(), t);
    let routes: Vec<(String, String)> = (0..200).map(|i| (format!("r{i}"), "d".to_string())).collect();
    let routes: Vec<(&str, &str)> = routes.iter().map(|(r, e)| (r.as_str(), e.as_str())).collect();
    m.register(reg("a", &routes), t);
    m.register(reg("b", &[]), t);
    m.register(reg("d", &[]), t);
    report(&mut m, 10, 80, t);
    let sets = m.recompute(t, 0);
    let a = &sets.iter().find(|(n, _)| n == "a").expect("a").1;
    assert_eq!(a.routes.len(), 200);
    assert!(a.routes.iter().all(|r| r.paths[0].relays == ["b"]));
}

#[test]
fn a_node_that_does_not_relay_is_never_on_a_path() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec!["b".to_string()]));
    m.outcomes("b", false, vec![], t);
    let sets = m.recompute(t, 1);
    let a = &sets.iter().find(|(n, _)| n == "a").expect("a").1;
    assert_eq!(a.routes[0].paths.len(), 1, "no alternative through b either: {:?}", a.routes[0].paths);
    assert!(a.routes[0].paths[0].relays.is_empty());
    // Relaying again: b's path wins back after the hold.
    m.outcomes("b", true, vec![], t);
    let _ = m.recompute(t, 2);
    let later = t + Duration::from_secs(6);
    report(&mut m, 10, 80, later);
    assert_eq!(primary(&m.recompute(later, 3), "a"), Some(vec!["b".to_string()]), "relaying again");
}

fn outcome(relays: &[&str], flows: u64, failed: u64) -> PathOutcome {
    PathOutcome { route: "web".into(), relays: relays.iter().map(|r| r.to_string()).collect(), flows, failed }
}

#[test]
fn a_relay_that_fails_an_origin_s_flows_is_avoided_by_that_origin_for_a_while() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    m.register(reg("c", &[("web", "d")]), t);
    m.report("c", vec![link("b", 10), link("d", 80)], vec![], t);
    m.report("b", vec![link("a", 10), link("d", 10), link("c", 10)], vec![], t);
    m.report("d", vec![link("a", 80), link("b", 10), link("c", 80)], vec![], t);
    let sets = m.recompute(t, 0);
    assert_eq!((primary(&sets, "a"), primary(&sets, "c")), (Some(vec!["b".into()]), Some(vec!["b".into()])));
    // A few failures among many flows, or on a route a does not have, change nothing.
    m.outcomes(
        "a",
        true,
        vec![outcome(&["b"], 20, 2), PathOutcome { route: "x".into(), ..outcome(&["b"], 5, 5) }],
        t,
    );
    assert!(m.recompute(t, 1).is_empty());
    // Then all of a's flows through b fail; failures add up over reports (and the good
    // flows fade): on the second such report a goes direct at once (no hold); c keeps b.
    m.outcomes("a", true, vec![outcome(&["b"], 6, 6)], t);
    assert!(m.recompute(t, 2).is_empty());
    m.outcomes("a", true, vec![outcome(&["b"], 6, 6)], t);
    let sets = m.recompute(t, 2);
    assert_eq!(primary(&sets, "a"), Some(vec![]));
    assert!(primary(&sets, "c").is_none(), "c's set is unchanged");
    // Until the suspicion runs out; then b, still the faster path, comes back (after the hold).
    let later = t + suspects::SUSPECT_FOR + Duration::from_secs(1);
    report(&mut m, 10, 80, later);
    m.report("c", vec![link("b", 10), link("d", 80)], vec![], later);
    let _ = m.recompute(later, 3);
    let after_hold = later + Duration::from_secs(6);
    report(&mut m, 10, 80, after_hold);
    m.report("c", vec![link("b", 10), link("d", 80)], vec![], after_hold);
    assert_eq!(primary(&m.recompute(after_hold, 4), "a"), Some(vec!["b".to_string()]));
}

#[test]
fn a_suspect_relay_is_still_used_when_it_is_the_only_way() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    // a and d have no direct link: only b joins them.
    m.report("a", vec![link("b", 10)], vec![], t);
    m.report("d", vec![link("b", 10)], vec![], t);
    m.outcomes("a", true, vec![outcome(&["b"], 3, 3)], t);
    assert_eq!(primary(&m.recompute(t, 0), "a"), Some(vec!["b".to_string()]));
}

#[test]
fn an_outcome_naming_a_relay_many_times_is_skipped_cheaply() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    // 65,000 copies of b: a path no header could carry.
    let relays: Vec<&str> = std::iter::repeat_n("b", 65_000).collect();
    m.outcomes("a", true, vec![outcome(&relays, 9, 9), outcome(&["b", "b"], 9, 9), outcome(&["a"], 9, 9)], t);
    assert!(m.nodes["a"].suspects.avoided(t).is_empty(), "none of them counts");
}

#[test]
fn alternatives_shown_avoid_nodes_that_do_not_relay() {
    let t = Instant::now();
    let mut m = mesh(10, 80, t);
    let both = m.alternatives(&[("a".into(), "d".into())], 3, t);
    assert!(both[0].contains(&vec!["a".to_string(), "b".into(), "d".into()]), "{both:?}");
    m.outcomes("b", false, vec![], t);
    let direct = m.alternatives(&[("a".into(), "d".into())], 3, t);
    assert_eq!(direct, vec![vec![vec!["a".to_string(), "d".into()]]], "b relays no more");
}
