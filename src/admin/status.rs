//! `proxy status`: a node's peers, listeners, routes and busiest flows as aligned tables,
//! rendered from the admin API's JSON (so it works against any node that serves it); with
//! `--scheduler`, the scheduler's nodes, links and routes the same way.

use serde_json::Value;

/// How many flows the status shows.
pub const BUSIEST_FLOWS: usize = 10;

/// The admin API's answers `proxy status` is made of.
pub struct StatusInput {
    /// `/api/stats`.
    pub stats: Value,
    /// `/api/peers`.
    pub peers: Value,
    /// `/api/listeners`.
    pub listeners: Value,
    /// `/api/routes`.
    pub routes: Value,
    /// `/api/flows`.
    pub flows: Value,
}

/// How long `proxy status` waits for each answer.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the admin API at `admin` for everything the status page shows.
pub async fn fetch(admin: &str, token: Option<&str>) -> Result<StatusInput, String> {
    let admin = dialable(admin);
    Ok(StatusInput {
        stats: get_json(&admin, "/api/stats", token).await?,
        peers: get_json(&admin, "/api/peers", token).await?,
        listeners: get_json(&admin, "/api/listeners", token).await?,
        routes: get_json(&admin, "/api/routes", token).await?,
        flows: get_json(&admin, &format!("/api/flows?limit={BUSIEST_FLOWS}"), token).await?,
    })
}

/// The scheduler's admin answers `proxy status --scheduler` is made of.
pub struct SchedulerStatusInput {
    /// `/api/nodes`.
    pub nodes: Value,
    /// `/api/links`.
    pub links: Value,
    /// `/api/routes`.
    pub routes: Value,
}

/// Asks the scheduler's admin API at `admin` for its nodes, links and routes.
pub async fn fetch_scheduler(admin: &str, token: Option<&str>) -> Result<SchedulerStatusInput, String> {
    let admin = dialable(admin);
    Ok(SchedulerStatusInput {
        nodes: get_json(&admin, "/api/nodes", token).await?,
        links: get_json(&admin, "/api/links", token).await?,
        routes: get_json(&admin, "/api/routes", token).await?,
    })
}

/// An admin API bound to every address answers on loopback; its Host check wants that
/// name.
fn dialable(admin: &str) -> String {
    match admin.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        _ => admin.to_string(),
    }
}

/// GET `path` and parse the answer as JSON; any status but 200 is an error.
async fn get_json(admin: &str, path: &str, token: Option<&str>) -> Result<Value, String> {
    let (status, body) =
        crate::admin::http::get(admin, path, token, TIMEOUT).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{path}: HTTP {status}: {}", body.trim()));
    }
    serde_json::from_str::<Value>(&body).map_err(|e| format!("{path}: not JSON: {e}"))
}

