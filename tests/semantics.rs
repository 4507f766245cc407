//! Reads the per-service semantics table of `docs/SEMANTICS.md` and checks
//! every row against a real mount of each service (against `filehostfs
//! serve`): an `ok` cell must succeed with the described effect, an errno
//! cell must fail with exactly that errno, `n/a` is skipped.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::mount::Mount;
use common::multi::{fileio_url, http, start_multi, write_multi_config, MultiKeys};
use common::Emulator;
use filehostfs::config::Config;
use filehostfs::remote::{FileEntry, Remote, UploadSource};

const SERVICES: [&str; 3] = ["1fichier", "fii.one", "file.io"];

/// Every operation the table may list; the table must list exactly these.
const OPERATIONS: [&str; 24] = [
    "list",
    "read",
    "read-foreign",
    "read-foreign-consented",
    "create",
    "overwrite",
    "overwrite-unchanged",
    "unlink",
    "unlink-without-permission",
    "rename",
    "mkdir",
    "move-to-folder",
    "rmdir",
    "link-xattr",
    "statfs",
    "longest-name",
    "name-too-long",
    "duplicate-names",
    "expiry",
    "utimens",
    "chmod",
    "user-xattr",
    "metadata-sync",
    "sync-file-name",
];

/// How long anything asynchronous (uploads, listing refreshes) may take on
/// this loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Ok,
    Errno(i32),
    NotApplicable,
}

fn errno_named(name: &str) -> Option<i32> {
    Some(match name {
        "EACCES" => libc::EACCES,
        "EPERM" => libc::EPERM,
        "ENOTSUP" => libc::ENOTSUP,
        "ENOENT" => libc::ENOENT,
        "EEXIST" => libc::EEXIST,
        "EXDEV" => libc::EXDEV,
        "EROFS" => libc::EROFS,
        "EINVAL" => libc::EINVAL,
        "EIO" => libc::EIO,
        "ENOTEMPTY" => libc::ENOTEMPTY,
        "EFBIG" => libc::EFBIG,
        "ENAMETOOLONG" => libc::ENAMETOOLONG,
        _ => return None,
    })
}

/// operation → service → expected outcome.
type Table = BTreeMap<String, BTreeMap<String, Expected>>;

fn parse_table(text: &str) -> Table {
    let start = text
        .find("<!-- semantics-table:start -->")
        .expect("table start marker");
    let end = text
        .find("<!-- semantics-table:end -->")
        .expect("table end marker");
    let mut lines = text[start..end]
        .lines()
        .skip(1)
        .filter(|l| l.starts_with('|'));
    let split = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = split(lines.next().expect("header row"));
    assert_eq!(
        header,
        ["Operation", "Example", "1fichier", "fii.one", "file.io"],
        "table header"
    );
    lines.next().expect("separator row");
    let mut table = Table::new();
    for line in lines {
        let cells = split(line);
        assert_eq!(cells.len(), 5, "row {line:?} must have 5 cells");
        let operation = cells[0].clone();
        assert!(
            OPERATIONS.contains(&operation.as_str()),
            "the table lists {operation:?}, which this test does not know"
        );
        let mut row = BTreeMap::new();
        for (service, cell) in SERVICES.iter().zip(&cells[2..]) {
            let code = cell
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(code, _)| code)
                .unwrap_or_else(|| {
                    panic!("{operation}/{service}: cell {cell:?} does not start with `outcome`")
                });
            let expected =
                match code {
                    "ok" => Expected::Ok,
                    "n/a" => Expected::NotApplicable,
                    name => Expected::Errno(errno_named(name).unwrap_or_else(|| {
                        panic!("{operation}/{service}: unknown outcome {name:?}")
                    })),
                };
            row.insert(service.to_string(), expected);
        }
        assert!(
            table.insert(operation.clone(), row).is_none(),
            "{operation} listed twice"
        );
    }
    for operation in OPERATIONS {
        assert!(table.contains_key(operation), "the table lacks {operation}");
    }
    table
}

#[test]
fn the_table_is_well_formed() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/SEMANTICS.md"))
            .unwrap();
    let table = parse_table(&text);
    assert_eq!(table.len(), OPERATIONS.len());
    // The parser itself rejects what it should.
    let bad_cell = text.replace("| `ok` files and folders of the folder |", "| fine |");
    assert!(std::panic::catch_unwind(|| parse_table(&bad_cell)).is_err());
}

