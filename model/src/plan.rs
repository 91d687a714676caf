//! The lab plan as operators see it: the plan file `lab.toml` ([`file`]) and the lines of a computed plan.
//!
//! The coordinator computes and applies plans (its `plan` module); fleetctl reads `lab.toml` and shows plans.

pub mod file;

use std::fmt;

pub use file::LabFile;

/// What a step does, terraform-like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    /// A gate that changes nothing but must hold (a DHCP probe, a wait until synced or Ready).
    Check,
    Unchanged,
}

impl Action {
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Check => '?',
            Action::Unchanged => '=',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Check => "check",
            Action::Unchanged => "unchanged",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        [Action::Create, Action::Update, Action::Delete, Action::Check, Action::Unchanged]
            .into_iter()
            .find(|a| a.as_str() == text)
    }

    /// True when the step changes MAAS or the router.
    pub fn is_change(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete)
    }
}

/// One line of a plan as operators see it: what, on which object, and the change in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub action: Action,
    /// The object class: `router_dhcp`, `ip_range`, `maas_dhcp`, `upstream_dns`, `image`, `ssh_key`, ...
    pub kind: String,
    /// e.g. `create ip range 172.16.11.1-172.16.14.255 (dynamic)`.
    pub summary: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.symbol(), self.summary)
    }
}
