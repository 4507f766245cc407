//! filehostfs: mount file-hosting accounts as a local folder.
//!
//! Data flows one way: kernel -> [`fs`] (the FUSE adapter over
//! [`fs::Core`]) -> [`cache`] and [`writeback`] -> [`remote`]. The commands
//! ([`cli`]) sit on top. The [`emulator`] is a separate HTTP server that
//! speaks the services' APIs for tests, benchmarks and the demo; it shares
//! no wire-format code with the clients in [`remote`].

pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod emulator;
pub mod fs;
pub mod metadata;
pub mod remote;
pub mod state_dir;
pub mod writeback;
