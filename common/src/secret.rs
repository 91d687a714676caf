//! [`Secret`]: a string that never shows itself in `Debug`, `Display`, logs or JSON; and the checks for secret files.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A token, key or password. Read it with [`Secret::expose`], and only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself; keep the result out of logs and errors.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`", .path.display(), .path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot read {}: {source}; check the path and its permissions", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Refuses a file that group or others may read (any of the 0o077 bits set).
///
/// # Errors
/// [`SecretFileError::TooOpen`] with the fix in the message, or [`SecretFileError::Read`].
pub fn check_private(path: &Path) -> Result<(), SecretFileError> {
    let metadata = std::fs::metadata(path).map_err(|source| SecretFileError::Read { path: path.to_owned(), source })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Reads a secret file after [`check_private`]; surrounding whitespace is dropped.
///
/// # Errors
/// See [`check_private`].
pub fn read_private(path: &Path) -> Result<Secret, SecretFileError> {
    check_private(path)?;
    let text =
        std::fs::read_to_string(path).map_err(|source| SecretFileError::Read { path: path.to_owned(), source })?;
    Ok(Secret::new(text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_json_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.to_string(), "***");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn files_open_to_group_or_others_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_private(&path).unwrap_err().to_string();
        assert!(error.contains("(mode 0644)"), "{error}");
        assert!(error.contains(&format!("run `chmod 600 {}`", path.display())), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&path).unwrap().expose(), "s3cret");
    }
}
