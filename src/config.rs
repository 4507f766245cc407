//! The config file naming remotes (TOML, one table per remote).
