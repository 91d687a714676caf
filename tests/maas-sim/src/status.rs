//! MAAS node statuses (maas-api.md section 3): ints, filter keys, labels and the model's allowed transitions.

/// A node status as MAAS numbers it; the discriminant is the wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    New = 0,
    Commissioning = 1,
    FailedCommissioning = 2,
    Missing = 3,
    Ready = 4,
    Reserved = 5,
    Deployed = 6,
    Retired = 7,
    Broken = 8,
    Deploying = 9,
    Allocated = 10,
    FailedDeployment = 11,
    Releasing = 12,
    FailedReleasing = 13,
    DiskErasing = 14,
    FailedDiskErasing = 15,
    RescueMode = 16,
    EnteringRescueMode = 17,
    FailedEnteringRescueMode = 18,
    ExitingRescueMode = 19,
    FailedExitingRescueMode = 20,
    Testing = 21,
    FailedTesting = 22,
}

use Status::*;

/// Every status, in wire order.
pub const ALL: [Status; 23] = [
    New,
    Commissioning,
    FailedCommissioning,
    Missing,
    Ready,
    Reserved,
    Deployed,
    Retired,
    Broken,
    Deploying,
    Allocated,
    FailedDeployment,
    Releasing,
    FailedReleasing,
    DiskErasing,
    FailedDiskErasing,
    RescueMode,
    EnteringRescueMode,
    FailedEnteringRescueMode,
    ExitingRescueMode,
    FailedExitingRescueMode,
    Testing,
    FailedTesting,
];

