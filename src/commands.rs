//! rclone-style command-line tools on top of the `Remote` trait.
//! (Owned by the Remote-layer work; the argument structs are filled in there.)

use std::path::PathBuf;

use clap::Args;

macro_rules! pending_args {
    ($($name:ident),*) => {$(
        #[derive(Debug, Args)]
        pub struct $name {
            /// Arguments.
            pub args: Vec<String>,
        }
    )*};
}
pending_args!(LsArgs, PutArgs, GetArgs, MkdirArgs, RmArgs, MvArgs, LinkArgs, AboutArgs);

fn pending(_config: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("this command is not built yet")
}

pub fn run_ls(config: Option<PathBuf>, _args: LsArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_put(config: Option<PathBuf>, _args: PutArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_get(config: Option<PathBuf>, _args: GetArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_mkdir(config: Option<PathBuf>, _args: MkdirArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_rm(config: Option<PathBuf>, _args: RmArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_mv(config: Option<PathBuf>, _args: MvArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_link(config: Option<PathBuf>, _args: LinkArgs) -> anyhow::Result<()> {
    pending(config)
}
pub fn run_about(config: Option<PathBuf>, _args: AboutArgs) -> anyhow::Result<()> {
    pending(config)
}
