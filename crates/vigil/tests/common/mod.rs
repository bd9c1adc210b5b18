//! `vigil run` as a child process, and the CLI against it, for the binary's end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vigil_e2e::free_port;

pub fn vigil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    for (key, _) in std::env::vars() {
        if key.starts_with("VIGIL_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

pub struct Server {
    pub child: Child,
    pub admin_port: u16,
    pub ingest_port: u16,
    pub endpoint: String,
    pub data_dir: PathBuf,
}

impl Server {
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(dir, args, &[], "http")
    }

    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)], scheme: &str) -> Self {
        let admin = free_port().unwrap();
        let control = free_port().unwrap();
        let ingest = free_port().unwrap();
        let data_dir = dir.join("data");
        let child = vigil()
            .arg("run")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .env("VIGIL_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env("VIGIL_CONTROL__LISTEN", format!("127.0.0.1:{control}"))
            .env("VIGIL_INGEST__HTTP_LISTEN", format!("127.0.0.1:{ingest}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            admin_port: admin,
            ingest_port: ingest,
            endpoint: format!("{scheme}://localhost:{control}"),
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = std::net::TcpStream::connect(("127.0.0.1", control)).is_ok()
                && server.data_dir.join("admin.token").exists();
            if ready {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("vigil run exited early with {status}");
            }
            assert!(Instant::now() < deadline, "the control plane did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The admin port's `/metrics`, over a plain HTTP/1.0 request.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// `POST /v1/events` on the ingest port: the status code and the body.
    pub fn post_events(&self, token: &str, body: &str) -> (u16, String) {
        self.post_events_with(token, body, &[])
            .expect("the ingest port answers")
    }

    /// `POST /v1/events` with extra headers (`Idempotency-Key`); an error when the connection
    /// fails (the server is down).
    pub fn post_events_with(
        &self,
        token: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.ingest_port))?;
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "POST /v1/events HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Kills the process with SIGKILL: nothing is flushed or acknowledged.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        vigil()
            .args(args)
            .env("VIGIL_ENDPOINT", &self.endpoint)
            .env("VIGIL_TOKEN", token)
            .output()
            .unwrap()
    }

    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let output = self.cli(token, args);
        assert!(
            output.status.success(),
            "vigil {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
