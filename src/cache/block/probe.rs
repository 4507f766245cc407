//! Which blocks a media probe reads. Scanners (ffprobe, and the media
//! servers built on it) read a container's header at the start of a file and
//! its index near the end (MP4 `moov` written last, MKV cues), and nothing in
//! between: those blocks are what a library rescan needs, so the disk tier
//! keeps them apart from the bulk of streamed blocks.

/// The role a block plays for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockRole {
    /// The first block or one of the last two of a file.
    Probe,
    /// Anything else.
    Bulk,
}

/// How many blocks at the end of a file count as its tail: an index often
/// straddles the last two blocks (the read-ahead's jump to the tail fetches
/// them together for the same reason).
const TAIL_BLOCKS: u64 = 2;

impl BlockRole {
    /// The role of block `index` of a file of `size` bytes cut into blocks
    /// of `block_size` bytes.
    pub(super) fn of(size: u64, block_size: u64, index: u64) -> Self {
        let blocks = size.div_ceil(block_size.max(1));
        if index == 0 || index + TAIL_BLOCKS >= blocks {
            BlockRole::Probe
        } else {
            BlockRole::Bulk
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_and_the_last_two_blocks_are_probe_blocks() {
        let roles: Vec<_> = (0..6).map(|i| BlockRole::of(6 * 10 - 3, 10, i)).collect();
        use BlockRole::{Bulk, Probe};
        assert_eq!(roles, [Probe, Bulk, Bulk, Bulk, Probe, Probe]);
        assert_eq!(BlockRole::of(5, 10, 0), Probe);
        assert_eq!(BlockRole::of(25, 10, 1), Probe);
    }
}
