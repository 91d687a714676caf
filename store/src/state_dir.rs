//! [`StateDir`]: every file the coordinator keeps in its state directory, named in one table ([`ENTRIES`]) with
//! what each is and how a backup takes it, so a new file cannot be added without saying how it is backed up.
//!
//! Everything else (the coordinator's PKI, operators, router client, lab plan; [`crate::backup`]) asks a
//! `StateDir` for its paths and never joins a file name to the directory itself.

use std::path::{Path, PathBuf};

/// The file names; [`ENTRIES`] says what each is.
pub mod names {
    /// The SQLite database (every table, [`crate::schema`]).
    pub const DATABASE: &str = "coordinator.db";
    /// SQLite's write-ahead log beside the database (WAL mode).
    pub const DATABASE_WAL: &str = "coordinator.db-wal";
    /// SQLite's shared-memory index of the WAL.
    pub const DATABASE_SHM: &str = "coordinator.db-shm";
    /// The coordinator's private CA.
    pub const CA_CERT: &str = "ca.pem";
    /// Its key (0600).
    pub const CA_KEY: &str = "ca.key";
    /// The gRPC server's certificate, issued by the CA.
    pub const SERVER_CERT: &str = "server.pem";
    /// Its key (0600).
    pub const SERVER_KEY: &str = "server.key";
    /// The next CA during a rotation (`coordinator ca rotate` until `ca retire-old`).
    pub const NEXT_CA_CERT: &str = "ca-next.pem";
    /// Its key (0600).
    pub const NEXT_CA_KEY: &str = "ca-next.key";
    /// How fleetctl on this host reaches the coordinator (`model::client_config`).
    pub const CLIENT_CONFIG: &str = model::client_config::FILE_NAME;
    /// One folder per operator (`coordinator operators add`): certificate, key, bearer token, client.toml.
    pub const OPERATORS: &str = "operators";
    /// The coordinator's client credential for router shims (`coordinator router-cert issue`).
    pub const ROUTER_CLIENT: &str = "router-client";
    /// The router client certificate, under [`ROUTER_CLIENT`].
    pub const ROUTER_CLIENT_CERT: &str = "client.pem";
    /// Its key (0600), under [`ROUTER_CLIENT`].
    pub const ROUTER_CLIENT_KEY: &str = "client.key";
    /// The last applied lab plan.
    pub const LAB_APPLIED: &str = "lab-applied.toml";
    /// The lab reconciler's memory of lasting conditions (one event per condition, not one per pass).
    pub const LAB_RECONCILE: &str = "lab-reconcile.json";
    /// The suffix of a file being written, renamed over the real one when complete.
    pub const TEMP_SUFFIX: &str = ".tmp";
    /// The prefix of `coordinator ca rotate`'s scratch folder (removed before it returns).
    pub const ROTATE_SCRATCH: &str = ".rotate-";
}

/// How [`crate::backup`] takes an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    /// SQLite's online backup: a consistent copy while the server writes.
    Database,
    /// Part of the database (its WAL and shared memory): the online backup already holds what they hold.
    WithDatabase,
    /// Copied as is, mode kept; a secret is (and stays) 0600.
    Copy { secret: bool },
    /// A folder: every file beneath copied as is, modes kept.
    Tree,
    /// Transient (a write or a command in progress); never backed up.
    Skip,
}

/// How an entry's name matches what is in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    File,
    Folder,
    /// Any file or folder whose name starts with the entry's name.
    Prefix,
}

/// One thing the coordinator keeps in its state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub shape: Shape,
    pub backup: Backup,
    /// What it is, for people.
    pub what: &'static str,
}

const fn entry(name: &'static str, shape: Shape, backup: Backup, what: &'static str) -> Entry {
    Entry { name, shape, backup, what }
}

const PUBLIC: Backup = Backup::Copy { secret: false };
const SECRET: Backup = Backup::Copy { secret: true };

