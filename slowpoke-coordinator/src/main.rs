//! `slowpoke`: the coordinator's command line. A thin layer over the library; docs/cli.md.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
