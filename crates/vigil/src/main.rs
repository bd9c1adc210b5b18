use std::process::ExitCode;

// Many tokio worker threads allocate per message; glibc malloc's arena locks showed up as
// futex waits in profiles of the bus under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    vigil::main()
}