/// Every entry of a state directory. A file the coordinator writes that is not here fails
/// `every_file_a_running_coordinator_writes_is_known` (coordinator) and is reported by [`StateDir::unknown`].
pub const ENTRIES: &[Entry] = &[
    entry(names::DATABASE, Shape::File, Backup::Database, "the SQLite database: every table"),
    entry(names::DATABASE_WAL, Shape::File, Backup::WithDatabase, "the database's write-ahead log"),
    entry(names::DATABASE_SHM, Shape::File, Backup::WithDatabase, "the database's WAL index"),
    entry(names::CA_CERT, Shape::File, PUBLIC, "the coordinator's private CA"),
    entry(names::CA_KEY, Shape::File, SECRET, "the CA's key"),
    entry(names::SERVER_CERT, Shape::File, PUBLIC, "the gRPC server's certificate"),
    entry(names::SERVER_KEY, Shape::File, SECRET, "the gRPC server's key"),
    entry(names::NEXT_CA_CERT, Shape::File, PUBLIC, "the next CA, during a rotation"),
    entry(names::NEXT_CA_KEY, Shape::File, SECRET, "the next CA's key, during a rotation"),
    entry(names::CLIENT_CONFIG, Shape::File, PUBLIC, "how fleetctl on this host reaches the coordinator"),
    entry(names::OPERATORS, Shape::Folder, Backup::Tree, "each operator's credential and client.toml"),
    entry(names::ROUTER_CLIENT, Shape::Folder, Backup::Tree, "the coordinator's client credential for router shims"),
    entry(names::LAB_APPLIED, Shape::File, PUBLIC, "the last applied lab plan"),
    entry(names::LAB_RECONCILE, Shape::File, PUBLIC, "the lab reconciler's memory of lasting conditions"),
    entry(LAB_APPLIED_TEMP, Shape::File, Backup::Skip, "the applied lab plan being written"),
    entry(LAB_RECONCILE_TEMP, Shape::File, Backup::Skip, "the reconciler's memory being written"),
    entry(names::ROTATE_SCRATCH, Shape::Prefix, Backup::Skip, "`coordinator ca rotate`'s scratch folder"),
];

const LAB_APPLIED_TEMP: &str = "lab-applied.toml.tmp";
const LAB_RECONCILE_TEMP: &str = "lab-reconcile.json.tmp";

/// The coordinator's state directory and the path of each file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entry a top-level name of the directory belongs to, if any.
    pub fn entry(name: &str) -> Option<&'static Entry> {
        ENTRIES.iter().find(|e| match e.shape {
            Shape::File | Shape::Folder => e.name == name,
            Shape::Prefix => name.starts_with(e.name),
        })
    }

    /// What is in the directory but not in [`ENTRIES`] (so no backup takes it); empty when it does not exist.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn unknown(&self) -> std::io::Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut unknown = Vec::new();
        for found in entries {
            let found = found?;
            let name = found.file_name();
            let known = name.to_str().and_then(StateDir::entry).is_some_and(|e| match e.shape {
                Shape::File => found.file_type().is_ok_and(|t| t.is_file()),
                Shape::Folder => found.file_type().is_ok_and(|t| t.is_dir()),
                Shape::Prefix => true,
            });
            if !known {
                unknown.push(found.path());
            }
        }
        unknown.sort();
        Ok(unknown)
    }

    /// The path of `entry` in this directory.
    pub fn path_of(&self, entry: &Entry) -> PathBuf {
        self.root.join(entry.name)
    }

    pub fn database(&self) -> PathBuf {
        self.root.join(names::DATABASE)
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.root.join(names::CA_CERT)
    }

    pub fn ca_key(&self) -> PathBuf {
        self.root.join(names::CA_KEY)
    }

    pub fn server_cert(&self) -> PathBuf {
        self.root.join(names::SERVER_CERT)
    }

    pub fn server_key(&self) -> PathBuf {
        self.root.join(names::SERVER_KEY)
    }

    pub fn next_ca_cert(&self) -> PathBuf {
        self.root.join(names::NEXT_CA_CERT)
    }

    pub fn next_ca_key(&self) -> PathBuf {
        self.root.join(names::NEXT_CA_KEY)
    }

    pub fn client_config(&self) -> PathBuf {
        self.root.join(names::CLIENT_CONFIG)
    }

    /// The folder of every operator's credential.
    pub fn operators(&self) -> PathBuf {
        self.root.join(names::OPERATORS)
    }

    /// Operator `name`'s folder (its certificate, key, token and client.toml).
    pub fn operator(&self, name: &str) -> PathBuf {
        self.operators().join(name)
    }

    pub fn router_client(&self) -> PathBuf {
        self.root.join(names::ROUTER_CLIENT)
    }

    pub fn router_client_cert(&self) -> PathBuf {
        self.router_client().join(names::ROUTER_CLIENT_CERT)
    }

    pub fn router_client_key(&self) -> PathBuf {
        self.router_client().join(names::ROUTER_CLIENT_KEY)
    }

    pub fn lab_applied(&self) -> PathBuf {
        self.root.join(names::LAB_APPLIED)
    }

    pub fn lab_reconcile(&self) -> PathBuf {
        self.root.join(names::LAB_RECONCILE)
    }

    /// A scratch folder for `coordinator ca rotate` (process `id`), removed when the command ends.
    pub fn rotate_scratch(&self, id: u32) -> PathBuf {
        self.root.join(format!("{}{id}", names::ROTATE_SCRATCH))
    }

    /// Writes `contents` to `path` (a file of this directory) through its `.tmp` sibling and a rename, so a
    /// reader finds the old file or the new one, never half of one.
    ///
    /// # Errors
    /// The temporary file cannot be written or renamed.
    pub(crate) fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(names::TEMP_SUFFIX);
        let temp = PathBuf::from(temp);
        std::fs::write(&temp, contents).and_then(|()| std::fs::rename(&temp, path))
    }
}

