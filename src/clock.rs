//! The wall clock as the mesh's records carry it.

/// Seconds since the Unix epoch (0 if the clock is before it): instruction sets, join
/// tokens and revocations carry wall-clock times, since they must mean the same on every
/// node and across restarts.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
