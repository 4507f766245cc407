//! The filesystem: the inode table, the read path and the write path over
//! the caches and the write-back queue, and the FUSE adapter that serves
//! them to the kernel.

pub mod adapter;
mod attr;
mod control;
mod core;
mod dir_snapshot;
pub mod error;
mod file_data;
mod handles;
pub mod inode;
mod kept_metadata;
mod metadata_overlay;
mod metadata_sync;
mod metadata_sync_state;
mod namespace;
mod overlay;
mod pending;
pub mod read;
mod state;
mod unmount;
mod xattr;

pub use self::core::{Core, SpaceStats};
pub use adapter::{FilehostFs, KERNEL_READ_AHEAD};
pub use attr::{Attr, NodeType};
pub use control::{MountControl, MountIdentity};
pub use error::Error;
pub use file_data::AttrChange;
pub use pending::WriteConfig;
pub use read::ReadAheadConfig;
pub use state::FsConfig;
pub(crate) use unmount::finish_uploads;
pub use xattr::XATTR_PREFIX;
