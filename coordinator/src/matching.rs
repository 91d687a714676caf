//! Matching agents to their MAAS machines: MAAS `system_id` is the key; MAC addresses first, then hostname.
//!
//! A conflict (MACs pointing to one machine and the hostname to another, MACs pointing to several machines,
//! two agents claiming one machine) is reported, never guessed. A machine that is already matched keeps its
//! match even when its MACs change (a NIC replaced): re-matching happens only on request
//! (`fleetctl machines rematch NAME`, which clears the match so the next pass matches afresh).
//!
//! Agents on one host share that host's MACs (the e2e tests run every agent on loopback); such MACs belong to
//! no MAAS machine, so the hostname decides, which is the documented fallback.

use std::collections::HashMap;

/// What matching needs to know about an enrolled agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentFacts {
    pub machine_id: String,
    pub hostname: String,
    pub macs: Vec<String>,
    /// The current match, if any.
    pub system_id: Option<String>,
}

/// What matching needs to know about a MAAS machine.
#[derive(Debug, Clone, PartialEq)]
pub struct MaasFacts {
    pub system_id: String,
    pub hostname: String,
    pub macs: Vec<String>,
}

/// How a match was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Mac,
    Hostname,
    /// Matched before and left alone.
    Kept,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Mac => "MAC address",
            By::Hostname => "hostname",
            By::Kept => "earlier match",
        }
    }
}

/// The outcome for one agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Matched {
        machine_id: String,
        system_id: String,
        by: By,
    },
    /// Nothing is guessed; the message says what disagrees and how to resolve it.
    Conflict {
        machine_id: String,
        message: String,
    },
    Unmatched {
        machine_id: String,
    },
}

impl Outcome {
    pub fn machine_id(&self) -> &str {
        match self {
            Outcome::Matched { machine_id, .. }
            | Outcome::Conflict { machine_id, .. }
            | Outcome::Unmatched { machine_id } => machine_id,
        }
    }
}

pub use crate::domain::short_name;

