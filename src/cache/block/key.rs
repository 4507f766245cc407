//! Names of cached blocks.

use crate::cache::{ContentKey, FileSource};

/// One block of one version of a file's content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct BlockKey {
    pub(super) content: ContentKey,
    pub(super) index: u64,
}

impl BlockKey {
    pub(super) fn of(src: &FileSource, index: u64) -> Self {
        BlockKey {
            content: src.key.clone(),
            index,
        }
    }
}
