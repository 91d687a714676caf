//! The plan file `lab.toml`: the desired lab, as an operator writes it and as `fleetctl export` prints it.
//!
//! The schema is strict (`deny_unknown_fields` everywhere) so a typo is an error naming file, line and key. It
//! derives `Serialize` too because it crosses two boundaries on purpose: fleetctl sends it to the coordinator as
//! TOML text, and `export` writes it back out.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::SpecProfile;

/// The whole plan file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    #[serde(default, skip_serializing_if = "MaasSettings::is_empty")]
    pub maas: MaasSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<SshKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubnetPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterPlan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DevicePlan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachinePlan>,
    /// `[profiles.NAME]`: kept as TOML so the file round-trips; [`LabFile::profiles`] gives the typed form.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, toml::Table>,
}

/// `[maas]`: MAAS's global settings the lab needs (the connection itself is the coordinator's config).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaasSettings {
    /// DNS forwarders (MAAS `upstream_dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_dns: Option<Vec<String>>,
    /// `auto`, `yes` or `no`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnssec_validation: Option<String>,
    /// Global kernel parameters, e.g. `net.ifnames=0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_opts: Option<String>,
}

impl MaasSettings {
    fn is_empty(&self) -> bool {
        self.upstream_dns.is_none() && self.dnssec_validation.is_none() && self.kernel_opts.is_none()
    }
}

/// `[[images]]`: one release to select and import.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(default = "ubuntu")]
    pub os: String,
    pub release: String,
    #[serde(default = "amd64")]
    pub arches: Vec<String>,
}

fn ubuntu() -> String {
    "ubuntu".to_string()
}

fn amd64() -> Vec<String> {
    vec!["amd64".to_string()]
}

/// `[[ssh_keys]]`: inline, or a file fleetctl reads and sends inline.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// `[subnet]`: the MAAS subnet with its ranges and DHCP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetPlan {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// MAAS DHCP on the subnet's VLAN, served by the rack controller on that VLAN.
    #[serde(default)]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangePlan>,
}

/// `[[subnet.ranges]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangePlan {
    #[serde(rename = "type")]
    pub range_type: RangeType,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeType {
    Dynamic,
    Reserved,
}

impl RangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            RangeType::Dynamic => "dynamic",
            RangeType::Reserved => "reserved",
        }
    }
}

/// `[router]`: which shim drives the router, and what the router must look like.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterPlan {
    /// `https://HOST:PORT` (or `http://` for a plaintext shim).
    pub shim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    /// The coordinator's client certificate for the shim (mTLS); by default the one
    /// `coordinator router-cert issue` left in the state directory, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The router's own DHCP server; `false` before MAAS DHCP may be switched on.
    #[serde(default)]
    pub dhcp: bool,
    /// MAIN's interface on the router's LAN, where the coordinator probes for DHCP servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interface: Option<String>,
    /// How long each probe listens; longer than the shim's 3 s default so a slow server is seen.
    #[serde(with = "humantime_serde", default = "default_probe_window")]
    pub probe_window: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<ForwardPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_management: Option<RemoteManagementPlan>,
}

fn default_probe_window() -> Duration {
    Duration::from_secs(5)
}

/// `[[router.forwards]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardPlan {
    pub name: String,
    #[serde(default = "tcp")]
    pub proto: String,
    pub external_port: u16,
    pub to: SocketAddrV4,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub reconcile: ReconcileMode,
}

fn tcp() -> String {
    "tcp".to_string()
}

/// What reconciliation does when the forward disappeared from the router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileMode {
    #[default]
    Reapply,
    Report,
}

/// `[router.remote_management]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteManagementPlan {
    pub enabled: bool,
    #[serde(default)]
    pub from: Vec<String>,
}

/// `[[devices]]`: a non-deployable device registered in MAAS (the router).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePlan {
    pub hostname: String,
    pub mac: String,
}

/// `[[machines]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MachinePlan {
    pub hostname: String,
    pub macs: Vec<String>,
    #[serde(default = "amd64_generic")]
    pub architecture: String,
    #[serde(default = "manual")]
    pub power_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub power_parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn amd64_generic() -> String {
    "amd64/generic".to_string()
}

fn manual() -> String {
    "manual".to_string()
}

