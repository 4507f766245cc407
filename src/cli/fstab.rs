//! The mount(8) helper. `mount -t fuse.filehostfs work:media /mnt/media -o
//! dir_cache_time=5m,...` (or an fstab line) reaches this program in one
//! of two ways, both with the arguments `work:media /mnt/media -o OPTIONS`:
//! as `mount.fuse.filehostfs` (or `mount.fuse3.filehostfs` for the type
//! `fuse3.filehostfs`), this program under another name (a symlink), or,
//! with no such link installed, as plain `filehostfs` run by `mount.fuse3`,
//! which is mount(8)'s helper for every `fuse.TYPE` and runs the program
//! `TYPE` found on the PATH. Its arguments become `filehostfs mount
//! --daemon ...`: each `-o key=value` is the long option `--key-value`, a
//! bare `key` the flag `--key`; what only mount(8) or systemd act on is
//! ignored, as other helpers do.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The names this program answers to as a mount helper. mount(8) looks for
/// `mount.TYPE`; `mount.fuse3` has no convention for `fuse3.TYPE` (it
/// would run a program named `fuse3.filehostfs`), so that type needs its
/// own link.
const HELPER_NAMES: [&str; 3] = [
    "mount.fuse.filehostfs",
    "mount.fuse3.filehostfs",
    "mount.filehostfs",
];

/// Options mount(8), systemd or the kernel's generic mount flags handle:
/// accepted and ignored. `default_permissions`, `nodev`, `nosuid` and
/// `noatime` are what every filehostfs mount has anyway.
const IGNORED: [&str; 24] = [
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "nodiratime",
    "strictatime",
    "async",
    "default_permissions",
];

/// Ignored by prefix: systemd's and desktop file managers' own keys.
const IGNORED_PREFIXES: [&str; 3] = ["x-", "comment=", "fsname="];

/// `mount` options that make no sense from fstab.
const REFUSED: [&str; 4] = ["daemon", "print_systemd_unit", "notify_ready", "help"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelperError {
    #[error("usage: mount.fuse.filehostfs REMOTE:[path] MOUNTPOINT [-o key=value,...]")]
    Usage,
    #[error("-{0}: not supported by mount.fuse.filehostfs")]
    UnsupportedFlag(String),
    #[error("-o {0}: not an option of a filehostfs mount from fstab")]
    RefusedOption(String),
    #[error("-o {0}: needs a value ({0}=...)")]
    MissingValue(String),
}

/// What mount(8) asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum HelperRequest {
    /// Mount with this `filehostfs` command line (program name excluded).
    Mount(Vec<OsString>),
    /// `-f` (fake): check the arguments, mount nothing.
    Fake,
}

/// Whether the program was started as the mount helper (by `argv[0]`).
pub fn invoked_as_helper(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| HELPER_NAMES.contains(&name))
}

/// Whether `args` (program name excluded) are a mount helper's rather than
/// a command: `mount.fuse3` runs `filehostfs SPEC DIR [-o OPTIONS]`, and a
/// `REMOTE:[path]` spec (the colon) is never a command's name or an option.
pub fn run_by_mount_fuse(args: &[OsString]) -> bool {
    args.first()
        .map(|first| first.to_string_lossy())
        .is_some_and(|first| !first.starts_with('-') && first.contains(':'))
}