/// Aligned columns, two spaces apart, a header row first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut lines = vec![headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    lines.extend(rows.iter().cloned());
    crate::text_table::align(&lines)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn path(v: &Value) -> String {
    let nodes: Vec<String> = list(v).iter().map(text).collect();
    if nodes.is_empty() { "-".into() } else { nodes.join(">") }
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Seconds as `45s`, `12m3s` or `5h2m`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// The UDP line under the header, on a node that has carried UDP (empty otherwise, so a
/// TCP-only node's page stays as it was): associations, datagrams each way, drops.
fn udp_line(u: &Value) -> String {
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    if num(&u["associations_total"]) == 0 && num(&u["datagrams_in"]) == 0 {
        return String::new();
    }
    let drops: Vec<String> = list(&u["dropped"])
        .iter()
        .filter(|d| num(&d[1]) > 0)
        .map(|d| format!("{} {}", text(&d[0]), num(&d[1])))
        .collect();
    format!(
        "udp  associations open {} (total {})  datagrams in {} out {}  dropped {}\n",
        num(&u["associations_open"]),
        num(&u["associations_total"]),
        num(&u["datagrams_in"]),
        num(&u["datagrams_out"]),
        if drops.is_empty() { "none".to_string() } else { drops.join(", ") },
    )
}

/// The whole status page.
pub fn render(input: &StatusInput) -> String {
    let s = &input.stats;
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = format!(
        "node {}  config v{}  flows open {}  in {}  out {}  reset {}\n",
        text(&s["node_id"]),
        num(&s["config_version"]),
        num(&s["flows_current"]),
        bytes(num(&s["bytes_in"])),
        bytes(num(&s["bytes_out"])),
        num(&s["flows_reset"]),
    );
    out += &udp_line(&s["udp"]);
    let peers: Vec<Vec<String>> = list(&input.peers)
        .iter()
        .map(|p| {
            vec![
                text(&p["id"]),
                text(&p["connected"]),
                text(&p["healthy"]),
                text(&p["transport"]),
                p["rtt_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms")),
                p["loss"].as_f64().map_or("-".into(), |l| format!("{:.2}%", l * 100.0)),
                p["connected_secs"].as_f64().map_or("-".into(), age),
                text(&p["address"]),
            ]
        })
        .collect();
    out += "\nPEERS\n";
    out += &table(&["ID", "CONNECTED", "HEALTHY", "TRANSPORT", "RTT", "LOSS", "UP", "ADDRESS"], &peers);
    let listeners: Vec<Vec<String>> =
        list(&input.listeners).iter().map(|l| vec![text(&l["name"]), text(&l["addr"])]).collect();
    out += "\nLISTENERS\n";
    out += &table(&["NAME", "ADDRESS"], &listeners);
    let routes: Vec<Vec<String>> = list(&input.routes)
        .iter()
        .map(|r| {
            let others = list(&r["alternatives"]).len().saturating_sub(1);
            vec![
                text(&r["name"]),
                text(&r["kind"]),
                text(&r["exit"]),
                path(&r["active_path"]),
                others.to_string(),
                text(&r["multipath"]),
                if r["instructed"].as_bool() == Some(true) {
                    format!(
                        "v{}{}",
                        num(&r["instruction_version"]),
                        if r["stale"] == true { " stale" } else { "" }
                    )
                } else {
                    "static".into()
                },
                num(&r["matches"]).to_string(),
                bytes(num(&r["bytes"])),
            ]
        })
        .collect();
    out += "\nROUTES\n";
    out += &table(
        &[
            "NAME",
            "KIND",
            "EXIT",
            "ACTIVE PATH",
            "OTHER PATHS",
            "MULTIPATH",
            "INSTRUCTION",
            "MATCHES",
            "BYTES",
        ],
        &routes,
    );
    let flows = list(&input.flows);
    let busiest: Vec<Vec<String>> = flows
        .iter()
        .take(BUSIEST_FLOWS)
        .map(|f| {
            vec![
                text(&f["id"]),
                text(&f["role"]),
                text(&f["route"]),
                path(&f["path"]),
                text(&f["destination"]),
                bytes(num(&f["bytes"])),
                f["age_secs"].as_f64().map_or("-".into(), age),
            ]
        })
        .collect();
    let open = s["flows_current"].as_u64().map_or(flows.len() as u64, |n| n.max(flows.len() as u64));
    out += &format!("\nBUSIEST FLOWS ({} of {open} open)\n", busiest.len());
    out += &table(&["ID", "ROLE", "ROUTE", "PATH", "DESTINATION", "BYTES", "AGE"], &busiest);
    out
}

