//! Property test of a real mount against a local folder: random sequences
//! of write, utimens, chmod, rename, unlink and remount are applied to a
//! mount of `filehostfs serve` and to a temporary folder, and after every
//! step both show the same names, sizes, contents, modes and mtimes.
//!
//! A mount per case is slow, so there are few cases of many steps each
//! (and little shrinking; `MODEL_CASES=N` runs N cases instead of 8).
//! mtimes set explicitly must be equal to the nanosecond; those left by a
//! write are the two writes' own clocks, so they only have to be close.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::mount::Mount;
use common::write_mount::WriteMount;
use common::Emulator;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const NAMES: [&str; 3] = ["a.txt", "b.txt", "c.txt"];
const MODES: [u32; 4] = [0o600, 0o640, 0o644, 0o755];
/// A write's mtime comes from each side's clock at its own moment.
const WRITE_CLOCK_SLACK: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Op {
    /// Replaces (or creates) the file with `len` bytes of `seed`.
    Write {
        name: usize,
        seed: u8,
        len: usize,
    },
    /// `utimensat` of the mtime (no open, as `touch -d` of a path).
    Utimens {
        name: usize,
        seconds: u32,
        nanos: u32,
    },
    Chmod {
        name: usize,
        mode: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        name: usize,
    },
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        4 => (name.clone(), any::<u8>(), 1usize..5000)
            .prop_map(|(name, seed, len)| Op::Write { name, seed, len }),
        3 => (name.clone(), 0u32..2_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(name, seconds, nanos)| Op::Utimens { name, seconds, nanos }),
        2 => (name.clone(), 0..MODES.len()).prop_map(|(name, mode)| Op::Chmod { name, mode }),
        2 => (name.clone(), name.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => name.prop_map(|name| Op::Unlink { name }),
        2 => Just(Op::Remount),
    ]
}

/// The errno of a failed call, `Ok` for success: both sides must agree.
fn outcome<T>(result: std::io::Result<T>) -> Result<(), i32> {
    result.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn utimens(path: &Path, seconds: u32, nanos: u32) -> std::io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: seconds as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        },
    ];
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn apply(op: &Op, root: &Path) -> Result<(), i32> {
    match *op {
        Op::Write { name, seed, len } => {
            let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
            outcome(fs::write(root.join(NAMES[name]), bytes))
        }
        Op::Utimens {
            name,
            seconds,
            nanos,
        } => outcome(utimens(&root.join(NAMES[name]), seconds, nanos)),
        Op::Chmod { name, mode } => outcome(fs::set_permissions(
            root.join(NAMES[name]),
            fs::Permissions::from_mode(MODES[mode]),
        )),
        Op::Rename { from, to } => {
            outcome(fs::rename(root.join(NAMES[from]), root.join(NAMES[to])))
        }
        Op::Unlink { name } => outcome(fs::remove_file(root.join(NAMES[name]))),
        Op::Remount => Ok(()),
    }
}

/// What one side shows of a file.
#[derive(Debug, PartialEq)]
struct Shown {
    content: Vec<u8>,
    mode: u32,
    mtime: SystemTime,
}

fn show(root: &Path) -> BTreeMap<String, Shown> {
    fs::read_dir(root)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = fs::metadata(&path).unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let shown = Shown {
                content: fs::read(&path).unwrap(),
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.modified().unwrap(),
            };
            (name, shown)
        })
        .collect()
}

fn close_in_time(a: SystemTime, b: SystemTime) -> bool {
    let gap = a.duration_since(b).unwrap_or_else(|e| e.duration());
    gap <= WRITE_CLOCK_SLACK
}

/// The mount, the local model, and which names' mtimes were set exactly.
struct World<'a> {
    emu: &'a Emulator,
    cache: tempfile::TempDir,
    state: tempfile::TempDir,
    mount: Option<Mount>,
    model: tempfile::TempDir,
    exact_mtime: HashSet<String>,
}

impl World<'_> {
    fn mount(&mut self) {
        let state = self.state.path().to_str().unwrap().to_string();
        let args = [
            "--state-dir",
            &state,
            "--write-back",
            "0",
            "--dir-cache-time",
            "0",
        ];
        self.mount = Some(WriteMount::start(self.emu, self.cache.path(), &args));
    }

    fn root(&self) -> &Path {
        self.mount.as_ref().unwrap().path()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if let Op::Remount = op {
            self.mount.take().unwrap().unmount();
            self.mount();
        } else {
            let model = apply(op, self.model.path());
            let mounted = apply(op, self.root());
            prop_assert_eq!(mounted, model, "outcome of {:?}", op);
            if model.is_ok() {
                self.track(op);
            }
        }
        let model = show(self.model.path());
        let mounted = show(self.root());
        prop_assert_eq!(
            mounted.keys().collect::<Vec<_>>(),
            model.keys().collect::<Vec<_>>(),
            "names after {:?}",
            op
        );
        for (name, want) in &model {
            let got = &mounted[name];
            prop_assert_eq!(
                &got.content,
                &want.content,
                "{} content after {:?}",
                name,
                op
            );
            prop_assert_eq!(got.mode, want.mode, "{} mode after {:?}", name, op);
            if self.exact_mtime.contains(name) {
                prop_assert_eq!(got.mtime, want.mtime, "{} mtime after {:?}", name, op);
            } else {
                prop_assert!(
                    close_in_time(got.mtime, want.mtime),
                    "{} mtime after {:?}: {:?} vs {:?}",
                    name,
                    op,
                    got.mtime,
                    want.mtime
                );
            }
        }
        Ok(())
    }

    /// Which mtimes are exact after a successful `op`.
    fn track(&mut self, op: &Op) {
        match *op {
            Op::Write { name, .. } | Op::Unlink { name } => {
                self.exact_mtime.remove(NAMES[name]);
            }
            Op::Utimens { name, .. } => {
                self.exact_mtime.insert(NAMES[name].to_string());
            }
            Op::Rename { from, to } if from != to => {
                let exact = self.exact_mtime.remove(NAMES[from]);
                self.exact_mtime.remove(NAMES[to]);
                if exact {
                    self.exact_mtime.insert(NAMES[to].to_string());
                }
            }
            _ => {}
        }
    }
}

#[test]
fn a_mount_behaves_like_a_local_folder_for_metadata() {
    // New files get 0644 on both sides, whatever umask the test ran with.
    // SAFETY: umask cannot fail; this binary runs this one test.
    unsafe { libc::umask(0o022) };
    let emu = Emulator::start();
    let config = Config {
        cases: std::env::var("MODEL_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(8),
        max_shrink_iters: 4,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&proptest::collection::vec(op(), 10..24), |ops| {
            // Each case in a fresh account folder: the account of the
            // emulator is shared by the cases.
            let mut world = World {
                emu: &emu,
                cache: tempfile::tempdir().unwrap(),
                state: tempfile::tempdir().unwrap(),
                mount: None,
                model: tempfile::tempdir().unwrap(),
                exact_mtime: HashSet::new(),
            };
            world.mount();
            for name in show(world.root()).keys() {
                fs::remove_file(world.root().join(name)).unwrap();
            }
            let result = ops.iter().try_for_each(|op| world.step(op));
            if let Some(mount) = world.mount.take() {
                mount.unmount();
            }
            result
        })
        .unwrap();
}
