//! The per-remote state directory: where durable state about one account
//! lives (the metadata store, the persisted listings).
//!
//! Unlike the cache directory, nothing here can be rebuilt from the service
//! (an mtime set with `touch -d` exists only here), so it lives under the XDG
//! *state* directory (`$XDG_STATE_HOME`, by default `~/.local/state`), never
//! under the cache directory that users and cleaners wipe freely.
//!
//! The folder is named by the account, not by the mount: every mount of the
//! same account on this machine shares it (the stores inside are SQLite
//! databases safe for several processes), and a remote renamed in the config
//! keeps its state. The name is `<service>-<hash>`, the hash covering the API
//! URL and the key, so the key never appears in a path and two accounts (or a
//! test emulator and the real service) never share state.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::remote::ApiKey;

/// The folder under the state base that holds every account's state.
const APP_DIR: &str = "filehostfs";

/// A stable, path-safe name for one account of one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteIdentity(String);

impl RemoteIdentity {
    /// `service` is the remote's type ("1fichier", "fii.one", "file.io");
    /// `api_url` the URL actually used (the service's default when the
    /// config sets none, so spelling the default out changes nothing).
    pub fn new(service: &str, api_url: &str, key: &ApiKey) -> Self {
        let mut hash = Sha256::new();
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [service, api_url.trim_end_matches('/'), key.expose()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let account = hex::encode(&hash.finalize()[..8]);
        RemoteIdentity(format!("{}-{account}", path_safe(service)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keeps letters, digits, '.', '-' and '_' of a service name; anything else
/// (and a name made only of dots) becomes '_', so the result is one plain
/// path component.
fn path_safe(service: &str) -> String {
    let cleaned: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".repeat(cleaned.len().max(1))
    } else {
        cleaned
    }
}

/// `$XDG_STATE_HOME/filehostfs` (`~/.local/state/filehostfs`), or `None`
/// when the user has no home to put it in.
pub fn default_state_base() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|home| home.join(".local").join("state")))
        .map(|base| base.join(APP_DIR))
}

/// One account's state directory, created (private to the user) on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// `<base>/<identity>`, created with its parents if missing.
    pub fn open(base: &Path, identity: &RemoteIdentity) -> io::Result<StateDir> {
        Self::open_at(base.join(identity.as_str()))
    }

    /// Uses `path` itself as the state directory (a `state_dir` set in the
    /// config names the folder for that remote directly).
    pub fn open_at(path: PathBuf) -> io::Result<StateDir> {
        create_private_dir(&path)?;
        Ok(StateDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata store's database (see `crate::metadata`).
    pub fn metadata_db(&self) -> PathBuf {
        self.path.join("metadata.db")
    }

    /// The persisted listings' database (see `crate::cache::listing_store`).
    pub fn listings_db(&self) -> PathBuf {
        self.path.join("listings.db")
    }
}

/// Creates `path` and its parents; the leaf is readable by its owner only
/// (it records names, ids and share links of the account's files).
fn create_private_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)?;
    if !path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("state directory {} is not a directory", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_hides_the_key() {
        let key = ApiKey::new("s3cr3t-key");
        let a = RemoteIdentity::new("1fichier", "https://api.1fichier.com/v1", &key);
        let b = RemoteIdentity::new("1fichier", "https://api.1fichier.com/v1/", &key);
        assert_eq!(a, b, "a trailing slash names the same service");
        assert!(a.as_str().starts_with("1fichier-"), "{a}");
        assert_eq!(a.as_str().len(), "1fichier-".len() + 16);
        assert!(!a.as_str().contains("s3cr3t"));
        // Pinned: a changed hash would orphan every user's state.
        assert_eq!(a.as_str(), "1fichier-b884cbe04432d0c1");
    }

    #[test]
    fn identity_differs_per_account_url_and_service() {
        let key = ApiKey::new("k1");
        let base = RemoteIdentity::new("1fichier", "https://a", &key);
        assert_ne!(
            base,
            RemoteIdentity::new("1fichier", "https://a", &ApiKey::new("k2"))
        );
        assert_ne!(base, RemoteIdentity::new("1fichier", "https://b", &key));
        assert_ne!(base, RemoteIdentity::new("fii.one", "https://a", &key));
    }

    #[test]
    fn identity_is_one_safe_path_component() {
        for service in ["..", ".", "a/b", "", "x\0y", "é"] {
            let id = RemoteIdentity::new(service, "u", &ApiKey::new("k"));
            let component = id.as_str();
            assert!(!component.contains('/') && !component.contains('\0'));
            assert_ne!(component, "..");
            assert!(!component.starts_with(".."), "{component}");
            assert_eq!(Path::new(component).components().count(), 1, "{component}");
        }
    }

    #[test]
    fn state_dir_is_created_private_and_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let id = RemoteIdentity::new("fii.one", "https://x", &ApiKey::new("k"));
        let dir = StateDir::open(&tmp.path().join("deep").join("base"), &id).unwrap();
        assert!(dir.path().is_dir());
        assert!(dir.path().ends_with(id.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let again = StateDir::open(&tmp.path().join("deep").join("base"), &id).unwrap();
        assert_eq!(dir, again);
        assert_ne!(dir.metadata_db(), dir.listings_db());
        assert!(dir.metadata_db().starts_with(dir.path()));
    }

    #[test]
    fn a_file_in_the_way_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("taken");
        std::fs::write(&blocker, b"x").unwrap();
        assert!(StateDir::open_at(blocker).is_err());
    }
}
