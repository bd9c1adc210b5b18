//! The admin commands: a gRPC client of the control plane (`VIGIL_ENDPOINT`, `VIGIL_TOKEN`;
//! `https://` endpoints are verified against the system roots and `VIGIL_CA_FILE`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use vigil_proto::control::v1 as pb;
use vigil_proto::control::v1::alert_service_client::AlertServiceClient;
use vigil_proto::control::v1::intel_service_client::IntelServiceClient;
use vigil_proto::control::v1::rule_service_client::RuleServiceClient;
use vigil_proto::control::v1::tenant_service_client::TenantServiceClient;

use crate::cli::OutputFormat;

/// Where the control plane is and who is calling.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The control plane's gRPC address.
    #[arg(
        long,
        env = "VIGIL_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub endpoint: String,
    /// The bearer token [default: the contents of ./vigil-data/admin.token, written by the
    /// first `vigil run`].
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub format: OutputFormat,
    /// CA certificate (PEM) to trust for an https:// endpoint, besides the system roots.
    #[arg(long, env = "VIGIL_CA_FILE", value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// `vigil tenant`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Tenant id: lowercase letters, digits and '-', starting with a letter.
        id: String,
        /// A name for people [default: the id].
        #[arg(long)]
        name: Option<String>,
    },
    /// List every tenant.
    List,
    /// Show one tenant.
    Get {
        /// Tenant id.
        id: String,
    },
    /// Suspend a tenant (its tokens are refused; data kept), or resume it.
    Suspend {
        /// Tenant id.
        id: String,
        /// Resume instead.
        #[arg(long)]
        resume: bool,
    },
    /// Offboard a tenant: its tokens stop working; data is kept unless --purge.
    Delete {
        /// Tenant id.
        id: String,
        /// Delete the tenant's alerts, incidents, rules and feeds too.
        #[arg(long)]
        purge: bool,
    },
}

/// `vigil token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it.
    Issue {
        /// The tenant (required for ingest and tenant-viewer tokens).
        #[arg(long)]
        tenant: Option<String>,
        /// mssp-admin, analyst, responder, tenant-viewer or ingest.
        #[arg(long)]
        role: String,
        /// Who the token is for [default: ROLE:TENANT].
        #[arg(long)]
        subject: Option<String>,
        /// Validity in seconds [default: 90 days for ingest, 12 hours otherwise].
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The token id (`jti`).
        token_id: String,
        /// The tenant the token belongs to (omit for platform tokens).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a tenant's tokens (never the tokens themselves).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
    },
}

