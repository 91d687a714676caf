//! The router shim's core: validation, idempotency, read-back and commit-confirm over any backend.
//!
//! Every change goes through [`Shim::apply`]: validate (nothing touches the router before the input
//! is known to be good), read the state, decide whether anything must change (applying the same
//! state twice is a no-op), apply, read back and check that the router now is as asked, then log
//! the before/after state. A change that could cut off access (removing or changing a protected
//! forward, disabling remote management) is registered as pending: unless [`Shim::confirm`] is
//! called before its deadline, the shim restores the previous state by itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use crate::backend::{self, Backend, BackendError, Confirmer};
use crate::config::Config;
use crate::model::{self, InvalidInput, PortForward, RemoteManagement, RouterState};

/// One change a caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Dhcp { enabled: bool },
    AddForward { forward: PortForward, replace: bool },
    RemoveForward { name: String },
    RemoteManagement(RemoteManagement),
    Reset,
}

/// A protected change that waits for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub id: String,
    pub deadline: SystemTime,
}

/// What [`Shim::apply`] did.
#[derive(Debug, Clone)]
pub struct ChangeOutcome {
    /// False when the router already was in the asked state.
    pub changed: bool,
    pub before: RouterState,
    pub after: RouterState,
    pub pending: Option<PendingChange>,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the router does not show the change after applying it: {0}; check the router by hand")]
    ReadBack(String),
    #[error("no pending change {0}; it was confirmed or rolled back already, or its id is wrong")]
    UnknownPending(String),
}

/// How to undo a protected change.
#[derive(Debug, Clone)]
enum Rollback {
    RestoreForward(PortForward),
    RestoreManagement(RemoteManagement),
}

struct Pending {
    rollback: Rollback,
    /// Cancelled when the change is confirmed or rolled back, which stops its timer.
    done: CancellationToken,
}

/// Settings the shim takes from config.
#[derive(Debug, Clone)]
pub struct ShimSettings {
    pub lan_prefix: Ipv4Net,
    pub protected_forwards: Vec<String>,
    pub confirm_timeout: Duration,
    /// Where DHCP's state as first found is kept, for `reset`.
    pub dhcp_found_file: PathBuf,
    /// Roll back by a timer when no confirmation comes (serve). The local CLI waits in the
    /// foreground itself and turns this off, so that two rollbacks never race.
    pub auto_rollback: bool,
}

impl ShimSettings {
    pub fn from_config(config: &Config) -> Self {
        ShimSettings {
            lan_prefix: config.lan_prefix,
            protected_forwards: config.protected_forwards.clone(),
            confirm_timeout: config.confirm_timeout,
            dhcp_found_file: config.state_file("dhcp-found.json"),
            auto_rollback: true,
        }
    }
}

