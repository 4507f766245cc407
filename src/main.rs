use std::io::Write as _;

use filehostfs::cli::Invocation;

fn main() {
    let result = filehostfs::cli::parse().and_then(|invocation| match invocation {
        Invocation::Run(cli) => {
            filehostfs::cli::init_logging();
            filehostfs::cli::run(*cli)
        }
        Invocation::Nothing => Ok(()),
    });
    if let Err(err) = result {
        // Stderr may be a closed pipe; the exit status still tells.
        let _ = writeln!(std::io::stderr(), "filehostfs: error: {err:#}");
        std::process::exit(1);
    }
}