impl Status {
    /// The integer sent as `status`.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The lower-case enum key used by `status=` filters.
    pub fn key(self) -> &'static str {
        match self {
            New => "new",
            Commissioning => "commissioning",
            FailedCommissioning => "failed_commissioning",
            Missing => "missing",
            Ready => "ready",
            Reserved => "reserved",
            Deployed => "deployed",
            Retired => "retired",
            Broken => "broken",
            Deploying => "deploying",
            Allocated => "allocated",
            FailedDeployment => "failed_deployment",
            Releasing => "releasing",
            FailedReleasing => "failed_releasing",
            DiskErasing => "disk_erasing",
            FailedDiskErasing => "failed_disk_erasing",
            RescueMode => "rescue_mode",
            EnteringRescueMode => "entering_rescue_mode",
            FailedEnteringRescueMode => "failed_entering_rescue_mode",
            ExitingRescueMode => "exiting_rescue_mode",
            FailedExitingRescueMode => "failed_exiting_rescue_mode",
            Testing => "testing",
            FailedTesting => "failed_testing",
        }
    }

    /// The label sent as `status_name` and used in MAAS's error messages.
    pub fn label(self) -> &'static str {
        match self {
            New => "New",
            Commissioning => "Commissioning",
            FailedCommissioning => "Failed commissioning",
            Missing => "Missing",
            Ready => "Ready",
            Reserved => "Reserved",
            Deployed => "Deployed",
            Retired => "Retired",
            Broken => "Broken",
            Deploying => "Deploying",
            Allocated => "Allocated",
            FailedDeployment => "Failed deployment",
            Releasing => "Releasing",
            FailedReleasing => "Releasing failed",
            DiskErasing => "Disk erasing",
            FailedDiskErasing => "Failed disk erasing",
            RescueMode => "Rescue mode",
            EnteringRescueMode => "Entering rescue mode",
            FailedEnteringRescueMode => "Failed to enter rescue mode",
            ExitingRescueMode => "Exiting rescue mode",
            FailedExitingRescueMode => "Failed to exit rescue mode",
            Testing => "Testing",
            FailedTesting => "Failed testing",
        }
    }

    /// Parses a filter key (`ready`, `failed_deployment`, ...).
    pub fn from_key(key: &str) -> Option<Status> {
        ALL.into_iter().find(|s| s.key() == key)
    }

    /// The `simple_status` bucket of this status.
    pub fn simple(self) -> &'static str {
        match self {
            New => "new",
            Commissioning => "commissioning",
            Testing => "testing",
            Ready => "ready",
            Allocated | Reserved => "allocated",
            Deploying => "deploying",
            Deployed => "deployed",
            Releasing | DiskErasing => "releasing",
            FailedCommissioning
            | FailedDeployment
            | FailedReleasing
            | FailedDiskErasing
            | FailedTesting
            | FailedEnteringRescueMode
            | FailedExitingRescueMode => "failed",
            Broken => "broken",
            RescueMode | EnteringRescueMode | ExitingRescueMode => "rescue_mode",
            Missing | Retired => "other",
        }
    }

    /// Whether the model's state machine allows `self -> to` (maas-api.md 3.2).
    pub fn can_move_to(self, to: Status) -> bool {
        let allowed: &[Status] = match self {
            New => &[Commissioning, Testing, Missing, Ready, Retired, Broken, EnteringRescueMode],
            Commissioning => &[FailedCommissioning, Ready, Retired, Missing, New, Broken, Testing],
            FailedCommissioning => &[Commissioning, Missing, Retired, Broken, EnteringRescueMode, Testing],
            Ready => &[EnteringRescueMode, Commissioning, Allocated, Reserved, Retired, Missing, Broken, Testing],
            Reserved => {
                &[Ready, Allocated, Retired, Missing, Broken, DiskErasing, Releasing, EnteringRescueMode, Testing]
            }
            Allocated => {
                &[Ready, Retired, Missing, Broken, Deploying, DiskErasing, Releasing, EnteringRescueMode, Testing]
            }
            Deploying => &[Allocated, Missing, Broken, FailedDeployment, Deployed, Ready, DiskErasing, Releasing],
            Deployed | FailedDeployment => {
                &[Allocated, Missing, Broken, Ready, DiskErasing, Releasing, EnteringRescueMode, Testing]
            }
            Releasing => &[
                New,
                Allocated,
                Reserved,
                Deployed,
                Ready,
                Broken,
                Missing,
                FailedDeployment,
                FailedDiskErasing,
                FailedReleasing,
            ],
            FailedReleasing => &[Releasing, DiskErasing, Ready, Broken, Testing],
            DiskErasing => &[Broken, DiskErasing, FailedDiskErasing, Ready, Releasing],
            FailedDiskErasing => &[DiskErasing, Releasing, Broken, Allocated, Ready, EnteringRescueMode, Testing],
            Broken => &[Commissioning, Ready, DiskErasing, Releasing, EnteringRescueMode, Testing, Deployed],
            Missing => &[New, Ready, Allocated, Commissioning, Broken, EnteringRescueMode, Testing],
            Retired => &[New, Ready, Missing, Broken, EnteringRescueMode, Testing],
            Testing => &[
                Broken,
                New,
                Ready,
                Reserved,
                Allocated,
                Deployed,
                Commissioning,
                FailedDeployment,
                Missing,
                Retired,
                FailedReleasing,
                FailedDiskErasing,
                FailedEnteringRescueMode,
                FailedExitingRescueMode,
                FailedTesting,
            ],
            FailedTesting => &[Commissioning, Broken, Missing, EnteringRescueMode, Testing, Ready, Deployed],
            RescueMode
            | EnteringRescueMode
            | ExitingRescueMode
            | FailedEnteringRescueMode
            | FailedExitingRescueMode => return to != self || to == DiskErasing,
        };
        allowed.contains(&to)
    }
}

/// Script-result status names (`commissioning_status_name` and friends).
pub fn script_status_name(code: i32) -> &'static str {
    match code {
        0 => "Pending",
        1 => "Running",
        2 => "Passed",
        3 => "Failed",
        4 => "Timed out",
        5 => "Aborted",
        6 => "Degraded",
        7 => "Installing",
        8 => "Failed installing",
        9 => "Skipped",
        10 => "Applying custom network configuration",
        11 => "Failed to apply custom network configuration",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_codes_match_positions() {
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(s.code() as usize, i);
            assert_eq!(Status::from_key(s.key()), Some(*s));
        }
        assert_eq!(FailedReleasing.label(), "Releasing failed");
    }

    #[test]
    fn lifecycle_edges_are_allowed_and_shortcuts_are_not() {
        assert!(New.can_move_to(Commissioning));
        assert!(Commissioning.can_move_to(Testing));
        assert!(Testing.can_move_to(Ready));
        assert!(Ready.can_move_to(Allocated));
        assert!(Allocated.can_move_to(Deploying));
        assert!(Deploying.can_move_to(Deployed));
        assert!(Deployed.can_move_to(Releasing));
        assert!(Deployed.can_move_to(DiskErasing));
        assert!(DiskErasing.can_move_to(Ready));
        assert!(!Ready.can_move_to(Deploying));
        assert!(!Deployed.can_move_to(Deploying));
        assert!(!New.can_move_to(Deployed));
    }
}
