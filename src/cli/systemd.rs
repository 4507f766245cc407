//! Running under systemd: `Type=notify` readiness and stop progress sent to
//! `$NOTIFY_SOCKET` (nothing happens without it), and a unit file for a
//! given `mount` command line (`--print-systemd-unit`).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// The mount answers requests: `READY=1`.
pub fn ready(mountpoint: &Path) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("mounted on {}", mountpoint.display())),
    ]);
}

/// The stop has begun: `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("unmounting")]);
}

/// A `STATUS=` line for `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

fn send(states: &[NotifyState]) {
    // A service manager that went away must not disturb the mount.
    if let Err(error) = sd_notify::notify(states) {
        debug!(%error, "cannot notify the service manager");
    }
}

/// A unit running `filehostfs` with `args` (the full command line after
/// the program name, `mount` included) in the foreground as a notify
/// service. `user` picks the install target of a user unit.
pub fn unit(
    exe: &Path,
    args: &[OsString],
    working_dir: &Path,
    description: &str,
    stop_wait: Duration,
    user: bool,
) -> String {
    let mut exec = quote(&exe.to_string_lossy());
    for arg in args {
        exec.push(' ');
        exec.push_str(&quote(&arg.to_string_lossy()));
    }
    // systemd's default stop timeout (90 s) would kill a mount still
    // draining its uploads: allow the wait plus time to unmount.
    let stop_timeout = stop_wait.as_secs() + 30;
    let (network, target) = if user {
        ("", "default.target")
    } else {
        (
            "Wants=network-online.target\nAfter=network-online.target\n",
            "multi-user.target",
        )
    };
    let working_dir = quote(&working_dir.to_string_lossy());
    let description = description.replace('%', "%%");
    format!(
        "[Unit]\n\
         Description={description}\n\
         {network}\n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         WorkingDirectory={working_dir}\n\
         ExecStart={exec}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         TimeoutStopSec={stop_timeout}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         \n\
         [Install]\n\
         WantedBy={target}\n"
    )
}

/// One ExecStart word: `%` and `$` are specifiers and variables to systemd,
/// so they are doubled; words with blanks, quotes or backslashes are quoted.
fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && !escaped
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == ';');
    if plain {
        return escaped;
    }
    let inner = escaped
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\t', "\\t");
    format!("\"{inner}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_exec_start() {
        assert_eq!(quote("/usr/bin/filehostfs"), "/usr/bin/filehostfs");
        assert_eq!(quote("work:media"), "work:media");
        assert_eq!(quote("/mnt/my media"), "\"/mnt/my media\"");
        assert_eq!(quote("100%"), "100%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote(";"), "\";\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn a_unit_waits_for_uploads_and_the_network() {
        let text = unit(
            Path::new("/usr/bin/filehostfs"),
            &["mount".into(), "work:media".into(), "/mnt/my media".into()],
            Path::new("/"),
            "filehostfs work:media",
            Duration::from_secs(60),
            false,
        );
        assert!(text.contains("Type=notify\n"), "{text}");
        assert!(
            text.contains("ExecStart=/usr/bin/filehostfs mount work:media \"/mnt/my media\"\n"),
            "{text}"
        );
        assert!(text.contains("TimeoutStopSec=90\n"), "{text}");
        assert!(text.contains("After=network-online.target"), "{text}");
        assert!(text.contains("WantedBy=multi-user.target"), "{text}");
        let user = unit(
            Path::new("/usr/bin/filehostfs"),
            &["mount".into()],
            Path::new("/"),
            "x",
            Duration::ZERO,
            true,
        );
        assert!(user.contains("WantedBy=default.target"), "{user}");
        assert!(!user.contains("network-online"), "{user}");
    }
}
