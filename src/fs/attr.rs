//! The attributes of a node as `stat` shows them.

use std::time::SystemTime;

/// What a node is, as `stat` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeType {
    Directory,
    RegularFile,
}

/// The attributes of a node as `stat` shows them. Times are one: the
/// services keep a single date per file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub mtime: SystemTime,
    pub kind: NodeType,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
}