/// `vigil principal`.
#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Register a named person or service; tokens are then issued to it with `vigil token
    /// issue --subject SUBJECT` and its role and tenant.
    Create {
        /// Its subject, e.g. alice@mssp.example.
        subject: String,
        /// mssp-admin, analyst, responder, tenant-viewer or ingest.
        #[arg(long)]
        role: String,
        /// Its one tenant [default: every tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// A name for people [default: the subject].
        #[arg(long)]
        name: Option<String>,
    },
    /// List principals: one tenant's, or every one.
    List {
        /// Tenant id [default: every principal].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Disable a principal: its tokens are revoked at once and no new one can be issued.
    Disable {
        /// Its subject.
        subject: String,
        /// Its tenant (omit for platform-wide principals).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `vigil intel`.
#[derive(Debug, Subcommand)]
pub enum IntelCommand {
    /// Upload a threat-intel feed.
    Push {
        /// The feed file.
        file: PathBuf,
        /// stix, misp, csv or list.
        #[arg(long)]
        format: String,
        /// Feed name [default: the file name].
        #[arg(long)]
        name: Option<String>,
        /// The tenant owning the feed [default: global].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List feeds.
    List {
        /// A tenant's feeds [default: global feeds].
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `vigil alerts`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// A tenant's alerts, newest first.
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Detected at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Detected before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Lowest level.
        #[arg(long)]
        min_level: Option<String>,
        /// One rule id.
        #[arg(long)]
        rule: Option<String>,
        /// Most alerts printed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print a tenant's new alerts as they are stored, until interrupted.
    Tail {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Lowest level.
        #[arg(long)]
        min_level: Option<String>,
    },
}

/// `vigil rules push|list|test`.
#[derive(Debug, Clone)]
pub enum RemoteRulesCommand {
    /// Upload rules.
    Push {
        /// Files or directories.
        paths: Vec<PathBuf>,
        /// Owner tenant.
        tenant: Option<String>,
    },
    /// List rules.
    List {
        /// Tenant.
        tenant: Option<String>,
    },
    /// Test a rule.
    Test {
        /// The rule file.
        rule: PathBuf,
        /// Event files.
        events: Vec<PathBuf>,
        /// Tenant.
        tenant: Option<String>,
    },
}

/// What an admin command failed on.
#[derive(Debug)]
pub struct AdminError {
    /// 1: the call failed; 2: the command line or a file is wrong.
    pub code: u8,
    /// One line.
    pub message: String,
}

impl AdminError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for AdminError {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: 1,
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

type Result<T, E = AdminError> = std::result::Result<T, E>;

/// An authenticated channel.
struct Client {
    channel: Channel,
    token: MetadataValue<tonic::metadata::Ascii>,
    format: OutputFormat,
}

impl Client {
    async fn connect(connection: &Connection) -> Result<Self> {
        let token = match &connection.token {
            Some(token) => token.trim().to_owned(),
            None => read_default_token(Path::new("vigil-data/admin.token"))?,
        };
        let token = format!("Bearer {token}")
            .parse()
            .map_err(|_| AdminError::usage("VIGIL_TOKEN holds characters a token cannot have"))?;
        let endpoint = Endpoint::from_shared(connection.endpoint.clone()).map_err(|err| {
            AdminError::usage(format!(
                "VIGIL_ENDPOINT {:?} is not a URL: {err}",
                connection.endpoint
            ))
        })?;
        let endpoint = if connection.endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &connection.ca_file {
                let pem = std::fs::read(path).map_err(|err| {
                    AdminError::usage(format!("cannot read {}: {err}", path.display()))
                })?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint.tls_config(tls).map_err(|err| {
                AdminError::usage(format!("TLS settings for {}: {err}", connection.endpoint))
            })?
        } else {
            endpoint
        };
        let channel = endpoint
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|err| AdminError {
                code: 1,
                message: format!(
                    "cannot reach the control plane at {}: {err}",
                    connection.endpoint
                ),
            })?;
        Ok(Self {
            channel,
            token,
            format: connection.format,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.token.clone());
        request
    }
}

fn read_default_token(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|_| {
            AdminError::usage(format!(
                "no token: set VIGIL_TOKEN (or run in the directory holding {})",
                path.display()
            ))
        })
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(index, cell)| format!("{cell:<width$}", width = widths[index]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    lines.extend(rows.iter().map(|row| line(row.clone())));
    lines.join("\n")
}

fn tenant_json(tenant: &pb::Tenant) -> serde_json::Value {
    serde_json::json!({
        "id": tenant.id,
        "display_name": tenant.display_name,
        "state": tenant.state,
        "created_time": tenant.created_time,
        "updated_time": tenant.updated_time,
    })
}

fn print_tenants(client: &Client, tenants: &[pb::Tenant], single: bool) {
    match client.format {
        OutputFormat::Json if single => out(&json(&tenant_json(&tenants[0]))),
        OutputFormat::Json => out(&json(&tenants.iter().map(tenant_json).collect::<Vec<_>>())),
        OutputFormat::Table => out(&table(
            &["ID", "NAME", "STATE", "CREATED"],
            &tenants
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.display_name.clone(),
                        t.state.clone(),
                        t.created_time.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        )),
    }
}

/// `vigil tenant …`.
pub async fn tenant(command: TenantCommand, connection: &Connection) -> Result<()> {
    let client = Client::connect(connection).await?;
    let mut tenants = TenantServiceClient::new(client.channel.clone());
    match command {
        TenantCommand::Create { id, name } => {
            let tenant = tenants
                .create_tenant(client.request(pb::CreateTenantRequest {
                    tenant_id: id,
                    display_name: name.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            print_tenants(&client, &[tenant], true);
        }
        TenantCommand::List => {
            let list = tenants
                .list_tenants(client.request(pb::ListTenantsRequest {}))
                .await?
                .into_inner();
            print_tenants(&client, &list.tenants, false);
        }
        TenantCommand::Get { id } => {
            let tenant = tenants
                .get_tenant(client.request(pb::GetTenantRequest { tenant_id: id }))
                .await?
                .into_inner();
            print_tenants(&client, &[tenant], true);
        }
        TenantCommand::Suspend { id, resume } => {
            let tenant = tenants
                .suspend_tenant(client.request(pb::SuspendTenantRequest {
                    tenant_id: id,
                    suspended: !resume,
                }))
                .await?
                .into_inner();
            print_tenants(&client, &[tenant], true);
        }
        TenantCommand::Delete { id, purge } => {
            let retention = if purge {
                pb::Retention::Purge
            } else {
                pb::Retention::Keep
            };
            let deleted = tenants
                .delete_tenant(client.request(pb::DeleteTenantRequest {
                    tenant_id: id,
                    retention: retention as i32,
                }))
                .await?
                .into_inner();
            let retention = if purge { "purged" } else { "kept" };
            match client.format {
                OutputFormat::Json => out(&json(&serde_json::json!({
                    "tenant": deleted.tenant_id,
                    "data": retention,
                    "tokens_revoked": deleted.tokens_revoked,
                }))),
                OutputFormat::Table => out(&format!(
                    "deleted tenant {}: data {retention}, {} tokens revoked",
                    deleted.tenant_id, deleted.tokens_revoked
                )),
            }
        }
    }
    Ok(())
}

fn token_json(info: &pb::TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "token_id": info.token_id,
        "tenant": info.tenant_id,
        "subject": info.subject,
        "role": info.role,
        "key_id": info.key_id,
        "issued_time": info.issued_time,
        "expires_time": info.expires_time,
        "revoked_time": (!info.revoked_time.is_empty()).then_some(&info.revoked_time),
    })
}

fn principal_json(info: &pb::PrincipalInfo) -> serde_json::Value {
    serde_json::json!({
        "subject": info.subject,
        "role": info.role,
        "tenant": (!info.tenant_id.is_empty()).then_some(&info.tenant_id),
        "display_name": info.display_name,
        "created_time": info.created_time,
        "created_by": info.created_by,
        "disabled_time": (!info.disabled_time.is_empty()).then_some(&info.disabled_time),
        "disabled_by": (!info.disabled_by.is_empty()).then_some(&info.disabled_by),
        "live_tokens": info.live_tokens,
    })
}

/// `vigil principal …`.
pub async fn principal(command: PrincipalCommand, connection: &Connection) -> Result<()> {
    let client = Client::connect(connection).await?;
    let mut tenants = TenantServiceClient::new(client.channel.clone());
    match command {
        PrincipalCommand::Create {
            subject,
            role,
            tenant,
            name,
        } => {
            let info = tenants
                .create_principal(client.request(pb::CreatePrincipalRequest {
                    subject,
                    role,
                    tenant_id: tenant.unwrap_or_default(),
                    display_name: name.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => out(&json(&principal_json(&info))),
                OutputFormat::Table => out(&format!(
                    "created principal {} ({} for {})",
                    info.subject,
                    info.role,
                    if info.tenant_id.is_empty() {
                        "every tenant"
                    } else {
                        &info.tenant_id
                    }
                )),
            }
        }
        PrincipalCommand::List { tenant } => {
            let list = tenants
                .list_principals(client.request(pb::ListPrincipalsRequest {
                    tenant_id: tenant.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => out(&json(
                    &list
                        .principals
                        .iter()
                        .map(principal_json)
                        .collect::<Vec<_>>(),
                )),
                OutputFormat::Table => out(&table(
                    &[
                        "SUBJECT",
                        "ROLE",
                        "TENANT",
                        "NAME",
                        "LIVE TOKENS",
                        "DISABLED",
                    ],
                    &list
                        .principals
                        .iter()
                        .map(|p| {
                            vec![
                                p.subject.clone(),
                                p.role.clone(),
                                if p.tenant_id.is_empty() {
                                    "*".to_owned()
                                } else {
                                    p.tenant_id.clone()
                                },
                                p.display_name.clone(),
                                p.live_tokens.to_string(),
                                p.disabled_time.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        PrincipalCommand::Disable { subject, tenant } => {
            let info = tenants
                .disable_principal(client.request(pb::DisablePrincipalRequest {
                    subject,
                    tenant_id: tenant.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => {
                    let mut value = principal_json(&info);
                    value["revoked_tokens"] = info.revoked_tokens.into();
                    out(&json(&value));
                }
                OutputFormat::Table => out(&format!(
                    "disabled principal {}; revoked {} token(s)",
                    info.subject, info.revoked_tokens
                )),
            }
        }
    }
    Ok(())
}

/// `vigil token …`.
pub async fn token(command: TokenCommand, connection: &Connection) -> Result<()> {
    let client = Client::connect(connection).await?;
    let mut tenants = TenantServiceClient::new(client.channel.clone());
    match command {
        TokenCommand::Issue {
            tenant,
            role,
            subject,
            ttl,
        } => {
            let issued = tenants
                .issue_token(client.request(pb::IssueTokenRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    role,
                    subject: subject.unwrap_or_default(),
                    ttl_seconds: ttl.unwrap_or(0),
                }))
                .await?
                .into_inner();
            match client.format {
                // The token alone, so that `TOKEN=$(vigil token issue …)` works.
                OutputFormat::Table => out(&issued.token),
                OutputFormat::Json => {
                    let mut value = issued.info.as_ref().map(token_json).unwrap_or_default();
                    value["token"] = issued.token.into();
                    out(&json(&value));
                }
            }
        }
        TokenCommand::Revoke { token_id, tenant } => {
            let info = tenants
                .revoke_token(client.request(pb::RevokeTokenRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    token_id,
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => out(&json(&token_json(&info))),
                OutputFormat::Table => out(&format!(
                    "revoked token {} ({} {})",
                    info.token_id, info.role, info.subject
                )),
            }
        }
        TokenCommand::List { tenant } => {
            let list = tenants
                .list_tokens(client.request(pb::ListTokensRequest { tenant_id: tenant }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => out(&json(
                    &list.tokens.iter().map(token_json).collect::<Vec<_>>(),
                )),
                OutputFormat::Table => out(&table(
                    &["TOKEN ID", "ROLE", "SUBJECT", "EXPIRES", "REVOKED"],
                    &list
                        .tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.token_id.clone(),
                                t.role.clone(),
                                t.subject.clone(),
                                t.expires_time.clone(),
                                t.revoked_time.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
    }
    Ok(())
}

fn rule_json(rule: &pb::RuleInfo) -> serde_json::Value {
    serde_json::json!({
        "rule_id": rule.rule_id,
        "title": rule.title,
        "level": rule.level,
        "kind": rule.kind,
        "owner": if rule.owner.is_empty() { "global" } else { rule.owner.as_str() },
        "enabled": rule.enabled,
        "version": rule.version,
        "updated_time": rule.updated_time,
        "updated_by": rule.updated_by,
        "override": rule.r#override.as_ref().map(|o| serde_json::json!({
            "enabled": o.enabled,
            "level": (!o.level.is_empty()).then_some(&o.level),
            "exceptions": o.exceptions.iter().map(|e| serde_json::json!({"field": e.field, "values": e.values})).collect::<Vec<_>>(),
        })),
    })
}

fn print_rules(client: &Client, rules: &[pb::RuleInfo]) {
    match client.format {
        OutputFormat::Json => out(&json(&rules.iter().map(rule_json).collect::<Vec<_>>())),
        OutputFormat::Table => out(&table(
            &["RULE ID", "LEVEL", "ENABLED", "OWNER", "TITLE"],
            &rules
                .iter()
                .map(|r| {
                    vec![
                        r.rule_id.clone(),
                        r.level.clone(),
                        r.enabled.to_string(),
                        if r.owner.is_empty() {
                            "global".to_owned()
                        } else {
                            r.owner.clone()
                        },
                        r.title.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        )),
    }
}

fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(
                vigil_sigma::source::files_under(path, &|file: &Path| {
                    matches!(
                        file.extension().and_then(|e| e.to_str()),
                        Some("yml" | "yaml")
                    )
                })
                .map_err(|err| AdminError::usage(err.to_string()))?,
            );
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(AdminError::usage(format!(
                "{} does not exist",
                path.display()
            )));
        }
    }
    if files.is_empty() {
        return Err(AdminError::usage("no .yml or .yaml rule files found"));
    }
    Ok(files)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|err| AdminError::usage(format!("cannot read {}: {err}", path.display())))
}

/// `vigil rules push|list|test`.
pub async fn rules(command: RemoteRulesCommand, connection: &Connection) -> Result<()> {
    let client = Client::connect(connection).await?;
    let mut rules = RuleServiceClient::new(client.channel.clone())
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    match command {
        RemoteRulesCommand::Push { paths, tenant } => {
            let mut sources = Vec::new();
            for file in rule_files(&paths)? {
                sources.push(pb::RuleSource {
                    name: file.display().to_string(),
                    yaml: read_text(&file)?,
                });
            }
            let pushed = rules
                .push_rules(client.request(pb::PushRulesRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    rules: sources,
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => print_rules(&client, &pushed.rules),
                OutputFormat::Table => out(&format!("pushed {} rules", pushed.rules.len())),
            }
        }
        RemoteRulesCommand::List { tenant } => {
            let list = rules
                .list_rules(client.request(pb::ListRulesRequest {
                    tenant_id: tenant.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            print_rules(&client, &list.rules);
        }
        RemoteRulesCommand::Test {
            rule,
            events,
            tenant,
        } => {
            let yaml = read_text(&rule)?;
            let mut texts = Vec::new();
            for file in &events {
                texts.extend(read_events(file)?);
            }
            let tested = rules
                .test_rule(client.request(pb::TestRuleRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    yaml,
                    events: texts,
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => out(&json(&serde_json::json!({
                    "rule_id": tested.rule_id,
                    "matched": tested.matched,
                    "logsources": tested.logsources,
                }))),
                OutputFormat::Table => out(&format!(
                    "rule {}: {} of {} events match{}",
                    tested.rule_id,
                    tested.matched.len(),
                    tested.logsources.len(),
                    if tested.matched.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (events {})",
                            tested
                                .matched
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )),
            }
        }
    }
    Ok(())
}

/// A JSON array of objects, or one JSON object per line.
fn read_events(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(trimmed).map_err(|err| {
            AdminError::usage(format!("{}: not a JSON array: {err}", path.display()))
        })?;
        return Ok(values.iter().map(serde_json::Value::to_string).collect());
    }
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// `vigil intel …`.
pub async fn intel(command: IntelCommand, connection: &Connection) -> Result<()> {
    let client = Client::connect(connection).await?;
    let mut intel = IntelServiceClient::new(client.channel.clone())
        .max_encoding_message_size(256 * 1024 * 1024);
    let feed_json = |feed: &pb::FeedInfo| {
        serde_json::json!({
            "name": feed.name,
            "owner": if feed.owner.is_empty() { "global" } else { feed.owner.as_str() },
            "format": feed.format,
            "indicators": feed.indicators,
            "version": feed.version,
            "updated_time": feed.updated_time,
            "updated_by": feed.updated_by,
        })
    };
    match command {
        IntelCommand::Push {
            file,
            format,
            name,
            tenant,
        } => {
            let content = std::fs::read(&file).map_err(|err| {
                AdminError::usage(format!("cannot read {}: {err}", file.display()))
            })?;
            let name = name.unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let feed = intel
                .push_feed(client.request(pb::PushFeedRequest {
                    tenant_id: tenant.unwrap_or_default(),
                    name,
                    format,
                    content,
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => {
                    let mut value = feed_json(&feed);
                    value["skipped"] = feed.skipped.into();
                    value["skip_reasons"] = feed.skip_reasons.clone().into();
                    out(&json(&value))
                }
                OutputFormat::Table => {
                    out(&format!(
                        "pushed feed {} ({} indicators, version {})",
                        feed.name, feed.indicators, feed.version
                    ));
                    if feed.skipped > 0 {
                        out(&format!(
                            "skipped {} indicators: {}",
                            feed.skipped,
                            feed.skip_reasons.join("; ")
                        ));
                    }
                }
            }
        }
        IntelCommand::List { tenant } => {
            let list = intel
                .list_feeds(client.request(pb::ListFeedsRequest {
                    tenant_id: tenant.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            match client.format {
                OutputFormat::Json => {
                    out(&json(&list.feeds.iter().map(feed_json).collect::<Vec<_>>()))
                }
                OutputFormat::Table => out(&table(
                    &["NAME", "FORMAT", "INDICATORS", "VERSION", "UPDATED"],
                    &list
                        .feeds
                        .iter()
                        .map(|f| {
                            vec![
                                f.name.clone(),
                                f.format.clone(),
                                f.indicators.to_string(),
                                f.version.to_string(),
                                f.updated_time.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
    }
    Ok(())
}

/// The alert as the CLI prints it in JSON: the stored alert, with `attack` as technique ids
/// and the techniques' names and tactics under `attack_techniques`.
fn alert_json(alert: &pb::Alert) -> serde_json::Value {
    let mut value: serde_json::Value =
        serde_json::from_str(&alert.json).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        if let Some(techniques) = object.remove("attack") {
            object.insert("attack_techniques".into(), techniques);
        }
        object.insert("attack".into(), alert.attack.clone().into());
        object.insert("id".into(), alert.id.clone().into());
        object.insert("tenant".into(), alert.tenant.clone().into());
    }
    value
}

fn alert_row(alert: &pb::Alert) -> Vec<String> {
    vec![
        alert.detected_time.clone(),
        alert.level.clone(),
        alert.rule_title.clone(),
        alert.attack.join(","),
        alert.id.clone(),
    ]
}

/// `vigil alerts …`.
pub async fn alerts(command: AlertsCommand, connection: &Connection) -> Result<()> {
    let client = Client::connect(connection).await?;
    let mut alerts = AlertServiceClient::new(client.channel.clone())
        .max_decoding_message_size(256 * 1024 * 1024);
    match command {
        AlertsCommand::List {
            tenant,
            from,
            to,
            min_level,
            rule,
            limit,
        } => {
            let mut collected = Vec::new();
            let mut page_token = String::new();
            while collected.len() < limit {
                let page = alerts
                    .list_alerts(client.request(pb::ListAlertsRequest {
                        tenant_id: tenant.clone(),
                        from_time: from.clone().unwrap_or_default(),
                        to_time: to.clone().unwrap_or_default(),
                        min_level: min_level.clone().unwrap_or_default(),
                        rule_id: rule.clone().unwrap_or_default(),
                        page_size:
                            u32::try_from((limit - collected.len()).min(1000)).unwrap_or(1000),
                        page_token: page_token.clone(),
                    }))
                    .await?
                    .into_inner();
                collected.extend(page.alerts);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            collected.truncate(limit);
            match client.format {
                OutputFormat::Json => {
                    out(&json(&collected.iter().map(alert_json).collect::<Vec<_>>()))
                }
                OutputFormat::Table => out(&table(
                    &["DETECTED", "LEVEL", "RULE", "ATT&CK", "ID"],
                    &collected.iter().map(alert_row).collect::<Vec<_>>(),
                )),
            }
        }
        AlertsCommand::Tail { tenant, min_level } => {
            let mut stream = alerts
                .stream_alerts(client.request(pb::StreamAlertsRequest {
                    tenant_id: tenant,
                    min_level: min_level.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            while let Some(alert) = stream.message().await? {
                match client.format {
                    OutputFormat::Json => out(&alert_json(&alert).to_string()),
                    OutputFormat::Table => out(&alert_row(&alert).join("  ")),
                }
            }
        }
    }
    Ok(())
}

/// `vigil ingest`.
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Upload EVTX files to a tenant through HTTP ingest (forensics uploads).
    Evtx {
        /// .evtx files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The tenant the records belong to.
        #[arg(long)]
        tenant: String,
        /// The ingest service's HTTP address.
        #[arg(
            long,
            env = "VIGIL_INGEST_ENDPOINT",
            default_value = "http://127.0.0.1:8088"
        )]
        ingest_endpoint: String,
        /// An ingest token of the tenant [default: a one-hour token issued through the control
        /// plane with VIGIL_TOKEN, revoked when the upload ends].
        #[arg(long, env = "VIGIL_INGEST_TOKEN", hide_env_values = true)]
        ingest_token: Option<String>,
        /// Records per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

/// `vigil ingest evtx …`: records as evtx JSON, NDJSON requests of `batch` records compressed
/// with zstd, each with an `Idempotency-Key` derived from the file and the request's position,
/// so a rerun after a failure does not duplicate what was already accepted.
pub async fn ingest(command: IngestCommand, connection: &Connection) -> Result<()> {
    let IngestCommand::Evtx {
        paths,
        tenant,
        ingest_endpoint,
        ingest_token,
        batch,
    } = command;
    let batch = batch.clamp(1, 100_000);
    for path in &paths {
        if !path.is_file() {
            return Err(AdminError::usage(format!(
                "{} is not a file",
                path.display()
            )));
        }
    }
    // Without an ingest token, a short-lived one from the control plane, revoked at the end.
    let (token, issued) = match ingest_token {
        Some(token) => (token.trim().to_owned(), None),
        None => {
            let client = Client::connect(connection).await?;
            let response = TenantServiceClient::new(client.channel.clone())
                .issue_token(client.request(pb::IssueTokenRequest {
                    tenant_id: tenant.clone(),
                    role: "ingest".into(),
                    subject: "evtx-upload".into(),
                    ttl_seconds: 3600,
                }))
                .await?
                .into_inner();
            let id = response.info.map(|info| info.token_id).unwrap_or_default();
            (response.token, Some((client, id)))
        }
    };
    let result = upload_evtx(&paths, &ingest_endpoint, &token, batch).await;
    if let Some((client, token_id)) = issued {
        let revoked = TenantServiceClient::new(client.channel.clone())
            .revoke_token(client.request(pb::RevokeTokenRequest {
                tenant_id: tenant.clone(),
                token_id,
            }))
            .await;
        if let Err(status) = revoked {
            eprintln_line(&format!(
                "warning: the upload token could not be revoked: {}",
                status.message()
            ));
        }
    }
    let (records, requests) = result?;
    match connection.format {
        OutputFormat::Json => out(&json(&serde_json::json!({
            "tenant": tenant,
            "files": paths.len(),
            "records": records,
            "requests": requests,
        }))),
        OutputFormat::Table => out(&format!(
            "uploaded {records} records from {} files to tenant {tenant} in {requests} requests",
            paths.len()
        )),
    }
    Ok(())
}

fn eprintln_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Streams each file's records to ingest in requests of `batch`, reading ahead at most two
/// requests' worth, so a file of any size takes bounded memory.
async fn upload_evtx(
    paths: &[PathBuf],
    endpoint: &str,
    token: &str,
    batch: usize,
) -> Result<(u64, u64)> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|err| AdminError {
            code: 1,
            message: format!("HTTP client: {err}"),
        })?;
    let url = format!("{}/v1/events", endpoint.trim_end_matches('/'));
    let (mut records, mut requests) = (0u64, 0u64);
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|err| AdminError::usage(format!("cannot read {}: {err}", path.display())))?;
        let identity = format!(
            "{}:{}:{:?}",
            path.display(),
            metadata.len(),
            metadata.modified().ok()
        );
        // Records in file order (so a rerun's requests hold the same records under the same
        // idempotency keys), from a blocking scan that waits while the uploads catch up.
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<Result<String, String>>(batch * 2);
        let scan_path = path.clone();
        let scan = tokio::task::spawn_blocking(move || {
            vigil_sigma::source::stream_evtx(
                &scan_path,
                0,
                |record| record.map(|record| record.data.to_string()),
                |line| sender.blocking_send(line).is_ok(),
            )
        });
        let mut unreadable = 0u64;
        let mut chunk = Vec::with_capacity(batch);
        let mut index = 0usize;
        loop {
            let line = receiver.recv().await;
            let done = line.is_none();
            match line {
                Some(Ok(line)) => chunk.push(line),
                Some(Err(_)) => unreadable += 1,
                None => {}
            }
            if chunk.len() == batch || (done && !chunk.is_empty()) {
                let key = format!("evtx-{:x}-{index}", fnv1a(&identity));
                post_records(&http, &url, token, &key, &chunk)
                    .await
                    .map_err(|message| AdminError {
                        code: 1,
                        message: format!(
                            "{}: request {index} ({} records uploaded before it): {message}",
                            path.display(),
                            records
                        ),
                    })?;
                records += chunk.len() as u64;
                requests += 1;
                index += 1;
                chunk.clear();
            }
            if done {
                break;
            }
        }
        scan.await
            .map_err(|err| AdminError {
                code: 1,
                message: format!("reading {}: {err}", path.display()),
            })?
            .map_err(|err| AdminError::usage(err.to_string()))?;
        if unreadable > 0 {
            eprintln_line(&format!(
                "warning: {}: {unreadable} records could not be read and were skipped",
                path.display()
            ));
        }
    }
    Ok((records, requests))
}

/// The most attempts at one request while ingest is busy (429, 503) or unreachable.
const UPLOAD_ATTEMPTS: u32 = 8;

/// Posts one request of records (zstd NDJSON), again while ingest answers 429 or 503 (after its
/// `Retry-After`) or cannot be reached (backing off up to 30 s): the idempotency key makes a
/// repeat store nothing twice. Any other refusal ends the upload with ingest's reason.
async fn post_records(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    lines: &[String],
) -> std::result::Result<(), String> {
    let body = zstd::bulk::compress(lines.join("\n").as_bytes(), 1)
        .map_err(|err| format!("compressing a request: {err}"))?;
    let body = bytes::Bytes::from(body);
    let mut backoff = std::time::Duration::from_secs(1);
    for attempt in 1..=UPLOAD_ATTEMPTS {
        let sent = http
            .post(url)
            .bearer_auth(token)
            .header("content-encoding", "zstd")
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", key)
            .body(body.clone())
            .send()
            .await;
        let wait = match sent {
            Err(err) if attempt < UPLOAD_ATTEMPTS => {
                eprintln_line(&format!(
                    "warning: cannot reach ingest ({err}); retrying in {} s",
                    backoff.as_secs()
                ));
                backoff
            }
            Err(err) => return Err(format!("cannot reach ingest at {url}: {err}")),
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.trim().parse::<u64>().ok());
                let text = response.text().await.unwrap_or_default();
                let reason = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|value| value["error"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                let busy = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
                if !busy || attempt == UPLOAD_ATTEMPTS {
                    return Err(format!("ingest refused it with {status}: {reason}"));
                }
                let wait = retry_after.map_or(backoff, |seconds| {
                    std::time::Duration::from_secs(seconds.clamp(1, 60))
                });
                eprintln_line(&format!(
                    "warning: ingest is busy ({status}: {reason}); retrying in {} s",
                    wait.as_secs()
                ));
                wait
            }
        };
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
    Err("no attempt left".to_owned())
}

/// A stable 64-bit hash (FNV-1a) of a file's identity, for idempotency keys.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers each request with the next of `answers` (status line and extra
    /// headers) and reports each request's idempotency key.
    async fn server(
        answers: Vec<&'static str>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
        let (keys, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Headers, then the body by its length.
                let (head_end, length) = loop {
                    let read = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|line| {
                                line.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|value| value.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while request.len() < head_end + length {
                    let read = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                }
                let text = String::from_utf8_lossy(&request[..head_end]).into_owned();
                let key = text
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("idempotency-key:")
                            .map(|value| value.trim().to_owned())
                    })
                    .unwrap_or_default();
                keys.send(key).unwrap();
                let body = r#"{"error":"the reason"}"#;
                let response = format!(
                    "HTTP/1.1 {answer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
                stream.shutdown().await.ok();
            }
        });
        (url, received)
    }

    #[tokio::test]
    async fn a_busy_ingest_gets_the_same_request_again_after_its_retry_after() {
        let (url, mut keys) = server(vec![
            "503 Service Unavailable\r\nRetry-After: 1",
            "429 Too Many Requests\r\nRetry-After: 1",
            "200 OK",
        ])
        .await;
        let http = reqwest::Client::new();
        let lines = vec!["{\"a\":1}".to_owned()];
        post_records(&http, &url, "token", "evtx-1-0", &lines)
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(keys.recv().await.unwrap(), "evtx-1-0");
        }
    }

    #[tokio::test]
    async fn other_refusals_end_the_upload_with_ingests_reason() {
        let (url, mut keys) = server(vec!["400 Bad Request"]).await;
        let http = reqwest::Client::new();
        let lines = vec!["{\"a\":1}".to_owned()];
        let error = post_records(&http, &url, "token", "evtx-1-0", &lines)
            .await
            .unwrap_err();
        assert_eq!(error, "ingest refused it with 400 Bad Request: the reason");
        assert_eq!(keys.recv().await.unwrap(), "evtx-1-0");
    }
}
