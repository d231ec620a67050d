//! `proxy status`: a node's peers, listeners, routes and busiest flows as aligned tables,
//! rendered from the admin API's JSON (so it works against any node that serves it).

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
    // A node bound to every address answers on loopback; its Host check wants that name.
    let admin = match admin.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        _ => admin.to_string(),
    };
    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            let (status, body) =
                crate::admin::http::get(&admin, path, token, TIMEOUT).await.map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("{path}: HTTP {status}: {}", body.trim()));
            }
            serde_json::from_str::<Value>(&body).map_err(|e| format!("{path}: not JSON: {e}"))
        }
    };
    Ok(StatusInput {
        stats: get("/api/stats").await?,
        peers: get("/api/peers").await?,
        listeners: get("/api/listeners").await?,
        routes: get("/api/routes").await?,
        flows: get("/api/flows").await?,
    })
}

/// Aligned columns, two spaces apart, a header row first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
        out.push('\n');
    }
    out
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
    let peers: Vec<Vec<String>> = list(&input.peers)
        .iter()
        .map(|p| {
            vec![
                text(&p["id"]),
                text(&p["connected"]),
                text(&p["healthy"]),
                p["rtt_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms")),
                p["loss"].as_f64().map_or("-".into(), |l| format!("{:.2}%", l * 100.0)),
                p["connected_secs"].as_f64().map_or("-".into(), age),
                text(&p["address"]),
            ]
        })
        .collect();
    out += "\nPEERS\n";
    out += &table(&["ID", "CONNECTED", "HEALTHY", "RTT", "LOSS", "UP", "ADDRESS"], &peers);
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
    out += &format!("\nBUSIEST FLOWS ({} of {} open)\n", busiest.len(), flows.len());
    out += &table(&["ID", "ROLE", "ROUTE", "PATH", "DESTINATION", "BYTES", "AGE"], &busiest);
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
            stats: json!({"node_id": "a", "config_version": 3, "flows_current": 1, "bytes_in": 10, "bytes_out": 20, "flows_reset": 0}),
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
        ] {
            assert!(page.contains(needle), "missing {needle:?} in\n{page}");
        }
    }
}
