//! A control plane on a free port over a fresh store, with a token per role.
// Each test binary uses part of the harness.
#![allow(dead_code)]

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Status};
use vigil_auth::{MasterKey, SigningKey, Verifier};
use vigil_control::{Config, ControlApi};
use vigil_proto::control::v1 as pb;
use vigil_proto::control::v1::tenant_service_client::TenantServiceClient;
use vigil_store::Store;

pub struct Harness {
    pub port: u16,
    pub store: Store,
    pub master: MasterKey,
    pub config: Config,
    pub channel: Channel,
    pub admin: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

impl Harness {
    /// A control plane over SQLite in a temporary directory, or over `store_url`.
    pub async fn start(store_url: Option<&str>) -> Self {
        Self::start_with(store_url, None).await
    }

    /// Like [`Harness::start`], serving TLS with the first and connecting with the second.
    pub async fn start_with(
        store_url: Option<&str>,
        tls: Option<(
            tonic::transport::ServerTlsConfig,
            tonic::transport::ClientTlsConfig,
        )>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = store_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("vigil.db").display()),
            str::to_owned,
        );
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let config = Config {
            trust_refresh_secs: 1,
            ..Config::default()
        };
        let master = vigil_control::prepare_keys(&store, &config, dir.path())
            .await
            .unwrap();
        let verifier = Verifier::new(config.tokens.clone());
        vigil_control::refresh_trust(&store, &verifier)
            .await
            .unwrap();
        let path = vigil_control::write_first_admin_token(&store, &master, &config, dir.path())
            .await
            .unwrap()
            .unwrap();
        let admin = std::fs::read_to_string(path).unwrap().trim().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let api = ControlApi::new(store.clone(), verifier, master.clone(), config.clone());
        let (server_tls, client_tls) = tls.unzip();
        tokio::spawn(vigil_control::serve(
            api,
            listener,
            server_tls,
            shutdown.clone(),
        ));
        let scheme = if client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Channel::from_shared(format!("{scheme}://localhost:{}", address.port()))
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        if let Some(client_tls) = client_tls {
            endpoint = endpoint.tls_config(client_tls).unwrap();
        }
        let channel = endpoint.connect().await.unwrap();
        Self {
            port: address.port(),
            store,
            master,
            config,
            channel,
            admin,
            shutdown,
            _dir: dir,
        }
    }

    pub fn tenants(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(self.channel.clone())
    }

    pub async fn create_tenant(&self, id: &str) {
        self.tenants()
            .create_tenant(with_token(
                &self.admin,
                pb::CreateTenantRequest {
                    tenant_id: id.into(),
                    display_name: String::new(),
                },
            ))
            .await
            .unwrap();
    }

    pub async fn issue(&self, tenant: &str, role: &str) -> Result<pb::IssueTokenResponse, Status> {
        self.tenants()
            .issue_token(with_token(
                &self.admin,
                pb::IssueTokenRequest {
                    tenant_id: tenant.into(),
                    role: role.into(),
                    subject: String::new(),
                    ttl_seconds: 3600,
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn token(&self, tenant: &str, role: &str) -> String {
        self.issue(tenant, role).await.unwrap().token
    }

    /// The platform signing key, for forging tokens in attack tests.
    pub async fn platform_key(&self) -> SigningKey {
        let record = self
            .store
            .platform()
            .active_key(None)
            .await
            .unwrap()
            .unwrap();
        SigningKey::unseal(&record.kid, None, &record.sealed_private_key, &self.master).unwrap()
    }
}

pub fn rule_yaml(id: &str) -> String {
    format!(
        "title: Matrix rule {id}\nid: {id}\nstatus: test\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: '\\whoami.exe'\n  condition: selection\nlevel: medium\ntags:\n  - attack.discovery\n  - attack.t1033\n"
    )
}
