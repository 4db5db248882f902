//! The `kes` binary: parses the command line and hands over to the library.

fn main() {
    std::process::exit(kes::cli::main());
}
