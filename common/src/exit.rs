//! Exit codes shared by every metalfleet command (DESIGN.md, "Conventions").

/// The command did what was asked and found nothing wrong.
pub const OK: i32 = 0;
/// A check failed: verify found fail/drift, an `--expect` or `--check` did not hold.
pub const CHECK_FAILED: i32 = 1;
/// Nothing wrong was found, but something is unknown (for example no data yet).
pub const UNKNOWN: i32 = 2;
/// Bad usage or configuration (EX_USAGE).
pub const USAGE: i32 = 64;
/// A service (coordinator, MAAS, router) could not be reached (EX_UNAVAILABLE).
pub const UNAVAILABLE: i32 = 69;
