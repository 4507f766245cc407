//! `filehostfs serve`: a local HTTP server that speaks the services' APIs.

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run_serve(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve is not built yet")
}