pub struct Shim {
    backend: Arc<dyn Backend>,
    settings: ShimSettings,
    /// Serialises changes: each one reads, applies and reads back without another in between.
    change_lock: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Shim {
    pub fn new(backend: Arc<dyn Backend>, settings: ShimSettings) -> Arc<Self> {
        Arc::new(Shim { backend, settings, change_lock: tokio::sync::Mutex::new(()), pending: Mutex::default() })
    }

    /// Builds the configured backend and the shim over it.
    pub fn from_config(config: &Config, confirmer: Arc<dyn Confirmer>) -> Result<Arc<Self>, BackendError> {
        Self::from_settings(config, ShimSettings::from_config(config), confirmer)
    }

    /// Like [`Shim::from_config`] with settings the caller adjusted (the CLI turns auto-rollback off).
    pub fn from_settings(
        config: &Config,
        settings: ShimSettings,
        confirmer: Arc<dyn Confirmer>,
    ) -> Result<Arc<Self>, BackendError> {
        let backend = backend::build(config, confirmer)?;
        Ok(Shim::new(backend, settings))
    }

    pub fn settings(&self) -> &ShimSettings {
        &self.settings
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Reads the router's state, marking the protected forwards.
    pub async fn state(&self) -> Result<RouterState, ShimError> {
        let mut state = self.backend.state().await?;
        for forward in &mut state.forwards {
            forward.protected = self.is_protected(&forward.name);
        }
        state.forwards.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(state)
    }

    fn is_protected(&self, name: &str) -> bool {
        self.settings.protected_forwards.iter().any(|p| p == name)
    }

    /// Validates without touching the router.
    pub fn validate(&self, change: &Change) -> Result<(), InvalidInput> {
        match change {
            Change::AddForward { forward, .. } => model::validate_forward(forward, self.settings.lan_prefix),
            Change::RemoveForward { name } => model::validate_name(name),
            Change::Dhcp { .. } | Change::RemoteManagement(_) | Change::Reset => Ok(()),
        }
    }

    /// Applies `change`; see the module documentation.
    ///
    /// # Errors
    /// Invalid input (nothing applied), a backend failure, or a read-back that does not show the change.
    pub async fn apply(self: &Arc<Self>, change: Change) -> Result<ChangeOutcome, ShimError> {
        self.validate(&change)?;
        let _guard = self.change_lock.lock().await;
        let before = self.state().await?;
        let mut rollback = None;
        let changed = match &change {
            Change::Dhcp { enabled } => {
                if before.dhcp_enabled == *enabled {
                    false
                } else {
                    self.remember_dhcp(before.dhcp_enabled)?;
                    self.backend.set_dhcp(*enabled).await?;
                    true
                }
            }
            Change::AddForward { forward, replace } => {
                let forward = PortForward { protected: self.is_protected(&forward.name), ..forward.clone() };
                if let Some(other) = before.forwards.iter().find(|f| {
                    f.name != forward.name && f.protocol == forward.protocol && f.external_port == forward.external_port
                }) {
                    return Err(InvalidInput::Conflict {
                        name: forward.name.clone(),
                        existing: format!("port taken by {other}"),
                    }
                    .into());
                }
                match before.forward(&forward.name) {
                    Some(existing) if existing.same_rule(&forward) => false,
                    Some(existing) if !replace => {
                        return Err(InvalidInput::Conflict {
                            name: forward.name.clone(),
                            existing: existing.to_string(),
                        }
                        .into());
                    }
                    existing => {
                        if let Some(existing) = existing.filter(|e| e.protected) {
                            rollback = Some(Rollback::RestoreForward(existing.clone()));
                        }
                        self.backend.add_forward(&forward).await?;
                        true
                    }
                }
            }
            Change::RemoveForward { name } => match before.forward(name) {
                None => false,
                Some(existing) => {
                    if existing.protected {
                        rollback = Some(Rollback::RestoreForward(existing.clone()));
                    }
                    self.backend.remove_forward(name).await?;
                    true
                }
            },
            Change::RemoteManagement(wanted) => {
                let wanted = normalise(wanted);
                if normalise(&before.remote_management) == wanted {
                    false
                } else {
                    if before.remote_management.enabled && !wanted.enabled {
                        rollback = Some(Rollback::RestoreManagement(before.remote_management.clone()));
                    }
                    self.backend.set_remote_management(&wanted).await?;
                    true
                }
            }
            Change::Reset => {
                let found = self.found_dhcp();
                self.backend.reset(found).await?;
                match std::fs::remove_file(&self.settings.dhcp_found_file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(BackendError::file(&self.settings.dhcp_found_file, e).into()),
                }
                true
            }
        };
        let after = if changed { self.state().await? } else { before.clone() };
        if changed {
            check_read_back(&change, &after)?;
        }
        let changed = changed && (after != before || !matches!(change, Change::Reset));
        if changed {
            tracing::info!(backend = self.backend.name(), change = ?change, before = %before, after = %after, "applied change");
        } else {
            tracing::info!(backend = self.backend.name(), change = ?change, "already in the asked state; nothing applied");
        }
        let pending = rollback.map(|rollback| self.register_pending(rollback));
        Ok(ChangeOutcome { changed, before, after, pending })
    }

    fn register_pending(self: &Arc<Self>, rollback: Rollback) -> PendingChange {
        let id = format!("{:016x}", rand::random::<u64>());
        let timeout = self.settings.confirm_timeout;
        let deadline = SystemTime::now() + timeout;
        let done = CancellationToken::new();
        self.lock_pending().insert(id.clone(), Pending { rollback, done: done.clone() });
        if !self.settings.auto_rollback {
            return PendingChange { id, deadline };
        }
        let shim = Arc::clone(self);
        let timer_id = id.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = done.cancelled() => {}
                _ = tokio::time::sleep(timeout) => {
                    tracing::warn!(pending_change_id = %timer_id, "no confirmation in time; rolling back");
                    if let Err(error) = shim.rollback(&timer_id).await {
                        tracing::error!(%error, pending_change_id = %timer_id, "rollback failed; restore the router by hand");
                    }
                }
            }
        });
        tracing::info!(pending_change_id = %id, timeout_s = timeout.as_secs_f64(), "protected change applied; waiting for confirmation");
        PendingChange { id, deadline }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps a pending change. False when it is unknown (already rolled back, or never existed).
    pub fn confirm(&self, id: &str) -> bool {
        match self.lock_pending().remove(id) {
            Some(pending) => {
                pending.done.cancel();
                tracing::info!(pending_change_id = %id, "change confirmed");
                true
            }
            None => false,
        }
    }

