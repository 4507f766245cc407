//! A credential that never shows up in logs, errors or `Debug` output.

use std::fmt;

/// An API key. The only way to read it is [`ApiKey::expose`], used where
/// the request header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key, dropping surrounding whitespace (key files usually end
    /// with a newline).
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_key() {
        let key = ApiKey::new("s3cr3t-key\n");
        assert_eq!(key.expose(), "s3cr3t-key");
        let shown = format!("{key:?} {:?}", Some(key.clone()));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
