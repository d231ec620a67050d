//! The wall clock as the mesh's records carry it.

/// Seconds since the Unix epoch (0 if the clock is before it): instruction sets, join
/// tokens and revocations carry wall-clock times, since they must mean the same on every
/// node and across restarts.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): sealed openings carry
/// it, so an exit can tell an opening from before its own start.
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
