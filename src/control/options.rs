//! The mount's `--rc*` options and where they say to listen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::ControlPaths;

/// Control API options; the mount command flattens these in.
#[derive(Clone, Debug, Default, Args)]
pub struct RcOptions {
    /// Serve the control API and status page on a Unix socket in the
    /// runtime folder ($XDG_RUNTIME_DIR/filehostfs/, private to this user).
    #[arg(long)]
    pub rc: bool,

    /// Serve the control API on TCP at IP:PORT instead (implies --rc); every
    /// request needs the token from --rc-token-file.
    #[arg(long, value_name = "IP:PORT")]
    pub rc_addr: Option<SocketAddr>,

    /// File holding the bearer token for --rc-addr; generated (mode 0600)
    /// when missing. Default: next to the socket in the runtime folder.
    #[arg(long, value_name = "FILE")]
    pub rc_token_file: Option<PathBuf>,

    /// Let --rc-addr listen on an address other than loopback.
    #[arg(long)]
    pub rc_allow_remote: bool,
}

/// Where and how the server listens, resolved from [`RcOptions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcListen {
    /// A Unix socket; its folder's and its own mode keep others out.
    Unix { socket: PathBuf },
    /// TCP with a bearer token read from (or generated into) `token_file`.
    Tcp {
        addr: SocketAddr,
        token_file: PathBuf,
    },
}

/// Options that contradict each other or the safety rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RcOptionsError {
    #[error("--rc-addr {0} is not a loopback address; add --rc-allow-remote to listen on it")]
    NotLoopback(SocketAddr),
    #[error("--rc-token-file and --rc-allow-remote only apply with --rc-addr")]
    TcpOptionWithoutAddr,
}

impl RcOptions {
    /// Whether any control API was asked for.
    pub fn enabled(&self) -> bool {
        self.rc || self.rc_addr.is_some()
    }

    /// Where to listen for the mount at `mountpoint`; `None` when off.
    pub fn resolve(
        &self,
        mountpoint: &Path,
        paths: &ControlPaths,
    ) -> Result<Option<RcListen>, RcOptionsError> {
        match self.rc_addr {
            Some(addr) => {
                if !addr.ip().is_loopback() && !self.rc_allow_remote {
                    return Err(RcOptionsError::NotLoopback(addr));
                }
                let token_file = self
                    .rc_token_file
                    .clone()
                    .unwrap_or_else(|| paths.default_token_file(mountpoint));
                Ok(Some(RcListen::Tcp { addr, token_file }))
            }
            None if self.rc_token_file.is_some() || self.rc_allow_remote => {
                Err(RcOptionsError::TcpOptionWithoutAddr)
            }
            None if self.rc => Ok(Some(RcListen::Unix {
                socket: paths.socket_for(mountpoint),
            })),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> ControlPaths {
        ControlPaths::under(Path::new("/run/user/1000"))
    }

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        rc: RcOptions,
    }

    #[derive(clap::Parser)]
    struct ClientWrapper {
        #[command(flatten)]
        client: crate::control::client::RcClientArgs,
    }

    #[test]
    fn flags_parse_as_documented() {
        use clap::{CommandFactory, Parser};
        Wrapper::command().debug_assert();
        ClientWrapper::command().debug_assert();
        let parsed = Wrapper::try_parse_from([
            "x",
            "--rc-addr",
            "127.0.0.1:5572",
            "--rc-token-file",
            "/tmp/t",
        ])
        .unwrap();
        assert!(parsed.rc.enabled());
        assert_eq!(parsed.rc.rc_addr, Some("127.0.0.1:5572".parse().unwrap()));
        let client = ClientWrapper::try_parse_from(["x", "--rc-addr", "127.0.0.1:5572"]).unwrap();
        assert_eq!(client.client.rc_addr, parsed.rc.rc_addr);
        assert!(ClientWrapper::try_parse_from([
            "x",
            "--rc-addr",
            "127.0.0.1:1",
            "--rc-socket",
            "/s"
        ])
        .is_err());
        assert!(Wrapper::try_parse_from(["x", "--rc-addr", "localhost"]).is_err());
    }

    #[test]
    fn off_by_default() {
        let options = RcOptions::default();
        assert!(!options.enabled());
        assert_eq!(options.resolve(Path::new("/mnt/x"), &paths()), Ok(None));
    }

    #[test]
    fn rc_alone_means_a_socket_in_the_runtime_dir() {
        let options = RcOptions {
            rc: true,
            ..Default::default()
        };
        let Some(RcListen::Unix { socket }) =
            options.resolve(Path::new("/mnt/x"), &paths()).unwrap()
        else {
            panic!("expected a Unix socket");
        };
        assert!(socket.starts_with("/run/user/1000/filehostfs/"));
        assert_eq!(socket.extension().unwrap(), "sock");
    }

    #[test]
    fn tcp_is_loopback_only_unless_allowed() {
        let mut options = RcOptions {
            rc_addr: Some("0.0.0.0:5572".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            options.resolve(Path::new("/mnt/x"), &paths()),
            Err(RcOptionsError::NotLoopback(_))
        ));
        options.rc_allow_remote = true;
        assert!(matches!(
            options.resolve(Path::new("/mnt/x"), &paths()),
            Ok(Some(RcListen::Tcp { .. }))
        ));
    }

    #[test]
    fn token_file_without_tcp_is_an_error() {
        let options = RcOptions {
            rc: true,
            rc_token_file: Some("/tmp/t".into()),
            ..Default::default()
        };
        assert_eq!(
            options.resolve(Path::new("/mnt/x"), &paths()),
            Err(RcOptionsError::TcpOptionWithoutAddr)
        );
    }
}