    /// Undoes a pending change now (timeout, Ctrl-C, or the person said no).
    pub async fn rollback(&self, id: &str) -> Result<(), ShimError> {
        let pending = self.lock_pending().remove(id).ok_or_else(|| ShimError::UnknownPending(id.to_string()))?;
        pending.done.cancel();
        let _guard = self.change_lock.lock().await;
        let before = self.state().await?;
        match &pending.rollback {
            Rollback::RestoreForward(previous) => self.backend.add_forward(previous).await?,
            Rollback::RestoreManagement(previous) => self.backend.set_remote_management(previous).await?,
        }
        let after = self.state().await?;
        tracing::warn!(pending_change_id = %id, before = %before, after = %after, "rolled back an unconfirmed change");
        Ok(())
    }

    /// Ids of changes that still wait for a confirmation.
    pub fn pending_ids(&self) -> Vec<String> {
        self.lock_pending().keys().cloned().collect()
    }

    fn found_dhcp(&self) -> Option<bool> {
        let text = std::fs::read_to_string(&self.settings.dhcp_found_file).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?.get("dhcp_enabled")?.as_bool()
    }

    fn remember_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
        let path = &self.settings.dhcp_found_file;
        if path.exists() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::file(dir, e))?;
        }
        std::fs::write(path, serde_json::json!({ "dhcp_enabled": enabled }).to_string())
            .map_err(|e| BackendError::file(path, e))
    }
}

fn normalise(management: &RemoteManagement) -> RemoteManagement {
    if !management.enabled {
        return RemoteManagement::default();
    }
    let mut allowed = management.allowed_from.clone();
    if allowed.is_empty() {
        allowed.push(Ipv4Net::default());
    }
    allowed.sort();
    allowed.dedup();
    RemoteManagement { enabled: true, allowed_from: allowed }
}

