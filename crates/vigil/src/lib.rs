//! The `vigil` binary: `vigil run` starts Vigil's services in one process; the other commands
//! check configuration and, as services land, administer and hunt.
//!
//! Exit codes: 0 success, 1 runtime failure (unreachable bus or store, a service failed),
//! 2 usage or configuration error.

pub mod admin;
mod cli;
pub mod config;
pub mod hunt;
mod run;
pub mod services;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

pub use cli::{
    Cli, Command, ConfigCommand, HuntArgs, OperatorCommand, OutputFormat, RulesCommand, RunArgs,
};

/// Parses the command line and runs the command; errors are printed as one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = match config::Config::load(args.config.as_deref(), &args.overrides()) {
                Ok(config) => config,
                Err(err) => return fail(2, &err),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("vigil")
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return fail(1, &format!("cannot start the async runtime: {err}")),
            };
            match runtime.block_on(run::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(err.exit_code(), &err.to_string()),
            }
        }
        Command::Tenant {
            command,
            connection,
        } => admin_command(admin::tenant(command, &connection)),
        Command::Token {
            command,
            connection,
        } => admin_command(admin::token(command, &connection)),
        Command::Principal {
            command,
            connection,
        } => admin_command(admin::principal(command, &connection)),
        Command::Intel {
            command,
            connection,
        } => admin_command(admin::intel(command, &connection)),
        Command::Alerts {
            command,
            connection,
        } => admin_command(admin::alerts(command, &connection)),
        Command::Rules(RulesCommand::Push {
            paths,
            tenant,
            connection,
        }) => admin_command(admin::rules(
            admin::RemoteRulesCommand::Push { paths, tenant },
            &connection,
        )),
        Command::Rules(RulesCommand::List { tenant, connection }) => admin_command(admin::rules(
            admin::RemoteRulesCommand::List { tenant },
            &connection,
        )),
        Command::Rules(RulesCommand::Test {
            rule,
            events,
            tenant,
            connection,
        }) => admin_command(admin::rules(
            admin::RemoteRulesCommand::Test {
                rule,
                events,
                tenant,
            },
            &connection,
        )),
        Command::Ingest {
            command,
            connection,
        } => admin_command(admin::ingest(command, &connection)),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "vigil", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Rules(RulesCommand::Check { paths, format }) => {
            match vigil_sigma::check_rules(&paths) {
                Ok(check) => {
                    println_stdout(&render_rule_check(&check, format));
                    ExitCode::SUCCESS
                }
                Err(err) => fail(2, &err.to_string()),
            }
        }
        Command::Hunt(args) => {
            hunt::restart_with_lean_allocator();
            let options = hunt::HuntOptions {
                paths: args.paths,
                rules: args.rules,
                format: args.format,
                min_level: args.min_level,
                progress: !args.no_progress,
                placeholders: args.placeholders.into_iter().collect(),
                cache_dir: if args.no_cache {
                    None
                } else {
                    args.cache_dir.or_else(hunt::default_cache_dir)
                },
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match hunt::hunt(&options, &mut out) {
                Ok(summary) => {
                    drop(out);
                    eprintln_stderr(&hunt::render_summary(&summary));
                    ExitCode::SUCCESS
                }
                Err(err) => fail(2, &err),
            }
        }
        Command::Operator(OperatorCommand::Crd) => match vigil_operator::crd::crd_yaml() {
            Ok(yaml) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(yaml.as_bytes());
                ExitCode::SUCCESS
            }
            Err(err) => fail(2, &err),
        },
        Command::Config(ConfigCommand::Check { file }) => {
            match config::Config::load(Some(&file), &config::Overrides::default()) {
                Ok(_) => {
                    println_stdout(&format!("{}: ok", file.display()));
                    ExitCode::SUCCESS
                }
                Err(err) => fail(2, &err),
            }
        }
    }
}

/// Runs an admin command on a small runtime; its error is one line on stderr.
fn admin_command(command: impl Future<Output = Result<(), admin::AdminError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(1, &format!("cannot start the async runtime: {err}")),
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err.code, &err.message),
    }
}

fn render_rule_check(check: &vigil_sigma::RuleCheck, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(check)
            .unwrap_or_else(|err| format!("{{\"error\": \"cannot render: {err}\"}}")),
        OutputFormat::Table => {
            let mut out = format!(
                "loaded {} rules ({} detection, {} correlation, {} filter) from {} files; rejected {}",
                check.loaded,
                check.detection_rules,
                check.correlation_rules,
                check.filter_rules,
                check.files,
                check.rejected.len()
            );
            for rejected in &check.rejected {
                out.push_str(&format!(
                    "\n{}: {}{}",
                    rejected.path.display(),
                    rejected
                        .rule_id
                        .as_deref()
                        .map(|id| format!("rule {id}: "))
                        .unwrap_or_default(),
                    rejected.reason
                ));
            }
            out
        }
    }
}

fn println_stdout(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn eprintln_stderr(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn fail(code: u8, message: &str) -> ExitCode {
    use std::io::Write;
    // One line: the first line of the message, so scripts and logs stay readable.
    let first_line = message.lines().next().unwrap_or(message);
    let _ = writeln!(std::io::stderr(), "error: {first_line}");
    ExitCode::from(code)
}
