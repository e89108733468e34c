//! `kinetic-shim __shim <spec>`: the container shim (`kinetic_node::shim`), what `kinetic
//! __shim` runs, as a binary of its own for the node crate's tests; also `__exec` (the native
//! runtime's exec helper).

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(sub), Some(spec)) if sub == kinetic_node::shim::SUBCOMMAND => {
            kinetic_node::shim::main(&spec)
        }
        (Some(sub), Some(spec)) if sub == kinetic_node::runtime::native::exec::SUBCOMMAND => {
            kinetic_node::runtime::native::exec::main(&spec)
        }
        _ => {
            eprintln!("usage: kinetic-shim {} <spec>", kinetic_node::shim::SUBCOMMAND);
            std::process::ExitCode::FAILURE
        }
    }
}
