//! The keys file: one account per line.
//!
//! A bare key is a 1fichier account. The general form is
//! `SERVICE KEY [OPTION=VALUE ...]`; blank lines and lines starting with `#`
//! are ignored. Options are service-specific (1fichier: `email=`, `quota=`
//! in bytes, `offer=free|premium`; fii.one and file.io: see their modules).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

/// Services the emulator knows; a keys-file line naming another is an error.
pub const SERVICES: &[&str] = &["1fichier", "fii.one", "file.io"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub service: String,
    pub key: String,
    pub options: BTreeMap<String, String>,
}

impl KeyEntry {
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }
}

pub fn parse_keys(text: &str) -> anyhow::Result<Vec<KeyEntry>> {
    let mut entries: Vec<KeyEntry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (service, key, option_words) = if words.len() == 1 {
            ("1fichier", words[0], &words[1..])
        } else {
            (words[0], words[1], &words[2..])
        };
        if !SERVICES.contains(&service) {
            anyhow::bail!(
                "line {line_no}: unknown service {service:?} (known: {})",
                SERVICES.join(", ")
            );
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("line {line_no}: a key must be printable ASCII without spaces");
        }
        let mut options = BTreeMap::new();
        for word in option_words {
            let (name, value) = word
                .split_once('=')
                .with_context(|| format!("line {line_no}: option {word:?} is not NAME=VALUE"))?;
            options.insert(name.to_string(), value.to_string());
        }
        if entries.iter().any(|e| e.service == service && e.key == key) {
            anyhow::bail!("line {line_no}: key listed twice for {service}");
        }
        entries.push(KeyEntry {
            service: service.to_string(),
            key: key.to_string(),
            options,
        });
    }
    Ok(entries)
}

pub fn load_keys(path: &Path) -> anyhow::Result<Vec<KeyEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading keys file {}", path.display()))?;
    let entries = parse_keys(&text).with_context(|| format!("in keys file {}", path.display()))?;
    if entries.is_empty() {
        anyhow::bail!("keys file {} lists no key", path.display());
    }
    Ok(entries)
}

/// A new random API key (1fichier keys are 32 alphanumerics).
pub fn generate_key() -> String {
    super::storage::random_alnum(32)
}

/// Writes `contents` to `path` readable by the owner only.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_full_lines() {
        let keys = parse_keys("# comment\n\nabc\n1fichier def quota=100 email=a@b\n").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].service, "1fichier");
        assert_eq!(keys[0].key, "abc");
        assert_eq!(keys[1].option("quota"), Some("100"));
        assert_eq!(keys[1].option("email"), Some("a@b"));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_keys("nosuch key\n").is_err());
        assert!(parse_keys("1fichier key opt\n").is_err());
        assert!(parse_keys("a\na\n").is_err());
    }
}
