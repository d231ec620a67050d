//! The scheduler.yaml `mesh init` writes, made for a test: listeners on loopback port 0
//! (never the real ports, so tests run side by side), optionally other settings.

/// `yaml` with the scheduler's listeners on loopback port 0.
pub fn on_loopback(yaml: &str) -> String {
    yaml.replace("0.0.0.0:7900", "127.0.0.1:0").replace("127.0.0.1:9900", "127.0.0.1:0")
}

/// `original` on loopback, recomputing every 200 ms, with each top-level key of
/// `settings` in place of the one `mesh init` wrote.
pub fn with_settings(original: &str, settings: &str) -> String {
    let overridden: Vec<String> = settings
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split(':').next())
        .map(|k| format!("{k}:"))
        .collect();
    let kept: String = original
        .lines()
        .filter(|l| !overridden.iter().any(|k| l.starts_with(k.as_str())))
        .map(|l| format!("{l}\n"))
        .collect();
    let changed = on_loopback(&kept).replace("recompute_interval: \"1s\"", "recompute_interval: \"200ms\"");
    format!("{changed}{settings}")
}