/// Why a plan file is not usable; every variant is a usage error (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Parse(#[from] metalfleet_common::config::Error),
    #[error("{path}: {problem}; fix the plan file")]
    Invalid { path: String, problem: String },
    #[error("cannot read ssh key file {path} named in the plan: {source}; check the `file` of that [[ssh_keys]] entry")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LabFile {
    /// Parses and validates the text of `path`.
    ///
    /// # Errors
    /// [`FileError::Parse`] with file, line, column and key; [`FileError::Invalid`] for rules across fields.
    pub fn parse(path: &Path, text: &str) -> Result<LabFile, FileError> {
        let file: LabFile = metalfleet_common::config::parse(path, text)?;
        file.validate(&path.display().to_string())?;
        Ok(file)
    }

    /// Checks the rules serde cannot: key xor file, profile names, MAC shapes, range order.
    ///
    /// # Errors
    /// The first problem, named by its key.
    pub fn validate(&self, path: &str) -> Result<(), FileError> {
        let bad = |problem: String| FileError::Invalid { path: path.to_string(), problem };
        for (i, key) in self.ssh_keys.iter().enumerate() {
            if key.key.is_some() == key.file.is_some() {
                return Err(bad(format!("ssh_keys[{i}]: give exactly one of `key` or `file`")));
            }
        }
        if let Some(dnssec) = &self.maas.dnssec_validation
            && !matches!(dnssec.as_str(), "auto" | "yes" | "no")
        {
            return Err(bad(format!("maas.dnssec_validation: {dnssec:?} is not one of auto, yes, no")));
        }
        if let Some(subnet) = &self.subnet {
            for (i, range) in subnet.ranges.iter().enumerate() {
                if range.start > range.end {
                    return Err(bad(format!("subnet.ranges[{i}]: start {} is after end {}", range.start, range.end)));
                }
            }
        }
        if let Some(router) = &self.router {
            for forward in &router.forwards {
                if !matches!(forward.proto.as_str(), "tcp" | "udp") {
                    return Err(bad(format!("router.forwards `{}`: proto must be tcp or udp", forward.name)));
                }
            }
        }
        for machine in &self.machines {
            if machine.macs.is_empty() {
                return Err(bad(format!("machines `{}`: give at least one MAC in `macs`", machine.hostname)));
            }
            for mac in &machine.macs {
                if !is_mac(mac) {
                    return Err(bad(format!(
                        "machines `{}`: {mac:?} is not a MAC like aa:bb:cc:dd:ee:ff",
                        machine.hostname
                    )));
                }
            }
            if let Some(profile) = &machine.profile
                && !self.profiles.contains_key(profile)
            {
                return Err(bad(format!(
                    "machines `{}`: profile {profile:?} has no [profiles.{profile}]",
                    machine.hostname
                )));
            }
        }
        for device in &self.devices {
            if !is_mac(&device.mac) {
                return Err(bad(format!("devices `{}`: {:?} is not a MAC", device.hostname, device.mac)));
            }
        }
        self.profiles().map_err(bad)?;
        Ok(())
    }

    /// The typed `[profiles.NAME]` tables.
    ///
    /// # Errors
    /// The profile that does not match the schema, in words.
    pub fn profiles(&self) -> Result<BTreeMap<String, SpecProfile>, String> {
        self.profiles
            .iter()
            .map(|(name, table)| {
                let profile = toml::Value::Table(table.clone())
                    .try_into::<SpecProfile>()
                    .map_err(|e| format!("profiles.{name}: {}", e.message()))?;
                Ok((name.clone(), profile))
            })
            .collect()
    }

    /// Replaces every `file = PATH` ssh key by `key = CONTENT`, reading the file here (`~` is the home directory).
    ///
    /// # Errors
    /// [`FileError::KeyFile`] naming the file.
    pub fn inline_ssh_keys(&mut self, home: Option<&Path>) -> Result<(), FileError> {
        for key in &mut self.ssh_keys {
            if let Some(file) = key.file.take() {
                let path = match (file.strip_prefix("~"), home) {
                    (Ok(rest), Some(home)) => home.join(rest),
                    _ => file.clone(),
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| FileError::KeyFile { path: path.clone(), source })?;
                key.key = Some(text.trim().to_string());
            }
        }
        Ok(())
    }

    /// The TOML text of this plan.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot write the plan: {error}\n"))
    }
}

