//! `filehostfs demo MOUNTPOINT`: an emulated account with sample files,
//! mounted in the foreground — zero setup, nothing leaves the machine.
//!
//! The emulator runs inside this process on a free loopback port, keeping
//! its data under the user's data directory so the account (and anything
//! changed in it) is still there next time. The first run fills it with a
//! few folders, text files, a generated binary file and a short video.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;

use anyhow::Context as _;
use clap::Parser as _;
use tracing::info;

use super::mount::{self, MountOptions};
use crate::config::Config;
use crate::emulator::{self, ServeArgs};
use crate::remote::{FolderId, Remote, UploadSource};

/// The name the demo's config gives its remote.
const DEMO_REMOTE: &str = "demo";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to mount the demo account (created if missing).
    pub mountpoint: PathBuf,
    /// Which service the demo account emulates: 1fichier (folders),
    /// fii.one (one flat folder) or file.io (an outbox of expiring links).
    #[arg(long, default_value = "1fichier", value_parser = ["1fichier", "fii.one", "file.io"])]
    pub service: String,
    /// Where the demo keeps its emulator data and config
    /// (default: the user's data directory, filehostfs/demo).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub options: MountOptions,
}

/// Lets `ServeArgs` (whose defaults live in its clap attributes) be built
/// from an argument list.
#[derive(clap::Parser)]
struct ServeCommand {
    #[command(flatten)]
    serve: ServeArgs,
}

pub fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => dirs::data_dir()
            .context("cannot find the user's data directory; pass --data-dir")?
            .join("filehostfs")
            .join("demo"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    std::fs::create_dir_all(&args.mountpoint)
        .with_context(|| format!("cannot create {}", args.mountpoint.display()))?;
    let mut fs_config = args.options.fs_config()?;
    // The demo's pending uploads get a journal of their own.
    fs_config.write.remote_name = Some("demo".to_string());
    let runtime = mount::build_runtime()?;

    let emulator_dir = data_dir.join("emulator");
    let keys_file = ensure_demo_keys(&emulator_dir)?;
    let serve = ServeCommand::try_parse_from([
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        emulator_dir.as_os_str(),
        "--keys-file".as_ref(),
        keys_file.as_os_str(),
        // One person browsing their own machine: no flood or rate limits.
        "--no-flood-control".as_ref(),
        "--fileio-rate-limit".as_ref(),
        "0".as_ref(),
    ])
    .context("building the emulator settings")?
    .serve;
    let emulator = runtime.block_on(emulator::start(serve))?;
    let api_url = emulator
        .service_url(&args.service)
        .with_context(|| format!("the emulator does not serve {}", args.service))?
        .to_string();
    let key = emulator
        .keys_for(&args.service)
        .into_iter()
        .next()
        .with_context(|| format!("the emulator has no {} account", args.service))?;
    let config_path = write_demo_config(&data_dir, &args.service, &api_url, &key)?;
    let mut config = Config::load(Some(&config_path))?;
    config.override_upload_options(DEMO_REMOTE, &args.options.upload_overrides())?;
    let remote = config.open_remote(DEMO_REMOTE)?;
    let root = remote.root();
    runtime.block_on(seed_if_empty(remote.as_ref(), &data_dir))?;

    let mountpoint = args.mountpoint.display().to_string();
    let shown_data = data_dir.display().to_string();
    let service = args.service.clone();
    let result = mount::serve(
        &runtime,
        mount::MountSource {
            remote,
            root,
            // A demo account starts on a new port each run: nothing to reuse.
            listings: None,
        },
        &format!("{DEMO_REMOTE}:"),
        &args.mountpoint,
        fs_config,
        &args.options,
        move || {
            println!("filehostfs demo: an emulated {api_url} account (data in {shown_data})");
            println!("is mounted on {mountpoint}. Try:");
            match service.as_str() {
                "fii.one" => {
                    println!(
                        "  ls -l {mountpoint}          # one flat folder: fii.one has no folders"
                    );
                    println!("  cat {mountpoint}/README.txt");
                    println!("  mv {mountpoint}/notes.md {mountpoint}/renamed.md");
                    println!("  getfattr -n user.filehostfs.link {mountpoint}/notes.md");
                }
                "file.io" => {
                    println!("  ls -l {mountpoint}          # the live files of the outbox");
                    println!("  cp /etc/hostname {mountpoint}/ && getfattr -n user.filehostfs.link {mountpoint}/hostname");
                    println!("  cat {mountpoint}/README.txt # uploaded from here: read from the local copy");
                }
                _ => {
                    println!("  ls -l {mountpoint} {mountpoint}/Documents");
                    println!("  cat {mountpoint}/README.txt");
                    println!("  ffprobe {mountpoint}/Videos/sample.mp4");
                    println!("  getfattr -d {mountpoint}/Documents/notes.md");
                }
            }
            println!("Press Ctrl-C to unmount and stop.");
        },
    );
    runtime.block_on(emulator.shutdown())?;
    result
}

