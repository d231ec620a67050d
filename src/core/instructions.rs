//! The node's instruction cache and the order in which a new flow tries paths.
//!
//! Pure: the caller passes the time (Unix seconds) and link health. Order for a route:
//! the scheduler's paths (primary, then alternatives), then the route's static paths,
//! then a direct link to the exit; the first candidate whose first hop has a live link
//! wins, so a dead first hop is skipped at once without waiting for the scheduler.
//! Instructions past their TTL are still used while nothing newer exists; they are only
//! reported as stale.

use crate::core::control::{InstructionSet, RouteInstruction};

/// The instructions a node holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstructionCache {
    set: Option<InstructionSet>,
}

impl InstructionCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `set` if it is newer than what the cache holds; returns whether it did.
    pub fn apply(&mut self, set: InstructionSet) -> bool {
        if set.version <= self.version() {
            return false;
        }
        self.set = Some(set);
        true
    }

    /// The version held (0: none).
    pub fn version(&self) -> u64 {
        self.set.as_ref().map_or(0, |s| s.version)
    }

    /// The whole set, for persisting.
    pub fn set(&self) -> Option<&InstructionSet> {
        self.set.as_ref()
    }

    /// Whether the held set is past its TTL at `now_unix` (false when empty).
    pub fn is_stale(&self, now_unix: u64) -> bool {
        self.set.as_ref().is_some_and(|s| s.issued_at_unix.saturating_add(s.ttl_secs) < now_unix)
    }

    /// The instruction for `route`, when the scheduler sent one.
    pub fn route(&self, route: &str) -> Option<&RouteInstruction> {
        self.set.as_ref()?.routes.iter().find(|r| r.route == route)
    }

    /// Candidate relay lists for a new flow on `route` to `exit`, in the order they are
    /// tried: instructed paths (only if they lead to the same exit), static paths, direct.
    /// Duplicates are dropped, keeping the first.
    /// Instructed paths that would name `me` or `exit` as a relay, repeat a node or carry a
    /// malformed id are skipped: instructions are checked, not trusted.
    pub fn candidates(
        &self,
        me: &str,
        route: &str,
        exit: &str,
        static_paths: &[Vec<String>],
    ) -> Vec<Vec<String>> {
        let sound = |relays: &Vec<String>| {
            relays.iter().enumerate().all(|(i, r)| {
                crate::core::wire::is_valid_node_id(r) && r != me && r != exit && !relays[..i].contains(r)
            })
        };
        let instructed = self
            .route(route)
            .filter(|r| r.exit == exit)
            .map(|r| r.paths.iter().map(|p| p.relays.clone()).filter(sound).collect::<Vec<_>>());
        let mut out: Vec<Vec<String>> = Vec::new();
        for path in instructed.into_iter().flatten().chain(static_paths.iter().cloned()).chain([Vec::new()]) {
            if !out.contains(&path) {
                out.push(path);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::control::InstructedPath;

    fn set(version: u64, relays: &[&[&str]]) -> InstructionSet {
        InstructionSet {
            version,
            issued_at_unix: 1000,
            ttl_secs: 60,
            routes: vec![RouteInstruction {
                route: "web".into(),
                exit: "d".into(),
                paths: relays
                    .iter()
                    .map(|r| InstructedPath {
                        relays: r.iter().map(|s| s.to_string()).collect(),
                        weight: 0.5,
                    })
                    .collect(),
            }],
            nodes: vec![],
        }
    }

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_newer_versions_replace_the_cache() {
        let mut c = InstructionCache::new();
        assert!(c.apply(set(2, &[&["b"]])));
        assert!(!c.apply(set(2, &[&["c"]])));
        assert!(!c.apply(set(1, &[&["c"]])));
        assert!(c.apply(set(3, &[&["c"]])));
        assert_eq!(c.version(), 3);
    }

    #[test]
    fn candidates_go_instructed_then_static_then_direct_without_repeats() {
        let mut c = InstructionCache::new();
        assert_eq!(c.candidates("a", "web", "d", &[v(&["e"])]), vec![v(&["e"]), v(&[])]);
        c.apply(set(1, &[&["b"], &["c", "x"]]));
        let got = c.candidates("a", "web", "d", &[v(&["e"]), v(&["b"])]);
        assert_eq!(got, vec![v(&["b"]), v(&["c", "x"]), v(&["e"]), v(&[])]);
        // An instruction for another exit (the config changed since) is not used.
        assert_eq!(c.candidates("a", "web", "z", &[]), vec![v(&[])]);
        // Paths that name this node or the exit, or repeat a node, are not used.
        c.apply(set(2, &[&["a"], &["d"], &["b", "b"], &["c"]]));
        assert_eq!(c.candidates("a", "web", "d", &[]), vec![v(&["c"]), v(&[])]);
    }

    #[test]
    fn stale_instructions_are_reported_but_still_offered() {
        let mut c = InstructionCache::new();
        c.apply(set(1, &[&["b"]]));
        assert!(!c.is_stale(1060));
        assert!(c.is_stale(1061));
        assert_eq!(c.candidates("a", "web", "d", &[])[0], v(&["b"]));
    }
}