/// Matches every agent; the result is in the order of `agents`.
pub fn match_agents(agents: &[AgentFacts], maas: &[MaasFacts]) -> Vec<Outcome> {
    let by_mac: HashMap<String, Vec<&MaasFacts>> = maas.iter().fold(HashMap::new(), |mut map, m| {
        for mac in &m.macs {
            map.entry(mac.to_ascii_lowercase()).or_default().push(m);
        }
        map
    });
    let exists = |sid: &str| maas.iter().any(|m| m.system_id == sid);
    let name_of = |sid: &str| maas.iter().find(|m| m.system_id == sid).map(|m| m.hostname.clone()).unwrap_or_default();

    let mut outcomes: Vec<Outcome> = agents
        .iter()
        .map(|agent| {
            if let Some(sid) = agent.system_id.as_deref().filter(|sid| exists(sid)) {
                return Outcome::Matched {
                    machine_id: agent.machine_id.clone(),
                    system_id: sid.to_string(),
                    by: By::Kept,
                };
            }
            let mut mac_hits: Vec<&str> = agent
                .macs
                .iter()
                .flat_map(|mac| by_mac.get(&mac.to_ascii_lowercase()).into_iter().flatten())
                .map(|m| m.system_id.as_str())
                .collect();
            mac_hits.sort_unstable();
            mac_hits.dedup();
            let name = short_name(&agent.hostname);
            let host_hits: Vec<&str> =
                maas.iter().filter(|m| short_name(&m.hostname) == name).map(|m| m.system_id.as_str()).collect();
            let conflict = |message: String| Outcome::Conflict { machine_id: agent.machine_id.clone(), message };
            match (mac_hits.as_slice(), host_hits.as_slice()) {
                ([], []) => Outcome::Unmatched { machine_id: agent.machine_id.clone() },
                ([], [one]) => Outcome::Matched {
                    machine_id: agent.machine_id.clone(),
                    system_id: one.to_string(),
                    by: By::Hostname,
                },
                ([], many) => conflict(format!(
                    "{}: several MAAS machines are named {name} ({}); rename them in MAAS",
                    agent.hostname,
                    many.join(", ")
                )),
                ([one], hosts) if hosts.iter().any(|h| h != one) => conflict(format!(
                    "{}: its MACs belong to MAAS machine {} ({one}) but its hostname to {}; fix the hostname or \
                     the MACs, then `fleetctl machines rematch {}`",
                    agent.hostname,
                    name_of(one),
                    hosts.iter().filter(|h| *h != one).copied().collect::<Vec<_>>().join(", "),
                    agent.hostname
                )),
                ([one], _) => {
                    Outcome::Matched { machine_id: agent.machine_id.clone(), system_id: one.to_string(), by: By::Mac }
                }
                (many, _) => conflict(format!(
                    "{}: its MACs belong to several MAAS machines ({}); check the MACs in MAAS",
                    agent.hostname,
                    many.join(", ")
                )),
            }
        })
        .collect();

    // Two agents claiming one machine: none of the new claims is taken; an existing match stays.
    let mut claims: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, outcome) in outcomes.iter().enumerate() {
        if let Outcome::Matched { system_id, .. } = outcome {
            claims.entry(system_id.clone()).or_default().push(index);
        }
    }
    for (system_id, indexes) in claims {
        if indexes.len() < 2 {
            continue;
        }
        let names: Vec<String> = indexes.iter().map(|&i| agents[i].hostname.clone()).collect();
        for &index in &indexes {
            if matches!(outcomes[index], Outcome::Matched { by: By::Kept, .. }) {
                continue;
            }
            outcomes[index] = Outcome::Conflict {
                machine_id: agents[index].machine_id.clone(),
                message: format!(
                    "{}: agents {} all claim MAAS machine {} ({system_id}); retire the stale agent with \
                     `fleetctl agents revoke`",
                    agents[index].hostname,
                    names.join(", "),
                    name_of(&system_id)
                ),
            };
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, hostname: &str, macs: &[&str], current: Option<&str>) -> AgentFacts {
        AgentFacts {
            machine_id: id.into(),
            hostname: hostname.into(),
            macs: macs.iter().map(|m| m.to_string()).collect(),
            system_id: current.map(str::to_string),
        }
    }

    fn maas(sid: &str, hostname: &str, macs: &[&str]) -> MaasFacts {
        MaasFacts {
            system_id: sid.into(),
            hostname: hostname.into(),
            macs: macs.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn lab() -> Vec<MaasFacts> {
        vec![maas("aaa", "server1", &["52:54:00:00:00:01"]), maas("bbb", "server2", &["52:54:00:00:00:02"])]
    }

    fn check(agents: &[AgentFacts], maas: &[MaasFacts], expected: &[&str]) {
        let got: Vec<String> = match_agents(agents, maas)
            .into_iter()
            .map(|o| match o {
                Outcome::Matched { system_id, by, .. } => format!("{system_id} by {}", by.as_str()),
                Outcome::Conflict { message, .. } => format!("conflict: {message}"),
                Outcome::Unmatched { .. } => "unmatched".to_string(),
            })
            .collect();
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn macs_first_then_hostname() {
        check(
            &[
                agent("1", "whatever", &["52:54:00:00:00:01"], None),
                agent("2", "SERVER2.maas", &["02:fc:00:00:00:01"], None),
                agent("3", "server9", &["02:fc:00:00:00:01"], None),
            ],
            &lab(),
            &["aaa by MAC address", "bbb by hostname", "unmatched"],
        );
    }

    #[test]
    fn macs_and_hostname_disagreeing_is_a_conflict() {
        let outcomes = match_agents(&[agent("1", "server2", &["52:54:00:00:00:01"], None)], &lab());
        let Outcome::Conflict { message, .. } = &outcomes[0] else { panic!("{outcomes:?}") };
        assert!(message.contains("belong to MAAS machine server1 (aaa) but its hostname to bbb"), "{message}");
    }

    #[test]
    fn two_agents_for_one_machine_is_a_conflict_but_an_existing_match_stays() {
        let both_new = [agent("1", "server1", &[], None), agent("2", "x", &["52:54:00:00:00:01"], None)];
        let outcomes = match_agents(&both_new, &lab());
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Conflict { .. })), "{outcomes:?}");
        let one_kept = [agent("1", "server1", &[], Some("aaa")), agent("2", "x", &["52:54:00:00:00:01"], None)];
        let outcomes = match_agents(&one_kept, &lab());
        assert!(matches!(outcomes[0], Outcome::Matched { by: By::Kept, .. }), "{outcomes:?}");
        assert!(matches!(outcomes[1], Outcome::Conflict { .. }), "{outcomes:?}");
    }

    #[test]
    fn a_replaced_nic_keeps_the_match_until_rematch() {
        // server1's NIC was replaced: its new MAC is unknown to MAAS, and the old match stays.
        check(&[agent("1", "server1", &["52:54:00:00:99:99"], Some("aaa"))], &lab(), &["aaa by earlier match"]);
        // A rematch clears the match; the hostname finds it again.
        check(&[agent("1", "server1", &["52:54:00:00:99:99"], None)], &lab(), &["aaa by hostname"]);
        // A match to a machine MAAS no longer has is not kept.
        check(&[agent("1", "server1", &[], Some("gone"))], &lab(), &["aaa by hostname"]);
    }

    #[test]
    fn macs_of_several_machines_or_duplicate_names_are_conflicts() {
        let outcomes = match_agents(&[agent("1", "a", &["52:54:00:00:00:01", "52:54:00:00:00:02"], None)], &lab());
        assert!(matches!(&outcomes[0], Outcome::Conflict { message, .. } if message.contains("several MAAS machines")));
        let twins = [maas("aaa", "server1", &[]), maas("ccc", "server1", &[])];
        let outcomes = match_agents(&[agent("1", "server1", &[], None)], &twins);
        assert!(matches!(&outcomes[0], Outcome::Conflict { message, .. } if message.contains("named server1")));
    }
}