/// The emulator's keys file with one account per service, created on the
/// first run and completed for services added since (older demo data dirs
/// hold a 1fichier key only).
fn ensure_demo_keys(emulator_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(emulator_dir)
        .with_context(|| format!("cannot create {}", emulator_dir.display()))?;
    let path = emulator_dir.join("keys.txt");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let has = |service: &str| {
        existing.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match service {
                "1fichier" => words.len() == 1 || words.first() == Some(&"1fichier"),
                _ => words.first() == Some(&service),
            }
        })
    };
    let random_hex = || uuid::Uuid::new_v4().simple().to_string();
    let mut missing = String::new();
    if !has("1fichier") {
        missing.push_str(&format!("{}\n", random_hex()));
    }
    if !has("fii.one") {
        missing.push_str(&format!(
            "fii.one fii_{}{}\n",
            random_hex(),
            &random_hex()[..24]
        ));
    }
    if !has("file.io") {
        missing.push_str(&format!("file.io {} rate_limit=0\n", random_hex()));
    }
    if !missing.is_empty() {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if !existing.is_empty() && !existing.ends_with('\n') {
            file.write_all(b"\n")?;
        }
        file.write_all(missing.as_bytes())?;
    }
    Ok(path)
}

/// A config naming the demo account, rewritten on every run (the port changes).
fn write_demo_config(
    dir: &Path,
    service: &str,
    api_url: &str,
    key: &str,
) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("config.toml");
    let mut text = format!(
        "# Written by `filehostfs demo` on each run.\n\
         [{DEMO_REMOTE}]\ntype = \"{service}\"\napi_url = \"{api_url}\"\nkey = \"{key}\"\n\
         rate = 50.0\nburst = 20\n"
    );
    if service == "file.io" {
        // Demo files should outlive the service's default 14 days, and be
        // readable here: the copies of what the demo uploads stay with it.
        let copies = dir.join("file.io-copies");
        text.push_str(&format!(
            "expires = \"1y\"\nlocal_copies = \"{}\"\n",
            copies.display()
        ));
    }
    // The file holds an API key: private from the first byte written.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(path)
}

/// Fills an empty account with sample folders and files.
async fn seed_if_empty(remote: &dyn Remote, data_dir: &Path) -> anyhow::Result<()> {
    let root = remote.root();
    let listing = remote.list_folder(&root).await?;
    if !listing.files.is_empty() || !listing.folders.is_empty() {
        return Ok(());
    }
    info!("seeding the demo account");
    let upload = |folder: FolderId, name: &'static str, data: Vec<u8>| async move {
        let size = data.len() as u64;
        let reader: Pin<Box<dyn tokio::io::AsyncRead + Send>> =
            Box::pin(std::io::Cursor::new(data));
        remote
            .upload(&folder, name, UploadSource::Reader { reader, size }, None)
            .await
            .with_context(|| format!("uploading {name}"))
    };
    if !remote.capabilities().folders {
        return seed_flat(remote, data_dir).await;
    }
    upload(root.clone(), "README.txt", README.as_bytes().to_vec()).await?;

    let documents = remote.create_folder(&root, "Documents").await?.id;
    upload(documents.clone(), "notes.md", NOTES.as_bytes().to_vec()).await?;
    upload(
        documents.clone(),
        "todo.txt",
        b"- try ls -l\n- play the video\n- read the xattrs\n".to_vec(),
    )
    .await?;
    upload(
        documents.clone(),
        "Été ☀ résumé.txt",
        "Unicode names work.\n".as_bytes().to_vec(),
    )
    .await?;
    upload(
        documents.clone(),
        "quotes \"and\" <brackets>.txt",
        b"Names the service cannot store are encoded and shown decoded.\n".to_vec(),
    )
    .await?;
    // The service allows two files of one name; the mount shows both.
    upload(documents.clone(), "report.txt", b"first report\n".to_vec()).await?;
    upload(
        documents.clone(),
        "report.txt",
        b"second report, same name\n".to_vec(),
    )
    .await?;

    let data = remote.create_folder(&root, "Data").await?.id;
    upload(data.clone(), "random-8MiB.bin", generated_bytes(8 << 20)).await?;
    let csv: String = std::iter::once("n,square,cube\n".to_string())
        .chain((1..=1000u64).map(|n| format!("{n},{},{}\n", n * n, n * n * n)))
        .collect();
    upload(data.clone(), "numbers.csv", csv.into_bytes()).await?;

    let videos = remote.create_folder(&root, "Videos").await?.id;
    let nested = remote.create_folder(&videos, "Holidays").await?.id;
    match make_video(data_dir) {
        Some(video) => upload(videos.clone(), "sample.mp4", video).await?,
        None => {
            upload(videos.clone(), "sample-video.bin", generated_bytes(4 << 20)).await?;
            upload(videos.clone(), "NO-FFMPEG.txt", b"ffmpeg was not found when the demo was seeded, so this folder holds generated bytes instead of a video.\n".to_vec()).await?
        }
    };
    upload(
        nested,
        "postcard.txt",
        b"Greetings from a nested folder.\n".to_vec(),
    )
    .await?;
    Ok(())
}