impl AsRef<Path> for StateDir {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_one_entry_and_every_path_is_an_entry() {
        for (index, e) in ENTRIES.iter().enumerate() {
            assert!(!ENTRIES[..index].iter().any(|other| other.name == e.name), "{} listed twice", e.name);
        }
        let state = StateDir::new("/s");
        let top_level = [
            state.database(),
            state.ca_cert(),
            state.ca_key(),
            state.server_cert(),
            state.server_key(),
            state.next_ca_cert(),
            state.next_ca_key(),
            state.client_config(),
            state.operators(),
            state.router_client(),
            state.lab_applied(),
            state.lab_reconcile(),
            state.rotate_scratch(42),
        ];
        for path in top_level {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(StateDir::entry(name).is_some(), "{name} is not in ENTRIES");
        }
        for temp in [LAB_APPLIED_TEMP, LAB_RECONCILE_TEMP] {
            assert_eq!(StateDir::entry(temp).unwrap().backup, Backup::Skip);
        }
        assert_eq!(format!("{}{}", names::LAB_APPLIED, names::TEMP_SUFFIX), LAB_APPLIED_TEMP);
        assert_eq!(format!("{}{}", names::LAB_RECONCILE, names::TEMP_SUFFIX), LAB_RECONCILE_TEMP);
    }

    #[test]
    fn keys_are_secrets() {
        for e in ENTRIES.iter().filter(|e| e.name.ends_with(".key")) {
            assert_eq!(e.backup, Backup::Copy { secret: true }, "{}", e.name);
        }
    }

    #[test]
    fn unknown_lists_what_no_entry_names() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(state.database(), "").unwrap();
        std::fs::create_dir(state.operators()).unwrap();
        std::fs::create_dir(state.rotate_scratch(7)).unwrap();
        std::fs::write(dir.path().join("stray.txt"), "").unwrap();
        // A file where a folder belongs is not what the entry means.
        std::fs::write(state.router_client(), "").unwrap();
        assert_eq!(state.unknown().unwrap(), vec![state.router_client(), dir.path().join("stray.txt")]);
        assert!(StateDir::new(dir.path().join("absent")).unknown().unwrap().is_empty());
    }

    #[test]
    fn write_atomically_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        StateDir::write_atomically(&state.lab_applied(), "x = 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(state.lab_applied()).unwrap(), "x = 1\n");
        assert!(state.unknown().unwrap().is_empty());
        assert!(!dir.path().join(LAB_APPLIED_TEMP).exists());
    }
}
