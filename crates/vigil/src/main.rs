use std::process::ExitCode;

fn main() -> ExitCode {
    vigil::main()
}