/// The sample files in one folder, for services without folders.
async fn seed_flat(remote: &dyn Remote, data_dir: &Path) -> anyhow::Result<()> {
    let root = remote.root();
    let readme = FLAT_README.replace("{service}", remote.service());
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("README.txt", readme.into_bytes()),
        ("notes.md", NOTES.as_bytes().to_vec()),
        (
            "Été ☀ résumé.txt",
            "Unicode names work.\n".as_bytes().to_vec(),
        ),
        ("report.txt", b"first report\n".to_vec()),
        // Two files of one name: the mount shows both.
        ("report.txt", b"second report, same name\n".to_vec()),
        ("random-8MiB.bin", generated_bytes(8 << 20)),
    ];
    if let Some(video) = make_video(data_dir) {
        files.push(("sample.mp4", video));
    }
    for (name, data) in files {
        let size = data.len() as u64;
        let reader: Pin<Box<dyn tokio::io::AsyncRead + Send>> =
            Box::pin(std::io::Cursor::new(data));
        remote
            .upload(&root, name, UploadSource::Reader { reader, size }, None)
            .await
            .with_context(|| format!("uploading {name}"))?;
    }
    Ok(())
}

/// A 10-second test pattern with a tone, if ffmpeg is installed.
fn make_video(data_dir: &Path) -> Option<Vec<u8>> {
    let path = data_dir.join("sample.mp4.tmp");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=10:size=640x360:rate=25",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=10"])
        .args(["-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac", "-f", "mp4"])
        .arg(&path)
        .status()
        .ok()?;
    let video = status
        .success()
        .then(|| std::fs::read(&path).ok())
        .flatten();
    let _ = std::fs::remove_file(&path);
    video
}

/// Deterministic bytes that do not compress (xorshift64).
fn generated_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

const README: &str = "\
Welcome to the filehostfs demo.

This folder is a file-hosting account (an emulated one, running inside the
`filehostfs demo` process) mounted as a local folder. Everything you see is
listed and read over HTTP, the way a real account would be, and cached:

- Documents/  text files, Unicode names, two files sharing one name
- Data/       an 8 MiB binary file and a CSV
- Videos/     a short video (ffprobe it: three HTTP requests at most)

Extended attributes carry the remote id, checksum and a direct link:
  getfattr -d -m user.filehostfs Documents/notes.md

Press Ctrl-C in the terminal running the demo to unmount.
";

const FLAT_README: &str = "\
Welcome to the filehostfs demo of a {service} account.

This folder is an emulated {service} account (running inside the
`filehostfs demo` process) mounted as a local folder. {service} has no
folders that its API can see, so the whole account is this one folder.
Two files share the name report.txt: the mount shows both, told apart by
a suffix from their ids. docs/SEMANTICS.md in the source tells what each
operation does on each service.

The link to hand out is an extended attribute:
  getfattr -n user.filehostfs.link notes.md

Press Ctrl-C in the terminal running the demo to unmount.
";

const NOTES: &str = "\
# Notes

The mount reads files block by block, keeps them in a memory cache
(and on disk with --cache-dir), and reads ahead when you read sequentially.
";
