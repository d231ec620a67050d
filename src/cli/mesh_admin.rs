//! `proxy mesh token list`, `proxy mesh token revoke ID` and `proxy mesh nodes`: run
//! where the scheduler runs, on the registry its config names (a file in `data_dir`, or
//! etcd), read and changed through the same store as the scheduler's, under its lock or
//! transaction.

use std::path::Path;
use std::process::ExitCode;

use crate::config::scheduler::SchedulerConfig;
use crate::scheduler::enrollment::listing::{self, NodeList, TokenList};

/// `proxy mesh token list [--json]`.
pub(crate) fn token_list(config_path: &Path, json: bool) -> ExitCode {
    let who = "proxy mesh token list";
    let Some(state) = read(config_path, who) else { return ExitCode::from(2) };
    let Ok((registry, _)) = state else { return ExitCode::FAILURE };
    let list = listing::tokens(&registry, crate::clock::unix_now());
    print_json_or(json, &list, || tokens_table(&list, crate::clock::unix_now()))
}

/// `proxy mesh token revoke ID`.
pub(crate) fn token_revoke(config_path: &Path, id: &str) -> ExitCode {
    let who = "proxy mesh token revoke";
    let Some(config) = load(config_path, who) else { return ExitCode::from(2) };
    match crate::scheduler::enrollment::revoke_token(&config, id) {
        Ok(Ok((record, false))) => {
            println!(
                "revoked token {}: every join with it is refused from now on, by a running scheduler too",
                record.id()
            );
            ExitCode::SUCCESS
        }
        Ok(Ok((record, true))) => {
            println!("token {} was revoked already", record.id());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{who}: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{who}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy mesh nodes [--json]`.
pub(crate) fn nodes(config_path: &Path, json: bool) -> ExitCode {
    let who = "proxy mesh nodes";
    let Some(state) = read(config_path, who) else { return ExitCode::from(2) };
    let Ok((registry, presence)) = state else { return ExitCode::FAILURE };
    let now = crate::clock::unix_now();
    let list = listing::nodes(&registry, &presence, now);
    print_json_or(json, &list, || nodes_table(&list, now))
}

fn load(config_path: &Path, who: &str) -> Option<SchedulerConfig> {
    match crate::config::scheduler::load(config_path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{who}: {}: {} problem(s)", config_path.display(), errors.errors.len());
            None
        }
    }
}

type State =
    (crate::scheduler::enrollment::registry::Registry, crate::scheduler::enrollment::presence::Presence);

/// The registry and presence record; `None` for a bad config (exit 2), `Some(Err)` when
/// they could not be read (reported here; exit 1).
fn read(config_path: &Path, who: &str) -> Option<Result<State, ()>> {
    let config = load(config_path, who)?;
    Some(crate::scheduler::enrollment::read_state(&config).map_err(|e| eprintln!("{who}: {e:#}")))
}

fn print_json_or<T: serde::Serialize>(json: bool, value: &T, table: impl FnOnce() -> String) -> ExitCode {
    if !json {
        print!("{}", table());
        return ExitCode::SUCCESS;
    }
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("proxy: cannot write JSON: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tokens_table(list: &TokenList, now: u64) -> String {
    let mut lines =
        vec![["ID", "STATE", "NODE", "GROUPS", "USES LEFT", "EXPIRES", "CREATED"].map(String::from).to_vec()];
    for t in &list.tokens {
        lines.push(vec![
            t.id.clone(),
            t.state.as_str().to_string(),
            t.node_id.clone().unwrap_or_else(|| "any".into()),
            if t.groups.is_empty() { "-".into() } else { t.groups.join(",") },
            match t.uses_total {
                Some(total) => format!("{}/{total}", t.uses_left),
                None => t.uses_left.to_string(),
            },
            format!("{} ({})", utc(t.expires_unix as i64), relative(t.expires_unix as i64, now)),
            t.created_unix.map_or("-".into(), |c| utc(c as i64)),
        ]);
    }
    if list.tokens.is_empty() {
        return "no join tokens (make one with `proxy mesh token create`)\n".into();
    }
    crate::text_table::align(&lines)
}

fn nodes_table(list: &NodeList, now: u64) -> String {
    let mut lines =
        vec![["ID", "REGION", "ADDRESS", "CERT EXPIRES", "LAST SEEN", "REMOVED"].map(String::from).to_vec()];
    for n in &list.nodes {
        lines.push(vec![
            n.id.clone(),
            if n.region.is_empty() { "-".into() } else { n.region.clone() },
            n.address.clone().unwrap_or_else(|| "-".into()),
            n.cert_expires_unix.map_or("-".into(), |t| format!("{} ({})", utc(t), relative(t, now))),
            match n.last_seen_unix {
                _ if n.connected => "connected".into(),
                Some(t) => relative(t as i64, now),
                None => "never".into(),
            },
            n.removed_unix.map_or("-".into(), |t| utc(t as i64)),
        ]);
    }
    if list.nodes.is_empty() {
        return "no nodes yet (enroll one with `proxy mesh join`)\n".into();
    }
    crate::text_table::align(&lines)
}

/// Unix seconds as `2025-06-01 12:00Z` (UTC, to the minute).
fn utc(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => unix.to_string(),
    }
}

/// `at` against `now`: `in 3d4h`, `5m2s ago`.
fn relative(at: i64, now: u64) -> String {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let span = |s: u64| match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    };
    if at > now {
        format!("in {}", span(at.abs_diff(now)))
    } else {
        format!("{} ago", span(at.abs_diff(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_and_relative_spans() {
        assert_eq!(utc(0), "1970-01-01 00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13Z");
        assert_eq!(relative(100, 40), "in 1m0s");
        assert_eq!(relative(0, 90_000), "1d1h ago");
        assert_eq!(relative(5, 5), "0s ago");
    }
}
