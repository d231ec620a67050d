//! The demo's tables, pure: rows in, aligned text out.

/// One route of the demo: from an origin to the backend behind the exit.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRow {
    /// The origin node.
    pub origin: String,
    /// The path new flows take now: the nodes after the origin, the exit last.
    pub path: Vec<String>,
    /// Round trip measured on the direct route (a flow opened and one byte echoed).
    pub direct_ms: Option<f64>,
    /// Round trip measured on the route the scheduler steers.
    pub chosen_ms: Option<f64>,
}

/// Below this, a difference between two measured round trips is noise.
const NOISE_MS: f64 = 10.0;

/// The routes table: origin and the path the scheduler chose, with, when measured, both
/// round trips and the time saved.
pub fn render_routes(rows: &[RouteRow]) -> String {
    let measured = rows.iter().any(|r| r.direct_ms.is_some() || r.chosen_ms.is_some());
    let mut header = vec!["route".to_string(), "path chosen".to_string()];
    if measured {
        header.extend(["direct".to_string(), "chosen".to_string(), "saved".to_string()]);
    }
    let mut lines = vec![header];
    for r in rows {
        let exit = r.path.last().map_or("?", String::as_str);
        let path = if r.path.len() > 1 {
            format!("via {}", r.path[..r.path.len() - 1].join(", "))
        } else if r.path.is_empty() {
            "(none yet)".to_string()
        } else {
            "direct".to_string()
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0} ms"));
        let saved = match (r.direct_ms, r.chosen_ms) {
            (Some(d), Some(c)) if d - c >= NOISE_MS => {
                format!("{:.0} ms ({:.0}%)", d - c, (d - c) / d * 100.0)
            }
            (Some(_), Some(_)) => "0".to_string(),
            _ => "-".to_string(),
        };
        let mut line = vec![format!("{} -> {exit}", r.origin), path];
        if measured {
            line.extend([ms(r.direct_ms), ms(r.chosen_ms), saved]);
        }
        lines.push(line);
    }
    crate::text_table::align(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_the_path_and_the_time_saved() {
        let rows = vec![
            RouteRow {
                origin: "eu-central".into(),
                path: vec!["ap-south".into(), "ap-northeast".into()],
                direct_ms: Some(241.0),
                chosen_ms: Some(192.0),
            },
            RouteRow {
                origin: "ap-south".into(),
                path: vec!["ap-northeast".into()],
                direct_ms: Some(71.0),
                chosen_ms: Some(71.4),
            },
            RouteRow { origin: "us-west".into(), path: vec![], direct_ms: None, chosen_ms: None },
        ];
        let text = render_routes(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("eu-central -> ap-northeast") && lines[1].contains("via ap-south"));
        assert!(lines[1].contains("49 ms (20%)"), "{}", lines[1]);
        assert!(lines[2].contains("direct") && lines[2].ends_with('0'), "{}", lines[2]);
        assert!(lines[3].contains("(none yet)"));
        let at = lines[0].find("direct").expect("header");
        assert!(lines.iter().skip(1).take(2).all(|l| l.len() > at), "aligned columns");
        let unmeasured: Vec<RouteRow> =
            rows.into_iter().map(|r| RouteRow { direct_ms: None, chosen_ms: None, ..r }).collect();
        assert!(
            !render_routes(&unmeasured).contains("saved"),
            "no empty columns before anything is measured"
        );
    }
}
