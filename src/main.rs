#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    proxy::cli::main()
}
