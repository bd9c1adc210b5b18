use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use vigil_sigma::Level;

use crate::admin::{
    AlertsCommand, Connection, IngestCommand, IntelCommand, PrincipalCommand, TenantCommand,
    TokenCommand,
};
use crate::config::Overrides;
use crate::hunt::HuntFormat;

/// Vigil: a multi-tenant security operations platform for MSSPs.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Vigil's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start Vigil's services in this process (all of them on embedded defaults).
    Run(RunArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with Sigma rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run Sigma rules over EVTX and JSON files (threat hunting, forensics).
    Hunt(HuntArgs),
    /// Manage tenants (control plane).
    Tenant {
        /// The tenant command.
        #[command(subcommand)]
        command: TenantCommand,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// Issue, list and revoke tokens (control plane).
    Token {
        /// The token command.
        #[command(subcommand)]
        command: TokenCommand,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// Register, list and disable named principals (control plane).
    Principal {
        /// The principal command.
        #[command(subcommand)]
        command: PrincipalCommand,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// Manage threat-intel feeds (control plane).
    Intel {
        /// The intel command.
        #[command(subcommand)]
        command: IntelCommand,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// Query and follow alerts (control plane).
    Alerts {
        /// The alerts command.
        #[command(subcommand)]
        command: AlertsCommand,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// Send logs to ingest (EVTX files for forensics).
    Ingest {
        /// The ingest command.
        #[command(subcommand)]
        command: IngestCommand,
        /// Control-plane connection (to issue an upload token when none is given).
        #[command(flatten)]
        connection: Connection,
    },
    /// Kubernetes operator resources.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `vigil hunt` options.
#[derive(Debug, Args)]
pub struct HuntArgs {
    /// .evtx, .json, .jsonl, .ndjson or .log (syslog) files, or directories holding them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Rule files or directories (searched recursively for .yml and .yaml); repeatable.
    #[arg(long = "rules", required = true, value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HuntFormat::Table)]
    pub format: HuntFormat,
    /// Print only hits of this level or above.
    #[arg(long, value_name = "LEVEL", default_value = "informational", value_parser = parse_level)]
    pub min_level: Level,
    /// Do not draw a progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Where compiled rules are cached between runs [default: $XDG_CACHE_HOME/vigil/rules or
    /// ~/.cache/vigil/rules].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Parse and compile the rules from source, without the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Values for a rule placeholder used with the `expand` modifier, e.g.
    /// `--placeholder admins=alice,bob`; repeatable. Placeholders without values match nothing.
    #[arg(long = "placeholder", value_name = "NAME=VALUE,...", value_parser = parse_placeholder)]
    pub placeholders: Vec<(String, Vec<String>)>,
}

fn parse_placeholder(text: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE[,VALUE...]"))?;
    let name = name.trim();
    if name.is_empty() || name.contains('%') {
        return Err(format!("`{name}` is not a placeholder name"));
    }
    let values = values
        .split(',')
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((name.to_owned(), values))
}

fn parse_level(text: &str) -> Result<Level, String> {
    text.parse()
}

/// `vigil rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Parse and compile every rule under the given files or directories; report what loads and
    /// why the rest does not.
    Check {
        /// Rule files or directories (searched recursively for .yml and .yaml).
        #[arg(required = true, value_name = "DIR")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Validate and upload Sigma rules to the control plane (all or nothing).
    Push {
        /// Rule files or directories (searched for .yml and .yaml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The tenant the rules are for [default: global].
        #[arg(long)]
        tenant: Option<String>,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// List the control plane's rules: a tenant's effective rules, or the global rules.
    List {
        /// Tenant id [default: global rules].
        #[arg(long)]
        tenant: Option<String>,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
    /// Run one rule over sample events (a JSON array or one JSON object per line) on the
    /// control plane.
    Test {
        /// The rule file.
        rule: PathBuf,
        /// Event files.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// The tenant whose rights apply.
        #[arg(long)]
        tenant: Option<String>,
        /// Control-plane connection.
        #[command(flatten)]
        connection: Connection,
    },
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// `vigil run` options; each overrides the configuration file and `VIGIL_*` variables.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory for the embedded store and first-start files [default: ./vigil-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated services to run [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub services: Option<Vec<String>>,
    /// `in-process`, or a NATS URL such as nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    pub bus: Option<String>,
    /// postgres://… or sqlite://PATH [default: sqlite://DIR/vigil.db].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

impl RunArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            services: self.services.clone(),
            bus_url: self.bus.clone(),
            store_url: self.store.clone(),
        }
    }
}

/// `vigil operator` subcommands.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Print the `Tenant` CustomResourceDefinition (YAML), for `kubectl apply -f -`.
    Crd,
}

/// `vigil config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: parse it, reject unknown keys, validate values.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}