#[test]
fn the_readmes_copy_of_the_table_is_the_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let semantics = std::fs::read_to_string(root.join("docs/SEMANTICS.md")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = semantics
        .split("<!-- semantics-table:start -->\n")
        .nth(1)
        .and_then(|rest| rest.split("<!-- semantics-table:end -->").next())
        .expect("docs/SEMANTICS.md marks its table");
    assert!(
        readme.contains(table.trim()),
        "README.md's table under \"What each operation does on each service\" \
         must be docs/SEMANTICS.md's table, row for row"
    );
}

/// One service under test: its remote's name in the config, the mount, and
/// a client of the same account for seeding and checking.
struct Subject<'a> {
    service: &'static str,
    emu: &'a Emulator,
    keys: &'a MultiKeys,
    config: PathBuf,
    remote_name: &'static str,
    remote: Arc<dyn Remote>,
    mount: Mount,
    /// Where test files are prepared before being copied in.
    scratch: PathBuf,
}

/// The outcome of one operation: Ok, or the errno it failed with.
type Outcome = Result<(), i32>;

fn errno_of(err: std::io::Error) -> i32 {
    err.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {err}"))
}

/// Polls `check` until it holds or `SETTLE` passes.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for: {what}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Subject<'_> {
    fn listing(&self) -> Vec<FileEntry> {
        let remote = self.remote.clone();
        runtime().block_on(async move { remote.list_folder(&remote.root()).await.unwrap().files })
    }

    /// A file put on the service by someone else (for file.io: uploaded
    /// through HTTP, so this machine keeps no copy of it).
    fn seed_foreign(&self, name: &str, bytes: &[u8]) {
        self.put_on_service(name, bytes);
        self.wait_visible(name);
    }

    /// Like [`Self::seed_foreign`] without waiting for the mount to show it
    /// (a second file of one name is never shown under that plain name).
    fn put_on_service(&self, name: &str, bytes: &[u8]) {
        if self.service == "file.io" {
            let base = fileio_url(self.emu);
            let key = self.keys.fileio.clone();
            let (name, bytes) = (name.to_string(), bytes.to_vec());
            runtime().block_on(async move {
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(bytes).file_name(name),
                );
                let answer = http()
                    .post(format!("{base}/"))
                    .bearer_auth(key)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
            });
        } else {
            let remote = self.remote.clone();
            let (name, bytes) = (name.to_string(), bytes.to_vec());
            runtime().block_on(async move {
                let size = bytes.len() as u64;
                let source = UploadSource::Reader {
                    reader: Box::pin(std::io::Cursor::new(bytes)),
                    size,
                };
                remote
                    .upload(&remote.root(), &name, source, None)
                    .await
                    .unwrap();
            });
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mount.path().join(name)
    }

    fn wait_visible(&self, name: &str) {
        eventually(
            &format!("{name} to appear in the {} mount", self.service),
            || {
                std::fs::read_dir(self.mount.path())
                    .map(|dir| dir.flatten().any(|e| e.file_name() == name))
                    .unwrap_or(false)
            },
        );
    }

    /// A mount of the same account as another machine would make it:
    /// `--metadata-sync`, its own state dir.
    fn sync_mount(&self, machine: &str) -> Mount {
        let state = self.scratch.join(format!("state-{machine}"));
        std::fs::create_dir_all(&state).unwrap();
        let state = state.to_str().unwrap().to_string();
        let args = mount_args(&["--metadata-sync", "--no-disk-cache", "--state-dir", &state]);
        Mount::start_remote(
            &self.config,
            &format!("{}:", self.remote_name),
            &as_strs(&args),
        )
    }

    fn wait_on_service(&self, what: &str, check: impl Fn(&[FileEntry]) -> bool) {
        eventually(&format!("{what} on {}", self.service), || {
            check(&self.listing())
        });
    }

    /// Writes through the mount and waits until the service has it.
    fn write_through_mount(&self, name: &str, bytes: &[u8]) -> Outcome {
        let local = self.scratch.join(name);
        std::fs::write(&local, bytes).unwrap();
        std::fs::copy(&local, self.path(name)).map_err(errno_of)?;
        let size = bytes.len() as u64;
        self.wait_on_service(&format!("{name} uploaded"), |files| {
            files.iter().any(|f| f.name == name && f.size == size)
        });
        Ok(())
    }

    fn statvfs(&self) -> Result<libc::statvfs, i32> {
        let path = CString::new(self.mount.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string and a zeroed out-parameter.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
        if rc != 0 {
            return Err(errno_of(std::io::Error::last_os_error()));
        }
        Ok(stats)
    }

    /// The one file called `name` on the service.
    fn only(&self, name: &str) -> FileEntry {
        let found: Vec<FileEntry> = self
            .listing()
            .into_iter()
            .filter(|f| f.name == name)
            .collect();
        assert_eq!(found.len(), 1, "{name} on {}: {found:?}", self.service);
        found.into_iter().next().unwrap()
    }

    fn run(&self, operation: &str) -> Outcome {
        let tag = self.service.replace('.', "-");
        match operation {
            "list" => {
                self.seed_foreign(&format!("listed-{tag}.txt"), b"listed");
                let names: Vec<_> = std::fs::read_dir(self.mount.path())
                    .map_err(errno_of)?
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                assert!(names
                    .iter()
                    .any(|n| n.to_string_lossy() == format!("listed-{tag}.txt")));
                Ok(())
            }
            "read" => {
                let name = format!("own-{tag}.txt");
                self.write_through_mount(&name, b"written here")?;
                self.emu.reset_stats();
                let read = std::fs::read(self.path(&name)).map_err(errno_of)?;
                assert_eq!(read, b"written here");
                if self.service == "file.io" {
                    assert_eq!(
                        self.emu.request_count("file.io:download"),
                        0,
                        "a download was spent"
                    );
                }
                Ok(())
            }
            "read-foreign" => {
                let name = format!("foreign-{tag}.txt");
                self.seed_foreign(&name, b"from elsewhere");
                self.emu.reset_stats();
                let outcome = std::fs::read(self.path(&name)).map_err(errno_of);
                if self.service == "file.io" {
                    assert_eq!(
                        self.emu.request_count("file.io:download"),
                        0,
                        "a download was spent"
                    );
                    if outcome.is_err() {
                        assert!(
                            self.mount.log().contains("--consume-downloads"),
                            "no log line says why:\n{}",
                            self.mount.log()
                        );
                    }
                }
                outcome.map(|bytes| assert_eq!(bytes, b"from elsewhere"))
            }
            "read-foreign-consented" => {
                // Run on a second mount started with --consume-downloads.
                let name = format!("consented-{tag}.txt");
                self.seed_foreign(&name, b"handed over");
                let consenting = Mount::start_remote(
                    &self.config,
                    &format!("{}:", self.remote_name),
                    &as_strs(&mount_args(&["--consume-downloads"])),
                );
                let path = consenting.path().join(&name);
                eventually("the consenting mount to list the file", || path.exists());
                self.emu.reset_stats();
                let outcome = std::fs::read(&path).map_err(errno_of);
                if let Ok(bytes) = &outcome {
                    assert_eq!(bytes, b"handed over");
                    if self.service == "file.io" {
                        assert_eq!(self.emu.request_count("file.io:download"), 1);
                        // Read again: from the copy now kept, nothing more spent.
                        assert_eq!(std::fs::read(&path).unwrap(), b"handed over");
                        assert_eq!(self.emu.request_count("file.io:download"), 1);
                    }
                }
                consenting.unmount();
                outcome.map(|_| ())
            }
            "create" => {
                let name = format!("created-{tag}.bin");
                self.write_through_mount(&name, &vec![5u8; 70_000])?;
                if self.service == "file.io" {
                    // The config asks for expires = "1h".
                    let entry = self.listing().into_iter().find(|f| f.name == name).unwrap();
                    let left = entry.expires.unwrap() - chrono::Utc::now();
                    assert!(
                        left > chrono::Duration::minutes(50)
                            && left <= chrono::Duration::minutes(61),
                        "{left}"
                    );
                }
                Ok(())
            }
            "overwrite" => {
                let name = format!("overwritten-{tag}.txt");
                self.write_through_mount(&name, b"first")?;
                let old_id = self
                    .listing()
                    .into_iter()
                    .find(|f| f.name == name)
                    .unwrap()
                    .id;
                std::fs::write(self.path(&name), b"second version").map_err(errno_of)?;
                self.wait_on_service("the new content to replace the old", |files| {
                    let same: Vec<_> = files.iter().filter(|f| f.name == name).collect();
                    same.len() == 1 && same[0].size == 14 && same[0].id != old_id
                });
                assert_eq!(std::fs::read(self.path(&name)).unwrap(), b"second version");
                Ok(())
            }
            "overwrite-unchanged" => {
                let name = format!("unchanged-{tag}.txt");
                let content = b"the same bytes again";
                self.write_through_mount(&name, content)?;
                let before = self.only(&name);
                // `cp`: truncate, then write the very bytes the file has.
                std::fs::write(self.path(&name), content).map_err(errno_of)?;
                eventually("the rewrite to settle", || {
                    common::mount::getxattr(&self.path(&name), "user.filehostfs.pending").is_err()
                });
                // Given time to (wrongly) upload and remove the old file.
                std::thread::sleep(Duration::from_millis(1500));
                let after = self.only(&name);
                assert_eq!(after.id, before.id, "the file must keep its id");
                assert_eq!(after.share_link, before.share_link);
                Ok(())
            }
            "unlink" => {
                let name = format!("removed-{tag}.txt");
                self.seed_foreign(&name, b"bye");
                std::fs::remove_file(self.path(&name)).map_err(errno_of)?;
                self.wait_on_service("the file to be deleted", |files| {
                    files.iter().all(|f| f.name != name)
                });
                Ok(())
            }
            "unlink-without-permission" => {
                let name = format!("kept-{tag}.txt");
                self.seed_foreign(&name, b"stays");
                let restricted =
                    Mount::start_remote(&self.config, "pics-nodelete:", &as_strs(&mount_args(&[])));
                let path = restricted.path().join(&name);
                eventually("the restricted mount to list the file", || path.exists());
                let outcome = std::fs::remove_file(&path).map_err(errno_of);
                restricted.unmount();
                if outcome.is_err() {
                    assert!(
                        self.listing().iter().any(|f| f.name == name),
                        "the file was deleted anyway"
                    );
                }
                outcome
            }
            "rename" => {
                let (from, to) = (format!("before-{tag}.txt"), format!("after-{tag}.txt"));
                self.seed_foreign(&from, b"renamed");
                let outcome = std::fs::rename(self.path(&from), self.path(&to)).map_err(errno_of);
                match outcome {
                    Ok(()) => self.wait_on_service("the rename", |files| {
                        files.iter().any(|f| f.name == to) && files.iter().all(|f| f.name != from)
                    }),
                    Err(_) => assert!(self.path(&from).exists(), "a refused rename lost the file"),
                }
                outcome
            }
            "mkdir" => std::fs::create_dir(self.path(&format!("folder-{tag}"))).map_err(errno_of),
            "move-to-folder" => {
                let folder = self.path(&format!("target-{tag}"));
                std::fs::create_dir(&folder).map_err(errno_of)?;
                let name = format!("moving-{tag}.txt");
                self.seed_foreign(&name, b"moves");
                std::fs::rename(self.path(&name), folder.join(&name)).map_err(errno_of)?;
                assert_eq!(std::fs::read(folder.join(&name)).unwrap(), b"moves");
                Ok(())
            }
            "rmdir" => {
                let folder = self.path(&format!("empty-{tag}"));
                std::fs::create_dir(&folder).map_err(errno_of)?;
                std::fs::remove_dir(&folder).map_err(errno_of)?;
                assert!(!folder.exists());
                Ok(())
            }
            "link-xattr" => {
                let name = format!("linked-{tag}.txt");
                self.seed_foreign(&name, b"link me");
                let value = getxattr(&self.path(&name), "user.filehostfs.link")?;
                let link = String::from_utf8(value).unwrap();
                assert!(link.starts_with(&self.emu.base_url()), "{link}");
                if self.service == "file.io" {
                    let entry = self.listing().into_iter().find(|f| f.name == name).unwrap();
                    assert_eq!(Some(link), entry.share_link);
                }
                Ok(())
            }
            "statfs" => {
                assert!(self.statvfs()?.f_bsize > 0);
                Ok(())
            }
            "longest-name" | "name-too-long" => {
                let longest = match self.service {
                    "1fichier" => 250,
                    _ => 255,
                };
                assert_eq!(self.statvfs()?.f_namemax, longest);
                if operation == "longest-name" {
                    let name = format!("{tag}{}", "n".repeat(longest as usize - tag.len()));
                    self.write_through_mount(&name, b"long")
                } else {
                    let name = format!("{tag}{}", "n".repeat(longest as usize + 1 - tag.len()));
                    let path = self.path(&name);
                    let errno = std::fs::write(&path, b"long")
                        .map_err(errno_of)
                        .unwrap_err();
                    for other in [
                        std::fs::create_dir(&path).map_err(errno_of),
                        std::fs::metadata(&path).map(drop).map_err(errno_of),
                    ] {
                        assert_eq!(other, Err(errno), "mkdir and lookup refuse it too");
                    }
                    Err(errno)
                }
            }
            "duplicate-names" => {
                let name = format!("twin-{tag}.txt");
                self.put_on_service(&name, b"one");
                self.put_on_service(&name, b"two");
                eventually("both twins to be listed", || {
                    std::fs::read_dir(self.mount.path())
                        .map(|dir| {
                            dir.flatten()
                                .filter(|e| {
                                    e.file_name()
                                        .to_string_lossy()
                                        .starts_with(&format!("twin-{tag}"))
                                })
                                .count()
                                == 2
                        })
                        .unwrap_or(false)
                });
                Ok(())
            }
            "expiry" => {
                // Uploaded elsewhere with a short life; the mount must drop it.
                let base = fileio_url(self.emu);
                let key = self.keys.fileio.clone();
                runtime().block_on(async move {
                    let form = reqwest::multipart::Form::new()
                        .part(
                            "file",
                            reqwest::multipart::Part::bytes(b"brief".to_vec())
                                .file_name("brief.txt"),
                        )
                        .text("expires", "8s");
                    let answer = http()
                        .post(format!("{base}/"))
                        .bearer_auth(key)
                        .multipart(form)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status(), 200);
                });
                self.wait_visible("brief.txt");
                eventually("the expired file to vanish from the mount", || {
                    !self.path("brief.txt").exists()
                });
                Ok(())
            }
            "utimens" => {
                let name = format!("timed-{tag}.txt");
                self.write_through_mount(&name, b"timed")?;
                let stamp = UNIX_EPOCH + Duration::from_secs(981_173_106);
                set_mtime(&self.path(&name), stamp)?;
                let shown = || {
                    std::fs::metadata(self.path(&name))
                        .unwrap()
                        .modified()
                        .unwrap()
                };
                assert_eq!(shown(), stamp);
                // Still so once the listing was refreshed from the service.
                std::thread::sleep(Duration::from_millis(1500));
                assert_eq!(shown(), stamp, "after a listing refresh");
                Ok(())
            }
            "chmod" => {
                use std::os::unix::fs::PermissionsExt;
                let name = format!("moded-{tag}.txt");
                self.write_through_mount(&name, b"moded")?;
                std::fs::set_permissions(self.path(&name), std::fs::Permissions::from_mode(0o600))
                    .map_err(errno_of)?;
                std::thread::sleep(Duration::from_millis(1500));
                let mode = std::fs::metadata(self.path(&name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o7777, 0o600);
                Ok(())
            }
            "user-xattr" => {
                let name = format!("noted-{tag}.txt");
                self.write_through_mount(&name, b"noted")?;
                set_xattr(&self.path(&name), "user.note", b"x")?;
                assert_eq!(getxattr(&self.path(&name), "user.note"), Ok(b"x".to_vec()));
                assert_eq!(
                    set_xattr(&self.path(&name), "user.filehostfs.id", b"x"),
                    Err(libc::ENOTSUP)
                );
                Ok(())
            }
            "metadata-sync" => {
                let name = format!("synced-{tag}.txt");
                self.write_through_mount(&name, b"synced")?;
                // Two more machines: their own state dirs (metadata stores).
                let (a, b) = (self.sync_mount("a"), self.sync_mount("b"));
                let stamp = UNIX_EPOCH + Duration::from_secs(981_173_106);
                let shown = |mount: &Mount| {
                    std::fs::metadata(mount.path().join(&name))
                        .and_then(|m| m.modified())
                        .ok()
                };
                assert_ne!(shown(&b), Some(stamp));
                set_mtime(&a.path().join(&name), stamp)?;
                eventually("the time set on one machine to show on the other", || {
                    shown(&b) == Some(stamp)
                });
                // A mount without the option reads nothing from the file.
                std::thread::sleep(Duration::from_millis(1500));
                assert_ne!(
                    shown(&self.mount),
                    Some(stamp),
                    "read without --metadata-sync"
                );
                a.unmount();
                b.unmount();
                Ok(())
            }
            "sync-file-name" => {
                let reserved = self.path(filehostfs::metadata::sync::SYNC_FILE_NAME);
                let created = std::fs::write(&reserved, b"mine").map_err(errno_of);
                let listed = std::fs::read_dir(self.mount.path())
                    .unwrap()
                    .flatten()
                    .any(|e| e.path() == reserved);
                assert!(!listed, "the reserved name is listed");
                created
            }
            other => panic!("no check for {other}"),
        }
    }
}