/// The scheduler's status page: a summary line, then its nodes, links and routes (one row
/// per path, the route's columns on its first).
pub fn render_scheduler(input: &SchedulerStatusInput) -> String {
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let nodes = list(&input.nodes);
    let links = list(&input.links);
    let routes = list(&input.routes);
    let count = |items: &[Value], key: &str, want: &Value| items.iter().filter(|i| &i[key] == want).count();
    let mut out = format!(
        "scheduler  nodes {} ({} connected)  links {} counted, {} one-sided, {} stale  routes {}",
        nodes.len(),
        count(&nodes, "connected", &Value::Bool(true)),
        count(&links, "state", &Value::from("counted")),
        count(&links, "state", &Value::from("one_sided")),
        count(&links, "state", &Value::from("stale")),
        routes.len(),
    );
    if let Some(objective) = routes.first().map(|r| text(&r["objective"])) {
        out += &format!("  objective {objective}");
    }
    out.push('\n');
    let node_rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                text(&n["id"]),
                text(&n["region"]),
                text(&n["mesh_address"]),
                text(&n["connected"]),
                text(&n["alive"]),
                n["last_report_secs"].as_f64().map_or("-".into(), age),
                num(&n["peers"]).to_string(),
                num(&n["listeners"]).to_string(),
                num(&n["routes"]).to_string(),
                num(&n["links"]).to_string(),
                match num(&n["instruction_version"]) {
                    0 => "-".into(),
                    v => format!("v{v}"),
                },
            ]
        })
        .collect();
    out += "\nNODES\n";
    out += &table(
        &[
            "ID",
            "REGION",
            "ADDRESS",
            "CONNECTED",
            "ALIVE",
            "LAST REPORT",
            "PEERS",
            "LISTENERS",
            "ROUTES",
            "LINKS",
            "INSTRUCTION",
        ],
        &node_rows,
    );
    let link_rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| {
            vec![
                text(&l["a"]),
                text(&l["b"]),
                text(&l["state"]).replace('_', "-"),
                text(&l["transport"]),
                l["rtt_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms")),
                l["loss"].as_f64().map_or("-".into(), |x| format!("{:.2}%", x * 100.0)),
                l["throughput_bytes_per_sec"].as_u64().map_or("-".into(), |b| format!("{}/s", bytes(b))),
                l["capacity_bytes_per_sec"].as_u64().map_or("-".into(), |b| format!("{}/s", bytes(b))),
                text(&l["used"]),
                list(&l["reported_by"]).iter().map(text).collect::<Vec<_>>().join(","),
                l["age_secs"].as_f64().map_or("-".into(), age),
            ]
        })
        .collect();
    out += "\nLINKS\n";
    out += &table(
        &[
            "A",
            "B",
            "STATE",
            "TRANSPORT",
            "RTT",
            "LOSS",
            "THROUGHPUT",
            "CAPACITY",
            "USED",
            "REPORTED BY",
            "AGE",
        ],
        &link_rows,
    );
    let mut route_rows: Vec<Vec<String>> = Vec::new();
    for r in &routes {
        for (i, p) in list(&r["paths"]).iter().enumerate() {
            let first = i == 0;
            let only_first = |s: String| if first { s } else { String::new() };
            route_rows.push(vec![
                only_first(text(&r["node"])),
                only_first(text(&r["route"])),
                only_first(text(&r["exit"])),
                path(&p["hops"]),
                p["weight"].as_f64().map_or("-".into(), |w| format!("{:.0}%", w * 100.0)),
                p["cost"].as_f64().map_or("-".into(), |c| format!("{c:.1}")),
                only_first(format!(
                    "v{}{}",
                    num(&r["instruction_version"]),
                    if r["pinned"] == true { " pinned" } else { "" }
                )),
            ]);
        }
    }
    out += "\nROUTES\n";
    out += &table(&["NODE", "ROUTE", "EXIT", "PATH", "WEIGHT", "COST", "INSTRUCTION"], &route_rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let t = table(
            &["A", "LONG HEADER"],
            &[vec!["wide cell".into(), "x".into()], vec!["y".into(), "z".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A          LONG HEADER");
        assert_eq!(lines[1], "wide cell  x");
        assert_eq!(lines[2], "y          z");
    }

    #[test]
    fn units_read_at_a_glance() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(age(61.0), "1m1s");
        assert_eq!(age(7322.0), "2h2m");
    }

    #[test]
    fn a_status_page_shows_every_section() {
        let input = StatusInput {
            stats: json!({"node_id": "a", "config_version": 3, "flows_current": 1, "bytes_in": 10, "bytes_out": 20, "flows_reset": 0,
                "udp": {"associations_open": 2, "associations_total": 5, "datagrams_in": 40, "datagrams_out": 38, "dropped": [["congested", 0], ["association_cap", 3]]}}),
            peers: json!([{"id": "b", "connected": true, "healthy": true, "rtt_ms": 1.25, "loss": 0.0, "connected_secs": 65, "address": "127.0.0.1:7801"}]),
            listeners: json!([{"name": "web", "addr": "127.0.0.1:8080"}]),
            routes: json!([{"name": "web", "kind": "remote", "exit": "d", "active_path": ["b", "d"], "alternatives": [["b", "d"], ["d"]], "multipath": false, "instructed": true, "instruction_version": 7, "stale": false, "matches": 4, "bytes": 2048}]),
            flows: json!([{"id": 9, "role": "origin", "route": "web", "path": ["b", "d"], "destination": "10.0.0.5:80", "bytes": 4096, "age_secs": 3.0}]),
        };
        let page = render(&input);
        for needle in [
            "node a  config v3",
            "PEERS",
            "1.2 ms",
            "1m5s",
            "LISTENERS",
            "127.0.0.1:8080",
            "b>d",
            "v7",
            "4.0 KiB",
            "BUSIEST FLOWS (1 of 1 open)",
            "udp  associations open 2 (total 5)  datagrams in 40 out 38  dropped association_cap 3",
        ] {
            assert!(page.contains(needle), "missing {needle:?} in\n{page}");
        }
    }

    #[test]
    fn a_scheduler_page_shows_nodes_links_and_one_row_per_path() {
        let input = SchedulerStatusInput {
            nodes: json!([
                {"id": "a", "region": "eu", "mesh_address": "10.0.0.1:7800", "connected": true, "alive": true, "last_report_secs": 2.0, "peers": 2, "listeners": 1, "routes": 1, "links": 2, "instruction_version": 9},
                {"id": "b", "region": "eu", "mesh_address": "10.0.0.2:7800", "connected": false, "alive": false, "last_report_secs": null, "peers": 0, "listeners": 0, "routes": 0, "links": 0, "instruction_version": 0}
            ]),
            links: json!([
                {"a": "a", "b": "b", "state": "counted", "reported_by": ["a", "b"], "rtt_ms": 12.34, "loss": 0.005, "throughput_bytes_per_sec": 2048, "capacity_bytes_per_sec": 12500000, "used": true, "age_secs": 1.0},
                {"a": "a", "b": "m", "state": "one_sided", "reported_by": ["a"], "rtt_ms": 1.0, "loss": 0.0, "throughput_bytes_per_sec": null, "used": false, "age_secs": 1.0}
            ]),
            routes: json!([{"node": "a", "route": "web", "exit": "d", "objective": "latency", "pinned": false, "instruction_version": 9, "issued_at_unix": 1,
                "paths": [{"relays": ["b"], "hops": ["a", "b", "d"], "weight": 0.75, "cost": 20.0}, {"relays": [], "hops": ["a", "d"], "weight": 0.25, "cost": null}]}]),
        };
        let page = render_scheduler(&input);
        for needle in [
            "scheduler  nodes 2 (1 connected)  links 1 counted, 1 one-sided, 0 stale  routes 1  objective latency",
            "NODES",
            "10.0.0.1:7800",
            "v9",
            "12.3 ms",
            "0.50%",
            "2.0 KiB/s",
            "11.9 MiB/s",
            "one-sided",
            "a,b",
            "a>b>d",
            "75%",
            "20.0",
        ] {
            assert!(page.contains(needle), "missing {needle:?} in\n{page}");
        }
        let rows: Vec<&str> = page.split("ROUTES\n").nth(1).unwrap_or_default().lines().collect();
        assert_eq!(rows.len(), 3, "a header and one row per path:\n{page}");
        assert!(rows[1].starts_with("a     web    d     a>b>d"), "{page}");
        assert!(rows[2].trim_start().starts_with("a>d") && rows[2].ends_with("-"), "{page}");
    }
}
