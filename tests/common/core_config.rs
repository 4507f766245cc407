//! The configuration of a small `fs::Core` driven directly by tests (no
//! FUSE): small blocks and cache, every lookup listing again, uploads
//! staged in `staging` and started `delay` after the last change.

use std::path::Path;
use std::time::Duration;

use filehostfs::cache::block::BlockCacheConfig;
use filehostfs::fs::{FsConfig, ReadAheadConfig, WriteConfig};

pub fn small_core(staging: &Path, remote_name: &str, delay: Duration) -> FsConfig {
    FsConfig {
        cache: BlockCacheConfig {
            block_size: 64 << 10,
            max_memory: 4 << 20,
            disk: None,
            max_streams: 2,
        },
        read_ahead: ReadAheadConfig {
            max_blocks: 4,
            max_blocks_per_request: 2,
            max_streams_per_file: 2,
        },
        dir_cache_time: Duration::ZERO,
        uid: 0,
        gid: 0,
        umask: 0o022,
        write: WriteConfig {
            cache_dir: Some(staging.to_path_buf()),
            remote_name: Some(remote_name.into()),
            scope: None,
            delay,
            unmount_wait: Duration::from_secs(60),
        },
        read_only: false,
        consume_downloads: false,
        metadata_db: None,
        metadata_sync: false,
    }
}