/// Translates a helper's arguments (`SPEC DIR [-sfnv] [-o OPTS]... [-t
/// TYPE]`, program name excluded) into a `filehostfs` command line.
pub fn translate(args: &[OsString]) -> Result<HelperRequest, HelperError> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-o" => {
                let value = args.next().ok_or(HelperError::Usage)?;
                options.push(value.to_string_lossy().into_owned());
            }
            "-t" => {
                args.next().ok_or(HelperError::Usage)?;
            }
            // sloppy, no mtab, verbose: nothing to do for a FUSE mount.
            "-s" | "-n" | "-v" => {}
            "-f" => fake = true,
            _ if text.starts_with("-o") && text.len() > 2 => options.push(text[2..].to_string()),
            _ if text.starts_with('-') && text.len() > 1 => {
                return Err(HelperError::UnsupportedFlag(text[1..].to_string()))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [spec, mountpoint] =
        <[OsString; 2]>::try_from(positional).map_err(|_| HelperError::Usage)?;
    let mut global: Vec<OsString> = Vec::new();
    let mut mount: Vec<OsString> = vec!["mount".into(), spec, mountpoint, "--daemon".into()];
    for option in options.iter().flat_map(|list| list.split(',')) {
        let option = option.trim();
        if option.is_empty()
            || IGNORED.contains(&option)
            || IGNORED_PREFIXES.iter().any(|p| option.starts_with(p))
        {
            continue;
        }
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        };
        if REFUSED.contains(&key) || key.starts_with('-') {
            return Err(HelperError::RefusedOption(key.to_string()));
        }
        match (key, value) {
            ("ro", None) => mount.push("--read-only".into()),
            ("config", Some(path)) => {
                global.push("--config".into());
                global.push(path.into());
            }
            ("config", None) => return Err(HelperError::MissingValue(key.to_string())),
            (key, Some(value)) => {
                mount.push(format!("--{}", key.replace('_', "-")).into());
                mount.push(value.into());
            }
            (key, None) => mount.push(format!("--{}", key.replace('_', "-")).into()),
        }
    }
    if fake {
        return Ok(HelperRequest::Fake);
    }
    global.extend(mount);
    Ok(HelperRequest::Mount(global))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_helper_is_recognised_by_its_name() {
        assert!(invoked_as_helper(OsStr::new("/sbin/mount.fuse.filehostfs")));
        assert!(invoked_as_helper(OsStr::new("mount.filehostfs")));
        assert!(invoked_as_helper(OsStr::new(
            "/usr/sbin/mount.fuse3.filehostfs"
        )));
        assert!(!invoked_as_helper(OsStr::new("/usr/bin/filehostfs")));
        assert!(!invoked_as_helper(OsStr::new("mount.fuse3")));
    }

    #[test]
    fn mount_fuse3s_command_line_is_recognised_by_its_spec() {
        assert!(run_by_mount_fuse(&words(
            "work:media /mnt/media -o dir_cache_time=5m,dev,suid"
        )));
        assert!(run_by_mount_fuse(&words("work: /mnt/w")));
        assert!(!run_by_mount_fuse(&words("mount work: /mnt/w")));
        assert!(!run_by_mount_fuse(&words(
            "--config a:b mount work: /mnt/w"
        )));
        assert!(!run_by_mount_fuse(&words("ls work:")));
        assert!(!run_by_mount_fuse(&[]));
    }

    #[test]
    fn fstab_options_become_long_flags() {
        let request = translate(&words(
            "work:media /mnt/media -o rw,dir_cache_time=5m,cache_dir=/var/cache/filehostfs,_netdev,x-systemd.automount,allow_other,uid=1000,gid=100,umask=027,config=/etc/filehostfs/config.toml,noauto,nofail,user,metadata_sync",
        ))
        .unwrap();
        assert_eq!(
            request,
            HelperRequest::Mount(words(
                "--config /etc/filehostfs/config.toml mount work:media /mnt/media --daemon --dir-cache-time 5m --cache-dir /var/cache/filehostfs --allow-other --uid 1000 --gid 100 --umask 027 --metadata-sync"
            ))
        );
    }

    #[test]
    fn mount8_flags_and_several_option_lists_are_understood() {
        let request = translate(&words(
            "work: /mnt/w -n -s -v -o ro -onodev,log_file=/var/log/fh.log -t fuse.filehostfs",
        ))
        .unwrap();
        assert_eq!(
            request,
            HelperRequest::Mount(words(
                "mount work: /mnt/w --daemon --read-only --log-file /var/log/fh.log"
            ))
        );
        assert_eq!(
            translate(&words("work: /mnt/w -f -o dir_cache_time=1m")),
            Ok(HelperRequest::Fake)
        );
    }

    #[test]
    fn bad_helper_arguments_are_refused_clearly() {
        assert_eq!(translate(&words("work:")), Err(HelperError::Usage));
        assert_eq!(translate(&words("a b c")), Err(HelperError::Usage));
        assert_eq!(translate(&words("a b -o")), Err(HelperError::Usage));
        assert_eq!(
            translate(&words("a b -N ns")),
            Err(HelperError::UnsupportedFlag("N".into()))
        );
        assert_eq!(
            translate(&words("a b -o daemon")),
            Err(HelperError::RefusedOption("daemon".into()))
        );
        assert_eq!(
            translate(&words("a b -o config")),
            Err(HelperError::MissingValue("config".into()))
        );
    }
}