fn check_read_back(change: &Change, after: &RouterState) -> Result<(), ShimError> {
    let ok = match change {
        Change::Dhcp { enabled } => after.dhcp_enabled == *enabled,
        Change::AddForward { forward, .. } => after.forward(&forward.name).is_some_and(|f| f.same_rule(forward)),
        Change::RemoveForward { name } => after.forward(name).is_none(),
        Change::RemoteManagement(wanted) => normalise(&after.remote_management) == normalise(wanted),
        Change::Reset => true,
    };
    if ok { Ok(()) } else { Err(ShimError::ReadBack(format!("asked {change:?}, read back {after:?}"))) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use async_trait::async_trait;

    /// A router in memory, counting the calls that change it.
    #[derive(Default)]
    pub(crate) struct MemoryBackend {
        pub state: Mutex<(bool, Vec<PortForward>, RemoteManagement)>,
        pub writes: Mutex<u32>,
    }

    impl MemoryBackend {
        fn touch(&self) {
            *self.writes.lock().unwrap() += 1;
        }
    }

    #[async_trait]
    impl Backend for MemoryBackend {
        fn name(&self) -> &'static str {
            "memory"
        }
        async fn state(&self) -> Result<RouterState, BackendError> {
            let s = self.state.lock().unwrap();
            Ok(RouterState {
                backend: "memory".into(),
                dhcp_enabled: s.0,
                dhcp_pool: String::new(),
                forwards: s.1.clone(),
                remote_management: s.2.clone(),
            })
        }
        async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
            self.touch();
            self.state.lock().unwrap().0 = enabled;
            Ok(())
        }
        async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError> {
            self.touch();
            let mut s = self.state.lock().unwrap();
            s.1.retain(|f| f.name != forward.name);
            s.1.push(PortForward { protected: false, ..forward.clone() });
            Ok(())
        }
        async fn remove_forward(&self, name: &str) -> Result<(), BackendError> {
            self.touch();
            self.state.lock().unwrap().1.retain(|f| f.name != name);
            Ok(())
        }
        async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError> {
            self.touch();
            self.state.lock().unwrap().2 = management.clone();
            Ok(())
        }
        async fn reset(&self, found: Option<bool>) -> Result<(), BackendError> {
            self.touch();
            let mut s = self.state.lock().unwrap();
            s.1.clear();
            if let Some(found) = found {
                s.0 = found;
            }
            Ok(())
        }
    }

    pub(crate) fn shim(backend: Arc<MemoryBackend>, dir: &std::path::Path, timeout: Duration) -> Arc<Shim> {
        Shim::new(
            backend,
            ShimSettings {
                lan_prefix: "172.16.0.0/20".parse().unwrap(),
                protected_forwards: vec!["main-ssh".into()],
                confirm_timeout: timeout,
                dhcp_found_file: dir.join("dhcp-found.json"),
                auto_rollback: true,
            },
        )
    }

    pub(crate) fn ssh(port: u16) -> PortForward {
        PortForward {
            name: "main-ssh".into(),
            protocol: model::Protocol::Tcp,
            external_port: port,
            target: "172.16.0.3:22".parse().unwrap(),
            protected: false,
        }
    }

    #[tokio::test]
    async fn same_change_twice_is_a_noop() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        let shim = shim(backend.clone(), dir.path(), Duration::from_secs(60));
        let add = Change::AddForward { forward: ssh(2222), replace: false };
        assert!(shim.apply(add.clone()).await.unwrap().changed);
        let again = shim.apply(add).await.unwrap();
        assert!(!again.changed);
        assert_eq!(*backend.writes.lock().unwrap(), 1);
        assert!(again.after.forwards[0].protected);
    }

    #[tokio::test]
    async fn other_target_needs_replace() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        let shim = shim(backend.clone(), dir.path(), Duration::from_secs(60));
        shim.apply(Change::AddForward { forward: ssh(2222), replace: false }).await.unwrap();
        let error = shim.apply(Change::AddForward { forward: ssh(2223), replace: false }).await.unwrap_err();
        assert!(error.to_string().contains("pass --replace"), "{error}");
        assert_eq!(*backend.writes.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn bad_input_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        let shim = shim(backend.clone(), dir.path(), Duration::from_secs(60));
        let mut outside = ssh(22);
        outside.target = "10.9.9.9:22".parse().unwrap();
        let mut spaced = ssh(22);
        spaced.name = "main ssh".into();
        let mut zero = ssh(0);
        zero.name = "zero".into();
        for forward in [outside, spaced, zero] {
            let error = shim.apply(Change::AddForward { forward, replace: false }).await.unwrap_err();
            assert!(matches!(error, ShimError::Invalid(_)), "{error}");
        }
        assert_eq!(*backend.writes.lock().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unconfirmed_protected_removal_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        let shim = shim(backend.clone(), dir.path(), Duration::from_secs(60));
        shim.apply(Change::AddForward { forward: ssh(2222), replace: false }).await.unwrap();
        let outcome = shim.apply(Change::RemoveForward { name: "main-ssh".into() }).await.unwrap();
        let pending = outcome.pending.expect("protected change is pending");
        assert!(outcome.after.forwards.is_empty());
        tokio::time::sleep(Duration::from_secs(61)).await;
        // The rollback task runs when the clock passes the deadline; yield until it finished.
        for _ in 0..100 {
            if shim.pending_ids().is_empty() && !shim.state().await.unwrap().forwards.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(shim.state().await.unwrap().forwards.len(), 1);
        assert!(!shim.confirm(&pending.id), "already rolled back");
    }

    #[tokio::test(start_paused = true)]
    async fn confirmed_remote_management_disable_stays() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        let shim = shim(backend.clone(), dir.path(), Duration::from_secs(60));
        let on = RemoteManagement { enabled: true, allowed_from: vec!["0.0.0.0/0".parse().unwrap()] };
        assert!(shim.apply(Change::RemoteManagement(on)).await.unwrap().pending.is_none());
        let outcome = shim.apply(Change::RemoteManagement(RemoteManagement::default())).await.unwrap();
        assert!(shim.confirm(&outcome.pending.unwrap().id));
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!shim.state().await.unwrap().remote_management.enabled);
    }

    #[tokio::test]
    async fn reset_restores_dhcp_as_found() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        backend.state.lock().unwrap().0 = true;
        let shim = shim(backend.clone(), dir.path(), Duration::from_secs(60));
        shim.apply(Change::Dhcp { enabled: false }).await.unwrap();
        shim.apply(Change::Dhcp { enabled: true }).await.unwrap();
        shim.apply(Change::Dhcp { enabled: false }).await.unwrap();
        shim.apply(Change::AddForward { forward: ssh(2222), replace: false }).await.unwrap();
        shim.apply(Change::Reset).await.unwrap();
        let state = shim.state().await.unwrap();
        assert!(state.dhcp_enabled);
        assert!(state.forwards.is_empty());
    }
}
