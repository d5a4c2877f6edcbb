//! The `crd` binary: everything lives in the library; this only hands over the
//! command line and turns the result into the process's exit code.

fn main() {
    std::process::exit(crd::cli::main(std::env::args_os().collect()));
}
