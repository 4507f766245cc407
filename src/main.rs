use clap::Parser;

fn main() {
    let cli = filehostfs::cli::Cli::parse();
    filehostfs::cli::init_logging();
    if let Err(err) = filehostfs::cli::run(cli) {
        eprintln!("filehostfs: error: {err:#}");
        std::process::exit(1);
    }
}