/// `aa:bb:cc:dd:ee:ff`, either case.
pub fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/examples/lab.toml");

    fn parse(text: &str) -> Result<LabFile, FileError> {
        LabFile::parse(Path::new("lab.toml"), text)
    }

    #[test]
    fn the_example_reproduces_the_reference_lab() {
        let lab = parse(EXAMPLE).unwrap();
        assert_eq!(lab.maas.upstream_dns.as_deref(), Some(&["172.20.129.131".to_string()][..]));
        assert_eq!(lab.maas.kernel_opts.as_deref(), Some("net.ifnames=0"));
        let releases: Vec<&str> = lab.images.iter().map(|i| i.release.as_str()).collect();
        assert_eq!(releases, ["jammy", "focal"]);
        let subnet = lab.subnet.as_ref().unwrap();
        assert_eq!(subnet.cidr, "172.16.0.0/20");
        assert!(subnet.dhcp);
        assert_eq!(subnet.ranges[0].range_type, RangeType::Dynamic);
        assert_eq!(subnet.ranges[0].start, Ipv4Addr::new(172, 16, 11, 1));
        assert_eq!(subnet.ranges[0].end, Ipv4Addr::new(172, 16, 14, 255));
        assert_eq!(subnet.ranges[0].comment, "reserved range (MAAS dynamic)");
        assert_eq!(lab.machines.len(), 4);
        for (n, machine) in lab.machines.iter().enumerate() {
            assert_eq!(machine.hostname, format!("server{}", n + 1));
            assert_eq!(machine.power_type, "amt");
            assert_eq!(machine.power_parameters["power_address"], format!("172.16.15.{}", n + 1));
        }
        let router = lab.router.as_ref().unwrap();
        assert!(!router.dhcp);
        let ssh = &router.forwards[0];
        assert_eq!((ssh.external_port, ssh.to, ssh.protected), (22, "172.16.0.3:22".parse().unwrap(), true));
        assert_eq!(lab.profiles().unwrap().len(), 3);
    }

    #[test]
    fn the_plan_round_trips_through_toml() {
        let lab = parse(EXAMPLE).unwrap();
        let again = parse(&lab.to_toml()).unwrap();
        assert_eq!(lab, again);
    }

    #[test]
    fn unknown_keys_name_line_and_key() {
        let err = parse("[subnet]\ncidr = \"10.0.0.0/24\"\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("lab.toml:3") && text.contains("bogus"), "{text}");
        let err = parse("[[subnet.ranges]]\n").unwrap_err();
        assert!(err.to_string().contains("lab.toml:"), "{err}");
    }

    #[test]
    fn rules_across_fields_are_checked() {
        let err = parse("[[ssh_keys]]\nkey = \"a\"\nfile = \"b\"\n").unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = parse("[[machines]]\nhostname = \"s\"\nmacs = [\"zz\"]\n").unwrap_err();
        assert!(err.to_string().contains("not a MAC"), "{err}");
        let err =
            parse("[[machines]]\nhostname = \"s\"\nmacs = [\"52:54:00:00:00:01\"]\nprofile = \"big\"\n").unwrap_err();
        assert!(err.to_string().contains("[profiles.big]"), "{err}");
        let err = parse(
            "[subnet]\ncidr = \"x\"\n[[subnet.ranges]]\ntype = \"dynamic\"\nstart = \"10.0.0.9\"\nend = \"10.0.0.1\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("after end"), "{err}");
    }

    #[test]
    fn ssh_key_files_are_inlined() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        std::fs::write(dir.path().join(".ssh/id.pub"), "ssh-ed25519 AAAA me@main\n").unwrap();
        let mut lab = parse("[[ssh_keys]]\nfile = \"~/.ssh/id.pub\"\n").unwrap();
        lab.inline_ssh_keys(Some(dir.path())).unwrap();
        assert_eq!(lab.ssh_keys[0].key.as_deref(), Some("ssh-ed25519 AAAA me@main"));
        let mut lab = parse("[[ssh_keys]]\nfile = \"/nonexistent/key.pub\"\n").unwrap();
        assert!(lab.inline_ssh_keys(None).unwrap_err().to_string().contains("/nonexistent/key.pub"));
    }
}
