//! Extended attributes: read-only facts about a file (its id, checksum,
//! links, expiry) and where a pending upload stands.

use super::inode::{Node, NodeKind};
use super::state::FsState;
use crate::writeback::EntryState;

/// The prefix of every extended attribute the mount exposes.
pub const XATTR_PREFIX: &str = "user.filehostfs.";

/// Extended attributes of a pending file: `user.filehostfs.pending` says
/// where its upload stands (`open`, `queued`, `held` for an empty-file
/// placeholder), and `user.filehostfs.last_error` why the last attempt
/// failed, while it has not succeeded since.
pub(crate) fn pending_xattrs(state: &FsState, ino: u64) -> Vec<(String, Vec<u8>)> {
    let Some(pending) = state
        .write
        .entry_of(ino)
        .and_then(|entry| state.write.queue.attr(entry))
    else {
        return Vec::new();
    };
    let prefix = XATTR_PREFIX;
    let stage = match pending.state {
        EntryState::Open => "open",
        EntryState::Queued => "queued",
        EntryState::Held => "held",
        EntryState::Cancelled => "cancelled",
    };
    let mut attrs = vec![(format!("{prefix}pending"), stage.as_bytes().to_vec())];
    if let Some(error) = pending.last_error {
        attrs.push((format!("{prefix}last_error"), error.into_bytes()));
    }
    attrs
}

impl FsState {
    /// Extended attributes of a node, except the direct link (which needs
    /// the service): name and value pairs.
    pub(crate) fn local_xattrs(&self, node: &Node) -> Vec<(String, Vec<u8>)> {
        let mut attrs = Vec::new();
        match &node.kind {
            NodeKind::Folder { id, .. } => {
                attrs.push((format!("{XATTR_PREFIX}id"), id.0.clone().into_bytes()));
            }
            NodeKind::File(entry) => {
                attrs.push((format!("{XATTR_PREFIX}id"), entry.id.0.clone().into_bytes()));
                if let Some(checksum) = &entry.checksum {
                    attrs.push((
                        format!("{XATTR_PREFIX}checksum"),
                        checksum.clone().into_bytes(),
                    ));
                }
                if let Some(link) = &entry.share_link {
                    attrs.push((
                        format!("{XATTR_PREFIX}share_link"),
                        link.clone().into_bytes(),
                    ));
                }
                if let Some(mime) = &entry.mime {
                    attrs.push((format!("{XATTR_PREFIX}mime"), mime.clone().into_bytes()));
                }
                // When the service deletes the file on its own (file.io).
                if let Some(expires) = entry.expires {
                    attrs.push((
                        format!("{XATTR_PREFIX}expires"),
                        expires.to_rfc3339().into_bytes(),
                    ));
                }
            }
            NodeKind::Local(_) => attrs.extend(pending_xattrs(self, node.ino)),
        }
        attrs.extend(self.kept_xattrs(node));
        attrs
    }
}
