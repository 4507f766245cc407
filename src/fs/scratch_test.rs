#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;
    use crate::cache::testing::MemoryRemote;
    use crate::fs::*;
    use crate::remote::Remote;

    #[test]
    fn scratch_mount() {
        let rt = build_runtime().unwrap();
        let remote = Arc::new(MemoryRemote::new());
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        remote.add_file("big.bin", data.clone());
        remote.add_file("dup", vec![1, 2, 3]);
        remote.add_file("dup", vec![4, 5]);
        remote.add_file("probe.mp4", std::fs::read("/tmp/fsscratch/probe.mp4").unwrap());
        remote.add_file("probe.mkv", std::fs::read("/tmp/fsscratch/probe.mkv").unwrap());
        let mnt = tempfile::tempdir().unwrap();
        let path = mnt.path().to_path_buf();
        let opts = MountOptions { block_size: 1 << 20, cache_max_memory: 64 << 20, cache_dir: None, cache_max_size: 0,
            dir_cache_time: Duration::from_secs(60), read_ahead_max: 16 << 20, read_ahead_request: 4 << 20, read_ahead_concurrency: 4,
            uid: None, gid: None, umask: 0o022, allow_other: false };
        let cfg = opts.fs_config().unwrap();
        let p2 = path.clone();
        let r2 = remote.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            for f in ["probe.mp4", "probe.mkv"] {
                let before = r2.download_requests();
                let o = std::process::Command::new("ffprobe").arg("-hide_banner").arg(p2.join(f)).output().unwrap();
                println!("{f}: ok={} downloads {}", o.status.success(), r2.download_requests() - before);
            }
            let out = std::process::Command::new("sh").arg("-c").arg(format!(
                "cd {0} && ls -la && sha256sum big.bin && head -c 10 'dup (00000001)' | od -c; getfattr -d -m - big.bin; df -h .; echo x > new; stat big.bin; dd if=big.bin of=/dev/null bs=1M 2>&1 | tail -1",
                p2.display())).output().unwrap();
            println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            println!("downloads {} lists {}", r2.download_requests(), r2.list_requests());
            std::process::Command::new("fusermount3").arg("-u").arg(&p2).status().unwrap();
        });
        let root = remote.root();
        serve(&rt, remote, root, &path, cfg, &opts, || {}).unwrap();
        t.join().unwrap();
        let sum = sha2::Sha256::digest(&data);
        println!("expected {}", hex::encode(sum));
    }
    use sha2::Digest;
}
