//! The filesystem: the inode table, the read path and the write path over
//! the caches and the write-back queue, and the FUSE adapter that serves
//! them to the kernel.

pub mod adapter;
mod core;
pub mod error;
pub mod inode;
mod kept_metadata;
mod metadata_overlay;
mod overlay;
mod pending;
pub mod read;
mod state;
pub mod write;
mod xattr;

pub use self::core::{Core, SpaceStats};
pub use adapter::{FilehostFs, KERNEL_READ_AHEAD};
pub use error::Error;
pub use pending::WriteConfig;
pub use read::ReadAheadConfig;
pub use state::{Attr, FsConfig, NodeType};
pub(crate) use write::finish_uploads;
pub use write::AttrChange;
pub use xattr::XATTR_PREFIX;
