//! A media probe (ffprobe reads a container's header, then its index near
//! the end) must cost at most three HTTP requests through the mount: one
//! direct link, the head range and the tail range — and no large read-ahead.

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::{Mount, Seeder};
use common::Emulator;

/// Makes a noisy 10-second clip (several MiB) with the index at the end.
fn make_clip(path: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=10:size=640x360:rate=25,noise=alls=30:allf=t",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=10"])
        .args(["-c:v", "mpeg4", "-b:v", "6M", "-c:a", "aac", "-b:a", "96k"])
        .arg(path)
        .status()
        .expect("ffmpeg is needed (scripts/test.sh installs it)");
    assert!(status.success(), "ffmpeg failed");
}

fn total_requests(emu: &Emulator) -> u64 {
    emu.stats()["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn ffprobe_of_mp4_and_mkv_costs_at_most_three_requests() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let work = tempfile::tempdir().unwrap();
    for name in ["clip.mp4", "clip.mkv"] {
        let local = work.path().join(name);
        make_clip(&local);
        seed.upload("videos", name, &std::fs::read(&local).unwrap());
    }
    let mount = Mount::start(&emu, "", &[]);
    let videos = mount.path().join("videos");
    // Browsing comes first, as in a media server's scan.
    assert_eq!(std::fs::read_dir(&videos).unwrap().count(), 2);

    for name in ["clip.mp4", "clip.mkv"] {
        emu.reset_stats();
        let output = Command::new("ffprobe")
            .args(["-hide_banner", "-show_format", "-show_streams"])
            .arg(videos.join(name))
            .output()
            .unwrap();
        assert!(output.status.success(), "ffprobe {name}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("codec_type=video"), "{text}");
        assert!(text.contains("codec_type=audio"), "{text}");
        let requests = total_requests(&emu);
        let stats = emu.stats();
        assert!(requests <= 3, "{name}: {requests} requests: {stats}");
        let size = std::fs::metadata(videos.join(name)).unwrap().len();
        let served = stats["bytes_served"].as_u64().unwrap();
        assert!(
            served <= 3 << 20,
            "{name}: {served} of {size} bytes fetched for a probe"
        );
    }
    mount.unmount();
}