/// `utimensat(2)` on a path (no open: `touch` would open the file).
fn set_mtime(path: &Path, mtime: std::time::SystemTime) -> Outcome {
    use std::os::unix::ffi::OsStrExt;
    let since = mtime.duration_since(UNIX_EPOCH).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: since.as_secs() as libc::time_t,
            tv_nsec: since.subsec_nanos() as libc::c_long,
        },
    ];
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno_of(std::io::Error::last_os_error()))
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Outcome {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno_of(std::io::Error::last_os_error()))
    }
}

fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    common::mount::getxattr(path, name).map_err(errno_of)
}

/// Mount options for quick tests: listings trusted for one second, uploads
/// started right after close.
fn mount_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--dir-cache-time", "1s", "--write-back", "0s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn every_row_holds_on_a_real_mount_of_each_service() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/SEMANTICS.md"))
            .unwrap();
    let table = parse_table(&text);
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(&emu, &keys, dir.path(), "expires = \"1h\"\n");
    // The 1fichier account of the same emulator, as `box`.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        writeln!(
            file,
            "[box]\ntype = \"1fichier\"\napi_url = \"{}\"\nkey = \"{}\"\nrate = 200\nburst = 20\n",
            emu.fichier_url(),
            emu.key()
        )
        .unwrap();
    }
    let loaded = Config::load(Some(&config)).unwrap();
    let mut failures = Vec::new();
    let mut checked = HashSet::new();
    for (service, remote_name) in [
        ("1fichier", "box"),
        ("fii.one", "pics"),
        ("file.io", "outbox"),
    ] {
        let scratch = dir.path().join(format!("scratch-{service}"));
        std::fs::create_dir_all(&scratch).unwrap();
        let subject = Subject {
            service,
            emu: &emu,
            keys: &keys,
            config: config.clone(),
            remote_name,
            remote: loaded.open_remote(remote_name).unwrap(),
            mount: Mount::start_remote(
                &config,
                &format!("{remote_name}:"),
                &as_strs(&mount_args(&[])),
            ),
            scratch,
        };
        for (operation, row) in &table {
            let expected = row[service];
            if expected == Expected::NotApplicable {
                continue;
            }
            let got = subject.run(operation);
            let matches = match (expected, got) {
                (Expected::Ok, Ok(())) => true,
                (Expected::Errno(want), Err(errno)) => want == errno,
                _ => false,
            };
            if !matches {
                failures.push(format!(
                    "{operation} on {service}: the table says {expected:?}, the mount gave {got:?}"
                ));
            }
            checked.insert((operation.clone(), service));
        }
        subject.mount.unmount();
    }
    assert!(
        failures.is_empty(),
        "rows that do not hold:\n{}",
        failures.join("\n")
    );
    assert!(
        checked.len() >= 30,
        "only {} cells were checked",
        checked.len()
    );
}
