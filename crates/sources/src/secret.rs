//! Secrets (registry passwords) that come from a file or an environment variable.
//!
//! The value is read when a source connects, not when the configuration is loaded, so
//! a rotated password file is picked up at the next reconnect without a restart. The
//! value itself never reaches a log line, a metric or an error message: [`Secret`]
//! prints as `<redacted>`, and errors name only where the secret was looked for.

use std::fmt;
use std::path::PathBuf;

/// Where a secret is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose whole content (less one trailing newline) is the secret, as
    /// Kubernetes Secrets are mounted.
    File(PathBuf),
    /// An environment variable of the registry-sync process.
    Env(String),
}

/// Shows where the secret is, never what it is.
impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A user name and where its password is kept (ZooKeeper digest auth, etcd users).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: SecretSource,
}

/// Why a secret could not be read. Names the place, never the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the password file {}: {error}; check that it exists and that registry-sync may read it", path.display())]
    File { path: PathBuf, error: std::io::Error },
    #[error("the environment variable {0} that should hold the password is not set (or is not UTF-8)")]
    Env(String),
    #[error("the password in {0} is empty")]
    Empty(String),
}

/// A secret value. Prints as `<redacted>`; use [`Secret::expose`] to hand it to a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
}

impl SecretSource {
    /// Reads the secret now. One trailing `\n` or `\r\n` of a file is dropped, since
    /// editors and `echo` add one and no password ends in a newline on purpose.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| SecretError::File {
                    path: path.clone(),
                    error,
                })?;
                let trimmed = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                trimmed.to_string()
            }
            SecretSource::Env(name) => std::env::var(name).map_err(|_| SecretError::Env(name.clone()))?,
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(Secret(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_loses_one_trailing_newline_and_never_prints_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let secret = SecretSource::File(path).read().unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
    }

    #[test]
    fn a_missing_file_or_variable_is_an_error_that_names_the_place_only() {
        let missing = SecretSource::File("/nonexistent/registry-sync-password".into());
        let error = missing.read().unwrap_err().to_string();
        assert!(error.contains("/nonexistent/registry-sync-password"), "{error}");
        let env = SecretSource::Env("REGISTRY_SYNC_TEST_SURELY_UNSET_VARIABLE".into());
        let error = env.read().unwrap_err().to_string();
        assert!(
            error.contains("REGISTRY_SYNC_TEST_SURELY_UNSET_VARIABLE"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            SecretSource::File(path).read(),
            Err(SecretError::Empty(_))
        ));
    }
}
